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
 * time, then fail (the client sees UNAVAILABLE through the engine). */#include "worker_remote.h"

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
#include "worker_remote_int.h"

__thread int tc_wr_t_role = 3; /* set by bind_thread */

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
tc_status tc_wr_call(remote *R, wproc *p, int role, const char *method, const ProtobufCMessage *req,
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
    if (tc_wr_call(x->R, x->p, 4, M("Cancel"), &rq.base, &tconst__worker__v1__cancel_response__descriptor, &r, 5.0) == TC_OK)
        protobuf_c_message_free_unpacked(r, NULL);
    else TC_LOG(TC_LOG_WARN, "workers", "%s: Cancel not delivered: %s", x->p->name, tc_error_get());
}
_Atomic uint64_t tc_wr_cancel_ids; /* ids of cancellable calls (worker_remote_int.h) */
tc_status tc_wr_call_cancellable(remote *R, wproc *p, const char *method, const ProtobufCMessage *req,
                                 uint64_t cancel_id, const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp,
                                 double timeout_s) {
    cancel_poll x = {R, p, cancel_id, 0.0};
    tc_rpc_client_wait_poll(poll_cancel, &x);
    tc_status st = tc_wr_call(R, p, tc_wr_t_role, method, req, rd, resp, timeout_s);
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

/* the model a worker's Info describes is the one this coordinator serves:
 * the same config (R->cfg) and the same weights file (its digest; 0 from
 * a worker that does not send one is not checked) */
static tc_status same_model(remote *R, const wproc *p, const Tconst__Worker__V1__InfoResponse *ir) {
    tc_model_config c2;
    TC_CHECK(tc_config_from_json(&c2, ir->config_json, p->name));
    if (memcmp(&c2, &R->cfg, sizeof c2) != 0)
        return TC_FAIL(TC_ERR_INVALID, "worker %s serves a different model than the first worker (its config.json)", p->name);
    if (R->weights_digest && ir->weights_digest && ir->weights_digest != R->weights_digest)
        return TC_FAIL(TC_ERR_INVALID, "worker %s serves different weights than the first worker (model.safetensors "
                       "fingerprint %016llx, expected %016llx)", p->name, (unsigned long long)ir->weights_digest,
                       (unsigned long long)R->weights_digest);
    return TC_OK;
}

/* Info on a worker that just answered: boot id, role, data address. A
 * process known before that comes back (a new boot id) must serve the
 * same model in the same role -- sessions are rebuilt on it from their
 * history, and another model would go on generating them without an
 * error: TC_ERR_INVALID naming the difference, p unchanged. */
static tc_status refresh_info(remote *R, wproc *p, int role, Tconst__Worker__V1__InfoResponse **keep) {
    Tconst__Worker__V1__InfoRequest rq = TCONST__WORKER__V1__INFO_REQUEST__INIT;
    rq.coordinator = R->instance;
    ProtobufCMessage *r;
    TC_CHECK(tc_wr_call(R, p, role, M("Info"), &rq.base, &tconst__worker__v1__info_response__descriptor, &r, 10.0));
    Tconst__Worker__V1__InfoResponse *ir = (Tconst__Worker__V1__InfoResponse *)r;
    if (p->boot && ir->boot_id != p->boot) {
        tc_status st = strcmp(ir->role, p->role) != 0
                           ? TC_FAIL(TC_ERR_INVALID, "worker %s came back as a %s worker (was %s)", p->name, ir->role, p->role)
                           : same_model(R, p, ir);
        if (st != TC_OK) {
            tconst__worker__v1__info_response__free_unpacked(ir, NULL);
            return st;
        }
    }
    pthread_mutex_lock(&R->mu); /* r_workers reads them under the lock */
    snprintf(p->role, sizeof p->role, "%s", ir->role);
    snprintf(p->transport, sizeof p->transport, "%s", ir->transport);
    fix_data_addr(p, ir->data_address, p->data_addr, sizeof p->data_addr);
    p->boot = ir->boot_id; /* boot_of reads it under the lock from other threads */
    snprintf(p->device, sizeof p->device, "%s", ir->device);
    p->max_msg = ir->max_message_bytes;
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
    a->st = tc_wr_call(a->R, a->p, 6, M("Connect"), &a->rq->base, &tconst__worker__v1__connect_response__descriptor, &r, 120.0);
    if (a->st == TC_OK) protobuf_c_message_free_unpacked(r, NULL);
    return NULL;
}

/* a pair is live with both workers up and its data plane connected
 * (R->mu held) */
static int pair_live(const wpair *pr) { return pr->ctx->up && pr->gen->up && pr->linked; }

static void set_gauges(remote *R);

/* Connects the data plane of pair pr (both workers up): the host
 * transport's address, or a new NCCL communicator -- a fresh id from the
 * context worker's Info, then Connect on both at once (each blocks until
 * the other joins, the worker's init gives up at the call's deadline). A
 * failure leaves the pair unlinked (not live); the linker thread tries again,
 * backing off. The linker thread (and tc_worker_remote_open before it). */
static void connect_one(remote *R, wpair *pr) {
    pthread_mutex_lock(&R->mu); /* the processes this connects: one that restarts meanwhile is connected again */
    const uint64_t b_ctx = pr->ctx->boot, b_gen = pr->gen->boot;
    pthread_mutex_unlock(&R->mu);
    Tconst__Worker__V1__ConnectRequest rq = TCONST__WORKER__V1__CONNECT_REQUEST__INIT;
    tc_status st;
    if (!strcmp(pr->ctx->transport, "nccl")) {
        Tconst__Worker__V1__InfoResponse *ir = NULL;
        if ((st = refresh_info(R, pr->ctx, 6, &ir)) == TC_OK && ir->nccl_id.len != 128)
            st = TC_FAIL(TC_ERR_IO, "%s: its Info carries no NCCL id", pr->ctx->name);
        if (st == TC_OK) {
            Tconst__Worker__V1__ConnectRequest rg = TCONST__WORKER__V1__CONNECT_REQUEST__INIT;
            rq.nccl_id = rg.nccl_id = ir->nccl_id;
            rq.nccl_rank = 0, rg.nccl_rank = 1;
            connect_arg ga = {R, pr->gen, &rg, TC_OK};
            pthread_t th;
            int started = pthread_create(&th, NULL, connect_main, &ga) == 0;
            connect_arg ca = {R, pr->ctx, &rq, TC_OK};
            connect_main(&ca);
            if (started) pthread_join(th, NULL);
            st = ca.st != TC_OK ? ca.st : started ? ga.st : TC_FAIL(TC_ERR_INTERNAL, "cannot start a thread");
        }
        if (ir) tconst__worker__v1__info_response__free_unpacked(ir, NULL);
    } else if (!pr->gen->data_addr[0]) {
        st = TC_FAIL(TC_ERR_IO, "%s reported no data-plane address", pr->gen->name);
    } else {
        rq.peer_data_address = pr->gen->data_addr;
        connect_arg ca = {R, pr->ctx, &rq, TC_OK};
        connect_main(&ca);
        st = ca.st;
    }
    pthread_mutex_lock(&R->mu);
    if (st == TC_OK && (pr->ctx->boot != b_ctx || pr->gen->boot != b_gen)) {
        st = TC_FAIL(TC_ERR_IO, "a worker of the pair restarted meanwhile");
        pr->next_link = 0; /* at once, the new process */
    } else if (st == TC_OK) {
        pr->linked = 1;
        pr->link_backoff = 0;
        if (R->sched && pair_live(pr)) tc_sched_pair_set_live(R->sched, (int)(pr - R->pairs), 1);
        set_gauges(R);
        pthread_cond_broadcast(&R->cv); /* tc_wr_wait_up waits for it */
    } else {
        snprintf(pr->link_err, sizeof pr->link_err, "%s", tc_error_get() ? tc_error_get() : tc_status_str(st));
        pr->link_backoff = pr->link_backoff > 0 ? fmin(pr->link_backoff * 2, 10.0) : 0.5;
        pr->next_link = tc_now_s() + pr->link_backoff;
    }
    pthread_mutex_unlock(&R->mu);
    if (st == TC_OK)
        TC_LOG(TC_LOG_INFO, "workers", "%s sends to %s (%s)", pr->ctx->name, pr->gen->name,
               !strcmp(pr->ctx->transport, "nccl") ? "nccl" : pr->gen->data_addr);
    else
        TC_LOG(TC_LOG_WARN, "workers", "cannot connect %s to %s: %s; trying again in %.1f s", pr->ctx->name,
               pr->gen->name, tc_error_get(), pr->link_backoff);
}

/* The linker thread: connects the pairs that are up but not linked (a
 * worker restarted or came back: at once; a Connect failed: when its
 * retry is due), woken by the supervisor or every 0.2 s. Its own thread:
 * an NCCL Connect waits for its peer (up to its deadline), and pings and
 * restarts must go on meanwhile. */
static void *linker_main(void *arg) {
    remote *R = arg;
    pthread_mutex_lock(&R->mu);
    while (!R->stop) {
        for (int i = 0; i < R->n_pairs && !R->stop; i++) {
            wpair *pr = &R->pairs[i];
            if (pr->ctx == pr->gen || pr->linked || !pr->ctx->up || !pr->gen->up || tc_now_s() < pr->next_link) continue;
            pthread_mutex_unlock(&R->mu);
            connect_one(R, pr);
            pthread_mutex_lock(&R->mu);
        }
        if (R->stop) break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 200 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&R->cv, &R->mu, &ts);
    }
    pthread_mutex_unlock(&R->mu);
    return NULL;
}

static void set_gauges(remote *R) {
    int up = 0, live = 0;
    for (int i = 0; i < R->n_procs; i++) up += R->procs[i]->up;
    for (int i = 0; i < R->n_pairs; i++) live += pair_live(&R->pairs[i]);
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
    if (tc_wr_call(R, p, 2, M("Ping"), &rq.base, &tconst__worker__v1__ping_response__descriptor, &r, dl) == TC_OK) {
        uint64_t boot = ((Tconst__Worker__V1__PingResponse *)r)->boot_id;
        protobuf_c_message_free_unpacked(r, NULL);
        if (boot == p->refused_boot) { /* said once: kept down */
            mark_down(R, p, "it serves another model or role");
            return;
        }
        int fresh = boot != p->boot || !p->up;
        tc_status rs;
        if (boot != p->boot && (rs = refresh_info(R, p, 2, NULL)) != TC_OK) {
            if (rs == TC_ERR_INVALID) {
                TC_LOG(TC_LOG_ERROR, "workers", "%s: not taken back: %s", p->name, tc_error_get());
                p->refused_boot = boot;
                mark_down(R, p, "it serves another model or role");
            }
            return;
        }
        pthread_mutex_lock(&R->mu);
        if (!p->up) {
            TC_LOG(TC_LOG_INFO, "workers", "%s up (boot %016llx)", p->name, (unsigned long long)p->boot);
            p->up_since = now;
        }
        p->up = 1;
        p->last_ok = now;
        for (int i = 0; i < R->n_pairs; i++) {
            wpair *pr = &R->pairs[i];
            /* a new process (or one back up) has no data plane yet */
            if (fresh && pr->ctx != pr->gen && (pr->ctx == p || pr->gen == p))
                pr->linked = 0, pr->next_link = 0, pr->link_backoff = 0; /* the linker connects it now */
            if (pair_live(pr)) tc_sched_pair_set_live(R->sched, i, 1);
        }
        set_gauges(R);
        pthread_cond_broadcast(&R->cv); /* the linker, and tc_wr_wait_up */
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
        tc_wr_close_pending(R); /* copies a fail-over left on workers that were down */
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

/* p answered after `since` and its pairs' data planes are connected
 * (R->mu held) */
static int back_up(remote *R, const wproc *p, double since) {
    if (!p->up || p->last_ok <= since) return 0;
    for (int i = 0; i < R->n_pairs; i++)
        if ((R->pairs[i].ctx == p || R->pairs[i].gen == p) && !R->pairs[i].linked) return 0;
    return 1;
}

/* One round of a recovery wait (R->mu held): up to 100 ms for news of
 * the workers, then asks whether the calling thread's request is
 * cancelled (tc_cancelled; not under mu: the predicate may take the
 * engine's locks). 1 when it is. */
static int wait_round(remote *R) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 100 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&R->cv, &R->mu, &ts);
    pthread_mutex_unlock(&R->mu);
    const int cancelled = tc_cancelled();
    pthread_mutex_lock(&R->mu);
    return cancelled;
}

/* After a failed call on p: waits until p answers again (a restart, or
 * the same process back), at most the recovery budget -- or until the
 * calling thread's request is cancelled (tc_cancelled: TC_ERR_CANCELLED). */
tc_status tc_wr_wait_up(remote *R, wproc *p, double since) {
    /* a spawned worker is restarted here (model load included); an attached
     * one must come back by itself (its orchestrator restarts it) */
    double budget = p->spawned ? R->o.timeout_s + R->o.start_timeout_s + 5 : 2 * R->o.timeout_s;
    double end = tc_now_s() + budget;
    int cancelled = 0;
    pthread_mutex_lock(&R->mu);
    /* an attached worker down since its last answer: the budget counts
     * from then, so the sessions of a lost pair each wait out what is left
     * of one budget (then fail over), not a whole one after another. A
     * spawned one is being restarted (backoff, model load, both workers of
     * a pair in turn): each caller gets its whole budget */
    if (!p->spawned && !p->up && p->last_ok > 0 && p->last_ok + budget < end) end = p->last_ok + budget;
    while (!R->stop && !R->giveup && !tc_spawn_cancelled() && tc_now_s() < end && !back_up(R, p, since)) {
        if ((cancelled = wait_round(R))) break;
    }
    int ok = back_up(R, p, since) && !R->stop && !R->giveup;
    const int gave_up = R->giveup;
    pthread_mutex_unlock(&R->mu);
    if (!ok && cancelled) return TC_FAIL(TC_ERR_CANCELLED, "worker %s is unavailable; its request was cancelled", p->name);
    if (!ok && gave_up) return TC_FAIL(TC_ERR_IO, "worker %s is unavailable (shutting down)", p->name);
    if (!ok) return TC_FAIL(TC_ERR_IO, "worker %s is unavailable (not back within %.0f s)", p->name, budget);
    return TC_OK;
}

/* No worker pair live (every worker down at once: restarts under way):
 * waits until one is, at most a restart's recovery budget -- or until the
 * calling thread's request is cancelled (TC_ERR_CANCELLED). A new session
 * is placed then, as a session already placed waits for its own pair
 * (tc_wr_wait_up), rather than be refused in the seconds a restart takes. */
tc_status tc_wr_wait_live(remote *R) {
    int spawned = 0;
    for (int i = 0; i < R->n_procs; i++) spawned |= R->procs[i]->spawned;
    const double budget = spawned ? R->o.timeout_s + R->o.start_timeout_s + 5 : 2 * R->o.timeout_s;
    const double end = tc_now_s() + budget;
    int cancelled = 0;
    pthread_mutex_lock(&R->mu);
    if (!R->live && !R->stop && !R->giveup)
        TC_LOG(TC_LOG_INFO, "workers", "no worker pair is up: a new session waits for one (at most %.0f s)", budget);
    while (!R->live && !R->stop && !R->giveup && !tc_spawn_cancelled() && tc_now_s() < end) {
        if ((cancelled = wait_round(R))) break;
    }
    const int live = R->live;
    pthread_mutex_unlock(&R->mu);
    if (live) return TC_OK;
    if (cancelled) return TC_FAIL(TC_ERR_CANCELLED, "no worker pair is up; the request was cancelled");
    return TC_FAIL(TC_ERR_IO, "no worker to place the session on: no worker pair is up (none back within %.0f s)",
                   budget);
}

static void r_bind(tc_worker_client *w, int role) {
    (void)w;
    tc_wr_t_role = role == 1 ? 1 : role == 2 ? 5 : 0;
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
    pthread_mutex_lock(&R->mu);
    R->stop = 1;
    pthread_cond_broadcast(&R->cv);
    pthread_mutex_unlock(&R->mu);
    if (R->sup_started) pthread_join(R->sup, NULL); /* it stopped the spawned workers */
    if (R->linker_started) pthread_join(R->linker, NULL); /* its Connect ends with its workers, or at its deadline */
    stop_spawned(R); /* (without a supervisor: a start-up that failed) */
    for (int i = 0; i < R->n_procs; i++) {
        wproc *p = R->procs[i];
        if (!p->spawned && p->boot) { /* attached: free it for the next coordinator now */
            Tconst__Worker__V1__PingRequest rq = TCONST__WORKER__V1__PING_REQUEST__INIT;
            rq.coordinator = R->instance;
            rq.release = 1;
            ProtobufCMessage *r;
            if (tc_wr_call(R, p, 2, M("Ping"), &rq.base, &tconst__worker__v1__ping_response__descriptor, &r, 2.0) == TC_OK)
                protobuf_c_message_free_unpacked(r, NULL);
        }
        for (int k = 0; k < TC_WR_CLIENTS; k++) tc_rpc_client_close(p->cli[k]), pthread_mutex_destroy(&p->cli_mu[k]);
        for (int k = 0; k < MAX_ARGS && p->argv[k]; k++) free(p->argv[k]);
        free(p);
    }
    if (R->sockdir[0]) sockdir_remove(R->sockdir); /* the workers are gone */
    tc_sched_free(R->sched);
    free(R->pend);
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
    for (int k = 0; k < TC_WR_CLIENTS; k++) pthread_mutex_init(&p->cli_mu[k], NULL);
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
    if (R->o.weight_dtype && R->o.weight_dtype[0] &&
        (add_arg(p, &k, "--weight-dtype") != 0 || add_arg(p, &k, R->o.weight_dtype) != 0))
        return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    char mst[32];
    snprintf(mst, sizeof mst, "%lld", R->o.max_session_tokens);
    if (R->o.max_session_tokens > 0 && (add_arg(p, &k, "--max-session-tokens") != 0 || add_arg(p, &k, mst) != 0))
        return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    p->spawned = 1;
    return TC_OK;
}

static tc_status first_contact(remote *R, wproc *p, int *have_cfg) {
    /* attached workers may still be loading: give them the start budget */
    double end = tc_now_s() + (p->spawned ? 10.0 : R->o.start_timeout_s);
    Tconst__Worker__V1__InfoResponse *ir = NULL;
    tc_status st;
    int said = 0;
    while (((st = refresh_info(R, p, 2, &ir)) == TC_ERR_IO || st == TC_ERR_EXHAUSTED) && tc_now_s() < end &&
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
        R->weights_digest = ir->weights_digest;
    } else {
        st = same_model(R, p, ir);
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

/* The start: waits, at most --start-timeout, for every pair's data plane
 * (a failed Connect is tried again by the linker thread). Some pair live
 * then: the start goes on without the others (they join when they
 * connect); none: it fails with the last Connect's error. */
static tc_status wait_linked(remote *R) {
    const double end = tc_now_s() + R->o.start_timeout_s;
    pthread_mutex_lock(&R->mu);
    for (;;) {
        int unlinked = 0, live = 0;
        for (int i = 0; i < R->n_pairs; i++) unlinked += !R->pairs[i].linked, live += pair_live(&R->pairs[i]);
        if (R->stop || tc_spawn_cancelled()) {
            pthread_mutex_unlock(&R->mu);
            return TC_FAIL(TC_ERR_CANCELLED, "the start-up was interrupted");
        }
        if (!unlinked || tc_now_s() >= end) {
            tc_status st = TC_OK;
            for (int i = 0; i < R->n_pairs; i++) {
                const wpair *pr = &R->pairs[i];
                if (pr->linked) continue;
                if (live)
                    TC_LOG(TC_LOG_WARN, "workers", "starting without %s -> %s (not connected within %.0f s: %s)",
                           pr->ctx->name, pr->gen->name, R->o.start_timeout_s, pr->link_err);
                else if (st == TC_OK)
                    st = TC_FAIL(TC_ERR_IO, "cannot connect the data plane of %s to %s (within --worker-start-timeout %.0f s): %s",
                                 pr->ctx->name, pr->gen->name, R->o.start_timeout_s,
                                 pr->link_err[0] ? pr->link_err : "a worker is down");
            }
            pthread_mutex_unlock(&R->mu);
            return st;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&R->cv, &R->mu, &ts);
    }
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
    atomic_store(&tc_wr_cancel_ids, R->instance << 16);
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
    /* one process named twice (the same address, or two spellings of it)
     * would make two "pairs" of one worker: its boot id gives it away */
    for (int i = 0; i < R->n_procs && st == TC_OK; i++)
        for (int k = 0; k < i && st == TC_OK; k++)
            if (R->procs[i]->boot && R->procs[i]->boot == R->procs[k]->boot)
                st = TC_FAIL(TC_ERR_INVALID, "--workers: %s and %s are the same worker process (boot id %016llx)",
                             R->procs[k]->addr, R->procs[i]->addr, (unsigned long long)R->procs[i]->boot);
    /* pairs: both-role workers alone; context and generation workers
     * matched in the order given */
    wproc *ctxq[MAX_PROCS], *genq[MAX_PROCS];
    int nc = 0, ng = 0;
    for (int i = 0; i < R->n_procs && st == TC_OK; i++) {
        wproc *p = R->procs[i];
        snprintf(p->name, sizeof p->name, "%s-%d", p->role, i);
        if (!strcmp(p->role, "both"))
            R->pairs[R->n_pairs].ctx = R->pairs[R->n_pairs].gen = p, R->pairs[R->n_pairs].linked = 1, R->n_pairs++;
        else if (!strcmp(p->role, "context")) ctxq[nc++] = p;
        else if (!strcmp(p->role, "generation")) genq[ng++] = p;
        else st = TC_FAIL(TC_ERR_INVALID, "worker at %s reports an unknown role '%s'", p->addr, p->role);
    }
    if (st == TC_OK && nc != ng)
        st = TC_FAIL(TC_ERR_INVALID, "--workers: %d context and %d generation workers; they pair up one to one", nc, ng);
    for (int i = 0; i < nc && st == TC_OK; i++) {
        R->pairs[R->n_pairs].ctx = ctxq[i], R->pairs[R->n_pairs].gen = genq[i], R->n_pairs++;
        ctxq[i]->peer = genq[i];
        connect_one(R, &R->pairs[R->n_pairs - 1]); /* retried by the linker when it fails */
    }
    if (st == TC_OK) {
        /* placement only; the scheduler preallocates for max_sessions */
        int ms = o->max_sessions > 0 ? o->max_sessions : 1024;
        tc_sched_limits lim = {ms, 1, 0, 1, 0, R->n_pairs};
        st = tc_sched_new(&R->sched, &lim);
        R->sched_cap = ms; /* grown when full (tc_wr_sched_grow_locked) */
        for (int i = 0; st == TC_OK && i < R->n_pairs; i++) tc_sched_pair_set_live(R->sched, i, pair_live(&R->pairs[i]));
    }
    if (st == TC_OK && pthread_create(&R->sup, NULL, supervisor_main, R) != 0)
        st = TC_FAIL(TC_ERR_INTERNAL, "cannot start the supervisor thread");
    else if (st == TC_OK) R->sup_started = 1;
    if (st == TC_OK && pthread_create(&R->linker, NULL, linker_main, R) != 0)
        st = TC_FAIL(TC_ERR_INTERNAL, "cannot start the data-plane linker thread");
    else if (st == TC_OK) R->linker_started = 1;
    if (st == TC_OK) st = wait_linked(R);
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
    w->session_new = tc_wr_session_new;
    w->session_free = tc_wr_session_free;
    w->append = tc_wr_append;
    w->sync = tc_wr_sync;
    w->prepare = tc_wr_prepare;
    w->ctx_threads = 2;
    w->n_pairs = R->n_pairs;
    w->step = tc_wr_step;
    w->step_multi = tc_wr_step_multi;
    w->truncate = tc_wr_truncate;
    w->failover = tc_wr_failover;
    w->stats = tc_wr_stats;
    w->history = tc_wr_history;
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

