/* engine_threads.c — the threads that drive the workers. Start threads
 * (one a worker pair) take queued jobs: their append / prefill and first
 * token. Sync threads run the syncs of sessions at a window boundary,
 * earliest deadline first. Generation threads (one a worker pair) loop:
 * one batched hit step over every running generation of their pair whose
 * client keeps up (backpressure pauses the others). The model runs with
 * mu released, on sessions marked busy. Not the table or the API:
 * engine.c. */
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
#include "engine_int.h"
#include "journal.h"
#include "metrics.h"

/* A new session's OpenSession cancelled (or past its deadline) while
 * its workers took the prompt: the client will not hear of it, so it is
 * not left behind (counting against --max-sessions until an idle expiry,
 * its id taken: a retry met ALREADY_EXISTS) but closed as a start that
 * failed, before the journal has any of it (nothing to take back after a
 * crash). A cancel later than this, while the reply is on its way, is the
 * RPC's own race. 1: ended here. */
static int open_abandoned(tc_engine *e, job *j) {
    if (!j->created || j->generate) return 0;
    if (e->fault_cancel_open > 0 && atomic_fetch_sub(&e->fault_cancel_open, 1) > 0) {
        pthread_mutex_lock(&e->mu);
        if (!j->cancel) j->cancel = 1, j->cancel_code = 1;
        pthread_mutex_unlock(&e->mu);
    }
    pthread_mutex_lock(&e->mu);
    if (!j->cancel && j->sink->deadline_left(j->user) <= 0) j->cancel = 1, j->cancel_code = 4;
    const int cancel = j->cancel, code = j->cancel_code;
    pthread_mutex_unlock(&e->mu);
    if (!cancel) return 0;
    TC_LOG(TC_LOG_INFO, "engine", "request %s: session %s not opened: its request was %s after its prefill",
           j->request_id, j->s->id, code == 4 ? "past its deadline" : "cancelled");
    tc_eng_start_failed(e, j, code, tc_eng_cancel_why(code));
    return 1;
}

static void start_job(tc_engine *e, job *j) {
    dsess *s = j->s;
    j->t_start = tc_now_s();
    tc_metric_observe(TC_H_request_queue_seconds, j->t_start - j->t_arrive);
    if (!s->ws) {
        /* every worker down at once (restarts): it waits for a pair to be
         * back, as long as its client does */
        job_ref ref = {e, j};
        tc_cancel_hook prev = tc_cancel_arm(e->wc->cancellable ? tc_eng_job_gone : NULL, &ref);
        const tc_status st = e->wc->session_new(e->wc, &s->ws);
        tc_cancel_restore(prev);
        if (st == TC_ERR_CANCELLED) {
            pthread_mutex_lock(&e->mu);
            if (!j->cancel) j->cancel = 1, j->cancel_code = 4; /* not cancelled: past its deadline */
            const int code = j->cancel_code;
            pthread_mutex_unlock(&e->mu);
            tc_eng_start_failed(e, j, code, tc_eng_cancel_why(code));
            return;
        }
        if (st != TC_OK) {
            /* no live worker to place it on (EXHAUSTED / IO: an outage,
             * retryable, UNAVAILABLE) is not memory; the worker's words go
             * to the client */
            char msg[600];
            snprintf(msg, sizeof msg, "cannot open the session on a worker: %s",
                     tc_error_get() ? tc_error_get() : tc_status_str(st));
            tc_eng_start_failed(e, j, st == TC_ERR_EXHAUSTED || st == TC_ERR_IO ? 14 : 13, msg);
            return;
        }
    }
    /* a resumed generation re-sends what it had generated (the client may
     * not have received all of it): tokens [start_len, resume_len) */
    int32_t *replay = NULL;
    int64_t n_replay = 0;
    if (j->resume && s->n_restore >= s->resume_len && s->resume.start_len <= s->resume_len) {
        n_replay = s->resume_len - s->resume.start_len;
        if (!(replay = malloc((size_t)(n_replay ? n_replay : 1) * 4))) { /* still resumable */
            tc_eng_start_failed(e, j, 13, "out of memory for the tokens to resend");
            return;
        }
        if (n_replay) memcpy(replay, s->restore + s->resume.start_len, (size_t)n_replay * 4);
    }
    /* another request: the cut generation is abandoned; or a generation's
     * record the journal could not drop when it ended. Either must go
     * before the history grows: left beside a longer history it would make
     * a retry of that request_id "resume" over the new tokens */
    if (!j->resume && (s->has_resume || s->gen_stale)) {
        if (e->journal && tc_journal_gen_end(e->journal, s->id) != TC_OK) {
            char msg[600];
            snprintf(msg, sizeof msg, "journal: cannot drop the session's last generation record: %s", tc_error_get());
            tc_eng_start_failed(e, j, 13, msg);
            return;
        }
        s->has_resume = s->gen_stale = 0;
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
        tc_eng_start_failed(e, j, 3, msg);
        return;
    }
    if (n > 0) {
        int32_t *feed = j->tokens;
        int32_t *tmp = NULL;
        if (n != j->n_tokens) {
            tmp = malloc((size_t)n * 4);
            if (!tmp) {
                free(replay);
                tc_eng_start_failed(e, j, 13, "out of memory");
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
        tc_cancel_hook prev = tc_cancel_arm(e->wc->cancellable ? tc_eng_job_gone : NULL, &ref);
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
            tc_eng_start_failed(e, j, code, tc_eng_cancel_why(code));
            return;
        }
        if (st != TC_OK) {
            char msg[600];
            snprintf(msg, sizeof msg, "append failed: %s", tc_error_get() ? tc_error_get() : tc_status_str(st));
            free(replay);
            /* TC_ERR_IO: a worker that did not come back — UNAVAILABLE, retryable */
            tc_eng_start_failed(e, j, st == TC_ERR_INVALID ? 3 : st == TC_ERR_IO ? 14 : st == TC_ERR_EXHAUSTED ? 8 : 13, msg);
            return;
        }
        tc_eng_set_pending(e, s, -1);
        s->has_logits = 1;
        free(s->restore);
        s->restore = NULL;
        s->n_restore = 0;
        tc_eng_stats_refresh(e, s);
        if (open_abandoned(e, j)) {
            free(replay);
            return;
        }
        /* the journal takes the tokens once the workers have: a failed
         * prefill leaves nothing behind to resurface after a restart. A new
         * generation journals its prompt with its record, below, in one
         * transaction; everything else here, before any reply */
        const int with_gen = j->generate && !j->resume && s->has_logits;
        if (e->journal) tc_journal_lock(e->journal); /* a close meanwhile: before or after, not inside */
        const int jwrite = e->journal && !s->ephemeral && (j->n_tokens > 0 || j->jopen) && !with_gen;
        const int jfail = jwrite && tc_journal_create(e->journal, s->id, j->jopen ? s->created_ms : -1, j->tokens,
                                                      j->n_tokens, NULL) != TC_OK;
        if (jwrite && !jfail) j->jopen = 0;
        if (e->journal) tc_journal_unlock(e->journal);
        if (jfail) {
            free(replay);
            tc_eng_journal_refused(e, j);
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
        tc_cancel_hook prev = tc_cancel_arm(e->wc->cancellable ? tc_eng_job_gone : NULL, &ref);
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
                tc_eng_start_failed(e, j, code, tc_eng_cancel_why(code));
            else {
                snprintf(msg, sizeof msg, "rebuilding the session's worker copy failed: %s",
                         tc_error_get() ? tc_error_get() : tc_status_str(st));
                tc_eng_start_failed(e, j, st == TC_ERR_IO ? 14 : 13, msg);
            }
            return;
        }
    }
    /* the resumed generation is under way only now: a start that failed
     * above (its prefill cancelled, a worker down) leaves it resumable, so
     * the client's retry under the same request_id resumes it rather than
     * journaling its prompt a second time */
    s->has_resume = 0;
    if (open_abandoned(e, j)) { /* (an empty OpenSession: no prefill above) */
        free(replay);
        return;
    }
    /* a new generation: its prompt and its record, in one transaction,
     * before anything is acknowledged (the appended event below) */
    if (e->journal) tc_journal_lock(e->journal);
    int jfail = 0;
    if (j->generate && !j->resume && s->has_logits && e->journal && !s->ephemeral) {
        tc_journal_gen g;
        memset(&g, 0, sizeof g);
        snprintf(g.request_id, sizeof g.request_id, "%s", j->request_id);
        g.start_len = s->st.length;
        g.sp = j->smp.p;
        g.max_tokens = j->max_tokens;
        g.ignore_eos = j->ignore_eos;
        jfail = tc_journal_create(e->journal, s->id, j->jopen ? s->created_ms : -1, j->tokens, j->n_tokens, &g) != TC_OK;
        if (!jfail) j->jopen = 0;
    }
    /* a session created without tokens (an empty OpenSession): its row alone */
    if (!jfail && j->jopen && e->journal && !s->ephemeral) {
        jfail = tc_journal_create(e->journal, s->id, s->created_ms, NULL, 0, NULL) != TC_OK;
        if (!jfail) j->jopen = 0;
    }
    if (e->journal) tc_journal_unlock(e->journal);
    if (jfail) {
        free(replay);
        tc_eng_journal_refused(e, j);
        return;
    }
    j->t_prefill = tc_now_s();
    if (j->n_tokens > 0 || !j->generate) {
        tc_session_info si;
        pthread_mutex_lock(&e->mu);
        tc_eng_sess_info(e, s, &si);
        pthread_mutex_unlock(&e->mu);
        si.busy = j->generate; /* an append-only job ends here */
        j->sink->appended(j->user, &si, j->n_tokens);
    }
    if (!j->generate) {
        tc_eng_job_finish(e, j, TC_FINISH_NONE, NULL);
        return;
    }
    if (!s->has_logits) {
        free(replay);
        j->fail_code = 3; /* counted rejected, not ok */
        j->sink->failed(j->user, 3, "prompt: empty (give text or token_ids; the session has no tokens yet)");
        tc_eng_job_finish(e, j, TC_FINISH_NONE, NULL);
        return;
    }
    if (j->resume) {
        j->replaying = 1;
        for (int64_t i = 0; i < n_replay; i++) {
            tc_finish f = tc_eng_emit_token(e, j, replay[i]);
            if (f != TC_FINISH_NONE) { /* it had ended, the end not yet journaled */
                free(replay);
                j->replaying = 0;
                tc_eng_job_finish(e, j, f, NULL);
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
        tc_eng_stats_of(j, &st, s->st.length);
        atomic_store(&j->ended, 1); /* its client hears the end: tc_eng_await_retiring */
        j->sink->tokens(j->user, NULL, NULL, 0, "", 0, TC_FINISH_LENGTH, &st, NULL);
        tc_eng_job_finish(e, j, TC_FINISH_NONE, NULL);
        return;
    }
    j->smp.lp_n = 0;
    int32_t tok = tc_sampler_sample(&j->smp, s->logits);
    s->has_logits = 0;
    tc_finish fin = tc_eng_emit_token(e, j, tok);
    if (fin != TC_FINISH_NONE) { /* tok is pending: end_settle */
        tc_eng_job_finish(e, j, fin, NULL);
        return;
    }
    j->next_tok = tok;
    pthread_mutex_lock(&e->mu);
    j->phase = J_RUNNING;
    e->n_starting--;
    e->n_running++;
    tc_eng_gauges_locked(e);
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

void *tc_eng_context_thread(void *arg) {
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
            int expired = 0;
            for (job *j = e->jobs; j; j = j->next) {
                if (j->phase == J_QUEUED && !j->cancel && j->sink->deadline_left(j->user) <= 0) {
                    /* past its deadline while it queued: never started (an
                     * OpenSession's session would be opened for a client
                     * that already gave up); the pass that ends cancelled
                     * jobs ends it */
                    j->cancel = 1, j->cancel_code = 4, expired = 1;
                    continue;
                }
                if (j->phase == J_QUEUED && !j->cancel && j->copy_after) {
                    /* a fork whose source's request was ending: its copy
                     * once that request let go of the source */
                    const dsess *src = NULL;
                    for (int i = 0; i < e->n_sess && !src; i++)
                        if (e->sess[i]->qid == j->copy_src) src = e->sess[i];
                    if (src && src->busy_job == j->copy_after) continue;
                    const int fc = tc_eng_fork_copy_locked(e, j, j->err, sizeof j->err);
                    if (fc) {
                        j->cancel = 1, j->cancel_code = fc, expired = 1; /* the pass that ends cancelled jobs ends it */
                        continue;
                    }
                    j->err[0] = 0;
                }
                /* one queued behind its session's last request
                 * (next_job) starts once that let go of the session */
                if (j->phase == J_QUEUED && !j->cancel && (room || !j->generate) && j->s->busy_job == j->id)
                    start = j; /* the list is LIFO: last = oldest */
            }
            if (expired) pthread_cond_broadcast(&e->cv);
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
            job *j = tc_eng_job_find(e, s->busy_job);
            if (j && (j->cancel || j->sink->deadline_left(j->user) <= 0)) {
                /* its generation was cancelled (or expired) before the
                 * sync thread took the sync out of the queue: not
                 * started at all, the session left due (as that drop;
                 * no sync recorded, no stall) */
                (void)tc_sched_transition(e->sched, s->qid, TC_SS_GENERATING);
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
            tc_cancel_hook prev = tc_cancel_arm(j && e->wc->cancellable ? tc_eng_job_gone : NULL, &ref);
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
                (void)tc_sched_transition(e->sched, s->qid, TC_SS_GENERATING); /* not a sync: no stall recorded */
                s->syncing = 0;
                if (j && !j->cancel) j->cancel = 1, j->cancel_code = 4; /* the predicate saw the deadline */
                pthread_cond_broadcast(&e->cv);
                continue;
            }
            if (st != TC_OK) { /* not a sync: counted apart, and not in the cost estimate */
                snprintf(why, sizeof why, "%s", tc_error_get() ? tc_error_get() : tc_status_str(st));
                TC_LOG(TC_LOG_ERROR, "engine", "sync of %s failed: %s", s->id, why);
                tc_metric_inc(TC_M_failed_syncs_total, 1);
            } else {
                tc_metric_observe(TC_H_sync_duration_seconds, t1 - t0);
                tc_metric_observe(TC_H_boundary_stall_seconds, t1 - s->boundary_t0);
                tc_metric_inc(TC_M_syncs_total, 1);
            }
            tc_eng_stats_refresh(e, s);
            pthread_mutex_lock(&e->mu);
            if (j) j->sync_s += t1 - t0;
            if (st == TC_OK && s->st.length > 0) /* seconds per history token, smoothed: the next deadlines */
                e->sync_s_per_tok = 0.8 * e->sync_s_per_tok + 0.2 * (t1 - t0) / (double)s->st.length;
            if (st == TC_OK) tc_sched_sync_done(e->sched, s->qid, t1);
            else (void)tc_sched_transition(e->sched, s->qid, TC_SS_GENERATING); /* a failure: no sync, no stall recorded */
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
            tc_eng_gauges_locked(e);
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
    if (j->sink->backlog(j->user) >= (size_t)e->lim.stream_queue) {
        if (j->wants_slot) { /* the slot it waited for may go to a start */
            j->wants_slot = 0;
            e->n_wanting--;
            tc_eng_gauges_locked(e);
            pthread_cond_broadcast(&e->cv);
        }
        if (j->behind_since == 0) j->behind_since = now;
        else if (!j->slotless && now - j->behind_since >= TC_SLOT_RELEASE_S) {
            j->slotless = 1;
            e->n_slotless++;
            tc_eng_gauges_locked(e);
            pthread_cond_broadcast(&e->cv); /* a start may take the slot */
        }
        return 0;
    }
    j->behind_since = 0;
    if (!j->slotless) return 1;
    if (slots_used_locked(e) >= e->lim.max_batch) {
        if (!j->wants_slot) j->wants_slot = 1, e->n_wanting++, tc_eng_gauges_locked(e);
        return 0;
    }
    if (j->wants_slot) j->wants_slot = 0, e->n_wanting--;
    j->slotless = 0;
    e->n_slotless--;
    tc_eng_gauges_locked(e);
    return 1;
}

/* A generation thread: the batched hit steps of its worker pair's running
 * generations (every generation with one pair), and the housekeeping any
 * of them finds due: idle sessions, cancelled jobs. */
void *tc_eng_generation_thread(void *arg) {
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
    char *binl = calloc((size_t)cap, 1); /* bit 1: the row's step syncs it inline (counted once it stood); bit 2: its session is a plain Generate's */
    /* cancelled jobs ended per pass (more wait for the next pass: running
     * jobs can outnumber --max-batch, paused ones holding no slot) */
    const int dcap = e->lim.max_batch + e->lim.max_queued + 1;
    job **dead = calloc((size_t)dcap, sizeof *dead);
    /* the batch's stepped jobs, their messages decided, journaled and sent together (tc_eng_emit_batch) */
    job **okj = calloc((size_t)cap, sizeof *okj);
    const int32_t **okt = calloc((size_t)cap, sizeof *okt);
    int *okn = calloc((size_t)cap, sizeof *okn), *oused = calloc((size_t)cap, sizeof *oused);
    tc_emit_plan *oplan = calloc((size_t)cap, sizeof *oplan);
    tc_journal_row *orow = calloc((size_t)cap, sizeof *orow);
    tc_finish *ofin = calloc((size_t)cap, sizeof *ofin);
    TC_ASSERT(batch && bs && bt && bsmp && bnext && bb && bcnt && brow && binl && dead && okj && okt && okn && oused &&
                  oplan && orow && ofin,
              "engine: out of memory");
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
        if ((e->lim.idle_timeout_s > 0 || e->n_close_retry > 0) && tc_now_s() >= e->next_idle_check) {
            e->next_idle_check = tc_now_s() + 1.0;
            int64_t lim_ms = e->lim.idle_timeout_s > 0 ? tc_wall_ms() - (int64_t)(e->lim.idle_timeout_s * 1000) : INT64_MIN;
            for (int i = e->n_sess - 1; i >= 0; i--)
                if (!e->sess[i]->busy_job && !e->sess[i]->pins &&
                    (e->sess[i]->last_used_ms < lim_ms || e->sess[i]->close_retry)) {
                    char id[TC_ID_MAX];
                    snprintf(id, sizeof id, "%s", e->sess[i]->id);
                    const char *why = e->sess[i]->close_retry ? "its stream ended earlier" : "idle";
                    if (tc_eng_sess_forget_locked(e, e->sess[i]) == TC_OK)
                        TC_LOG(TC_LOG_INFO, "engine", "session %s %s, closed", id, why);
                    else { /* the journal keeps it (a full disk): open, and no more tries for 30 s (each
                            * one a failing write under this lock, and a log line) */
                        TC_LOG(TC_LOG_ERROR, "engine", "session %s %s, not closed (the next tries in 30 s): %s",
                               id, why, tc_error_get());
                        e->next_idle_check = tc_now_s() + 30.0;
                        break;
                    }
                }
        }
        /* cancelled jobs and expired deadlines end first */
        int nd = 0;
        for (job *j = e->jobs; j && nd < dcap; j = j->next) {
            if (!j->cancel && !j->claimed && j->sink->deadline_left(j->user) <= 0) {
                j->cancel = 1;
                j->cancel_code = 4;
            }
            /* a cancelled job whose sync still waits in the queue (not
             * popped, so no thread runs it): out of the queue, the session
             * left due -- it no longer waits behind other sessions' syncs */
            if (j->cancel && j->s && j->s->busy_job == j->id && j->s->syncing && tc_sched_state(e->sched, j->s->qid) == TC_SS_AT_BOUNDARY &&
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
                    /* err: why it could not start (tc_eng_fail_queued, a fork's copy) */
                    tc_eng_start_failed(e, j, j->cancel_code, j->err[0] ? j->err : tc_eng_cancel_why(j->cancel_code));
                } else if (j->cancel_code == 13) { /* a failure, not a cancel (the syncs above) */
                    if (j->s) tc_eng_set_pending(e, j->s, j->next_tok);
                    tc_eng_job_finish(e, j, TC_FINISH_ERROR, j->err);
                } else {
                    if (j->s) tc_eng_set_pending(e, j->s, j->next_tok); /* keep what the client saw */
                    tc_metric_inc(TC_M_cancelled_steps_total, 1);
                    tc_eng_job_finish(e, j, TC_FINISH_CANCELLED,
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
                    binl[B] = 1;
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
            j->claimed = 1;
            binl[B] = st.sync_due != 0; /* short, or --no-overlap-syncs: the step syncs it inline */
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
        for (int i = 0; i < B; i++) binl[i] |= batch[i]->s->ephemeral ? 2 : 0; /* under mu: a close sets it */
        pthread_mutex_unlock(&e->mu);
        int n_kept = 0, nok = 0; /* jobs of the batch still running after it: unclaimed below */
        if (B > 0) {
            double tb0 = tc_now_s();
            for (int i = 0; i < B; i++) {
                bs[i] = batch[i]->s->ws;
                bt[i] = batch[i]->next_tok;
            }
            for (int i = 0; i < B; i++) bsmp[i] = &batch[i]->smp, batch[i]->smp.lp_n = 0;
            /* multi-step: each session's run is cut where the engine would
             * end it anyway (max_tokens; EOS and stop ids on the worker).
             * Stop strings are matched on text here, after the run: a plain
             * Generate's session ends with its request, so the tokens of a
             * run past its stop string are only dropped (never sent, taken
             * back from a history nobody reads); a named session would keep
             * them, so its runs also end after every token that can complete
             * one of its stop strings (j->run_stop): never past the stop.
             * Without that set (over TC_STOP_CANDIDATES_MAX) it steps singly */
            int multi = 0;
            for (int i = 0; i < B && K > 1; i++) {
                job *j = batch[i];
                int64_t left = j->max_tokens - j->generated;
                const int named = j->n_stop && !(binl[i] & 2) && j->n_run_stop >= 0; /* runs end on candidates */
                bb[i].max_steps = j->n_stop && !(binl[i] & 2) && !named ? 1 : (int)(left < K ? (left > 1 ? left : 1) : K);
                if (j->logprobs >= 0 && bb[i].max_steps > TC_LP_RUN_MAX) bb[i].max_steps = TC_LP_RUN_MAX;
                bb[i].stop = named ? j->run_stop : j->stop_ids;
                bb[i].n_stop = named ? j->n_run_stop : j->n_stop_ids + !j->ignore_eos;
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
            char why[1024]; /* the call's error, kept before finishing jobs logs others */
            snprintf(why, sizeof why, "%s", st == TC_OK ? "" : tc_error_get() ? tc_error_get() : "step failed");
            /* the jobs whose step stood first: their tokens journaled in one
             * transaction and sent before any failed job's rebuild (a
             * prefill of its whole history) */
            for (int i = 0; i < B; i++) {
                job *j = batch[i];
                const tc_status sti = st != TC_OK ? st : brow[i].st; /* the call's, or this session's own */
                if (sti != TC_OK) continue; /* the pass after the messages */
                batch[i] = NULL;
                if (binl[i] & 1) { /* its inline sync ran (a failed one is no sync) */
                    tc_metric_inc(TC_M_syncs_total, 1);
                    tc_metric_observe(TC_H_boundary_stall_seconds, 0);
                }
                tc_eng_stats_refresh(e, j->s);
                okj[nok] = j, okt[nok] = bnext + (size_t)i * K, okn[nok] = bcnt[i], nok++;
            }
            tc_eng_emit_batch(e, okj, okt, okn, nok, oplan, orow, ofin, oused);
            for (int o = 0; o < nok; o++) {
                job *j = okj[o];
                const int32_t *toks = okt[o];
                const int cnt = okn[o];
                const tc_finish fin = ofin[o];
                if (fin != TC_FINISH_NONE) {
                    /* ended: its pending token set and the run's excess taken
                     * back before the last message (end_settle), or, none
                     * sent, the journal refused them and the session closes */
                    tc_eng_job_finish(e, j, fin, NULL);
                } else {
                    j->next_tok = toks[cnt - 1];
                    okj[n_kept++] = j; /* the others ended: freed (okj[o] read before: n_kept <= o) */
                }
            }
            for (int i = 0; i < B; i++) {
                job *j = batch[i];
                if (!j) continue; /* stood: handled above */
                batch[i] = NULL;
                const tc_status sti = st != TC_OK ? st : brow[i].st;
                if (sti == TC_ERR_IO && e->wc->failover) {
                    /* its pair stayed down past its recovery budget: on
                     * another pair (rebuilt there from the history) the
                     * step is taken again -- nothing of it was fed, its
                     * token and sampler are as before the call, so the
                     * stream goes on exactly */
                    pthread_mutex_lock(&e->mu);
                    const int draining = e->draining;
                    pthread_mutex_unlock(&e->mu);
                    if (!draining && j->io_retries < 3 && e->wc->failover(e->wc, j->s->ws) == TC_OK) {
                        j->io_retries++;
                        /* its copies are rebuilt here, on this thread (its
                         * old pair's, idle now), not by the first step of
                         * the new pair's thread: that pair's streams would
                         * wait for a prefill of the whole history */
                        job_ref ref = {e, j};
                        tc_cancel_hook prev = tc_cancel_arm(e->wc->cancellable ? tc_eng_job_gone : NULL, &ref);
                        /* on the prefill clients (a start thread's role): the
                         * generation ones of the new pair carry its steps */
                        if (e->wc->bind_thread) e->wc->bind_thread(e->wc, 2);
                        const tc_status pst = e->wc->prepare ? e->wc->prepare(e->wc, j->s->ws) : TC_OK;
                        if (e->wc->bind_thread) e->wc->bind_thread(e->wc, 0);
                        tc_cancel_restore(prev);
                        if (pst == TC_OK || pst == TC_ERR_CANCELLED) { /* cancelled: the pass below ends it */
                            if (pst == TC_ERR_CANCELLED) tc_metric_inc(TC_M_cancelled_prefills_total, 1);
                            /* released now, not after the rest of the batch's
                             * rebuilds: its new pair's thread takes it */
                            pthread_mutex_lock(&e->mu);
                            if (pst == TC_ERR_CANCELLED && !j->cancel) j->cancel = 1, j->cancel_code = 4; /* the deadline */
                            j->claimed = 0;
                            pthread_cond_broadcast(&e->cv);
                            pthread_mutex_unlock(&e->mu);
                            continue;
                        }
                        char msg[700];
                        snprintf(msg, sizeof msg, "rebuilding the session on another worker pair: %s",
                                 tc_error_get() ? tc_error_get() : tc_status_str(pst));
                        tc_eng_set_pending(e, j->s, j->next_tok);
                        tc_eng_job_finish(e, j, TC_FINISH_ERROR, msg);
                        continue;
                    }
                }
                if (sti != TC_OK) {
                    tc_eng_set_pending(e, j->s, j->next_tok);
                    pthread_mutex_lock(&e->mu);
                    const int draining = e->draining;
                    if (draining && sti == TC_ERR_IO) j->cancel = 1, j->cancel_code = 14; /* counted as cancelled */
                    pthread_mutex_unlock(&e->mu);
                    if (draining && sti == TC_ERR_IO) {
                        /* a worker gone at shutdown (its waits abandoned): cut
                         * like the drain cuts, so the request can resume */
                        tc_eng_job_finish(e, j, TC_FINISH_CANCELLED, "server shutting down (a worker is gone)");
                    } else {
                        if (st == TC_OK)
                            TC_LOG(TC_LOG_WARN, "engine", "session %s: its step failed, the rest of the batch of %d stepped: %s",
                                   j->s->id, B, brow[i].msg);
                        tc_eng_job_finish(e, j, TC_FINISH_ERROR, st != TC_OK ? why : brow[i].msg[0] ? brow[i].msg : "step failed");
                    }
                    continue;
                }
            }
            for (int k = 0; k < n_kept; k++) batch[k] = okj[k];
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
    free(binl);
    free(dead);
    free(okj);
    free(okt);
    free(okn);
    free(oused);
    free(oplan);
    free(orow);
    free(ofin);
    return NULL;
}
