/* engine.c — the engine's threads: session table, admission, and the step
 * loops (see engine.h). One mutex guards the table and the job lists; the
 * model runs with it released, on sessions marked busy, so the RPC thread
 * can answer GetSession and admit work while a step or a sync runs.
 *
 * Start threads (one a worker pair) take queued jobs: their append /
 * prefill and first token. Generation threads (one a worker pair) loop:
 * one batched hit step over every running generation of their pair whose
 * client keeps up (backpressure pauses the others; they do not block
 * anyone). A session at a window boundary leaves the batch for its sync,
 * which its pair's sync thread runs (or, short or with
 * --no-overlap-syncs, the step runs inline). */
#include "engine.h"

#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../tokenizer/bpe.h"
#include "../scheduler/sched.h"
#include "journal.h"
#include "metrics.h"

/* QUEUED: admitted; STARTING: a start thread runs its append/prefill
 * and first token; RUNNING: in its pair's generation thread's batches. */
enum { J_QUEUED = 0, J_STARTING, J_RUNNING, J_DONE };

/* a generation whose client has not read for this long gives up its slot
 * of --max-batch (a shorter stall keeps it) */
#define TC_SLOT_RELEASE_S 1.0

/* syncs of one session failing in a row before its generation ends with
 * the error (engine_ctx_thread) */
#define TC_SYNC_TRIES 3

typedef struct dsess {
    char id[TC_ID_MAX];
    tc_wc_session *ws;
    _Atomic int32_t pending; /* sampled but not yet fed, or -1 (set by the job's threads, read by GetSession under mu) */
    float *logits;   /* [V] after the last fed token */
    int has_logits;
    uint64_t busy_job;
    int ephemeral, close_when_idle;
    int pins;         /* open Streams on it: no idle expiry meanwhile */
    int keep_journal; /* closed live, but the journal keeps it (unappend without truncate) */
    int64_t created_ms, last_used_ms;
    tc_wc_session_stats st;
    int32_t *restore; /* journaled history not yet fed (after a restart) */
    int64_t n_restore;
    int syncing;      /* at a window boundary: queued for or in a sync on the
                         context thread; out of the batch meanwhile */
    int sync_failures; /* in a row: past TC_SYNC_TRIES its generation ends with an error */
    double boundary_t0;
    uint64_t qid; /* its id in the scheduler */
    /* a generation a crash cut, journaled: the same request_id resumes it
     * while the session is as the journal left it (length resume_len) */
    tc_journal_gen resume;
    int has_resume;
    int64_t resume_len;
} dsess;

typedef struct job {
    uint64_t id;
    char request_id[TC_ID_MAX];
    dsess *s;
    int32_t *tokens;
    int64_t n_tokens;
    int64_t n_copied; /* of n_tokens, the copy_from history in front (error messages) */
    int generate;
    int final_sent; /* its last message (finish_reason set) went to the sink */
    tc_sampler smp;
    int max_tokens, ignore_eos;
    int32_t *stop_ids;
    int n_stop_ids;
    char **stop;
    int n_stop;
    void *user;
    int phase, cancel, cancel_code; /* cancel_code 13: ends with FINISH_ERROR and err */
    int claimed; /* in a generation thread's step, or being ended by one (mu): no other thread touches it */
    /* backpressure (mu): since when its client has not kept up (0: it
     * does); slotless: paused past TC_SLOT_RELEASE_S, it gave up its slot
     * of --max-batch; wants_slot: its client reads again, no slot free yet */
    double behind_since;
    int slotless, wants_slot;
    atomic_int ended;               /* finish_job began: its request_id is free */
    char err[256];
    int resume;    /* continues a journaled generation (see dsess.resume) */
    int replaying; /* re-sending journaled tokens: not journaled again */
    int32_t next_tok;
    int64_t generated, prompt_tokens;
    double t_arrive, t_start, t_prefill, t_first, t_last, sync_s;
    tc_bpe_stream bs;
    int created; /* this job opened its session (OpenSession): it goes again if the job fails before its append */
    char *piece; /* [piece_cap]: one token's decoded text */
    char *held;
    size_t held_len, held_cap;
    struct job *next;
} job;

/* a worker-side session copy to give back (reaper_thread) */
typedef struct reap_node {
    tc_wc_session *ws;
    struct reap_node *next;
} reap_node;

struct tc_engine {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* wakes the engine's threads (broadcast) */
    /* the reaper: frees worker session copies outside mu -- a remote free
     * is a blocking Close RPC that waits behind the worker's running sync
     * (seconds), and mu is held where sessions end (the RPC thread's
     * CloseSession, a job's retirement) */
    pthread_cond_t reap_cv;
    pthread_t reaper;
    reap_node *reap;
    int reaper_on, reap_stop;
    int restoring; /* tc_engine_attach_journal loading (mu) */
    pthread_cond_t idle_cv; /* signalled when a job retires, and when its done callback has returned */
    int n_finishing;        /* retired jobs whose done callback is still running (tc_engine_quiesce waits) */
    /* generation threads (hit steps): one a worker pair, each stepping
     * the sessions of its pair, so a pair that stops answering holds up
     * only its own sessions' tokens */
    struct gen_arg {
        struct tc_engine *e;
        int pair;
        double busy_s, busy_t0, ratio; /* its busy fraction (ratio: last second or so, mu) */
        pthread_t th;
    } *gen;
    int n_gen;
    double next_idle_check, next_trim; /* housekeeping, done by whichever generation thread finds it due (mu) */
    /* context threads (syncs, prefills): in-process one for both; with
     * worker processes one for starts and one per worker pair for syncs */
    struct ctx_arg {
        struct tc_engine *e;
        int kind; /* 0 syncs and starts, 1 syncs of `pair`, 2 starts */
        int pair;
        pthread_t th;
    } *ctx;
    int n_ctx;
    int stop, draining;
    /* sessions waiting for their sync: the scheduler's EDF queue, deadline
     * = arrival at the boundary + the sync's expected cost (its history
     * length x the measured seconds per token), so a short context's sync
     * is not stuck behind a long one's and mean boundary stall is low */
    tc_sched *sched;
    uint64_t next_qid;
    double sync_s_per_tok;
    int n_sync_queued, n_sync_running, n_starting;
    int n_slotless, n_wanting; /* running jobs without a slot of --max-batch; those of them waiting for one */
    int n_pairs; /* worker pairs: a sync queue and context thread each */
    tc_worker_client *wc;
    struct tc_bpe *bpe;
    tc_engine_limits lim;
    tc_engine_sink sink;
    tc_journal *journal; /* NULL: sessions do not outlive the process */
    dsess **sess;
    int n_sess, cap_sess;
    job *jobs; /* all live jobs, queued and running */
    int n_queued, n_running;
    uint64_t next_job_id, next_sess_id;
    int V;
    size_t piece_cap; /* a job's piece buffer: the longest token's text */
};


static dsess *find_sess(tc_engine *e, const char *id) {
    for (int i = 0; i < e->n_sess; i++)
        if (!strcmp(e->sess[i]->id, id)) return e->sess[i];
    return NULL;
}

static job *find_job(tc_engine *e, uint64_t id) {
    for (job *j = e->jobs; j; j = j->next)
        if (j->id == id) return j;
    return NULL;
}

static void sess_info(tc_engine *e, const dsess *s, tc_session_info *o) {
    memset(o, 0, sizeof *o);
    snprintf(o->id, sizeof o->id, "%s", s->id);
    o->length = s->st.length + (s->pending >= 0);
    o->syncs = s->st.syncs;
    o->state_bytes = s->st.state_bytes;
    o->windows = e->wc->cfg->arch == TC_ARCH_TRANSFORMER ? 0 : o->length / e->wc->cfg->generate_window;
    o->created_ms = s->created_ms;
    o->last_used_ms = s->last_used_ms;
    o->busy = s->busy_job != 0;
}

/* A copy of idle session s's whole history (fed, restored from the
 * journal and not yet fed, the pending sampled token) under mu; 0 or a
 * gRPC code with msg; extra more ids of room after them. Idle: no thread
 * touches its worker-side history
 * (a job holds the session busy while it runs). */
static int history_locked(tc_engine *e, dsess *s, int64_t extra, int32_t **tokens, int64_t *n, char *msg,
                          size_t msglen) {
    *tokens = NULL;
    *n = 0;
    if (s->busy_job) {
        snprintf(msg, msglen, "session '%s' is busy with another request", s->id);
        return 9;
    }
    const int64_t fed = s->ws ? e->wc->history(e->wc, s->ws, NULL, 0) : 0;
    const int64_t total = fed + s->n_restore + (s->pending >= 0);
    int32_t *t = malloc((size_t)(total + extra > 0 ? total + extra : 1) * 4); /* extra: room the caller fills */
    if (!t) {
        snprintf(msg, msglen, "out of memory for a copy of %lld tokens", (long long)total);
        return 8;
    }
    if (fed > 0) e->wc->history(e->wc, s->ws, t, fed);
    if (s->n_restore) memcpy(t + fed, s->restore, (size_t)s->n_restore * 4);
    if (s->pending >= 0) t[total - 1] = s->pending;
    if (s->st.length + (s->pending >= 0) != total) { /* the two counts disagree: a bug, not something to send */
        free(t);
        snprintf(msg, msglen, "session '%s': history of %lld tokens, length %lld", s->id, (long long)total,
                 (long long)(s->st.length + (s->pending >= 0)));
        return 13;
    }
    *tokens = t, *n = total;
    return 0;
}

static void gauges_locked(tc_engine *e) {
    int64_t bytes = 0;
    for (int i = 0; i < e->n_sess; i++) bytes += e->sess[i]->st.state_bytes;
    tc_metric_set(TC_G_sessions_active, e->n_sess);
    tc_metric_set(TC_G_requests_running, e->n_running + e->n_starting); /* prefilling or generating */
    tc_metric_set(TC_G_requests_paused, e->n_slotless);
    tc_metric_set(TC_G_requests_resuming, e->n_wanting);
    tc_metric_set(TC_G_requests_queued, e->n_queued);
    tc_metric_set(TC_G_state_bytes, (double)bytes);
}

/* caller holds mu: ws to the reaper (or, without one, freed here) */
static void reap_push_locked(tc_engine *e, tc_wc_session *ws) {
    reap_node *n = e->reaper_on ? malloc(sizeof *n) : NULL;
    if (!n) {
        e->wc->session_free(e->wc, ws);
        return;
    }
    n->ws = ws, n->next = e->reap, e->reap = n;
    pthread_cond_signal(&e->reap_cv);
}

static void *reaper_thread(void *arg) {
    tc_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->reap && !e->reap_stop) pthread_cond_wait(&e->reap_cv, &e->mu);
        reap_node *list = e->reap;
        e->reap = NULL;
        if (!list) break; /* stopping, nothing left */
        pthread_mutex_unlock(&e->mu);
        while (list) {
            reap_node *nx = list->next;
            e->wc->session_free(e->wc, list->ws);
            free(list);
            list = nx;
        }
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* frees what is queued and ends the reaper (no session may end after) */
static void reaper_stop(tc_engine *e) {
    pthread_mutex_lock(&e->mu);
    const int on = e->reaper_on;
    e->reap_stop = 1, e->reaper_on = 0;
    pthread_cond_signal(&e->reap_cv);
    pthread_mutex_unlock(&e->mu);
    if (on) pthread_join(e->reaper, NULL);
}

/* caller holds mu; the session must be idle. forget: also drop it from
 * the journal (closed or expired, not a shutdown) */
static void sess_remove_locked(tc_engine *e, dsess *s, int forget) {
    for (int i = 0; i < e->n_sess; i++)
        if (e->sess[i] == s) {
            e->sess[i] = e->sess[--e->n_sess];
            break;
        }
    if (forget && e->journal && !s->ephemeral && tc_journal_session_delete(e->journal, s->id) != TC_OK)
        TC_LOG(TC_LOG_ERROR, "engine", "%s", tc_error_get());
    if (s->ws) reap_push_locked(e, s->ws);
    tc_sched_close(e->sched, s->qid);
    free(s->restore);
    free(s->logits);
    free(s);
    tc_metric_inc(TC_M_sessions_closed_total, 1);
    gauges_locked(e);
}

/* 48 random bits for an id the server assigns: a client can neither guess
 * another client's request_id (Abort takes any) nor pick it in advance */
static unsigned long long id_nonce(void) {
    unsigned long long v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) { /* no entropy yet: clock and address */
        v = (unsigned long long)tc_wall_ms() * 0x9E3779B97F4A7C15ull ^ (unsigned long long)(uintptr_t)&v;
        v ^= (unsigned long long)(tc_now_s() * 1e9) * 0xBF58476D1CE4E5B9ull;
    }
    return v & 0xffffffffffffull;
}

static dsess *sess_add_locked(tc_engine *e, const char *id) {
    if (e->n_sess == e->cap_sess) {
        int cap = e->cap_sess ? e->cap_sess * 2 : 64;
        dsess **ns = realloc(e->sess, (size_t)cap * sizeof *ns);
        if (!ns) return NULL;
        e->sess = ns;
        e->cap_sess = cap;
    }
    dsess *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->logits = malloc((size_t)e->V * sizeof(float));
    if (!s->logits) {
        free(s);
        return NULL;
    }
    if (id && *id) snprintf(s->id, sizeof s->id, "%s", id);
    else /* unique among the sessions held, ids clients chose included */
        do snprintf(s->id, sizeof s->id, "s-%llu-%012llx", (unsigned long long)++e->next_sess_id, id_nonce());
        while (find_sess(e, s->id));
    s->pending = -1;
    s->created_ms = s->last_used_ms = tc_wall_ms();
    s->qid = ++e->next_qid;
    int pair;
    /* refused only past the engine's own limit, which a restore may pass
     * (tc_engine_attach_journal then widens the scheduler); else a bug */
    if (tc_sched_admit(e->sched, s->qid, 0, &pair) != TC_OK && !e->restoring)
        TC_LOG(TC_LOG_ERROR, "engine", "scheduler: %s", tc_error_get());
    e->sess[e->n_sess++] = s;
    tc_metric_inc(TC_M_sessions_opened_total, 1);
    return s;
}

static void job_free(job *j) {
    free(j->tokens);
    free(j->stop_ids);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->stop);
    free(j->held);
    free(j->piece);
    tc_sampler_free(&j->smp);
    free(j);
}

/* Unlinks a finished job, releases its session; caller holds mu. Returns
 * the user pointer for the done callback. */
static void *job_retire_locked(tc_engine *e, job *j) {
    job **pp = &e->jobs;
    while (*pp && *pp != j) pp = &(*pp)->next;
    if (*pp) *pp = j->next;
    if (j->phase == J_QUEUED) e->n_queued--;
    else if (j->phase == J_STARTING) e->n_starting--;
    else if (j->phase == J_RUNNING) e->n_running--;
    e->n_slotless -= j->slotless;
    e->n_wanting -= j->wants_slot;
    j->phase = J_DONE;
    dsess *s = j->s;
    if (s) {
        s->busy_job = 0;
        s->last_used_ms = tc_wall_ms();
        if (s->ephemeral || s->close_when_idle) sess_remove_locked(e, s, !s->keep_journal);
    }
    gauges_locked(e);
    pthread_cond_broadcast(&e->idle_cv);
    pthread_cond_broadcast(&e->cv); /* a slot of the batch is free: a queued job may start */
    void *u = j->user;
    job_free(j);
    return u;
}

static void stats_of(const job *j, tc_job_stats *st, int64_t session_len) {
    memset(st, 0, sizeof *st);
    double t = tc_now_s();
    st->prompt_tokens = j->prompt_tokens;
    st->completion_tokens = j->generated;
    st->session_tokens = session_len;
    st->queue_s = j->t_start > 0 ? j->t_start - j->t_arrive : t - j->t_arrive;
    st->prefill_s = j->t_prefill > 0 ? j->t_prefill - j->t_start : 0;
    st->sync_s = j->sync_s;
    st->ttft_s = j->t_first > 0 ? j->t_first - j->t_arrive : 0;
    st->total_s = t - j->t_arrive;
}

/* ---- text pieces and stop strings ---- */

static int held_push(job *j, const char *p, size_t n) {
    if (j->held_len + n + 1 > j->held_cap) {
        size_t cap = (j->held_len + n + 1) * 2;
        char *nh = realloc(j->held, cap);
        if (!nh) return -1;
        j->held = nh;
        j->held_cap = cap;
    }
    memcpy(j->held + j->held_len, p, n);
    j->held_len += n;
    j->held[j->held_len] = 0;
    return 0;
}

/* How many held bytes may go out now: all but a tail that could still grow
 * into a stop string. Sets *hit when a stop string appears (cut there). */
static size_t held_releasable(const job *j, int *hit) {
    *hit = 0;
    size_t cut = j->held_len;
    for (int k = 0; k < j->n_stop; k++) {
        const char *f = memmem(j->held, j->held_len, j->stop[k], strlen(j->stop[k]));
        if (f && (size_t)(f - j->held) <= cut) {
            cut = (size_t)(f - j->held);
            *hit = 1;
        }
    }
    if (*hit) return cut;
    for (int k = 0; k < j->n_stop; k++) {
        size_t L = strlen(j->stop[k]);
        for (size_t t = L - 1; t > 0; t--) /* longest suffix that is a prefix */
            if (t <= j->held_len && !memcmp(j->held + j->held_len - t, j->stop[k], t)) {
                if (j->held_len - t < cut) cut = j->held_len - t;
                break;
            }
    }
    return cut;
}

/* Emits tokens toks[0..n) of job j in one message (the thread that holds
 * it: its pair's generation thread, or a start thread for the first; mu not
 * held), up to the first that ends it; *used says how many went out.
 * Returns the finish reason (NONE: keep generating). A token that is
 * fed already but not used (a multi-step run went past the end) is the
 * caller's to take back from the history. */
static tc_finish emit_tokens(tc_engine *e, job *j, const int32_t *toks, int n, int *used) {
    tc_finish fin = TC_FINISH_NONE;
    double t = tc_now_s();
    /* inter-token latency: the time since the stream's last message, shared
     * by the tokens of this one (a multi-step run delivers several at once) */
    double itl = j->generated > 0 ? (t - j->t_last) / n : 0;
    size_t out_len = 0;
    int hit = 0, m = 0;
    while (m < n && fin == TC_FINISH_NONE) {
        int32_t tok = toks[m++];
        j->generated++;
        if (j->generated == 1) {
            j->t_first = t;
            tc_metric_observe(TC_H_time_to_first_token_seconds, t - j->t_arrive);
        } else tc_metric_observe(TC_H_inter_token_latency_seconds, itl);
        if (!j->ignore_eos && tok == e->wc->cfg->eos_token_id) fin = TC_FINISH_EOS;
        for (int k = 0; k < j->n_stop_ids && fin == TC_FINISH_NONE; k++)
            if (tok == j->stop_ids[k]) fin = TC_FINISH_STOP;
        if (e->bpe) {
            size_t np = 0;
            if (tc_bpe_stream_push(&j->bs, tok, j->piece, e->piece_cap, &np) == TC_OK) held_push(j, j->piece, np);
            else { /* an id past the tokenizer's vocabulary (a padded head): U+FFFD in the
                    * text, after what the decoder holds of an unfinished character; never
                    * dropped, and the id itself still goes out in token_ids */
                char tail[8];
                held_push(j, tail, tc_bpe_stream_flush(&j->bs, tail));
                held_push(j, "\xEF\xBF\xBD", 3);
            }
            out_len = held_releasable(j, &hit);
            if (hit && fin == TC_FINISH_NONE) fin = TC_FINISH_STOP;
        }
        if (fin == TC_FINISH_NONE && j->generated >= j->max_tokens) fin = TC_FINISH_LENGTH;
    }
    j->t_last = t;
    tc_metric_inc(TC_M_generated_tokens_total, m);
    const char *out = "";
    if (e->bpe) {
        if (fin != TC_FINISH_NONE && !hit) {
            char tail[8];
            size_t tn = tc_bpe_stream_flush(&j->bs, tail);
            held_push(j, tail, tn);
            out_len = j->held_len;
        }
        out = j->held;
    }
    /* journal before the tokens go out: the client may rely on them */
    const char *jerr = NULL;
    if (e->journal && !j->s->ephemeral && !j->replaying && tc_journal_append(e->journal, j->s->id, toks, m) != TC_OK) {
        jerr = tc_error_get();
        TC_LOG(TC_LOG_ERROR, "engine", "session %s: %s: its generation ends, the session closes until a restart "
               "restores it from the journal", j->s->id, jerr);
        fin = TC_FINISH_ERROR;
        /* none of them goes out (the client must not hold tokens a restart
         * would not have), and the live session, whose workers took them,
         * closes: the journal keeps it as it was */
        m = 0;
        out_len = 0;
        pthread_mutex_lock(&e->mu);
        j->s->close_when_idle = 1;
        j->s->keep_journal = 1;
        pthread_mutex_unlock(&e->mu);
    }
    tc_job_stats st;
    if (fin != TC_FINISH_NONE) stats_of(j, &st, j->s->st.length + 1 - (n - m));
    e->sink.tokens(j->user, toks, m, out, out_len, fin, fin != TC_FINISH_NONE ? &st : NULL, jerr);
    if (fin != TC_FINISH_NONE) j->final_sent = 1; /* finish_job sends no second last message */
    if (e->bpe && out_len) {
        memmove(j->held, j->held + out_len, j->held_len - out_len);
        j->held_len -= out_len;
    }
    *used = m;
    return fin;
}

static tc_finish emit_token(tc_engine *e, job *j, int32_t tok) {
    int used;
    return emit_tokens(e, j, &tok, 1, &used);
}

static void finish_job(tc_engine *e, job *j, tc_finish fin, const char *err) {
    atomic_store(&j->ended, 1); /* its client may hear the end before it is unlinked */
    /* a generation cut by a shutdown stays resumable; any other end is final */
    if (j->generate && j->s && e->journal && !j->s->ephemeral && j->t_prefill > 0 &&
        !(fin == TC_FINISH_CANCELLED && j->cancel_code == 14) && tc_journal_gen_end(e->journal, j->s->id) != TC_OK)
        TC_LOG(TC_LOG_ERROR, "engine", "%s", tc_error_get());
    if ((fin == TC_FINISH_CANCELLED || fin == TC_FINISH_ERROR) && !j->final_sent) {
        tc_job_stats st;
        stats_of(j, &st, j->s ? j->s->st.length + (j->s->pending >= 0) : 0);
        e->sink.tokens(j->user, NULL, 0, "", 0, fin, &st, err);
    }
    tc_metric_inc(fin == TC_FINISH_ERROR            ? TC_M_requests_total_error
                  : j->cancel && j->cancel_code == 4 ? TC_M_requests_total_deadline
                  : j->cancel                         ? TC_M_requests_total_cancelled
                                                      : TC_M_requests_total_ok,
                  1);
    tc_metric_observe(TC_H_request_duration_seconds, tc_now_s() - j->t_arrive);
    pthread_mutex_lock(&e->mu);
    void *u = job_retire_locked(e, j);
    e->n_finishing++;
    pthread_mutex_unlock(&e->mu);
    e->sink.done(u);
    pthread_mutex_lock(&e->mu);
    e->n_finishing--;
    pthread_cond_broadcast(&e->idle_cv);
    pthread_mutex_unlock(&e->mu);
}

static void refresh_stats(tc_engine *e, dsess *s) {
    tc_wc_session_stats st = {0};
    e->wc->stats(e->wc, s->ws, &st);
    pthread_mutex_lock(&e->mu);
    s->st = st;
    s->last_used_ms = tc_wall_ms();
    gauges_locked(e);
    pthread_mutex_unlock(&e->mu);
}

/* Starts job j: append (the session's pending token first), then the first
 * token. Engine thread, mu not held. */
/* The workers took j's tokens but the journal did not: they are taken
 * back (the session must hold what the journal holds), or, where the
 * workers cannot forget, the session is dropped. */
static void unappend(tc_engine *e, job *j) {
    dsess *s = j->s;
    if (j->n_tokens <= 0) return;
    if (e->wc->truncate && e->wc->truncate(e->wc, s->ws, s->st.length - j->n_tokens) == TC_OK) {
        s->has_logits = 0; /* the logits were the dropped tokens' */
        refresh_stats(e, s);
        return;
    }
    /* the journal still holds the session without them: closed here, kept
     * there, it is back (as acknowledged) after a restart */
    TC_LOG(TC_LOG_ERROR, "engine",
           "session %s: its tokens could not be taken back from the workers: closed until a restart restores it "
           "from the journal", s->id);
    pthread_mutex_lock(&e->mu);
    s->close_when_idle = 1;
    s->keep_journal = 1;
    pthread_mutex_unlock(&e->mu);
}

/* A start that failed before the session took its tokens: the caller
 * gets the error, and a session this job opened goes with it (closed and
 * forgotten by the journal when the job retires), so a retried
 * OpenSession does not meet ALREADY_EXISTS or leave an empty session
 * counting against max_sessions. */
static void start_failed(tc_engine *e, job *j, int code, const char *msg) {
    atomic_store(&j->ended, 1); /* a retry under its request_id may come as soon as the client hears */
    if (j->created) {
        pthread_mutex_lock(&e->mu);
        j->s->close_when_idle = 1;
        pthread_mutex_unlock(&e->mu);
    }
    e->sink.failed(j->user, code, msg);
    finish_job(e, j, TC_FINISH_NONE, NULL);
}

/* the journal refused what the workers took: taken back, the job fails */
static void journal_refused(tc_engine *e, job *j) {
    char m[600];
    snprintf(m, sizeof m, "%s", tc_error_get());
    unappend(e, j);
    start_failed(e, j, 13, m);
}

/* The predicate a prefill asks between its layers and tiles (armed around
 * the append when the workers can stop one): the job was cancelled or
 * aborted, or its deadline passed. */
typedef struct {
    tc_engine *e;
    job *j;
} job_ref;
static int job_gone(void *ud) {
    const job_ref *x = ud;
    /* asked every 20 ms while a worker call waits, its client's lock held:
     * never wait for mu here (a thread holding mu may be waiting for that
     * client -- a session freed under mu when the reaper is off); busy
     * now, asked again in 20 ms */
    int c = 0;
    if (pthread_mutex_trylock(&x->e->mu) == 0) {
        c = x->j->cancel;
        pthread_mutex_unlock(&x->e->mu);
    }
    return c || x->e->sink.deadline_left(x->j->user) <= 0;
}

static void start_job(tc_engine *e, job *j) {
    dsess *s = j->s;
    j->t_start = tc_now_s();
    tc_metric_observe(TC_H_request_queue_seconds, j->t_start - j->t_arrive);
    if (!s->ws) {
        const tc_status st = e->wc->session_new(e->wc, &s->ws);
        if (st != TC_OK) {
            /* no live worker to place it on (EXHAUSTED / IO: an outage,
             * retryable, UNAVAILABLE) is not memory; the worker's words go
             * to the client */
            char msg[600];
            snprintf(msg, sizeof msg, "cannot open the session on a worker: %s",
                     tc_error_get() ? tc_error_get() : tc_status_str(st));
            start_failed(e, j, st == TC_ERR_EXHAUSTED || st == TC_ERR_IO ? 14 : 13, msg);
            return;
        }
    }
    /* a resumed generation re-sends what it had generated (the client may
     * not have received all of it): tokens [start_len, resume_len) */
    int32_t *replay = NULL;
    int64_t n_replay = 0;
    if (j->resume && s->n_restore >= s->resume_len && s->resume.start_len <= s->resume_len) {
        n_replay = s->resume_len - s->resume.start_len;
        replay = malloc((size_t)(n_replay ? n_replay : 1) * 4);
        if (replay && n_replay) memcpy(replay, s->restore + s->resume.start_len, (size_t)n_replay * 4);
    }
    if (!j->resume && s->has_resume) { /* another request: the cut generation is abandoned */
        s->has_resume = 0;
        if (e->journal && tc_journal_gen_end(e->journal, s->id) != TC_OK)
            TC_LOG(TC_LOG_ERROR, "engine", "%s", tc_error_get());
    }
    /* what the worker has not seen: a restored history, the pending
     * (sampled, journaled, not yet fed) token, then the new tokens */
    int64_t n = s->n_restore + (s->pending >= 0) + j->n_tokens;
    /* --max-session-tokens: the prompt must fit, with room for a first
     * generated token when it generates (a resumed generation is cut by
     * its length check instead) */
    /* the session's length (a journal-restored history is in st.length
     * already, and in n as not yet fed) and the prompt */
    const int64_t have = s->st.length + (s->pending >= 0) + j->n_tokens, lim = e->lim.max_session_tokens;
    const int wants = j->generate && j->max_tokens > 0; /* max_tokens 0 ends LENGTH, no room needed */
    if (!j->resume && (j->n_tokens > 0 || wants) && have + wants > lim) {
        char msg[400], copied[96] = "";
        if (j->n_copied)
            snprintf(copied, sizeof copied, " (%lld of them copied from copy_from)", (long long)j->n_copied);
        if (s->ephemeral) /* a plain Generate's session: the client never named it */
            snprintf(msg, sizeof msg, "prompt: %lld tokens%s %s --max-session-tokens %lld", (long long)j->n_tokens,
                     copied, have > lim ? "is over" : "leaves no room to generate under", (long long)lim);
        else if (j->n_tokens > 0 && have > lim)
            snprintf(msg, sizeof msg, "prompt: %lld tokens%s would make session %s hold %lld, over --max-session-tokens %lld",
                     (long long)j->n_tokens, copied, s->id, (long long)have, (long long)lim);
        else
            snprintf(msg, sizeof msg, "session %s holds %lld tokens%s: no room to generate under --max-session-tokens %lld",
                     s->id, (long long)have, j->n_tokens > 0 ? " with the prompt" : "", (long long)lim);
        free(replay);
        start_failed(e, j, 3, msg);
        return;
    }
    if (n > 0) {
        int32_t *feed = j->tokens;
        int32_t *tmp = NULL;
        if (n != j->n_tokens) {
            tmp = malloc((size_t)n * 4);
            if (!tmp) {
                free(replay);
                start_failed(e, j, 13, "out of memory");
                return;
            }
            int64_t k = 0;
            if (s->n_restore) memcpy(tmp, s->restore, (size_t)s->n_restore * 4), k = s->n_restore;
            if (s->pending >= 0) tmp[k++] = s->pending;
            if (j->n_tokens) memcpy(tmp + k, j->tokens, (size_t)j->n_tokens * 4);
            feed = tmp;
        }
        int64_t syncs0 = s->st.syncs;
        double t0 = tc_now_s();
        job_ref ref = {e, j};
        tc_cancel_hook prev = tc_cancel_arm(e->wc->cancellable ? job_gone : NULL, &ref);
        tc_status st = e->wc->append(e->wc, s->ws, feed, n, s->logits);
        tc_cancel_restore(prev);
        free(tmp);
        if (st == TC_ERR_CANCELLED) { /* stopped part way: the history is as it was */
            free(replay);
            tc_metric_inc(TC_M_cancelled_prefills_total, 1);
            pthread_mutex_lock(&e->mu);
            if (!j->cancel) j->cancel = 1, j->cancel_code = 4; /* the predicate saw the deadline */
            const int code = j->cancel_code;
            pthread_mutex_unlock(&e->mu);
            TC_LOG(TC_LOG_INFO, "engine", "request %s: prefill of %lld tokens stopped: %s", j->request_id,
                   (long long)n, tc_error_get() ? tc_error_get() : "cancelled");
            start_failed(e, j, code == 13 ? 1 : code,
                         code == 4 ? "deadline exceeded" : code == 14 ? "server shutting down" : "cancelled");
            return;
        }
        if (st != TC_OK) {
            char msg[600];
            snprintf(msg, sizeof msg, "append failed: %s", tc_error_get() ? tc_error_get() : tc_status_str(st));
            free(replay);
            /* TC_ERR_IO: a worker that did not come back — UNAVAILABLE, retryable */
            start_failed(e, j, st == TC_ERR_INVALID ? 3 : st == TC_ERR_IO ? 14 : 13, msg);
            return;
        }
        s->pending = -1;
        s->has_logits = 1;
        free(s->restore);
        s->restore = NULL;
        s->n_restore = 0;
        refresh_stats(e, s);
        /* the journal takes the tokens once the workers have: a failed
         * prefill leaves nothing behind to resurface after a restart. A new
         * generation journals its prompt with its record, below, in one
         * transaction; everything else here, before any reply */
        const int with_gen = j->generate && !j->resume && s->has_logits;
        if (e->journal && !s->ephemeral && j->n_tokens > 0 && !with_gen &&
            tc_journal_append(e->journal, s->id, j->tokens, j->n_tokens) != TC_OK) {
            free(replay);
            journal_refused(e, j);
            return;
        }
        tc_metric_observe(TC_H_prefill_duration_seconds, tc_now_s() - t0);
        tc_metric_inc(TC_M_prompt_tokens_total, (double)j->n_tokens);
        if (s->st.syncs > syncs0) tc_metric_inc(TC_M_syncs_total, (double)(s->st.syncs - syncs0));
    } else if (j->generate && e->wc->prepare) {
        /* nothing to feed, but a copy that an earlier cancelled or failed
         * call left unknown is rebuilt here, on this thread, not by the
         * first step on its pair's generation thread (every session's token
         * there would wait for that prefill of the whole history) */
        job_ref ref = {e, j};
        tc_cancel_hook prev = tc_cancel_arm(e->wc->cancellable ? job_gone : NULL, &ref);
        tc_status st = e->wc->prepare(e->wc, s->ws);
        tc_cancel_restore(prev);
        if (st != TC_OK) {
            char msg[600];
            free(replay);
            if (st == TC_ERR_CANCELLED) tc_metric_inc(TC_M_cancelled_prefills_total, 1);
            pthread_mutex_lock(&e->mu);
            if (st == TC_ERR_CANCELLED && !j->cancel) j->cancel = 1, j->cancel_code = 4; /* the deadline */
            const int code = j->cancel_code;
            pthread_mutex_unlock(&e->mu);
            if (st == TC_ERR_CANCELLED)
                start_failed(e, j, code == 13 ? 1 : code,
                             code == 4 ? "deadline exceeded" : code == 14 ? "server shutting down" : "cancelled");
            else {
                snprintf(msg, sizeof msg, "rebuilding the session's worker copy failed: %s",
                         tc_error_get() ? tc_error_get() : tc_status_str(st));
                start_failed(e, j, st == TC_ERR_IO ? 14 : 13, msg);
            }
            return;
        }
    }
    /* the resumed generation is under way only now: a start that failed
     * above (its prefill cancelled, a worker down) leaves it resumable, so
     * the client's retry under the same request_id resumes it rather than
     * journaling its prompt a second time */
    s->has_resume = 0;
    /* a new generation: its prompt and its record, in one transaction,
     * before anything is acknowledged (the appended event below) */
    if (j->generate && !j->resume && s->has_logits && e->journal && !s->ephemeral) {
        tc_journal_gen g;
        memset(&g, 0, sizeof g);
        snprintf(g.request_id, sizeof g.request_id, "%s", j->request_id);
        g.start_len = s->st.length;
        g.sp = j->smp.p;
        g.max_tokens = j->max_tokens;
        g.ignore_eos = j->ignore_eos;
        if (tc_journal_append_gen(e->journal, s->id, j->tokens, j->n_tokens, &g) != TC_OK) {
            free(replay);
            journal_refused(e, j);
            return;
        }
    }
    j->t_prefill = tc_now_s();
    if (j->n_tokens > 0 || !j->generate) {
        tc_session_info si;
        pthread_mutex_lock(&e->mu);
        sess_info(e, s, &si);
        pthread_mutex_unlock(&e->mu);
        si.busy = j->generate; /* an append-only job ends here */
        e->sink.appended(j->user, &si, j->n_tokens);
    }
    if (!j->generate) {
        finish_job(e, j, TC_FINISH_NONE, NULL);
        return;
    }
    if (!s->has_logits) {
        free(replay);
        e->sink.failed(j->user, 3, "prompt: empty (give text or token_ids; the session has no tokens yet)");
        finish_job(e, j, TC_FINISH_NONE, NULL);
        return;
    }
    if (j->resume) {
        j->replaying = 1;
        for (int64_t i = 0; i < n_replay; i++) {
            tc_finish f = emit_token(e, j, replay[i]);
            if (f != TC_FINISH_NONE) { /* it had ended, the end not yet journaled */
                free(replay);
                j->replaying = 0;
                finish_job(e, j, f, NULL);
                return;
            }
        }
        j->replaying = 0;
        TC_LOG(TC_LOG_INFO, "engine", "session %s: request %s resumed after %lld journaled tokens", s->id,
               j->request_id, (long long)n_replay);
    }
    free(replay);
    /* a generation ends (length) where the session reaches --max-session-tokens */
    const int64_t room = lim - s->st.length;
    if ((int64_t)j->max_tokens > j->generated + room) j->max_tokens = (int)(j->generated + (room > 0 ? room : 0));
    if (j->max_tokens <= j->generated) {
        tc_job_stats st;
        stats_of(j, &st, s->st.length);
        e->sink.tokens(j->user, NULL, 0, "", 0, TC_FINISH_LENGTH, &st, NULL);
        finish_job(e, j, TC_FINISH_NONE, NULL);
        return;
    }
    int32_t tok = tc_sampler_sample(&j->smp, s->logits);
    s->has_logits = 0;
    tc_finish fin = emit_token(e, j, tok);
    if (fin != TC_FINISH_NONE) {
        s->pending = tok;
        finish_job(e, j, fin, NULL);
        return;
    }
    j->next_tok = tok;
    pthread_mutex_lock(&e->mu);
    j->phase = J_RUNNING;
    e->n_starting--;
    e->n_running++;
    gauges_locked(e);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* The context thread: syncs of sessions at a window boundary first (they
 * stall a running generation), then the start of queued jobs (append /
 * prefill and first token). It computes in the model's second workspace,
 * so it overlaps the generation threads' hit steps. With ctx_threads >= 2
 * (worker processes, and in-process) starts get threads of their own
 * (kind 2, in the third workspace; one per worker pair, any of them takes
 * the oldest queued job, so a start waiting for a dead pair does not hold
 * up the starts placed on live ones) and each worker pair a thread for its
 * syncs (kind 1): a new request's first token does not wait behind a long
 * context's sync, a prefill does not hold up a boundary's sync, and pairs
 * sync at the same time. */
/* Slots of --max-batch held: generations, but for those paused (their
 * client stopped reading) for over TC_SLOT_RELEASE_S, and starts. */
static int slots_used_locked(const tc_engine *e) { return e->n_running - e->n_slotless + e->n_starting; }

static void *context_thread(void *arg) {
    struct ctx_arg *ca = arg;
    tc_engine *e = ca->e;
    const int do_syncs = ca->kind != 2, do_starts = ca->kind != 1;
    /* starts (prefills) in a workspace and on a client of their own (role
     * 2): a long prefill computes beside the syncs, not in front of them */
    if (e->wc->bind_thread) e->wc->bind_thread(e->wc, ca->kind == 2 ? 2 : 1);
    int last_was_sync = 0;
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        job *start = NULL;
        /* the oldest queued job that may start: one that generates takes a
         * slot of the step batch (--max-batch), after the paused
         * generations whose clients read again; an OpenSession or an
         * Append without generation never waits for one */
        if (do_starts) {
            const int room = slots_used_locked(e) + e->n_wanting < e->lim.max_batch;
            for (job *j = e->jobs; j; j = j->next)
                if (j->phase == J_QUEUED && !j->cancel && (room || !j->generate))
                    start = j; /* the list is LIFO: last = oldest */
        }
        /* syncs and starts alternate when both wait: a stream of syncs
         * (long contexts at their boundaries) must not starve admission */
        uint64_t qid = 0;
        if (do_syncs && tc_sched_sync_queued(e->sched, ca->pair) > 0 && !(start && last_was_sync) &&
            tc_sched_sync_next(e->sched, ca->pair, tc_now_s(), &qid, 1) == 1) {
            last_was_sync = 1;
            dsess *s = NULL;
            for (int i = 0; i < e->n_sess && !s; i++)
                if (e->sess[i]->qid == qid) s = e->sess[i];
            TC_ASSERT(s, "engine: a queued sync of no session");
            e->n_sync_queued--;
            tc_metric_set(TC_G_sync_queue_depth, e->n_sync_queued);
            job *j = find_job(e, s->busy_job);
            if (j && (j->cancel || e->sink.deadline_left(j->user) <= 0)) {
                /* its generation was cancelled (or expired) before the
                 * sync thread took the sync out of the queue: not
                 * started at all, the session left due (as that drop) */
                tc_sched_sync_done(e->sched, s->qid, tc_now_s());
                s->syncing = 0;
                pthread_cond_broadcast(&e->cv);
                continue;
            }
            tc_metric_set(TC_G_syncs_running, ++e->n_sync_running);
            pthread_mutex_unlock(&e->mu);
            double t0 = tc_now_s();
            /* the generation waiting for it was cancelled or ran past its
             * deadline: the worker stops (the session stays due; a later
             * request's step queues the sync again) */
            job_ref ref = {e, j};
            tc_cancel_hook prev = tc_cancel_arm(j && e->wc->cancellable ? job_gone : NULL, &ref);
            tc_status st = e->wc->sync(e->wc, s->ws);
            tc_cancel_restore(prev);
            double t1 = tc_now_s();
            pthread_mutex_lock(&e->mu);
            tc_metric_set(TC_G_syncs_running, --e->n_sync_running);
            pthread_mutex_unlock(&e->mu);
            char why[256] = "";
            if (st == TC_ERR_CANCELLED) {
                TC_LOG(TC_LOG_INFO, "engine", "sync of %s stopped: %s", s->id, tc_error_get() ? tc_error_get() : "cancelled");
                tc_metric_inc(TC_M_cancelled_syncs_total, 1);
                pthread_mutex_lock(&e->mu);
                tc_sched_sync_done(e->sched, s->qid, t1);
                s->syncing = 0;
                if (j && !j->cancel) j->cancel = 1, j->cancel_code = 4; /* the predicate saw the deadline */
                pthread_cond_broadcast(&e->cv);
                continue;
            }
            if (st != TC_OK) {
                snprintf(why, sizeof why, "%s", tc_error_get() ? tc_error_get() : tc_status_str(st));
                TC_LOG(TC_LOG_ERROR, "engine", "sync of %s failed: %s", s->id, why);
            }
            tc_metric_observe(TC_H_sync_duration_seconds, t1 - t0);
            tc_metric_observe(TC_H_boundary_stall_seconds, t1 - s->boundary_t0);
            tc_metric_inc(TC_M_syncs_total, 1);
            refresh_stats(e, s);
            pthread_mutex_lock(&e->mu);
            if (j) j->sync_s += t1 - t0;
            if (s->st.length > 0) /* seconds per history token, smoothed: the next deadlines */
                e->sync_s_per_tok = 0.8 * e->sync_s_per_tok + 0.2 * (t1 - t0) / (double)s->st.length;
            tc_sched_sync_done(e->sched, s->qid, t1);
            s->syncing = 0;
            /* a sync that keeps failing (a worker that answers with an
             * error, not one that is gone: those calls wait for its
             * restart) ends the generation with the error instead of
             * retrying it forever while the client waits */
            s->sync_failures = st == TC_OK ? 0 : s->sync_failures + 1;
            if (s->sync_failures >= TC_SYNC_TRIES && j && !j->cancel) {
                j->cancel = 1;
                j->cancel_code = 13;
                snprintf(j->err, sizeof j->err, "sync failed %d times: %s", s->sync_failures, why);
                s->sync_failures = 0;
            }
            pthread_cond_broadcast(&e->cv);
            continue;
        }
        if (start) {
            last_was_sync = 0;
            start->phase = J_STARTING;
            e->n_queued--;
            e->n_starting++;
            gauges_locked(e);
            pthread_mutex_unlock(&e->mu);
            start_job(e, start);
            pthread_mutex_lock(&e->mu);
            continue;
        }
        pthread_cond_wait(&e->cv, &e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* Backpressure on running job j, under mu: 0 while it may not step -- its
 * client has --stream-queue messages unread (paused; past
 * TC_SLOT_RELEASE_S its slot of --max-batch goes to queued work), or it
 * reads again but no slot is free (it goes before new requests). */
static int keeps_slot_locked(tc_engine *e, job *j) {
    const double now = tc_now_s();
    if (e->sink.backlog(j->user) >= (size_t)e->lim.stream_queue) {
        if (j->wants_slot) { /* the slot it waited for may go to a start */
            j->wants_slot = 0;
            e->n_wanting--;
            gauges_locked(e);
            pthread_cond_broadcast(&e->cv);
        }
        if (j->behind_since == 0) j->behind_since = now;
        else if (!j->slotless && now - j->behind_since >= TC_SLOT_RELEASE_S) {
            j->slotless = 1;
            e->n_slotless++;
            gauges_locked(e);
            pthread_cond_broadcast(&e->cv); /* a start may take the slot */
        }
        return 0;
    }
    j->behind_since = 0;
    if (!j->slotless) return 1;
    if (slots_used_locked(e) >= e->lim.max_batch) {
        if (!j->wants_slot) j->wants_slot = 1, e->n_wanting++, gauges_locked(e);
        return 0;
    }
    if (j->wants_slot) j->wants_slot = 0, e->n_wanting--;
    j->slotless = 0;
    e->n_slotless--;
    gauges_locked(e);
    return 1;
}

/* A generation thread: the batched hit steps of its worker pair's running
 * generations (every generation with one pair), and the housekeeping any
 * of them finds due: idle sessions, cancelled jobs. */
static void *engine_thread(void *arg) {
    struct gen_arg *ga = arg;
    tc_engine *e = ga->e;
    int cap = e->lim.max_batch;
    job **batch = calloc((size_t)cap, sizeof *batch);
    tc_wc_session **bs = calloc((size_t)cap, sizeof *bs);
    int32_t *bt = calloc((size_t)cap, sizeof *bt);
    tc_sampler **bsmp = calloc((size_t)cap, sizeof *bsmp);
    const int K = e->wc->step_multi && e->lim.multi_step > 1 ? e->lim.multi_step : 1;
    int32_t *bnext = calloc((size_t)cap * K, sizeof *bnext);
    tc_wc_burst *bb = calloc((size_t)cap, sizeof *bb);
    int *bcnt = calloc((size_t)cap, sizeof *bcnt);
    /* each session's outcome: one whose own part failed (its inline sync)
     * ends alone, the rest of the batch steps on */
    tc_row_status *brow = calloc((size_t)cap, sizeof *brow);
    /* cancelled jobs ended per pass (more wait for the next pass: running
     * jobs can outnumber --max-batch, paused ones holding no slot) */
    const int dcap = e->lim.max_batch + e->lim.max_queued + 1;
    job **dead = calloc((size_t)dcap, sizeof *dead);
    TC_ASSERT(batch && bs && bt && bsmp && bnext && bb && bcnt && brow && dead, "engine: out of memory");
    if (e->wc->bind_thread) e->wc->bind_thread(e->wc, 0);
    ga->busy_t0 = tc_now_s();
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        /* idle sessions expire */
        if (tc_now_s() >= e->next_trim) { /* hand freed heap pages back (glibc keeps them otherwise) */
            e->next_trim = tc_now_s() + 10.0;
            pthread_mutex_unlock(&e->mu);
            malloc_trim(0);
            pthread_mutex_lock(&e->mu);
            continue;
        }
        if (e->lim.idle_timeout_s > 0 && tc_now_s() >= e->next_idle_check) {
            e->next_idle_check = tc_now_s() + 1.0;
            int64_t lim_ms = tc_wall_ms() - (int64_t)(e->lim.idle_timeout_s * 1000);
            for (int i = e->n_sess - 1; i >= 0; i--)
                if (!e->sess[i]->busy_job && !e->sess[i]->pins && e->sess[i]->last_used_ms < lim_ms) {
                    TC_LOG(TC_LOG_INFO, "engine", "session %s idle, closed", e->sess[i]->id);
                    sess_remove_locked(e, e->sess[i], 1);
                }
        }
        /* cancelled jobs and expired deadlines end first */
        int nd = 0;
        for (job *j = e->jobs; j && nd < dcap; j = j->next) {
            if (!j->cancel && !j->claimed && e->sink.deadline_left(j->user) <= 0) {
                j->cancel = 1;
                j->cancel_code = 4;
            }
            /* a cancelled job whose sync still waits in the queue (not
             * popped, so no thread runs it): out of the queue, the session
             * left due -- it no longer waits behind other sessions' syncs */
            if (j->cancel && j->s && j->s->syncing && tc_sched_state(e->sched, j->s->qid) == TC_SS_AT_BOUNDARY &&
                tc_sched_transition(e->sched, j->s->qid, TC_SS_SYNCING) == TC_OK &&
                tc_sched_transition(e->sched, j->s->qid, TC_SS_GENERATING) == TC_OK) {
                j->s->syncing = 0;
                e->n_sync_queued--;
                tc_metric_set(TC_G_sync_queue_depth, e->n_sync_queued);
            }
            /* the context thread owns STARTING jobs and syncing sessions,
             * a generation thread the jobs of its step */
            if (j->cancel && !j->claimed && j->phase != J_STARTING && !(j->s && j->s->syncing)) {
                j->claimed = 1;
                dead[nd++] = j;
            }
        }
        if (nd) {
            pthread_mutex_unlock(&e->mu);
            for (int i = 0; i < nd; i++) {
                job *j = dead[i];
                if (j->phase == J_QUEUED) { /* never started: a session it opened goes with it */
                    start_failed(e, j, j->cancel_code, j->cancel_code == 14 ? "server shutting down"
                                                       : j->cancel_code == 4 ? "deadline exceeded" : "cancelled");
                } else if (j->cancel_code == 13) { /* a failure, not a cancel (the syncs above) */
                    if (j->s) j->s->pending = j->next_tok;
                    finish_job(e, j, TC_FINISH_ERROR, j->err);
                } else {
                    if (j->s) j->s->pending = j->next_tok; /* keep what the client saw */
                    tc_metric_inc(TC_M_cancelled_steps_total, 1);
                    finish_job(e, j, TC_FINISH_CANCELLED,
                               j->cancel_code == 4 ? "deadline exceeded"
                               : j->cancel_code == 14 ? "server shutting down" : "cancelled");
                }
            }
            pthread_mutex_lock(&e->mu);
            continue;
        }
        /* the batch: running generations whose client keeps up; a session
         * whose next token starts a window leaves it for its sync */
        int B = 0;
        for (job *j = e->jobs; j && B < cap; j = j->next) {
            if (j->phase != J_RUNNING || j->s->syncing || j->claimed) continue;
            tc_wc_session_stats st = {0};
            e->wc->stats(e->wc, j->s->ws, &st);
            if (e->n_gen > 1 && st.pair != ga->pair) continue; /* another pair's thread steps it */
            if (!keeps_slot_locked(e, j)) continue;
            if (st.sync_due && e->lim.overlap_syncs && st.length > e->lim.sync_inline_max) {
                dsess *s = j->s;
                double now = tc_now_s();
                if (tc_sched_state(e->sched, s->qid) != TC_SS_GENERATING)
                    tc_sched_transition(e->sched, s->qid, TC_SS_GENERATING);
                /* its sync waits in its pair's queue, for that pair's thread */
                if (e->n_pairs > 1 && tc_sched_pair_of(e->sched, s->qid) != st.pair &&
                    tc_sched_move(e->sched, s->qid, st.pair) != TC_OK)
                    TC_LOG(TC_LOG_ERROR, "engine", "scheduler: %s", tc_error_get());
                if (tc_sched_transition(e->sched, s->qid, TC_SS_AT_BOUNDARY) != TC_OK ||
                    tc_sched_sync_enqueue(e->sched, s->qid, now, now + e->sync_s_per_tok * (double)st.length) != TC_OK) {
                    TC_LOG(TC_LOG_ERROR, "engine", "scheduler: %s; syncing %s inline", tc_error_get(), s->id);
                    j->claimed = 1;
                    batch[B++] = j;
                    continue;
                }
                s->syncing = 1;
                s->boundary_t0 = now;
                e->n_sync_queued++;
                tc_metric_set(TC_G_sync_queue_depth, e->n_sync_queued);
                pthread_cond_broadcast(&e->cv);
                continue;
            }
            if (st.sync_due) { /* --no-overlap-syncs: the step syncs it inline */
                tc_metric_inc(TC_M_syncs_total, 1);
                tc_metric_observe(TC_H_boundary_stall_seconds, 0);
            }
            j->claimed = 1;
            batch[B++] = j;
        }
        double tnow = tc_now_s();
        if (tnow - ga->busy_t0 >= 1.0) { /* busy fraction over the last second or so: the threads' mean */
            ga->ratio = ga->busy_s / (tnow - ga->busy_t0);
            ga->busy_s = 0;
            ga->busy_t0 = tnow;
            double sum = 0;
            for (int g = 0; g < e->n_gen; g++) sum += e->gen[g].ratio;
            tc_metric_set(TC_G_generation_worker_busy_ratio, sum / e->n_gen);
        }
        if (B == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&e->mu);
        int n_kept = 0; /* jobs of the batch still running after it: unclaimed below */
        if (B > 0) {
            double tb0 = tc_now_s();
            for (int i = 0; i < B; i++) {
                bs[i] = batch[i]->s->ws;
                bt[i] = batch[i]->next_tok;
            }
            for (int i = 0; i < B; i++) bsmp[i] = &batch[i]->smp;
            /* multi-step: each session's run is cut where the engine would
             * end it anyway (max_tokens; EOS and stop ids on the worker);
             * stop strings are matched on text here, so they step singly */
            int multi = 0;
            for (int i = 0; i < B && K > 1; i++) {
                job *j = batch[i];
                int64_t left = j->max_tokens - j->generated;
                bb[i].max_steps = j->n_stop ? 1 : (int)(left < K ? (left > 1 ? left : 1) : K);
                bb[i].stop = j->stop_ids;
                bb[i].n_stop = j->n_stop_ids + !j->ignore_eos;
                multi |= bb[i].max_steps > 1;
            }
            tc_status st;
            if (multi) st = e->wc->step_multi(e->wc, bs, bt, B, bsmp, bb, e->lim.multi_step_s, bnext, K, bcnt, brow);
            else {
                st = e->wc->step(e->wc, bs, bt, B, bsmp, bnext, NULL, brow);
                for (int i = B - 1; i >= 0; i--) bnext[(size_t)i * K] = bnext[i], bcnt[i] = 1;
            }
            int n_steps = 1; /* batched hit steps: a multi-step call made as many as its longest run */
            for (int i = 0; i < B && st == TC_OK; i++)
                if (brow[i].st == TC_OK) n_steps = bcnt[i] > n_steps ? bcnt[i] : n_steps;
            tc_metric_inc(TC_M_steps_total, n_steps);
            char why[sizeof brow[0].msg];
            snprintf(why, sizeof why, "%s", st == TC_OK ? "" : tc_error_get() ? tc_error_get() : "step failed");
            for (int i = 0; i < B; i++) {
                job *j = batch[i];
                batch[i] = NULL;
                const tc_status sti = st != TC_OK ? st : brow[i].st; /* the call's, or this session's own */
                if (sti != TC_OK) {
                    j->s->pending = j->next_tok;
                    pthread_mutex_lock(&e->mu);
                    const int draining = e->draining;
                    if (draining && sti == TC_ERR_IO) j->cancel_code = 14;
                    pthread_mutex_unlock(&e->mu);
                    if (draining && sti == TC_ERR_IO) {
                        /* a worker gone at shutdown (its waits abandoned): cut
                         * like the drain cuts, so the request can resume */
                        finish_job(e, j, TC_FINISH_CANCELLED, "server shutting down (a worker is gone)");
                    } else {
                        if (st == TC_OK)
                            TC_LOG(TC_LOG_WARN, "engine", "session %s: its step failed, the rest of the batch of %d stepped: %s",
                                   j->s->id, B, brow[i].msg);
                        finish_job(e, j, TC_FINISH_ERROR, st != TC_OK ? why : brow[i].msg[0] ? brow[i].msg : "step failed");
                    }
                    continue;
                }
                refresh_stats(e, j->s);
                const int32_t *toks = bnext + (size_t)i * K;
                int used = 0;
                tc_finish fin = emit_tokens(e, j, toks, bcnt[i], &used);
                if (fin != TC_FINISH_NONE && used == 0) { /* the journal refused them: the session closes */
                    finish_job(e, j, fin, NULL);
                } else if (fin != TC_FINISH_NONE) {
                    j->s->pending = toks[used - 1];
                    if (used < bcnt[i]) { /* the run went past the end: those tokens were never sent */
                        tc_status tst = e->wc->truncate ? e->wc->truncate(e->wc, j->s->ws, j->s->st.length - (bcnt[i] - used))
                                                        : TC_FAIL(TC_ERR_INTERNAL, "worker cannot take tokens back");
                        if (tst != TC_OK) { /* the workers hold tokens nobody saw: closed, the journal keeps it */
                            TC_LOG(TC_LOG_ERROR, "engine",
                                   "session %s: %s: closed until a restart restores it from the journal", j->s->id,
                                   tc_error_get());
                            pthread_mutex_lock(&e->mu);
                            j->s->close_when_idle = 1;
                            j->s->keep_journal = 1;
                            pthread_mutex_unlock(&e->mu);
                        }
                        refresh_stats(e, j->s);
                    }
                    finish_job(e, j, fin, NULL);
                } else {
                    j->next_tok = toks[bcnt[i] - 1];
                    batch[n_kept++] = j; /* the others ended: freed */
                }
            }
            ga->busy_s += tc_now_s() - tb0;
        }
        pthread_mutex_lock(&e->mu);
        for (int i = 0; i < n_kept; i++) batch[i]->claimed = 0; /* cancelled meanwhile: ended by the pass below */
    }
    pthread_mutex_unlock(&e->mu);
    free(batch);
    free(bs);
    free(bt);
    free(bsmp);
    free(bnext);
    free(bb);
    free(bcnt);
    free(brow);
    free(dead);
    return NULL;
}

/* tc_engine_start failed: stops and joins the n_gen generation and n_ctx
 * context threads it started, frees the engine. */
static void start_undo(tc_engine *e, int n_gen, int n_ctx) {
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n_gen; i++) pthread_join(e->gen[i].th, NULL);
    for (int i = 0; i < n_ctx; i++) pthread_join(e->ctx[i].th, NULL);
    reaper_stop(e);
    tc_sched_free(e->sched);
    free(e->ctx);
    free(e->gen);
    free(e);
}

tc_status tc_engine_start(tc_engine **out, tc_worker_client *wc, struct tc_bpe *bpe, const tc_engine_limits *lim,
                          const tc_engine_sink *sink) {
    tc_engine *e = calloc(1, sizeof *e);
    if (!e) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&e->cv, &ca);
    pthread_cond_init(&e->idle_cv, &ca);
    pthread_cond_init(&e->reap_cv, &ca);
    e->wc = wc;
    e->bpe = bpe;
    e->lim = *lim;
    if (e->lim.max_batch < 1) e->lim.max_batch = 1;
    if (e->lim.max_session_tokens <= 0 || e->lim.max_session_tokens > TC_SESSION_TOKENS_MAX)
        e->lim.max_session_tokens = TC_SESSION_TOKENS_MAX;
    if (e->lim.stream_queue < 1) e->lim.stream_queue = 1;
    e->sink = *sink;
    e->V = wc->cfg->vocab_size;
    e->sync_s_per_tok = 5e-6;
    /* the scheduler preallocates for its limits: the engine's own */
    e->n_pairs = wc->n_pairs > 1 ? wc->n_pairs : 1;
    tc_sched_limits sl = {e->lim.max_sessions > 0 ? e->lim.max_sessions : 1,
                          e->lim.max_sessions > 0 ? e->lim.max_sessions : 1, 0, 1, 0, e->n_pairs};
    if (tc_sched_new(&e->sched, &sl) != TC_OK) {
        free(e);
        return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    }
    if (bpe) {
        e->piece_cap = tc_bpe_stream_max_out(bpe) + 16;
    }
    e->reaper_on = pthread_create(&e->reaper, NULL, reaper_thread, e) == 0;
    if (!e->reaper_on) TC_LOG(TC_LOG_WARN, "engine", "no reaper thread: worker session copies are freed inline");
    e->next_idle_check = tc_now_s() + 1.0;
    e->next_trim = tc_now_s() + 10.0;
    e->n_gen = e->n_pairs;
    e->gen = calloc((size_t)e->n_gen, sizeof *e->gen);
    int n_gen = 0;
    if (e->gen) {
        for (int i = 0; i < e->n_gen; i++) e->gen[i].e = e, e->gen[i].pair = i;
        while (n_gen < e->n_gen && pthread_create(&e->gen[n_gen].th, NULL, engine_thread, &e->gen[n_gen]) == 0)
            n_gen++;
    }
    if (n_gen < e->n_gen) {
        start_undo(e, n_gen, 0);
        return TC_FAIL(TC_ERR_INTERNAL, "cannot start the engine's generation threads");
    }
    const int split = wc->ctx_threads >= 2;
    e->n_ctx = split ? 2 * e->n_pairs : 1; /* [0, n_pairs): starts; then one sync thread a pair */
    e->ctx = calloc((size_t)e->n_ctx, sizeof *e->ctx);
    int started = 0;
    if (e->ctx) {
        for (int i = 0; i < e->n_ctx; i++)
            e->ctx[i] = (struct ctx_arg){e, !split ? 0 : i < e->n_pairs ? 2 : 1, i < e->n_pairs ? 0 : i - e->n_pairs, 0};
        while (started < e->n_ctx && pthread_create(&e->ctx[started].th, NULL, context_thread, &e->ctx[started]) == 0)
            started++;
    }
    if (started < e->n_ctx) {
        start_undo(e, e->n_gen, started);
        return TC_FAIL(TC_ERR_INTERNAL, "cannot start the context thread");
    }
    *out = e;
    return TC_OK;
}

void tc_engine_cancel_all(tc_engine *e) {
    pthread_mutex_lock(&e->mu);
    for (job *j = e->jobs; j; j = j->next)
        if (!j->cancel) {
            j->cancel = 1;
            j->cancel_code = 14;
        }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void tc_engine_quiesce(tc_engine *e) {
    if (!e) return;
    tc_engine_drain(e);
    tc_engine_cancel_all(e);
    pthread_mutex_lock(&e->mu);
    /* and every done callback returned: the service drops its call
     * references there, which must happen before the RPC server goes */
    while (e->jobs || e->n_finishing) pthread_cond_wait(&e->idle_cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

void tc_engine_stop(tc_engine *e) {
    if (!e) return;
    /* let the loop end every job first, then stop it */
    tc_engine_quiesce(e);
    pthread_mutex_lock(&e->mu);
    while (e->jobs) pthread_cond_wait(&e->idle_cv, &e->mu); /* none can start: draining */
    e->stop = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->n_gen; i++) pthread_join(e->gen[i].th, NULL);
    for (int i = 0; i < e->n_ctx; i++) pthread_join(e->ctx[i].th, NULL);
    free(e->ctx);
    free(e->gen);
    pthread_mutex_lock(&e->mu);
    while (e->n_sess) sess_remove_locked(e, e->sess[e->n_sess - 1], 0); /* the journal keeps them */
    pthread_mutex_unlock(&e->mu);
    reaper_stop(e); /* every copy given back before the caller frees the workers */
    free(e->sess);
    tc_sched_free(e->sched);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_cond_destroy(&e->idle_cv);
    pthread_cond_destroy(&e->reap_cv);
    free(e);
}

static int refuse(char *msg, size_t n, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int refuse(char *msg, size_t n, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, n, fmt, ap);
    va_end(ap);
    /* refused at admission (invalid, unknown or busy session, overloaded,
     * draining) is "rejected"; only an internal failure is an "error" */
    tc_metric_inc(code == 13 ? TC_M_requests_total_error : TC_M_requests_total_rejected, 1);
    return code;
}

int tc_engine_prepare(tc_engine *e, const tc_job_spec *sp, int32_t **toks_out, size_t *nt_out, char *msg,
                      size_t msglen) {
    const tc_model_config *c = e->wc->cfg;
    int32_t *toks = NULL;
    size_t nt = 0;
    *toks_out = NULL, *nt_out = 0;
    if (sp->n_tokens > 0 && sp->text_len > 0)
        return refuse(msg, msglen, 3, "prompt: set text or token_ids, not both");
    if (sp->text_len > 0) {
        if (!e->bpe) return refuse(msg, msglen, 3, "text: this model has no tokenizer; send token_ids");
        if (tc_bpe_encode(e->bpe, sp->text, sp->text_len, &toks, &nt) != TC_OK)
            return refuse(msg, msglen, 3, "text: %s", tc_error_get() ? tc_error_get() : "cannot tokenize");
        for (size_t i = 0; i < nt; i++)
            if (toks[i] >= c->vocab_size) {
                int r = refuse(msg, msglen, 3, "text: token %d of the tokenizer is outside the model's vocab_size %d",
                               toks[i], c->vocab_size);
                free(toks);
                return r;
            }
    } else if (sp->n_tokens > 0) {
        for (int64_t i = 0; i < sp->n_tokens; i++)
            if (sp->tokens[i] < 0 || sp->tokens[i] >= c->vocab_size)
                return refuse(msg, msglen, 3, "token_ids[%lld]: %d is outside the vocabulary [0, %d)", (long long)i,
                              sp->tokens[i], c->vocab_size);
        toks = malloc((size_t)sp->n_tokens * 4);
        if (!toks) return refuse(msg, msglen, 13, "out of memory");
        memcpy(toks, sp->tokens, (size_t)sp->n_tokens * 4);
        nt = (size_t)sp->n_tokens;
    }
    if ((int64_t)nt > e->lim.max_session_tokens) { /* too long for any session: refused before it queues */
        free(toks);
        return refuse(msg, msglen, 3, "prompt: %zu tokens, over --max-session-tokens %lld", nt,
                      (long long)e->lim.max_session_tokens);
    }
    *toks_out = toks, *nt_out = nt;
    return 0;
}

int tc_engine_submit(tc_engine *e, const tc_job_spec *sp, uint64_t *job_id, char *rid_out, char *msg, size_t msglen) {
    int32_t *toks;
    size_t nt;
    const int code = tc_engine_prepare(e, sp, &toks, &nt, msg, msglen);
    return code ? code : tc_engine_submit_prepared(e, sp, toks, nt, job_id, rid_out, msg, msglen);
}

int tc_engine_submit_prepared(tc_engine *e, const tc_job_spec *sp, int32_t *toks, size_t nt, uint64_t *job_id,
                              char *rid_out, char *msg, size_t msglen) {
    const tc_model_config *c = e->wc->cfg;
    job *j = calloc(1, sizeof *j);
    if (!j) {
        free(toks);
        return refuse(msg, msglen, 13, "out of memory");
    }
    j->tokens = toks;
    j->n_tokens = (int64_t)nt;
    j->prompt_tokens = (int64_t)nt;
    j->generate = sp->generate;
    j->user = sp->user;
    j->ignore_eos = sp->ignore_eos;
    j->t_arrive = tc_now_s();
    int code = 0;
    if (sp->generate) {
        if (tc_sampling_validate(&sp->sp) != TC_OK) {
            const char *m = tc_error_get();
            code = refuse(msg, msglen, 3, "sampling.%s", m ? m : "invalid");
            goto reject;
        }
        const int max_tokens = sp->max_tokens_unset ? (TC_MAX_TOKENS_DEFAULT < e->lim.max_tokens ? TC_MAX_TOKENS_DEFAULT
                                                                                                 : e->lim.max_tokens)
                                                    : sp->max_tokens;
        if (max_tokens < 0 || max_tokens > e->lim.max_tokens) {
            code = refuse(msg, msglen, 3, "sampling.max_tokens: %d out of range [0, %d]", sp->max_tokens,
                          e->lim.max_tokens);
            goto reject;
        }
        if (sp->n_stop > 0 && !e->bpe) {
            code = refuse(msg, msglen, 3, "sampling.stop: stop strings need a tokenizer; use stop_token_ids");
            goto reject;
        }
        if (sp->n_stop_ids > TC_MAX_STOP_IDS) {
            code = refuse(msg, msglen, 3, "sampling.stop_token_ids: %d ids, at most %d", sp->n_stop_ids, TC_MAX_STOP_IDS);
            goto reject;
        }
        for (int k = 0; k < sp->n_stop_ids; k++)
            if (sp->stop_ids[k] < 0 || sp->stop_ids[k] >= c->vocab_size) {
                code = refuse(msg, msglen, 3, "sampling.stop_token_ids[%d]: %d out of range [0, %d)", k,
                              (int)sp->stop_ids[k], c->vocab_size);
                goto reject;
            }
        if (sp->n_stop > TC_MAX_STOP_STRINGS) {
            code = refuse(msg, msglen, 3, "sampling.stop: %d strings, at most %d", sp->n_stop, TC_MAX_STOP_STRINGS);
            goto reject;
        }
        for (int k = 0; k < sp->n_stop; k++)
            if (!sp->stop[k][0] || strlen(sp->stop[k]) > 256) {
                code = refuse(msg, msglen, 3, "sampling.stop[%d]: must be 1..256 bytes", k);
                goto reject;
            }
        j->max_tokens = max_tokens;
        if (tc_sampler_init(&j->smp, &sp->sp, c->vocab_size) != TC_OK) {
            code = refuse(msg, msglen, 13, "out of memory");
            goto reject;
        }
        /* the stop ids, then EOS: what ends a multi-step run on the worker */
        j->stop_ids = malloc((size_t)(sp->n_stop_ids + 1) * 4);
        if (!j->stop_ids) { code = refuse(msg, msglen, 13, "out of memory"); goto reject; }
        if (sp->n_stop_ids) memcpy(j->stop_ids, sp->stop_ids, (size_t)sp->n_stop_ids * 4);
        j->n_stop_ids = sp->n_stop_ids;
        j->stop_ids[j->n_stop_ids] = c->eos_token_id;
        if (sp->n_stop) {
            j->stop = calloc((size_t)sp->n_stop, sizeof *j->stop);
            if (!j->stop) { code = refuse(msg, msglen, 13, "out of memory"); goto reject; }
            for (int k = 0; k < sp->n_stop; k++) j->stop[k] = strdup(sp->stop[k]);
            j->n_stop = sp->n_stop;
        }
        if (e->bpe) {
            tc_bpe_stream_init(&j->bs, e->bpe);
            /* the job's own: its tokens are decoded on its pair's generation
             * thread and (first token, resumed replays) on a start thread */
            if (!(j->piece = malloc(e->piece_cap))) { code = refuse(msg, msglen, 13, "out of memory"); goto reject; }
        }
    }
    /* ids go into log lines and the journal: no control characters (a
     * newline in an id would forge a log line), C1 (U+0080..U+009F, NEL
     * among them) included */
    for (int k = 0; k < 2; k++) {
        const char *id = k ? sp->request_id : sp->session_id;
        for (size_t i = 0; id && id[i]; i++) {
            const unsigned char ch = (unsigned char)id[i];
            const int c1 = ch == 0xc2 && (unsigned char)id[i + 1] >= 0x80 && (unsigned char)id[i + 1] <= 0x9f;
            if (ch < 0x20 || ch == 0x7f || c1) {
                code = c1 ? refuse(msg, msglen, 3, "%s: a control character (U+%04X) at byte %zu",
                                   k ? "request_id" : "session_id", (unsigned char)id[i + 1], i)
                          : refuse(msg, msglen, 3, "%s: a control character (0x%02x) at byte %zu",
                                   k ? "request_id" : "session_id", ch, i);
                goto reject;
            }
        }
    }
    pthread_mutex_lock(&e->mu);
    if (e->draining) {
        pthread_mutex_unlock(&e->mu);
        code = refuse(msg, msglen, 14, "server is draining; retry on another replica");
        goto reject;
    }
    if (e->n_queued >= e->lim.max_queued) {
        pthread_mutex_unlock(&e->mu);
        code = refuse(msg, msglen, 8, "too many queued requests (max_queued_requests %d)", e->lim.max_queued);
        goto reject;
    }
    if (e->lim.max_state_bytes > 0) { /* DESIGN §5: admission on state memory; new work waits for room */
        int64_t held = 0;
        for (int i = 0; i < e->n_sess; i++) held += e->sess[i]->st.state_bytes;
        if (held >= e->lim.max_state_bytes) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 8,
                          "sessions hold %lld bytes of state, --max-state-bytes %lld: close sessions or retry later",
                          (long long)held, (long long)e->lim.max_state_bytes);
            goto reject;
        }
    }
    dsess *s = NULL;
    const char *sid = sp->session_id ? sp->session_id : "";
    if (strlen(sid) >= TC_ID_MAX) {
        pthread_mutex_unlock(&e->mu);
        code = refuse(msg, msglen, 3, "session_id: longer than %d bytes", TC_ID_MAX - 1);
        goto reject;
    }
    if (sp->request_id && strlen(sp->request_id) >= TC_ID_MAX) { /* journaled whole: a cut id never resumes */
        pthread_mutex_unlock(&e->mu);
        code = refuse(msg, msglen, 3, "request_id: longer than %d bytes", TC_ID_MAX - 1);
        goto reject;
    }
    /* a request_id names one live request: Abort cancels by it, so a
     * second one under the same id could be cancelled by the first's
     * client (a retry gets it once the first has ended) */
    if (sp->request_id && *sp->request_id)
        for (job *o = e->jobs; o; o = o->next)
            if (!atomic_load(&o->ended) && !o->cancel && !strcmp(o->request_id, sp->request_id)) {
                pthread_mutex_unlock(&e->mu);
                code = refuse(msg, msglen, 6, "request_id: '%s' names a request still running", sp->request_id);
                goto reject;
            }
    if (sp->create || (sp->ephemeral && !*sid)) {
        if (*sid && find_sess(e, sid)) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 6, "session_id: '%s' already exists", sid);
            goto reject;
        }
        if (e->n_sess >= e->lim.max_sessions) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 8, "too many sessions (max_sessions %d)", e->lim.max_sessions);
            goto reject;
        }
        if (sp->copy_from && *sp->copy_from) { /* a fork: its history first, then the request's tokens */
            dsess *from = find_sess(e, sp->copy_from);
            int32_t *all = NULL;
            int64_t nh = 0;
            char m[300];
            const int hc = from ? history_locked(e, from, j->n_tokens, &all, &nh, m, sizeof m) : 5;
            if (hc) {
                pthread_mutex_unlock(&e->mu);
                if (!from) code = refuse(msg, msglen, 5, "copy_from: no open session '%s'", sp->copy_from);
                else code = refuse(msg, msglen, hc, "copy_from: %s", m);
                goto reject;
            }
            from->last_used_ms = tc_wall_ms(); /* a source of forks is in use: not idle */
            if (j->n_tokens) memcpy(all + nh, j->tokens, (size_t)j->n_tokens * 4);
            free(j->tokens);
            j->tokens = all;
            j->n_tokens += nh;
            j->n_copied = nh;
            j->prompt_tokens = j->n_tokens;
        }
        s = sess_add_locked(e, sid);
        if (!s) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 13, "out of memory");
            goto reject;
        }
        s->ephemeral = sp->ephemeral;
        j->created = 1;
        if (e->journal && !s->ephemeral && tc_journal_session_open(e->journal, s->id, s->created_ms) != TC_OK) {
            char m[600];
            snprintf(m, sizeof m, "%s", tc_error_get());
            sess_remove_locked(e, s, 0);
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 13, "%s", m);
            goto reject;
        }
    } else {
        s = find_sess(e, sid);
        if (!s) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 5, "session_id: no open session '%s'", sid);
            goto reject;
        }
        if (s->busy_job) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 9, "session_id: session '%s' is busy with another request", sid);
            goto reject;
        }
        if (s->close_when_idle) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 5, "session_id: session '%s' is closing", sid);
            goto reject;
        }
    }
    /* the same request again after a crash cut it: resume, don't restart */
    if (sp->generate && s->has_resume && sp->request_id && !strcmp(sp->request_id, s->resume.request_id) &&
        s->st.length == s->resume_len) {
        int64_t k = s->resume_len - s->resume.start_len;
        tc_sampler_free(&j->smp);
        if (k < 0 || tc_sampler_init(&j->smp, &s->resume.sp, c->vocab_size) != TC_OK) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 13, "cannot resume request '%s'", sp->request_id);
            goto reject;
        }
        if (s->resume.sp.temperature > 0) /* one draw per sampled token */
            for (int64_t i = 0; i < k; i++) tc_rng_uniform(j->smp.rng);
        j->resume = 1;
        j->max_tokens = s->resume.max_tokens;
        j->ignore_eos = s->resume.ignore_eos;
        free(j->tokens);
        j->tokens = NULL;
        j->n_tokens = j->prompt_tokens = 0;
    }
    j->s = s;
    j->id = ++e->next_job_id;
    s->busy_job = j->id;
    if (sp->request_id && *sp->request_id) snprintf(j->request_id, sizeof j->request_id, "%s", sp->request_id);
    else { /* unique among the live requests, ids clients chose included */
        int taken;
        do {
            snprintf(j->request_id, sizeof j->request_id, "r-%llu-%012llx", (unsigned long long)j->id, id_nonce());
            taken = 0;
            for (job *o = e->jobs; o && !taken; o = o->next) taken = !strcmp(o->request_id, j->request_id);
        } while (taken);
    }
    j->phase = J_QUEUED;
    j->next = e->jobs;
    e->jobs = j;
    e->n_queued++;
    gauges_locked(e);
    *job_id = j->id;
    if (rid_out) snprintf(rid_out, TC_ID_MAX, "%s", j->request_id);
    if (sp->session_id_out) snprintf(sp->session_id_out, TC_ID_MAX, "%s", s->id);
    s->pins += sp->pin != 0;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
reject:
    job_free(j);
    return code;
}

void tc_engine_cancel(tc_engine *e, uint64_t id, int code) {
    pthread_mutex_lock(&e->mu);
    job *j = find_job(e, id);
    if (j && !j->cancel) {
        j->cancel = 1;
        j->cancel_code = code;
        pthread_cond_broadcast(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
}

int tc_engine_abort(tc_engine *e, const char *rid) {
    int found = 0;
    pthread_mutex_lock(&e->mu);
    for (job *j = e->jobs; j; j = j->next)
        if (!strcmp(j->request_id, rid)) {
            if (!j->cancel) { /* one already ending keeps its reason (a deadline, a failed sync) */
                j->cancel = 1;
                j->cancel_code = 1;
            }
            found = 1;
        }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return found;
}

void tc_engine_wake(tc_engine *e) {
    pthread_mutex_lock(&e->mu);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

int tc_engine_session_get(tc_engine *e, const char *id, tc_session_info *out) {
    pthread_mutex_lock(&e->mu);
    dsess *s = find_sess(e, id);
    if (s) sess_info(e, s, out);
    pthread_mutex_unlock(&e->mu);
    return s != NULL;
}

int tc_engine_session_snapshot(tc_engine *e, const char *id, tc_session_info *info, int32_t **tokens, int64_t *n,
                               char *msg, size_t msglen) {
    *tokens = NULL;
    *n = 0;
    pthread_mutex_lock(&e->mu);
    dsess *s = find_sess(e, id);
    int code;
    if (!s) code = 5, snprintf(msg, msglen, "session_id: no open session '%s'", id);
    else {
        char m[300];
        code = history_locked(e, s, 0, tokens, n, m, sizeof m);
        if (code) snprintf(msg, msglen, "session_id: %s", m);
        else {
            sess_info(e, s, info);
            s->last_used_ms = tc_wall_ms();
        }
    }
    pthread_mutex_unlock(&e->mu);
    return code;
}

void tc_engine_session_unpin(tc_engine *e, const char *id) {
    pthread_mutex_lock(&e->mu);
    dsess *s = find_sess(e, id);
    if (s && s->pins > 0) {
        s->pins--;
        s->last_used_ms = tc_wall_ms(); /* its idle time starts when its stream ends */
    }
    pthread_mutex_unlock(&e->mu);
}

int tc_engine_session_close(tc_engine *e, const char *id, tc_session_info *out) {
    pthread_mutex_lock(&e->mu);
    dsess *s = find_sess(e, id);
    if (s) {
        sess_info(e, s, out);
        if (s->busy_job) {
            s->close_when_idle = 1;
            /* forgotten by the journal now, before the reply: a crash
             * before the generation retires must not bring back a session
             * its client closed; what the generation still emits is not
             * journaled (as a Generate's own session) */
            if (e->journal && !s->ephemeral && tc_journal_session_delete(e->journal, s->id) != TC_OK)
                TC_LOG(TC_LOG_ERROR, "engine", "%s", tc_error_get());
            s->ephemeral = 1;
            job *j = find_job(e, s->busy_job);
            if (j) {
                j->cancel = 1;
                j->cancel_code = 1;
            }
            pthread_cond_broadcast(&e->cv);
        } else sess_remove_locked(e, s, 1);
    }
    pthread_mutex_unlock(&e->mu);
    return s != NULL;
}

void tc_engine_counts(tc_engine *e, int *sessions, int *running, int *queued) {
    pthread_mutex_lock(&e->mu);
    *sessions = e->n_sess;
    *running = e->n_running + e->n_starting;
    *queued = e->n_queued;
    pthread_mutex_unlock(&e->mu);
}

void tc_engine_drain(tc_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->draining = 1;
    pthread_mutex_unlock(&e->mu);
}

const tc_engine_limits *tc_engine_get_limits(const tc_engine *e) { return &e->lim; }

int tc_engine_wait_idle(tc_engine *e, double timeout_s) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    double t = (double)dl.tv_sec + dl.tv_nsec * 1e-9 + (timeout_s > 0 ? timeout_s : 0);
    dl.tv_sec = (time_t)t;
    dl.tv_nsec = (long)((t - (double)dl.tv_sec) * 1e9);
    pthread_mutex_lock(&e->mu);
    while (e->jobs && pthread_cond_timedwait(&e->idle_cv, &e->mu, &dl) == 0) {
    }
    int idle = e->jobs == NULL;
    pthread_mutex_unlock(&e->mu);
    return idle;
}

typedef struct {
    tc_engine *e;
    int n;
} restore_ctx;

static tc_status restore_one(void *ud, const char *id, int64_t created_ms, const int32_t *tokens, int64_t n) {
    restore_ctx *rc = ud;
    tc_engine *e = rc->e;
    if (strlen(id) >= TC_ID_MAX) return TC_FAIL(TC_ERR_INVALID, "journal: session id '%.40s...' too long", id);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= e->V)
            return TC_FAIL(TC_ERR_INVALID, "journal: session '%s' holds token %d outside this model's vocabulary (%d);"
                                           " was the journal written by another model?", id, tokens[i], e->V);
    pthread_mutex_lock(&e->mu);
    dsess *s = find_sess(e, id) ? NULL : sess_add_locked(e, id);
    if (s) {
        s->created_ms = created_ms;
        if (n > 0) {
            s->restore = malloc((size_t)n * 4);
            if (!s->restore) {
                sess_remove_locked(e, s, 0);
                pthread_mutex_unlock(&e->mu);
                return TC_FAIL(TC_ERR_NOMEM, "out of memory restoring session '%s'", id);
            }
            memcpy(s->restore, tokens, (size_t)n * 4);
            s->n_restore = n;
            s->st.length = n;
        }
        rc->n++;
    }
    gauges_locked(e);
    pthread_mutex_unlock(&e->mu);
    return TC_OK;
}

static tc_status restore_gen(void *ud, const char *id, const tc_journal_gen *g) {
    tc_engine *e = ud;
    pthread_mutex_lock(&e->mu);
    dsess *s = find_sess(e, id);
    if (s && g->start_len >= 0 && g->start_len <= s->n_restore && g->max_tokens >= 0 &&
        tc_sampling_validate(&g->sp) == TC_OK && g->request_id[0]) {
        s->resume = *g;
        s->has_resume = 1;
        s->resume_len = s->n_restore;
        TC_LOG(TC_LOG_INFO, "engine", "session %s: request %s was cut after %lld tokens; the same request resumes it",
               id, g->request_id, (long long)(s->n_restore - g->start_len));
    } else TC_LOG(TC_LOG_WARN, "engine", "journal: ignoring the unusable cut generation of session '%s'", id);
    pthread_mutex_unlock(&e->mu);
    return TC_OK;
}

tc_status tc_engine_attach_journal(tc_engine *e, tc_journal *j, int *n_restored) {
    e->journal = j;
    restore_ctx rc = {e, 0};
    pthread_mutex_lock(&e->mu);
    e->restoring = 1;
    pthread_mutex_unlock(&e->mu);
    tc_status st = tc_journal_load(j, restore_one, &rc);
    if (st == TC_OK) st = tc_journal_load_gens(j, restore_gen, e);
    pthread_mutex_lock(&e->mu);
    e->restoring = 0;
    /* more sessions than --max-sessions (lowered since they were opened):
     * all are kept -- nothing a client had is dropped -- and the scheduler
     * is widened to hold them; new sessions are refused until closes or
     * expiry bring the count under the limit */
    if (st == TC_OK && e->n_sess > e->lim.max_sessions) {
        TC_LOG(TC_LOG_WARN, "engine", "the journal holds %d sessions, more than --max-sessions %d: all are restored; "
               "new sessions are refused until fewer are open", e->n_sess, e->lim.max_sessions);
        tc_sched_limits sl = {e->n_sess, e->n_sess, 0, 1, 0, e->n_pairs};
        tc_sched *ns = NULL;
        int pair;
        st = tc_sched_new(&ns, &sl);
        for (int i = 0; i < e->n_sess && st == TC_OK; i++) st = tc_sched_admit(ns, e->sess[i]->qid, 0, &pair);
        if (st == TC_OK) {
            tc_sched_free(e->sched);
            e->sched = ns;
        } else tc_sched_free(ns);
    }
    pthread_mutex_unlock(&e->mu);
    if (n_restored) *n_restored = rc.n;
    return st;
}
