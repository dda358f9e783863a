/* worker_remote_session.c — the worker client's sessions over tconst-worker
 * processes: each session's copies on its pair's workers, rebuilt from
 * the coordinator's token history whenever a worker lost them, and the
 * calls that route appends, syncs and batched steps to them (see
 * worker_remote.c's opening for the routing). Not the processes
 * themselves: worker_remote.c. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../scheduler/sched.h"
#include "metrics.h"
#include "worker_remote_int.h"

/* ---- session copies ---- */
static void pend_locked(remote *R, uint64_t sid, int pi, uint64_t gen, uint64_t ctx);

static int is_both(remote *R, const tc_wc_session *s) { return R->pairs[s->pair].ctx == R->pairs[s->pair].gen; }

/* prefill: an Append of the session comes next (SessionRef.prefill) */
static tc_status open_on(remote *R, wproc *p, uint64_t sid, int prefill) {
    Tconst__Worker__V1__SessionRef rq = TCONST__WORKER__V1__SESSION_REF__INIT;
    rq.sid = sid;
    rq.prefill = prefill != 0;
    ProtobufCMessage *r;
    TC_CHECK(tc_wr_call(R, p, tc_wr_t_role, M("Open"), &rq.base, &tconst__worker__v1__session_reply__descriptor, &r, R->o.timeout_s));
    protobuf_c_message_free_unpacked(r, NULL);
    return TC_OK;
}

uint64_t tc_wr_boot_of(remote *R, wproc *p) {
    pthread_mutex_lock(&R->mu);
    uint64_t b = p->boot;
    pthread_mutex_unlock(&R->mu);
    return b;
}

/* Tokens of history one message to p may carry besides its other
 * fields: its --max-message-bytes (256 MiB when it did not say) less 1 KiB,
 * at 5 bytes a token (a packed int32's largest varint), at least 64. */
static int64_t msg_tokens(remote *R, wproc *p) {
    pthread_mutex_lock(&R->mu);
    int64_t mm = p->max_msg > 0 ? p->max_msg : (int64_t)256 << 20;
    pthread_mutex_unlock(&R->mu);
    int64_t t = (mm - 1024) / 5;
    return t < 64 ? 64 : t;
}

/* Tokens one message to either worker of the session's pair carries. */
static int64_t pair_tokens(remote *R, const tc_wc_session *s) {
    const wpair *pr = &R->pairs[s->pair];
    int64_t a = msg_tokens(R, pr->ctx), b = msg_tokens(R, pr->gen);
    return a < b ? a : b;
}

/* One extend-only Append: k tokens of history pushed onto sid's copy on
 * p, no compute (the next Append with tokens, or Sync, computes what they
 * change). */
static tc_status send_extend(remote *R, wproc *p, uint64_t sid, const int32_t *t, int64_t k) {
    Tconst__Worker__V1__AppendRequest rq = TCONST__WORKER__V1__APPEND_REQUEST__INIT;
    rq.sid = sid;
    rq.extend = (int32_t *)t;
    rq.n_extend = (size_t)k;
    ProtobufCMessage *r;
    TC_CHECK(tc_wr_call(R, p, tc_wr_t_role, M("Append"), &rq.base, &tconst__worker__v1__append_response__descriptor,
                        &r, R->o.compute_timeout_s));
    protobuf_c_message_free_unpacked(r, NULL);
    return TC_OK;
}

/* The context copy stored history the session has and it lacks (an extend)
 * in messages that fit the context worker, until at most `room` tokens of
 * it are left for the caller's own message to carry. Without this, a copy
 * started over (a restarted context worker) was sent the whole history in
 * one message, which a worker refuses past its --max-message-bytes. */
static tc_status ctx_catch_up(remote *R, tc_wc_session *s, int64_t room) {
    wproc *c = R->pairs[s->pair].ctx;
    const int64_t most = msg_tokens(R, c);
    while (s->n - s->ctx_len > room) {
        int64_t k = s->n - s->ctx_len;
        if (k > most) k = most;
        tc_status st = send_extend(R, c, s->sid, s->hist + s->ctx_len, k);
        if (st != TC_OK) {
            s->ctx_boot = 0; /* its copy is unknown now */
            return st;
        }
        s->ctx_len += k;
    }
    return TC_OK;
}

/* The context copy exists on the context worker's current process. */
static tc_status ensure_ctx(remote *R, tc_wc_session *s, int prefill) {
    wproc *c = R->pairs[s->pair].ctx;
    uint64_t b = tc_wr_boot_of(R, c);
    /* a copy ahead of the history (an append that failed after the context
     * worker took it) is unknown: start it over, never send hist past n */
    if (s->ctx_len > s->n) s->ctx_boot = 0;
    if (s->ctx_boot == b && b) return TC_OK;
    TC_CHECK(open_on(R, c, s->sid, prefill));
    s->ctx_boot = s->ctx_opened = b;
    s->ctx_len = 0;
    return TC_OK;
}

/* The copy on p holds `want` tokens after a call (the history, and what
 * the call appended), as its reply says: a copy that disagrees with the
 * history (a piece lost or applied twice) must not generate. INTERNAL, and
 * the caller starts that copy over. */
static tc_status copy_holds(const wproc *p, const tc_wc_session *s, const Tconst__Worker__V1__SessionReply *r,
                            int64_t want) {
    if (!r || r->n_tokens == want) return TC_OK;
    return TC_FAIL(TC_ERR_INTERNAL, "worker %s: session %llu's copy holds %lld tokens, the history %lld", p->name,
                   (unsigned long long)s->sid, (long long)r->n_tokens, (long long)want);
}

/* Installs what the context worker shipped under s->seq on the generation
 * worker; shipped_s: the sending side's share of the transfer time. */
static tc_status import_on_gen(remote *R, tc_wc_session *s, double shipped_s, uint64_t bytes) {
    Tconst__Worker__V1__ImportRequest iq = TCONST__WORKER__V1__IMPORT_REQUEST__INIT;
    iq.sid = s->sid;
    iq.seq = s->seq;
    /* a large state (a baseline's K/V cache) takes its time to check and
     * install: 1 s per 64 MiB on top, as the data plane allows its frame */
    const double allow = (double)bytes / (64.0 * 1048576.0);
    iq.timeout_s = R->o.timeout_s + allow;
    ProtobufCMessage *r;
    double t0 = tc_now_s();
    tc_status st = tc_wr_call(R, R->pairs[s->pair].gen, tc_wr_t_role, M("Import"), &iq.base,
                        &tconst__worker__v1__session_reply__descriptor, &r, R->o.timeout_s + 5 + allow);
    if (st != TC_OK) {
        s->gen_boot = 0;
        return st;
    }
    const Tconst__Worker__V1__SessionReply *sr = (Tconst__Worker__V1__SessionReply *)r;
    s->state_bytes = sr->state_bytes;
    st = copy_holds(R->pairs[s->pair].gen, s, sr, s->ctx_len); /* the context copy's, shipped */
    protobuf_c_message_free_unpacked(r, NULL);
    if (st != TC_OK) {
        s->gen_boot = 0;
        return st;
    }
    tc_metric_observe(TC_H_data_plane_transfer_seconds, shipped_s + (tc_now_s() - t0));
    return TC_OK;
}

/* Ships the full state of the context copy (with `tokens` appended) to the
 * generation worker; logits of the last token when asked. */
static tc_status append_via_ctx(remote *R, tc_wc_session *s, const int32_t *t, int64_t n, float *logits) {
    wpair *pr = &R->pairs[s->pair];
    TC_CHECK(ensure_ctx(R, s, 1));
    const int64_t most = msg_tokens(R, pr->ctx);
    TC_CHECK(ctx_catch_up(R, s, most > n ? most - n : 0));
    uint64_t gb = tc_wr_boot_of(R, pr->gen);
    int opened = 0;
    if (s->gen_boot != gb || !gb) { /* an empty copy to import into */
        TC_CHECK(open_on(R, pr->gen, s->sid, 0)); /* an Import comes next */
        s->gen_boot = s->gen_opened = gb;
        opened = 1;
    }
    Tconst__Worker__V1__AppendRequest rq = TCONST__WORKER__V1__APPEND_REQUEST__INIT;
    rq.sid = s->sid;
    rq.extend = s->hist + s->ctx_len;
    rq.n_extend = (size_t)(s->n - s->ctx_len);
    rq.tokens = (int32_t *)t;
    rq.n_tokens = (size_t)n;
    rq.want_logits = logits != NULL;
    rq.send_seq = ++s->seq;
    rq.cancel_id = ++tc_wr_cancel_ids;
    ProtobufCMessage *r;
    double t0 = tc_now_s();
    tc_status st = tc_wr_call_cancellable(R, pr->ctx, M("Append"), &rq.base, rq.cancel_id,
                                    &tconst__worker__v1__append_response__descriptor, &r, R->o.compute_timeout_s);
    if (st != TC_OK) {
        s->ctx_boot = 0; /* its copy is unknown now */
        if (opened) s->gen_boot = 0; /* and the new generation copy is empty */
        return st;
    }
    Tconst__Worker__V1__AppendResponse *ar = (Tconst__Worker__V1__AppendResponse *)r;
    if (logits && ar->n_logits == (size_t)R->cfg.vocab_size) memcpy(logits, ar->logits, ar->n_logits * 4);
    else if (logits) st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: append returned %zu logits", pr->ctx->name, ar->n_logits);
    if (st == TC_OK) st = copy_holds(pr->ctx, s, ar->s, s->n + n);
    tc_metric_inc(TC_M_data_plane_bytes_total, (double)ar->sent_bytes);
    const uint64_t sent = ar->sent_bytes;
    tconst__worker__v1__append_response__free_unpacked(ar, NULL);
    if (st != TC_OK) { /* the context copy took the tokens; the history did not */
        s->ctx_boot = 0;
        if (opened) s->gen_boot = 0;
        return st;
    }
    s->ctx_len = s->n + n;
    st = import_on_gen(R, s, tc_now_s() - t0, sent);
    /* the context copy now holds tokens the history gets only when the
     * whole append succeeds: a retry must start that copy over (it read
     * hist past its end: a crash when the generation worker died between
     * the two calls) */
    if (st != TC_OK) s->ctx_boot = 0;
    return st;
}

/* Appends directly on the generation worker (both roles, or inside a
 * window). */
static tc_status append_on_gen(remote *R, tc_wc_session *s, const int32_t *t, int64_t n, float *logits) {
    wproc *g = R->pairs[s->pair].gen;
    Tconst__Worker__V1__AppendRequest rq = TCONST__WORKER__V1__APPEND_REQUEST__INIT;
    rq.sid = s->sid;
    rq.tokens = (int32_t *)t;
    rq.n_tokens = (size_t)n;
    rq.want_logits = logits != NULL;
    /* a both-roles worker prefills here, and a split pair's generation
     * worker the baseline's prompts (past its first) and rebuild pieces;
     * else these are a few rows inside a window, not worth a rebuild of
     * the copy */
    const int64_t rows = R->cfg.generate_window > 0 ? R->cfg.generate_window : 256; /* the baseline: 0 */
    if (is_both(R, s) || n > rows) rq.cancel_id = ++tc_wr_cancel_ids;
    ProtobufCMessage *r;
    tc_status st = tc_wr_call_cancellable(R, g, M("Append"), &rq.base, rq.cancel_id,
                                    &tconst__worker__v1__append_response__descriptor, &r, R->o.compute_timeout_s);
    if (st != TC_OK) {
        s->gen_boot = 0;
        return st;
    }
    Tconst__Worker__V1__AppendResponse *ar = (Tconst__Worker__V1__AppendResponse *)r;
    if (logits && ar->n_logits == (size_t)R->cfg.vocab_size) memcpy(logits, ar->logits, ar->n_logits * 4);
    else if (logits) st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: append returned %zu logits", g->name, ar->n_logits);
    if (st == TC_OK) st = copy_holds(g, s, ar->s, s->n + n);
    if (ar->s) s->state_bytes = ar->s->state_bytes;
    tconst__worker__v1__append_response__free_unpacked(ar, NULL);
    if (st != TC_OK) s->gen_boot = 0; /* the copy took the tokens, the history does not: rebuilt on next use */
    return st;
}

/* The generation copy exists on the generation worker's current process
 * and holds the whole history (rebuilt after a restart). */
static tc_status ensure_gen(remote *R, tc_wc_session *s) {
    wproc *g = R->pairs[s->pair].gen;
    uint64_t b = tc_wr_boot_of(R, g);
    if (s->gen_boot == b && b) return TC_OK;
    if (s->n > 0) tc_metric_inc(TC_M_worker_rebuilds_total, 1);
    /* the history's prefill, in messages the workers take (pieces of
     * pair_tokens / 2: an extend of up to the other half beside one), so
     * the copy ends as one prefill would leave it. A TConstFormer's or
     * TLinFormer's state is a sync over the whole history plus the last
     * window: all but the last piece go as extends (no compute) and one
     * Append syncs once and (a split pair) ships the state once -- a
     * prefill piece by piece synced (and shipped) at every piece,
     * quadratic in the pieces. The baseline's K/V would be computed in
     * one pass over an extended history: its pieces are prefilled one by
     * one, on the generation worker after the first (where its appends
     * go), so its cache is not shipped again at each piece. */
    const int64_t piece = pair_tokens(R, s) / 2, n = s->n;
    const int base = R->cfg.arch == TC_ARCH_TRANSFORMER;
    const int64_t from = base || n == 0 ? 0 : ((n - 1) / piece) * piece; /* the last piece's start */
    tc_status st = TC_OK;
    if (n > 0 && !is_both(R, s)) {
        /* through a fresh context copy, which ships the state */
        s->ctx_boot = 0;
        TC_CHECK(ensure_ctx(R, s, 1));
        s->n = from; /* append_via_ctx appends hist[from:from+k] as new tokens, after hist[ctx_len:from] */
        st = append_via_ctx(R, s, s->hist + from, n - from < piece ? n - from : piece, NULL);
        for (int64_t done = from + piece; done < n && st == TC_OK; done += piece) { /* the baseline's */
            s->n = done;
            st = append_on_gen(R, s, s->hist + done, n - done < piece ? n - done : piece, NULL);
        }
        s->n = n;
    } else {
        TC_CHECK(open_on(R, g, s->sid, 1)); /* the history's prefill comes next (or the first Append) */
        s->gen_boot = s->gen_opened = b;
        const int64_t most = msg_tokens(R, g);
        for (int64_t done = 0; done < from && st == TC_OK; done += most)
            st = send_extend(R, g, s->sid, s->hist + done, from - done < most ? from - done : most);
        for (int64_t done = from; done < n && st == TC_OK; done += piece) {
            s->n = done; /* the copy holds hist[0:done] */
            st = append_on_gen(R, s, s->hist + done, n - done < piece ? n - done : piece, NULL);
        }
        s->n = n;
    }
    if (st != TC_OK) s->gen_boot = 0; /* it may hold part of the history: started over next time */
    TC_CHECK(st);
    /* a prefill of n tokens leaves the window of token n-1: a sync at a
     * boundary is due again */
    if (s->n > 0 && R->cfg.arch != TC_ARCH_TRANSFORMER)
        s->synced_at = ((s->n - 1) / R->cfg.generate_window) * R->cfg.generate_window;
    return TC_OK;
}

static tc_status hist_reserve(tc_wc_session *s, int64_t n) {
    if (s->n + n > s->cap) {
        int64_t cap = s->cap ? s->cap : 1024;
        while (cap < s->n + n) cap *= 2;
        int32_t *nh = realloc(s->hist, (size_t)cap * 4);
        if (!nh) return TC_FAIL(TC_ERR_NOMEM, "out of memory for %lld history tokens", (long long)cap);
        s->hist = nh, s->cap = cap;
    }
    return TC_OK;
}

static tc_status hist_push(tc_wc_session *s, const int32_t *t, int64_t n) {
    TC_CHECK(hist_reserve(s, n));
    memcpy(s->hist + s->n, t, (size_t)n * 4);
    s->n += n;
    return TC_OK;
}

static int sync_due(remote *R, const tc_wc_session *s) {
    int64_t W = R->cfg.generate_window;
    return R->cfg.arch != TC_ARCH_TRANSFORMER && s->n > 0 && s->n % W == 0 && s->synced_at != s->n;
}

/* Fail-over (DESIGN §9: a session resumes by re-syncing from its
 * history): s's pair stayed down past its recovery budget, so s moves to
 * the least loaded live pair. The coordinator holds the whole history, so
 * nothing is lost: its copies there are built from it at next use, as
 * after a worker restart (a prefill through the new context worker), and
 * the engine moves its queued sync with it (engine_threads.c). TC_OK: s
 * can be tried again (moved, or its pair is live again); TC_ERR_IO: no
 * live pair. */
static tc_status failover(remote *R, tc_wc_session *s) {
    char why[512]; /* what failed (the worker not back): kept in the error when s cannot move */
    snprintf(why, sizeof why, "%s", tc_error_get() ? tc_error_get() : "its worker pair is down");
    pthread_mutex_lock(&R->mu);
    if (R->stop || R->giveup) { /* shutting down: the request ends, it does not move */
        pthread_mutex_unlock(&R->mu);
        return TC_FAIL(TC_ERR_IO, "%s", why);
    }
    const int from = s->pair;
    int to = -1, best = 0;
    if (!tc_sched_pair_live(R->sched, from))
        for (int p = 0; p < R->n_pairs; p++) {
            const int n = p != from && tc_sched_pair_live(R->sched, p) ? tc_sched_pair_sessions(R->sched, p, NULL, 0) : -1;
            if (n >= 0 && (to < 0 || n < best)) to = p, best = n;
        }
    else to = from; /* back meanwhile: try it again */
    tc_status st = to < 0 ? TC_FAIL(TC_ERR_IO, "%s (and no other worker pair is live to move the session to)", why)
                 : to == from ? TC_OK
                              : tc_sched_move(R->sched, s->sid, to);
    if (st == TC_OK && to != from) {
        /* a second move: the copies the first one left are the
         * supervisor's to close (left_pair holds one pair's) */
        if (s->left_pair >= 0 && s->left_pair != from && s->left_pair != to)
            pend_locked(R, s->sid, s->left_pair, s->left_gen, s->left_ctx);
        s->left_pair = from, s->left_gen = s->gen_opened, s->left_ctx = s->ctx_opened;
        __atomic_store_n(&s->pair, to, __ATOMIC_RELAXED); /* tc_wr_stats reads it from other threads */
        s->gen_boot = s->ctx_boot = s->gen_opened = s->ctx_opened = 0;
        s->ctx_len = 0;
    }
    pthread_mutex_unlock(&R->mu);
    if (st == TC_OK && to != from) {
        tc_metric_inc(TC_M_session_failovers_total, 1);
        TC_LOG(TC_LOG_WARN, "workers", "session %llu: worker pair %d is down; moved to pair %d (rebuilt there from its "
               "%lld-token history)", (unsigned long long)s->sid, from, to, (long long)s->n);
    }
    return st;
}

/* Queues sid's copies on pair pi (on its processes gen / ctx; 0: none
 * there) for the supervisor to close when those workers answer again
 * (mu held). Bounded: past 65536 the oldest is dropped, with a warning
 * (its copy stays until that worker restarts or changes coordinator). */
static void pend_locked(remote *R, uint64_t sid, int pi, uint64_t gen, uint64_t ctx) {
    const wpair *pr = &R->pairs[pi];
    for (int k = 0; k < 2; k++) {
        const uint64_t boot = k ? ctx : gen;
        if (!boot || (k && pr->ctx == pr->gen)) continue;
        if (R->n_pend == 65536) {
            TC_LOG(TC_LOG_WARN, "workers", "too many session copies wait to be closed on down workers: session "
                   "%llu's on %s is forgotten (it stays until that worker restarts)", (unsigned long long)R->pend[0].sid,
                   R->pend[0].p->name);
            memmove(R->pend, R->pend + 1, (size_t)--R->n_pend * sizeof *R->pend);
        }
        if (R->n_pend == R->cap_pend) {
            const int cap = R->cap_pend ? R->cap_pend * 2 : 16;
            wclose *np = realloc(R->pend, (size_t)cap * sizeof *np);
            if (!np) {
                TC_LOG(TC_LOG_WARN, "workers", "out of memory: session %llu's copy is not closed", (unsigned long long)sid);
                return;
            }
            R->pend = np, R->cap_pend = cap;
        }
        R->pend[R->n_pend++] = (wclose){sid, boot, k ? pr->ctx : pr->gen};
    }
}

tc_status tc_wr_failover(tc_worker_client *w, tc_wc_session *s) {
    const int from = s->pair;
    TC_CHECK(failover(w->impl, s));
    /* its pair is up: the step failed for another reason (a timeout, a
     * refusal), which a rebuild and a retry there would meet again */
    return s->pair != from ? TC_OK : TC_FAIL(TC_ERR_IO, "worker pair %d is up: the step is not moved", from);
}

/* Runs op until it succeeds, fails for a reason other than a worker, or
 * the worker does not come back and no other pair is live (then it moves
 * there and runs op on it). */
#define RETRY(R, s, expr)                                                   \
    do {                                                                        \
        tc_status st_;                                                          \
        for (int attempt_ = 0;; attempt_++) {                                   \
            double t_ = tc_now_s();                                             \
            st_ = (expr);                                                       \
            if (st_ != TC_ERR_IO || attempt_ == 3) break;                       \
            if (tc_cancelled()) { /* its request is gone: no wait for a restart */ \
                char why_[512]; /* tc_error_get() is the buffer TC_FAIL writes */ \
                snprintf(why_, sizeof why_, "%s", tc_error_get() ? tc_error_get() : "worker unreachable"); \
                return TC_FAIL(TC_ERR_CANCELLED, "%s (its request was cancelled)", why_); \
            }                                                                   \
            TC_LOG(TC_LOG_WARN, "workers", "session %llu: %s; recovering",      \
                   (unsigned long long)(s)->sid, tc_error_get());               \
            for (int k_ = 0; k_ < 2; k_++) {                                    \
                wproc *w_ = k_ ? R->pairs[(s)->pair].ctx : R->pairs[(s)->pair].gen; \
                tc_status wst_ = tc_wr_wait_up(R, w_, t_);                             \
                if (wst_ == TC_ERR_CANCELLED) return wst_;                      \
                /* not back: on another pair, from the history */             \
                if (wst_ != TC_OK && failover(R, (s)) != TC_OK) return TC_ERR_IO; \
                if (wst_ != TC_OK) break;                                       \
            }                                                                   \
        }                                                                       \
        if (st_ != TC_OK) return st_;                                           \
    } while (0)

/* ---- the table ---- */
/* The placement scheduler full (admission is the engine's: a journal
 * restored past a lowered --max-sessions brings more sessions than it was
 * sized for): a twice larger one with every session on its pair and each
 * pair's liveness as it was. Caller holds mu. */
tc_status tc_wr_sched_grow_locked(remote *R) {
    tc_sched_limits lim = {R->sched_cap * 2, 1, 0, 1, 0, R->n_pairs};
    tc_sched *ns;
    TC_CHECK(tc_sched_new(&ns, &lim));
    uint64_t *sids = malloc((size_t)R->sched_cap * sizeof *sids);
    tc_status st = sids ? TC_OK : TC_FAIL(TC_ERR_NOMEM, "out of memory");
    for (int p = 0; p < R->n_pairs && st == TC_OK; p++) {
        tc_sched_pair_set_live(ns, p, 1); /* admit and move need a live pair */
        const int n = tc_sched_pair_sessions(R->sched, p, sids, R->sched_cap);
        int got;
        for (int i = 0; i < n && st == TC_OK; i++)
            if ((st = tc_sched_admit(ns, sids[i], 0, &got)) == TC_OK && got != p) st = tc_sched_move(ns, sids[i], p);
    }
    for (int p = 0; p < R->n_pairs; p++) tc_sched_pair_set_live(ns, p, tc_sched_pair_live(R->sched, p));
    free(sids);
    if (st != TC_OK) {
        tc_sched_free(ns);
        return st;
    }
    tc_sched_free(R->sched);
    R->sched = ns;
    R->sched_cap *= 2;
    return TC_OK;
}

tc_status tc_wr_session_new(tc_worker_client *w, tc_wc_session **out) {
    remote *R = w->impl;
    tc_wc_session *s = calloc(1, sizeof *s);
    if (!s) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    s->left_pair = -1;
    pthread_mutex_lock(&R->mu);
    s->sid = R->next_sid++;
    tc_sched_stats ss;
    tc_sched_get_stats(R->sched, &ss);
    tc_status st = ss.sessions >= R->sched_cap ? tc_wr_sched_grow_locked(R) : TC_OK;
    if (st == TC_OK) st = tc_sched_admit(R->sched, s->sid, 0, &s->pair);
    if (st != TC_OK && !R->live) { /* every pair down at once: placed when one is back */
        pthread_mutex_unlock(&R->mu);
        const tc_status wst = tc_wr_wait_live(R);
        if (wst != TC_OK) {
            free(s);
            return wst;
        }
        pthread_mutex_lock(&R->mu);
        st = tc_sched_admit(R->sched, s->sid, 0, &s->pair);
    }
    pthread_mutex_unlock(&R->mu);
    if (st != TC_OK) {
        char why[512]; /* tc_error_get() is the buffer TC_FAIL writes */
        snprintf(why, sizeof why, "%s", tc_error_get() ? tc_error_get() : tc_status_str(st));
        free(s);
        return TC_FAIL(TC_ERR_EXHAUSTED, "no worker to place the session on: %s", why);
    }
    *out = s;
    return TC_OK;
}

/* Closes sid's copies on pair pi's workers: a valid copy (boot ids
 * gen / ctx), or one a failed or cancelled call left unknown (opened on
 * gen_op / ctx_op), on the worker's current process (a cancelled
 * prefill's copy otherwise stayed there until the coordinator changed) */
static void close_copies(remote *R, int pi, uint64_t sid, const uint64_t copy[2], const uint64_t opened[2], int only_up) {
    Tconst__Worker__V1__SessionRef rq = TCONST__WORKER__V1__SESSION_REF__INIT;
    rq.sid = sid;
    wpair *pr = &R->pairs[pi];
    for (int k = 0; k < 2; k++) {
        wproc *p = k ? pr->ctx : pr->gen;
        const uint64_t b = tc_wr_boot_of(R, p);
        if (k && pr->ctx == pr->gen) break;
        if (!b || (copy[k] != b && opened[k] != b)) continue; /* nothing there */
        pthread_mutex_lock(&R->mu);
        const int up = p->up;
        pthread_mutex_unlock(&R->mu);
        if (only_up && !up) continue; /* a lost pair's: no 5 s wait on the reaper thread for each */
        ProtobufCMessage *r;
        if (tc_wr_call(R, p, tc_wr_t_role, M("Close"), &rq.base, &tconst__worker__v1__session_reply__descriptor, &r, 5.0) == TC_OK)
            protobuf_c_message_free_unpacked(r, NULL);
    }
}

void tc_wr_session_free(tc_worker_client *w, tc_wc_session *s) {
    remote *R = w->impl;
    if (!s) return;
    /* its place first: the engine counts the session gone now, and the
     * Closes below may wait behind a running sync (the engine's reaper
     * thread runs them) -- a new session must not be refused meanwhile */
    pthread_mutex_lock(&R->mu);
    tc_sched_close(R->sched, s->sid);
    pthread_mutex_unlock(&R->mu);
    const uint64_t copy[2] = {s->gen_boot, s->ctx_boot}, opened[2] = {s->gen_opened, s->ctx_opened};
    close_copies(R, s->pair, s->sid, copy, opened, 0);
    /* the copies a fail-over left behind: closed now where those processes
     * are up, else by the supervisor when they answer again */
    if (s->left_pair >= 0 && s->left_pair != s->pair) {
        const uint64_t none[2] = {0, 0}, left[2] = {s->left_gen, s->left_ctx};
        close_copies(R, s->left_pair, s->sid, none, left, 1);
        pthread_mutex_lock(&R->mu);
        const wpair *lp = &R->pairs[s->left_pair];
        const int n0 = R->n_pend;
        pend_locked(R, s->sid, s->left_pair, lp->gen->up ? 0 : s->left_gen, lp->ctx->up || lp->ctx == lp->gen ? 0 : s->left_ctx);
        const int queued = R->n_pend - n0;
        pthread_mutex_unlock(&R->mu);
        if (queued > 0)
            TC_LOG(TC_LOG_INFO, "workers", "session %llu closed: its %d cop%s on pair %d (down) will be closed when "
                   "that pair answers again", (unsigned long long)s->sid, queued, queued > 1 ? "ies" : "y", s->left_pair);
    }
    free(s->hist);
    free(s);
}

void tc_wr_close_pending(remote *R) {
    pthread_mutex_lock(&R->mu);
    /* the copies whose worker is up: taken out (another process: gone
     * with the old one, nothing to close) */
    wclose *todo = R->n_pend ? malloc((size_t)R->n_pend * sizeof *todo) : NULL;
    int m = 0, keep = 0;
    for (int i = 0; i < R->n_pend; i++) {
        const wclose e = R->pend[i];
        const int at = tc_sched_pair_of(R->sched, e.sid); /* back on that worker: the copy is its own again */
        if (at >= 0 && (R->pairs[at].gen == e.p || R->pairs[at].ctx == e.p)) continue;
        if (!e.p->up || !todo) R->pend[keep++] = e;
        else if (e.p->boot == e.boot) todo[m++] = e;
    }
    R->n_pend = keep;
    pthread_mutex_unlock(&R->mu);
    for (int i = 0; i < m; i++) {
        Tconst__Worker__V1__SessionRef rq = TCONST__WORKER__V1__SESSION_REF__INIT;
        rq.sid = todo[i].sid;
        ProtobufCMessage *r;
        if (tc_wr_call(R, todo[i].p, 2, M("Close"), &rq.base, &tconst__worker__v1__session_reply__descriptor, &r, 5.0) ==
            TC_OK) {
            protobuf_c_message_free_unpacked(r, NULL);
            TC_LOG(TC_LOG_INFO, "workers", "%s: closed session %llu's copy left by a fail-over", todo[i].p->name,
                   (unsigned long long)todo[i].sid);
        } else { /* once: it went down again, or the copy is gone already */
            TC_LOG(TC_LOG_WARN, "workers", "%s: cannot close session %llu's copy left by a fail-over: %s", todo[i].p->name,
                   (unsigned long long)todo[i].sid, tc_error_get());
        }
    }
    free(todo);
}

static tc_status do_append(remote *R, tc_wc_session *s, const int32_t *t, int64_t n, float *logits) {
    if (is_both(R, s)) {
        TC_CHECK(ensure_gen(R, s));
        return append_on_gen(R, s, t, n, logits);
    }
    int64_t W = R->cfg.generate_window, N1 = s->n + n;
    int crosses = R->cfg.arch == TC_ARCH_TRANSFORMER ? s->n == 0 : ((N1 - 1) / W) * W != s->synced_at;
    if (crosses) return append_via_ctx(R, s, t, n, logits);
    TC_CHECK(ensure_gen(R, s));
    return append_on_gen(R, s, t, n, logits);
}

/* The history takes n appended tokens (reserved): the window a sync
 * left is the one of the last token. */
static void hist_took(remote *R, tc_wc_session *s, const int32_t *t, int64_t n) {
    (void)hist_push(s, t, n); /* reserved: cannot fail */
    if (R->cfg.arch != TC_ARCH_TRANSFORMER) {
        int64_t W = R->cfg.generate_window, w1 = ((s->n - 1) / W) * W;
        if (w1 != s->synced_at) s->syncs++;
        s->synced_at = w1;
    }
}

/* The history back at n0 tokens after an append that took only part of
 * its tokens (its leading pieces): the copies hold them, so they are
 * started over from the history on next use. */
static void hist_undo(tc_wc_session *s, int64_t n0, int64_t synced0, int64_t syncs0) {
    if (s->n == n0) return;
    s->n = n0, s->synced_at = synced0, s->syncs = syncs0;
    s->gen_boot = 0; /* ensure_ctx starts the context copy over itself (ctx_len > n) */
}

typedef struct {
    int64_t n0, synced0, syncs0;
} hist_mark;

/* n tokens in pieces one message to the session's pair carries; the
 * last piece asks for the logits, and its tokens are the caller's to put
 * in the history (the leading pieces' are there when it returns). A
 * TConstFormer's or TLinFormer's leading pieces go as extends (no
 * compute), which the history takes at once: a split pair's context copy
 * catches up on them inside the last piece's Append (append_via_ctx), which
 * then syncs once and ships the state that replaces the generation copy;
 * a --role both worker is sent them before its Append. As separate
 * appends each piece would sync over the whole history (quadratic in the
 * pieces). The baseline's go as appends of their own without logits (an
 * extend would compute its K/V in one pass). Run again by a retry (a
 * worker restarted, the session moved), it starts over from the history
 * at the mark: no token goes to a copy twice. */
static tc_status do_append_pieces(remote *R, tc_wc_session *s, const hist_mark *m, const int32_t *t, int64_t n,
                                  float *logits) {
    hist_undo(s, m->n0, m->synced0, m->syncs0);
    const int64_t most = pair_tokens(R, s); /* the pair's: it may have moved */
    if (n <= most) return do_append(R, s, t, n, logits);
    const int64_t lead = ((n - 1) / most) * most; /* the last piece: [lead, n), 1 to most tokens */
    if (R->cfg.arch != TC_ARCH_TRANSFORMER && is_both(R, s)) {
        TC_CHECK(ensure_gen(R, s));
        wproc *g = R->pairs[s->pair].gen;
        const int64_t mg = msg_tokens(R, g);
        for (int64_t done = 0; done < lead; done += mg) {
            const int64_t k = lead - done < mg ? lead - done : mg;
            tc_status st = send_extend(R, g, s->sid, t + done, k);
            if (st != TC_OK) {
                s->gen_boot = 0; /* it holds part of them */
                return st;
            }
            (void)hist_push(s, t + done, k); /* reserved: cannot fail; the sync is the last piece's */
        }
        return append_on_gen(R, s, t + lead, n - lead, logits);
    }
    if (R->cfg.arch != TC_ARCH_TRANSFORMER) {
        (void)hist_push(s, t, lead); /* the context copy's extend, in catch-up messages */
        return append_via_ctx(R, s, t + lead, n - lead, logits);
    }
    for (int64_t done = 0; done < lead; done += most) {
        TC_CHECK(do_append(R, s, t + done, most, NULL));
        hist_took(R, s, t + done, most);
    }
    return do_append(R, s, t + lead, n - lead, logits);
}

static tc_status append_retried(remote *R, tc_wc_session *s, const hist_mark *m, const int32_t *t, int64_t n,
                                float *logits) {
    RETRY(R, s, do_append_pieces(R, s, m, t, n, logits));
    return TC_OK;
}

tc_status tc_wr_append(tc_worker_client *w, tc_wc_session *s, const int32_t *t, int64_t n, float *logits) {
    remote *R = w->impl;
    if (n <= 0) return TC_FAIL(TC_ERR_INVALID, "append: no tokens");
    for (int64_t i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= R->cfg.vocab_size)
            return TC_FAIL(TC_ERR_INVALID, "token id %d at index %lld is outside the vocabulary [0, %d)", t[i],
                           (long long)i, R->cfg.vocab_size);
    /* the room first: once the workers hold the tokens, the history must
     * take them (a retry would apply them twice) */
    TC_CHECK(hist_reserve(s, n));
    /* more than one message to the workers carries (a journal-restored
     * or forked history, a request over the workers' --max-message-bytes)
     * goes in pieces; one that fails part way leaves the history as it
     * was, as a failed append of one message does */
    const hist_mark m = {s->n, s->synced_at, s->syncs};
    tc_status st = append_retried(R, s, &m, t, n, logits);
    if (st != TC_OK) {
        hist_undo(s, m.n0, m.synced0, m.syncs0);
        return st;
    }
    const int64_t took = s->n - m.n0; /* the leading pieces the history has */
    hist_took(R, s, t + took, n - took);
    return TC_OK;
}

static tc_status do_sync(remote *R, tc_wc_session *s) {
    wpair *pr = &R->pairs[s->pair];
    TC_CHECK(ensure_gen(R, s));
    if (!sync_due(R, s)) return TC_OK; /* a rebuild may have done it */
    Tconst__Worker__V1__SyncRequest rq = TCONST__WORKER__V1__SYNC_REQUEST__INIT;
    rq.sid = s->sid;
    wproc *c = pr->ctx;
    if (!is_both(R, s)) {
        TC_CHECK(ensure_ctx(R, s, 0)); /* the Sync comes next: not behind other sessions' prefills */
        TC_CHECK(ctx_catch_up(R, s, msg_tokens(R, c)));
        rq.extend = s->hist + s->ctx_len;
        rq.n_extend = (size_t)(s->n - s->ctx_len);
        rq.send_seq = ++s->seq;
    }
    rq.cancel_id = ++tc_wr_cancel_ids; /* the engine stops the sync of a generation that was cancelled */
    ProtobufCMessage *r;
    double t0 = tc_now_s();
    tc_status st = tc_wr_call_cancellable(R, c, M("Sync"), &rq.base, rq.cancel_id,
                                    &tconst__worker__v1__sync_response__descriptor, &r, R->o.compute_timeout_s);
    if (st != TC_OK) {
        if (is_both(R, s)) s->gen_boot = 0;
        else s->ctx_boot = 0;
        return st;
    }
    Tconst__Worker__V1__SyncResponse *sr = (Tconst__Worker__V1__SyncResponse *)r;
    double sync_s = sr->compute_s;
    tc_metric_inc(TC_M_data_plane_bytes_total, (double)sr->sent_bytes);
    const uint64_t sent = sr->sent_bytes;
    if (sr->s) s->state_bytes = sr->s->state_bytes;
    tconst__worker__v1__sync_response__free_unpacked(sr, NULL);
    if (!is_both(R, s)) {
        s->ctx_len = s->n;
        TC_CHECK(import_on_gen(R, s, tc_now_s() - t0 - sync_s, sent));
    }
    s->synced_at = s->n;
    s->syncs++;
    return TC_OK;
}

tc_status tc_wr_prepare(tc_worker_client *w, tc_wc_session *s) {
    remote *R = w->impl;
    const uint64_t b = tc_wr_boot_of(R, R->pairs[s->pair].gen);
    if (s->gen_boot == b && b) return TC_OK;
    TC_LOG(TC_LOG_INFO, "workers", "session %llu: rebuilding its generation copy (%lld tokens) before its generation",
           (unsigned long long)s->sid, (long long)s->n);
    RETRY(R, s, ensure_gen(R, s));
    return TC_OK;
}

tc_status tc_wr_sync(tc_worker_client *w, tc_wc_session *s) {
    remote *R = w->impl;
    if (!sync_due(R, s)) return TC_OK;
    RETRY(R, s, do_sync(R, s));
    return TC_OK;
}

/* burst args of one pair's share of a step (NULL b: one token each) */
typedef struct {
    const tc_wc_burst *b;
    double max_s;
    int kstride;
    int *n_out;
} burst_args;

/* Session i left out of a step: why, in rows[i]. */
static void row_fail(tc_row_status *row, tc_status st, const char *msg) {
    row->st = st;
    snprintf(row->msg, sizeof row->msg, "%s", msg && *msg ? msg : tc_status_str(st));
}

/* One pair's batched step. rows != NULL: a session whose copy cannot be
 * rebuilt (an error, not a worker gone) or that the worker left out (its
 * inline sync failed) fails alone, rows[i] saying why; the request holds
 * the others (at ix[k] of the batch). rows == NULL: all or nothing. */
static tc_status do_step(remote *R, tc_wc_session **ss, const int32_t *t, int B, tc_sampler **smp, int32_t *next,
                         float *logits, int pair, const burst_args *ba, tc_row_status *rows) {
    wproc *g = R->pairs[pair].gen;
    const int V = R->cfg.vocab_size;
    uint64_t *sids = malloc((size_t)B * 8);
    int32_t *tk = malloc((size_t)B * 4);
    int *ix = malloc((size_t)B * sizeof *ix);
    char *inline_sync = calloc((size_t)B, 1);
    Tconst__Worker__V1__Sampler *sm = calloc((size_t)B, sizeof *sm), **smpp = calloc((size_t)B, sizeof *smpp);
    tc_status st = TC_OK;
    int n = 0; /* sessions in the request */
    if (!sids || !tk || !ix || !sm || !smpp || !inline_sync) st = TC_FAIL(TC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < B && rows; i++) rows[i].st = TC_OK, rows[i].msg[0] = 0;
    for (int i = 0; i < B && st == TC_OK; i++) {
        tc_status si = ensure_gen(R, ss[i]);
        if (si != TC_OK && rows && si != TC_ERR_IO) { /* this session's own failure (a worker gone: the whole call's) */
            TC_LOG(TC_LOG_WARN, "workers", "session %llu left out of a step: %s", (unsigned long long)ss[i]->sid,
                   tc_error_get() ? tc_error_get() : tc_status_str(si));
            row_fail(&rows[i], si, tc_error_get());
            continue;
        }
        if ((st = si) != TC_OK) break;
        /* a session the engine left in the batch at a boundary is synced
         * inline by the generation worker itself (it holds the history):
         * short contexts, --no-overlap-syncs */
        inline_sync[i] = sync_due(R, ss[i]);
        ix[n] = i;
        sids[n] = ss[i]->sid;
        tk[n] = t[i];
        if (smp) {
            tconst__worker__v1__sampler__init(&sm[n]);
            sm[n].temperature = smp[i]->p.temperature;
            sm[n].top_k = smp[i]->p.top_k;
            sm[n].top_p = smp[i]->p.top_p;
            sm[n].rng = smp[i]->rng;
            sm[n].n_rng = 4;
            sm[n].logprobs = smp[i]->lp_on ? smp[i]->lp_top + 1 : 0;
            if (ba) {
                sm[n].max_steps = ba->b[i].max_steps;
                sm[n].stop = (int32_t *)ba->b[i].stop;
                sm[n].n_stop = (size_t)ba->b[i].n_stop;
            }
            smpp[n] = &sm[n];
        }
        n++;
    }
    ProtobufCMessage *r = NULL;
    if (st == TC_OK && n > 0) {
        Tconst__Worker__V1__StepRequest rq = TCONST__WORKER__V1__STEP_REQUEST__INIT;
        rq.sids = sids, rq.n_sids = (size_t)n;
        rq.tokens = tk, rq.n_tokens = (size_t)n;
        if (smp) rq.samplers = smpp, rq.n_samplers = (size_t)n;
        rq.want_logits = logits != NULL;
        if (ba) rq.max_seconds = ba->max_s;
        /* a step's own time: --worker-timeout; one that syncs a session
         * inline runs an O(N) sync first (the compute budget, as a sync
         * on the context worker); a multi-step call runs up to max_s */
        double tmo = R->o.timeout_s + (ba && ba->max_s > 0 ? ba->max_s : 0);
        for (int k = 0; k < n; k++)
            if (inline_sync[ix[k]] && R->o.compute_timeout_s > tmo) tmo = R->o.compute_timeout_s;
        st = tc_wr_call(R, g, tc_wr_t_role, M("Step"), &rq.base, &tconst__worker__v1__step_response__descriptor, &r, tmo);
        if (st != TC_OK) /* did the step happen (a worker gone, a reply lost or refused)? rebuild to be sure */
            for (int k = 0; k < n; k++) ss[ix[k]]->gen_boot = 0;
    }
    if (st == TC_OK && n > 0) {
        Tconst__Worker__V1__StepResponse *sr = (Tconst__Worker__V1__StepResponse *)r;
        /* the sessions the worker left out: index into the request */
        char *out = calloc((size_t)n, 1);
        if (!out) st = TC_FAIL(TC_ERR_NOMEM, "out of memory");
        for (size_t e = 0; e < sr->n_errors && st == TC_OK; e++) {
            const Tconst__Worker__V1__StepError *se = sr->errors[e];
            if (se->index >= (uint32_t)n || out[se->index] || se->code == 0 || !sr->n_counts)
                st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: malformed step errors", g->name);
            else out[se->index] = 1;
        }
        if (st == TC_OK && sr->n_errors && !rows) { /* all or nothing: the first one's error fails the call */
            st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: Step: %s", g->name, sr->errors[0]->message);
            for (int k = 0; k < n; k++) ss[ix[k]]->gen_boot = 0; /* the others did step: rebuilt without it */
        }
        size_t want_next = (size_t)n, multi = 0;
        if (st == TC_OK && sr->n_counts) { /* counts within what each session asked; 0 for one left out */
            want_next = 0;
            multi = sr->n_counts == (size_t)n && (ba || sr->n_errors);
            for (int k = 0; k < n && multi; k++) {
                const int most = ba && ba->b[ix[k]].max_steps > 1 ? ba->b[ix[k]].max_steps : 1;
                multi = out[k] ? sr->counts[k] == 0 : sr->counts[k] >= 1 && sr->counts[k] <= most;
                want_next += (size_t)sr->counts[k];
            }
            if (!multi) st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: malformed step counts", g->name);
        }
        if (st == TC_OK && ((smp && (sr->n_next != want_next || sr->n_samplers != (size_t)n)) ||
                            sr->n_state_bytes != (size_t)n || (logits && sr->n_logits != (size_t)n * V)))
            st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: malformed step response", g->name);
        for (int k = 0; k < n && st == TC_OK; k++) {
            if (smp && sr->samplers[k]->n_rng != 4) {
                st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: malformed sampler state", g->name);
                break;
            }
        }
        /* a sampled id outside the vocabulary would reach the client, the
         * journal (which then refuses to restore) and the next step */
        for (size_t q = 0; smp && q < sr->n_next && st == TC_OK; q++)
            if (sr->next[q] < 0 || sr->next[q] >= V)
                st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: sampled token id %d outside the vocabulary [0, %d)", g->name,
                             sr->next[q], V);
        /* logprobs: one a token of each row that asked, with its top ones */
        size_t want_lp = 0, want_top = 0;
        for (size_t k = 0, o = 0; smp && k < (size_t)n && st == TC_OK; k++) {
            const tc_sampler *sk = smp[ix[k]];
            const size_t c = multi ? (size_t)sr->counts[k] : 1;
            if (sk->lp_on) {
                const int nt = sk->lp_top < V ? sk->lp_top : V;
                want_lp += c, want_top += c * (size_t)nt;
            }
            o += c;
        }
        if (st == TC_OK && smp && (sr->n_logprob != want_lp || sr->n_top_ids != want_top || sr->n_top_logprobs != want_top))
            st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: malformed step logprobs (%zu and %zu top, want %zu and %zu)", g->name,
                         sr->n_logprob, sr->n_top_ids, want_lp, want_top);
        for (size_t q = 0; q < sr->n_top_ids && st == TC_OK; q++)
            if (sr->top_ids[q] < 0 || sr->top_ids[q] >= V)
                st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: logprobs: token id %d outside the vocabulary", g->name,
                             sr->top_ids[q]);
        if (st != TC_OK) /* what the worker did is unknown: rebuilt on next use */
            for (int k = 0; k < n; k++) ss[ix[k]]->gen_boot = 0;
        for (size_t e = 0; e < sr->n_errors && st == TC_OK; e++) {
            const int i = ix[sr->errors[e]->index];
            TC_LOG(TC_LOG_WARN, "workers", "session %llu left out of a step: %s", (unsigned long long)ss[i]->sid,
                   sr->errors[e]->message);
            const int code = sr->errors[e]->code;
            row_fail(&rows[i], code == TC_GRPC_INVALID_ARGUMENT ? TC_ERR_INVALID
                               : code == TC_GRPC_RESOURCE_EXHAUSTED ? TC_ERR_EXHAUSTED : TC_ERR_INTERNAL,
                     sr->errors[e]->message);
        }
        for (size_t k = 0, o = 0, ol = 0, ot = 0; k < (size_t)n && st == TC_OK; k++) {
            const size_t i = (size_t)ix[k];
            int c = multi ? sr->counts[k] : 1;
            if (ba) ba->n_out[i] = c;
            for (int q = 0; smp && smp[i]->lp_on && q < c; q++, ol++) {
                tc_sampler *sk = smp[i];
                const int nt = sk->lp_top < V ? sk->lp_top : V;
                if (sk->lp && sk->lp_n < sk->lp_cap) {
                    tc_logprob *x = &sk->lp[sk->lp_n++];
                    x->logprob = sr->logprob[ol];
                    x->n_top = nt;
                    if (nt > 0) { /* (none asked: protobuf-c's arrays are NULL) */
                        memcpy(x->top_id, sr->top_ids + ot, (size_t)nt * 4);
                        memcpy(x->top_logprob, sr->top_logprobs + ot, (size_t)nt * 4);
                    }
                }
                ot += (size_t)nt;
            }
            if (smp && c > 0) {
                if (ba) {
                    for (int q = 0; q < c; q++) next[i * (size_t)ba->kstride + q] = sr->next[o + q];
                } else next[i] = sr->next[o];
                memcpy(smp[i]->rng, sr->samplers[k]->rng, 32);
            }
            o += (size_t)c;
            ss[i]->state_bytes = sr->state_bytes[k];
            if (c > 0 && inline_sync[i]) ss[i]->synced_at = ss[i]->n, ss[i]->syncs++;
            if (logits) memcpy(logits + i * V, sr->logits + k * V, (size_t)V * 4);
        }
        free(out);
        tconst__worker__v1__step_response__free_unpacked(sr, NULL);
    }
    free(sids), free(tk), free(ix), free(sm), free(smpp), free(inline_sync);
    return st;
}

/* One pair's share of a batched step, with recovery; may run on a thread
 * of its own (pairs step at the same time). */
typedef struct {
    remote *R;
    tc_wc_session **ss;
    const int32_t *t;
    tc_sampler **smp;
    int32_t *next;
    float *logits;
    int k, pair, role;
    burst_args ba, *bap;
    tc_row_status *rows; /* this pair's rows, or NULL: all or nothing */
    tc_status st;
    char err[512];
} pair_step;

static void *pair_step_run(void *arg) {
    pair_step *a = arg;
    tc_wr_t_role = a->role; /* this pair's clients for the caller's role: no other thread uses them now */
    remote *R = a->R;
    for (int attempt = 0;; attempt++) {
        double t0 = tc_now_s();
        a->st = do_step(R, a->ss, a->t, a->k, a->smp, a->next, a->logits, a->pair, a->bap, a->rows);
        if (a->st != TC_ERR_IO || attempt == 3) break;
        TC_LOG(TC_LOG_WARN, "workers", "step of %d sessions: %s; recovering", a->k, tc_error_get());
        if (tc_wr_wait_up(R, R->pairs[a->pair].gen, t0) != TC_OK || tc_wr_wait_up(R, R->pairs[a->pair].ctx, t0) != TC_OK) break;
    }
    if (a->st != TC_OK) snprintf(a->err, sizeof a->err, "%s", tc_error_get() ? tc_error_get() : tc_status_str(a->st));
    return NULL;
}

/* A batched step (b == NULL: one token each) or a multi-step call
 * (step_multi): the sessions of each pair in one message, the pairs'
 * messages at the same time, one thread per extra pair (a session's pair
 * changes only in a fail-over, on the thread that steps it). */
static tc_status step_any(remote *R, tc_wc_session **ss, const int32_t *t, int B, tc_sampler **smp, int32_t *next,
                          float *logits, const tc_wc_burst *b, double max_s, int kstride, int *n_out,
                          tc_row_status *rows) {
    const int V = R->cfg.vocab_size;
    if (B <= 0) return TC_OK;
    for (int i = 0; i < B; i++)
        if (t[i] < 0 || t[i] >= V)
            return TC_FAIL(TC_ERR_INVALID, "token id %d of batch row %d is outside the vocabulary [0, %d)", t[i], i, V);
    if (b && (!smp || kstride < 1)) return TC_FAIL(TC_ERR_INVALID, "step_multi: needs samplers and kstride >= 1");
    const int ks = b ? kstride : 1;
    for (int i = 0; b && i < B; i++)
        if (b[i].max_steps < 1 || b[i].max_steps > ks)
            return TC_FAIL(TC_ERR_INVALID, "step_multi: max_steps %d of batch row %d outside 1..%d", b[i].max_steps, i, ks);
    tc_wc_session **grp = malloc((size_t)B * sizeof *grp);
    tc_sampler **gs = malloc((size_t)B * sizeof *gs);
    tc_wc_burst *gb = b ? malloc((size_t)B * sizeof *gb) : NULL;
    int32_t *gt = malloc((size_t)B * 4), *gn = malloc((size_t)B * ks * 4);
    int *idx = malloc((size_t)B * sizeof *idx), *gc = calloc((size_t)B, sizeof *gc);
    pair_step *ps = calloc((size_t)R->n_pairs, sizeof *ps);
    pthread_t *th = calloc((size_t)R->n_pairs, sizeof *th);
    char *started = calloc((size_t)R->n_pairs, 1);
    float *gl = logits ? malloc((size_t)B * V * 4) : NULL;
    tc_row_status *gr = rows ? calloc((size_t)B, sizeof *gr) : NULL;
    tc_status st = TC_OK;
    if (!grp || !gs || (b && !gb) || !gt || !gn || !idx || !gc || !ps || !th || !started || (logits && !gl) ||
        (rows && !gr))
        st = TC_FAIL(TC_ERR_NOMEM, "out of memory");
    int n_grp = 0, k = 0;
    for (int p = 0; p < R->n_pairs && st == TC_OK; p++) {
        int k0 = k;
        for (int j = 0; j < B; j++)
            if (ss[j]->pair == p) {
                grp[k] = ss[j], gt[k] = t[j], gs[k] = smp ? smp[j] : NULL, idx[k] = j;
                if (b) gb[k] = b[j];
                k++;
            }
        if (k == k0) continue;
        pair_step *a = &ps[n_grp++];
        a->R = R, a->ss = grp + k0, a->t = gt + k0, a->smp = smp ? gs + k0 : NULL, a->next = gn + (size_t)k0 * ks;
        a->logits = gl ? gl + (size_t)k0 * V : NULL, a->k = k - k0, a->pair = p, a->role = tc_wr_t_role;
        a->rows = gr ? gr + k0 : NULL;
        if (b) {
            a->ba = (burst_args){gb + k0, max_s, ks, gc + k0};
            a->bap = &a->ba;
        }
    }
    /* room for each session's tokens first, so that after the step the
     * history can always take them */
    for (int j = 0; j < B && st == TC_OK; j++)
        if (ss[j]->n + ks > ss[j]->cap) {
            int64_t cap = ss[j]->cap ? ss[j]->cap * 2 : 1024;
            while (cap < ss[j]->n + ks) cap *= 2;
            int32_t *nh = realloc(ss[j]->hist, (size_t)cap * 4);
            if (!nh) st = TC_FAIL(TC_ERR_NOMEM, "out of memory for the history");
            else ss[j]->hist = nh, ss[j]->cap = cap;
        }
    if (st != TC_OK) n_grp = 0;
    for (int g = 1; g < n_grp; g++) started[g] = pthread_create(&th[g], NULL, pair_step_run, &ps[g]) == 0;
    if (n_grp > 0) pair_step_run(&ps[0]);
    for (int g = 1; g < n_grp; g++) {
        if (started[g]) pthread_join(th[g], NULL);
        else pair_step_run(&ps[g]); /* no thread: in turn */
    }
    /* with rows, a pair that failed fails its own sessions while another
     * pair's call succeeded (even one whose sessions all failed alone:
     * each row then says why); otherwise the call fails */
    int n_ok = 0;
    for (int g = 0; g < n_grp; g++) n_ok += ps[g].st == TC_OK;
    for (int g = 0; g < n_grp && st == TC_OK; g++)
        if (ps[g].st != TC_OK && !(rows && n_ok > 0)) {
            st = ps[g].st;
            tc_error_set("%s", ps[g].err);
        }
    /* all or nothing, as the engine sees it: when a pair failed, the engine
     * keeps every token of the batch as not fed, so the pairs that did step
     * are rebuilt from the history (which does not have the tokens) */
    for (int g = 0; g < n_grp; g++) {
        int k0 = (int)(ps[g].ss - grp);
        for (int m = 0; m < ps[g].k; m++) {
            int j = idx[k0 + m];
            if (st != TC_OK || ps[g].st != TC_OK) {
                ss[j]->gen_boot = 0;
                if (st == TC_OK) {
                    row_fail(&rows[j], ps[g].st, ps[g].err);
                    if (b) n_out[j] = 0;
                }
                continue;
            }
            if (rows) {
                rows[j] = gr[k0 + m];
                if (rows[j].st != TC_OK) { /* left out: took no token */
                    if (b) n_out[j] = 0;
                    continue;
                }
            }
            const int32_t *o = gn + (size_t)(k0 + m) * ks;
            int c = b ? gc[k0 + m] : 1;
            if (b) {
                memcpy(next + (size_t)j * ks, o, (size_t)c * 4);
                n_out[j] = c;
            } else if (smp) next[j] = o[0];
            if (logits) memcpy(logits + (size_t)j * V, gl + (size_t)(k0 + m) * V, (size_t)V * 4);
            /* capacity reserved above: cannot fail */
            hist_push(ss[j], &t[j], 1);
            if (c > 1) hist_push(ss[j], o, c - 1);
        }
    }
    free(grp), free(gs), free(gb), free(gt), free(gn), free(idx), free(gc), free(ps), free(th), free(started), free(gl);
    free(gr);
    return st;
}

tc_status tc_wr_step(tc_worker_client *w, tc_wc_session **ss, const int32_t *t, int B, tc_sampler **smp,
                     int32_t *next, float *logits, tc_row_status *rows) {
    return step_any(w->impl, ss, t, B, smp, next, logits, NULL, 0, 1, NULL, rows);
}

tc_status tc_wr_step_multi(tc_worker_client *w, tc_wc_session **ss, const int32_t *t, int B, tc_sampler **smp,
                           const tc_wc_burst *b, double max_s, int32_t *next, int kstride, int *n_out,
                           tc_row_status *rows) {
    return step_any(w->impl, ss, t, B, smp, next, NULL, b, max_s, kstride, n_out, rows);
}

tc_status tc_wr_truncate(tc_worker_client *w, tc_wc_session *s, int64_t n_keep) {
    remote *R = w->impl;
    if (n_keep < 0 || n_keep > s->n)
        return TC_FAIL(TC_ERR_INVALID, "truncate: %lld tokens kept of %lld", (long long)n_keep, (long long)s->n);
    if (n_keep == s->n) return TC_OK;
    s->n = n_keep;
    if (s->ctx_len > n_keep) s->ctx_len = n_keep;
    s->gen_boot = s->ctx_boot = 0; /* both copies are ahead: rebuilt from the history on next use */
    /* the window of the last token kept, as a rebuild leaves it: the next
     * append's route (through the context worker when it crosses) reads it */
    const int64_t W = R->cfg.generate_window;
    if (R->cfg.arch != TC_ARCH_TRANSFORMER) s->synced_at = n_keep > 0 ? ((n_keep - 1) / W) * W : 0;
    return TC_OK;
}

/* Read unlocked: not while the session's append, sync or rebuild runs (its
 * n moves then: the pieces of an append, a rebuild's prefill). The engine
 * reads a session that is idle or its job's own, on its thread. */
void tc_wr_stats(tc_worker_client *w, const tc_wc_session *s, tc_wc_session_stats *o) {
    remote *R = w->impl;
    o->length = s->n;
    o->syncs = s->syncs;
    o->state_bytes = s->state_bytes;
    o->sync_due = sync_due(R, s);
    o->pair = __atomic_load_n(&s->pair, __ATOMIC_RELAXED); /* a fail-over may move it (failover) */
}

int64_t tc_wr_history(tc_worker_client *w, const tc_wc_session *s, int32_t *out, int64_t max) {
    (void)w;
    if (out && max >= s->n && s->n > 0) memcpy(out, s->hist, (size_t)s->n * 4);
    return s->n;
}

