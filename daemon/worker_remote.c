/* worker_remote.c — the worker client over tconst-worker processes
 * (DESIGN.md §4): the same table of functions as worker_local.c, so the
 * engine does not know whether the model runs in-process or in workers.
 *
 * Placement: each session lives on one worker pair (context + generation,
 * or one worker with both roles), chosen by the scheduler library
 * (least-loaded live pair). Routing:
 *   step     generation worker; tokens sampled there (one message per
 *            batched step carries every session's next token and RNG)
 *   sync     context worker (history since it last saw the session goes
 *            along), state shipped over the data plane, Import on the
 *            generation worker
 *   append   inside a window: generation worker; crossing a boundary (or
 *            the baseline's first prefill): context worker, full state
 *            shipped, Import
 * The coordinator keeps every session's token history, so a worker's copy
 * can always be rebuilt: after a worker restart (new boot id) a session is
 * re-opened and re-prefilled from its history on first use, and the
 * operation that failed is retried — the stream goes on, token for token.
 *
 * Supervision (one thread): spawned workers are restarted with backoff
 * when they exit; every worker is pinged, and one that does not answer for
 * --worker-timeout seconds is killed (spawned) or marked down (attached);
 * a generation worker's new data-plane address is handed to its context
 * peer. Operations wait for a worker that is down, at most the recovery
 * time, then fail (the client sees UNAVAILABLE through the engine). */
#include "worker_remote.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../scheduler/sched.h"
#include "metrics.h"
#include "rpc.h"
#include "spawn.h"
#include "worker.pb-c.h"

#define MAX_PROCS 32
#define MAX_ARGS 32
#define M(x) "/tconst.worker.v1.Worker/" x

typedef struct wproc {
    char name[48], role[16], addr[512], data_addr[320], transport[16];
    char device[32]; /* from its Info, under R->mu */
    int spawned;
    pid_t pid;
    char *argv[MAX_ARGS];
    uint64_t boot;  /* of the process we last talked to; 0: never up */
    int up;
    double last_ok, next_restart, backoff, up_since;
    int restarts;
    /* one client per calling thread kind: 0 generation thread, 1 context
     * thread (syncs), 2 supervisor, 3 any other thread, 4 Cancel (sent
     * while a context thread's client waits on the call it stops), 5 the
     * start thread (prefills: beside a sync, not behind it); each used
     * under its lock (a client runs one call at a time) */
    tc_rpc_client *cli[6];
    pthread_mutex_t cli_mu[6];
    struct wproc *peer;    /* context worker: its generation peer */
} wproc;

typedef struct {
    wproc *ctx, *gen; /* same pointer for a both-roles worker */
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
};

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
    pthread_t sup;
    int sup_started, stop;
    int giveup; /* abandon_waits: waits for a restart fail at once (shutdown) */
    uint64_t next_sid;
    uint64_t instance; /* sent in Info and Ping: the worker's owner */
    tc_sched *sched;
    char sockdir[256]; /* spawned workers' control sockets: a private mkdtemp directory */
    int live;           /* pairs with both workers up (set_gauges, under mu) */
    int live_reported;  /* what the supervisor last told live_cb */
    int sched_cap; /* sessions R->sched holds at most */
    void (*live_cb)(void *ud, int live_pairs); /* tc_worker_remote_on_live, under cb_mu */
    void *live_ud;
    pthread_mutex_t cb_mu; /* held across a call of live_cb: unsetting it waits for one in flight */
} remote;

static __thread int t_role = 3; /* set by bind_thread */

/* A socket directory (spawn_args): the workers' sockets, its owner file,
 * the directory. */
static void sockdir_remove(const char *dir) {
    char path[400];
    for (int i = 0; i < MAX_PROCS; i++) {
        snprintf(path, sizeof path, "%s/worker-%d.sock", dir, i);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/owner", dir);
    unlink(path);
    rmdir(dir);
}


/* ---- control-plane calls ---- */

/* Transport-level failures (the worker may be gone) and data-plane
 * failures come back as TC_ERR_IO: the caller recovers and retries. */
static tc_status call(remote *R, wproc *p, int role, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, double timeout_s) {
    (void)R;
    *resp = NULL;
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *b = malloc(n ? n : 1), *out = NULL;
    if (!b) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    protobuf_c_message_pack(req, b);
    size_t ol = 0;
    tc_rpc_result res = {0};
    pthread_mutex_lock(&p->cli_mu[role]);
    tc_status st = TC_ERR_IO;
    if (p->cli[role] || tc_rpc_client_open(&p->cli[role], p->addr) == TC_OK)
        st = tc_rpc_client_unary(p->cli[role], method, b, n, &out, &ol, timeout_s, &res);
    pthread_mutex_unlock(&p->cli_mu[role]);
    free(b);
    if (st != TC_OK) {
        free(out);
        return TC_ERR_IO;
    }
    /* NOT_FOUND: the worker has no copy of the session -- it restarted on
     * the same address and gRPC reconnected before a ping saw its new boot
     * id. An I/O error: the retry waits for that ping, which marks the
     * copies stale, and rebuilds them (DESIGN: a worker restart loses no
     * session) */
    if (res.code == TC_GRPC_UNAVAILABLE || res.code == TC_GRPC_DEADLINE_EXCEEDED || res.code == TC_GRPC_CANCELLED ||
        res.code == TC_GRPC_ABORTED || res.code == TC_GRPC_NOT_FOUND) {
        free(out);
        TC_LOG(TC_LOG_WARN, "workers", "%s %s: %s (code %d)", p->name, method + 25, res.message, res.code);
        tc_error_set("worker %s: %s: %s", p->name, method + 25, res.message);
        return TC_ERR_IO;
    }
    if (res.code != TC_GRPC_OK) {
        free(out);
        /* RESOURCE_EXHAUSTED: out of memory there, or (Info, Ping) the
         * worker serves another coordinator */
        return TC_FAIL(res.code == TC_GRPC_INVALID_ARGUMENT      ? TC_ERR_INVALID
                       : res.code == TC_GRPC_RESOURCE_EXHAUSTED ? TC_ERR_EXHAUSTED
                                                                : TC_ERR_INTERNAL,
                       "worker %s: %s", p->name, res.message);
    }
    *resp = protobuf_c_message_unpack(rd, NULL, ol, out ? out : (const uint8_t *)"");
    free(out);
    if (!*resp) return TC_FAIL(TC_ERR_INTERNAL, "worker %s: %s: undecodable response", p->name, method + 25);
    return TC_OK;
}

/* A compute call the calling thread's request may give up on (its
 * tc_cancelled predicate, armed by the engine around a prefill): while it
 * waits, a yes sends the worker a Cancel naming the call's cancel_id, and
 * the worker stops at its next layer or tile. The call then fails with
 * TC_ERR_CANCELLED -- unless the worker had finished computing: then it
 * completes as usual (its state may already be on the data plane, and
 * the Import must follow). */
typedef struct {
    remote *R;
    wproc *p;
    uint64_t id;
    double sent_at; /* 0: not sent */
} cancel_poll;
/* seconds between two Cancels of one call: one that was not delivered, or
 * whose id another client of the control port pushed out of the worker's
 * ring of recent ids, is sent again */
#define CANCEL_RESEND_S 1.0
static void poll_cancel(void *ud) {
    cancel_poll *x = ud;
    if (!x->id || (x->sent_at > 0 && tc_now_s() - x->sent_at < CANCEL_RESEND_S) || !tc_cancelled()) return;
    x->sent_at = tc_now_s();
    Tconst__Worker__V1__CancelRequest rq = TCONST__WORKER__V1__CANCEL_REQUEST__INIT;
    rq.cancel_id = x->id;
    ProtobufCMessage *r;
    if (call(x->R, x->p, 4, M("Cancel"), &rq.base, &tconst__worker__v1__cancel_response__descriptor, &r, 5.0) == TC_OK)
        protobuf_c_message_free_unpacked(r, NULL);
    else TC_LOG(TC_LOG_WARN, "workers", "%s: Cancel not delivered: %s", x->p->name, tc_error_get());
}
static _Atomic uint64_t g_cancel_ids;
static tc_status call_cancellable(remote *R, wproc *p, const char *method, const ProtobufCMessage *req,
                                  uint64_t cancel_id, const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp,
                                  double timeout_s) {
    cancel_poll x = {R, p, cancel_id, 0.0};
    tc_rpc_client_wait_poll(poll_cancel, &x);
    tc_status st = call(R, p, t_role, method, req, rd, resp, timeout_s);
    tc_rpc_client_wait_poll(NULL, NULL);
    if (st != TC_OK && x.sent_at > 0)
        return TC_FAIL(TC_ERR_CANCELLED, "worker %s: %s cancelled by its request", p->name, method + 25);
    return st;
}

/* Host of a control address, for a data address bound to all interfaces. */
static void fix_data_addr(const wproc *p, const char *given, char *out, size_t n) {
    char host[256];
    int port = 0;
    const char *c = strrchr(given, ':');
    if (!c) {
        snprintf(out, n, "%s", given);
        return;
    }
    port = atoi(c + 1);
    snprintf(host, sizeof host, "%.*s", (int)(c - given), given);
    if (host[0] && strcmp(host, "0.0.0.0") && strcmp(host, "[::]") && strcmp(host, "::")) {
        snprintf(out, n, "%s", given);
        return;
    }
    if (!strncmp(p->addr, "unix:", 5)) snprintf(out, n, "127.0.0.1:%d", port);
    else {
        const char *pc = strrchr(p->addr, ':');
        snprintf(out, n, "%.*s:%d", pc ? (int)(pc - p->addr) : 0, p->addr, port);
    }
}

/* Info on a worker that just answered: boot id, role, data address. */
static tc_status refresh_info(remote *R, wproc *p, Tconst__Worker__V1__InfoResponse **keep) {
    Tconst__Worker__V1__InfoRequest rq = TCONST__WORKER__V1__INFO_REQUEST__INIT;
    rq.coordinator = R->instance;
    ProtobufCMessage *r;
    TC_CHECK(call(R, p, 2, M("Info"), &rq.base, &tconst__worker__v1__info_response__descriptor, &r, 10.0));
    Tconst__Worker__V1__InfoResponse *ir = (Tconst__Worker__V1__InfoResponse *)r;
    snprintf(p->role, sizeof p->role, "%s", ir->role);
    snprintf(p->transport, sizeof p->transport, "%s", ir->transport);
    fix_data_addr(p, ir->data_address, p->data_addr, sizeof p->data_addr);
    pthread_mutex_lock(&R->mu); /* boot_of reads it under the lock from other threads */
    p->boot = ir->boot_id;
    snprintf(p->device, sizeof p->device, "%s", ir->device);
    pthread_mutex_unlock(&R->mu);
    if (keep) *keep = ir;
    else tconst__worker__v1__info_response__free_unpacked(ir, NULL);
    return TC_OK;
}

/* Hands the generation peer's data address to the context worker of the
 * pair p belongs to (after either restarted). Supervisor thread. */
typedef struct {
    remote *R;
    wproc *p;
    Tconst__Worker__V1__ConnectRequest *rq;
    tc_status st;
} connect_arg;

static void *connect_main(void *arg) {
    connect_arg *a = arg;
    ProtobufCMessage *r;
    a->st = call(a->R, a->p, 2, M("Connect"), &a->rq->base, &tconst__worker__v1__connect_response__descriptor, &r, 120.0);
    if (a->st == TC_OK) protobuf_c_message_free_unpacked(r, NULL);
    return NULL;
}

/* Points the context worker of p's pair at its generation peer (after
 * either restarted): the host transport's address, or a new NCCL
 * communicator — a fresh id from the context worker's Info, then Connect
 * on both at once (each blocks until the other joins). Supervisor thread. */
static void connect_pair(remote *R, wproc *p) {
    for (int i = 0; i < R->n_pairs; i++) {
        wpair *pr = &R->pairs[i];
        if (pr->ctx == pr->gen || (pr->ctx != p && pr->gen != p)) continue;
        if (!pr->ctx->up || !pr->gen->up) continue;
        Tconst__Worker__V1__ConnectRequest rq = TCONST__WORKER__V1__CONNECT_REQUEST__INIT;
        tc_status st;
        if (!strcmp(pr->ctx->transport, "nccl")) {
            Tconst__Worker__V1__InfoResponse *ir = NULL;
            if (refresh_info(R, pr->ctx, &ir) != TC_OK || ir->nccl_id.len != 128) {
                TC_LOG(TC_LOG_WARN, "workers", "%s: no NCCL id to connect with", pr->ctx->name);
                if (ir) tconst__worker__v1__info_response__free_unpacked(ir, NULL);
                continue;
            }
            Tconst__Worker__V1__ConnectRequest rg = TCONST__WORKER__V1__CONNECT_REQUEST__INIT;
            rq.nccl_id = rg.nccl_id = ir->nccl_id;
            rq.nccl_rank = 0, rg.nccl_rank = 1;
            connect_arg ga = {R, pr->gen, &rg, TC_OK};
            pthread_t th;
            int started = pthread_create(&th, NULL, connect_main, &ga) == 0;
            connect_arg ca = {R, pr->ctx, &rq, TC_OK};
            connect_main(&ca);
            if (started) pthread_join(th, NULL);
            tconst__worker__v1__info_response__free_unpacked(ir, NULL);
            st = ca.st != TC_OK ? ca.st : started ? ga.st : TC_ERR_INTERNAL;
        } else {
            if (!pr->gen->data_addr[0]) continue;
            rq.peer_data_address = pr->gen->data_addr;
            connect_arg ca = {R, pr->ctx, &rq, TC_OK};
            connect_main(&ca);
            st = ca.st;
        }
        if (st == TC_OK)
            TC_LOG(TC_LOG_INFO, "workers", "%s sends to %s (%s)", pr->ctx->name, pr->gen->name,
                   !strcmp(pr->ctx->transport, "nccl") ? "nccl" : pr->gen->data_addr);
        else TC_LOG(TC_LOG_WARN, "workers", "cannot connect %s to %s: %s", pr->ctx->name, pr->gen->name, tc_error_get());
    }
}

static void set_gauges(remote *R) {
    int up = 0, live = 0;
    for (int i = 0; i < R->n_procs; i++) up += R->procs[i]->up;
    for (int i = 0; i < R->n_pairs; i++) live += R->pairs[i].ctx->up && R->pairs[i].gen->up;
    R->live = live;
    tc_metric_set(TC_G_workers_up, up);
}

static int r_workers(tc_worker_client *w, tc_wc_worker_info *out, int max) {
    remote *R = w->impl;
    int n = 0;
    pthread_mutex_lock(&R->mu);
    for (int i = 0; i < R->n_procs && n < max; i++, n++) {
        const wproc *p = R->procs[i];
        snprintf(out[n].role, sizeof out[n].role, "%s", p->role);
        snprintf(out[n].device, sizeof out[n].device, "%s", p->device);
        snprintf(out[n].address, sizeof out[n].address, "%s", p->addr);
        out[n].ready = p->up;
    }
    pthread_mutex_unlock(&R->mu);
    return n;
}

static int r_live_pairs(tc_worker_client *w) {
    remote *R = w->impl;
    pthread_mutex_lock(&R->mu);
    const int n = R->live;
    pthread_mutex_unlock(&R->mu);
    return n;
}

/* the supervisor, after a round: tell the owner when the live count moved
 * (outside mu: the owner takes its own locks and notifies its watchers) */
/* cb_mu then mu: the count read and told in one piece, so the owner
 * never hears an older count after a newer one */
static void report_live(remote *R) {
    pthread_mutex_lock(&R->cb_mu);
    pthread_mutex_lock(&R->mu);
    const int n = R->live, changed = n != R->live_reported;
    R->live_reported = n;
    pthread_mutex_unlock(&R->mu);
    if (changed) {
        if (n == 0) TC_LOG(TC_LOG_WARN, "workers", "no worker pair is up: not ready until one is back");
        else TC_LOG(TC_LOG_INFO, "workers", "%d worker pair(s) up", n);
        if (R->live_cb) R->live_cb(R->live_ud, n);
    }
    pthread_mutex_unlock(&R->cb_mu);
}

/* the callback hears the current count at once, then every change */
void tc_worker_remote_on_live(tc_worker_client *w, void (*cb)(void *ud, int live_pairs), void *ud) {
    remote *R = w->impl;
    pthread_mutex_lock(&R->cb_mu);
    R->live_cb = cb, R->live_ud = ud;
    pthread_mutex_lock(&R->mu);
    const int n = R->live;
    R->live_reported = n;
    pthread_mutex_unlock(&R->mu);
    if (cb) cb(ud, n);
    pthread_mutex_unlock(&R->cb_mu);
}

/* ---- supervision ---- */
static tc_status start_proc(remote *R, wproc *p) {
    char line[512];
    pid_t pid;
    TC_CHECK(tc_spawn(p->argv, R->o.start_timeout_s, &R->stop, &pid, line, sizeof line));
    p->pid = pid;
    TC_LOG(TC_LOG_INFO, "workers", "%s started (pid %d): %s", p->name, (int)pid, line);
    return TC_OK;
}

static void mark_down(remote *R, wproc *p, const char *why) {
    pthread_mutex_lock(&R->mu);
    if (p->up) TC_LOG(TC_LOG_WARN, "workers", "%s down: %s", p->name, why);
    p->up = 0;
    for (int i = 0; i < R->n_pairs; i++)
        if (R->pairs[i].ctx == p || R->pairs[i].gen == p) tc_sched_pair_set_live(R->sched, i, 0);
    set_gauges(R);
    pthread_cond_broadcast(&R->cv);
    pthread_mutex_unlock(&R->mu);
}

static void supervise_one(remote *R, wproc *p) {
    double now = tc_now_s();
    int status;
    if (p->spawned && p->pid > 0 && tc_child_exited(p->pid, &status)) {
        char why[96];
        snprintf(why, sizeof why, "process exited (%s %d)", WIFEXITED(status) ? "code" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        p->pid = -1;
        mark_down(R, p, why);
        report_live(R); /* now: the restart below may take the whole start budget */
    }
    if (p->spawned && p->pid <= 0) {
        if (now < p->next_restart) return;
        if (start_proc(R, p) != TC_OK) {
            TC_LOG(TC_LOG_ERROR, "workers", "%s: restart failed: %s", p->name, tc_error_get());
            p->backoff = p->backoff > 0 ? fmin(p->backoff * 2, 10.0) : 0.25;
            p->next_restart = now + p->backoff;
            return;
        }
        p->restarts++;
        tc_metric_inc(TC_M_worker_restarts_total, 1);
        pthread_mutex_lock(&p->cli_mu[2]);
        tc_rpc_client_close(p->cli[2]); /* a fresh channel connects at once */
        p->cli[2] = NULL;
        pthread_mutex_unlock(&p->cli_mu[2]);
    }
    Tconst__Worker__V1__PingRequest rq = TCONST__WORKER__V1__PING_REQUEST__INIT;
    rq.coordinator = R->instance;
    ProtobufCMessage *r;
    double dl = fmin(1.0, R->o.timeout_s);
    if (call(R, p, 2, M("Ping"), &rq.base, &tconst__worker__v1__ping_response__descriptor, &r, dl) == TC_OK) {
        uint64_t boot = ((Tconst__Worker__V1__PingResponse *)r)->boot_id;
        protobuf_c_message_free_unpacked(r, NULL);
        int fresh = boot != p->boot || !p->up;
        if (boot != p->boot && refresh_info(R, p, NULL) != TC_OK) return;
        pthread_mutex_lock(&R->mu);
        if (!p->up) {
            TC_LOG(TC_LOG_INFO, "workers", "%s up (boot %016llx)", p->name, (unsigned long long)p->boot);
            p->up_since = now;
        }
        p->up = 1;
        p->last_ok = now;
        for (int i = 0; i < R->n_pairs; i++)
            if (R->pairs[i].ctx->up && R->pairs[i].gen->up) tc_sched_pair_set_live(R->sched, i, 1);
        set_gauges(R);
        pthread_mutex_unlock(&R->mu);
        if (fresh) connect_pair(R, p);
        pthread_mutex_lock(&R->mu);
        pthread_cond_broadcast(&R->cv);
        pthread_mutex_unlock(&R->mu);
        if (now - p->up_since > 30) p->backoff = 0;
        return;
    }
    if (now - p->last_ok < R->o.timeout_s) return;
    if (p->spawned && p->pid > 0) {
        TC_LOG(TC_LOG_ERROR, "workers", "%s (pid %d) has not answered for %.1f s: killing it", p->name, (int)p->pid,
               now - p->last_ok);
        tc_child_kill(p->pid);
        p->pid = -1;
        p->backoff = p->backoff > 0 ? fmin(p->backoff * 2, 10.0) : 0.1;
        p->next_restart = now + p->backoff;
    }
    mark_down(R, p, "not answering pings");
}

/* SIGTERM to every spawned worker at once, SIGKILL to those still there
 * after 5 s (they close their data planes first) */
static void stop_spawned(remote *R) {
    pid_t pids[64];
    int n = 0;
    for (int i = 0; i < R->n_procs && n < 64; i++)
        if (R->procs[i]->spawned && R->procs[i]->pid > 0) pids[n++] = R->procs[i]->pid;
    tc_children_stop(pids, n, 5.0);
    for (int i = 0; i < R->n_procs; i++)
        if (R->procs[i]->spawned) R->procs[i]->pid = -1;
}

static void *supervisor_main(void *arg) {
    remote *R = arg;
    pthread_mutex_lock(&R->mu);
    while (!R->stop) {
        pthread_mutex_unlock(&R->mu);
        for (int i = 0; i < R->n_procs; i++) supervise_one(R, R->procs[i]);
        report_live(R);
        pthread_mutex_lock(&R->mu);
        if (R->stop) break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double iv = fmin(0.2, R->o.timeout_s / 4);
        ts.tv_nsec += (long)(iv * 1e9);
        while (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&R->cv, &R->mu, &ts);
    }
    pthread_mutex_unlock(&R->mu);
    stop_spawned(R); /* before this thread ends: the workers it restarted die with it (PR_SET_PDEATHSIG) */
    return NULL;
}

/* After a failed call on p: waits until p answers again (a restart, or
 * the same process back), at most the recovery budget -- or until the
 * calling thread's request is cancelled (tc_cancelled: TC_ERR_CANCELLED). */
static tc_status wait_up(remote *R, wproc *p, double since) {
    /* a spawned worker is restarted here (model load included); an attached
     * one must come back by itself (its orchestrator restarts it) */
    double budget = p->spawned ? R->o.timeout_s + R->o.start_timeout_s + 5 : 2 * R->o.timeout_s;
    double end = tc_now_s() + budget;
    int cancelled = 0;
    pthread_mutex_lock(&R->mu);
    while (!R->stop && !R->giveup && !tc_spawn_cancelled() && tc_now_s() < end && !(p->up && p->last_ok > since)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&R->cv, &R->mu, &ts);
        pthread_mutex_unlock(&R->mu); /* the predicate may take the engine's locks: not under mu */
        cancelled = tc_cancelled();
        pthread_mutex_lock(&R->mu);
        if (cancelled) break;
    }
    int ok = p->up && p->last_ok > since && !R->stop && !R->giveup;
    const int gave_up = R->giveup;
    pthread_mutex_unlock(&R->mu);
    if (!ok && cancelled) return TC_FAIL(TC_ERR_CANCELLED, "worker %s is unavailable; its request was cancelled", p->name);
    if (!ok && gave_up) return TC_FAIL(TC_ERR_IO, "worker %s is unavailable (shutting down)", p->name);
    if (!ok) return TC_FAIL(TC_ERR_IO, "worker %s is unavailable (not back within %.0f s)", p->name, budget);
    return TC_OK;
}

/* ---- session copies ---- */
static int is_both(remote *R, const tc_wc_session *s) { return R->pairs[s->pair].ctx == R->pairs[s->pair].gen; }

static tc_status open_on(remote *R, wproc *p, uint64_t sid) {
    Tconst__Worker__V1__SessionRef rq = TCONST__WORKER__V1__SESSION_REF__INIT;
    rq.sid = sid;
    ProtobufCMessage *r;
    TC_CHECK(call(R, p, t_role, M("Open"), &rq.base, &tconst__worker__v1__session_reply__descriptor, &r, R->o.timeout_s));
    protobuf_c_message_free_unpacked(r, NULL);
    return TC_OK;
}

static uint64_t boot_of(remote *R, wproc *p) {
    pthread_mutex_lock(&R->mu);
    uint64_t b = p->boot;
    pthread_mutex_unlock(&R->mu);
    return b;
}

/* The context copy exists on the context worker's current process. */
static tc_status ensure_ctx(remote *R, tc_wc_session *s) {
    wproc *c = R->pairs[s->pair].ctx;
    uint64_t b = boot_of(R, c);
    /* a copy ahead of the history (an append that failed after the context
     * worker took it) is unknown: start it over, never send hist past n */
    if (s->ctx_len > s->n) s->ctx_boot = 0;
    if (s->ctx_boot == b && b) return TC_OK;
    TC_CHECK(open_on(R, c, s->sid));
    s->ctx_boot = s->ctx_opened = b;
    s->ctx_len = 0;
    return TC_OK;
}

/* Installs what the context worker shipped under s->seq on the generation
 * worker; shipped_s: the sending side's share of the transfer time. */
static tc_status import_on_gen(remote *R, tc_wc_session *s, double shipped_s) {
    Tconst__Worker__V1__ImportRequest iq = TCONST__WORKER__V1__IMPORT_REQUEST__INIT;
    iq.sid = s->sid;
    iq.seq = s->seq;
    iq.timeout_s = R->o.timeout_s;
    ProtobufCMessage *r;
    double t0 = tc_now_s();
    tc_status st = call(R, R->pairs[s->pair].gen, t_role, M("Import"), &iq.base,
                        &tconst__worker__v1__session_reply__descriptor, &r, R->o.timeout_s + 5);
    if (st != TC_OK) {
        s->gen_boot = 0;
        return st;
    }
    s->state_bytes = ((Tconst__Worker__V1__SessionReply *)r)->state_bytes;
    protobuf_c_message_free_unpacked(r, NULL);
    tc_metric_observe(TC_H_data_plane_transfer_seconds, shipped_s + (tc_now_s() - t0));
    return TC_OK;
}

/* Ships the full state of the context copy (with `tokens` appended) to the
 * generation worker; logits of the last token when asked. */
static tc_status append_via_ctx(remote *R, tc_wc_session *s, const int32_t *t, int64_t n, float *logits) {
    wpair *pr = &R->pairs[s->pair];
    TC_CHECK(ensure_ctx(R, s));
    uint64_t gb = boot_of(R, pr->gen);
    int opened = 0;
    if (s->gen_boot != gb || !gb) { /* an empty copy to import into */
        TC_CHECK(open_on(R, pr->gen, s->sid));
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
    rq.cancel_id = ++g_cancel_ids;
    ProtobufCMessage *r;
    double t0 = tc_now_s();
    tc_status st = call_cancellable(R, pr->ctx, M("Append"), &rq.base, rq.cancel_id,
                                    &tconst__worker__v1__append_response__descriptor, &r, R->o.compute_timeout_s);
    if (st != TC_OK) {
        s->ctx_boot = 0; /* its copy is unknown now */
        if (opened) s->gen_boot = 0; /* and the new generation copy is empty */
        return st;
    }
    Tconst__Worker__V1__AppendResponse *ar = (Tconst__Worker__V1__AppendResponse *)r;
    if (logits && ar->n_logits == (size_t)R->cfg.vocab_size) memcpy(logits, ar->logits, ar->n_logits * 4);
    else if (logits) st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: append returned %zu logits", pr->ctx->name, ar->n_logits);
    tc_metric_inc(TC_M_data_plane_bytes_total, (double)ar->sent_bytes);
    tconst__worker__v1__append_response__free_unpacked(ar, NULL);
    if (st != TC_OK) { /* the context copy took the tokens; the history did not */
        s->ctx_boot = 0;
        if (opened) s->gen_boot = 0;
        return st;
    }
    s->ctx_len = s->n + n;
    st = import_on_gen(R, s, tc_now_s() - t0);
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
    /* a both-roles worker prefills here; in a split pair these are a few
     * rows inside a window, not worth a rebuild of the copy */
    if (is_both(R, s)) rq.cancel_id = ++g_cancel_ids;
    ProtobufCMessage *r;
    tc_status st = call_cancellable(R, g, M("Append"), &rq.base, rq.cancel_id,
                                    &tconst__worker__v1__append_response__descriptor, &r, R->o.compute_timeout_s);
    if (st != TC_OK) {
        s->gen_boot = 0;
        return st;
    }
    Tconst__Worker__V1__AppendResponse *ar = (Tconst__Worker__V1__AppendResponse *)r;
    if (logits && ar->n_logits == (size_t)R->cfg.vocab_size) memcpy(logits, ar->logits, ar->n_logits * 4);
    else if (logits) st = TC_FAIL(TC_ERR_INTERNAL, "worker %s: append returned %zu logits", g->name, ar->n_logits);
    if (ar->s) s->state_bytes = ar->s->state_bytes;
    tconst__worker__v1__append_response__free_unpacked(ar, NULL);
    return st;
}

/* The generation copy exists on the generation worker's current process
 * and holds the whole history (rebuilt after a restart). */
static tc_status ensure_gen(remote *R, tc_wc_session *s) {
    wproc *g = R->pairs[s->pair].gen;
    uint64_t b = boot_of(R, g);
    if (s->gen_boot == b && b) return TC_OK;
    if (s->n > 0) tc_metric_inc(TC_M_worker_rebuilds_total, 1);
    if (s->n > 0 && !is_both(R, s)) {
        /* rebuild through a fresh context copy: a prefill of the history */
        s->ctx_boot = 0;
        TC_CHECK(ensure_ctx(R, s));
        int64_t n = s->n;
        s->n = 0; /* append_via_ctx appends hist[0:n] as new tokens */
        tc_status st = append_via_ctx(R, s, s->hist, n, NULL);
        s->n = n;
        TC_CHECK(st);
    } else {
        TC_CHECK(open_on(R, g, s->sid));
        s->gen_boot = s->gen_opened = b;
        if (s->n > 0) {
            tc_status st = append_on_gen(R, s, s->hist, s->n, NULL);
            if (st != TC_OK) s->gen_boot = 0;
            TC_CHECK(st);
        }
    }
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

/* Runs op until it succeeds, fails for a reason other than a worker, or
 * the worker does not come back. */
#define RETRY(R, s, expr)                                                   \
    do {                                                                        \
        tc_status st_;                                                          \
        for (int attempt_ = 0;; attempt_++) {                                   \
            double t_ = tc_now_s();                                             \
            st_ = (expr);                                                       \
            if (st_ != TC_ERR_IO || attempt_ == 3) break;                       \
            if (tc_cancelled()) /* its request is gone: no wait for a restart */ \
                return TC_FAIL(TC_ERR_CANCELLED, "%s (its request was cancelled)", tc_error_get()); \
            TC_LOG(TC_LOG_WARN, "workers", "session %llu: %s; recovering",      \
                   (unsigned long long)(s)->sid, tc_error_get());               \
            for (int k_ = 0; k_ < 2; k_++) {                                    \
                wproc *w_ = k_ ? R->pairs[(s)->pair].ctx : R->pairs[(s)->pair].gen; \
                tc_status wst_ = wait_up(R, w_, t_);                             \
                if (wst_ != TC_OK) return wst_ == TC_ERR_CANCELLED ? wst_ : TC_ERR_IO; \
            }                                                                   \
        }                                                                       \
        if (st_ != TC_OK) return st_;                                           \
    } while (0)

/* ---- the table ---- */
/* The placement scheduler full (admission is the engine's: a journal
 * restored past a lowered --max-sessions brings more sessions than it was
 * sized for): a twice larger one with every session on its pair and each
 * pair's liveness as it was. Caller holds mu. */
static tc_status grow_sched_locked(remote *R) {
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

static tc_status r_new(tc_worker_client *w, tc_wc_session **out) {
    remote *R = w->impl;
    tc_wc_session *s = calloc(1, sizeof *s);
    if (!s) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    pthread_mutex_lock(&R->mu);
    s->sid = R->next_sid++;
    tc_sched_stats ss;
    tc_sched_get_stats(R->sched, &ss);
    tc_status st = ss.sessions >= R->sched_cap ? grow_sched_locked(R) : TC_OK;
    if (st == TC_OK) st = tc_sched_admit(R->sched, s->sid, 0, &s->pair);
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

static void r_free_s(tc_worker_client *w, tc_wc_session *s) {
    remote *R = w->impl;
    if (!s) return;
    Tconst__Worker__V1__SessionRef rq = TCONST__WORKER__V1__SESSION_REF__INIT;
    rq.sid = s->sid;
    wpair *pr = &R->pairs[s->pair];
    /* its place first: the engine counts the session gone now, and the
     * Closes below may wait behind a running sync (the engine's reaper
     * thread runs them) -- a new session must not be refused meanwhile */
    pthread_mutex_lock(&R->mu);
    tc_sched_close(R->sched, s->sid);
    pthread_mutex_unlock(&R->mu);
    for (int k = 0; k < 2; k++) {
        wproc *p = k ? pr->ctx : pr->gen;
        const uint64_t copy = k ? s->ctx_boot : s->gen_boot, opened = k ? s->ctx_opened : s->gen_opened;
        const uint64_t b = boot_of(R, p);
        if (k && pr->ctx == pr->gen) break;
        /* a valid copy, or one a failed or cancelled call left unknown,
         * on the worker's current process (a cancelled prefill's copy
         * otherwise stayed there until the coordinator changed) */
        if (!b || (copy != b && opened != b)) continue; /* nothing there */
        ProtobufCMessage *r;
        if (call(R, p, t_role, M("Close"), &rq.base, &tconst__worker__v1__session_reply__descriptor, &r, 5.0) == TC_OK)
            protobuf_c_message_free_unpacked(r, NULL);
    }
    free(s->hist);
    free(s);
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

static tc_status r_append(tc_worker_client *w, tc_wc_session *s, const int32_t *t, int64_t n, float *logits) {
    remote *R = w->impl;
    if (n <= 0) return TC_FAIL(TC_ERR_INVALID, "append: no tokens");
    for (int64_t i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= R->cfg.vocab_size)
            return TC_FAIL(TC_ERR_INVALID, "token id %d at index %lld is outside the vocabulary [0, %d)", t[i],
                           (long long)i, R->cfg.vocab_size);
    /* the room first: once the workers hold the tokens, the history must
     * take them (a retry would apply them twice) */
    TC_CHECK(hist_reserve(s, n));
    RETRY(R, s, do_append(R, s, t, n, logits));
    (void)hist_push(s, t, n); /* reserved: cannot fail */
    if (R->cfg.arch != TC_ARCH_TRANSFORMER) {
        int64_t W = R->cfg.generate_window, w1 = ((s->n - 1) / W) * W;
        if (w1 != s->synced_at) s->syncs++;
        s->synced_at = w1;
    }
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
        TC_CHECK(ensure_ctx(R, s));
        rq.extend = s->hist + s->ctx_len;
        rq.n_extend = (size_t)(s->n - s->ctx_len);
        rq.send_seq = ++s->seq;
    }
    rq.cancel_id = ++g_cancel_ids; /* the engine stops the sync of a generation that was cancelled */
    ProtobufCMessage *r;
    double t0 = tc_now_s();
    tc_status st = call_cancellable(R, c, M("Sync"), &rq.base, rq.cancel_id,
                                    &tconst__worker__v1__sync_response__descriptor, &r, R->o.compute_timeout_s);
    if (st != TC_OK) {
        if (is_both(R, s)) s->gen_boot = 0;
        else s->ctx_boot = 0;
        return st;
    }
    Tconst__Worker__V1__SyncResponse *sr = (Tconst__Worker__V1__SyncResponse *)r;
    double sync_s = sr->compute_s;
    tc_metric_inc(TC_M_data_plane_bytes_total, (double)sr->sent_bytes);
    if (sr->s) s->state_bytes = sr->s->state_bytes;
    tconst__worker__v1__sync_response__free_unpacked(sr, NULL);
    if (!is_both(R, s)) {
        s->ctx_len = s->n;
        TC_CHECK(import_on_gen(R, s, tc_now_s() - t0 - sync_s));
    }
    s->synced_at = s->n;
    s->syncs++;
    return TC_OK;
}

static tc_status r_prepare(tc_worker_client *w, tc_wc_session *s) {
    remote *R = w->impl;
    const uint64_t b = boot_of(R, R->pairs[s->pair].gen);
    if (s->gen_boot == b && b) return TC_OK;
    TC_LOG(TC_LOG_INFO, "workers", "session %llu: rebuilding its generation copy (%lld tokens) before its generation",
           (unsigned long long)s->sid, (long long)s->n);
    RETRY(R, s, ensure_gen(R, s));
    return TC_OK;
}

static tc_status r_sync(tc_worker_client *w, tc_wc_session *s) {
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
        st = call(R, g, t_role, M("Step"), &rq.base, &tconst__worker__v1__step_response__descriptor, &r, R->o.timeout_s);
        if (st == TC_ERR_IO)
            for (int k = 0; k < n; k++) ss[ix[k]]->gen_boot = 0; /* did the step happen? rebuild to be sure */
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
        for (size_t k = 0, o = 0; k < (size_t)n && st == TC_OK; k++) {
            const size_t i = (size_t)ix[k];
            int c = multi ? sr->counts[k] : 1;
            if (ba) ba->n_out[i] = c;
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
    t_role = a->role; /* this pair's clients for the caller's role: no other thread uses them now */
    remote *R = a->R;
    for (int attempt = 0;; attempt++) {
        double t0 = tc_now_s();
        a->st = do_step(R, a->ss, a->t, a->k, a->smp, a->next, a->logits, a->pair, a->bap, a->rows);
        if (a->st != TC_ERR_IO || attempt == 3) break;
        TC_LOG(TC_LOG_WARN, "workers", "step of %d sessions: %s; recovering", a->k, tc_error_get());
        if (wait_up(R, R->pairs[a->pair].gen, t0) != TC_OK || wait_up(R, R->pairs[a->pair].ctx, t0) != TC_OK) break;
    }
    if (a->st != TC_OK) snprintf(a->err, sizeof a->err, "%s", tc_error_get() ? tc_error_get() : tc_status_str(a->st));
    return NULL;
}

/* A batched step (b == NULL: one token each) or a multi-step call
 * (step_multi): the sessions of each pair in one message, the pairs'
 * messages at the same time, one thread per extra pair (a session's pair
 * never changes). */
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
        a->logits = gl ? gl + (size_t)k0 * V : NULL, a->k = k - k0, a->pair = p, a->role = t_role;
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
     * pair stepped; otherwise (or when none stepped) the call fails */
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
                if (st == TC_OK) row_fail(&rows[j], ps[g].st, ps[g].err);
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

static tc_status r_step(tc_worker_client *w, tc_wc_session **ss, const int32_t *t, int B, tc_sampler **smp,
                        int32_t *next, float *logits, tc_row_status *rows) {
    return step_any(w->impl, ss, t, B, smp, next, logits, NULL, 0, 1, NULL, rows);
}

static tc_status r_step_multi(tc_worker_client *w, tc_wc_session **ss, const int32_t *t, int B, tc_sampler **smp,
                              const tc_wc_burst *b, double max_s, int32_t *next, int kstride, int *n_out,
                              tc_row_status *rows) {
    return step_any(w->impl, ss, t, B, smp, next, NULL, b, max_s, kstride, n_out, rows);
}

static tc_status r_truncate(tc_worker_client *w, tc_wc_session *s, int64_t n_keep) {
    (void)w;
    if (n_keep < 0 || n_keep > s->n)
        return TC_FAIL(TC_ERR_INVALID, "truncate: %lld tokens kept of %lld", (long long)n_keep, (long long)s->n);
    if (n_keep == s->n) return TC_OK;
    s->n = n_keep;
    if (s->ctx_len > n_keep) s->ctx_len = n_keep;
    s->gen_boot = s->ctx_boot = 0; /* both copies are ahead: rebuilt from the history on next use */
    return TC_OK;
}

static void r_stats(tc_worker_client *w, const tc_wc_session *s, tc_wc_session_stats *o) {
    remote *R = w->impl;
    o->length = s->n;
    o->syncs = s->syncs;
    o->state_bytes = s->state_bytes;
    o->sync_due = sync_due(R, s);
    o->pair = s->pair;
}

static int64_t r_history(tc_worker_client *w, const tc_wc_session *s, int32_t *out, int64_t max) {
    (void)w;
    if (out && max >= s->n && s->n > 0) memcpy(out, s->hist, (size_t)s->n * 4);
    return s->n;
}

static void r_bind(tc_worker_client *w, int role) {
    (void)w;
    t_role = role == 1 ? 1 : role == 2 ? 5 : 0;
}

static void r_abandon(tc_worker_client *w) {
    remote *R = w->impl;
    pthread_mutex_lock(&R->mu);
    R->giveup = 1;
    pthread_cond_broadcast(&R->cv);
    pthread_mutex_unlock(&R->mu);
}

static void r_free(tc_worker_client *w) {
    remote *R = w->impl;
    if (R->sup_started) {
        pthread_mutex_lock(&R->mu);
        R->stop = 1;
        pthread_cond_broadcast(&R->cv);
        pthread_mutex_unlock(&R->mu);
        pthread_join(R->sup, NULL); /* it stopped the spawned workers */
    }
    stop_spawned(R); /* (without a supervisor: a start-up that failed) */
    for (int i = 0; i < R->n_procs; i++) {
        wproc *p = R->procs[i];
        if (!p->spawned && p->boot) { /* attached: free it for the next coordinator now */
            Tconst__Worker__V1__PingRequest rq = TCONST__WORKER__V1__PING_REQUEST__INIT;
            rq.coordinator = R->instance;
            rq.release = 1;
            ProtobufCMessage *r;
            if (call(R, p, 2, M("Ping"), &rq.base, &tconst__worker__v1__ping_response__descriptor, &r, 2.0) == TC_OK)
                protobuf_c_message_free_unpacked(r, NULL);
        }
        for (int k = 0; k < 6; k++) tc_rpc_client_close(p->cli[k]), pthread_mutex_destroy(&p->cli_mu[k]);
        for (int k = 0; k < MAX_ARGS && p->argv[k]; k++) free(p->argv[k]);
        free(p);
    }
    if (R->sockdir[0]) sockdir_remove(R->sockdir); /* the workers are gone */
    tc_sched_free(R->sched);
    free(R);
    free(w);
}

/* ---- set-up ---- */
/* Socket directories a tconstd of this user left under tmp when it was
 * killed (kill -9, OOM): its owner file names a process that is gone.
 * Directories without one, of other users, or of a live process stay. */
static void sockdir_sweep(const char *tmp) {
    DIR *d = opendir(tmp);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "tconstd-", 8) != 0 || strlen(e->d_name) != 14) continue;
        char dir[300], path[320];
        snprintf(dir, sizeof dir, "%s/%s", tmp, e->d_name);
        struct stat st;
        if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) continue;
        snprintf(path, sizeof path, "%s/owner", dir);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        long pid = 0;
        const int got = fscanf(f, "%ld", &pid);
        fclose(f);
        if (got != 1 || pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        TC_LOG(TC_LOG_INFO, "workers", "removing %s, left by tconstd pid %ld (gone)", dir, pid);
        sockdir_remove(dir);
    }
    closedir(d);
}

static wproc *new_proc(remote *R, const char *name, const char *role) {
    if (R->n_procs == MAX_PROCS) return NULL;
    wproc *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->role, sizeof p->role, "%s", role);
    p->pid = -1;
    for (int k = 0; k < 6; k++) pthread_mutex_init(&p->cli_mu[k], NULL);
    R->procs[R->n_procs++] = p;
    return p;
}

static int add_arg(wproc *p, int *k, const char *a) {
    if (*k >= MAX_ARGS - 1 || !(p->argv[*k] = strdup(a))) return -1;
    (*k)++;
    return 0;
}

static tc_status spawn_args(remote *R, wproc *p, const char *role, int idx) {
    /* in a directory of this run's own (0700): a name under the shared
     * /tmp could be taken by a stale socket of another user (a pid reused
     * after a crash) and make the bind fail */
    if (!R->sockdir[0]) {
        const char *tmp = getenv("TMPDIR");
        sockdir_sweep(tmp && *tmp ? tmp : "/tmp");
        snprintf(R->sockdir, sizeof R->sockdir, "%s/tconstd-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(R->sockdir)) {
            const int e = errno;
            R->sockdir[0] = 0;
            return TC_FAIL(TC_ERR_IO, "cannot create the workers' socket directory under %s: %s",
                           tmp && *tmp ? tmp : "/tmp", strerror(e));
        }
        char own[300];
        snprintf(own, sizeof own, "%s/owner", R->sockdir);
        FILE *f = fopen(own, "w"); /* this process: a later tconstd removes the directory if it dies */
        if (f) fprintf(f, "%ld\n", (long)getpid()), fclose(f);
    }
    char sock[320];
    snprintf(sock, sizeof sock, "unix:%s/worker-%d.sock", R->sockdir, idx);
    snprintf(p->addr, sizeof p->addr, "%s", sock);
    char th[32], nice[32];
    snprintf(th, sizeof th, "%d", R->o.threads);
    snprintf(nice, sizeof nice, "%d", strcmp(role, "context") ? 0 : R->o.context_nice);
    const char *dev = !strcmp(role, "context") && R->o.context_device && R->o.context_device[0] ? R->o.context_device
                                                                                             : R->o.device;
    const char *args[] = {R->o.binary, "--role", role, "--listen", sock, "--data-listen", "127.0.0.1:0", "--device",
                          dev, "--threads", th, "--log-level", R->o.log_level, "--log-format", R->o.log_format,
                          "--model", R->o.model, "--nice", nice, NULL};
    int k = 0;
    for (int i = 0; args[i]; i++)
        if (add_arg(p, &k, args[i]) != 0) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    p->spawned = 1;
    return TC_OK;
}

static tc_status first_contact(remote *R, wproc *p, int *have_cfg) {
    /* attached workers may still be loading: give them the start budget */
    double end = tc_now_s() + (p->spawned ? 10.0 : R->o.start_timeout_s);
    Tconst__Worker__V1__InfoResponse *ir = NULL;
    tc_status st;
    int said = 0;
    while (((st = refresh_info(R, p, &ir)) == TC_ERR_IO || st == TC_ERR_EXHAUSTED) && tc_now_s() < end &&
           !tc_spawn_cancelled()) {
        if (st == TC_ERR_EXHAUSTED && !said++) /* a coordinator before us: it takes the worker when silent */
            TC_LOG(TC_LOG_WARN, "workers", "waiting for %s: %s", p->name, tc_error_get());
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (st != TC_OK) {
        char why[600]; /* tc_error_get() is the buffer TC_FAIL writes */
        snprintf(why, sizeof why, "%s", tc_error_get() ? tc_error_get() : tc_status_str(st));
        return TC_FAIL(TC_ERR_IO, "worker %s at %s %s: %s", p->name, p->addr,
                       st == TC_ERR_EXHAUSTED ? "is not free" : "does not answer", why);
    }
    if (!*have_cfg) {
        st = tc_config_from_json(&R->cfg, ir->config_json, p->name);
        snprintf(R->dtype, sizeof R->dtype, "%s", ir->dtype);
        snprintf(R->device, sizeof R->device, "%s", ir->device);
        *have_cfg = st == TC_OK;
    } else {
        tc_model_config c2;
        st = tc_config_from_json(&c2, ir->config_json, p->name);
        if (st == TC_OK && memcmp(&c2, &R->cfg, sizeof c2) != 0)
            st = TC_FAIL(TC_ERR_INVALID, "worker %s serves a different model than the first worker", p->name);
    }
    /* the device ModelInfo shows: the generation side's (the hit steps), not a
     * context worker's own (--context-device) */
    if (st == TC_OK && (!strcmp(ir->role, "generation") || !strcmp(ir->role, "both")))
        snprintf(R->device, sizeof R->device, "%s", ir->device);
    R->n_params = ir->n_params;
    tconst__worker__v1__info_response__free_unpacked(ir, NULL);
    TC_CHECK(st);
    p->up = 1;
    p->last_ok = p->up_since = tc_now_s();
    return TC_OK;
}

tc_status tc_worker_remote_open(tc_worker_client **out, const tc_remote_opts *o) {
    *out = NULL;
    remote *R = calloc(1, sizeof *R);
    tc_worker_client *w = calloc(1, sizeof *w);
    if (!R || !w) {
        free(R), free(w);
        return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    }
    R->o = *o;
    pthread_mutex_init(&R->mu, NULL);
    pthread_mutex_init(&R->cb_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&R->cv, &ca);
    R->next_sid = ((uint64_t)tc_wall_ms() << 16) | 1; /* never reused across coordinator restarts */
    /* this coordinator's instance id: a worker serves one at a time */
    R->instance = ((uint64_t)tc_wall_ms() << 20) ^ ((uint64_t)getpid() << 1) ^ (uint64_t)(uintptr_t)R;
    if (!R->instance) R->instance = 1;
    /* Cancel ids unlike any an earlier coordinator of the same workers used */
    atomic_store(&g_cancel_ids, R->instance << 16);
    w->impl = R;
    tc_status st = TC_OK;
    if (o->workers && o->workers[0]) {
        /* attached: each address's role comes from its Info */
        char *list = strdup(o->workers), *save = NULL;
        int i = 0;
        for (char *a = strtok_r(list, ",", &save); a && st == TC_OK; a = strtok_r(NULL, ",", &save), i++) {
            while (*a == ' ') a++;
            char nm[48];
            snprintf(nm, sizeof nm, "worker-%d", i);
            wproc *p = new_proc(R, nm, "?");
            if (!p) st = TC_FAIL(TC_ERR_INVALID, "--workers: more than %d workers", MAX_PROCS);
            else snprintf(p->addr, sizeof p->addr, "%s", a);
        }
        free(list);
        if (st == TC_OK && R->n_procs == 0) st = TC_FAIL(TC_ERR_INVALID, "--workers: no address given");
    } else {
        int both = !strcmp(o->mode, "both");
        if (!both && strcmp(o->mode, "split") != 0)
            st = TC_FAIL(TC_ERR_INVALID, "--worker-mode '%s': expected split, both or inprocess", o->mode);
        for (int i = 0; i < (both ? 1 : 2) && st == TC_OK; i++) {
            const char *role = both ? "both" : i == 0 ? "context" : "generation";
            char nm[48];
            snprintf(nm, sizeof nm, "%s-0", role);
            wproc *p = new_proc(R, nm, role);
            if (!p) st = TC_FAIL(TC_ERR_NOMEM, "out of memory");
            else st = spawn_args(R, p, role, i);
            if (st == TC_OK) st = start_proc(R, p);
        }
    }
    int have_cfg = 0;
    for (int i = 0; i < R->n_procs && st == TC_OK; i++) st = first_contact(R, R->procs[i], &have_cfg);
    /* pairs: both-role workers alone; context and generation workers
     * matched in the order given */
    wproc *ctxq[MAX_PROCS], *genq[MAX_PROCS];
    int nc = 0, ng = 0;
    for (int i = 0; i < R->n_procs && st == TC_OK; i++) {
        wproc *p = R->procs[i];
        snprintf(p->name, sizeof p->name, "%s-%d", p->role, i);
        if (!strcmp(p->role, "both")) R->pairs[R->n_pairs].ctx = R->pairs[R->n_pairs].gen = p, R->n_pairs++;
        else if (!strcmp(p->role, "context")) ctxq[nc++] = p;
        else if (!strcmp(p->role, "generation")) genq[ng++] = p;
        else st = TC_FAIL(TC_ERR_INVALID, "worker at %s reports an unknown role '%s'", p->addr, p->role);
    }
    if (st == TC_OK && nc != ng)
        st = TC_FAIL(TC_ERR_INVALID, "--workers: %d context and %d generation workers; they pair up one to one", nc, ng);
    for (int i = 0; i < nc && st == TC_OK; i++) {
        R->pairs[R->n_pairs].ctx = ctxq[i], R->pairs[R->n_pairs].gen = genq[i], R->n_pairs++;
        ctxq[i]->peer = genq[i];
        connect_pair(R, ctxq[i]);
    }
    if (st == TC_OK) {
        /* placement only; the scheduler preallocates for max_sessions */
        int ms = o->max_sessions > 0 ? o->max_sessions : 1024;
        tc_sched_limits lim = {ms, 1, 0, 1, 0, R->n_pairs};
        st = tc_sched_new(&R->sched, &lim);
        R->sched_cap = ms; /* grown when full (grow_sched_locked) */
    }
    if (st == TC_OK && pthread_create(&R->sup, NULL, supervisor_main, R) != 0)
        st = TC_FAIL(TC_ERR_INTERNAL, "cannot start the supervisor thread");
    else if (st == TC_OK) R->sup_started = 1;
    if (st != TC_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tc_error_get() ? tc_error_get() : tc_status_str(st));
        r_free(w);
        tc_error_set("%s", msg);
        return st;
    }
    pthread_mutex_lock(&R->mu);
    set_gauges(R);
    pthread_mutex_unlock(&R->mu);
    w->cfg = &R->cfg;
    w->device = R->device;
    w->dtype = R->dtype;
    w->n_params = R->n_params;
    w->session_new = r_new;
    w->session_free = r_free_s;
    w->append = r_append;
    w->sync = r_sync;
    w->prepare = r_prepare;
    w->ctx_threads = 2;
    w->n_pairs = R->n_pairs;
    w->step = r_step;
    w->step_multi = r_step_multi;
    w->truncate = r_truncate;
    w->stats = r_stats;
    w->history = r_history;
    w->bind_thread = r_bind;
    w->cancellable = 1;
    w->abandon_waits = r_abandon;
    w->free = r_free;
    w->live_pairs = r_live_pairs;
    w->workers = r_workers;
    TC_LOG(TC_LOG_INFO, "workers", "%d worker pair(s), %d process(es)%s", R->n_pairs, R->n_procs,
           o->workers && o->workers[0] ? " (attached)" : " (spawned)");
    *out = w;
    return TC_OK;
}

int tc_worker_remote_pids(tc_worker_client *w, int *pids, const char **roles, int max) {
    remote *R = w->impl;
    int n = 0;
    pthread_mutex_lock(&R->mu);
    for (int i = 0; i < R->n_procs && n < max; i++) {
        pids[n] = R->procs[i]->pid;
        roles[n++] = R->procs[i]->role;
    }
    pthread_mutex_unlock(&R->mu);
    return n;
}
