/* backend.h — the one interface the model code is written against.
 *
 * A backend owns a device's memory and implements the ops the three
 * architectures need. All pointers passed to ops are backend memory
 * (host memory for the CPU backend, device memory for CUDA). Ops never
 * allocate and never fail on valid shapes: shapes are validated by the
 * caller (model/), so an op receiving nonsense is a bug (TC_ASSERT).
 *
 * Matrices are row-major with an explicit leading dimension (ld, in
 * elements) so heads and Q|K|V column blocks can be addressed in place.
 * Not here: sessions, the sampler's state (its RNG), scheduling; the one
 * sampling op (sample) draws with bits the sampler hands it. */
#ifndef TC_BACKEND_H
#define TC_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"
#include "sample_math.h"

typedef struct tc_backend tc_backend;

/* weight formats (tc_backend.wtype) */
enum { TC_WT_F32 = 0, TC_WT_BF16 = 1, TC_WT_F16 = 2 };
static inline size_t tc_wt_bytes(int wtype, size_t n) { return n * (wtype == TC_WT_F32 ? 4 : 2); }

/* one attention of a batch (see attention_batch) */
typedef struct tc_att_item {
    float *out;
    const float *q, *k, *v;
    int ldo, ldq, ldk, ldv, nq, nk;
    int64_t qpos0, kpos0;
    int causal;
    float beta;
} tc_att_item;

/* one session's rows of a window pass (see rope_kv_batch) */
typedef struct tc_rope_kv_item {
    float *qkv;           /* n rows (ld: the call's ldq), Q | K | V blocks of d columns */
    float *k_dst, *v_dst; /* n rows each, ld d */
    int n;
    int64_t pos0; /* position of row 0 */
} tc_rope_kv_item;

struct tc_backend {
    const char *name;
    void *ctx;

    void *(*alloc)(tc_backend *be, size_t bytes);  /* NULL on failure */
    void (*free)(tc_backend *be, void *p);
    void (*upload)(tc_backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(tc_backend *be, void *dst, const void *src, size_t bytes);
    void (*copy2d)(tc_backend *be, float *dst, int ldd, const float *src, int lds, int rows, int cols);

    /* Weight matrices (embed's E, linear's W) are in the backend's weight
     * format wtype: TC_WT_F32 (plain floats; every backend), or 16-bit
     * (the CUDA backend when asked), which the model allocates at
     * tc_wt_bytes and fills with upload_weight. With 16-bit weights linear
     * rounds its input x to the same format (fp32 accumulation, fp32 y).
     * Vectors (norms, biases) and all other activations are fp32. */
    int wtype;
    /* Rows a model tiles its long passes by (the sync's restore and FFN,
     * a prefill's projections): larger tiles make larger GEMMs and
     * attention launches, at O(tile x ffn) of workspace. 0: the model's
     * default (TC_ROW_TILE_DEFAULT, what OpenBLAS likes). */
    int row_tile;
    /* The largest head_dim this backend's attention takes (0: any). A
     * model whose heads are wider is refused at load (tc_model_load), not
     * at its first step. */
    int max_head_dim;
    /* n = rows * cols weights from fp32 host memory into dst in wtype
     * (rounded to nearest even). NULL when wtype is TC_WT_F32 (upload). */
    void (*upload_weight)(tc_backend *be, void *dst, const float *src, size_t rows, size_t cols);

    /* out[i,:] = E[ids[i],:]                           out [n, d], E [V, d] */
    void (*embed)(tc_backend *be, float *out, const void *E, const int32_t *ids, int n, int d);
    /* out = LN(x) * w + b, per row                       x, out [n, d] (ld d) */
    void (*layernorm)(tc_backend *be, float *out, const float *x, const float *w, const float *b, int n, int d,
                      float eps);
    /* y = beta*y + x W^T (+ bias)   y [n, m] (ldy), x [n, k] (ldx), W [m, k] */
    void (*linear)(tc_backend *be, float *y, int ldy, const float *x, int ldx, const void *W, const float *bias,
                   int n, int m, int k, float beta);
    /* In-place interleaved RoPE on n rows of n_head*head_dim columns, row i
     * at absolute position pos0 + i: (x[2j], x[2j+1]) rotated by
     * (float)pos * theta_j, theta_j = (float)(base^(-2j/hd)).             */
    void (*rope)(tc_backend *be, float *x, int ld, int n, int n_head, int head_dim, int64_t pos0, float base);
    /* Optional (NULL: rope on Q|K as 2*n_head heads, then copy2d of K and
     * of V, per item): the window pass's per-session work in one dispatch.
     * Each item's Q and K blocks are rotated in place at positions pos0..,
     * exactly as rope() does, and its K and V rows copied to k_dst, v_dst.
     * d = n_head * head_dim. */
    void (*rope_kv_batch)(tc_backend *be, const struct tc_rope_kv_item *it, int n, int ldq, int n_head, int head_dim,
                          float base);
    /* out = beta*out + concat_h softmax(q_h k_h^T / sqrt(hd)) v_h
     * q [nq, *] (ldq) at positions qpos0.., k,v [nk, *] at kpos0..;
     * causal: query at position a sees keys at positions <= a. Tiled with an
     * online softmax: never holds an nq x nk score matrix.               */
    void (*attention)(tc_backend *be, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                      const float *v, int ldv, int nq, int nk, int n_head, int head_dim, int64_t qpos0,
                      int64_t kpos0, int causal, float beta);
    /* Optional (NULL: call attention once per item): n independent
     * attentions of the same head layout, as attention() computes each;
     * one dispatch for a batch's sessions instead of one per session. */
    void (*attention_batch)(tc_backend *be, const struct tc_att_item *it, int n, int n_head, int head_dim);
    /* Optional (NULL: attention_batch of w, then of the z with nq > 0): the
     * hit step's two softmaxes per session in one dispatch -- w[i], then
     * z[i] (beta 1, into the same out) when z[i].nq > 0 -- each computed
     * exactly as attention() computes it. */
    void (*attention_pairs)(tc_backend *be, const struct tc_att_item *w, const struct tc_att_item *z, int n,
                            int n_head, int head_dim);
    /* out[i,j] = silu(h[i,j]) * h[i,F+j]        h [n, 2F] (ldh), out [n, F] */
    void (*swiglu)(tc_backend *be, float *out, int ldo, const float *h, int ldh, int n, int F);
    /* Optional (NULL: the caller runs layernorm or swiglu into tmp, then
     * linear): linear of a transformed input, y = beta*y + pre(x) W^T
     * (+ bias), the transform exactly as its op computes it:
     *   TC_PRE_LN      x [n, k] (ldx): layernorm(x) with ln_w, ln_b, eps
     *   TC_PRE_SWIGLU  x [n, 2k] (ldx): swiglu(x), F = k (ln_* unused)
     * tmp [n, k] (ld k) is the caller's scratch, the backend's to use or
     * not (e.g. for n past what it fuses). The CUDA backend fuses up to 8
     * rows (the hit step), so the step launches no LayerNorm or SwiGLU. */
    void (*linear_pre)(tc_backend *be, int pre, float *y, int ldy, const float *x, int ldx, float *tmp,
                       const void *W, const float *bias, int n, int m, int k, float beta, const float *ln_w,
                       const float *ln_b, float eps);
    /* Optional (NULL: linear_pre or layernorm + linear, then rope_kv_batch):
     * the window pass's projection and RoPE in one op. qkv [rows, 3d] (ldq)
     * = layernorm(x [rows, d], ln_w, ln_b, eps) W^T + bias, then the items
     * exactly as rope_kv_batch(it, n, ldq, n_head, head_dim, base) treats
     * them; rows = the items' n summed, item i's rows following item
     * i - 1's (it[i].qkv = qkv + its first row * ldq). d = n_head *
     * head_dim; tmp [rows, d] is the caller's scratch, as for linear_pre.
     * The CUDA backend does up to 8 rows (the hit step) in one launch. */
    void (*qkv_rope)(tc_backend *be, const struct tc_rope_kv_item *it, int n, float *qkv, int ldq, const float *x,
                     float *tmp, const void *W, const float *bias, int rows, const float *ln_w, const float *ln_b,
                     float eps, int n_head, int head_dim, float base);
    /* Optional (NULL: the caller downloads the rows and runs tc_topk_rows).
     * Per row i of x [n, V] (contiguous): the k largest, ids[i*k + j] and
     * vals[i*k + j] = x[i*V + ids[..]], in tc_topk_rows's order, which it
     * must match exactly. 1 <= k <= min(V, TC_TOPK_MAX). ids, vals are
     * backend memory. */
    void (*topk)(tc_backend *be, int32_t *ids, float *vals, const float *x, int n, int V, int k);
    /* Optional (NULL: the caller downloads the rows, or their top k, and
     * the sampler draws on the host). Per row i of x [n, V] (contiguous):
     * tokens[i] = the token model/sampler.h draws from the row with
     * draws[i] (greedy, temperature, top-k of any size, top-p), exactly:
     * tc_sample_rows is the reference. tokens: backend memory; draws: host
     * memory, read during the call (a capturing backend stages them). */
    void (*sample)(tc_backend *be, int32_t *tokens, const float *x, int n, int V, const tc_draw *draws);
    /* Rows a step needs for the sample op to pay (0 or 1: any): below it
     * the caller downloads the rows and the host draws (the CUDA
     * backend's TC_CUDA_SAMPLE=2: 2 rows). Read by
     * tc_model_draws_on_backend; a worker's multi-step call decides once,
     * for the call's batch, even as its sessions finish. */
    int sample_min_rows;
    /* Optional (NULL: ops run as called): the ops issued between the two,
     * by one thread, with no upload, download, alloc or free among them,
     * may be recorded and run as one unit at capture_end (CUDA graphs).
     * capture_end returns 1 when the ops ran (or were launched), 0 when the
     * backend only looked at them: the caller issues the same ops again,
     * between a new capture_begin and capture_end (a replaying backend
     * first checks whether its kept graph is that sequence). */
    void (*capture_begin)(tc_backend *be);
    int (*capture_end)(tc_backend *be);
    /* Optional (NULL: ops have run when they return): returns once the ops
     * this thread issued have run. Never called while capturing. Long
     * passes call it at their cancel points (tc_backend_cancelled), so a
     * cancelled pass on an asynchronous backend stops within one chunk of
     * work, not after everything the host had already queued. */
    void (*drain)(tc_backend *be);
};

/* A cancel point of a long pass: tc_cancelled() once the work issued so
 * far has run (be->drain), so the answer comes no earlier than the device
 * got there. A pass nothing can cancel (no predicate armed on this thread:
 * a sync inside a batched hit step) never waits. */
static inline int tc_backend_cancelled(tc_backend *be) {
    if (!tc_cancel_armed()) return 0;
    if (be->drain) be->drain(be);
    return tc_cancelled();
}

/* linear_pre's transforms */
#define TC_PRE_LN 1
#define TC_PRE_SWIGLU 2

/* Largest k a topk op serves (the sampler's candidate list). */
#define TC_TOPK_MAX 1024

/* The order every topk implementation uses: value descending by
 * tc_topk_key (which sorts -0 with +0 and NaN below -inf), ties to the
 * lower id. Integer comparisons only, so host and device agree bit for bit. */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline uint32_t tc_topk_key(uint32_t bits) {
    /* branch-free (a row's signs are random: branches mispredicted half
     * the time): NaN -> 0, -0 -> +0, negative -> ~bits, else bits | sign */
    const uint32_t b = bits == 0x80000000u ? 0u : bits;
    const uint32_t k = b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u);
    return (bits & 0x7fffffffu) > 0x7f800000u ? 0u : k;
}

/* The host implementation (the CPU backends' op, the fallback, the GPU
 * tests' reference): host pointers. */
void tc_topk_rows(int32_t *ids, float *vals, const float *x, int n, int V, int k);
/* The host sample op (kernels/cpu/sample.c): the GPU kernel's algorithm
 * on host pointers; the reference of every sample op. TC_ERR_NOMEM only. */
tc_status tc_sample_rows(int32_t *tokens, const float *x, int n, int V, const tc_draw *draws);
/* One row of it: the drawn token; scratch of tc_sample_scratch_bytes(V)
 * (what the host sampler calls for every non-greedy full-row draw). */
int32_t tc_sample_row(const float *x, int V, const tc_draw *d, void *scratch);
size_t tc_sample_scratch_bytes(int V);
/* w[i] = tc_draw_weight(x[i], mx, T) for i < n: the host's fast loop (an
 * FMA clone where the CPU has the instruction; the same bits). */
void tc_draw_weights(uint64_t *w, const float *x, int n, float mx, float T);
/* Quickselect in the same order: rearranges idx[0..n) (a permutation of
 * ids of x) so its first k are the k best, unordered; any k <= n. -1 after
 * 64 partition rounds (an adversarial row; idx is still a permutation). */
int tc_topk_select(int32_t *idx, int n, int k, const float *x);

/* The CPU backend (OpenBLAS). Thread count: OpenBLAS's own, or n_threads
 * when > 0. */
tc_status tc_backend_cpu_init(tc_backend *be, int n_threads);
void tc_backend_cpu_free(tc_backend *be);

/* Naive reference versions of every CPU op, plain loops, for tests only;
 * _wt: with weight matrices stored in format wtype (TC_WT_*), the host
 * twin of the CUDA backend's 16-bit weights. */
tc_status tc_backend_naive_init(tc_backend *be);
tc_status tc_backend_naive_init_wt(tc_backend *be, int wtype);

/* RoPE frequency for pair j of a head of size hd (shared by all backends). */
float tc_rope_theta(float base, int j, int head_dim);

#endif
