/* worker_remote.h — the worker client over tconst-worker processes
 * (worker_remote.c): spawned by tconstd, or attached with --workers. */
#ifndef TC_DAEMON_WORKER_REMOTE_H
#define TC_DAEMON_WORKER_REMOTE_H

#include "worker_client.h"

typedef struct {
    const char *workers;  /* "host:port,..." to attach to; NULL/"" = spawn */
    const char *mode;     /* spawn: "split" (a context + a generation worker) or "both" */
    const char *binary;   /* tconst-worker to spawn */
    const char *model;    /* model directory for spawned workers */
    const char *device;   /* for spawned workers */
    const char *context_device; /* the spawned context worker's, when not "" (split mode) */
    const char *log_level, *log_format;
    int threads;
    double timeout_s;         /* a worker silent this long is killed / marked down */
    double start_timeout_s;   /* model load budget of a (re)started worker */
    double compute_timeout_s; /* deadline of one sync or prefill call */
    int context_nice;         /* --nice of spawned context workers */
    int max_sessions;         /* sessions placed at most (the engine's limit) */
    const char *weight_dtype; /* spawned workers' --weight-dtype ("" or NULL: theirs) */
    long long max_session_tokens; /* spawned workers' --max-session-tokens (sizes their data plane; 0: theirs) */
} tc_remote_opts;

tc_status tc_worker_remote_open(tc_worker_client **out, const tc_remote_opts *o);
/* cb(ud, n) with the number of live worker pairs now (from the calling
 * thread), then whenever it changes (from the supervisor thread); never
 * under the client's main lock. cb NULL: no more calls once it returns. */
void tc_worker_remote_on_live(tc_worker_client *w, void (*cb)(void *ud, int live_pairs), void *ud);
/* Spawned workers' pids (-1 while down) and roles, for tests and logs. */
int tc_worker_remote_pids(tc_worker_client *w, int *pids, const char **roles, int max);

#endif
