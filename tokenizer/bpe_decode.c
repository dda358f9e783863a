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

/* Does a stop string whose last byte is at t[p] end in token t? */
static int ends_in(const uint8_t *t, size_t p, const uint8_t *s, size_t S) {
    const size_t m = p + 1;
    return m <= S ? !memcmp(t, s + S - m, m) : !memcmp(t + m - S, s, S);
}

int tc_bpe_stop_candidates(const tc_bpe *bpe, const char *const *stop, int n_stop, int32_t *out, int cap) {
    /* the stops by last byte (first[z], then next[k]): each token is read
     * once, and only the stops ending in one of its bytes are tried */
    int first[256], nx[64], *next = n_stop <= 64 ? nx : malloc((size_t)n_stop * sizeof *next);
    size_t len[64], *S = n_stop <= 64 ? len : malloc((size_t)n_stop * sizeof *S);
    int n = S && next ? 0 : -2; /* out of memory: as if too many (the caller steps singly) */
    for (int z = 0; z < 256; z++) first[z] = -1;
    for (int k = n_stop - 1; k >= 0 && n >= 0; k--) {
        S[k] = strlen(stop[k]);
        if (S[k] == 0 || tc_utf8_first_invalid((const uint8_t *)stop[k], S[k]) != S[k] ||
            memmem(stop[k], S[k], "\xEF\xBF\xBD", 3)) {
            n = -1;
            break;
        }
        const uint8_t z = (uint8_t)stop[k][S[k] - 1];
        next[k] = first[z], first[z] = k;
    }
    for (int32_t id = 0; id < bpe->n_vocab && n >= 0; id++) {
        const uint8_t *t = bpe->tok_bytes + bpe->tok_off[id];
        const size_t L = bpe->tok_len[id];
        int hit = 0;
        for (size_t p = 0; p < L && !hit; p++)
            for (int k = first[t[p]]; k >= 0 && !hit; k = next[k]) hit = ends_in(t, p, (const uint8_t *)stop[k], S[k]);
        if (!hit) continue;
        if (n == cap) n = -2;
        else out[n++] = id;
    }
    if (S != len) free(S);
    if (next != nx) free(next);
    return n;
}
