/* backend_cuda_graph.c — the CUDA backend's hit steps as CUDA graphs
 * (capture_begin / capture_end: captured each step, or probed, hashed and
 * replayed), the replay hash and the staging of a step's batch items, and
 * the TC_CUDA_PROFILE timer (GPU time per op class). Split from
 * backend_cuda.c, which holds the ops that feed the hash and the staging;
 * what the two share is backend_cuda_int.h. C11, host only. */
#include <stdio.h>
#include <stdlib.h>

#include "../../common/log.h"
#include "backend_cuda_int.h"
#include "kernels_cuda.h"

_Thread_local int tc_cuda_t_lane;
_Thread_local int tc_cuda_t_capturing;
_Thread_local int tc_cuda_t_mode;

/* ---- replay mode: the launch hash and the item staging ---- */
static void hash_mix(tc_cuda_lane *L, const void *p, size_t n) { /* FNV-1a */
    const unsigned char *b = p;
    uint64_t h = L->hash;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    L->hash = h;
}
int tc_cuda_replay_mix(tc_cuda_lane *L, const uint64_t *a, size_t bytes) {
    if (tc_cuda_t_mode != M_PROBE && tc_cuda_t_mode != M_CAPTURE) return 0;
    hash_mix(L, a, bytes);
    return tc_cuda_t_mode == M_PROBE;
}
const void *tc_cuda_stage_items(tc_cuda_lane *L, const void *items, size_t bytes) {
    if (tc_cuda_t_mode != M_PROBE && tc_cuda_t_mode != M_CAPTURE) return NULL;
    const size_t off = (L->stage_used + 15) & ~(size_t)15;
    if (!L->stage_h || off + bytes > L->stage_cap) {
        L->stage_overflow = 1;
        return NULL;
    }
    memcpy((char *)L->stage_h + off, items, bytes);
    L->stage_used = off + bytes;
    const uint64_t o = off;
    hash_mix(L, &o, sizeof o);
    return (const char *)L->stage_d + off;
}

/* ---- CUDA graphs ---------------------------------------------------------
 * model/ brackets a hit step's ops (after the token upload, before the
 * download) with capture_begin / capture_end, and issues them again while
 * capture_end says 0.
 *
 * TC_CUDA_GRAPHS=1 (capture): the lane's stream records the ops; capture_end
 * turns the recording into the lane's executable graph -- updated in place
 * when the launch sequence has the last step's shape, instantiated anew
 * when not -- and launches it. Recording costs about what launching does.
 *
 * TC_CUDA_GRAPHS=2 (replay): a first pass only *probes*: each op hashes the
 * launches it would make (kernel, grid, every pointer and scalar) and
 * copies the per-session items of the batched kernels (rope_kv, attention
 * rows and pairs: positions, lengths, window pointers -- what changes from
 * step to step) into the lane's pinned staging; nothing is launched. If
 * the hash is that of the lane's kept graph, capture_end launches that
 * graph as is: its first node copies the staging to the device, where the
 * batched kernels read their items. The host cost of a step is then the
 * model's own bookkeeping plus one launch. Otherwise capture_end says 0,
 * and the second pass captures the step (the staging copy first, then the
 * kernels reading their items from device memory), keeps the graph under
 * this hash and launches it. Thread-local capture mode: another thread may
 * allocate or synchronize meanwhile (the mode restricts only the capturing
 * thread's calls); what it enqueues goes on a stream no one is capturing
 * (mem_stream), for anything enqueued on this lane's stream now would join
 * the capture. */
/* cudaStreamBeginCapture on the lane's stream, mem_mu held: a memory op of
 * another thread (mem_stream) is enqueued either before the capture begins
 * or, seeing it, on the side stream */
static cudaError_t begin_capture(tc_cuda_lane *L) {
    pthread_mutex_lock(&L->mem_mu);
    cudaError_t e = cudaStreamBeginCapture(L->stream, cudaStreamCaptureModeThreadLocal);
    pthread_mutex_unlock(&L->mem_mu);
    return e;
}
void tc_cuda_capture_begin(tc_backend *be) {
    tc_cuda_ctx *c = ctx_of(be);
    tc_cuda_lane *L = lane_of(c);
    TC_ASSERT(!tc_cuda_t_capturing, "cuda: capture_begin inside a capture");
    if (!c->graphs || !cuda_enter(c)) return;
    if (c->graphs == 1) {
        if (CU_OK(c, begin_capture(L))) {
            tc_cuda_t_capturing = 1;
            tc_cuda_t_mode = M_LEGACY;
        }
        return;
    }
    if (!L->stage_h && !L->stage_failed) { /* once per lane, before any capture */
        void *h = NULL, *d = NULL;
        if (cudaHostAlloc(&h, TC_CUDA_STAGE_BYTES, cudaHostAllocDefault) == cudaSuccess &&
            cudaMalloc(&d, TC_CUDA_STAGE_BYTES) == cudaSuccess) {
            L->stage_h = h, L->stage_d = d, L->stage_cap = TC_CUDA_STAGE_BYTES;
        } else {
            /* no staging: every step runs as called, and the allocations
             * (the device one synchronizes the device) are not retried */
            (void)cudaGetLastError();
            if (h) (void)cudaFreeHost(h);
            L->stage_cap = 0;
            L->stage_failed = 1;
            TC_LOG(TC_LOG_WARN, "cuda", "device %d: no memory for the replay staging (%zu bytes): hit steps run "
                   "without graphs on this lane", c->device, TC_CUDA_STAGE_BYTES);
        }
    }
    L->hash = 1469598103934665603ull; /* FNV offset basis */
    {
        /* a graph captured with programmatic launches is not the one without */
        const uint64_t pdl = (uint64_t)tc_cuda_pdl_on();
        hash_mix(L, &pdl, sizeof pdl);
    }
    L->stage_used = 0;
    L->stage_overflow = 0;
    if (L->next == M_DIRECT || !L->stage_h) { /* the staging overflowed last pass: run as called */
        L->direct_pass = 1;
        return;
    }
    if (L->next == M_CAPTURE) {
        if (!CU_OK(c, begin_capture(L))) return;
        /* the graph's first node: this step's items, staged by the ops below */
        if (L->probe_used &&
            !CU_OK(c, cudaMemcpyAsync(L->stage_d, L->stage_h, L->probe_used, cudaMemcpyHostToDevice, L->stream))) {
            cudaGraph_t g = NULL;
            (void)cudaStreamEndCapture(L->stream, &g);
            if (g) (void)cudaGraphDestroy(g);
            return;
        }
        tc_cuda_t_mode = M_CAPTURE;
    } else {
        tc_cuda_t_mode = M_PROBE;
    }
    tc_cuda_t_capturing = 1;
}

/* TC_CUDA_GRAPHS=1: the recording into the lane's graph, launched */
static void legacy_end(tc_cuda_ctx *c, tc_cuda_lane *L) {
    cudaGraph_t g = NULL;
    /* ended even on a poisoned device, so the stream leaves capture mode */
    cudaError_t e = cudaStreamEndCapture(L->stream, &g);
    if (!CU_OK(c, e) || atomic_load(&c->poisoned)) {
        if (g) (void)cudaGraphDestroy(g);
        return;
    }
    if (L->exec) {
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(L->exec, g, &info) != cudaSuccess) {
            (void)cudaGetLastError(); /* a topology change is not an error: instantiate */
            (void)cudaGraphExecDestroy(L->exec);
            L->exec = NULL;
        }
    }
    if (!L->exec) {
        if (!CU_OK(c, cudaGraphInstantiate(&L->exec, g, 0))) {
            L->exec = NULL;
            (void)cudaGraphDestroy(g);
            return;
        }
        L->n_instantiate++;
    }
    if (CU_OK(c, cudaGraphLaunch(L->exec, L->stream))) L->n_launch++;
    (void)cudaGraphDestroy(g); /* the exec keeps what it needs */
}

/* 1: the step's ops ran (or were launched as a graph); 0: issue them again */
int tc_cuda_capture_end(tc_backend *be) {
    tc_cuda_ctx *c = ctx_of(be);
    tc_cuda_lane *L = lane_of(c);
    if (L->direct_pass) {
        L->direct_pass = 0;
        L->next = M_PROBE;
        return 1;
    }
    if (!tc_cuda_t_capturing) return 1;
    const int mode = tc_cuda_t_mode;
    tc_cuda_t_capturing = 0;
    tc_cuda_t_mode = M_DIRECT;
    if (mode == M_LEGACY) {
        legacy_end(c, L);
        return 1;
    }
    if (mode == M_PROBE) {
        if (atomic_load(&c->poisoned)) return 1; /* nothing more will run */
        if (L->stage_overflow) {
            L->next = M_DIRECT;
            return 0;
        }
        L->n_probe++;
        for (int i = 0; i < TC_CUDA_KEPT; i++)
            if (L->kept[i].exec && L->hash == L->kept[i].hash && L->stage_used == L->kept[i].used) {
                L->kept[i].last = L->n_probe;
                if (CU_OK(c, cudaGraphLaunch(L->kept[i].exec, L->stream))) L->n_launch++;
                return 1;
            }
        L->probe_hash = L->hash, L->probe_used = L->stage_used;
        L->next = M_CAPTURE;
        return 0;
    }
    /* M_CAPTURE: keep the graph under the probe's hash, launch it */
    L->next = M_PROBE;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(L->stream, &g);
    if (!CU_OK(c, e) || atomic_load(&c->poisoned)) {
        if (g) (void)cudaGraphDestroy(g);
        return 1;
    }
    cudaGraphExec_t x = NULL;
    if (!CU_OK(c, cudaGraphInstantiate(&x, g, 0))) {
        (void)cudaGraphDestroy(g);
        return 1;
    }
    (void)cudaGraphDestroy(g);
    L->n_instantiate++;
    /* kept only if this pass made the launches the probe hashed, all
     * reading staged items (else a replay would use this step's values);
     * in the slot of the least recently used graph */
    const int same = L->hash == L->probe_hash && L->stage_used == L->probe_used && !L->stage_overflow;
    /* a pass that differed from its probe (a knob changed between them)
     * may have staged more than the graph's first node copies: this
     * pass's items go up first (the node then copies a prefix of the same
     * bytes), so its one launch reads no stale item */
    if (!same && L->stage_used &&
        !CU_OK(c, cudaMemcpyAsync(L->stage_d, L->stage_h, L->stage_used, cudaMemcpyHostToDevice, L->stream))) {
        (void)cudaGraphExecDestroy(x);
        return 1;
    }
    if (CU_OK(c, cudaGraphLaunch(x, L->stream))) L->n_launch++;
    if (same) {
        int v = 0;
        for (int i = 1; i < TC_CUDA_KEPT; i++)
            if (!L->kept[i].exec ? L->kept[v].exec != NULL : L->kept[v].exec && L->kept[i].last < L->kept[v].last)
                v = i;
        if (L->kept[v].exec) (void)cudaGraphExecDestroy(L->kept[v].exec);
        L->kept[v].exec = x, L->kept[v].hash = L->hash, L->kept[v].used = L->stage_used;
        L->kept[v].last = L->n_probe;
    } else {
        TC_LOG(TC_LOG_DEBUG, "cuda", "lane step graph not kept: the capture pass differed from its probe");
        (void)cudaGraphExecDestroy(x); /* after the launch: the launch keeps what it needs */
    }
    return 1;
}

/* ---- TC_CUDA_PROFILE (backend_cuda_int.h) ---- */
static const char *const prof_name[P_N] = {
    "embed", "copy2d", "layernorm", "linear, <= 8 rows", "LN/SwiGLU + linear", "linear, GEMM", "rope (+ K/V append)",
    "attention, queries>=keys", "attention, keys>queries", "attention, step rows", "swiglu", "topk",
    "LN + QKV + rope (+ K/V)", "sample",
};
#define TC_PROF_CAP 2048
typedef struct tc_prof {
    cudaEvent_t a[TC_PROF_CAP], b[TC_PROF_CAP];
    unsigned char op[TC_PROF_CAP];
    int n, exact; /* exact (TC_CUDA_PROFILE=2): a spin ahead of each op, see prof_begin */
    double ms[P_N];
    long cnt[P_N];
} tc_prof;

static void prof_drain(tc_prof *P) {
    if (!P->n) return;
    if (cudaEventSynchronize(P->b[P->n - 1]) == cudaSuccess)
        for (int i = 0; i < P->n; i++) {
            float ms;
            if (cudaEventElapsedTime(&ms, P->a[i], P->b[i]) == cudaSuccess) P->ms[P->op[i]] += ms, P->cnt[P->op[i]]++;
        }
    (void)cudaGetLastError(); /* a failed read-back loses a sample, nothing else */
    P->n = 0;
}
int tc_cuda_prof_begin(tc_cuda_ctx *c) {
    tc_cuda_lane *L = lane_of(c);
    tc_prof *P = L->prof;
    if (!P || tc_cuda_t_capturing || atomic_load(&c->poisoned)) return -1;
    if (P->n == TC_PROF_CAP) prof_drain(P);
    /* exact: 40 us of spinning first, longer than the host takes to queue
     * the event and the op's launches, so they start together after it */
    if (P->exact && tc_cuda_spin(L->stream, 40000) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    if (cudaEventRecord(P->a[P->n], L->stream) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return P->n;
}
void tc_cuda_prof_end(tc_cuda_ctx *c, int i, int op) {
    if (i < 0) return;
    tc_cuda_lane *L = lane_of(c);
    if (cudaEventRecord(L->prof->b[i], L->stream) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    L->prof->op[i] = (unsigned char)op;
    L->prof->n = i + 1;
}

void tc_cuda_prof_free(tc_prof *P) {
    if (!P) return;
    for (int i = 0; i < TC_PROF_CAP; i++) {
        if (P->a[i]) (void)cudaEventDestroy(P->a[i]);
        if (P->b[i]) (void)cudaEventDestroy(P->b[i]);
    }
    free(P);
}

int tc_backend_cuda_profile(tc_backend *be, const char *title, FILE *out) {
    tc_cuda_ctx *c = ctx_of(be);
    tc_prof *P = c ? lane_of(c)->prof : NULL;
    if (!P) return 0;
    (void)cudaSetDevice(c->device);
    prof_drain(P);
    double total = 0;
    for (int i = 0; i < P_N; i++) total += P->ms[i];
    if (out && total > 0) {
        int ord[P_N];
        for (int i = 0; i < P_N; i++) ord[i] = i;
        for (int i = 1; i < P_N; i++) /* by time, largest first */
            for (int j = i; j > 0 && P->ms[ord[j]] > P->ms[ord[j - 1]]; j--) {
                int t = ord[j];
                ord[j] = ord[j - 1], ord[j - 1] = t;
            }
        fprintf(out, "# GPU time by op (TC_CUDA_PROFILE=%d%s, lane %d): %s: %.3f ms in all\n", P->exact ? 2 : 1,
                P->exact ? ", device time alone" : ", with launch", tc_cuda_t_lane, title, total);
        fprintf(out, "#   %-26s %10s %6s %8s %10s\n", "op", "ms", "%", "calls", "us/call");
        for (int i = 0; i < P_N; i++) {
            int o = ord[i];
            if (!P->cnt[o]) continue;
            fprintf(out, "#   %-26s %10.3f %5.1f%% %8ld %10.2f\n", prof_name[o], P->ms[o], 100.0 * P->ms[o] / total,
                    P->cnt[o], 1000.0 * P->ms[o] / (double)P->cnt[o]);
        }
    }
    memset(P->ms, 0, sizeof P->ms);
    memset(P->cnt, 0, sizeof P->cnt);
    return 1;
}

struct tc_prof *tc_cuda_prof_new(tc_cuda_ctx *c, int exact) {
    tc_prof *P = calloc(1, sizeof *P);
    if (!P) {
        tc_error_set("out of memory");
        return NULL;
    }
    P->exact = exact;
    for (int i = 0; i < TC_PROF_CAP; i++) {
        if (!CU_OK(c, cudaEventCreate(&P->a[i])) || !CU_OK(c, cudaEventCreate(&P->b[i]))) {
            tc_cuda_prof_free(P);
            return NULL;
        }
    }
    return P;
}
