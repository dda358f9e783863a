/* pretok.c — the GPT-2 split pattern on PCRE2, with ill-formed bytes mapped
 * to placeholders. Not the merges (bpe_encode.c); see pretok.h for why the
 * pattern deviates in spelling, not in meaning, from gpt-3-encoder's. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "pretok.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_extra.h"
#include "utf8.h"

/* ECMAScript \s: WhiteSpace (TAB VT FF SP NBSP ZWNBSP and Zs) plus
 * LineTerminator (LF CR LS PS). Zs has been stable since Unicode 6.3. */
#define WS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
           "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}"
#define LET "a-zA-Z\\p{L}" TC_UNICODE_EXTRA_L
#define NUM "0-9\\p{N}" TC_UNICODE_EXTRA_N

/* Same language as gpt-3-encoder's pattern, spelled for speed: the
 * contractions share their apostrophe (their second letters differ, so the
 * order is kept), the runs with nothing after them are possessive (a match
 * that ends there never backtracks into them), and ASCII ranges come first
 * in the classes so that ASCII text skips the property lookup. */
static const char k_pattern[] =
    "'(?:s|t|re|ve|m|ll|d)"
    "| ?[" LET "]++"
    "| ?[" NUM "]++"
    "| ?[^" WS LET NUM "]++"
    "|[" WS "]+(?![^" WS "])"
    "|[" WS "]++";

struct tc_pretok {
    pcre2_code *re;
    int jit; /* JIT compiled: pcre2_jit_match, else the interpreter */
};

const char *tc_pretok_pattern(void) { return k_pattern; }

tc_status tc_pretok_init(tc_pretok **out) {
    *out = NULL;
    tc_pretok *p = calloc(1, sizeof *p);
    if (!p) return TC_FAIL(TC_ERR_NOMEM, "pretok: out of memory");
    int err;
    PCRE2_SIZE erroff;
    p->re = pcre2_compile((PCRE2_SPTR)k_pattern, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &err, &erroff, NULL);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        free(p);
        return TC_FAIL(TC_ERR_INTERNAL, "pretok: PCRE2 rejects the pattern at offset %zu: %s",
                       (size_t)erroff, (const char *)msg);
    }
    p->jit = pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE) == 0;
    *out = p;
    return TC_OK;
}

void tc_pretok_free(tc_pretok *p) {
    if (!p) return;
    pcre2_code_free(p->re);
    free(p);
}

/* A placeholder for one ill-formed byte: U+FFFD is General_Category So, so
 * the pattern treats it exactly as node treats a lone surrogate (Cs). */
typedef struct {
    size_t wpos;  /* offset of the placeholder in the working text */
    uint8_t byte; /* the original byte */
} placeholder;

typedef struct {
    uint8_t *work;     /* well-formed copy of the input, or NULL */
    size_t work_len;
    placeholder *ph;
    size_t n_ph, next_ph;
    uint8_t *scratch;  /* a word with its original bytes put back */
} mapped_text;

static tc_status map_text(const uint8_t *text, size_t len, size_t first_bad, mapped_text *m) {
    /* at worst every byte is ill-formed and becomes 3 bytes */
    m->work = malloc(3 * len);
    m->ph = malloc(sizeof *m->ph * (len - first_bad));
    m->scratch = malloc(len);
    if (!m->work || !m->ph || !m->scratch) return TC_FAIL(TC_ERR_NOMEM, "pretok: out of memory");
    memcpy(m->work, text, first_bad);
    size_t w = first_bad, i = first_bad;
    while (i < len) {
        size_t n;
        if (text[i] < 0x80) {
            m->work[w++] = text[i++];
        } else if (tc_utf8_scan(text + i, len - i, &n) == TC_UTF8_OK) {
            memcpy(m->work + w, text + i, n);
            w += n;
            i += n;
        } else {
            m->ph[m->n_ph++] = (placeholder){w, text[i]};
            memcpy(m->work + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        }
    }
    m->work_len = w;
    return TC_OK;
}

/* Hands out work[s, e) with each placeholder turned back into its byte.
 * Words come in order, so the placeholder cursor only moves forward. */
static tc_status emit_mapped(mapped_text *m, size_t s, size_t e, tc_pretok_fn fn, void *ctx) {
    while (m->next_ph < m->n_ph && m->ph[m->next_ph].wpos < s) m->next_ph++;
    if (m->next_ph == m->n_ph || m->ph[m->next_ph].wpos >= e) return fn(ctx, m->work + s, e - s);
    size_t o = 0, at = s;
    while (m->next_ph < m->n_ph && m->ph[m->next_ph].wpos < e) {
        const placeholder *ph = &m->ph[m->next_ph++];
        memcpy(m->scratch + o, m->work + at, ph->wpos - at);
        o += ph->wpos - at;
        m->scratch[o++] = ph->byte;
        at = ph->wpos + 3;
    }
    memcpy(m->scratch + o, m->work + at, e - at);
    o += e - at;
    return fn(ctx, m->scratch, o);
}

tc_status tc_pretok_run(const tc_pretok *p, const uint8_t *text, size_t len,
                        tc_pretok_fn fn, void *ctx) {
    tc_status st = TC_OK;
    mapped_text m = {0};
    pcre2_match_data *md = NULL;
    pcre2_match_context *mc = NULL;
    pcre2_jit_stack *js = NULL;
    const uint8_t *subj = text;
    size_t subj_len = len;

    if (len == 0) return TC_OK;
    size_t first_bad = tc_utf8_first_invalid(text, len);
    if (first_bad < len) {
        TC_CHECK_GOTO(map_text(text, len, first_bad, &m));
        subj = m.work;
        subj_len = m.work_len;
    }
    md = pcre2_match_data_create_from_pattern(p->re, NULL);
    if (!md) { st = TC_FAIL(TC_ERR_NOMEM, "pretok: out of memory"); goto fail; }

    size_t off = 0;
    while (off < subj_len) {
        int rc = p->jit ? pcre2_jit_match(p->re, subj, subj_len, off, PCRE2_NO_UTF_CHECK, md, mc)
                        : pcre2_match(p->re, subj, subj_len, off, PCRE2_NO_UTF_CHECK, md, mc);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !js) {
            /* the default 32 KiB machine stack ran out: retry with a heap one */
            mc = pcre2_match_context_create(NULL);
            js = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
            if (!mc || !js) { st = TC_FAIL(TC_ERR_NOMEM, "pretok: out of memory"); goto fail; }
            pcre2_jit_stack_assign(mc, NULL, js);
            continue;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = TC_FAIL(TC_ERR_INTERNAL, "pretok: PCRE2 match failed at byte %zu: %s", off,
                         (const char *)msg);
            goto fail;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t s = ov[0], e = ov[1];
        /* Every code point is a space, letter, number or other, so the match
         * always starts at off and is never empty; guard anyway. */
        if (s != off || e <= s) {
            st = TC_FAIL(TC_ERR_INTERNAL, "pretok: pattern left a gap at byte %zu", off);
            goto fail;
        }
        st = m.work ? emit_mapped(&m, s, e, fn, ctx) : fn(ctx, subj + s, e - s);
        if (st != TC_OK) goto fail;
        off = e;
    }
fail:
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    pcre2_jit_stack_free(js);
    free(m.work);
    free(m.ph);
    free(m.scratch);
    return st;
}
