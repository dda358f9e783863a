/* worker_remote_int.h — worker_remote's internals, shared by its two
 * files (not an interface: worker_remote.h and worker_client.h are).
 * worker_remote.c: the worker processes -- calls, supervision, spawning,
 * tc_worker_remote_open; worker_remote_session.c: the sessions' copies on
 * them -- placement, appends, syncs, batched steps, rebuilds. */
#ifndef TC_DAEMON_WORKER_REMOTE_INT_H
#define TC_DAEMON_WORKER_REMOTE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "../scheduler/sched.h"
#include "rpc.h"
#include "worker.pb-c.h"
#include "worker_remote.h"

#define MAX_PROCS 32
#define MAX_ARGS 32
#define TC_WR_CLIENTS 7
#define M(x) "/tconst.worker.v1.Worker/" x

typedef struct wproc {
    char name[48], role[16], addr[512], data_addr[320], transport[16];
    char device[32]; /* from its Info, under R->mu */
    int64_t max_msg; /* its --max-message-bytes, from its Info (0: not said) */
    int spawned;
    pid_t pid;
    char *argv[MAX_ARGS];
    uint64_t boot;  /* of the process we last talked to; 0: never up */
    uint64_t refused_boot; /* a process that came back with another model or role: kept down (supervisor) */
    int up;
    double last_ok, next_restart, backoff, up_since;
    int restarts;
    /* one client per calling thread kind: 0 generation thread, 1 context
     * thread (syncs), 2 supervisor, 3 any other thread, 4 Cancel (sent
     * while a context thread's client waits on the call it stops), 5 the
     * start thread (prefills: beside a sync, not behind it), 6 the
     * linker (Connects: an NCCL one may wait long for its peer, never in
     * the way of pings); each used under its lock (a client runs one call
     * at a time) */
    tc_rpc_client *cli[TC_WR_CLIENTS];
    pthread_mutex_t cli_mu[TC_WR_CLIENTS];
    struct wproc *peer;    /* context worker: its generation peer */
} wproc;

typedef struct {
    wproc *ctx, *gen; /* same pointer for a both-roles worker */
    /* the data plane between them is connected (always for a both-roles
     * worker): a pair is live only with both workers up and linked. A
     * failed Connect is tried again by the supervisor at next_link,
     * backing off (link_backoff) from 0.5 s to 10 s. Under R->mu */
    int linked;
    double next_link, link_backoff;
    char link_err[256]; /* why the last Connect failed */
} wpair;

struct tc_wc_session {
    uint64_t sid;
    int pair;
    int32_t *hist; /* every token the model has consumed */
    int64_t n, cap;
    int64_t ctx_len;           /* tokens the context worker's copy has */
    uint64_t gen_boot, ctx_boot; /* boot ids the copies were built on (0: none) */
    /* boot ids a copy was last opened on: a copy marked unknown (boot 0,
     * after a failed or cancelled call) is still there until closed */
    uint64_t gen_opened, ctx_opened;
    int64_t synced_at, syncs, state_bytes;
    uint64_t seq;
    /* after a fail-over: the pair it left and the boot ids its copies there
     * were opened on (closed with the session if those workers come back
     * as the same processes; -1: none) */
    int left_pair;
    uint64_t left_gen, left_ctx;
};

/* a session copy left on a worker that was down when it had to go (a
 * fail-over moved the session away, and it closed, or moved again):
 * closed by the supervisor once that worker answers as the same process
 * (a new process lost it anyway) */
typedef struct {
    uint64_t sid, boot;
    struct wproc *p;
} wclose;

typedef struct {
    tc_remote_opts o;
    tc_model_config cfg;
    char dtype[16], device[32];
    int64_t n_params;
    wproc *procs[MAX_PROCS];
    int n_procs;
    wpair pairs[MAX_PROCS];
    int n_pairs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t sup, linker; /* the supervisor; the linker connects pairs' data planes (connect_one) */
    int sup_started, linker_started, stop;
    int giveup; /* abandon_waits: waits for a restart fail at once (shutdown) */
    uint64_t next_sid;
    uint64_t instance; /* sent in Info and Ping: the worker's owner */
    uint64_t weights_digest; /* the first worker's (Info.weights_digest): every other, and every restart, must match */
    tc_sched *sched;
    char sockdir[256]; /* spawned workers' control sockets: a private mkdtemp directory */
    int live;           /* pairs with both workers up (set_gauges, under mu) */
    int live_reported;  /* what the supervisor last told live_cb */
    int sched_cap; /* sessions R->sched holds at most */
    void (*live_cb)(void *ud, int live_pairs); /* tc_worker_remote_on_live, under cb_mu */
    void *live_ud;
    pthread_mutex_t cb_mu; /* held across a call of live_cb: unsetting it waits for one in flight */
    wclose *pend; /* under mu */
    int n_pend, cap_pend;
} remote;

/* the calling thread's client (bind_thread: 0 generation, 1 syncs, 5
 * starts; 3 any other thread) */
extern __thread int tc_wr_t_role;
/* the last cancel_id handed out (the process's instance in the high bits) */
extern _Atomic uint64_t tc_wr_cancel_ids;

/* ---- worker_remote.c: calls to a worker process ---- */
/* a unary call on the role's client: TC_ERR_IO when the worker is gone
 * or answered UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, ABORTED or
 * NOT_FOUND (its copies are stale: the caller recovers) */
tc_status tc_wr_call(remote *R, wproc *p, int role, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, double timeout_s);
/* the same, sending the worker a Cancel of cancel_id while the calling
 * thread's tc_cancelled() says yes */
tc_status tc_wr_call_cancellable(remote *R, wproc *p, const char *method, const ProtobufCMessage *req,
                                 uint64_t cancel_id, const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp,
                                 double timeout_s);
/* waits for p to be up again after `since` (a restart), at most the
 * recovery time */
tc_status tc_wr_wait_up(remote *R, wproc *p, double since);
/* waits for some worker pair to be live, at most a restart's recovery
 * time (TC_ERR_CANCELLED when the calling thread's request is) */
tc_status tc_wr_wait_live(remote *R);

/* ---- worker_remote_session.c: the worker client's table ---- */
/* the boot id of p's process now (0: down) */
uint64_t tc_wr_boot_of(remote *R, wproc *p);
/* the placement scheduler twice larger (mu held) */
tc_status tc_wr_sched_grow_locked(remote *R);
tc_status tc_wr_session_new(tc_worker_client *w, tc_wc_session **out);
void tc_wr_session_free(tc_worker_client *w, tc_wc_session *s);
tc_status tc_wr_append(tc_worker_client *w, tc_wc_session *s, const int32_t *t, int64_t n, float *logits);
tc_status tc_wr_prepare(tc_worker_client *w, tc_wc_session *s);
tc_status tc_wr_sync(tc_worker_client *w, tc_wc_session *s);
tc_status tc_wr_step(tc_worker_client *w, tc_wc_session **ss, const int32_t *t, int B, tc_sampler **smp,
                     int32_t *next, float *logits, tc_row_status *rows);
tc_status tc_wr_step_multi(tc_worker_client *w, tc_wc_session **ss, const int32_t *t, int B, tc_sampler **smp,
                           const tc_wc_burst *b, double max_s, int32_t *next, int kstride, int *n_out,
                           tc_row_status *rows);
tc_status tc_wr_truncate(tc_worker_client *w, tc_wc_session *s, int64_t n_keep);
tc_status tc_wr_failover(tc_worker_client *w, tc_wc_session *s);
void tc_wr_stats(tc_worker_client *w, const tc_wc_session *s, tc_wc_session_stats *o);
/* the supervisor, each round: closes the left copies (R->pend) whose
 * workers answer again */
void tc_wr_close_pending(remote *R);
int64_t tc_wr_history(tc_worker_client *w, const tc_wc_session *s, int32_t *out, int64_t max);

#endif
