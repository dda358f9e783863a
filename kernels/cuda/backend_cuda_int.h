/* backend_cuda_int.h — what the CUDA backend's two host files share, not
 * part of its interface (backend_cuda.h): backend_cuda.c (the vtable's ops,
 * memory, init) and backend_cuda_graph.c (hit steps as CUDA graphs, the
 * replay hash and item staging, the TC_CUDA_PROFILE timer). The context and
 * lane structs, the calling thread's lane and capture mode, the latching of
 * the first failure. C11, host only. */
#ifndef TC_BACKEND_CUDA_INT_H
#define TC_BACKEND_CUDA_INT_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "backend_cuda.h"

/* cuBLAS's own scratch, given to it once so it never allocates on the step
 * path (and so the stream stays capturable as a graph later): 32 MiB is
 * NVIDIA's recommendation for Hopper, ample for Ampere. */
#define TC_CUBLAS_WS_BYTES ((size_t)32 << 20)

/* One lane per computing thread (backend_cuda.h): its own stream, cuBLAS
 * handle (a handle is bound to one stream) and workspace, and the graph it
 * replays its hit steps with. */
#define TC_CUDA_KEPT 4 /* replayable step graphs a lane keeps (TC_CUDA_GRAPHS=2) */

typedef struct {
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;
    cudaGraphExec_t exec; /* the last captured step, updated in place */
    void *xconv; /* 16-bit weights: activations rounded for the GEMM, TC_CUDA_CONV_ROWS x widest k (fewer rows
                  * when the device was short of memory at load: the GEMM then goes in more chunks) */
    size_t xconv_elems;
    size_t xconv_k; /* the widest k it was sized for */
    /* held by a memory op (alloc, free, upload, download) from its check of
     * the stream's capture status to its last call on the stream, and by
     * capture_begin around cudaStreamBeginCapture (mem_stream) */
    pthread_mutex_t mem_mu;
    struct tc_prof *prof; /* TC_CUDA_PROFILE=1: GPU time per op class (NULL: off) */
    unsigned long long *am_part; /* argmax over several blocks a row (tc_cuda_topk k = 1) */
    unsigned *am_count;
    float *pair_part; /* the hit step's two softmaxes in two blocks (tc_cuda_attention_pairs) */
    unsigned *pair_count;
    float *att_part; /* split-key attention partials (tc_cuda_attention_splits), grown on demand */
    size_t att_part_floats;
    long n_launch, n_instantiate; /* graph launches, instantiations (the rest were updates / replays) */
    /* TC_CUDA_GRAPHS=2 (replay; see capture_begin): the step's batch items
     * staged in pinned host memory, copied to stage_d by the graph's first
     * node; a hash of the pass's launches; the graph kept while it matches */
    void *stage_h, *stage_d;
    size_t stage_cap, stage_used;
    int stage_failed; /* the staging could not be allocated: not tried again, every step runs as called */
    int stage_overflow, direct_pass, next;
    uint64_t hash, probe_hash;
    size_t probe_used;
    struct { /* kept graphs (TC_CUDA_GRAPHS=2), least recently used replaced:
              * a worker's step shapes come and go (batch 3, 4, 3 as sessions
              * join and leave; full logits or top-k) */
        cudaGraphExec_t exec;
        uint64_t hash;
        size_t used;
        long last;
    } kept[TC_CUDA_KEPT];
    long n_probe;
} tc_cuda_lane;

typedef struct {
    int device;
    int graphs; /* hit steps as graphs: 1 captured each step, 2 replayed (TC_CUDA_GRAPHS / tc_backend_cuda_set_graphs) */
    int pooled; /* allocations from the device's stream-ordered pool (cudaMallocAsync) */
    int sms;    /* multiprocessors: how far the sync's attention splits its keys */
    int batch_items; /* at most this many items a batched launch (TC_CUDA_BATCH_ITEMS; 0: the kernels' capacity) */
    int fuse;   /* 1: linear_pre and qkv_rope fused, 2: linear_pre only (TC_CUDA_FUSE; 0: neither is installed) */
    int skinny_rows; /* linears of up to this many rows on the skinny kernels, in groups of 8; more on cuBLAS
                      * (TC_CUDA_SKINNY_ROWS / tc_backend_cuda_set_skinny_rows) */
    int pairs;  /* the hit step's softmax pairs in two blocks at once: 1 where the device would idle, 2 always, 0
                 * never (TC_CUDA_PAIRS / tc_backend_cuda_set_pairs) */
    int sample; /* the sample op (TC_CUDA_SAMPLE / tc_backend_cuda_set_sample): 0 off, 1 (default) every step, 2
                 * steps of 2 rows or more (H200, session 21: with walk 2 a lone row draws in ~0.2 ms on the device,
                 * ~0.6 ms after its download on the host; with walk 0 it was ~1 ms on the device) */
    tc_cuda_lane lane[TC_CUDA_LANES];
    /* never captured: the memory ops of a thread whose lane another thread
     * is capturing (mem_stream) */
    cudaStream_t side;
    atomic_long n_side; /* memory ops that went there (tc_backend_cuda_side_ops) */
    atomic_int poisoned; /* first failure latched: every later op is a no-op (read by any thread) */
    atomic_int claimed;    /* the thread that writes first_error (two lanes may fail at once) */
    char first_error[256]; /* its message, written once before poisoned is set */
} tc_cuda_ctx;

/* the model's row tile on this backend (backend.h's row_tile): a sync's
 * restore pass and FFN in 8192-row GEMMs and attention launches (at 512,
 * the CPU's tile, paper-41m's sync spent 43% of its device time in GEMMs
 * averaging 30 us); workspace ~130 MB on paper-41m */
#define TC_CUDA_ROW_TILE 8192
/* rows of activations a lane rounds to 16 bits per GEMM (more rows are
 * done in chunks) */
#define TC_CUDA_CONV_ROWS TC_CUDA_ROW_TILE
/* linears of up to this many rows on the skinny kernels, more on cuBLAS
 * (TC_CUDA_SKINNY_ROWS overrides it: 1 to TC_CUDA_SKINNY_ROWS, in groups of
 * TC_CUDA_SKINNY_MAX). Measured on the H200 (session 26, paper-41m, ms a
 * step, skinny / cuBLAS): fp32 weights B 2 0.384 / 0.517, B 3 0.486 /
 * 0.550, B 4 0.574 / 0.515, B 8 0.892 / 0.767; bf16 B 2 0.442 / 0.448,
 * B 3 0.535 / 0.462, B 8 1.077 / 0.499. The skinny kernel re-reads a row
 * of x for every column, so its cost grows with the rows while cuBLAS's
 * tensor cores (16-bit) or tiles (fp32) do not. Until session 26 it was 8. */
#define TC_CUDA_SKINNY_ROWS_F32 3
#define TC_CUDA_SKINNY_ROWS_W16 2

extern _Thread_local int tc_cuda_t_lane; /* the calling thread's lane (tc_backend_cuda_bind_lane) */
/* this thread is between capture_begin and capture_end: it must not
 * allocate, free or transfer. Thread-local capture mode only restricts the
 * API calls of the capturing thread; it does not protect its stream: work
 * any thread enqueues on a stream under capture joins the capture (a
 * stream-ordered free there needs a graph allocation and fails, and the
 * capture is invalidated). A thread bound to no lane -- the worker's RPC
 * thread, freeing the sessions of a coordinator that left -- shares lane 0
 * with the generation thread, which captures its hit steps there; so every
 * memory op picks its stream with mem_stream, never a lane under capture. */
extern _Thread_local int tc_cuda_t_capturing;
/* what this thread's ops do between capture_begin and capture_end:
 * M_DIRECT launch; M_PROBE only hash the launches they would make (and
 * stage their items); M_CAPTURE hash, stage and launch into a stream
 * capture (replay mode); M_LEGACY launch into a stream capture
 * (TC_CUDA_GRAPHS=1) */
enum { M_DIRECT, M_PROBE, M_CAPTURE, M_LEGACY };
extern _Thread_local int tc_cuda_t_mode;

static inline tc_cuda_ctx *ctx_of(tc_backend *be) { return (tc_cuda_ctx *)be->ctx; }
static inline tc_cuda_lane *lane_of(tc_cuda_ctx *c) { return &c->lane[tc_cuda_t_lane]; }

/* Latches the first failure (the device is poisoned: every later op is a
 * no-op); logs it with the call site so the log reads as a backtrace. */
void tc_cuda_fail(tc_cuda_ctx *c, const char *what, const char *detail, const char *file, int line);
int tc_cuda_cu_ok(tc_cuda_ctx *c, cudaError_t e, const char *what, const char *file, int line);
int tc_cuda_blas_ok(tc_cuda_ctx *c, cublasStatus_t e, const char *what, const char *file, int line);
/* 1 when the call succeeded; else latches, logs and gives 0 */
#define CU_OK(c, call) tc_cuda_cu_ok((c), (call), #call, __FILE__, __LINE__)
#define BLAS_OK(c, call) tc_cuda_blas_ok((c), (call), #call, __FILE__, __LINE__)

/* Makes the backend's device current for this thread (one model belongs to
 * one thread, but not necessarily the one that called init). 0 when the
 * op must not run. */
static inline int cuda_enter(tc_cuda_ctx *c) {
    if (c->poisoned) return 0;
    return CU_OK(c, cudaSetDevice(c->device));
}

/* ---- replay mode: the launch hash and the item staging ---- */
#define TC_CUDA_STAGE_BYTES ((size_t)4 << 20) /* a batch of 1024 sessions needs ~1.7 MB */
enum { OP_COPY2D = 1, OP_EMBED, OP_LN, OP_LINEAR, OP_ROPE, OP_ROPE_KV, OP_ATT, OP_ATT_ROWS, OP_ATT_PAIRS, OP_SWIGLU, OP_LINEAR_PRE,
       OP_TOPK, OP_QKV_ROPE, OP_SAMPLE };
static inline uint64_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
#define P64(p) ((uint64_t)(uintptr_t)(p))
/* In a probe or replay-capture pass: mixes the launch's arguments into the
 * lane's hash; 1 when the op must stop there (probe: nothing is launched). */
int tc_cuda_replay_mix(tc_cuda_lane *L, const uint64_t *a, size_t bytes);
#define REPLAY_MIX(L, ...) tc_cuda_replay_mix((L), (const uint64_t[]){__VA_ARGS__}, sizeof((const uint64_t[]){__VA_ARGS__}))
/* A launch's items, copied into the lane's staging (probe and capture
 * passes: the same offsets in both, the content of this step): their
 * device address once the graph's first node has copied the staging. NULL
 * outside those passes, or when the staging is full (the step then runs
 * without a graph). The offset joins the hash. */
const void *tc_cuda_stage_items(tc_cuda_lane *L, const void *items, size_t bytes);

/* the vtable's capture_begin / capture_end (backend_cuda_graph.c) */
void tc_cuda_capture_begin(tc_backend *be);
int tc_cuda_capture_end(tc_backend *be);

/* ---- TC_CUDA_PROFILE=1: where the GPU time goes, per op class ----
 * A pair of CUDA events around every op a lane runs outside a captured
 * graph; tc_backend_cuda_profile reads them back. Events serialize nothing
 * on the device but cost host time (two records an op), so this is a
 * measuring mode, off by default. With 1 the interval includes the host's
 * launch of the op when the stream is idle (a host-bound step shows every
 * small op at the launch cost); with 2 a 40 us spin kernel goes ahead of
 * each op, so the interval is the op's device time alone (the step then
 * runs ~40 us an op slower: per-op figures only). */
enum {
    P_EMBED, P_COPY, P_LAYERNORM, P_SKINNY, P_PRE, P_GEMM, P_ROPE, P_ATT_QK, P_ATT_KQ, P_ATT_STEP, P_SWIGLU, P_TOPK,
    P_QKV_ROPE, P_SAMPLE, P_N
};
struct tc_prof;
/* a lane's timer: TC_PROF_CAP event pairs (exact: TC_CUDA_PROFILE=2);
 * NULL, the failure latched or set, when they cannot be made */
struct tc_prof *tc_cuda_prof_new(tc_cuda_ctx *c, int exact);
void tc_cuda_prof_free(struct tc_prof *P);
/* around an op (the PROF_OP wrappers of backend_cuda.c): begin gives the
 * pair's index, -1 when not timing (no timer, a capture, a poisoned device) */
int tc_cuda_prof_begin(tc_cuda_ctx *c);
void tc_cuda_prof_end(tc_cuda_ctx *c, int i, int op);

#endif
