/* rpc.h — the only module that calls grpc_* (gRPC C core): a small
 * callback server over one completion queue, and a blocking client.
 *
 * Server: every call, known method or not, arrives through one catch-all
 * grpc_server_request_call that is always re-posted (so unknown methods get
 * an answer instead of hanging). Handlers run on the RPC thread; the
 * tc_call_* functions may be called from any thread. Sends are queued per
 * call and written one at a time; tc_call_finish sends the status after the
 * queue drains. Not here: protobuf, sessions, the engine. */
#ifndef TC_DAEMON_RPC_H
#define TC_DAEMON_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"

/* gRPC status codes (the wire values) */
enum {
    TC_GRPC_OK = 0, TC_GRPC_CANCELLED = 1, TC_GRPC_UNKNOWN = 2, TC_GRPC_INVALID_ARGUMENT = 3,
    TC_GRPC_DEADLINE_EXCEEDED = 4, TC_GRPC_NOT_FOUND = 5, TC_GRPC_ALREADY_EXISTS = 6,
    TC_GRPC_PERMISSION_DENIED = 7, TC_GRPC_RESOURCE_EXHAUSTED = 8, TC_GRPC_FAILED_PRECONDITION = 9,
    TC_GRPC_ABORTED = 10, TC_GRPC_OUT_OF_RANGE = 11, TC_GRPC_UNIMPLEMENTED = 12, TC_GRPC_INTERNAL = 13,
    TC_GRPC_UNAVAILABLE = 14, TC_GRPC_DATA_LOSS = 15,
};

typedef struct tc_rpc_server tc_rpc_server;
typedef struct tc_call tc_call;

typedef struct {
    /* A new call and its first request message (msg NULL if the client
     * half-closed without one). The handler owns one reference to c. */
    void (*on_start)(void *ud, tc_call *c, const char *method, const uint8_t *msg, size_t len);
    /* The next request message after tc_call_recv_next (NULL = half-close,
     * or the call failed). */
    void (*on_message)(void *ud, tc_call *c, const uint8_t *msg, size_t len);
    /* The call is over from the client's side: cancelled (client cancel,
     * deadline, connection loss) or completed after our status. Once. */
    void (*on_done)(void *ud, tc_call *c, int cancelled);
    /* A queued message was written: room in the send queue again. */
    void (*on_sent)(void *ud, tc_call *c);
    /* optional: 0 for a method the server does not serve, answered
     * UNIMPLEMENTED at once, before any message (NULL: every method goes
     * to on_start) */
    int (*is_known)(void *ud, const char *method);
} tc_rpc_handlers;

typedef struct {
    int max_message_bytes;    /* a request message at most */
    int keepalive_ms;         /* the server pings an idle connection this often (0: gRPC's default, 2 h) */
    int keepalive_timeout_ms; /* ... and closes it when the ping is not answered within this */
    int max_streams;          /* concurrent calls a connection (0: unlimited) */
    int max_unstarted;        /* calls that have not sent their first message, all connections (0: unlimited) */
    int64_t memory_quota_bytes; /* gRPC's buffers, all connections together (0: no quota) */
} tc_rpc_server_opts;

tc_status tc_rpc_server_start(tc_rpc_server **out, const char *addr, const tc_rpc_server_opts *o,
                              const tc_rpc_handlers *h, void *ud);
int tc_rpc_server_port(const tc_rpc_server *s);
/* Seconds the RPC thread has spent on the event it is handling now (0
 * while it waits for the next): a handler that never returns (a deadlock)
 * shows as a number that only grows. Any thread; for /healthz. */
double tc_rpc_server_busy_s(const tc_rpc_server *s);
/* Stops accepting calls, lets running calls finish for up to grace_s
 * seconds (their queued messages and status go out), cancels the rest,
 * waits for the RPC thread and frees everything. */
void tc_rpc_server_stop(tc_rpc_server *s, double grace_s);

void tc_call_ref(tc_call *c);
void tc_call_unref(tc_call *c);
void tc_call_set_user(tc_call *c, void *p);
void *tc_call_user(const tc_call *c);
const char *tc_call_method(const tc_call *c);
/* Asks for the next request message of a client-streaming call. */
void tc_call_recv_next(tc_call *c);
/* Queues a response message (copied). Fails once the call is done. */
tc_status tc_call_send(tc_call *c, const uint8_t *msg, size_t len);
/* Messages queued or in flight. */
size_t tc_call_pending(tc_call *c);
/* Sends the status after every queued message; later sends are refused. */
void tc_call_finish(tc_call *c, int code, const char *message);
int tc_call_is_done(tc_call *c);
/* Seconds until the client's deadline (INFINITY when none). */
double tc_call_deadline_left(const tc_call *c);

/* ---- client (blocking; one call at a time per client object) ---- */
typedef struct tc_rpc_client tc_rpc_client;
tc_status tc_rpc_client_open(tc_rpc_client **out, const char *addr);
void tc_rpc_client_close(tc_rpc_client *c);

typedef struct {
    int code;          /* gRPC status */
    char message[512]; /* status details */
} tc_rpc_result;

/* While this thread waits on a client call, fn(ud) runs every 20 ms
 * (NULL: none). It may make calls of its own on another client (they do
 * not poll): the coordinator's cancel of a worker's running prefill. */
void tc_rpc_client_wait_poll(void (*fn)(void *ud), void *ud);

/* Unary call: *resp is malloc'd (NULL when no message). */
tc_status tc_rpc_client_unary(tc_rpc_client *c, const char *method, const uint8_t *req, size_t len, uint8_t **resp,
                              size_t *rlen, double timeout_s, tc_rpc_result *res);
/* Server-streaming call: on_msg per response; a nonzero return cancels. */
tc_status tc_rpc_client_stream(tc_rpc_client *c, const char *method, const uint8_t *req, size_t len,
                               int (*on_msg)(void *ud, const uint8_t *msg, size_t len), void *ud, double timeout_s,
                               tc_rpc_result *res);
/* Bidirectional: open, send/recv in any order the protocol allows, close. */
typedef struct tc_rpc_bidi tc_rpc_bidi;
tc_status tc_rpc_bidi_open(tc_rpc_client *c, const char *method, double timeout_s, tc_rpc_bidi **out);
tc_status tc_rpc_bidi_send(tc_rpc_bidi *b, const uint8_t *msg, size_t len);
tc_status tc_rpc_bidi_close_send(tc_rpc_bidi *b);
/* *msg NULL at end of stream. */
tc_status tc_rpc_bidi_recv(tc_rpc_bidi *b, uint8_t **msg, size_t *len);
tc_status tc_rpc_bidi_finish(tc_rpc_bidi *b, tc_rpc_result *res); /* waits for the status, frees b */

#endif
