/* engine_submit.c — admission: a request checked and turned into a job
 * (tc_engine_prepare tokenizes outside the lock; tc_engine_submit_prepared
 * takes the session, checks the limits and queues it), or refused with a
 * gRPC code and a message naming what is wrong. Not the running of it:
 * engine_threads.c. */
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
#include <unistd.h>
#include <time.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../tokenizer/bpe.h"
#include "../scheduler/sched.h"
#include "engine_int.h"
#include "journal.h"
#include "metrics.h"
#include "../tokenizer/utf8.h"

/* TC_FAULT_ENGINE_WEDGE's "wedge-lock": a thread that holds the engine's
 * lock for ever, as a deadlock would */
static void *wedge_main(void *arg) {
    tc_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    TC_LOG(TC_LOG_WARN, "engine", "TC_FAULT_ENGINE_WEDGE: holding the engine's lock for ever");
    for (;;) pause();
    return NULL;
}

static int refuse(char *msg, size_t n, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int refuse(char *msg, size_t n, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, n, fmt, ap);
    va_end(ap);
    /* refused at admission: "overloaded" at a limit (RESOURCE_EXHAUSTED:
     * sessions, queued requests or syncs, memory), "rejected" otherwise
     * (invalid, unknown or busy session, draining); only an internal
     * failure is an "error" */
    tc_metric_inc(code == 13 ? TC_M_requests_total_error
                  : code == 8 ? TC_M_requests_total_overloaded
                              : TC_M_requests_total_rejected,
                  1);
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
    j->sink = sp->sink ? sp->sink : &e->sink;
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
        j->logprobs = -1;
        if (sp->logprobs) {
            if (sp->top_logprobs < 0 || sp->top_logprobs > TC_LOGPROBS_MAX) {
                code = refuse(msg, msglen, 3, "sampling.logprobs: %d most likely tokens asked; must be within 0..%d",
                              sp->top_logprobs, TC_LOGPROBS_MAX);
                goto reject;
            }
            j->logprobs = sp->top_logprobs;
            j->lp_cap = e->lim.multi_step > TC_LP_RUN_MAX ? TC_LP_RUN_MAX : e->lim.multi_step > 1 ? e->lim.multi_step : 1;
            if (!(j->lp = malloc((size_t)j->lp_cap * sizeof *j->lp))) {
                code = refuse(msg, msglen, 13, "out of memory");
                goto reject;
            }
            tc_eng_lp_attach(j);
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
            j->n_stop = sp->n_stop; /* before the copies: a reject frees those made */
            for (int k = 0; k < sp->n_stop; k++)
                if (!(j->stop[k] = strdup(sp->stop[k]))) { code = refuse(msg, msglen, 13, "out of memory"); goto reject; }
        }
        /* stop strings: a multi-step run of a named session ends after any
         * token that can complete one (tc_bpe_stop_candidates), so it never
         * steps past the stop -- nothing to take back from the history; with
         * no such set (too many candidates, a stop that is not UTF-8) it
         * steps singly (n_run_stop -1). A plain Generate's runs may pass
         * the stop (its session ends with it): none computed */
        j->n_run_stop = -1;
        if (sp->n_stop && !sp->ephemeral && e->wc->step_multi && e->lim.multi_step > 1) {
            const int head = j->n_stop_ids + !j->ignore_eos;
            int32_t *rs = malloc((size_t)(head + TC_STOP_CANDIDATES_MAX) * 4);
            if (!rs) { code = refuse(msg, msglen, 13, "out of memory"); goto reject; }
            memcpy(rs, j->stop_ids, (size_t)head * 4);
            const int n = tc_bpe_stop_candidates(e->bpe, (const char *const *)j->stop, j->n_stop, rs + head,
                                                 TC_STOP_CANDIDATES_MAX);
            if (n >= 0) j->run_stop = rs, j->n_run_stop = head + n;
            else free(rs);
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
        /* and UTF-8: they come back in protobuf strings and JSON, which a
         * client refuses to decode otherwise (an X-Request-Id header) */
        const size_t idn = id ? strlen(id) : 0, bad = id ? tc_utf8_first_invalid((const uint8_t *)id, idn) : 0;
        if (id && bad != idn) {
            code = refuse(msg, msglen, 3, "%s: not valid UTF-8 (at byte %zu)", k ? "request_id" : "session_id", bad);
            goto reject;
        }
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
    if (e->fault_wedge && sp->request_id && !strncmp(sp->request_id, "wedge-", 6)) { /* test-only: a deadlock */
        pthread_t t;
        if (!strcmp(sp->request_id, "wedge-rpc")) { /* the gRPC thread stuck, the engine free */
            pthread_mutex_unlock(&e->mu);
            TC_LOG(TC_LOG_WARN, "engine", "TC_FAULT_ENGINE_WEDGE: the gRPC thread stops here for ever");
            for (;;) pause();
        }
        if (!strcmp(sp->request_id, "wedge-lock") && pthread_create(&t, NULL, wedge_main, e) == 0) {
            pthread_detach(t); /* it takes the lock once this call lets it go, and keeps it */
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 13, "TC_FAULT_ENGINE_WEDGE: the engine's lock is taken for ever");
            goto reject;
        }
    }
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
    if (e->lim.max_queued_syncs > 0 && e->n_sync_queued >= e->lim.max_queued_syncs) {
        /* DESIGN §5: backpressure on queued syncs -- the context workers are
         * behind, and new work would only stall at its first boundary */
        const int q = e->n_sync_queued;
        pthread_mutex_unlock(&e->mu);
        code = refuse(msg, msglen, 8, "%d syncs wait for a context worker, --max-queued-syncs %d: retry later or "
                      "on another replica", q, e->lim.max_queued_syncs);
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
    int behind = 0; /* queued behind the session's last request (next_job) */
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
            if (!atomic_load(&o->ended) && !o->cancel && !strcmp(o->request_id, sp->request_id) &&
                !(sp->request_group && o->request_group == sp->request_group)) {
                pthread_mutex_unlock(&e->mu);
                code = refuse(msg, msglen, 6, "request_id: '%s' names a request still running", sp->request_id);
                goto reject;
            }
    if (sp->create || (sp->ephemeral && !*sid)) {
        if (*sid && tc_eng_sess_find(e, sid)) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 6, "session_id: '%s' already exists", sid);
            goto reject;
        }
        /* a closed session whose request is still stopping does not count
         * (its id is free at once), but all of them together stay under
         * twice the limit */
        if (tc_eng_sessions_open_locked(e) >= e->lim.max_sessions || e->n_sess >= tc_eng_session_cap(e)) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 8, "too many sessions (max_sessions %d)", e->lim.max_sessions);
            goto reject;
        }
        if (sp->copy_from && *sp->copy_from) { /* a fork: its history first, then the request's tokens */
            dsess *from = tc_eng_sess_find(e, sp->copy_from);
            if (!from) {
                pthread_mutex_unlock(&e->mu);
                code = refuse(msg, msglen, 5, "copy_from: no open session '%s'", sp->copy_from);
                goto reject;
            }
            j->copy_src = from->qid;
            /* its source's request has ended as its client sees it and only
             * not yet let go of it: the copy waits for that (the start
             * thread takes it), holding no thread here */
            const job *fb = from->busy_job ? tc_eng_job_find(e, from->busy_job) : NULL;
            char m[300];
            int fc = 0;
            if (fb && atomic_load(&fb->ended) && !from->next_job) j->copy_after = from->busy_job;
            else if ((fc = tc_eng_fork_copy_locked(e, j, m, sizeof m)) != 0) {
                pthread_mutex_unlock(&e->mu);
                code = refuse(msg, msglen, fc, "%s", m);
                goto reject;
            }
        }
        s = tc_eng_sess_add_locked(e, sid);
        if (!s) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 13, "out of memory");
            goto reject;
        }
        s->ephemeral = sp->ephemeral;
        j->created = 1;
        /* journaled when its workers have its prompt, with it (start_job):
         * a crash during the prefill leaves no empty session behind */
        j->jopen = e->journal && !s->ephemeral;
    } else {
        s = tc_eng_sess_find(e, sid);
        if (!s) {
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 5, "session_id: no open session '%s'", sid);
            goto reject;
        }
        if (sp->expect_key && s->qid != sp->expect_key) { /* closed, and another opened under its id */
            pthread_mutex_unlock(&e->mu);
            code = refuse(msg, msglen, 5, "session '%s' was closed (the one open under its id now is another)", sid);
            goto reject;
        }
        if (s->busy_job && sp->generate && s->has_resume && sp->request_id &&
            !strcmp(sp->request_id, s->resume.request_id)) {
            /* the retry of a cut generation (its resume decided below, on
             * the session as its last request leaves it): waits for that
             * request here, as before, rather than queue behind it */
            const uint64_t key = s->qid;
            tc_eng_await_retiring(e, sid);
            s = tc_eng_sess_find(e, sid);
            if (!s || s->qid != key) {
                pthread_mutex_unlock(&e->mu);
                code = refuse(msg, msglen, 5, "session_id: no open session '%s'", sid);
                goto reject;
            }
            if (s->busy_job) {
                pthread_mutex_unlock(&e->mu);
                code = refuse(msg, msglen, 9, "session_id: session '%s' is busy with another request", sid);
                goto reject;
            }
        }
        if (s->busy_job) {
            /* its request has ended as its client sees it (its last
             * message out) and only not yet let go of the session: this
             * one queues behind it, without holding this thread (a client
             * that sends the next turn as soon as it hears finish_reason) */
            const job *b = tc_eng_job_find(e, s->busy_job);
            if (!b || !atomic_load(&b->ended) || s->next_job || s->ephemeral) {
                pthread_mutex_unlock(&e->mu);
                code = refuse(msg, msglen, 9, "session_id: session '%s' is busy with another request", sid);
                goto reject;
            }
            behind = 1;
        }
    }
    /* the same request again after a crash cut it: resume, don't restart */
    if (!behind && sp->generate && s->has_resume && sp->request_id && !strcmp(sp->request_id, s->resume.request_id) &&
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
        tc_eng_lp_attach(j); /* the retry's logprobs (not journaled): from its tokens on */
        j->resume = 1;
        j->max_tokens = s->resume.max_tokens;
        j->ignore_eos = s->resume.ignore_eos;
        free(j->tokens);
        j->tokens = NULL;
        j->n_tokens = j->prompt_tokens = 0;
    }
    j->s = s;
    j->id = ++e->next_job_id;
    if (behind) s->next_job = j->id;
    else s->busy_job = j->id;
    j->queued_behind = behind;
    if (behind || j->copy_after) tc_metric_inc(TC_M_queued_behind_total, 1);
    j->request_group = sp->request_group;
    if (sp->request_id && *sp->request_id) snprintf(j->request_id, sizeof j->request_id, "%s", sp->request_id);
    else { /* unique among the live requests, ids clients chose included */
        int taken;
        do {
            snprintf(j->request_id, sizeof j->request_id, "r-%llu-%012llx", (unsigned long long)j->id, tc_eng_id_nonce());
            taken = 0;
            for (job *o = e->jobs; o && !taken; o = o->next) taken = !strcmp(o->request_id, j->request_id);
        } while (taken);
    }
    j->phase = J_QUEUED;
    j->next = e->jobs;
    e->jobs = j;
    e->n_queued++;
    tc_eng_gauges_locked(e);
    *job_id = j->id;
    if (rid_out) snprintf(rid_out, TC_ID_MAX, "%s", j->request_id);
    if (sp->session_id_out) snprintf(sp->session_id_out, TC_ID_MAX, "%s", s->id);
    s->pins += sp->pin != 0;
    if (sp->pin && sp->pin_key_out) *sp->pin_key_out = s->qid;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
reject:
    tc_eng_job_free(j);
    return code;
}
