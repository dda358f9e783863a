/* session.c — session lifecycle and the stepping logic that decides when
 * a sync is due (DESIGN.md §2). The forward passes are in forward.c and
 * sync.c; this file owns state, positions and input validation. */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "sampler.h"

static size_t layer_count(const tc_model_config *c) { return (size_t)tc_config_n_layers(c); }

tc_status tc_session_new(tc_model *m, tc_session **out) {
    const tc_model_config *c = &m->cfg;
    tc_backend *be = m->be;
    *out = NULL;
    tc_session *s = calloc(1, sizeof *s);
    if (!s) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    s->m = m;
    s->tok_cap = 1024;
    s->tokens = malloc((size_t)s->tok_cap * 4);
    if (c->arch == TC_ARCH_TRANSFORMER) {
        s->win_cap = 256;
    } else {
        s->win_cap = c->generate_window;
        size_t zb = (size_t)c->n_block * (c->inner_depth - 1) * 2 * c->history_window * c->n_embd * 4;
        s->zip = be->alloc(be, zb);
    }
    s->win = be->alloc(be, layer_count(c) * 2 * (size_t)s->win_cap * c->n_embd * 4);
    if (!s->tokens || !s->win || (c->arch != TC_ARCH_TRANSFORMER && !s->zip)) {
        tc_session_free(s);
        return TC_FAIL(TC_ERR_NOMEM, "out of memory for session state");
    }
    *out = s;
    return TC_OK;
}

void tc_session_free(tc_session *s) {
    if (!s) return;
    tc_backend *be = s->m->be;
    if (s->win) be->free(be, s->win);
    if (s->zip) be->free(be, s->zip);
    if (s->hist) be->free(be, s->hist);
    free(s->tokens);
    free(s);
}

/* Grows the baseline's KV cache, keeping its rows (per-layer copy since
 * the layout is [layer][k|v][cap][d]). */
tc_status tc_session_win_reserve(tc_session *s, int64_t rows) {
    if (rows <= s->win_cap) return TC_OK;
    const tc_model_config *c = &s->m->cfg;
    tc_backend *be = s->m->be;
    int64_t cap = s->win_cap;
    while (cap < rows) cap *= 2;
    size_t d = (size_t)c->n_embd, nl = layer_count(c);
    float *nw = be->alloc(be, nl * 2 * (size_t)cap * d * 4);
    if (!nw) return TC_FAIL(TC_ERR_NOMEM, "out of memory growing the KV cache to %lld tokens", (long long)cap);
    for (size_t i = 0; i < nl * 2; i++)
        be->copy2d(be, nw + i * (size_t)cap * d, (int)d, s->win + i * (size_t)s->win_cap * d, (int)d,
                   (int)s->win_len, (int)d);
    be->free(be, s->win);
    s->win = nw;
    s->win_cap = cap;
    return TC_OK;
}

/* TLin history K/V: recomputed whole at every sync, so growth need not
 * keep the old rows. */
tc_status tc_session_hist_reserve(tc_session *s, int64_t rows) {
    if (rows <= s->hist_cap && s->hist) return TC_OK;
    const tc_model_config *c = &s->m->cfg;
    tc_backend *be = s->m->be;
    int64_t cap = s->hist_cap ? s->hist_cap : c->generate_window;
    while (cap < rows) cap *= 2;
    float *nh = be->alloc(be, (size_t)c->n_block * 2 * (size_t)cap * c->n_embd * 4);
    if (!nh) return TC_FAIL(TC_ERR_NOMEM, "out of memory growing TLin history to %lld tokens", (long long)cap);
    if (s->hist) be->free(be, s->hist);
    s->hist = nh;
    s->hist_cap = cap;
    s->hist_len = 0;
    return TC_OK;
}

tc_status tc_session_push_tokens(tc_session *s, const int32_t *t, int64_t n) {
    const tc_model_config *c = &s->m->cfg;
    for (int64_t i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= c->vocab_size)
            return TC_FAIL(TC_ERR_INVALID, "token id %d at index %lld is outside the vocabulary [0, %d)", t[i],
                           (long long)i, c->vocab_size);
    if (s->n_tokens + n > s->tok_cap) {
        int64_t cap = s->tok_cap;
        while (cap < s->n_tokens + n) cap *= 2;
        int32_t *nt = realloc(s->tokens, (size_t)cap * 4);
        if (!nt) return TC_FAIL(TC_ERR_NOMEM, "out of memory for %lld history tokens", (long long)cap);
        s->tokens = nt;
        s->tok_cap = cap;
    }
    memcpy(s->tokens + s->n_tokens, t, (size_t)n * 4);
    s->n_tokens += n;
    return TC_OK;
}

int tc_session_sync_due(const tc_session *s) {
    const tc_model_config *c = &s->m->cfg;
    if (c->arch == TC_ARCH_TRANSFORMER) return 0;
    return s->n_tokens > 0 && s->n_tokens % c->generate_window == 0 && s->win_start != s->n_tokens;
}

tc_status tc_session_sync(tc_session *s, int64_t n_ctx) {
    const tc_model_config *c = &s->m->cfg;
    if (c->arch == TC_ARCH_TRANSFORMER) return TC_FAIL(TC_ERR_INVALID, "sync: the transformer has no sync");
    if (n_ctx < 0 || n_ctx > s->n_tokens || n_ctx % c->generate_window != 0)
        return TC_FAIL(TC_ERR_INVALID, "sync: n_ctx %lld must be a multiple of generate_window %d within 0..%lld",
                       (long long)n_ctx, c->generate_window, (long long)s->n_tokens);
    tc_status st = tc_fwd_sync(s, n_ctx);
    /* rows [n_ctx, n_tokens) are not in the window; a cancelled sync left
     * none (win_start -1): the next append recomputes them */
    if (st == TC_OK) s->win_stale = n_ctx != s->n_tokens;
    else s->win_stale = s->win_start + s->win_len != s->n_tokens;
    return st;
}

tc_status tc_session_append(tc_session *s, const int32_t *tokens, int64_t n, float *logits) {
    const tc_model_config *c = &s->m->cfg;
    if (n <= 0) return TC_FAIL(TC_ERR_INVALID, "append: no tokens");
    const int64_t N0 = s->n_tokens;
    TC_CHECK(tc_session_push_tokens(s, tokens, n));
    const int64_t N1 = s->n_tokens;
    int64_t start = N0;
    int synced = 0;
    /* extended history: the window rows from win_start are recomputed */
    if (s->win_stale) s->win_len = 0, start = s->win_start;
    if (c->arch != TC_ARCH_TRANSFORMER) {
        /* window of the last token; one sync covers every boundary crossed */
        int64_t w1 = ((N1 - 1) / c->generate_window) * c->generate_window;
        if (w1 != s->win_start) {
            /* changes nothing when refused memory; cancelled half way it
             * leaves the session stale (win_start -1), to sync again */
            tc_status st = tc_fwd_sync(s, w1);
            if (st != TC_OK) {
                s->n_tokens = N0;
                s->win_stale = s->win_start + s->win_len != s->n_tokens;
                return st;
            }
            start = w1, synced = 1; /* the sync cleared the window; w1 >= N0 unless stale */
        }
    }
    s->win_stale = 0;
    int64_t cnt = N1 - start;
    tc_session *one = s;
    /* the history keeps the tokens only when the pass succeeds */
    tc_fwd_out out = {.logits = logits};
    tc_status st = tc_fwd_window(&one, &cnt, 1, &out);
    if (st != TC_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", tc_error_get());
        s->n_tokens = N0;
        if (synced) { /* the sync read tokens this append no longer keeps: redo it on the kept history */
            const int64_t w0 = N0 > 0 ? ((N0 - 1) / c->generate_window) * c->generate_window : 0;
            if (tc_fwd_sync(s, w0) != TC_OK) s->win_start = -1; /* the next append syncs again */
        }
        /* window rows missing: a step refuses the session with a clear
         * error, the next append recomputes them */
        s->win_stale = s->win_start + s->win_len != s->n_tokens;
        st = TC_FAIL(st, "%s", why);
    }
    return st;
}

tc_status tc_session_refresh(tc_session *s) {
    if (!s->win_stale || s->n_tokens == 0) return TC_OK;
    /* the last token appended again: a stale append recomputes the sync
     * and the window rows its history needs */
    const int32_t last = s->tokens[s->n_tokens - 1];
    s->n_tokens--;
    tc_status st = tc_session_append(s, &last, 1, NULL);
    if (st != TC_OK) s->n_tokens++; /* the append rolled back to n - 1: the token is still in place */
    return st;
}

int tc_step_ready(tc_session **ss, int B, tc_row_status *rows) {
    int n_bad = 0;
    for (int i = 0; i < B; i++) {
        if (rows[i].st != TC_OK) {
            n_bad++;
            continue;
        }
        tc_status st = tc_session_refresh(ss[i]);
        if (st == TC_OK && tc_session_sync_due(ss[i])) st = tc_session_sync(ss[i], ss[i]->n_tokens);
        if (st != TC_OK) {
            rows[i].st = st;
            snprintf(rows[i].msg, sizeof rows[i].msg, "%s", tc_error_get() ? tc_error_get() : tc_status_str(st));
            n_bad++;
        }
    }
    return n_bad;
}

static tc_status step_batch(tc_session **ss, const int32_t *tokens, int B, const tc_fwd_out *out) {
    if (B <= 0) return TC_OK;
    int64_t cnt_stack[64];
    int64_t *cnt = B <= 64 ? cnt_stack : malloc((size_t)B * sizeof *cnt);
    if (!cnt) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    tc_status st = TC_OK;
    int pushed = 0;
    for (int i = 0; i < B && st == TC_OK; i++) {
        if (tokens[i] < 0 || tokens[i] >= ss[0]->m->cfg.vocab_size)
            st = TC_FAIL(TC_ERR_INVALID, "token id %d of batch row %d is outside the vocabulary [0, %d)", tokens[i],
                         i, ss[0]->m->cfg.vocab_size);
        else if (ss[i]->m != ss[0]->m) st = TC_FAIL(TC_ERR_INVALID, "step: sessions of different models in one batch");
        else if (ss[i]->win_stale) st = TC_FAIL(TC_ERR_INVALID, "step: session history was extended without its window rows");
        for (int j = 0; j < i && st == TC_OK; j++)
            if (ss[j] == ss[i]) st = TC_FAIL(TC_ERR_INVALID, "step: session appears twice in one batch");
    }
    for (int i = 0; i < B && st == TC_OK; i++, pushed++) {
        cnt[i] = 1;
        if (tc_session_sync_due(ss[i])) st = tc_fwd_sync(ss[i], ss[i]->n_tokens);
        if (st == TC_OK) st = tc_session_push_tokens(ss[i], &tokens[i], 1);
        if (st != TC_OK) break;
    }
    if (st == TC_OK) st = tc_fwd_window(ss, cnt, B, out);
    if (st != TC_OK)
        for (int i = 0; i < pushed; i++) ss[i]->n_tokens--; /* roll back the history */
    if (cnt != cnt_stack) free(cnt);
    return st;
}

tc_status tc_step_batch(tc_session **ss, const int32_t *tokens, int B, float *logits) {
    tc_fwd_out out = {.logits = logits};
    return step_batch(ss, tokens, B, &out);
}

tc_status tc_step_batch_topk(tc_session **ss, const int32_t *tokens, int B, int k, int32_t *ids, float *vals) {
    if (B <= 0) return TC_OK;
    const int V = ss[0]->m->cfg.vocab_size;
    if (k < 1 || k > V || k > TC_TOPK_MAX)
        return TC_FAIL(TC_ERR_INVALID, "step: top k %d outside 1..%d", k, V < TC_TOPK_MAX ? V : TC_TOPK_MAX);
    tc_fwd_out out = {.k = k, .ids = ids, .vals = vals};
    return step_batch(ss, tokens, B, &out);
}

tc_status tc_step_batch_draw(tc_session **ss, const int32_t *tokens, int B, const tc_draw *draws, int32_t *next) {
    if (B <= 0) return TC_OK;
    for (int i = 0; i < B; i++) {
        const tc_sampling_params p = {draws[i].temperature, draws[i].top_k, draws[i].top_p, 0};
        if (tc_sampling_validate(&p) != TC_OK) {
            char why[256]; /* tc_error_get() is the buffer TC_FAIL writes */
            snprintf(why, sizeof why, "%s", tc_error_get() ? tc_error_get() : "invalid");
            return TC_FAIL(TC_ERR_INVALID, "step: draw %d: %s", i, why);
        }
        if (draws[i].r >> 53) return TC_FAIL(TC_ERR_INVALID, "step: draw %d: random bits past 53", i);
    }
    tc_fwd_out out = {.draws = draws, .tokens = next};
    return step_batch(ss, tokens, B, &out);
}

int tc_model_draws_on_backend(const tc_model *m, int B) {
    return m->be->sample != NULL && B >= (m->be->sample_min_rows > 1 ? m->be->sample_min_rows : 1);
}

size_t tc_session_state_bytes(const tc_session *s) {
    const tc_model_config *c = &s->m->cfg;
    size_t d = (size_t)c->n_embd, nl = layer_count(c);
    size_t b = nl * 2 * (size_t)s->win_cap * d * 4;
    if (c->arch != TC_ARCH_TRANSFORMER) b += (size_t)c->n_block * (c->inner_depth - 1) * 2 * c->history_window * d * 4;
    if (c->arch == TC_ARCH_TLIN) b += (size_t)c->n_block * 2 * (size_t)s->hist_cap * d * 4;
    return b;
}
