/* rpc.c — gRPC C core behind rpc.h. The server runs one thread blocked in
 * grpc_completion_queue_next; per-call state is guarded by the call's
 * mutex, which also serializes grpc_call_start_batch (gRPC core requires
 * batches on one call to be synchronized). A call is released once its
 * status went out (or it was cancelled), its close notification arrived,
 * no batch is in flight, and every reference is dropped. */
#include "rpc.h"
#include "../common/hostport.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/clock.h"
#include "../common/log.h"

enum { TAG_NEW = 1, TAG_RECV, TAG_SEND, TAG_STATUS, TAG_CLOSE, TAG_SHUTDOWN };

typedef struct {
    int kind;
    void *obj;
} rpc_tag;

typedef struct msg_node {
    struct msg_node *next;
    size_t len;
    uint8_t data[];
} msg_node;

struct tc_call {
    tc_rpc_server *srv;
    grpc_call *call;
    pthread_mutex_t mu;
    atomic_int refs;
    char method[256];
    gpr_timespec deadline;
    void *user;
    rpc_tag t_recv, t_send, t_status, t_close;
    grpc_byte_buffer *recv_buf;
    int got_first, recv_inflight, send_inflight, status_inflight;
    int close_done, status_done, cancelled_flag, finish_requested, finish_code;
    char *finish_msg;
    msg_node *q_head, *q_tail;
    size_t q_len;
    int close_cancelled;
    /* on the server's list of calls whose first message has not come
     * (srv->list_mu): nothing was handed to a handler, so a shutdown
     * cancels them at once instead of waiting out its grace for them */
    struct tc_call *un_prev, *un_next;
    int un_linked;
};

struct tc_rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    int port, shutting_down;
    tc_rpc_handlers h;
    void *ud;
    /* the always-posted catch-all request */
    grpc_call *new_call;
    grpc_call_details details;
    grpc_metadata_array md;
    rpc_tag t_new, t_shutdown;
    atomic_int live_calls;
    _Atomic double busy_since; /* tc_now_s() when the RPC thread took its current event; 0 while it waits */
    /* 1 for the owner until tc_rpc_server_stop, plus one per live call:
     * a call a compute thread still holds after the stop (a worker's
     * running Append) is destroyed later, and must find the server (and
     * gRPC) still there; the last reference frees it */
    atomic_int refs;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    int shutdown_seen; /* the server's shutdown tag arrived: no call left */
    pthread_mutex_t list_mu;
    tc_call *unstarted; /* calls waiting for their first message (tc_call.un_*) */
    int n_unstarted, max_unstarted; /* under list_mu; past the cap a new call is refused at once */
    int thread_started;
    grpc_resource_quota *quota; /* NULL: none */
    /* the gate of every server-side batch: shared while one starts, taken
     * whole to close it before the completion queue shuts down. gRPC
     * aborts on a batch started on a shut-down queue, and a call's
     * handler may still start one then (a cancelled call's receive
     * completing, its handler sending the status): refused instead */
    pthread_rwlock_t gate;
    int cq_closed; /* under gate */
};

/* grpc_call_start_batch through the gate: GRPC_CALL_ERROR once the
 * server's completion queue is closing (the caller's failure path runs) */
static grpc_call_error start_batch(tc_rpc_server *s, grpc_call *call, const grpc_op *ops, size_t n, void *tag) {
    pthread_rwlock_rdlock(&s->gate);
    const grpc_call_error e = s->cq_closed ? GRPC_CALL_ERROR : grpc_call_start_batch(call, ops, n, tag, NULL);
    pthread_rwlock_unlock(&s->gate);
    return e;
}

/* c off the list of calls waiting for their first message */
static void unstarted_unlink(tc_call *c) {
    tc_rpc_server *s = c->srv;
    pthread_mutex_lock(&s->list_mu);
    if (c->un_linked) {
        if (c->un_prev) c->un_prev->un_next = c->un_next;
        else s->unstarted = c->un_next;
        if (c->un_next) c->un_next->un_prev = c->un_prev;
        c->un_prev = c->un_next = NULL;
        c->un_linked = 0;
        s->n_unstarted--;
    }
    pthread_mutex_unlock(&s->list_mu);
}

static void post_request(tc_rpc_server *s) {
    grpc_call_details_init(&s->details);
    grpc_metadata_array_init(&s->md);
    s->new_call = NULL;
    s->t_new.kind = TAG_NEW;
    s->t_new.obj = s;
    grpc_call_error e = grpc_server_request_call(s->server, &s->new_call, &s->details, &s->md, s->cq, s->cq, &s->t_new);
    if (e != GRPC_CALL_OK) TC_LOG(TC_LOG_ERROR, "rpc", "grpc_server_request_call failed: %d", (int)e);
}

/* one message as a byte buffer (the caller destroys it) */
static grpc_byte_buffer *bytes_to_bb(const uint8_t *data, size_t len) {
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* caller holds c->mu */
static void maybe_release_locked(tc_call *c, int *release) {
    *release = c->close_done && (c->status_done || c->cancelled_flag) && !c->recv_inflight && !c->send_inflight &&
               !c->status_inflight && atomic_load(&c->refs) == 0;
}

static void server_unref(tc_rpc_server *s) {
    if (atomic_fetch_sub(&s->refs, 1) != 1) return;
    pthread_mutex_destroy(&s->list_mu);
    pthread_rwlock_destroy(&s->gate);
    free(s);
    grpc_shutdown();
}

static void call_destroy(tc_call *c) {
    tc_rpc_server *srv = c->srv;
    unstarted_unlink(c); /* before the grpc_call goes: a shutdown may be cancelling it */
    msg_node *n = c->q_head;
    while (n) {
        msg_node *x = n->next;
        free(n);
        n = x;
    }
    if (c->recv_buf) grpc_byte_buffer_destroy(c->recv_buf);
    grpc_call_unref(c->call);
    free(c->finish_msg);
    pthread_mutex_destroy(&c->mu);
    atomic_fetch_sub(&srv->live_calls, 1);
    free(c);
    server_unref(srv);
}

static void start_recv_locked(tc_call *c) {
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->got_first) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &c->recv_buf;
    c->recv_inflight = 1;
    if (start_batch(c->srv, c->call, ops, n, &c->t_recv) != GRPC_CALL_OK) {
        c->recv_inflight = 0;
        TC_LOG(TC_LOG_WARN, "rpc", "%s: cannot start receive", c->method);
    }
}

/* Starts the next send or the status; caller holds c->mu. */
static void pump_locked(tc_call *c) {
    if (c->send_inflight || c->status_inflight || c->status_done) return;
    if (c->cancelled_flag) {
        /* a cancelled call sends nothing more: what is queued is dropped
         * here, not started batch by batch (each failing at once) -- a
         * chain that could outlive the server's shutdown tag and start a
         * batch on a completion queue already shut down (gRPC aborts) */
        while (c->q_head) {
            msg_node *x = c->q_head;
            c->q_head = x->next;
            free(x);
        }
        c->q_tail = NULL;
        c->q_len = 0;
        return;
    }
    if (c->q_head) {
        msg_node *n = c->q_head;
        grpc_byte_buffer *bb = bytes_to_bb(n->data, n->len);
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = bb;
        c->send_inflight = 1;
        grpc_call_error e = start_batch(c->srv, c->call, &op, 1, &c->t_send);
        grpc_byte_buffer_destroy(bb); /* the batch holds its own reference */
        if (e != GRPC_CALL_OK) {
            c->send_inflight = 0;
            TC_LOG(TC_LOG_WARN, "rpc", "%s: send failed to start (%d)", c->method, (int)e);
        }
        return;
    }
    if (c->finish_requested) {
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        op.data.send_status_from_server.status = (grpc_status_code)c->finish_code;
        grpc_slice details = grpc_slice_from_copied_string(c->finish_msg ? c->finish_msg : "");
        op.data.send_status_from_server.status_details = &details;
        op.data.send_status_from_server.trailing_metadata_count = 0;
        c->status_inflight = 1;
        grpc_call_error e = start_batch(c->srv, c->call, &op, 1, &c->t_status);
        grpc_slice_unref(details);
        if (e != GRPC_CALL_OK) {
            c->status_inflight = 0;
            c->status_done = 1;
        }
    }
}

static void handle_new(tc_rpc_server *s, int ok) {
    grpc_call *gc = s->new_call;
    if (!ok || !gc) {
        grpc_call_details_destroy(&s->details);
        grpc_metadata_array_destroy(&s->md);
        if (!s->shutting_down) post_request(s);
        return;
    }
    tc_call *c = calloc(1, sizeof *c);
    TC_ASSERT(c, "out of memory for a call");
    c->srv = s;
    c->call = gc;
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->refs, 0);
    size_t ml = GRPC_SLICE_LENGTH(s->details.method);
    if (ml >= sizeof c->method) ml = sizeof c->method - 1;
    memcpy(c->method, GRPC_SLICE_START_PTR(s->details.method), ml);
    c->method[ml] = 0;
    c->deadline = gpr_convert_clock_type(s->details.deadline, GPR_CLOCK_MONOTONIC);
    c->t_recv = (rpc_tag){TAG_RECV, c};
    c->t_send = (rpc_tag){TAG_SEND, c};
    c->t_status = (rpc_tag){TAG_STATUS, c};
    c->t_close = (rpc_tag){TAG_CLOSE, c};
    atomic_fetch_add(&s->live_calls, 1);
    atomic_fetch_add(&s->refs, 1);
    /* refused before its first message: an unknown method (a client that
     * waits for the server before it sends would otherwise wait for
     * ever), or past the cap of calls that sent nothing yet (each holds
     * a stream's buffers: a flood of them is memory without bound) */
    char why[300] = "";
    int code = 0;
    if (s->h.is_known && !s->h.is_known(s->ud, c->method)) {
        code = TC_GRPC_UNIMPLEMENTED;
        snprintf(why, sizeof why, "unknown method %s", c->method);
    }
    pthread_mutex_lock(&s->list_mu);
    if (!code && s->max_unstarted > 0 && s->n_unstarted >= s->max_unstarted) {
        code = TC_GRPC_RESOURCE_EXHAUSTED;
        snprintf(why, sizeof why, "too many calls (%d) that have not sent their first message yet", s->n_unstarted);
    }
    if (!code) {
        c->un_next = s->unstarted;
        if (s->unstarted) s->unstarted->un_prev = c;
        s->unstarted = c;
        c->un_linked = 1;
        s->n_unstarted++;
    }
    pthread_mutex_unlock(&s->list_mu);
    grpc_call_details_destroy(&s->details);
    grpc_metadata_array_destroy(&s->md);
    if (!s->shutting_down) post_request(s); /* keep the catch-all posted */

    pthread_mutex_lock(&c->mu);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    if (start_batch(s, gc, &op, 1, &c->t_close) != GRPC_CALL_OK) c->close_done = 1;
    start_recv_locked(c); /* (with the initial metadata, which the status needs before it) */
    if (code) {
        c->got_first = 1; /* the answer goes at once; what the receive brings goes to on_message, which finds no user */
        atomic_fetch_add(&c->refs, 1);
    }
    pthread_mutex_unlock(&c->mu);
    if (code) {
        tc_call_finish(c, code, why);
        tc_call_unref(c);
    }
}

static void read_bb(grpc_byte_buffer *bb, uint8_t **out, size_t *len) {
    grpc_byte_buffer_reader r;
    *out = NULL;
    *len = 0;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return;
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(sl);
    *out = malloc(*len ? *len : 1);
    if (*out) memcpy(*out, GRPC_SLICE_START_PTR(sl), *len);
    grpc_slice_unref(sl);
}

static void handle_call_event(tc_rpc_server *s, rpc_tag *t, int ok) {
    tc_call *c = t->obj;
    int release = 0;
    switch (t->kind) {
    case TAG_RECV: {
        uint8_t *msg = NULL;
        size_t len = 0;
        pthread_mutex_lock(&c->mu);
        c->recv_inflight = 0;
        int first = !c->got_first;
        c->got_first = 1;
        if (first) unstarted_unlink(c);
        if (ok && c->recv_buf) {
            read_bb(c->recv_buf, &msg, &len);
            grpc_byte_buffer_destroy(c->recv_buf);
            c->recv_buf = NULL;
        }
        atomic_fetch_add(&c->refs, 1); /* the handler's reference */
        pthread_mutex_unlock(&c->mu);
        if (first) s->h.on_start(s->ud, c, c->method, msg, len);
        else {
            s->h.on_message(s->ud, c, msg, len);
            tc_call_unref(c); /* on_message borrows */
        }
        free(msg);
        return;
    }
    case TAG_SEND:
        pthread_mutex_lock(&c->mu);
        c->send_inflight = 0;
        if (c->q_head) {
            msg_node *n = c->q_head;
            c->q_head = n->next;
            if (!c->q_head) c->q_tail = NULL;
            c->q_len--;
            free(n);
        }
        if (!ok) c->cancelled_flag = 1;
        pump_locked(c);
        atomic_fetch_add(&c->refs, 1);
        pthread_mutex_unlock(&c->mu);
        if (ok && s->h.on_sent) s->h.on_sent(s->ud, c);
        tc_call_unref(c);
        return;
    case TAG_STATUS:
        pthread_mutex_lock(&c->mu);
        c->status_inflight = 0;
        c->status_done = 1;
        maybe_release_locked(c, &release);
        pthread_mutex_unlock(&c->mu);
        break;
    case TAG_CLOSE: {
        pthread_mutex_lock(&c->mu);
        c->close_done = 1;
        int cancelled = c->close_cancelled;
        if (cancelled) c->cancelled_flag = 1;
        atomic_fetch_add(&c->refs, 1);
        pthread_mutex_unlock(&c->mu);
        s->h.on_done(s->ud, c, cancelled);
        tc_call_unref(c);
        return;
    }
    }
    if (release) call_destroy(c);
}

static void *rpc_thread(void *arg) {
    tc_rpc_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        atomic_store(&s->busy_since, tc_now_s());
        rpc_tag *t = ev.tag;
        if (t->kind == TAG_NEW) handle_new(s, ev.success);
        else if (t->kind == TAG_SHUTDOWN) {
            pthread_mutex_lock(&s->stop_mu);
            s->shutdown_seen = 1;
            pthread_cond_broadcast(&s->stop_cv);
            pthread_mutex_unlock(&s->stop_mu);
        } else handle_call_event(s, t, ev.success);
        atomic_store(&s->busy_since, 0.0);
    }
    return NULL;
}

double tc_rpc_server_busy_s(const tc_rpc_server *s) {
    const double t = atomic_load(&((tc_rpc_server *)s)->busy_since);
    return t > 0 ? tc_now_s() - t : 0;
}

tc_status tc_rpc_server_start(tc_rpc_server **out, const char *addr, const tc_rpc_server_opts *o,
                              const tc_rpc_handlers *h, void *ud) {
    if (tc_unix_socket_live(addr)) /* gRPC would unlink it and steal that server's clients */
        return TC_FAIL(TC_ERR_INVALID, "--listen %s: another process is serving on this socket", addr);
    grpc_init();
    tc_rpc_server *s = calloc(1, sizeof *s);
    if (!s) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    s->h = *h;
    s->ud = ud;
    atomic_init(&s->live_calls, 0);
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->stop_mu, NULL);
    pthread_rwlock_init(&s->gate, NULL);
    pthread_mutex_init(&s->list_mu, NULL);
    pthread_cond_init(&s->stop_cv, NULL);
    s->max_unstarted = o->max_unstarted;
    /* the clients' keepalive pings (every 10 s, tc_rpc_client_open) are
     * welcome during a long call with no data on the wire -- a minutes-long
     * prefill -- instead of counted as abuse and answered with GOAWAY.
     * The server pings too (keepalive_ms): a client that vanished without
     * closing its connection (a dead host, a partition, a frozen process)
     * is seen within keepalive + its timeout, not gRPC's default 2 hours,
     * and its calls end (a Stream's session is no longer pinned by it). */
    enum { NI = 7 };
    grpc_arg args[NI + 1];
    memset(args, 0, sizeof args);
    const char *keys[NI] = {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, GRPC_ARG_ALLOW_REUSEPORT,
                            GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, GRPC_ARG_HTTP2_MAX_PING_STRIKES,
                            GRPC_ARG_KEEPALIVE_TIME_MS, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, GRPC_ARG_MAX_CONCURRENT_STREAMS};
    const int vals[NI] = {o->max_message_bytes, 0, 5000, 0, o->keepalive_ms > 0 ? o->keepalive_ms : INT_MAX,
                          o->keepalive_timeout_ms > 0 ? o->keepalive_timeout_ms : 20000,
                          o->max_streams > 0 ? o->max_streams : INT_MAX};
    for (int i = 0; i < NI; i++) args[i].type = GRPC_ARG_INTEGER, args[i].key = (char *)keys[i], args[i].value.integer = vals[i];
    int na = NI;
    if (o->memory_quota_bytes > 0) { /* every connection's buffers together */
        s->quota = grpc_resource_quota_create("tconst");
        grpc_resource_quota_resize(s->quota, (size_t)o->memory_quota_bytes);
        args[na].type = GRPC_ARG_POINTER;
        args[na].key = (char *)GRPC_ARG_RESOURCE_QUOTA;
        args[na].value.pointer.p = s->quota;
        args[na].value.pointer.vtable = grpc_resource_quota_arg_vtable();
        na++;
    }
    grpc_channel_args ca = {(size_t)na, args};
    s->server = grpc_server_create(&ca, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    grpc_server_credentials *cr = grpc_insecure_server_credentials_create();
    s->port = grpc_server_add_http2_port(s->server, addr, cr);
    grpc_server_credentials_release(cr);
    if (s->port <= 0) {
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(s->cq);
        if (s->quota) grpc_resource_quota_unref(s->quota);
        pthread_mutex_destroy(&s->stop_mu);
        pthread_rwlock_destroy(&s->gate);
        pthread_mutex_destroy(&s->list_mu);
        pthread_cond_destroy(&s->stop_cv);
        free(s);
        grpc_shutdown();
        return TC_FAIL(TC_ERR_INVALID, "--listen %s: cannot bind (bad address or port in use)", addr);
    }
    grpc_server_start(s->server);
    post_request(s);
    if (pthread_create(&s->thread, NULL, rpc_thread, s) != 0) {
        tc_rpc_server_stop(s, 0); /* no thread to join: it skips the waits */
        return TC_FAIL(TC_ERR_INTERNAL, "cannot start the RPC thread");
    }
    s->thread_started = 1;
    *out = s;
    return TC_OK;
}

int tc_rpc_server_port(const tc_rpc_server *s) { return s->port; }

/* waits up to secs for the shutdown tag; 1 when it came */
/* Waits for the shutdown tag at most secs; with until_idle, returns early
 * (0) once no call is live: an idle client connection holds the tag back
 * until the calls are cancelled, and none is left to finish its sends. */
static int wait_shutdown_tag(tc_rpc_server *s, double secs, int until_idle) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    const double end = (double)now.tv_sec + now.tv_nsec * 1e-9 + (secs > 0 ? secs : 0);
    pthread_mutex_lock(&s->stop_mu);
    for (;;) {
        if (s->shutdown_seen || (until_idle && atomic_load(&s->live_calls) == 0)) break;
        clock_gettime(CLOCK_REALTIME, &now);
        double t = (double)now.tv_sec + now.tv_nsec * 1e-9;
        if (t >= end) break;
        t = t + 0.05 < end ? t + 0.05 : end; /* a poll of live_calls every 50 ms */
        struct timespec dl = {(time_t)t, (long)((t - (double)(time_t)t) * 1e9)};
        pthread_cond_timedwait(&s->stop_cv, &s->stop_mu, &dl);
    }
    int seen = s->shutdown_seen;
    pthread_mutex_unlock(&s->stop_mu);
    return seen;
}

void tc_rpc_server_stop(tc_rpc_server *s, double grace_s) {
    if (!s) return;
    s->shutting_down = 1;
    s->t_shutdown = (rpc_tag){TAG_SHUTDOWN, s};
    /* no new calls; the running ones may still write what they queued
     * (a finished generation's last messages and status) for grace_s */
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);
    /* a call whose first message has not come (a client that opened a
     * stream and has not written yet) has nothing to finish: cancelled now,
     * it does not hold the exit for the grace */
    pthread_mutex_lock(&s->list_mu);
    int n_un = 0;
    for (tc_call *c = s->unstarted; c; c = c->un_next, n_un++)
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE, "server shutting down", NULL);
    pthread_mutex_unlock(&s->list_mu);
    if (n_un) TC_LOG(TC_LOG_INFO, "rpc", "%d calls that sent no request yet: cancelled (UNAVAILABLE)", n_un);
    if (!s->thread_started) { /* nothing reads the queue: nothing to wait for */
        grpc_server_cancel_all_calls(s->server);
    } else if (!wait_shutdown_tag(s, grace_s, 1)) {
        if (atomic_load(&s->live_calls) > 0)
            TC_LOG(TC_LOG_WARN, "rpc", "%d calls still open after %.1f s: cancelling them",
                   atomic_load(&s->live_calls), grace_s);
        grpc_server_cancel_all_calls(s->server);
        /* the queue may only shut down once no call can start a batch */
        if (!wait_shutdown_tag(s, 10.0, 0)) TC_LOG(TC_LOG_WARN, "rpc", "calls still open at shutdown");
    }
    TC_LOG(TC_LOG_INFO, "rpc", "%d calls not yet released at shutdown", atomic_load(&s->live_calls));
    grpc_completion_queue *cq = s->cq;
    pthread_rwlock_wrlock(&s->gate); /* no batch starts from here on (start_batch) */
    s->cq_closed = 1;
    pthread_rwlock_unlock(&s->gate);
    grpc_completion_queue_shutdown(cq);
    if (s->thread_started) pthread_join(s->thread, NULL);
    else
        while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
        }
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(cq);
    if (s->quota) grpc_resource_quota_unref(s->quota);
    s->quota = NULL;
    pthread_mutex_destroy(&s->stop_mu);
    pthread_cond_destroy(&s->stop_cv);
    server_unref(s); /* freed now, or by the last call a compute thread still holds */
}

void tc_call_ref(tc_call *c) { atomic_fetch_add(&c->refs, 1); }

void tc_call_unref(tc_call *c) {
    pthread_mutex_lock(&c->mu);
    int release = 0;
    atomic_fetch_sub(&c->refs, 1);
    maybe_release_locked(c, &release);
    pthread_mutex_unlock(&c->mu);
    if (release) call_destroy(c);
}

void tc_call_set_user(tc_call *c, void *p) { c->user = p; }
void *tc_call_user(const tc_call *c) { return c->user; }
const char *tc_call_method(const tc_call *c) { return c->method; }

void tc_call_recv_next(tc_call *c) {
    pthread_mutex_lock(&c->mu);
    if (!c->recv_inflight && !c->close_done && !c->cancelled_flag) start_recv_locked(c);
    pthread_mutex_unlock(&c->mu);
}

tc_status tc_call_send(tc_call *c, const uint8_t *msg, size_t len) {
    msg_node *n = malloc(sizeof *n + (len ? len : 1));
    if (!n) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    n->next = NULL;
    n->len = len;
    if (len) memcpy(n->data, msg, len);
    pthread_mutex_lock(&c->mu);
    if (c->finish_requested || c->cancelled_flag || c->close_done) {
        pthread_mutex_unlock(&c->mu);
        free(n);
        return TC_FAIL(TC_ERR_INVALID, "call already finished");
    }
    if (c->q_tail) c->q_tail->next = n;
    else c->q_head = n;
    c->q_tail = n;
    c->q_len++;
    pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    return TC_OK;
}

size_t tc_call_pending(tc_call *c) {
    pthread_mutex_lock(&c->mu);
    size_t n = c->q_len;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void tc_call_finish(tc_call *c, int code, const char *message) {
    pthread_mutex_lock(&c->mu);
    if (!c->finish_requested) {
        c->finish_requested = 1;
        c->finish_code = code;
        c->finish_msg = strdup(message ? message : "");
        if (c->cancelled_flag || c->close_done) {
            /* nobody to answer: drop what is queued */
            c->status_done = 1;
        } else pump_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
}

int tc_call_is_done(tc_call *c) {
    pthread_mutex_lock(&c->mu);
    int d = c->close_done || c->cancelled_flag;
    pthread_mutex_unlock(&c->mu);
    return d;
}

double tc_call_deadline_left(const tc_call *c) {
    if (c->deadline.tv_sec == INT64_MAX || gpr_time_cmp(c->deadline, gpr_inf_future(c->deadline.clock_type)) == 0)
        return INFINITY;
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    gpr_timespec d = gpr_time_sub(c->deadline, now);
    return (double)d.tv_sec + d.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ */
/* client                                                              */

struct tc_rpc_client {
    grpc_channel *ch;
    grpc_completion_queue *cq;
};

struct tc_rpc_bidi {
    tc_rpc_client *cl;
    grpc_call *call;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
    int got_md;
};

tc_status tc_rpc_client_open(tc_rpc_client **out, const char *addr) {
    grpc_init();
    tc_rpc_client *c = calloc(1, sizeof *c);
    if (!c) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    /* a restarted worker (or server) is reached again within a second,
     * not after gRPC's default exponential reconnect backoff (up to 120 s).
     * Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC core takes it as the
     * minimum connect timeout, and 100 ms fails handshakes under load. */
    /* Keepalive pings on a call in flight: a peer that stops answering
     * (a frozen worker, a dead host) fails the call within ~15 s instead
     * of holding it to its deadline (an hour for a compute call); the
     * servers accept pings that often (tc_rpc_server_start) */
    grpc_arg arg[6];
    memset(arg, 0, sizeof arg);
    const char *keys[6] = {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                           GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, GRPC_ARG_KEEPALIVE_TIME_MS, GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                           GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA};
    int vals[6] = {256 << 20, 100, 1000, 10000, 5000, 0};
    for (int i = 0; i < 6; i++) arg[i].type = GRPC_ARG_INTEGER, arg[i].key = (char *)keys[i], arg[i].value.integer = vals[i];
    grpc_channel_args ca = {6, arg};
    c->ch = grpc_channel_create(addr, cr, &ca);
    grpc_channel_credentials_release(cr);
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (!c->ch || !c->cq) {
        free(c);
        return TC_FAIL(TC_ERR_INVALID, "cannot create a channel to %s", addr);
    }
    *out = c;
    return TC_OK;
}

void tc_rpc_client_close(tc_rpc_client *c) {
    if (!c) return;
    grpc_channel_destroy(c->ch);
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c->cq);
    free(c);
    grpc_shutdown();
}

static gpr_timespec deadline_in(double s) {
    if (!(s > 0) || isinf(s)) return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis((int64_t)(s * 1000), GPR_TIMESPAN));
}

static _Thread_local void (*t_wait_poll)(void *ud);
static _Thread_local void *t_wait_poll_ud;
void tc_rpc_client_wait_poll(void (*fn)(void *ud), void *ud) {
    t_wait_poll = fn;
    t_wait_poll_ud = ud;
}

static int pluck(tc_rpc_client *c, void *tag) {
    grpc_event ev;
    if (!t_wait_poll) ev = grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    else
        for (;;) { /* the thread's poll every 20 ms of waiting (off while it runs: it may call too) */
            gpr_timespec d = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(20, GPR_TIMESPAN));
            ev = grpc_completion_queue_pluck(c->cq, tag, d, NULL);
            if (ev.type != GRPC_QUEUE_TIMEOUT) break;
            void (*fn)(void *) = t_wait_poll;
            t_wait_poll = NULL;
            fn(t_wait_poll_ud);
            t_wait_poll = fn;
        }
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

tc_status tc_rpc_bidi_open(tc_rpc_client *c, const char *method, double timeout_s, tc_rpc_bidi **out) {
    tc_rpc_bidi *b = calloc(1, sizeof *b);
    if (!b) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    b->cl = c;
    grpc_slice m = grpc_slice_from_copied_string(method);
    b->call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, m, NULL, deadline_in(timeout_s), NULL);
    grpc_slice_unref(m);
    if (!b->call) {
        free(b);
        return TC_FAIL(TC_ERR_INTERNAL, "cannot create call %s", method);
    }
    grpc_metadata_array_init(&b->init_md);
    grpc_metadata_array_init(&b->trail_md);
    grpc_op ops[1];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    void *tag = (void *)(intptr_t)1;
    if (grpc_call_start_batch(b->call, ops, 1, tag, NULL) != GRPC_CALL_OK || !pluck(c, tag)) {
        /* connection problems surface at finish as a status */
    }
    *out = b;
    return TC_OK;
}

tc_status tc_rpc_bidi_send(tc_rpc_bidi *b, const uint8_t *msg, size_t len) {
    grpc_byte_buffer *bb = bytes_to_bb(msg, len);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    void *tag = (void *)(intptr_t)2;
    int ok = grpc_call_start_batch(b->call, &op, 1, tag, NULL) == GRPC_CALL_OK && pluck(b->cl, tag);
    grpc_byte_buffer_destroy(bb);
    return ok ? TC_OK : TC_FAIL(TC_ERR_IO, "send failed: the call is over");
}

tc_status tc_rpc_bidi_close_send(tc_rpc_bidi *b) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    void *tag = (void *)(intptr_t)3;
    int ok = grpc_call_start_batch(b->call, &op, 1, tag, NULL) == GRPC_CALL_OK && pluck(b->cl, tag);
    return ok ? TC_OK : TC_FAIL(TC_ERR_IO, "close failed: the call is over");
}

tc_status tc_rpc_bidi_recv(tc_rpc_bidi *b, uint8_t **msg, size_t *len) {
    grpc_byte_buffer *bb = NULL;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!b->got_md) { /* the server's initial metadata comes first */
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &b->init_md;
        b->got_md = 1;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &bb;
    void *tag = (void *)(intptr_t)4;
    *msg = NULL;
    *len = 0;
    if (grpc_call_start_batch(b->call, ops, n, tag, NULL) != GRPC_CALL_OK) return TC_FAIL(TC_ERR_IO, "recv failed");
    pluck(b->cl, tag);
    if (bb) {
        read_bb(bb, msg, len);
        grpc_byte_buffer_destroy(bb);
    }
    return TC_OK;
}

tc_status tc_rpc_bidi_finish(tc_rpc_bidi *b, tc_rpc_result *res) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &b->trail_md;
    op.data.recv_status_on_client.status = &b->status;
    op.data.recv_status_on_client.status_details = &b->details;
    void *tag = (void *)(intptr_t)5;
    if (grpc_call_start_batch(b->call, &op, 1, tag, NULL) == GRPC_CALL_OK) pluck(b->cl, tag);
    res->code = (int)b->status;
    size_t l = GRPC_SLICE_LENGTH(b->details);
    if (l >= sizeof res->message) l = sizeof res->message - 1;
    memcpy(res->message, GRPC_SLICE_START_PTR(b->details), l);
    res->message[l] = 0;
    grpc_slice_unref(b->details);
    grpc_metadata_array_destroy(&b->init_md);
    grpc_metadata_array_destroy(&b->trail_md);
    grpc_call_unref(b->call);
    free(b);
    return TC_OK;
}

static void bidi_cancel(tc_rpc_bidi *b) { grpc_call_cancel(b->call, NULL); }

tc_status tc_rpc_client_unary(tc_rpc_client *c, const char *method, const uint8_t *req, size_t len, uint8_t **resp,
                              size_t *rlen, double timeout_s, tc_rpc_result *res) {
    tc_rpc_bidi *b;
    TC_CHECK(tc_rpc_bidi_open(c, method, timeout_s, &b));
    if (tc_rpc_bidi_send(b, req, len) == TC_OK) tc_rpc_bidi_close_send(b);
    tc_rpc_bidi_recv(b, resp, rlen);
    return tc_rpc_bidi_finish(b, res);
}

tc_status tc_rpc_client_stream(tc_rpc_client *c, const char *method, const uint8_t *req, size_t len,
                               int (*on_msg)(void *ud, const uint8_t *msg, size_t len), void *ud, double timeout_s,
                               tc_rpc_result *res) {
    tc_rpc_bidi *b;
    TC_CHECK(tc_rpc_bidi_open(c, method, timeout_s, &b));
    if (tc_rpc_bidi_send(b, req, len) == TC_OK) tc_rpc_bidi_close_send(b);
    for (;;) {
        uint8_t *m;
        size_t l;
        tc_rpc_bidi_recv(b, &m, &l);
        if (!m) break;
        int stop = on_msg(ud, m, l);
        free(m);
        if (stop) {
            bidi_cancel(b);
            break;
        }
    }
    return tc_rpc_bidi_finish(b, res);
}
