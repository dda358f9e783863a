/* test_bpe_parity.c — tc_tokenizer_parity MODEL_DIR CORPUS NODE_OUT [MIN_BYTES]: the C
 * tokenizer against node + gpt-3-encoder over the corpus of make_corpus.py,
 * as recorded by node_encode.js. Per record:
 *   1. encode(raw bytes) == node's ids, id for id;
 *   2. decode(ids) == the raw bytes (lossless);
 *   3. streaming decode: every push emits valid UTF-8; for every prefix
 *      ids[0..k), what was emitted plus a flush of a copy of the stream
 *      equals the reference U+FFFD rule (ref_utf8.c) applied to
 *      decode(ids[0..k)); the whole equals node's decode() (TextDecoder);
 *   4. ill-formed records: the rule applied to the raw bytes equals node's
 *      Buffer.toString(), and encode of that equals node's ids for it.
 * Prints the first mismatches with context, then "N passed, M failed".
 * MIN_BYTES (default 1000000, the acceptance's 1 MB) guards the corpus size;
 * merge_fuzz.sh passes 0 for its small synthetic corpora.
 * Not the corpus generator nor the node side. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/tokenizer/ref_utf8.h"
#include "tokenizer/bpe.h"

static const char *kinds[] = {"prose", "code", "unicode", "whitespace", "punct", "invalid", "sweep"};

typedef struct {
    const uint8_t *p, *end;
    int bad;
} reader;

static uint32_t rd_u32(reader *r) {
    if (r->end - r->p < 4) { r->bad = 1; return 0; }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

static const uint8_t *rd_bytes(reader *r, size_t n) {
    if ((size_t)(r->end - r->p) < n) { r->bad = 1; return NULL; }
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "%s: read failed\n", path); exit(2); }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int n_fail, n_shown;

static void show_bytes(const char *label, const uint8_t *s, size_t n) {
    fprintf(stderr, "    %s \"", label);
    for (size_t i = 0; i < n && i < 80; i++)
        fprintf(stderr, s[i] >= 0x20 && s[i] < 0x7F && s[i] != '"' ? "%c" : "\\x%02X", s[i]);
    fprintf(stderr, "%s\"\n", n > 80 ? "..." : "");
}

static void show_ids(const tc_bpe *bpe, const char *label, const int32_t *ids, size_t n, size_t at) {
    size_t lo = at > 4 ? at - 4 : 0, hi = at + 5 < n ? at + 5 : n;
    fprintf(stderr, "    %s ids[%zu..%zu):", label, lo, hi);
    for (size_t i = lo; i < hi; i++) {
        size_t len = 0;
        const uint8_t *b = tc_bpe_token_bytes(bpe, ids[i], &len);
        fprintf(stderr, " %s%d:\"", i == at ? "*" : "", ids[i]);
        for (size_t k = 0; b && k < len; k++)
            fprintf(stderr, b[k] >= 0x20 && b[k] < 0x7F && b[k] != '"' ? "%c" : "\\x%02X", b[k]);
        fprintf(stderr, "\"");
    }
    fprintf(stderr, "\n");
}

static void fail(size_t rec, int kind, const char *what) {
    n_fail++;
    if (n_shown++ < 12) fprintf(stderr, "record %zu (%s): %s\n", rec, kinds[kind], what);
}

static int same_ids(const tc_bpe *bpe, size_t rec, int kind, const char *what, const int32_t *a, size_t na,
                    const int32_t *b, size_t nb) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    if (i == na && na == nb) return 1;
    fail(rec, kind, what);
    if (n_shown <= 12) {
        fprintf(stderr, "    C %zu ids, node %zu ids, first difference at %zu\n", na, nb, i);
        show_ids(bpe, "C   ", a, na, i);
        show_ids(bpe, "node", b, nb, i);
    }
    return 0;
}

/* Check 3 for one record. `out` has room for the sanitized decode. */
static void check_stream(tc_bpe *bpe, size_t rec, int kind, const int32_t *ids, size_t n, const uint8_t *dec,
                         size_t dec_len, const uint8_t *node_dec, size_t node_dec_len) {
    size_t cap = 3 * dec_len + 16, step = tc_bpe_stream_max_out(bpe);
    uint8_t *emitted = malloc(cap), *expect = malloc(cap), *piece = malloc(step);
    tc_bpe_stream s;
    tc_bpe_stream_init(&s, bpe);
    size_t e = 0, prefix_bytes = 0;
    int ok = 1;
    for (size_t k = 0; k <= n && ok; k++) {
        /* prefix ids[0..k): emitted so far + flush of a fork */
        tc_bpe_stream fork = s;
        uint8_t tail[3];
        size_t tl = tc_bpe_stream_flush(&fork, (char *)tail);
        size_t xl = ref_utf8_sanitize(dec, prefix_bytes, expect);
        if (xl != e + tl || memcmp(expect, emitted, e) != 0 || memcmp(expect + e, tail, tl) != 0) {
            fail(rec, kind, "stream: emitted + flush differs from the U+FFFD rule on the prefix");
            if (n_shown <= 12) fprintf(stderr, "    prefix of %zu ids (%zu bytes)\n", k, prefix_bytes);
            ok = 0;
        }
        if (k == n) break;
        size_t got;
        if (tc_bpe_stream_push(&s, ids[k], (char *)piece, step, &got) != TC_OK) {
            fail(rec, kind, tc_error_get());
            ok = 0;
            break;
        }
        if (!ref_utf8_valid(piece, got)) {
            fail(rec, kind, "stream: a push emitted ill-formed UTF-8");
            ok = 0;
        }
        memcpy(emitted + e, piece, got);
        e += got;
        size_t tl2;
        tc_bpe_token_bytes(bpe, ids[k], &tl2);
        prefix_bytes += tl2;
    }
    if (ok) {
        e += tc_bpe_stream_flush(&s, (char *)emitted + e);
        /* TextDecoder drops a leading BOM; the stream keeps it */
        const uint8_t *em = emitted;
        size_t el = e;
        if (el >= 3 && memcmp(em, "\xEF\xBB\xBF", 3) == 0 &&
            !(node_dec_len >= 3 && memcmp(node_dec, "\xEF\xBB\xBF", 3) == 0 && node_dec_len == el)) {
            em += 3;
            el -= 3;
        }
        if (el != node_dec_len || memcmp(em, node_dec, el) != 0) {
            fail(rec, kind, "stream: the whole differs from node's decode()");
            if (n_shown <= 12) {
                show_bytes("C   ", em, el);
                show_bytes("node", node_dec, node_dec_len);
            }
        }
    }
    free(emitted);
    free(expect);
    free(piece);
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s MODEL_DIR CORPUS NODE_OUT [MIN_BYTES]\n", argv[0]);
        return 2;
    }
    tc_bpe *bpe;
    if (tc_bpe_load(&bpe, argv[1]) != TC_OK) {
        fprintf(stderr, "load: %s\n", tc_error_get());
        return 1;
    }
    size_t clen, nlen;
    uint8_t *corpus = slurp(argv[2], &clen), *nout = slurp(argv[3], &nlen);
    reader c = {corpus, corpus + clen, 0}, nd = {nout, nout + nlen, 0};
    size_t n_rec = 0, n_bytes = 0, n_ids = 0, n_bad = 0, n_ok = 0;
    size_t per_kind[7] = {0};
    while (c.p < c.end) {
        uint32_t len = rd_u32(&c);
        const uint8_t *kb = rd_bytes(&c, 1);
        const uint8_t *raw = rd_bytes(&c, len);
        uint32_t nn = rd_u32(&nd);
        const uint8_t *nids_b = rd_bytes(&nd, 4 * (size_t)nn);
        uint32_t ndl = rd_u32(&nd);
        const uint8_t *ndec = rd_bytes(&nd, ndl);
        const uint8_t *badp = rd_bytes(&nd, 1);
        if (c.bad || nd.bad || *kb > 6) { fprintf(stderr, "corpus or node output truncated at record %zu\n", n_rec); return 1; }
        int kind = *kb, fails_before = n_fail;
        int32_t *nids = malloc(4 * (size_t)nn + 4);
        memcpy(nids, nids_b, 4 * (size_t)nn);

        int32_t *ids;
        size_t n;
        if (tc_bpe_encode(bpe, (const char *)raw, len, &ids, &n) != TC_OK) {
            fail(n_rec, kind, tc_error_get());
            return 1;
        }
        same_ids(bpe, n_rec, kind, "encode: ids differ from node", ids, n, nids, nn);

        char *dec;
        size_t dl;
        if (tc_bpe_decode(bpe, ids, n, &dec, &dl) != TC_OK) {
            fail(n_rec, kind, tc_error_get());
        } else {
            if (dl != len || memcmp(dec, raw, len) != 0) fail(n_rec, kind, "decode(encode(x)) != x");
            check_stream(bpe, n_rec, kind, ids, n, (const uint8_t *)dec, dl, ndec, ndl);
            free(dec);
        }

        if (*badp) {
            n_bad++;
            uint32_t n2 = rd_u32(&nd);
            const uint8_t *ids2_b = rd_bytes(&nd, 4 * (size_t)n2);
            uint32_t rl = rd_u32(&nd);
            const uint8_t *repl = rd_bytes(&nd, rl);
            if (nd.bad) { fprintf(stderr, "node output truncated at record %zu\n", n_rec); return 1; }
            uint8_t *mine = malloc(3 * (size_t)len + 1);
            size_t ml = ref_utf8_sanitize(raw, len, mine);
            uint8_t *lib = malloc(3 * (size_t)len + 1);
            size_t ll = tc_utf8_sanitize(raw, len, lib);
            if (ml != rl || memcmp(mine, repl, rl) != 0) fail(n_rec, kind, "reference U+FFFD rule != node Buffer.toString()");
            if (ll != rl || memcmp(lib, repl, rl) != 0) fail(n_rec, kind, "tc_utf8_sanitize != node Buffer.toString()");
            int32_t *ids2 = malloc(4 * (size_t)n2 + 4), *cids2;
            memcpy(ids2, ids2_b, 4 * (size_t)n2);
            size_t cn2;
            if (tc_bpe_encode(bpe, (const char *)repl, rl, &cids2, &cn2) == TC_OK) {
                same_ids(bpe, n_rec, kind, "encode(replaced): ids differ from node", cids2, cn2, ids2, n2);
                free(cids2);
            }
            free(ids2);
            free(mine);
            free(lib);
        }
        if (n_fail == fails_before) n_ok++;
        n_rec++;
        n_bytes += len;
        n_ids += n;
        per_kind[kind] += len;
        free(ids);
        free(nids);
    }
    if (nd.p != nd.end) { fprintf(stderr, "node output has trailing data\n"); n_fail++; }
    printf("parity: %zu records, %zu bytes, %zu ids (%zu with ill-formed UTF-8); bytes by kind:", n_rec, n_bytes,
           n_ids, n_bad);
    for (int k = 0; k < 7; k++) printf(" %s %zu", kinds[k], per_kind[k]);
    printf("\n");
    size_t min_bytes = argc == 5 ? strtoul(argv[4], NULL, 10) : 1000000;
    if (n_bytes < min_bytes) { fprintf(stderr, "corpus of %zu bytes, below %zu\n", n_bytes, min_bytes); n_fail++; }
    printf("%zu passed, %zu failed\n", n_ok, n_rec - n_ok + (n_fail && n_ok == n_rec));
    tc_bpe_free(bpe);
    free(corpus);
    free(nout);
    return n_fail ? 1 : 0;
}
