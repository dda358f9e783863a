/* engine.h — the daemon's engine thread: the session table, admission,
 * and the step loop that batches the hit steps of every running
 * generation (continuous batching).
 *
 * The RPC side submits jobs (append and/or generate in a session) and
 * receives results through a sink of callbacks, called on the engine
 * thread without the engine lock held. Jobs are named by id so a late
 * cancel can never touch a freed job. The model runs behind the worker
 * client interface (worker_client.h); this file knows no protobuf and no
 * gRPC. */
#ifndef TC_DAEMON_ENGINE_H
#define TC_DAEMON_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "../model/sampler.h"
#include "worker_client.h"

typedef struct tc_engine tc_engine;
struct tc_bpe;

#define TC_ID_MAX 64

typedef struct {
    char id[TC_ID_MAX];
    int64_t length, windows, syncs, state_bytes, created_ms, last_used_ms;
    int busy;
} tc_session_info;

typedef struct {
    int64_t prompt_tokens, completion_tokens, session_tokens;
    double queue_s, prefill_s, sync_s, ttft_s, total_s;
    uint64_t seed; /* the sampler's */
} tc_job_stats;

typedef enum {
    TC_FINISH_NONE = 0, TC_FINISH_LENGTH, TC_FINISH_EOS, TC_FINISH_STOP, TC_FINISH_CANCELLED, TC_FINISH_ERROR,
} tc_finish;

typedef struct {
    /* the append part is done; for a job without generation, the end */
    void (*appended)(void *user, const tc_session_info *si, int64_t n_appended);
    /* generated tokens and their text; fin != NONE on the last message.
     * lp: with the spec's logprobs, one per id (NULL without, and for the
     * ids a resumed generation re-sends: their logprobs are not kept) */
    void (*tokens)(void *user, const int32_t *ids, const tc_logprob *lp, int n, const char *text, size_t tlen,
                   tc_finish fin, const tc_job_stats *st, const char *error);
    /* failed before generating anything: a gRPC status */
    void (*failed)(void *user, int grpc_code, const char *msg);
    /* the job is gone; `user` will not be used again */
    void (*done)(void *user);
    /* messages the client has not read yet (backpressure) */
    size_t (*backlog)(void *user);
    /* seconds left before the client's deadline (INFINITY: none) */
    double (*deadline_left)(void *user);
} tc_engine_sink;

typedef struct {
    int max_sessions;
    int max_queued;       /* jobs waiting to start */
    int max_batch;        /* generations stepped together */
    int max_tokens;       /* per request */
    int stream_queue;     /* unread messages per stream before it pauses */
    double idle_timeout_s;
    int overlap_syncs;    /* 1: syncs on the context thread; 0: inline in the batch */
    int64_t sync_inline_max; /* syncs over at most this many history tokens run inline in the
                                batch even when overlapping (cheaper than a context-worker round
                                trip, and never queued behind a long context's sync) */
    int multi_step;       /* tokens per generation-worker call, its own loop (1: a call per token) */
    double multi_step_s;  /* ... and seconds one such call may compute */
    int64_t max_session_tokens; /* tokens a session may hold, prompt and generated (<= 0: TC_SESSION_TOKENS_MAX) */
    int64_t max_state_bytes;    /* sessions' state on the workers, summed: at or past it new work is refused (0: no limit) */
    int max_queued_syncs;       /* syncs waiting for a context worker: at or past it new work is refused (0: no limit) */
} tc_engine_limits;

/* the most tokens a session can hold: a sync takes histories below 2^31 - 4096 */
#define TC_SESSION_TOKENS_MAX (2147483647LL - 4096)

typedef struct {
    const char *session_id; /* NULL/"" with ephemeral: a fresh session */
    int create;             /* OpenSession: create it (error if it exists) */
    const char *copy_from;  /* with create: the new session starts with this idle session's history */
    int ephemeral;          /* closed when this job ends */
    const int32_t *tokens;  /* appended first (copied) */
    int64_t n_tokens;
    const char *text;       /* or text, tokenized by the engine */
    size_t text_len;
    int generate;
    tc_sampling_params sp;
    int max_tokens;
    int max_tokens_unset;   /* the client left max_tokens out: TC_MAX_TOKENS_DEFAULT, or --max-tokens when lower */
    int ignore_eos;
    int logprobs;           /* 1: each generated token's log-probability (tc_logprob) goes to the sink ... */
    int top_logprobs;       /* ... with this many most likely tokens' (0 ..= TC_LOGPROBS_MAX) */
    const int32_t *stop_ids;
    int n_stop_ids;
    const char *const *stop; /* stop strings */
    int n_stop;
    const char *request_id;  /* "" = assign */
    uint64_t request_group;  /* not 0: live jobs of one group may share request_id (an OpenAI completion's n
                              * choices: Abort of the id ends them all) */
    char *session_id_out;    /* [TC_ID_MAX] or NULL: the session's id */
    int pin;                 /* accepted: the session does not expire idle until tc_engine_session_unpin (a Stream's) */
    uint64_t *pin_key_out;   /* with pin, accepted: the pinned session's key, for tc_engine_session_unpin */
    uint64_t expect_key;     /* not 0: the session must be the one of this key (a Stream's later requests) */
    void *user;
    const tc_engine_sink *sink; /* this job's callbacks (user is theirs); NULL: the engine's (tc_engine_start) */
} tc_job_spec;

#define TC_MAX_TOKENS_DEFAULT 16 /* max_tokens of a request that leaves it out */
#define TC_MAX_STOP_IDS 1024     /* stop_token_ids a request may give (each is checked every token) */
#define TC_MAX_STOP_STRINGS 64   /* stop strings a request may give, each 1..256 bytes */
#define TC_STOP_CANDIDATES_MAX 2048 /* tokens that may complete a stop string, past which a named session's generation steps singly */

tc_status tc_engine_start(tc_engine **out, tc_worker_client *wc, struct tc_bpe *bpe, const tc_engine_limits *lim,
                          const tc_engine_sink *sink);
/* Journals sessions from now on and restores those journaled before (they
 * resume by re-syncing from their history on first use). Call before the
 * RPC server starts. */
struct tc_journal;
tc_status tc_engine_attach_journal(tc_engine *e, struct tc_journal *j, int *n_restored);
/* Stops admission, cancels what runs (reason: UNAVAILABLE) and waits until
 * every job has ended (its sink's done called and returned). The engine stays usable
 * for everything but new work: the RPC thread may still call it while the
 * gRPC server winds down. */
void tc_engine_quiesce(tc_engine *e);
/* 1 when the engine's lock could be taken within wait_s seconds (and was
 * let go at once); 0 when it stayed held: every engine thread and call
 * takes it for short moments only, so a lock held for seconds is a wedged
 * engine. For tconstd's liveness watchdog. */
int tc_engine_lock_probe(tc_engine *e, double wait_s);
/* tc_engine_quiesce, then joins the threads and frees. Nothing may call
 * the engine after (stop the RPC server first). */
void tc_engine_stop(tc_engine *e);

/* Admission. On refusal returns nonzero with a gRPC code and a message
 * naming the field or the limit; on success *job_id and the assigned
 * request id (may be NULL). */
int tc_engine_submit(tc_engine *e, const tc_job_spec *spec, uint64_t *job_id, char *request_id_out, char *msg,
                     size_t msglen);
/* tc_engine_submit in two steps: prepare takes the prompt (text
 * tokenized, ids range-checked, both copied to *toks, malloc'd) and takes
 * no lock, so it may run long (megabytes of text) without holding up what
 * waits for the caller's locks; submit_prepared admits the job and owns
 * toks whatever it returns (spec's text and token_ids are not read). */
int tc_engine_prepare(tc_engine *e, const tc_job_spec *spec, int32_t **toks, size_t *n_toks, char *msg, size_t msglen);
int tc_engine_submit_prepared(tc_engine *e, const tc_job_spec *spec, int32_t *toks, size_t n_toks, uint64_t *job_id,
                              char *request_id_out, char *msg, size_t msglen);
/* code: the gRPC status it ends with (1 CANCELLED: the client went away;
 * 4 DEADLINE_EXCEEDED: its deadline passed, counted as such) */
void tc_engine_cancel(tc_engine *e, uint64_t job_id, int code);
/* Abort by request id: 1 if found. */
int tc_engine_abort(tc_engine *e, const char *request_id);
void tc_engine_wake(tc_engine *e);

int tc_engine_session_get(tc_engine *e, const char *id, tc_session_info *out);
/* A copy of session id's history (every token it holds: fed, restored
 * from the journal and not yet fed, the pending sampled one) into
 * *tokens (malloc'd, *n of them) and its info. Returns 0, or a gRPC code
 * with msg: NOT_FOUND, FAILED_PRECONDITION (busy), RESOURCE_EXHAUSTED.
 * When the session's last request has ended as its client sees it (its
 * last message out) and not yet let go of the session: with later, the
 * copy is taken once it has, and later(ud, ...) gets it, once, on the
 * engine thread that let go (no engine lock held; tokens are later's to
 * free): TC_SNAPSHOT_LATER is returned and nothing is set; without, this
 * call waits for that (at most 1 s, then busy). */
#define TC_SNAPSHOT_LATER (-1)
typedef void (*tc_engine_snapshot_cb)(void *ud, int code, const char *msg, const tc_session_info *info,
                                      int32_t *tokens, int64_t n);
int tc_engine_session_snapshot(tc_engine *e, const char *id, tc_session_info *info, int32_t **tokens, int64_t *n,
                               char *msg, size_t msglen, tc_engine_snapshot_cb later, void *ud);
/* Closes now, or when its running job ends (that job is cancelled): 1;
 * 0 no such session; -1 the journal could not drop it (a full disk: err
 * names it), and the session stays open as it was. */
int tc_engine_session_close(tc_engine *e, const char *id, tc_session_info *out, char *err, size_t errlen);
/* The same, only while the session under id is the one whose key (a
 * tc_job_spec.pin_key_out) is given: 0 (and nothing closed) otherwise. */
int tc_engine_session_close_key(tc_engine *e, const char *id, uint64_t key, tc_session_info *out);
/* Undoes a tc_job_spec.pin: the session may expire idle again (its
 * Stream ended). key: what pin_key_out got -- a session of that id closed
 * and opened again meanwhile is another session, and keeps its pins. A
 * session gone meanwhile is no error. */
void tc_engine_session_unpin(tc_engine *e, const char *id, uint64_t key);

void tc_engine_counts(tc_engine *e, int *sessions, int *running, int *queued);
/* Waits until no job is queued or running, up to timeout_s: 1 if idle. */
int tc_engine_wait_idle(tc_engine *e, double timeout_s);
/* Stops admission (new jobs get UNAVAILABLE). */
void tc_engine_drain(tc_engine *e);
/* Cancels every job with UNAVAILABLE "server shutting down". */
void tc_engine_cancel_all(tc_engine *e);
const tc_engine_limits *tc_engine_get_limits(const tc_engine *e);

#endif
