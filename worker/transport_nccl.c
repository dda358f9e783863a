/* transport_nccl.c — the GPU data plane: a two-rank NCCL communicator,
 * rank 0 the context worker (sends), rank 1 its generation peer
 * (receives). Each message is NCCL operations in a fixed order — a
 * 32-byte header (sid, seq, length), then the payload — through a device
 * staging buffer (at most 16 MiB: a payload goes in pieces), on the
 * transport's own stream. NCCL matches operations
 * by order only: rank 1 keeps a receive posted at all times (a thread
 * that receives header, then payload, into the mailbox), so a send never
 * waits for the generation worker's Import and both sides stay in step
 * whatever order the coordinator issues Syncs and Imports in.
 * The bootstrap: a context worker started with --transport nccl reports a
 * ncclUniqueId in its Info (the same one until a Connect uses it); the coordinator hands it to both workers
 * of the pair in Connect (rank 0 and 1, at the same time), again after
 * either restarts. Built only when NCCL is present; its test needs two GPUs
 * (tests/gpu, SKIPPED otherwise). Host buffers in, host buffers out.
 * Waits: a send waits for its operations at most its timeout, polling the
 * stream and the communicator's asynchronous error (a peer gone); on
 * either the communicator is aborted and the transport is broken for good
 * (every later send fails at once; the coordinator's next Connect gives
 * the pair a fresh communicator). The receiver polls the same way, without
 * a deadline (a posted receive waits for the next message), until the
 * transport is closed or freed. Any failure once the header went through
 * breaks the communicator too: the receiver then waits for a payload that
 * never comes, out of step. Limits (tc_transport_nccl_limits): a message
 * over --max-message-bytes is refused by the sender; the receiver, which
 * cannot refuse (NCCL has no way back), stops on a larger header and
 * discards a message its mailbox (4 x the limit) has no room for.
 * The communicator is non-blocking (ncclConfig_t.blocking 0) so that
 * nothing waits on NCCL without a way out: its init is polled until the
 * open's deadline and aborted then (a peer that never joins -- its
 * Connect was late or lost -- fails the Connect instead of holding this
 * worker's thread for ever), and an operation that returns ncclInProgress
 * is polled until NCCL has put it on the stream. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "mailbox.h"
#include "transport.h"

typedef struct {
    tc_transport t;
    ncclComm_t comm;
    cudaStream_t stream;
    int rank, device;
    void *dbuf;
    size_t dcap;
    pthread_mutex_t mu;
    tc_mailbox *mb;       /* rank 1 */
    pthread_t rx;
    int rx_started;
    _Atomic int stopping; /* n_close, n_free: the receiver returns, sends fail */
    int broken;           /* rank 0, under mu: the communicator was aborted */
    uint64_t max_message;
} nccl_tp;

static _Atomic uint64_t g_max_message = (uint64_t)256 << 20;

void tc_transport_nccl_limits(uint64_t max_message) { atomic_store(&g_max_message, max_message); }

/* the id Info hands out until an open of rank 0 uses it */
static pthread_mutex_t g_id_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_id_valid;
static uint8_t g_id[128];

typedef struct {
    uint64_t magic, sid, seq, len;
} nccl_hdr;
/* (the second version: payloads in CHUNK pieces; a peer of the first
 * version stops on the header instead of going out of step) */
#define NCCL_MAGIC 0x4c43434e50444355ull
/* a payload goes through the device in pieces of at most this size, so
 * the staging buffer stays small whatever the state's size */
#define CHUNK ((size_t)16 << 20)

#define CUDACHK(x)                                                                                      \
    do {                                                                                                \
        cudaError_t e_ = (x);                                                                           \
        if (e_ != cudaSuccess) return TC_FAIL(TC_ERR_IO, "cuda: %s: %s", #x, cudaGetErrorString(e_));  \
    } while (0)

static tc_status reserve(nccl_tp *N, size_t n) {
    if (n <= N->dcap) return TC_OK;
    if (N->dbuf) cudaFree(N->dbuf);
    N->dbuf = NULL;
    N->dcap = 0;
    CUDACHK(cudaMalloc(&N->dbuf, n));
    N->dcap = n;
    return TC_OK;
}

/* a poll loop's wait: yields for its first `spins` rounds, then sleeps ns */
static void poll_pause(unsigned spin, unsigned spins, long ns) {
    if (spin < spins) {
        sched_yield();
    } else {
        const struct timespec ts = {0, ns};
        nanosleep(&ts, NULL);
    }
}

/* After an NCCL call on the non-blocking communicator: ncclInProgress
 * polls its state until it settles (the operation is then on the stream;
 * an init is done), at most until deadline (0: none) or until the
 * transport stops. *abort_it: the communicator must be aborted. */
static tc_status settle(nccl_tp *N, ncclResult_t r, double deadline, const char *what, int *abort_it) {
    for (unsigned spin = 0; r == ncclInProgress; spin++) {
        if (ncclCommGetAsyncError(N->comm, &r) != ncclSuccess) r = ncclInternalError;
        if (r != ncclInProgress) break;
        if (N->stopping) return *abort_it = 1, TC_FAIL(TC_ERR_IO, "nccl transport: %s: the transport is closing", what);
        if (deadline > 0 && tc_now_s() > deadline)
            return *abort_it = 1, TC_FAIL(TC_ERR_IO, "nccl transport: %s: not done in time (the peer did not join?)", what);
        poll_pause(spin, 1024, 100000);
    }
    if (r != ncclSuccess)
        return *abort_it = 1, TC_FAIL(TC_ERR_IO, "nccl transport: %s: %s", what, ncclGetErrorString(r));
    return TC_OK;
}

static tc_status n_connect(tc_transport *t, const char *peer) {
    (void)t, (void)peer; /* the communicator is the connection */
    return TC_OK;
}

/* Waits for the stream's work until deadline (tc_now_s() clock; 0: none)
 * or until the transport stops. A timeout or an asynchronous NCCL error
 * fails: *abort_it is set when the communicator must be aborted (the
 * operation may still be posted). Polls: a few thousand yields, then 20 us
 * sleeps (a send of a state is milliseconds; the receiver mostly idles). */
static tc_status wait_stream(nccl_tp *N, double deadline, const char *what, int *abort_it) {
    *abort_it = 0;
    for (unsigned spin = 0;; spin++) {
        const cudaError_t e = cudaStreamQuery(N->stream);
        if (e == cudaSuccess) return TC_OK;
        if (e != cudaErrorNotReady)
            return *abort_it = 1, TC_FAIL(TC_ERR_IO, "nccl transport: %s: %s", what, cudaGetErrorString(e));
        ncclResult_t ar = ncclSuccess;
        if (ncclCommGetAsyncError(N->comm, &ar) == ncclSuccess && ar != ncclSuccess && ar != ncclInProgress)
            return *abort_it = 1, TC_FAIL(TC_ERR_IO, "nccl transport: %s: %s (the peer is gone?)", what,
                                          ncclGetErrorString(ar));
        if (N->stopping) return TC_FAIL(TC_ERR_IO, "nccl transport: %s: the transport is closing", what);
        if (deadline > 0 && tc_now_s() > deadline)
            return *abort_it = 1, TC_FAIL(TC_ERR_IO, "nccl transport: %s: the peer did not receive in time", what);
        poll_pause(spin, 4096, 20000);
    }
}

/* A receive copies out only after the wait: a copy to pageable host
 * memory returns once it has completed, so one queued behind the posted
 * receive would block this thread until a message came, deaf to
 * `stopping` (and n_free, which joins it, with it). */
/* *posted: set once the NCCL operation was issued (the peer's matching
 * one may have consumed it even when this fails). host NULL on a receive:
 * discarded (not copied out). */
static tc_status xfer(nccl_tp *N, void *host, size_t n, int send, double deadline, int *abort_it, int *posted) {
    *abort_it = 0;
    TC_CHECK(reserve(N, n ? n : 1));
    if (send) {
        CUDACHK(cudaMemcpyAsync(N->dbuf, host, n, cudaMemcpyHostToDevice, N->stream));
        *posted = 1;
        TC_CHECK(settle(N, ncclSend(N->dbuf, n, ncclUint8, 1 - N->rank, N->comm, N->stream), deadline, "ncclSend",
                        abort_it));
        return wait_stream(N, deadline, "send", abort_it);
    }
    *posted = 1;
    TC_CHECK(settle(N, ncclRecv(N->dbuf, n, ncclUint8, 1 - N->rank, N->comm, N->stream), deadline, "ncclRecv",
                    abort_it));
    TC_CHECK(wait_stream(N, deadline, "receive", abort_it));
    if (host) CUDACHK(cudaMemcpyAsync(host, N->dbuf, n, cudaMemcpyDeviceToHost, N->stream)); /* returns when copied */
    return TC_OK;
}

/* a payload of n bytes, in CHUNK pieces (both sides cut it alike: NCCL
 * matches operations by order and size) */
static tc_status xfer_all(nccl_tp *N, uint8_t *host, size_t n, int send, double deadline, int *abort_it, int *posted) {
    for (size_t off = 0; off < n; off += CHUNK)
        TC_CHECK(xfer(N, host ? host + off : NULL, n - off < CHUNK ? n - off : CHUNK, send, deadline, abort_it, posted));
    return TC_OK;
}

static tc_status n_send(tc_transport *t, uint64_t sid, uint64_t seq, const void *buf, size_t len, double timeout_s) {
    nccl_tp *N = (nccl_tp *)t;
    if (N->rank != 0) return TC_FAIL(TC_ERR_INVALID, "nccl transport: rank %d does not send", N->rank);
    double t0 = tc_now_s();
    const double deadline = timeout_s > 0 ? t0 + timeout_s : 0;
    pthread_mutex_lock(&N->mu);
    tc_status st;
    if (N->broken) {
        st = TC_FAIL(TC_ERR_IO, "nccl transport: broken by an earlier failed send (awaiting a new Connect)");
    } else if (N->stopping) {
        st = TC_FAIL(TC_ERR_IO, "nccl transport: the transport is closing");
    } else if (len > N->max_message) { /* the receiver would stop on it */
        st = TC_FAIL(TC_ERR_EXHAUSTED,
                     "data plane: a state of %zu bytes exceeds the limit %llu (the largest state of a session of --max-session-tokens tokens, at least --max-message-bytes: raise them on both workers)", len,
                     (unsigned long long)N->max_message);
    } else {
        nccl_hdr h = {NCCL_MAGIC, sid, seq, len};
        int abort_it = 0, posted = 0;
        /* the staging buffer first: a device out of memory fails this
         * send alone, before anything is posted */
        st = reserve(N, len < sizeof h ? sizeof h : len < CHUNK ? len : CHUNK);
        if (st == TC_OK) st = xfer(N, &h, sizeof h, 1, deadline, &abort_it, &posted);
        if (st == TC_OK && len) st = xfer_all(N, (uint8_t *)buf, len, 1, deadline, &abort_it, &posted);
        if (st != TC_OK && (abort_it || posted)) {
            /* the receiver is gone, or out of step (a header went through,
             * its payload did not: it waits for one that never comes):
             * nothing more can go through this communicator */
            TC_LOG(TC_LOG_ERROR, "transport", "%s; aborting the NCCL communicator", tc_error_get());
            ncclCommAbort(N->comm);
            N->comm = NULL;
            N->broken = 1;
        }
    }
    pthread_mutex_unlock(&N->mu);
    if (st == TC_OK) t->bytes_sent += len, t->messages_sent++, t->send_s += tc_now_s() - t0;
    return st;
}

/* rank 1: receive the next message whatever it is, into the mailbox */
static void *rx_main(void *arg) {
    nccl_tp *N = arg;
    cudaSetDevice(N->device);
    for (;;) {
        nccl_hdr h;
        int abort_it = 0, posted = 0;
        tc_status st = xfer(N, &h, sizeof h, 0, 0, &abort_it, &posted);
        if (st == TC_OK && h.magic != NCCL_MAGIC)
            st = TC_FAIL(TC_ERR_IO, "nccl transport: bad header (the two sides are out of step)");
        else if (st == TC_OK && h.len > N->max_message) /* a sender with a larger setting */
            st = TC_FAIL(TC_ERR_IO, "nccl transport: a message of %llu bytes exceeds the limit %llu (--max-session-tokens, at least --max-message-bytes)",
                         (unsigned long long)h.len, (unsigned long long)N->max_message);
        /* no room in the mailbox (messages nobody imports): received, to
         * stay in step, and discarded -- its Import fails */
        int keep = 1;
        if (st == TC_OK && tc_mailbox_reserve(N->mb, h.sid, h.seq, (size_t)h.len) != TC_OK) {
            if (!N->stopping) TC_LOG(TC_LOG_ERROR, "transport", "%s; discarded", tc_error_get());
            keep = 0;
        }
        void *b = NULL;
        if (st == TC_OK && keep && !(b = malloc(h.len ? h.len : 1))) {
            tc_mailbox_unreserve(N->mb, (size_t)h.len);
            TC_LOG(TC_LOG_ERROR, "transport", "data plane: out of memory for %llu bytes; discarded", (unsigned long long)h.len);
            keep = 0;
        }
        if (st == TC_OK && h.len) st = xfer_all(N, b, h.len, 0, 0, &abort_it, &posted);
        if (st != TC_OK) {
            if (b) tc_mailbox_unreserve(N->mb, (size_t)h.len);
            free(b);
            if (!N->stopping) TC_LOG(TC_LOG_ERROR, "transport", "%s; the receiver stops", tc_error_get());
            break;
        }
        N->t.bytes_received += h.len;
        if (keep) tc_mailbox_put(N->mb, h.sid, h.seq, b, h.len);
    }
    tc_mailbox_close(N->mb); /* Imports fail now instead of waiting */
    /* its receive may still be posted on the device (a stop, a failure):
     * aborted now, not at exit -- a posted NCCL kernel that never ends
     * would hold every later device-wide call (cudaFree in a newer
     * transport's reserve, its init) for ever. Only this thread uses a
     * rank-1 communicator */
    ncclCommAbort(N->comm);
    N->comm = NULL;
    return NULL;
}

static tc_status n_recv(tc_transport *t, uint64_t sid, uint64_t seq, void **buf, size_t *len, double timeout_s) {
    nccl_tp *N = (nccl_tp *)t;
    if (N->rank != 1) return TC_FAIL(TC_ERR_INVALID, "nccl transport: rank %d does not receive", N->rank);
    return tc_mailbox_take(N->mb, sid, seq, buf, len, timeout_s);
}

static void n_drop(tc_transport *t, uint64_t sid) {
    nccl_tp *N = (nccl_tp *)t;
    if (N->mb) tc_mailbox_drop(N->mb, sid);
}
static const char *n_address(const tc_transport *t) {
    (void)t;
    return "";
}
static void n_close(tc_transport *t) {
    nccl_tp *N = (nccl_tp *)t;
    N->stopping = 1; /* a send's wait and the receiver return at their next poll */
    if (N->mb) tc_mailbox_close(N->mb); /* a recv fails now */
}

static void n_free(tc_transport *t) {
    nccl_tp *N = (nccl_tp *)t;
    if (!N) return;
    N->stopping = 1;
    /* the receiver sees stopping at its next poll and returns (its receive
     * may stay posted); an operation still posted -- that receive, or a
     * send a stop interrupted -- is torn down by an abort (a destroy would
     * wait for it, and a non-blocking one would want a finalize first):
     * the communicator is always aborted, which frees it as well */
    if (N->rx_started) pthread_join(N->rx, NULL); /* it aborted its communicator */
    if (N->comm) ncclCommAbort(N->comm);
    N->comm = NULL;
    tc_mailbox_free(N->mb);
    if (N->dbuf) cudaFree(N->dbuf);
    if (N->stream) cudaStreamDestroy(N->stream);
    pthread_mutex_destroy(&N->mu);
    free(N);
}

tc_status tc_transport_nccl_id(uint8_t id[128]) {
    pthread_mutex_lock(&g_id_mu);
    if (!g_id_valid) {
        ncclUniqueId u;
        const ncclResult_t r = ncclGetUniqueId(&u);
        if (r != ncclSuccess) {
            pthread_mutex_unlock(&g_id_mu);
            return TC_FAIL(TC_ERR_IO, "nccl: ncclGetUniqueId: %s", ncclGetErrorString(r));
        }
        memcpy(g_id, u.internal, 128);
        g_id_valid = 1;
    }
    memcpy(id, g_id, 128);
    pthread_mutex_unlock(&g_id_mu);
    return TC_OK;
}

tc_status tc_transport_nccl_open(tc_transport **out, const uint8_t id[128], int rank, int device, double timeout_s) {
    *out = NULL;
    if (rank != 0 && rank != 1) return TC_FAIL(TC_ERR_INVALID, "nccl transport: rank %d (expected 0 or 1)", rank);
    if (!(timeout_s > 0)) return TC_FAIL(TC_ERR_IO, "nccl transport: no time left to join the communicator");
    nccl_tp *N = calloc(1, sizeof *N);
    if (!N) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&N->mu, NULL);
    N->rank = rank, N->device = device;
    N->max_message = atomic_load(&g_max_message);
    if (rank == 0) { /* the id Info handed out is used: the next Info makes a fresh one */
        pthread_mutex_lock(&g_id_mu);
        if (g_id_valid && memcmp(g_id, id, 128) == 0) g_id_valid = 0;
        pthread_mutex_unlock(&g_id_mu);
    }
    N->t.kind = "nccl";
    N->t.connect = n_connect;
    N->t.send = n_send;
    N->t.recv = n_recv;
    N->t.drop = n_drop;
    N->t.address = n_address;
    N->t.close = n_close;
    N->t.free = n_free;
    ncclUniqueId u;
    memcpy(u.internal, id, 128);
    tc_status st = TC_OK;
    if (cudaSetDevice(device) != cudaSuccess || cudaStreamCreateWithFlags(&N->stream, cudaStreamNonBlocking) != cudaSuccess)
        st = TC_FAIL(TC_ERR_IO, "nccl transport: cannot use cuda:%d", device);
    else {
        ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
        cfg.blocking = 0;
        int abort_it = 0;
        const ncclResult_t r = ncclCommInitRankConfig(&N->comm, 2, u, rank, &cfg);
        if (r != ncclSuccess && r != ncclInProgress)
            st = TC_FAIL(TC_ERR_IO, "nccl: ncclCommInitRankConfig: %s", ncclGetErrorString(r));
        else
            st = settle(N, r, tc_now_s() + (timeout_s > 3600 ? 120 : timeout_s), "ncclCommInitRankConfig", &abort_it);
        /* a failed or timed-out init: n_free aborts what there is */
        if (st != TC_OK && r != ncclSuccess && r != ncclInProgress) N->comm = NULL;
    }
    if (st == TC_OK && rank == 1) {
        const uint64_t cap = N->max_message > UINT64_MAX / 4 ? UINT64_MAX : 4 * N->max_message;
        if (tc_mailbox_new(&N->mb, cap) != TC_OK) st = TC_FAIL(TC_ERR_NOMEM, "out of memory");
        else if (pthread_create(&N->rx, NULL, rx_main, N) != 0) st = TC_FAIL(TC_ERR_INTERNAL, "cannot start the receiver");
        else N->rx_started = 1;
    }
    if (st != TC_OK) {
        n_free(&N->t);
        return st;
    }
    *out = &N->t;
    return TC_OK;
}
