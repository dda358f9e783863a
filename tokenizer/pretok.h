/* pretok.h — GPT-2 pre-tokenizer: text -> words, as gpt-3-encoder splits it.
 *
 * The pattern is gpt-3-encoder's
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * compiled with PCRE2 (UTF + UCP, JIT), with two adjustments so that it
 * classifies code points as node's /u regex does (see docs/tokenizer.md):
 * \s is spelled out as ECMAScript's WhiteSpace + LineTerminator set (PCRE2's
 * \s adds U+0085 and U+180E and lacks U+FEFF), and \p{L} / \p{N} are
 * widened by unicode_extra.h, the letters and numbers that node's newer
 * Unicode tables have and PCRE2's lack.
 * Ill-formed UTF-8: every byte that does not start a well-formed sequence
 * is matched as one "other" character (neither space, letter nor number),
 * which is how node's regex sees it once the byte is carried in a lone
 * surrogate; the word handed out holds the original bytes, so nothing is
 * lost. Not the merge step (bpe_encode.c). */
#ifndef TC_TOKENIZER_PRETOK_H
#define TC_TOKENIZER_PRETOK_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct tc_pretok tc_pretok;

tc_status tc_pretok_init(tc_pretok **out);
void tc_pretok_free(tc_pretok *p);

/* Called once per word, in order; the words concatenate to the input.
 * `word` is valid only during the call. A non-OK return stops the run. */
typedef tc_status (*tc_pretok_fn)(void *ctx, const uint8_t *word, size_t len);

/* Thread-safe: p is read-only after init. */
tc_status tc_pretok_run(const tc_pretok *p, const uint8_t *text, size_t len,
                        tc_pretok_fn fn, void *ctx);

/* The pattern string as compiled (for docs and tests). */
const char *tc_pretok_pattern(void);

#endif
