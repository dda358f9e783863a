/* worker_client.h — how the coordinator drives the engine: sessions,
 * appends, batched hit steps, syncs. This implementation runs the
 * model in-process (worker_local.c); the worker-process split swaps in a
 * remote one behind the same table of functions. Two threads call it: the
 * generation thread (step) and the context thread (sync, append), on
 * different sessions, each after bind_thread. */
#ifndef TC_DAEMON_WORKER_CLIENT_H
#define TC_DAEMON_WORKER_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"
#include "../model/config.h"
#include "../model/sampler.h"

typedef struct tc_wc_session tc_wc_session;
/* one worker process, for ServerInfo */
typedef struct {
    char role[16], device[32], address[512];
    int ready;
} tc_wc_worker_info;
typedef struct tc_worker_client tc_worker_client;

typedef struct {
    int64_t length, syncs, state_bytes;
    int sync_due;
    int pair; /* the worker pair holding it (0 in-process) */
} tc_wc_session_stats;

/* What one session wants from a multi-step call (step_multi). */
typedef struct {
    int max_steps;       /* tokens at most (>= 1) */
    const int32_t *stop; /* sampling one of these ends its run (EOS, stop ids) */
    int n_stop;
} tc_wc_burst;

struct tc_worker_client {
    const tc_model_config *cfg;
    const char *device;     /* "cpu", "cuda:0" */
    const char *dtype;      /* of the weights file */
    int64_t n_params;
    void *impl;
    /* context-role threads that may call at the same time on different
     * sessions: 2 (syncs on one, bind_thread 1; starts, prefills included,
     * on another, bind_thread 2, each in a workspace of its own); 1: one
     * context thread for both */
    int ctx_threads;
    int n_pairs; /* worker pairs (0 or 1: one); a session stays on its pair */
    tc_status (*session_new)(tc_worker_client *w, tc_wc_session **out);
    void (*session_free)(tc_worker_client *w, tc_wc_session *s);
    /* 1: append and sync stop when the calling thread's tc_cancelled()
     * says yes (TC_ERR_CANCELLED, the session's history as it was; worker
     * copies are rebuilt on next use, an in-process session by its next
     * append, sync or step) */
    int cancellable;
    /* append n tokens; logits of the last one into logits [V] (or NULL) */
    tc_status (*append)(tc_worker_client *w, tc_wc_session *s, const int32_t *t, int64_t n, float *logits);
    /* run the sync that the next token of s needs (no-op when none) */
    tc_status (*sync)(tc_worker_client *w, tc_wc_session *s);
    /* optional: rebuild what a failed or cancelled call left unknown of
     * s's copies (a no-op while they are valid), on the calling thread,
     * stopping like append when cancellable -- so the step that follows
     * does not rebuild them on the generation thread, holding up every
     * other session's token meanwhile */
    tc_status (*prepare)(tc_worker_client *w, tc_wc_session *s);
    /* one token per session (a session at a window boundary is synced
     * first); when smp != NULL, next[i] is sampled with smp[i], whose RNG
     * advances (a remote worker samples where the logits are); logits
     * [B, V] when not NULL.
     * rows == NULL: all or nothing -- any session's failure fails the
     * call, and no session took its token. rows != NULL: a session whose
     * own part fails (its inline sync, the rebuild of its copy; a worker
     * pair of its own that is gone) is left out, rows[i] saying why; the
     * others step. Each rows[i] is set when the call returns TC_OK; a row
     * that failed took no token, its sampler did not advance, its history
     * is as it was. A call that fails as a whole (TC_OK not returned) is
     * all or nothing as above, rows unset. */
    tc_status (*step)(tc_worker_client *w, tc_wc_session **s, const int32_t *t, int B, tc_sampler **smp,
                      int32_t *next, float *logits, tc_row_status *rows);
    /* optional (NULL: one step call per token): the worker's own step
     * loop, as vLLM's multi-step scheduling -- it feeds each session what
     * it sampled and steps again, sparing a round trip per token. Session
     * i gets n_out[i] tokens (1 ..= b[i].max_steps) at next + i * kstride:
     * fewer when it sampled one of b[i].stop, reached a window boundary
     * (the next token needs a sync), or the call computed max_s seconds
     * (0: no limit). Its history then holds t[i] and all but the last of
     * them; the last is not fed. Sampled only (smp != NULL). rows as in
     * step (a failed row: n_out[i] 0). */
    tc_status (*step_multi)(tc_worker_client *w, tc_wc_session **s, const int32_t *t, int B, tc_sampler **smp,
                            const tc_wc_burst *b, double max_s, int32_t *next, int kstride, int *n_out,
                            tc_row_status *rows);
    /* optional: forget all but the first n_keep tokens of s's history (a
     * multi-step run went past where the engine stopped); the worker
     * copies are rebuilt from what is kept on next use */
    tc_status (*truncate)(tc_worker_client *w, tc_wc_session *s, int64_t n_keep);
    /* optional: s's worker pair is down past its recovery budget: move s
     * to the least loaded live pair (its copies are rebuilt there from
     * the history at next use, DESIGN §9). TC_OK when moved (what failed
     * can be tried again there; the caller bounds its tries); TC_ERR_IO
     * when its pair is up, no other pair is live, or at shutdown */
    tc_status (*failover)(tc_worker_client *w, tc_wc_session *s);
    void (*stats)(tc_worker_client *w, const tc_wc_session *s, tc_wc_session_stats *out);
    /* the tokens s's history holds (what it was fed), copied into out when
     * it has room for all; returns how many there are */
    int64_t (*history)(tc_worker_client *w, const tc_wc_session *s, int32_t *out, int64_t max);
    /* the calling thread's role: 0 generation (hit steps), 1 context
     * (syncs, prefills); each role computes in its own workspace */
    void (*bind_thread)(tc_worker_client *w, int role);
    /* optional: calls waiting for a worker to come back (a restart) fail
     * now, and later ones at once -- shutdown, once the drain is over, so
     * a job stuck on a dead worker does not hold the exit for minutes */
    void (*abandon_waits)(tc_worker_client *w);
    void (*free)(tc_worker_client *w);
    /* optional (NULL: always able to serve, as in-process): worker pairs
     * up now, a pair counting when its context and generation workers
     * both answer. With none the coordinator is not ready (/readyz,
     * Health) -- new work would only fail. */
    int (*live_pairs)(tc_worker_client *w);
    /* optional (NULL: one in-process worker on `device`): the worker
     * processes as they are now, at most max into out; returns how many */
    int (*workers)(tc_worker_client *w, tc_wc_worker_info *out, int max);
};

/* In-process worker on the CPU backend over model directory `dir`. */
tc_status tc_worker_local_open(tc_worker_client **out, const char *dir, int n_threads);

#endif
