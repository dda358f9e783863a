/* service_int.h — service.c's internals, shared with service_health.c
 * (grpc.health.v1 and server reflection); not an interface: service.h is.
 * A call's context (ctx) is shared by the RPC side and, while a job runs,
 * the engine; it is freed when both let go. */
#ifndef TC_DAEMON_SERVICE_INT_H
#define TC_DAEMON_SERVICE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "../common/workq.h"
#include "engine.h"
#include "rpc.h"
#include "service.h"

#define SVC "/tconst.v1.TConst/"

enum { K_UNARY = 0, K_GENERATE, K_STREAM, K_APPEND, K_OPEN, K_WATCH, K_REFLECT, K_SNAPSHOT };

typedef struct ctx {
    tc_service *svc;
    tc_call *call;
    atomic_int refs;
    int kind;
    pthread_mutex_t mu;
    uint64_t job_id;   /* 0 when no job runs */
    char request_id[TC_ID_MAX];
    char session_id[TC_ID_MAX]; /* streams: their session */
    int owns_session, pinned, half_closed, failed, rpc_done;
    int counted; /* a generation request (Generate, GenerateInSession, OpenSession, Append, Stream): a
                  * refusal before the engine saw it counts in requests_total (tc_svc_refuse) */
    uint64_t pin_key; /* the pinned session's (tc_engine_session_unpin) */
    int recv_deferred; /* the next receive waits for the client to read (recv_or_defer) */
    /* a job's final status, held until the engine lets go of the job
     * (sk_done): by then its session is no longer busy, so a client may
     * use the session again as soon as its call has ended */
    int end_set, end_code;
    char end_msg[600];
    struct ctx *next_watch;
    /* open Streams (tc_service.streams, under its mu; the list holds a
     * reference): a drain's end finishes those waiting for their client */
    struct ctx *st_prev, *st_next;
    int st_linked;
    /* SnapshotSession: the copy being sent, a few chunks ahead of the
     * client (under mu: the RPC thread's on_sent, and the engine thread
     * that hands over a copy that waited, snapshot_later) */
    int32_t *snap;
    int64_t snap_n, snap_off;
    int snap_chunk;
    tc_session_info snap_info;
} ctx;

struct tc_service {
    tc_engine *e;
    tc_worker_client *wc;
    struct tc_bpe *bpe;
    tc_service_info info;
    pthread_mutex_t mu;
    int serving, draining;
    int workers_down; /* no worker pair up (tc_service_set_workers_up) */
    ctx *watchers;
    ctx *streams; /* open Streams (ctx.st_*) */
    double t_start;
    /* requests over TC_INLINE_MAX bytes (their text is tokenized, their
     * ids copied and checked: work that grows with the request) run here,
     * not on the RPC thread, which every other call waits for; at most
     * TC_BIG_QUEUED_BYTES of them wait (more: RESOURCE_EXHAUSTED) */
    tc_workq *bigq;
    atomic_llong big_bytes;
};

/* the largest request message a handler takes on the RPC thread */
#define TC_INLINE_MAX 16384
/* large requests queued or running at once, in bytes, by default
 * (tconstd --large-request-budget): each is a copy of its message, and
 * tokenizing takes ~100 B of scratch a byte of text */
#define TC_BIG_QUEUED_BYTES (64ll << 20)

/* ---- service.c ---- */
/* one reference of c let go (the last frees it) */
void tc_svc_ctx_unref(ctx *c);
/* m packed and sent on call: 0, or -1 (the client is gone, or no memory) */
int tc_svc_send_msg(tc_call *call, const ProtobufCMessage *m);
/* a unary call's one message, then OK */
void tc_svc_reply(tc_call *call, const ProtobufCMessage *m);
/* the next message of a client stream, received now or once the client
 * read what was sent (backpressure) */
void tc_svc_recv_or_defer(ctx *c);
/* the engine let go of a job's call (tc_engine_sink.done) */
void tc_svc_sk_done(void *user);
/* the call ends with code and a formatted message */
void tc_svc_finishf(tc_call *call, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* c's call ends with code and a formatted message; when c is a generation
 * request (c->counted) refused before the engine saw it, it counts in
 * requests_total as the engine's refusals do (RESOURCE_EXHAUSTED:
 * overloaded, INTERNAL: error, else rejected) */
void tc_svc_refuse(ctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* the first string field of wire message m (after its unpack) holding a
 * NUL (*nul 1) or ill-formed UTF-8 (*nul 0, *at its byte): 1 and its path
 * ("sampling.stop[1]"), else 0 */
int tc_svc_bad_string_field(const ProtobufCMessageDescriptor *d, const uint8_t *m, size_t len, int depth, int *nul,
                            size_t *at, char *path, size_t pathlen);
/* var = the request of type decoded from m, or the call ends with
 * INVALID_ARGUMENT naming the type or the bad string field (in a handler
 * with `ctx *c`, returning void) */
#define DECODE(type, fn, var, m, len)                                                               \
    type *var = fn##__unpack(NULL, len, m);                                                         \
    if (!var) {                                                                                     \
        tc_svc_refuse(c, TC_GRPC_INVALID_ARGUMENT, "malformed request: cannot decode %s", #type); \
        return;                                                                                     \
    }                                                                                               \
    {                                                                                               \
        int nul_ = 0;                                                                               \
        size_t at_ = 0;                                                                             \
        char bad_[200];                                                                             \
        if (tc_svc_bad_string_field(var->base.descriptor, m, len, 0, &nul_, &at_, bad_, sizeof bad_)) { \
            if (nul_)                                                                               \
                tc_svc_refuse(c, TC_GRPC_INVALID_ARGUMENT, "%s: a NUL character (U+0000) is not accepted", \
                        bad_);                                                                      \
            else                                                                                    \
                tc_svc_refuse(c, TC_GRPC_INVALID_ARGUMENT, "%s: not valid UTF-8 (at byte %zu)", bad_, at_); \
            fn##__free_unpacked(var, NULL);                                                         \
            return;                                                                                 \
        }                                                                                           \
    }

/* ---- service_health.c ---- */
/* grpc.health.v1.Health Check (watch 0) or Watch (1) */
void tc_svc_health(ctx *c, const uint8_t *m, size_t len, int watch);
/* a Watch call that ended leaves the watcher list */
void tc_svc_unwatch(tc_service *s, ctx *c);
/* grpc.reflection.v1alpha ServerReflectionInfo: one request message */
void tc_svc_reflect(ctx *c, const uint8_t *m, size_t len);

#endif
