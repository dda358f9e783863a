/* worker_local.c — the in-process worker client: the model and its
 * sessions live in the coordinator's process (CPU backend). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/fault.h"
#include "../common/log.h"
#include "../model/sampler.h"
#include "../model/session.h"
#include "worker_client.h"

typedef struct {
    tc_backend be;
    tc_model *m;
    float *lg; /* step logits when the caller only wants tokens (the generation thread's) */
    size_t lg_cap;
    int32_t *cid; /* top-k candidates [B, k] when every sampler draws from them */
    float *cval;
    size_t c_cap;
    int64_t fault_at; /* tests: TC_FAULT_STEP_SYNC_AT (common/fault.h) */
} local_impl;

static tc_status l_new(tc_worker_client *w, tc_wc_session **out) {
    local_impl *L = w->impl;
    tc_session *s;
    TC_CHECK(tc_session_new(L->m, &s));
    *out = (tc_wc_session *)s;
    return TC_OK;
}
static void l_free_s(tc_worker_client *w, tc_wc_session *s) {
    (void)w;
    tc_session_free((tc_session *)s);
}
static tc_status l_append(tc_worker_client *w, tc_wc_session *s, const int32_t *t, int64_t n, float *logits) {
    (void)w;
    return tc_session_append((tc_session *)s, t, n, logits);
}
static int64_t l_history(tc_worker_client *w, const tc_wc_session *s, int32_t *out, int64_t max) {
    (void)w;
    const tc_session *x = (const tc_session *)s;
    if (out && max >= x->n_tokens && x->n_tokens > 0) memcpy(out, x->tokens, (size_t)x->n_tokens * 4);
    return x->n_tokens;
}
static tc_status l_prepare(tc_worker_client *w, tc_wc_session *s) {
    (void)w;
    tc_session *x = (tc_session *)s;
    if (!x->win_stale) return TC_OK;
    TC_LOG(TC_LOG_INFO, "workers", "session: rebuilding its stale state (%lld tokens) before its generation",
           (long long)x->n_tokens);
    return tc_session_refresh(x);
}
static tc_status l_sync(tc_worker_client *w, tc_wc_session *s) {
    (void)w;
    tc_session *x = (tc_session *)s;
    if (!tc_session_sync_due(x)) return TC_OK;
    return tc_session_sync(x, x->n_tokens);
}
static tc_status step_all(tc_worker_client *w, tc_wc_session **s, const int32_t *t, int B, tc_sampler **smp,
                         int32_t *next, float *logits) {
    local_impl *L = w->impl;
    const int V = w->cfg->vocab_size;
    /* a session a cancelled append or sync left stale gets its sync and
     * window rows back first (a no-op for the others) */
    for (int i = 0; i < B; i++) TC_CHECK(tc_session_refresh((tc_session *)s[i]));
    int K = 0, dense = logits != NULL || !smp;
    for (int i = 0; !dense && i < B; i++) dense = smp[i]->lp_on; /* logprobs: the full rows, on the host */
    for (int i = 0; !dense && i < B; i++) {
        int need = tc_sampler_topk_need(&smp[i]->p, V);
        dense |= need == 0;
        if (need > K) K = need;
    }
    if (!dense && B > 0) {
        /* greedy / top-k: the backend hands back K candidates per row */
        size_t need = (size_t)B * K;
        if (need > L->c_cap) {
            int32_t *ni = realloc(L->cid, need * sizeof *ni);
            if (ni) L->cid = ni;
            float *nv = ni ? realloc(L->cval, need * sizeof *nv) : NULL;
            if (!nv) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
            L->cval = nv, L->c_cap = need;
        }
        TC_CHECK(tc_step_batch_topk((tc_session **)s, t, B, K, L->cid, L->cval));
        for (int i = 0; i < B; i++)
            next[i] = tc_sampler_sample_topk(smp[i], L->cid + (size_t)i * K, L->cval + (size_t)i * K, K);
        return TC_OK;
    }
    int lp = 0;
    for (int i = 0; smp && i < B; i++) lp |= smp[i]->lp_on;
    if (!logits && smp && !lp && B > 0 && tc_model_draws_on_backend(L->m, B)) {
        /* a sampler needs the full rows: the backend draws where they are */
        static atomic_int logged;
        if (!atomic_exchange(&logged, 1))
            TC_LOG(TC_LOG_INFO, "worker", "sampling on the backend (its sample op): steps hand back token ids, not logits");
        tc_draw d_stack[64], *d = B <= 64 ? d_stack : malloc((size_t)B * sizeof *d);
        uint64_t (*rng)[4] = malloc((size_t)B * sizeof *rng);
        if (!d || !rng) {
            if (d != d_stack) free(d);
            free(rng);
            return TC_FAIL(TC_ERR_NOMEM, "out of memory");
        }
        for (int i = 0; i < B; i++) {
            memcpy(rng[i], smp[i]->rng, sizeof rng[i]);
            tc_sampler_draw_params(smp[i], &d[i]);
        }
        tc_status st = tc_step_batch_draw((tc_session **)s, t, B, d, next);
        if (st != TC_OK) /* the step was rolled back: so are the draws */
            for (int i = 0; i < B; i++) memcpy(smp[i]->rng, rng[i], sizeof rng[i]);
        if (d != d_stack) free(d);
        free(rng);
        return st;
    }
    if (!logits && smp) {
        size_t need = (size_t)B * w->cfg->vocab_size;
        if (need > L->lg_cap) {
            float *nl = realloc(L->lg, need * sizeof *nl);
            if (!nl) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
            L->lg = nl, L->lg_cap = need;
        }
        logits = L->lg;
    }
    TC_CHECK(tc_step_batch((tc_session **)s, t, B, logits));
    for (int i = 0; smp && i < B; i++) next[i] = tc_sampler_sample(smp[i], logits + (size_t)i * w->cfg->vocab_size);
    return TC_OK;
}

/* rows != NULL: each session's inline sync first, apart (tc_step_ready);
 * one that fails is left out and the others step without it */
static tc_status l_step(tc_worker_client *w, tc_wc_session **s, const int32_t *t, int B, tc_sampler **smp,
                        int32_t *next, float *logits, tc_row_status *rows) {
    local_impl *L = w->impl;
    if (!rows) return step_all(w, s, t, B, smp, next, logits);
    const int V = w->cfg->vocab_size;
    for (int i = 0; i < B; i++) {
        tc_session *x = (tc_session *)s[i];
        rows[i].st = TC_OK;
        rows[i].msg[0] = 0;
        if (L->fault_at > 0 && x->n_tokens == L->fault_at && tc_session_sync_due(x)) {
            rows[i].st = TC_ERR_INTERNAL;
            snprintf(rows[i].msg, sizeof rows[i].msg, "inline sync at %lld tokens: injected fault (TC_FAULT_STEP_SYNC_AT)",
                     (long long)x->n_tokens);
        }
    }
    const int n_bad = tc_step_ready((tc_session **)s, B, rows);
    if (!n_bad) return step_all(w, s, t, B, smp, next, logits);
    for (int i = 0; i < B; i++)
        if (rows[i].st != TC_OK) {
            TC_LOG(TC_LOG_WARN, "worker", "step: %d of %d sessions left out of the batch (first: %s)", n_bad, B,
                   rows[i].msg);
            break;
        }
    const int n = B - n_bad;
    if (n == 0) return TC_OK;
    tc_wc_session **sc = malloc((size_t)n * sizeof *sc);
    tc_sampler **mc = malloc((size_t)n * sizeof *mc);
    int32_t *tc = malloc((size_t)n * 4), *nc = malloc((size_t)n * 4);
    tc_status st = TC_FAIL(TC_ERR_NOMEM, "out of memory");
    if (sc && mc && tc && nc) {
        for (int i = 0, k = 0; i < B; i++)
            if (rows[i].st == TC_OK) sc[k] = s[i], tc[k] = t[i], mc[k] = smp ? smp[i] : NULL, k++;
        st = step_all(w, sc, tc, n, smp ? mc : NULL, nc, logits);
    }
    if (st == TC_OK) /* back to each session's own row, from the last (k <= i) */
        for (int i = B - 1, k = n - 1; i >= 0; i--) {
            if (rows[i].st != TC_OK) {
                if (logits) memset(logits + (size_t)i * V, 0, (size_t)V * 4);
                continue;
            }
            if (smp) next[i] = nc[k];
            if (logits && k != i) memmove(logits + (size_t)i * V, logits + (size_t)k * V, (size_t)V * 4);
            k--;
        }
    free(sc), free(mc), free(tc), free(nc);
    return st;
}
static void l_stats(tc_worker_client *w, const tc_wc_session *s, tc_wc_session_stats *o) {
    (void)w;
    const tc_session *x = (const tc_session *)s;
    o->length = x->n_tokens;
    o->syncs = x->n_syncs;
    o->state_bytes = (int64_t)tc_session_state_bytes(x);
    o->sync_due = tc_session_sync_due(x);
}
static void l_bind(tc_worker_client *w, int role) {
    (void)w;
    tc_model_bind_workspace(role);
}
static void l_free(tc_worker_client *w) {
    local_impl *L = w->impl;
    tc_model_free(L->m);
    tc_backend_cpu_free(&L->be);
    free(L->lg);
    free(L->cid);
    free(L->cval);
    free(L);
    free(w);
}

tc_status tc_worker_local_open(tc_worker_client **out, const char *dir, int n_threads) {
    tc_worker_client *w = calloc(1, sizeof *w);
    local_impl *L = calloc(1, sizeof *L);
    if (!w || !L) {
        free(w);
        free(L);
        return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    }
    tc_status st = tc_backend_cpu_init(&L->be, n_threads);
    if (st == TC_OK) st = tc_model_load(&L->m, dir, &L->be);
    if (st == TC_OK && (st = tc_fault_env_count("TC_FAULT_STEP_SYNC_AT", INT64_MAX, &L->fault_at)) != TC_OK)
        tc_model_free(L->m);
    if (st != TC_OK) {
        free(w);
        free(L);
        return st;
    }
    w->impl = L;
    w->cfg = &L->m->cfg;
    w->device = "cpu";
    w->dtype = L->m->dtype_name;
    w->n_params = L->m->n_params;
    w->session_new = l_new;
    w->session_free = l_free_s;
    w->append = l_append;
    w->sync = l_sync;
    w->prepare = l_prepare;
    w->step = l_step;
    w->stats = l_stats;
    w->history = l_history;
    w->bind_thread = l_bind;
    w->ctx_threads = 2; /* starts in workspace 2, syncs in 1: a prefill does not hold up the syncs */
    w->free = l_free;
    w->cancellable = 1; /* a stopped append or sync leaves its session stale: the next append, sync or step rebuilds it */
    *out = w;
    return TC_OK;
}
