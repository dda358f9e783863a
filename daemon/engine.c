/* engine.c — the engine (see engine.h): the session table, jobs and
 * the tokens they send, start/stop, the session API and the journal
 * restore. Admission is engine_submit.c; the threads that drive the
 * workers (starts, syncs, batched hit steps) are engine_threads.c. One
 * mutex guards the table and the job lists; the model runs with it
 * released, on sessions marked busy, so the RPC thread can answer
 * GetSession and admit work while a step or a sync runs. */
#include "engine.h"

#include "../common/fault.h"

#include <errno.h>
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
#include "engine_int.h"
#include "journal.h"
#include "metrics.h"

/* A session closing (close_when_idle: closed while its last job runs,
 * or its start failed) is gone for clients: GetSession answers NOT_FOUND
 * and its id is free for a new OpenSession at once -- a CloseSession's OK
 * followed by an OpenSession of the same id used to meet ALREADY_EXISTS
 * until the old job retired. The closing one lives on until then, found
 * by its job's pointer, and never touches the journal under that id
 * again (ephemeral, or keep_journal). */
dsess *tc_eng_sess_find(tc_engine *e, const char *id) {
    for (int i = 0; i < e->n_sess; i++)
        if (!e->sess[i]->close_when_idle && !strcmp(e->sess[i]->id, id)) return e->sess[i];
    return NULL;
}

/* any session holding id, closing ones included (ids the server makes
 * stay unique among all it holds) */
static int id_held(tc_engine *e, const char *id) {
    for (int i = 0; i < e->n_sess; i++)
        if (!strcmp(e->sess[i]->id, id)) return 1;
    return 0;
}

job *tc_eng_job_find(tc_engine *e, uint64_t id) {
    for (job *j = e->jobs; j; j = j->next)
        if (j->id == id) return j;
    return NULL;
}

void tc_eng_sess_info(tc_engine *e, const dsess *s, tc_session_info *o) { /* mu held */
    memset(o, 0, sizeof *o);
    snprintf(o->id, sizeof o->id, "%s", s->id);
    o->length = s->st.length + (s->pending >= 0);
    o->syncs = s->st.syncs;
    o->state_bytes = s->st.state_bytes;
    o->windows = e->wc->cfg->arch == TC_ARCH_TRANSFORMER ? 0 : o->length / e->wc->cfg->generate_window;
    o->created_ms = s->created_ms;
    o->last_used_ms = s->last_used_ms;
    /* a request that has ended as its client sees it (its last message
     * out) no longer counts: the next one may be sent (it waits the moment
     * until the session is let go of, tc_eng_await_retiring) */
    const job *b = s->busy_job ? tc_eng_job_find(e, s->busy_job) : NULL;
    o->busy = (b && !atomic_load(&b->ended)) || s->next_job;
}

/* A copy of idle session s's whole history (fed, restored from the
 * journal and not yet fed, the pending sampled token) under mu; 0 or a
 * gRPC code with msg; extra more ids of room after them. Idle: no thread
 * touches its worker-side history
 * (a job holds the session busy while it runs). */
int tc_eng_history_locked(tc_engine *e, dsess *s, int64_t extra, int32_t **tokens, int64_t *n, char *msg,
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

void tc_eng_gauges_locked(tc_engine *e) {
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

void *tc_eng_reaper_thread(void *arg) {
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
void tc_eng_reaper_stop(tc_engine *e) {
    pthread_mutex_lock(&e->mu);
    const int on = e->reaper_on;
    e->reap_stop = 1, e->reaper_on = 0;
    pthread_cond_signal(&e->reap_cv);
    pthread_mutex_unlock(&e->mu);
    if (on) pthread_join(e->reaper, NULL);
}

int tc_eng_sessions_open_locked(const tc_engine *e) {
    int n = 0;
    for (int i = 0; i < e->n_sess; i++) n += !e->sess[i]->close_when_idle;
    return n;
}

int tc_eng_session_cap(const tc_engine *e) {
    const int64_t m = e->lim.max_sessions > 0 ? e->lim.max_sessions : 1;
    return (int)(2 * m < (1 << 24) ? 2 * m : (1 << 24));
}

/* caller holds mu; the session must be idle: closed (or expired) for
 * good -- dropped from the journal first, and kept open when the journal
 * cannot drop it (a full disk): a session a client was told is closed
 * must not come back at the next start. TC_OK, or the journal's error
 * (tc_error_get names it) */
tc_status tc_eng_sess_forget_locked(tc_engine *e, dsess *s) {
    if (e->journal && !s->ephemeral) {
        tc_status st = tc_journal_session_delete(e->journal, s->id);
        if (st != TC_OK) return st;
    }
    tc_eng_sess_remove_locked(e, s, 0);
    return TC_OK;
}

/* caller holds mu; the session must be idle. forget: also drop it from
 * the journal (closed or expired, not a shutdown) */
void tc_eng_sess_remove_locked(tc_engine *e, dsess *s, int forget) {
    for (int i = 0; i < e->n_sess; i++)
        if (e->sess[i] == s) {
            e->sess[i] = e->sess[--e->n_sess];
            break;
        }
    if (forget && e->journal && !s->ephemeral && tc_journal_session_delete(e->journal, s->id) != TC_OK)
        TC_LOG(TC_LOG_ERROR, "engine", "%s", tc_error_get());
    if (s->close_retry) e->n_close_retry--;
    if (s->ws) reap_push_locked(e, s->ws);
    tc_sched_close(e->sched, s->qid);
    free(s->restore);
    free(s->logits);
    free(s);
    tc_metric_inc(TC_M_sessions_closed_total, 1);
    tc_eng_gauges_locked(e);
}

/* 48 random bits for an id the server assigns: a client can neither guess
 * another client's request_id (Abort takes any) nor pick it in advance */
unsigned long long tc_eng_id_nonce(void) {
    unsigned long long v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) { /* no entropy yet: clock and address */
        v = (unsigned long long)tc_wall_ms() * 0x9E3779B97F4A7C15ull ^ (unsigned long long)(uintptr_t)&v;
        v ^= (unsigned long long)(tc_now_s() * 1e9) * 0xBF58476D1CE4E5B9ull;
    }
    return v & 0xffffffffffffull;
}

dsess *tc_eng_sess_add_locked(tc_engine *e, const char *id) {
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
        do snprintf(s->id, sizeof s->id, "s-%llu-%012llx", (unsigned long long)++e->next_sess_id, tc_eng_id_nonce());
        while (id_held(e, s->id));
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

void tc_eng_job_free(job *j) {
    free(j->tokens);
    free(j->stop_ids);
    free(j->run_stop);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->stop);
    free(j->held);
    free(j->piece);
    tc_sampler_free(&j->smp);
    free(j->lp);
    free(j);
}

void tc_eng_lp_attach(job *j) {
    j->smp.lp_on = j->logprobs >= 0;
    j->smp.lp_top = j->logprobs;
    j->smp.lp = j->lp;
    j->smp.lp_cap = j->lp_cap;
    j->smp.lp_n = 0;
}

const char *tc_eng_cancel_why(int code) {
    return code == 4    ? "deadline exceeded"
           : code == 14 ? "server shutting down"
           : code == 13 ? "stopped by an internal failure (the server log says which)"
                        : "cancelled";
}

/* queued behind session s's last request (next_job) when s closed: it
 * never starts (the start thread's pass ends it NOT_FOUND). mu held. */
void tc_eng_fail_queued(job *w, const dsess *s) {
    if (!w || w->cancel) return;
    w->cancel = 1;
    w->cancel_code = 5;
    snprintf(w->err, sizeof w->err, "session_id: session '%.*s' was closed before this request started", 180, s->id);
}

/* Unlinks a finished job, releases its session; caller holds mu. Returns
 * the user pointer for the done callback. */
static void snapshots_take_locked(tc_engine *e, dsess *s, uint64_t id);

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
        if (s->busy_job == j->id) { /* the request queued behind it (next_job) takes the session */
            /* first the forks that waited for this request to let go of s
             * take their copies (a request sent after them must not have
             * s first) */
            s->busy_job = 0;
            if (e->snap_waits) snapshots_take_locked(e, s, j->id);
            for (job *f = e->jobs; f; f = f->next)
                if (f->copy_after == j->id && f->phase == J_QUEUED && !f->cancel) {
                    const int fc = tc_eng_fork_copy_locked(e, f, f->err, sizeof f->err);
                    if (fc) f->cancel = 1, f->cancel_code = fc; /* the pass that ends cancelled jobs ends it */
                    else f->err[0] = 0;
                }
            s->busy_job = s->next_job;
            s->next_job = 0;
            job *w = s->busy_job ? tc_eng_job_find(e, s->busy_job) : NULL;
            if (w && (s->ephemeral || s->close_when_idle)) tc_eng_fail_queued(w, s); /* it never starts */
        } else if (s->next_job == j->id) /* a queued one that never started (cancelled) */
            s->next_job = 0;
        s->last_used_ms = tc_wall_ms();
        /* one that closes goes when no request holds it any more */
        if (!s->busy_job && (s->ephemeral || s->close_when_idle)) tc_eng_sess_remove_locked(e, s, !s->keep_journal);
    }
    tc_eng_gauges_locked(e);
    pthread_cond_broadcast(&e->idle_cv);
    pthread_cond_broadcast(&e->cv); /* a slot of the batch is free: a queued job may start */
    void *u = j->user;
    tc_eng_job_free(j);
    return u;
}

void tc_eng_stats_of(const job *j, tc_job_stats *st, int64_t session_len) {
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
    st->seed = j->smp.p.seed;
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

/* Decides what a message of job j carries: tokens toks[0..n) up to the
 * first that ends it (p->m of them), its finish reason and its text.
 * Nothing goes out yet: the journal takes the tokens first. */
static void emit_decide(tc_engine *e, job *j, const int32_t *toks, int n, tc_emit_plan *p) {
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
        /* the eos token that ends the generation is not text (GPT-2's
         * "<|endoftext|>"; vLLM leaves special tokens out too): token_ids
         * still carry it */
        if (e->bpe && fin != TC_FINISH_EOS) {
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
    p->n = n, p->m = m, p->fin = fin, p->out_len = out_len, p->out = out;
}

/* does the message's history go to the journal? (under tc_journal_lock:
 * a close sets ephemeral under it) */
static int emit_journaled(const tc_engine *e, const job *j, const tc_emit_plan *p) {
    return e->journal && !j->s->ephemeral && !j->replaying && p->m > 0;
}

/* A generation's end, before its last message goes out: the last token
 * sent becomes the session's pending one, and tokens a multi-step run fed
 * past the end (over, never sent) are taken back from the workers. Done
 * before the client hears the end, so a GetSession it sends on hearing it
 * reads the length the end left (the job retires later). */
static void end_settle(tc_engine *e, job *j, int32_t last, int over) {
    dsess *s = j->s;
    tc_eng_set_pending(e, s, last);
    if (over <= 0) return;
    const tc_status tst = e->wc->truncate ? e->wc->truncate(e->wc, s->ws, s->st.length - over)
                                          : TC_FAIL(TC_ERR_INTERNAL, "worker cannot take tokens back");
    if (tst != TC_OK) { /* the workers hold tokens nobody saw: closed, the journal keeps it */
        TC_LOG(TC_LOG_ERROR, "engine", "session %s: %s: closed until a restart restores it from the journal", s->id,
               tc_error_get());
        pthread_mutex_lock(&e->mu);
        s->close_when_idle = 1;
        s->keep_journal = 1;
        pthread_mutex_unlock(&e->mu);
    }
    tc_eng_stats_refresh(e, s);
}

/* Sends the message decided in p, or, when the journal refused its tokens
 * (jerr: why), ends the generation with none of them and closes the live
 * session (the journal keeps it as it was). */
static tc_finish emit_send(tc_engine *e, job *j, const int32_t *toks, const tc_emit_plan *p, const char *jerr,
                           int *used) {
    tc_finish fin = p->fin;
    int m = p->m;
    const int n = p->n;
    size_t out_len = p->out_len;
    if (jerr) {
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
    if (fin != TC_FINISH_NONE) tc_eng_stats_of(j, &st, j->s->st.length + 1 - (n - m));
    if (fin != TC_FINISH_NONE && m > 0 && !j->replaying) end_settle(e, j, toks[m - 1], n - m);
    if (fin != TC_FINISH_NONE) atomic_store(&j->ended, 1); /* its client hears the end: await_retiring */
    /* the step's records, one per token it sampled (none re-sent) */
    const tc_logprob *lp = j->smp.lp_on && !j->replaying && m > 0 && j->smp.lp_n >= m ? j->smp.lp : NULL;
    if (j->smp.lp_on && !j->replaying && m > 0 && !lp)
        TC_LOG(TC_LOG_ERROR, "engine", "request %s: %d logprobs recorded for %d tokens: sent without", j->request_id,
               j->smp.lp_n, m);
    j->sink->tokens(j->user, toks, lp, m, p->out, out_len, fin, fin != TC_FINISH_NONE ? &st : NULL, jerr);
    if (fin != TC_FINISH_NONE) j->final_sent = 1; /* tc_eng_job_finish sends no second last message */
    if (fin != TC_FINISH_NONE && e->fault_retire_ms > 0) {
        const struct timespec ts = {e->fault_retire_ms / 1000, (long)(e->fault_retire_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (e->bpe && out_len) {
        memmove(j->held, j->held + out_len, j->held_len - out_len);
        j->held_len -= out_len;
    }
    *used = m;
    return fin;
}

/* Emits tokens toks[0..n) of job j in one message (the thread that holds
 * it: its pair's generation thread, or a start thread for the first; mu not
 * held), up to the first that ends it; *used says how many went out.
 * Returns the finish reason (NONE: keep generating). A token that is
 * fed already but not used (a multi-step run went past the end) is the
 * caller's to take back from the history. */
tc_finish tc_eng_emit_tokens(tc_engine *e, job *j, const int32_t *toks, int n, int *used) {
    tc_emit_plan p;
    emit_decide(e, j, toks, n, &p);
    /* journal before the tokens go out: the client may rely on them */
    char jerr[1024] = "";
    if (e->journal) tc_journal_lock(e->journal); /* a close of the session meanwhile: before or after, not inside */
    if (emit_journaled(e, j, &p) && tc_journal_append(e->journal, j->s->id, toks, p.m) != TC_OK)
        snprintf(jerr, sizeof jerr, "%s", tc_error_get() ? tc_error_get() : "journal write failed");
    if (e->journal) tc_journal_unlock(e->journal);
    return emit_send(e, j, toks, &p, jerr[0] ? jerr : NULL, used);
}

/* tc_eng_emit_tokens for the cnt jobs of one batched step, their tokens
 * journaled in one transaction (one commit a step, not one a session:
 * each commit costs ~35 us, so at batch 256 the commits alone took ~9 ms
 * a step, more than the GPU's step). A failed transaction fails every
 * job's message in it, as each one's own failed write would. */
void tc_eng_emit_batch(tc_engine *e, job **jobs, const int32_t *const *toks, const int *n, int cnt, tc_emit_plan *plans,
                       tc_journal_row *rows, tc_finish *fin, int *used) {
    int nr = 0;
    if (cnt <= 0) return;
    for (int i = 0; i < cnt; i++) emit_decide(e, jobs[i], toks[i], n[i], &plans[i]), plans[i].journaled = 0;
    char jerr[1024] = "";
    if (e->journal) {
        tc_journal_lock(e->journal);
        for (int i = 0; i < cnt; i++)
            if ((plans[i].journaled = emit_journaled(e, jobs[i], &plans[i])))
                rows[nr].id = jobs[i]->s->id, rows[nr].tokens = toks[i], rows[nr].n = plans[i].m, nr++;
        if (nr && tc_journal_append_rows(e->journal, rows, nr) != TC_OK)
            snprintf(jerr, sizeof jerr, "%s", tc_error_get() ? tc_error_get() : "journal write failed");
        tc_journal_unlock(e->journal);
    }
    for (int i = 0; i < cnt; i++)
        fin[i] = emit_send(e, jobs[i], toks[i], &plans[i], jerr[0] && plans[i].journaled ? jerr : NULL,
                           &used[i]);
}

tc_finish tc_eng_emit_token(tc_engine *e, job *j, int32_t tok) {
    int used;
    return tc_eng_emit_tokens(e, j, &tok, 1, &used);
}

void tc_eng_job_finish(tc_engine *e, job *j, tc_finish fin, const char *err) {
    atomic_store(&j->ended, 1); /* its client may hear the end before it is unlinked */
    /* a cancel may still come (the RPC thread's tc_engine_cancel, under mu)
     * until the job is retired below: read once, under mu */
    pthread_mutex_lock(&e->mu);
    const int cancel = j->cancel, cancel_code = j->cancel_code;
    pthread_mutex_unlock(&e->mu);
    /* a generation cut by a shutdown stays resumable; any other end is final */
    if (e->journal) tc_journal_lock(e->journal);
    if (j->generate && j->s && e->journal && !j->s->ephemeral && j->t_prefill > 0 &&
        !(fin == TC_FINISH_CANCELLED && cancel_code == 14) && tc_journal_gen_end(e->journal, j->s->id) != TC_OK) {
        TC_LOG(TC_LOG_ERROR, "engine", "%s", tc_error_get());
        j->s->gen_stale = 1; /* dropped before the session's next job, or that job fails */
    }
    if (e->journal) tc_journal_unlock(e->journal);
    if ((fin == TC_FINISH_CANCELLED || fin == TC_FINISH_ERROR) && !j->final_sent) {
        tc_job_stats st;
        tc_eng_stats_of(j, &st, j->s ? j->s->st.length + (j->s->pending >= 0) : 0);
        j->sink->tokens(j->user, NULL, NULL, 0, "", 0, fin, &st, err);
    }
    const int fc = j->fail_code; /* a start that failed: counted by its status, not as "ok" */
    tc_metric_inc(fc ? (fc == 1    ? TC_M_requests_total_cancelled
                        : fc == 4  ? TC_M_requests_total_deadline
                        : fc == 8  ? TC_M_requests_total_overloaded
                        : fc == 13 || fc == 14 ? TC_M_requests_total_error
                                   : TC_M_requests_total_rejected)
                     : fin == TC_FINISH_ERROR      ? TC_M_requests_total_error
                     : cancel && cancel_code == 4 ? TC_M_requests_total_deadline
                     : cancel                     ? TC_M_requests_total_cancelled
                                                  : TC_M_requests_total_ok,
                  1);
    tc_metric_observe(TC_H_request_duration_seconds, tc_now_s() - j->t_arrive);
    pthread_mutex_lock(&e->mu);
    const tc_engine_sink *sk = j->sink;
    void *u = job_retire_locked(e, j);
    snap_wait *ready = e->snap_ready;
    e->snap_ready = NULL;
    e->n_finishing++;
    pthread_mutex_unlock(&e->mu);
    while (ready) { /* snapshots that waited for it: theirs now */
        snap_wait *w = ready;
        ready = w->next;
        w->cb(w->ud, w->code, w->msg, &w->info, w->tokens, w->n);
        free(w);
    }
    sk->done(u);
    pthread_mutex_lock(&e->mu);
    e->n_finishing--;
    pthread_cond_broadcast(&e->idle_cv);
    pthread_mutex_unlock(&e->mu);
}

/* The session's running request may have ended as its client sees it
 * (ended: its last message went out) and only not yet let go of the
 * session, which it does within one engine step: the retry of a cut
 * generation (a resume, decided on the session as that request leaves
 * it), or a snapshot asked for without a callback, sent as soon as the
 * client hears the end, waits for that here rather than meeting "busy"
 * (the session's own next request queues behind it instead, next_job, a
 * fork takes its copy later, copy_after, and SnapshotSession's copy is
 * handed over later, snap_wait: none holds a thread). It takes moments (the
 * journal's end record, the step's other ends); the caller's thread (the
 * gRPC thread, an OpenAI connection's) waits at most TC_RETIRE_WAIT_MS,
 * under the least --liveness-timeout (2 s): a retirement held up longer
 * (another job's worker call, up to a worker's timeout) leaves the session
 * busy, refused as before. mu held; released while waiting. */
void tc_eng_await_retiring(tc_engine *e, const char *sid) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl); /* idle_cv's clock */
    dl.tv_nsec += (long)(TC_RETIRE_WAIT_MS % 1000) * 1000000L;
    dl.tv_sec += TC_RETIRE_WAIT_MS / 1000 + dl.tv_nsec / 1000000000L;
    dl.tv_nsec %= 1000000000L;
    for (;;) {
        const dsess *s = tc_eng_sess_find(e, sid);
        const job *b = s && s->busy_job ? tc_eng_job_find(e, s->busy_job) : NULL;
        if (!b || !atomic_load(&b->ended)) return;
        if (pthread_cond_timedwait(&e->idle_cv, &e->mu, &dl) == ETIMEDOUT) return;
    }
}

/* Takes fork j's copy of its source's history (copy_src) in front of its
 * own tokens; 0, or a gRPC code with msg (the source closed, or busy with
 * another request). At its submission, or, when that came while the
 * source's request was ending, by a start thread once that request let go
 * of the source (copy_after). mu held. */
int tc_eng_fork_copy_locked(tc_engine *e, job *j, char *msg, size_t msglen) {
    dsess *from = NULL;
    for (int i = 0; i < e->n_sess && !from; i++)
        if (e->sess[i]->qid == j->copy_src && !e->sess[i]->close_when_idle) from = e->sess[i];
    j->copy_after = 0;
    if (!from) {
        snprintf(msg, msglen, "copy_from: the session was closed before the copy");
        return 5;
    }
    int32_t *all = NULL;
    int64_t nh = 0;
    char m[300];
    const int hc = tc_eng_history_locked(e, from, j->n_tokens, &all, &nh, m, sizeof m);
    if (hc) {
        snprintf(msg, msglen, "copy_from: %s", m);
        return hc;
    }
    from->last_used_ms = tc_wall_ms(); /* a source of forks is in use: not idle */
    if (j->n_tokens) memcpy(all + nh, j->tokens, (size_t)j->n_tokens * 4);
    free(j->tokens);
    j->tokens = all;
    j->n_tokens += nh;
    j->n_copied = nh;
    j->prompt_tokens = j->n_tokens;
    return 0;
}

/* the session's pending token, set by the thread that holds its job (read
 * under mu by GetSession) */
void tc_eng_set_pending(tc_engine *e, dsess *s, int32_t tok) {
    pthread_mutex_lock(&e->mu);
    s->pending = tok;
    pthread_mutex_unlock(&e->mu);
}

void tc_eng_stats_refresh(tc_engine *e, dsess *s) {
    tc_wc_session_stats st = {0};
    e->wc->stats(e->wc, s->ws, &st);
    pthread_mutex_lock(&e->mu);
    s->st = st;
    s->last_used_ms = tc_wall_ms();
    tc_eng_gauges_locked(e);
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
    /* the logits were the dropped tokens': the last token kept goes back
     * to pending (it is journaled; the next request feeds it again and has
     * logits), or a request without a prompt would find no logits and be
     * refused "prompt: empty" with tokens in the session */
    int64_t keep = s->st.length - j->n_tokens;
    int32_t last = -1;
    if (keep > 0 && e->wc->history) {
        int32_t *h = malloc((size_t)s->st.length * 4);
        if (h && e->wc->history(e->wc, s->ws, h, s->st.length) == s->st.length) last = h[keep - 1], keep--;
        free(h);
    }
    if (e->wc->truncate && e->wc->truncate(e->wc, s->ws, keep) == TC_OK) {
        s->has_logits = 0;
        if (last >= 0) tc_eng_set_pending(e, s, last);
        tc_eng_stats_refresh(e, s);
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
void tc_eng_start_failed(tc_engine *e, job *j, int code, const char *msg) {
    atomic_store(&j->ended, 1); /* a retry under its request_id may come as soon as the client hears */
    pthread_mutex_lock(&e->mu);
    /* a Stream's own session (pinned by it) stays: the stream goes on
     * after a request aborted before it started (its end closes it) */
    if (j->created && !j->s->pins) {
        /* forgotten by the journal now, not when the job retires: a
         * retried OpenSession may open its id again before that */
        if (e->journal) tc_journal_lock(e->journal);
        if (e->journal && !j->s->ephemeral && !j->s->keep_journal &&
            tc_journal_session_delete(e->journal, j->s->id) != TC_OK)
            TC_LOG(TC_LOG_ERROR, "engine", "session %s (its start failed): %s", j->s->id, tc_error_get());
        j->s->ephemeral = 1;
        if (e->journal) tc_journal_unlock(e->journal);
        j->s->close_when_idle = 1;
    }
    pthread_mutex_unlock(&e->mu);
    j->fail_code = code ? code : 2;
    j->sink->failed(j->user, code, msg);
    tc_eng_job_finish(e, j, TC_FINISH_NONE, NULL);
}

/* the journal refused what the workers took: taken back, the job fails */
void tc_eng_journal_refused(tc_engine *e, job *j) {
    char m[600];
    snprintf(m, sizeof m, "%s", tc_error_get());
    unappend(e, j);
    tc_eng_start_failed(e, j, 13, m);
}

/* The predicate a prefill asks between its layers and tiles (armed around
 * the append when the workers can stop one): the job was cancelled or
 * aborted, or its deadline passed. */
int tc_eng_job_gone(void *ud) {
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
    return c || x->j->sink->deadline_left(x->j->user) <= 0;
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
    tc_eng_reaper_stop(e);
    tc_sched_free(e->sched);
    free(e->ctx);
    free(e->gen);
    free(e);
}

tc_status tc_engine_start(tc_engine **out, tc_worker_client *wc, struct tc_bpe *bpe, const tc_engine_limits *lim,
                          const tc_engine_sink *sink) {
    tc_engine *e = calloc(1, sizeof *e);
    if (!e) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    int64_t fco = 0;
    if (tc_fault_env_count("TC_FAULT_ENGINE_WEDGE", 1, &e->fault_wedge) != TC_OK ||
        tc_fault_env_count("TC_FAULT_CANCEL_AFTER_PREFILL", 1000000, &fco) != TC_OK ||
        tc_fault_env_count("TC_FAULT_RETIRE_DELAY_MS", 10000, &e->fault_retire_ms) != TC_OK) {
        free(e); /* the message is tc_fault_env_count's, naming the variable */
        return TC_ERR_INVALID;
    }
    e->fault_cancel_open = fco;
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
    /* twice --max-sessions: sessions closed while a request ran in them
     * stay until it stops, and do not count against the limit meanwhile
     * (tc_eng_sessions_open_locked) */
    const int sched_cap = tc_eng_session_cap(e);
    tc_sched_limits sl = {sched_cap, sched_cap, 0, 1, 0, e->n_pairs};
    if (tc_sched_new(&e->sched, &sl) != TC_OK) {
        free(e);
        return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    }
    if (bpe) {
        e->piece_cap = tc_bpe_stream_max_out(bpe) + 16;
    }
    e->reaper_on = pthread_create(&e->reaper, NULL, tc_eng_reaper_thread, e) == 0;
    if (!e->reaper_on) TC_LOG(TC_LOG_WARN, "engine", "no reaper thread: worker session copies are freed inline");
    e->next_idle_check = tc_now_s() + 1.0;
    e->next_trim = tc_now_s() + 10.0;
    e->n_gen = e->n_pairs;
    e->gen = calloc((size_t)e->n_gen, sizeof *e->gen);
    int n_gen = 0;
    if (e->gen) {
        for (int i = 0; i < e->n_gen; i++) e->gen[i].e = e, e->gen[i].pair = i;
        while (n_gen < e->n_gen && pthread_create(&e->gen[n_gen].th, NULL, tc_eng_generation_thread, &e->gen[n_gen]) == 0)
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
        while (started < e->n_ctx && pthread_create(&e->ctx[started].th, NULL, tc_eng_context_thread, &e->ctx[started]) == 0)
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
    /* a snapshot waits only for a job, and every job has retired: none is
     * left; were one, its call is answered rather than left hanging */
    snap_wait *left = e->snap_waits;
    e->snap_waits = NULL;
    pthread_mutex_unlock(&e->mu);
    while (left) {
        snap_wait *w = left;
        left = w->next;
        TC_LOG(TC_LOG_ERROR, "engine", "a snapshot of %s still waited at shutdown (a bug): answered UNAVAILABLE", w->id);
        w->cb(w->ud, 14, "server shutting down", NULL, NULL, 0);
        free(w);
    }
    for (int i = 0; i < e->n_gen; i++) pthread_join(e->gen[i].th, NULL);
    for (int i = 0; i < e->n_ctx; i++) pthread_join(e->ctx[i].th, NULL);
    free(e->ctx);
    free(e->gen);
    pthread_mutex_lock(&e->mu);
    while (e->n_sess) tc_eng_sess_remove_locked(e, e->sess[e->n_sess - 1], 0); /* the journal keeps them */
    pthread_mutex_unlock(&e->mu);
    tc_eng_reaper_stop(e); /* every copy given back before the caller frees the workers */
    free(e->sess);
    tc_sched_free(e->sched);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_cond_destroy(&e->idle_cv);
    pthread_cond_destroy(&e->reap_cv);
    free(e);
}


void tc_engine_cancel(tc_engine *e, uint64_t id, int code) {
    pthread_mutex_lock(&e->mu);
    job *j = tc_eng_job_find(e, id);
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
    dsess *s = tc_eng_sess_find(e, id);
    if (s) tc_eng_sess_info(e, s, out);
    pthread_mutex_unlock(&e->mu);
    return s != NULL;
}

/* session s's copy and info for a snapshot (s NULL: closed), mu held */
static int snapshot_locked(tc_engine *e, dsess *s, const char *id, tc_session_info *info, int32_t **tokens,
                           int64_t *n, char *msg, size_t msglen) {
    if (!s) {
        snprintf(msg, msglen, "session_id: no open session '%s'", id);
        return 5;
    }
    char m[300];
    const int code = tc_eng_history_locked(e, s, 0, tokens, n, m, sizeof m);
    if (code) snprintf(msg, msglen, "session_id: %s", m);
    else {
        tc_eng_sess_info(e, s, info);
        s->last_used_ms = tc_wall_ms();
    }
    return code;
}

int tc_engine_session_snapshot(tc_engine *e, const char *id, tc_session_info *info, int32_t **tokens, int64_t *n,
                               char *msg, size_t msglen, tc_engine_snapshot_cb later, void *ud) {
    *tokens = NULL;
    *n = 0;
    pthread_mutex_lock(&e->mu);
    dsess *s = tc_eng_sess_find(e, id);
    const job *b = s && s->busy_job ? tc_eng_job_find(e, s->busy_job) : NULL;
    if (later && b && atomic_load(&b->ended) && !s->next_job) { /* taken when b lets go of s */
        snap_wait *w = calloc(1, sizeof *w);
        if (!w) {
            pthread_mutex_unlock(&e->mu);
            snprintf(msg, msglen, "out of memory");
            return 8;
        }
        {
            w->qid = s->qid, w->after = b->id, w->cb = later, w->ud = ud;
            snprintf(w->id, sizeof w->id, "%s", id);
            w->next = e->snap_waits;
            e->snap_waits = w;
            tc_metric_inc(TC_M_queued_behind_total, 1);
            pthread_mutex_unlock(&e->mu);
            return TC_SNAPSHOT_LATER;
        }
    }
    if (!later) {
        tc_eng_await_retiring(e, id);
        s = tc_eng_sess_find(e, id);
    }
    const int code = snapshot_locked(e, s, id, info, tokens, n, msg, msglen);
    pthread_mutex_unlock(&e->mu);
    return code;
}

/* the snapshots waiting for job id to let go of its session s (busy_job 0
 * for now): their copies, onto snap_ready for tc_eng_job_finish to hand
 * over outside mu. mu held. */
static void snapshots_take_locked(tc_engine *e, dsess *s, uint64_t id) {
    for (snap_wait **pp = &e->snap_waits; *pp;) {
        snap_wait *w = *pp;
        if (w->after != id) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        w->code = snapshot_locked(e, s->qid == w->qid && !s->close_when_idle ? s : NULL, w->id, &w->info, &w->tokens,
                                  &w->n, w->msg, sizeof w->msg);
        w->next = e->snap_ready;
        e->snap_ready = w;
    }
}

void tc_engine_session_unpin(tc_engine *e, const char *id, uint64_t key) {
    pthread_mutex_lock(&e->mu);
    dsess *s = tc_eng_sess_find(e, id);
    if (s && s->qid == key && s->pins > 0) {
        s->pins--;
        s->last_used_ms = tc_wall_ms(); /* its idle time starts when its stream ends */
    }
    pthread_mutex_unlock(&e->mu);
}

/* a Stream's own session the journal would not let go at the stream's
 * end: the idle pass closes it once it is idle and the journal agrees
 * (mu held) */
static void mark_close_retry(tc_engine *e, dsess *s) {
    if (s->close_retry) return;
    s->close_retry = 1;
    e->n_close_retry++;
    e->next_idle_check = tc_now_s() + 1.0;
}

/* key 0: whichever session holds id. 1 closed, 0 no such session, -1 the
 * journal could not forget it (err; the session stays open as it was) */
static int session_close(tc_engine *e, const char *id, uint64_t key, tc_session_info *out, char *err, size_t errlen) {
    pthread_mutex_lock(&e->mu);
    dsess *s = tc_eng_sess_find(e, id);
    if (s && key && s->qid != key) s = NULL; /* another session under the same id */
    int rc = s != NULL;
    if (s) {
        tc_eng_sess_info(e, s, out);
        if (s->busy_job) {
            /* forgotten by the journal now, before the reply: a crash
             * before the generation retires must not bring back a session
             * its client closed; what the generation still emits is not
             * journaled (as a Generate's own session) */
            if (e->journal) tc_journal_lock(e->journal); /* no write of its job in between (tc_journal_lock) */
            if (e->journal && !s->ephemeral && tc_journal_session_delete(e->journal, s->id) != TC_OK) {
                snprintf(err, errlen, "%s", tc_error_get());
                tc_journal_unlock(e->journal);
                if (key) { /* a Stream's own at its end: its request stops; the idle pass closes it after */
                    mark_close_retry(e, s);
                    job *j = tc_eng_job_find(e, s->busy_job);
                    if (j && j->queued_behind && j->phase == J_QUEUED) tc_eng_fail_queued(j, s);
                    else if (j && !j->cancel) j->cancel = 1, j->cancel_code = 1; /* an earlier reason stays */
                    if (s->next_job) tc_eng_fail_queued(tc_eng_job_find(e, s->next_job), s);
                    pthread_cond_broadcast(&e->cv);
                }
                pthread_mutex_unlock(&e->mu);
                return -1;
            }
            s->close_when_idle = 1;
            s->ephemeral = 1;
            if (e->journal) tc_journal_unlock(e->journal);
            job *j = tc_eng_job_find(e, s->busy_job);
            /* one that queued behind the last request and has the session
             * now, not started yet, ends as one still queued would */
            if (j && j->queued_behind && j->phase == J_QUEUED) tc_eng_fail_queued(j, s);
            else if (j && !j->cancel) { /* an earlier reason (a deadline, a sync that failed for good) stays */
                j->cancel = 1;
                j->cancel_code = 1;
            }
            if (s->next_job) tc_eng_fail_queued(tc_eng_job_find(e, s->next_job), s); /* queued behind it */
            pthread_cond_broadcast(&e->cv);
        } else if (tc_eng_sess_forget_locked(e, s) != TC_OK) {
            snprintf(err, errlen, "%s", tc_error_get());
            rc = -1;
            if (key) mark_close_retry(e, s); /* a Stream's own: nobody else can close it */
        }
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int tc_engine_session_close(tc_engine *e, const char *id, tc_session_info *out, char *err, size_t errlen) {
    return session_close(e, id, 0, out, err, errlen);
}

int tc_engine_session_close_key(tc_engine *e, const char *id, uint64_t key, tc_session_info *out) {
    char err[300];
    const int rc = key ? session_close(e, id, key, out, err, sizeof err) : 0;
    if (rc < 0) /* a Stream's own session at its end: it stays, and the idle pass closes it when the journal lets it */
        TC_LOG(TC_LOG_ERROR, "engine", "closing session %s at the end of its stream: %s (tried again in 1 s, then "
               "every 30 s)", id, err);
    return rc;
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
    const int dup = tc_eng_sess_find(e, id) != NULL;
    dsess *s = dup ? NULL : tc_eng_sess_add_locked(e, id);
    if (!dup && !s) { /* skipping it would let an OpenSession of that id erase its history */
        pthread_mutex_unlock(&e->mu);
        return TC_FAIL(TC_ERR_NOMEM, "out of memory restoring session '%s'", id);
    }
    if (s) {
        s->created_ms = created_ms;
        if (n > 0) {
            s->restore = malloc((size_t)n * 4);
            if (!s->restore) {
                tc_eng_sess_remove_locked(e, s, 0);
                pthread_mutex_unlock(&e->mu);
                return TC_FAIL(TC_ERR_NOMEM, "out of memory restoring session '%s'", id);
            }
            memcpy(s->restore, tokens, (size_t)n * 4);
            s->n_restore = n;
            s->st.length = n;
        }
        rc->n++;
    }
    tc_eng_gauges_locked(e);
    pthread_mutex_unlock(&e->mu);
    return TC_OK;
}

static tc_status restore_gen(void *ud, const char *id, const tc_journal_gen *g) {
    tc_engine *e = ud;
    pthread_mutex_lock(&e->mu);
    dsess *s = tc_eng_sess_find(e, id);
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

int tc_engine_lock_probe(tc_engine *e, double wait_s) {
    /* timedlock's deadline is on the wall clock: a step of it only makes
     * this one wait longer or shorter -- the lock is taken the moment it
     * is free either way, and the caller measures ages on the monotonic
     * clock. (pthread_mutex_clocklock would say CLOCK_MONOTONIC, but
     * ThreadSanitizer does not see it take the lock.) */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const double t = (double)ts.tv_nsec / 1e9 + wait_s;
    ts.tv_sec += (time_t)t;
    ts.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
    if (pthread_mutex_timedlock(&e->mu, &ts) != 0) return 0;
    pthread_mutex_unlock(&e->mu);
    return 1;
}
