/* test_classes.c — tc_tokenizer_classes: dumps how a code point is classed,
 * one byte per code point U+0000..U+10FFFF (0 other, 1 letter, 2 number,
 * 3 space; surrogates 0), in the format of unicode_classes.js dump.
 *   tc_tokenizer_classes pcre OUT     plain PCRE2 \p{L} / \p{N} (input of gen)
 *   tc_tokenizer_classes pretok OUT   as the real pre-tokenizer splits
 * The second is what ctest compares with node. Not a unit test by itself. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <string.h>

#include "tokenizer/pretok.h"

static size_t put_utf8(uint32_t cp, uint8_t *b) {
    if (cp < 0x80) { b[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { b[0] = 0xC0 | cp >> 6; b[1] = 0x80 | (cp & 63); return 2; }
    if (cp < 0x10000) {
        b[0] = 0xE0 | cp >> 12; b[1] = 0x80 | ((cp >> 6) & 63); b[2] = 0x80 | (cp & 63);
        return 3;
    }
    b[0] = 0xF0 | cp >> 18; b[1] = 0x80 | ((cp >> 12) & 63);
    b[2] = 0x80 | ((cp >> 6) & 63); b[3] = 0x80 | (cp & 63);
    return 4;
}

static tc_status count_word(void *ctx, const uint8_t *w, size_t n) {
    (void)w; (void)n;
    (*(int *)ctx)++;
    return TC_OK;
}

/* The class of cp is the one lead character it joins with in one word:
 * 'a' letters, '1' numbers, '!' others, '\t' spaces. */
static int pretok_class(const tc_pretok *p, uint32_t cp) {
    static const uint8_t leads[4] = {'!', 'a', '1', '\t'};
    int cls = -1;
    for (int c = 0; c < 4; c++) {
        uint8_t buf[8];
        buf[0] = leads[c];
        size_t n = 1 + put_utf8(cp, buf + 1);
        int words = 0;
        if (tc_pretok_run(p, buf, n, count_word, &words) != TC_OK) return 0xFF;
        if (words == 1) cls = cls < 0 ? c : 0xFE;
    }
    return cls < 0 ? 0xFD : cls;
}

static pcre2_code *compile(const char *pat) {
    int err;
    PCRE2_SIZE off;
    return pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "pcre") && strcmp(argv[1], "pretok"))) {
        fprintf(stderr, "usage: %s pcre|pretok OUT\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[2], "wb");
    if (!f) { perror(argv[2]); return 1; }
    int pretok = strcmp(argv[1], "pretok") == 0;
    tc_pretok *p = NULL;
    pcre2_code *L = compile("^\\p{L}$"), *N = compile("^\\p{N}$");
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (pretok && tc_pretok_init(&p) != TC_OK) {
        fprintf(stderr, "%s\n", tc_error_get());
        fclose(f);
        return 1;
    }
    int bad = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        int cls = 0;
        if (cp < 0xD800 || cp >= 0xE000) {
            uint8_t b[4];
            size_t n = put_utf8(cp, b);
            if (pretok) {
                cls = pretok_class(p, cp);
                if (cls > 3 && bad++ < 10) fprintf(stderr, "U+%04X: no single class (%d)\n", cp, cls);
            } else {
                cls = pcre2_match(L, b, n, 0, 0, md, NULL) > 0 ? 1
                    : pcre2_match(N, b, n, 0, 0, md, NULL) > 0 ? 2 : 0;
            }
        }
        fputc(cls, f);
    }
    fclose(f);
    tc_pretok_free(p);
    pcre2_match_data_free(md);
    pcre2_code_free(L);
    pcre2_code_free(N);
    return bad ? 1 : 0;
}
