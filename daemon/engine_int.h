/* engine_int.h — the engine's internals, shared by its three files (not
 * an interface: only engine.h is). engine.c: the session table, job
 * lifecycle and token emission, start/stop, the session API and the
 * journal restore; engine_submit.c: admission (tc_engine_prepare,
 * tc_engine_submit*); engine_threads.c: the threads that drive the
 * workers (starts, syncs, batched hit steps). One mutex (mu) guards the
 * table and the job lists; "_locked" functions are called with it held. */
#ifndef TC_DAEMON_ENGINE_INT_H
#define TC_DAEMON_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../scheduler/sched.h"
#include "../tokenizer/bpe.h"
#include "engine.h"
#include "journal.h"

/* QUEUED: admitted; STARTING: a start thread runs its append/prefill
 * and first token; RUNNING: in its pair's generation thread's batches. */
enum { J_QUEUED = 0, J_STARTING, J_RUNNING, J_DONE };

/* a generation whose client has not read for this long gives up its slot
 * of --max-batch (a shorter stall keeps it) */
#define TC_SLOT_RELEASE_S 1.0

/* syncs of one session failing in a row before its generation ends with
 * the error (engine_ctx_thread) */
#define TC_SYNC_TRIES 3
/* a multi-step run of a request with logprobs: at most this many tokens,
 * so a call's records stay within the worker's limit (2^18: 4096 sessions,
 * --max-batch's most, x 64) */
#define TC_LP_RUN_MAX 64

/* how long a resume retry waits for its session's last request, already ended
 * as its client sees it, to let go of the session (tc_eng_await_retiring):
 * under the least --liveness-timeout, 2 s (it holds the gRPC thread) */
#define TC_RETIRE_WAIT_MS 1000

typedef struct dsess {
    char id[TC_ID_MAX];
    tc_wc_session *ws;
    _Atomic int32_t pending; /* sampled but not yet fed, or -1 (set by the job's threads, read by GetSession under mu) */
    float *logits;   /* [V] after the last fed token */
    int has_logits;
    uint64_t busy_job;
    /* the session's next request, sent once busy_job had ended as its
     * client sees it (its last message out) but before it let go of the
     * session: queued behind it, it takes the session when busy_job
     * retires (job_retire_locked); one at most, and only while busy_job */
    uint64_t next_job;
    int ephemeral, close_when_idle;
    /* a Stream's own session whose close at the stream's end the journal
     * refused: closed by the idle pass as soon as the journal lets it
     * (e->n_close_retry counts them) */
    int close_retry;
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
    int gen_stale; /* the journal still holds a generation record that ended (its delete failed): dropped before the next job */
    int64_t resume_len;
} dsess;

typedef struct job {
    uint64_t id;
    char request_id[TC_ID_MAX];
    uint64_t request_group; /* tc_job_spec's: jobs of one group share request_id */
    dsess *s;
    int32_t *tokens;
    int64_t n_tokens;
    int64_t n_copied; /* of n_tokens, the copy_from history in front (error messages) */
    /* a fork sent while its source's request was ending (ended, not yet
     * retired): the source (its qid) and that request; the copy is taken
     * when that request lets go of the source (tc_eng_fork_copy_locked) */
    uint64_t copy_src, copy_after;
    int queued_behind; /* admitted as its session's next_job */
    int generate;
    int final_sent; /* its last message (finish_reason set) went to the sink */
    tc_sampler smp;
    /* logprobs: the spec's (-1: none) and the records of the tokens of one
     * step call, smp.lp (a multi-step call's run: up to lim.multi_step) */
    int logprobs, lp_cap;
    tc_logprob *lp;
    int max_tokens, ignore_eos;
    int32_t *stop_ids;
    int n_stop_ids;
    char **stop;
    int n_stop;
    int32_t *run_stop; /* a named session's runs end on these: stop ids, EOS, the tokens that can complete a stop string */
    int n_run_stop;    /* -1: none (its generation steps singly) */
    void *user;
    const tc_engine_sink *sink; /* the spec's, else the engine's */
    int phase, cancel, cancel_code; /* cancel_code 13: ends with FINISH_ERROR and err */
    int fail_code; /* tc_eng_start_failed's gRPC code: the request counted by it (0: by how it finished) */
    int jopen;     /* the session it created is not in the journal yet: its first write makes its row (tc_journal_create) */
    int claimed; /* in a generation thread's step, or being ended by one (mu): no other thread touches it */
    int io_retries; /* steps taken again after a fail-over (worker_client.failover), at most 3 */
    /* backpressure (mu): since when its client has not kept up (0: it
     * does); slotless: paused past TC_SLOT_RELEASE_S, it gave up its slot
     * of --max-batch; wants_slot: its client reads again, no slot free yet */
    double behind_since;
    int slotless, wants_slot;
    atomic_int ended; /* its last message goes out or finish_job began: its request_id is free, a next request on
                       * its session queues behind it (next_job), a fork copies the session after it
                       * (copy_after), a snapshot's copy is taken after it (snap_wait) */
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

/* a snapshot that waits for its session's ending request (after) to let go
 * of it (tc_engine_session_snapshot's later); taken at that request's
 * retirement, then handed to cb outside mu */
typedef struct snap_wait {
    struct snap_wait *next;
    uint64_t qid, after;
    char id[TC_ID_MAX];
    tc_engine_snapshot_cb cb;
    void *ud;
    int code;
    char msg[320];
    tc_session_info info;
    int32_t *tokens;
    int64_t n;
} snap_wait;

struct tc_engine {
    pthread_mutex_t mu;
    snap_wait *snap_waits, *snap_ready; /* mu */
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
    int n_close_retry;                 /* sessions with close_retry set (mu) */
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
    _Atomic int64_t fault_cancel_open; /* TC_FAULT_CANCEL_AFTER_PREFILL=N (test-only): the first N new sessions'
                                        * OpenSession/Append jobs are cancelled right after their workers took the
                                        * prompt, as a client's cancel arriving then */
    int64_t fault_retire_ms; /* TC_FAULT_RETIRE_DELAY_MS=N (test-only): a generation's thread waits N ms after
                              * its last message, before the job retires (widens the window a client's next
                              * call may fall in) */
    int64_t fault_wedge; /* TC_FAULT_ENGINE_WEDGE=1 (test-only): request_id "wedge-lock" makes a thread hold mu for
                          * ever, "wedge-rpc" stops the gRPC thread for ever */
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


/* ---- engine.c: sessions (mu held where _locked) ---- */
dsess *tc_eng_sess_find(tc_engine *e, const char *id);
job *tc_eng_job_find(tc_engine *e, uint64_t id);
void tc_eng_sess_info(tc_engine *e, const dsess *s, tc_session_info *o);
/* a copy of an idle session's whole history (room for `extra` more ids
 * after it): 0, or a gRPC code with msg */
int tc_eng_history_locked(tc_engine *e, dsess *s, int64_t extra, int32_t **tokens, int64_t *n, char *msg,
                          size_t msglen);
void tc_eng_gauges_locked(tc_engine *e);
/* the reaper frees worker session copies outside mu */
void *tc_eng_reaper_thread(void *arg);
void tc_eng_reaper_stop(tc_engine *e);
/* forget: its journal record goes too */
void tc_eng_sess_remove_locked(tc_engine *e, dsess *s, int forget);
tc_status tc_eng_sess_forget_locked(tc_engine *e, dsess *s);
unsigned long long tc_eng_id_nonce(void);
dsess *tc_eng_sess_add_locked(tc_engine *e, const char *id);
/* ---- engine.c: jobs ---- */
void tc_eng_job_free(job *j);
void tc_eng_stats_of(const job *j, tc_job_stats *st, int64_t session_len);
/* the tokens of a step to the client (text, stop strings, journal): the
 * finish they reached (TC_FINISH_NONE: go on), *used of them kept */
/* sessions that count against --max-sessions: open, not closing (mu held) */
int tc_eng_sessions_open_locked(const tc_engine *e);
/* sessions the engine holds at most, closing ones included: 2 x --max-sessions */
int tc_eng_session_cap(const tc_engine *e);
tc_finish tc_eng_emit_tokens(tc_engine *e, job *j, const int32_t *toks, int n, int *used);
/* what a message carries, decided before its tokens are journaled */
typedef struct {
    int n, m; /* tokens given, taken */
    tc_finish fin;
    size_t out_len;
    const char *out;
    int journaled;
} tc_emit_plan;
/* tc_eng_emit_tokens for the cnt jobs of a batched step, journaled in one
 * transaction; plans and rows: scratch of cnt each */
void tc_eng_emit_batch(tc_engine *e, job **jobs, const int32_t *const *toks, const int *n, int cnt, tc_emit_plan *plans,
                       tc_journal_row *rows, tc_finish *fin, int *used);
tc_finish tc_eng_emit_token(tc_engine *e, job *j, int32_t tok);
/* its last message to the sink, then retired */
void tc_eng_job_finish(tc_engine *e, job *j, tc_finish fin, const char *err);
void tc_eng_stats_refresh(tc_engine *e, dsess *s);
void tc_eng_set_pending(tc_engine *e, dsess *s, int32_t tok); /* mu not held */
void tc_eng_await_retiring(tc_engine *e, const char *sid);   /* mu held */
int tc_eng_fork_copy_locked(tc_engine *e, job *j, char *msg, size_t msglen);
void tc_eng_fail_queued(job *w, const dsess *s); /* mu held */
/* a job's cancel_code as its client reads it, for a job that had not started */
const char *tc_eng_cancel_why(int code);
/* j's logprobs settings and records onto its sampler (after a (re)init) */
void tc_eng_lp_attach(job *j);
/* a job that failed before it ran: its session goes if it opened it */
void tc_eng_start_failed(tc_engine *e, job *j, int code, const char *msg);
void tc_eng_journal_refused(tc_engine *e, job *j);
/* tc_cancelled predicate of a job's prefill (ud: a job_ref): cancelled or
 * its client left */
typedef struct {
    tc_engine *e;
    job *j;
} job_ref;
int tc_eng_job_gone(void *ud);

/* ---- engine_threads.c: thread entry points (tc_engine_start) ---- */
/* arg: struct ctx_arg; starts (prefill, first token) and syncs */
void *tc_eng_context_thread(void *arg);
/* arg: struct gen_arg; batched hit steps of one worker pair */
void *tc_eng_generation_thread(void *arg);

#endif
