/* bpe_decode.c — ids -> bytes, whole or streamed as valid UTF-8.
 * Not the U+FFFD rule itself (utf8.c) nor the encoder (bpe_encode.c). */
#include "bpe_internal.h"

#include <stdlib.h>
#include <string.h>

tc_status tc_bpe_decode(const tc_bpe *bpe, const int32_t *ids, size_t n, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= bpe->n_vocab)
            return TC_FAIL(TC_ERR_INVALID, "token id %d (position %zu) out of range [0, %d)", ids[i], i, bpe->n_vocab);
        total += bpe->tok_len[ids[i]];
    }
    char *b = malloc(total + 1);
    if (!b) return TC_FAIL(TC_ERR_NOMEM, "tokenizer: out of memory");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(b + o, bpe->tok_bytes + bpe->tok_off[ids[i]], bpe->tok_len[ids[i]]);
        o += bpe->tok_len[ids[i]];
    }
    b[o] = 0;
    *out = b;
    *len = o;
    return TC_OK;
}

void tc_bpe_stream_init(tc_bpe_stream *s, const tc_bpe *bpe) {
    s->bpe = bpe;
    tc_utf8_stream_init(&s->utf8);
}

size_t tc_bpe_stream_max_out(const tc_bpe *bpe) { return TC_UTF8_STREAM_OUT_MAX(bpe->max_tok_len); }

tc_status tc_bpe_stream_push(tc_bpe_stream *s, int32_t id, char *out, size_t cap, size_t *n_out) {
    const tc_bpe *bpe = s->bpe;
    *n_out = 0;
    if (id < 0 || id >= bpe->n_vocab)
        return TC_FAIL(TC_ERR_INVALID, "token id %d out of range [0, %d)", id, bpe->n_vocab);
    size_t len = bpe->tok_len[id];
    if (cap < TC_UTF8_STREAM_OUT_MAX(len))
        return TC_FAIL(TC_ERR_INVALID, "stream buffer of %zu bytes is below the %zu a token may need", cap,
                       (size_t)TC_UTF8_STREAM_OUT_MAX(len));
    *n_out = tc_utf8_stream_push(&s->utf8, bpe->tok_bytes + bpe->tok_off[id], len, (uint8_t *)out);
    return TC_OK;
}

size_t tc_bpe_stream_flush(tc_bpe_stream *s, char *out) { return tc_utf8_stream_flush(&s->utf8, (uint8_t *)out); }
