/* utf8.h — UTF-8 well-formedness, the U+FFFD rule and a byte-level stream.
 *
 * Well-formed means Unicode Table 3-7 (no overlongs, no surrogates, nothing
 * past U+10FFFF). Ill-formed input is made valid by replacing each *maximal
 * subpart* with one U+FFFD: the rule of the WHATWG Encoding Standard (so of
 * JavaScript's TextDecoder, which gpt-3-encoder's decode uses) and of
 * Python's errors="replace". The stream applies the same rule incrementally:
 * it holds back at most 3 bytes that could still complete a character, so
 * the concatenation of everything it emits equals tc_utf8_sanitize of the
 * concatenated input.
 * Not a Unicode library: no normalization, no properties (PCRE2 does that). */
#ifndef TC_TOKENIZER_UTF8_H
#define TC_TOKENIZER_UTF8_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TC_UTF8_OK = 0,        /* a complete well-formed sequence            */
    TC_UTF8_INVALID = 1,   /* a maximal subpart that can never complete   */
    TC_UTF8_TRUNCATED = 2, /* all bytes given are a prefix that may       */
} tc_utf8_scan_result;

/* Classifies the sequence starting at s[0] (n >= 1). *len gets the length of
 * the sequence (OK), of the maximal subpart (INVALID, >= 1) or n (TRUNCATED). */
tc_utf8_scan_result tc_utf8_scan(const uint8_t *s, size_t n, size_t *len);

/* Offset of the first byte that does not start a complete well-formed
 * sequence (a truncated tail counts as ill-formed); n when all is valid. */
size_t tc_utf8_first_invalid(const uint8_t *s, size_t n);

/* Writes the valid rendering of in[0..n) to out (room for
 * TC_UTF8_SANITIZE_MAX(n) bytes); returns the bytes written. */
#define TC_UTF8_SANITIZE_MAX(n) (3 * (size_t)(n))
size_t tc_utf8_sanitize(const uint8_t *in, size_t n, uint8_t *out);

/* Incremental form. Plain value: zero-initialize or tc_utf8_stream_init;
 * copying it forks the stream (tests flush every prefix that way). */
typedef struct {
    uint8_t pend[4];
    uint8_t n_pend;
} tc_utf8_stream;

#define TC_UTF8_STREAM_OUT_MAX(n) (3 * ((size_t)(n) + 3))
void tc_utf8_stream_init(tc_utf8_stream *s);
/* Appends to out (room for TC_UTF8_STREAM_OUT_MAX(n)) only complete valid
 * UTF-8; returns the bytes written. */
size_t tc_utf8_stream_push(tc_utf8_stream *s, const uint8_t *in, size_t n, uint8_t *out);
/* End of input: a held-back incomplete sequence becomes one U+FFFD (out has
 * room for 3 bytes). Returns the bytes written; the stream is reset. */
size_t tc_utf8_stream_flush(tc_utf8_stream *s, uint8_t *out);

#endif
