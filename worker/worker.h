/* worker.h — the worker service behind tconst-worker (worker.c): session
 * copies, compute threads, the RPC handlers for proto/worker.proto. */
#ifndef TC_WORKER_WORKER_H
#define TC_WORKER_WORKER_H

#include "../common/status.h"
#include "../daemon/rpc.h"
#include "../model/weights.h"
#include "transport.h"

#define TC_WORKER_VERSION "0.1.0"

typedef struct {
    const char *role;      /* context | generation | both */
    const char *device;    /* cpu | cuda:N */
    double peer_timeout_s; /* data-plane send and Import waits */
    const char *transport; /* host | nccl (then the data plane starts at Connect) */
    int cuda_device;       /* nccl: the device of the communicator */
    double orphan_timeout_s; /* an owner silent this long is dead: another coordinator may take over (0: 30) */
    /* the device's health, checked before any result leaves the worker
     * (compute: 1 from the compute threads, 0 for Info/Ping/health on the
     * RPC thread); NULL: always healthy (the CPU). Not TC_OK: the worker
     * fails every call with UNAVAILABLE and SIGTERMs itself (see
     * tc_worker_poisoned). */
    tc_status (*device_status)(void *arg, int compute);
    void *device_arg;
    /* called first on each compute thread (role 0 generation, 1 context,
     * 2 prefill when prefill_thread)
     * with device_arg, e.g. to give each its own CUDA stream; NULL: none */
    void (*thread_init)(void *arg, int role);
    /* tests: the first fault_sync_errors Sync calls fail with INTERNAL
     * (TC_FAULT_SYNC_ERRORS, worker/main.c); 0 in production */
    int fault_sync_errors;
    /* 1: Appends (prefills) on a compute thread of their own (role 2, its
     * own model workspace), so a long prefill does not hold up other
     * sessions' boundary Syncs on the context thread; 0: Appends on the
     * context thread (a device with one lane for context work) */
    int prefill_thread;
    /* tests: a Step's inline sync of a session whose history holds exactly
     * this many tokens fails, that session alone (TC_FAULT_STEP_SYNC_AT,
     * worker/main.c); 0 in production */
    int64_t fault_step_sync_at;
    /* tests: the first fault_connect_errors Connect calls fail with
     * INTERNAL (TC_FAULT_CONNECT_ERRORS, worker/main.c); 0 in production */
    int fault_connect_errors;
    /* tests: the reply to this worker's at-th Append that returns logits
     * lacks one logit; the at-th Step reply with sampled ids carries one
     * outside the vocabulary (TC_FAULT_APPEND_REPLY_AT,
     * TC_FAULT_STEP_REPLY_AT, worker/main.c); 0 in production */
    int64_t fault_append_reply_at, fault_step_reply_at;
    /* --max-message-bytes, told to the coordinator in Info (0: not said) */
    int64_t max_message_bytes;
} tc_worker_opts;

typedef struct tc_worker tc_worker;

/* tp may be NULL (role both; nccl until the first Connect). The worker
 * does not own m or a tp given here; one made by Connect it frees. */
tc_status tc_worker_new(tc_worker **out, tc_model *m, tc_transport *tp, const char *config_json,
                        const tc_worker_opts *o);
void tc_worker_free(tc_worker *w);
/* 1 once device_status failed: main exits with status 3 after its stop */
int tc_worker_poisoned(tc_worker *w);
const tc_rpc_handlers *tc_worker_handlers(void);

#endif
