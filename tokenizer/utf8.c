/* utf8.c — Table 3-7 scanner, U+FFFD sanitizer and the incremental stream.
 * Not Unicode-aware beyond the encoding form; see utf8.h for the rule. */
#include "utf8.h"

#include <string.h>

/* Bytes the lead needs after it, and the allowed range of the second byte
 * (Table 3-7); need < 0 for bytes that can never start a sequence. */
static int lead_info(uint8_t b, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (b < 0x80) return 0;
    if (b < 0xC2) return -1;
    if (b < 0xE0) return 1;
    if (b == 0xE0) { *lo = 0xA0; return 2; }
    if (b == 0xED) { *hi = 0x9F; return 2; }
    if (b < 0xF0) return 2;
    if (b == 0xF0) { *lo = 0x90; return 3; }
    if (b < 0xF4) return 3;
    if (b == 0xF4) { *hi = 0x8F; return 3; }
    return -1;
}

tc_utf8_scan_result tc_utf8_scan(const uint8_t *s, size_t n, size_t *len) {
    uint8_t lo, hi;
    int need = lead_info(s[0], &lo, &hi);
    if (need == 0) { *len = 1; return TC_UTF8_OK; }
    if (need < 0) { *len = 1; return TC_UTF8_INVALID; }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) { *len = n; return TC_UTF8_TRUNCATED; }
        if (s[i] < lo || s[i] > hi) { *len = (size_t)i; return TC_UTF8_INVALID; }
        lo = 0x80;
        hi = 0xBF;
    }
    *len = (size_t)need + 1;
    return TC_UTF8_OK;
}

size_t tc_utf8_first_invalid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; }
        size_t len;
        if (tc_utf8_scan(s + i, n - i, &len) != TC_UTF8_OK) return i;
        i += len;
    }
    return n;
}

static const uint8_t fffd[3] = {0xEF, 0xBF, 0xBD};

void tc_utf8_stream_init(tc_utf8_stream *s) { memset(s, 0, sizeof *s); }

size_t tc_utf8_stream_push(tc_utf8_stream *s, const uint8_t *in, size_t n, uint8_t *out) {
    size_t o = 0, i = 0;
    /* Finish the held-back sequence first, one byte at a time: the byte that
     * breaks it is not consumed, it starts afresh below. */
    while (s->n_pend > 0 && i < n) {
        s->pend[s->n_pend++] = in[i];
        size_t len;
        tc_utf8_scan_result r = tc_utf8_scan(s->pend, s->n_pend, &len);
        if (r == TC_UTF8_TRUNCATED) { i++; continue; }
        if (r == TC_UTF8_OK) {
            memcpy(out + o, s->pend, len);
            o += len;
            i++;
        } else {
            memcpy(out + o, fffd, 3);
            o += 3;
        }
        s->n_pend = 0;
    }
    while (i < n) {
        if (in[i] < 0x80) { out[o++] = in[i++]; continue; }
        size_t len;
        tc_utf8_scan_result r = tc_utf8_scan(in + i, n - i, &len);
        if (r == TC_UTF8_OK) {
            memcpy(out + o, in + i, len);
            o += len;
        } else if (r == TC_UTF8_INVALID) {
            memcpy(out + o, fffd, 3);
            o += 3;
        } else {
            memcpy(s->pend, in + i, len);
            s->n_pend = (uint8_t)len;
        }
        i += len;
    }
    return o;
}

size_t tc_utf8_stream_flush(tc_utf8_stream *s, uint8_t *out) {
    if (s->n_pend == 0) return 0;
    s->n_pend = 0;
    memcpy(out, fffd, 3);
    return 3;
}

size_t tc_utf8_sanitize(const uint8_t *in, size_t n, uint8_t *out) {
    tc_utf8_stream s;
    tc_utf8_stream_init(&s);
    size_t o = tc_utf8_stream_push(&s, in, n, out);
    return o + tc_utf8_stream_flush(&s, out + o);
}
