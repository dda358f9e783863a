/* state.c — a session's state as bytes, for moving it between workers
 * (DESIGN.md §4 data plane): the context worker syncs or prefills and
 * ships the result; the generation worker installs it and keeps stepping.
 * Also the history-only extend a context worker uses to keep its copy of a
 * session's tokens without running the window rows.
 *
 * Blob layout (little-endian host order; both ends run the same build):
 *   header tc_state_hdr
 *   tokens  int32 [n_tokens]           (TC_STATE_FULL only)
 *   zip     f32 [n_block][depth-1][2][zip_len][d]
 *   hist    f32 [n_block][2][hist_len][d]           (TLin)
 *   window  f32 [n_layers][2][win_len][d]           (TC_STATE_FULL only)
 * Not here: transport, framing, who sends what when (worker/). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "session.h"

#define TC_STATE_MAGIC 0x54535431u /* "TST1" */
/* Import refuses K/V values beyond this (NaN and inf included): a working
 * model's rows are orders of magnitude smaller, and a larger one can make
 * an attention score inf, then NaN, which the kernels do not expect. */
#define TC_STATE_MAX_ABS 1e6f

typedef struct {
    uint32_t magic, kind;
    int32_t arch, d, n_layers, n_block, depth, vocab;
    int64_t n_tokens, win_start, win_len, zip_len, zip_pos, hist_len, n_syncs;
} tc_state_hdr;

static size_t rows_bytes(int64_t rows, int d) { return (size_t)rows * (size_t)d * 4; }

tc_status tc_session_extend(tc_session *s, const int32_t *t, int64_t n) {
    if (n <= 0) return TC_OK;
    TC_CHECK(tc_session_push_tokens(s, t, n));
    s->win_stale = 1; /* the window rows of these tokens were not computed */
    return TC_OK;
}

/* a * b + c, saturating at SIZE_MAX */
static size_t sat_madd(size_t a, size_t b, size_t c) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r)) return SIZE_MAX;
    return r;
}

size_t tc_state_max_bytes(const tc_model_config *c, int64_t max_tokens) {
    const size_t n = max_tokens > 0 ? (size_t)max_tokens : 0, row = (size_t)c->n_embd * 4;
    const size_t nl = (size_t)tc_config_n_layers(c);
    const int base = c->arch == TC_ARCH_TRANSFORMER;
    const size_t zl = base ? 0 : (size_t)c->n_block * (size_t)(c->inner_depth - 1);
    const size_t zip = base ? 0 : (size_t)c->history_window;
    const size_t hist = c->arch == TC_ARCH_TLIN ? n : 0;
    const size_t win = base || n < (size_t)c->generate_window ? n : (size_t)c->generate_window;
    size_t b = sat_madd(n, 4, sizeof(tc_state_hdr));                   /* header, tokens (FULL) */
    b = sat_madd(sat_madd(zl * 2, zip, 0), row, b);                      /* zip */
    b = sat_madd(sat_madd((size_t)c->n_block * 2, hist, 0), row, b);     /* TLin history */
    return sat_madd(sat_madd(nl * 2, win, 0), row, b);                   /* window rows */
}

tc_status tc_session_export(const tc_session *s, int kind, void **out, size_t *len) {
    const tc_model_config *c = &s->m->cfg;
    tc_backend *be = s->m->be;
    const int d = c->n_embd, nl = tc_config_n_layers(c);
    *out = NULL;
    *len = 0;
    if (kind != TC_STATE_SYNC && kind != TC_STATE_FULL) return TC_FAIL(TC_ERR_INVALID, "export: unknown kind %d", kind);
    if (kind == TC_STATE_SYNC && c->arch == TC_ARCH_TRANSFORMER)
        return TC_FAIL(TC_ERR_INVALID, "export: the transformer has no sync state");
    /* (win_start < 0: a sync stopped half way, the zip half written) */
    if (kind == TC_STATE_FULL && (s->win_stale || s->win_start < 0))
        return TC_FAIL(TC_ERR_INVALID, "export: the window rows of this session were not computed");
    if (kind == TC_STATE_SYNC && (s->win_len != 0 || s->win_start != s->n_tokens))
        return TC_FAIL(TC_ERR_INVALID, "export: sync state asked for, but the session is not right after a sync");
    const int zl = c->arch == TC_ARCH_TRANSFORMER ? 0 : c->n_block * (c->inner_depth - 1);
    tc_state_hdr h = {TC_STATE_MAGIC, (uint32_t)kind, c->arch, d, nl, c->n_block, c->inner_depth, c->vocab_size,
                      s->n_tokens, s->win_start, kind == TC_STATE_FULL ? s->win_len : 0, s->zip_len, s->zip_pos,
                      c->arch == TC_ARCH_TLIN ? s->hist_len : 0, s->n_syncs};
    size_t n = sizeof h + (kind == TC_STATE_FULL ? (size_t)s->n_tokens * 4 : 0) +
               (size_t)zl * 2 * rows_bytes(h.zip_len, d) + (size_t)c->n_block * 2 * rows_bytes(h.hist_len, d) +
               (size_t)nl * 2 * rows_bytes(h.win_len, d);
    uint8_t *b = malloc(n), *p = b;
    if (!b) return TC_FAIL(TC_ERR_NOMEM, "export: out of memory for %zu bytes", n);
    memcpy(p, &h, sizeof h), p += sizeof h;
    if (kind == TC_STATE_FULL) memcpy(p, s->tokens, (size_t)s->n_tokens * 4), p += (size_t)s->n_tokens * 4;
    for (int i = 0; i < zl * 2; i++) /* zip: [n_block][depth-1][k|v][W_oh][d], zip_len rows used */
        be->download(be, p, s->zip + (size_t)i * c->history_window * d, rows_bytes(h.zip_len, d)),
            p += rows_bytes(h.zip_len, d);
    for (int i = 0; i < c->n_block * 2 && h.hist_len; i++)
        be->download(be, p, s->hist + (size_t)i * s->hist_cap * d, rows_bytes(h.hist_len, d)),
            p += rows_bytes(h.hist_len, d);
    for (int i = 0; i < nl * 2 && h.win_len; i++)
        be->download(be, p, s->win + (size_t)i * s->win_cap * d, rows_bytes(h.win_len, d)),
            p += rows_bytes(h.win_len, d);
    *out = b;
    *len = n;
    return TC_OK;
}

tc_status tc_session_import(tc_session *s, const void *blob, size_t len) {
    const tc_model_config *c = &s->m->cfg;
    tc_backend *be = s->m->be;
    const int d = c->n_embd, nl = tc_config_n_layers(c);
    tc_state_hdr h;
    if (len < sizeof h) return TC_FAIL(TC_ERR_INVALID, "import: %zu bytes, shorter than the state header", len);
    memcpy(&h, blob, sizeof h);
    if (h.magic != TC_STATE_MAGIC) return TC_FAIL(TC_ERR_INVALID, "import: bad magic 0x%08x", h.magic);
    if (h.kind != TC_STATE_SYNC && h.kind != TC_STATE_FULL) return TC_FAIL(TC_ERR_INVALID, "import: unknown kind %u", h.kind);
    if (h.arch != (int)c->arch || h.d != d || h.n_layers != nl || h.n_block != c->n_block ||
        h.depth != c->inner_depth || h.vocab != c->vocab_size)
        return TC_FAIL(TC_ERR_INVALID, "import: the state is of another model (arch %d d %d layers %d vocab %d)", h.arch,
                       h.d, h.n_layers, h.vocab);
    const int zl = c->arch == TC_ARCH_TRANSFORMER ? 0 : c->n_block * (c->inner_depth - 1);
    int64_t W = c->arch == TC_ARCH_TRANSFORMER ? 0 : c->generate_window;
    /* each term bounded before a sum uses it: no signed overflow */
    int ok = h.n_tokens >= 0 && h.n_tokens <= ((int64_t)1 << 40) && h.win_len >= 0 && h.win_len <= h.n_tokens &&
             h.win_start >= 0 && h.win_start <= h.n_tokens && h.win_start + h.win_len == h.n_tokens &&
             h.zip_len >= 0 && h.zip_len <= (zl ? c->history_window : 0) && h.zip_pos >= 0 &&
             h.zip_pos <= h.n_tokens && h.zip_pos + h.zip_len == (zl ? h.win_start : 0) && h.hist_len >= 0 &&
             h.hist_len == (c->arch == TC_ARCH_TLIN ? h.win_start : 0) && (W == 0 || h.win_start % W == 0) &&
             (W == 0 || h.win_len <= W) && h.n_syncs >= 0 &&
             (W != 0 || (h.kind == TC_STATE_FULL && h.win_start == 0)); /* the transformer: its whole cache */
    if (!ok) return TC_FAIL(TC_ERR_INVALID, "import: inconsistent state header (n_tokens %lld window %lld+%lld zip %lld@%lld)",
                            (long long)h.n_tokens, (long long)h.win_start, (long long)h.win_len, (long long)h.zip_len,
                            (long long)h.zip_pos);
    if (h.kind == TC_STATE_SYNC && (h.win_len != 0 || h.n_tokens != s->n_tokens))
        return TC_FAIL(TC_ERR_INVALID, "import: sync state at %lld tokens, the session has %lld", (long long)h.n_tokens,
                       (long long)s->n_tokens);
    /* in 128 bits: a header's counts times a large model's rows must not
     * wrap into a size that matches a short blob */
    const unsigned __int128 need128 =
        (unsigned __int128)sizeof h + (h.kind == TC_STATE_FULL ? (unsigned __int128)h.n_tokens * 4 : 0) +
        (unsigned __int128)zl * 2 * h.zip_len * d * 4 + (unsigned __int128)c->n_block * 2 * h.hist_len * d * 4 +
        (unsigned __int128)nl * 2 * h.win_len * d * 4;
    if (need128 != len)
        return TC_FAIL(TC_ERR_INVALID, "import: %zu bytes, the header says %.0f", len, (double)need128);
    const uint8_t *p = (const uint8_t *)blob + sizeof h;
    const size_t f0 = sizeof h + (h.kind == TC_STATE_FULL ? (size_t)h.n_tokens * 4 : 0);
    for (size_t i = f0; i < len; i += 4) {
        float x;
        memcpy(&x, (const uint8_t *)blob + i, 4);
        if (!(fabsf(x) <= TC_STATE_MAX_ABS))
            return TC_FAIL(TC_ERR_INVALID, "import: K/V value %g at byte %zu is not finite or beyond %g", x, i,
                           TC_STATE_MAX_ABS);
    }
    if (h.kind == TC_STATE_FULL) {
        for (int64_t i = 0; i < h.n_tokens; i++) {
            int32_t t;
            memcpy(&t, p + i * 4, 4);
            if (t < 0 || t >= c->vocab_size) return TC_FAIL(TC_ERR_INVALID, "import: token %lld out of range", (long long)i);
        }
        int64_t n0 = s->n_tokens;
        s->n_tokens = 0;
        tc_status st = tc_session_extend(s, (const int32_t *)(const void *)p, h.n_tokens);
        if (st != TC_OK) { s->n_tokens = n0; return st; }
        p += (size_t)h.n_tokens * 4;
        if (c->arch == TC_ARCH_TRANSFORMER || h.win_len > s->win_cap) TC_CHECK(tc_session_win_reserve(s, h.win_len));
    }
    if (h.hist_len) TC_CHECK(tc_session_hist_reserve(s, h.hist_len));
    for (int i = 0; i < zl * 2; i++)
        be->upload(be, s->zip + (size_t)i * c->history_window * d, p, rows_bytes(h.zip_len, d)),
            p += rows_bytes(h.zip_len, d);
    for (int i = 0; i < c->n_block * 2 && h.hist_len; i++)
        be->upload(be, s->hist + (size_t)i * s->hist_cap * d, p, rows_bytes(h.hist_len, d)),
            p += rows_bytes(h.hist_len, d);
    for (int i = 0; i < nl * 2 && h.win_len; i++)
        be->upload(be, s->win + (size_t)i * s->win_cap * d, p, rows_bytes(h.win_len, d)), p += rows_bytes(h.win_len, d);
    s->win_start = h.win_start;
    s->win_len = h.win_len;
    s->win_stale = 0;
    s->zip_len = h.zip_len;
    s->zip_pos = h.zip_pos;
    s->hist_len = h.hist_len;
    s->n_syncs = h.n_syncs;
    return TC_OK;
}
