/* fuzz_bpe.c — the GPT-2 BPE loader (vocab.json + merges.txt) on arbitrary
 * bytes. Input: the vocab bytes, one NUL, the merges bytes (no NUL: the
 * whole input is the vocab and merges are empty). A tokenizer that loads
 * must then round-trip a few texts: decode(encode(x)) == x, and decode
 * every id. The loader reads paths only, so the two parts go through
 * memfds (memfile.h). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "fuzz.h"
#include "memfile.h"
#include "tokenizer/bpe.h"

TC_FUZZ_QUIET_INITIALIZE()

static void roundtrip(tc_bpe *bpe, const char *text, size_t n) {
    int32_t *ids = NULL;
    size_t ni = 0;
    char *out = NULL;
    size_t no = 0;
    if (tc_bpe_encode(bpe, text, n, &ids, &ni) != TC_OK) abort(); /* encode never fails on a loaded vocab */
    if (tc_bpe_decode(bpe, ids, ni, &out, &no) != TC_OK) abort();
    if (no != n || memcmp(out, text, n) != 0) abort(); /* lossless */
    free(ids);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 20) return 0;
    const uint8_t *sep = memchr(data, 0, size);
    size_t vn = sep ? (size_t)(sep - data) : size;
    const uint8_t *m = sep ? sep + 1 : data + size;
    size_t mn = sep ? size - vn - 1 : 0;
    char vp[64], mp[64];
    int vfd = tc_fuzz_memfile(data, vn, vp, sizeof vp);
    int mfd = tc_fuzz_memfile(m, mn, mp, sizeof mp);
    tc_bpe *bpe = NULL;
    if (vfd >= 0 && mfd >= 0 && tc_bpe_load_files(&bpe, vp, mp) == TC_OK) {
        static const char *texts[] = {"hello world", " the  end\n\n", "caf\xc3\xa9 \xff\xfe 123 'll", "a"};
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) roundtrip(bpe, texts[i], strlen(texts[i]));
        /* the input itself as text, bounded */
        roundtrip(bpe, (const char *)data, size < 256 ? size : 256);
        int32_t V = tc_bpe_vocab_size(bpe);
        tc_bpe_stream s;
        tc_bpe_stream_init(&s, bpe);
        size_t cap = tc_bpe_stream_max_out(bpe);
        char *buf = malloc(cap + 4);
        for (int32_t id = 0; id < V && id < 4096; id++) {
            size_t len, n;
            if (!tc_bpe_token_bytes(bpe, id, &len)) abort();
            if (tc_bpe_stream_push(&s, id, buf, cap, &n) != TC_OK) abort();
        }
        tc_bpe_stream_flush(&s, buf);
        free(buf);
        tc_bpe_free(bpe);
    }
    if (vfd >= 0) close(vfd);
    if (mfd >= 0) close(mfd);
    return 0;
}
