/* service.h — the public API (tconst.v1, grpc.health.v1, reflection) on
 * top of rpc.h and engine.h: decodes and validates requests, submits jobs,
 * encodes responses. Errors are gRPC statuses whose message names the
 * field. Not the transport (rpc.c) nor the scheduling (engine.c). */
#ifndef TC_DAEMON_SERVICE_H
#define TC_DAEMON_SERVICE_H

#include "engine.h"
#include "rpc.h"

typedef struct tc_service tc_service;

typedef struct {
    const char *model_path;
    const char *version;
    int max_message_bytes;
    long long large_request_budget; /* bytes of requests over 16 KiB queued or running at once (0: 64 MiB) */
} tc_service_info;

tc_status tc_service_init(tc_service **out, tc_engine *e, tc_worker_client *wc, struct tc_bpe *bpe,
                          const tc_service_info *info);
void tc_service_free(tc_service *s);
/* Large requests still queued for a thread of their own end UNAVAILABLE;
 * the one running finishes. After the RPC server stopped (no new ones),
 * before the engine stops (they submit to it). */
void tc_service_stop_queue(tc_service *s);
/* Until no large request is queued or running (the fuzzer's quiet point). */
void tc_service_wait_queue(tc_service *s);
/* The sink the engine reports to, and the handlers the RPC server calls. */
const tc_engine_sink *tc_service_sink(void);
const tc_rpc_handlers *tc_service_handlers(void);
void tc_service_bind_engine(tc_service *s, tc_engine *e);
/* Health: serving flips readiness for Check/Watch (and /readyz). */
void tc_service_set_serving(tc_service *s, int serving, int draining);
/* Whether any worker pair is up: with none the service is not serving
 * either (Check/Watch NOT_SERVING, /readyz 503) until one is back. */
void tc_service_set_workers_up(tc_service *s, int up);
/* serving, not draining, and workers up */
int tc_service_serving(tc_service *s);
/* Ends every Health.Watch stream (shutdown). */
void tc_service_end_watchers(tc_service *s);
/* Ends every Stream that runs no job -- waiting for its client's next
 * request -- with UNAVAILABLE (the end of a drain: otherwise it holds the
 * exit for the rest of the grace); a session it opened closes with it. */
void tc_service_end_idle_streams(tc_service *s);

#endif
