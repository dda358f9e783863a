/* ref_utf8.h — a second, deliberately different implementation of the
 * U+FFFD rule, for the tests to check tokenizer/utf8.c against: it decodes
 * code points arithmetically and finds maximal subparts by asking whether
 * any completion of a prefix is a well-formed character, instead of using
 * Table 3-7. Slow; test-only. */
#ifndef TC_TESTS_REF_UTF8_H
#define TC_TESTS_REF_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Writes the sanitized form of in to out (room for 3 * n); returns its length. */
size_t ref_utf8_sanitize(const uint8_t *in, size_t n, uint8_t *out);
/* 1 when s is entirely well-formed UTF-8. */
int ref_utf8_valid(const uint8_t *s, size_t n);

#endif
