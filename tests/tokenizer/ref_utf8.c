/* ref_utf8.c — the reference U+FFFD rule of ref_utf8.h (test-only). */
#include "ref_utf8.h"

#include <string.h>

/* Length a lead byte announces by its high bits; 0 for a continuation or
 * a byte no UTF-8 uses. */
static int announced(uint8_t b) {
    if (b < 0x80) return 1;
    if ((b & 0xE0) == 0xC0) return 2;
    if ((b & 0xF0) == 0xE0) return 3;
    if ((b & 0xF8) == 0xF0) return 4;
    return 0;
}

/* Decodes a full sequence of length L and says whether it is a Unicode
 * scalar value encoded in the shortest form. */
static int decodes(const uint8_t *s, int L) {
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    static const uint8_t lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t cp = s[0] & lead_mask[L];
    for (int i = 1; i < L; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    return cp >= min[L] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

/* Is s[0..k) the beginning of some well-formed L-byte sequence? */
static int completes(const uint8_t *s, int k, int L) {
    uint8_t t[4];
    memcpy(t, s, (size_t)k);
    for (int i = k; i < L; i++) t[i] = 0x80;
    if (k >= 2 || L == 1) return decodes(t, L);
    for (int c = 0x80; c <= 0xBF; c++) { /* the second byte is free: try all */
        t[1] = (uint8_t)c;
        if (decodes(t, L)) return 1;
    }
    return 0;
}

size_t ref_utf8_sanitize(const uint8_t *in, size_t n, uint8_t *out) {
    size_t o = 0, i = 0;
    while (i < n) {
        int L = announced(in[i]);
        int k = 0; /* longest prefix at i that some completion makes valid */
        if (L > 0)
            for (int j = 1; j <= L && i + (size_t)j <= n; j++) {
                if (!completes(in + i, j, L)) break;
                k = j;
            }
        if (L > 0 && k == L) {
            memcpy(out + o, in + i, (size_t)L);
            o += (size_t)L;
            i += (size_t)L;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += k > 0 ? (size_t)k : 1;
        }
    }
    return o;
}

int ref_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int L = announced(s[i]);
        if (L == 0 || i + (size_t)L > n || !decodes(s + i, L)) return 0;
        i += (size_t)L;
    }
    return 1;
}
