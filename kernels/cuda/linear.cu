/* linear.cu — the parts of linear that are not cuBLAS's (backend_cuda.c):
 *  - y = beta*y + bias, before the GEMM accumulates x W^T with beta 1;
 *  - the skinny product for n <= TC_CUDA_SKINNY_MAX rows (the hit step:
 *    memory-bound, so it reads the weights once, one warp per output
 *    column, bias folded in: one launch where cuBLAS took a bias kernel and
 *    a GEMV with its host-side heuristics); up to TC_CUDA_SKINNY_ROWS rows
 *    in groups of TC_CUDA_SKINNY_MAX, a group a grid row (blockIdx.y): the
 *    groups' blocks run side by side, each reading the weights (the second
 *    and later from L2), and a row's result is the same bits whatever
 *    group it is in;
 *  - with 16-bit weights, the rounding of activations to 16 bits for the
 *    tensor-core GEMM of larger n. The skinny kernel rounds them the same
 *    way and accumulates in fp32, so the two differ only in summation
 *    order. */
#include "common.cuh"
#include "kernels_cuda.h"

// y [n, m] (ldy), bias [m]
__global__ static void bias_kernel(float *y, int ldy, const float *bias, int n, int m, float beta) {
    size_t total = (size_t)n * m;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / m, j = t % m;
        float *yy = y + i * ldy + j;
        /* beta 0 must not read y: it may hold NaN garbage from a fresh buffer */
        *yy = beta == 0.f ? bias[j] : beta * *yy + bias[j];
    }
}

extern "C" cudaError_t tc_cuda_bias(cudaStream_t st, float *y, int ldy, const float *bias, int n, int m,
                                    float beta) {
    if (n <= 0 || m <= 0) return cudaSuccess;
    const unsigned th = 256;
    bias_kernel<<<tc_cuda_blocks((size_t)n * m, th), th, 0, st>>>(y, ldy, bias, n, m, beta);
    return cudaGetLastError();
}

/* an activation as the GEMM path sees it: rounded to the weights' format */
template <typename T> __device__ __forceinline__ float narrow(float v) { return tc_to_f32(tc_from_f32<T>(v)); }

/* y[i, j] = beta*y[i, j] + sum_t x16[i, t] W[j, t] for i < n <= TC_CUDA_SKINNY_MAX,
 * x16 = x rounded to T as the tensor-core path rounds it (so a session's
 * result does not depend on how many rows share the step): warp w of the
 * block owns column j, lanes stride over k 8 weights (16 bytes) at a time
 * when rows are 16-byte aligned, exact products in fp32 FMAs, a warp sum.
 * The weight loads of SKINNY_UNROLL strides are issued before their FMAs
 * (a hit step's linear waits on memory latency, not bandwidth); the FMAs
 * keep their order. (Splitting a column's k over 2-8 warps, to give
 * m = 432 more than 54 blocks, measured slower on the H200: 13.5 vs 10.6
 * us a linear, 11.1 vs 8.9 with the LN prologue each block repeats.)
 * T = float: fp32 weights, x as is. x may be shared memory (the prologue
 * kernel below). */
#define SKINNY_UNROLL 4
/* warps (columns) a block of the skinny kernels (TC_CUDA_SKINNY_WARPS):
 * fewer spread a narrow linear (m = 432: 54 blocks of 8) over more
 * multiprocessors; each warp's work and result are the same */
static int g_skinny_warps = 8;
extern "C" int tc_cuda_linear_set_warps(int warps) {
    if (warps != 2 && warps != 4 && warps != 8) return -1;
    g_skinny_warps = warps;
    return 0;
}
/* whether column j's weights take the 16-byte path */
template <typename T> __device__ __forceinline__ bool skinny_vec(const T *W, int k) {
    constexpr int VEC = 16 / sizeof(T);
    return k % VEC == 0 && ((uintptr_t)W & 15) == 0;
}
/* The first SKINNY_UNROLL strides of the calling lane's weights of its
 * warp's column, into raw (the 16-byte path; zeros otherwise), and the rest
 * of the column's row asked into L2. Weights only: this runs before
 * tc_pdl_wait(), while the previous kernel may still run. */
template <typename T>
__device__ __forceinline__ void skinny_prefetch(uint4 (&raw)[SKINNY_UNROLL], const T *W, int m, int k) {
    constexpr int VEC = 16 / sizeof(T);
    const int lane = threadIdx.x & 31;
    const int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
#pragma unroll
    for (int u = 0; u < SKINNY_UNROLL; u++) raw[u] = make_uint4(0, 0, 0, 0);
    if (j >= m || !skinny_vec(W, k)) return;
    const T *w = W + (size_t)j * k;
#pragma unroll
    for (int u = 0; u < SKINNY_UNROLL; u++) {
        const int t = lane * VEC + u * 32 * VEC;
        if (t < k) raw[u] = *(const uint4 *)(w + t);
    }
    /* the rest of the row (wide k, e.g. the FFN's down projection): one
     * 128-byte line a lane */
    const char *row = (const char *)w;
    const size_t bytes = (size_t)k * sizeof(T);
    for (size_t off = (size_t)SKINNY_UNROLL * 32 * 16 + (size_t)lane * 128; off < bytes; off += 32 * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(row + off));
}

/* the FMAs of SKINNY_UNROLL strides from t0 (the 16-byte path) */
template <typename T>
__device__ __forceinline__ void skinny_fma(float (&acc)[TC_CUDA_SKINNY_MAX], const float *x, int ldx, int n, int k,
                                           int t0, const uint4 (&raw)[SKINNY_UNROLL]) {
    constexpr int VEC = 16 / sizeof(T);
#pragma unroll
    for (int u = 0; u < SKINNY_UNROLL; u++) {
        const int t = t0 + u * 32 * VEC;
        if (t >= k) break;
        T h[VEC];
        memcpy(h, &raw[u], sizeof raw[u]);
        float wf[VEC];
#pragma unroll
        for (int e = 0; e < VEC; e++) wf[e] = tc_to_f32(h[e]);
#pragma unroll
        for (int i = 0; i < TC_CUDA_SKINNY_MAX; i++)
            if (i < n) {
                const float *xr = x + (size_t)i * ldx + t;
#pragma unroll
                for (int e = 0; e < VEC; e++) acc[i] = fmaf(wf[e], narrow<T>(xr[e]), acc[i]);
            }
    }
}

/* Column j's sums for rows i < n (every lane holds them after the warp
 * sums), raw holding what skinny_prefetch loaded: the first strides from
 * raw, the rest loaded SKINNY_UNROLL strides at a time. */
template <typename T>
__device__ __forceinline__ void skinny_dot(float (&acc)[TC_CUDA_SKINNY_MAX], const float *x, int ldx, const T *W,
                                           int n, int k, int j, const uint4 (&raw0)[SKINNY_UNROLL]) {
    const int lane = threadIdx.x & 31;
    const T *w = W + (size_t)j * k;
    constexpr int VEC = 16 / sizeof(T); /* weights in one 16-byte load */
    if (skinny_vec(W, k)) {
        skinny_fma<T>(acc, x, ldx, n, k, lane * VEC, raw0);
        for (int t0 = lane * VEC + SKINNY_UNROLL * 32 * VEC; t0 < k; t0 += SKINNY_UNROLL * 32 * VEC) {
            uint4 raw[SKINNY_UNROLL];
#pragma unroll
            for (int u = 0; u < SKINNY_UNROLL; u++) {
                const int t = t0 + u * 32 * VEC;
                raw[u] = t < k ? *(const uint4 *)(w + t) : make_uint4(0, 0, 0, 0);
            }
            skinny_fma<T>(acc, x, ldx, n, k, t0, raw);
        }
    } else {
        for (int t = lane; t < k; t += 32) {
            const float wf = tc_to_f32(w[t]);
#pragma unroll
            for (int i = 0; i < TC_CUDA_SKINNY_MAX; i++)
                if (i < n) acc[i] = fmaf(wf, narrow<T>(x[(size_t)i * ldx + t]), acc[i]);
        }
    }
#pragma unroll
    for (int i = 0; i < TC_CUDA_SKINNY_MAX; i++)
        if (i < n) acc[i] = tc_warp_sum(acc[i]);
}

/* y[i, j] = beta*y[i, j] + bias[j] + column j's sums, for the calling
 * warp's column */
template <typename T>
__device__ __forceinline__ void skinny_body(float *y, int ldy, const float *x, int ldx, const T *W,
                                            const float *bias, int n, int m, int k, float beta,
                                            const uint4 (&raw0)[SKINNY_UNROLL]) {
    const int lane = threadIdx.x & 31;
    const int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (j >= m) return; /* whole warps */
    float acc[TC_CUDA_SKINNY_MAX], base[TC_CUDA_SKINNY_MAX];
    /* what the sum is added to, loaded now rather than after it (the
     * residual of a beta-1 linear is another memory latency): as
     * bias_kernel then a beta-1 GEMM would, (beta*y + bias); beta 0 must
     * not read y */
#pragma unroll
    for (int i = 0; i < TC_CUDA_SKINNY_MAX; i++) {
        acc[i] = 0.f, base[i] = 0.f;
        if (i < n && lane == 0) {
            const float *yy = y + (size_t)i * ldy + j;
            base[i] = beta == 0.f ? (bias ? bias[j] : 0.f) : (bias ? beta * *yy + bias[j] : beta * *yy);
        }
    }
    skinny_dot<T>(acc, x, ldx, W, n, k, j, raw0);
#pragma unroll
    for (int i = 0; i < TC_CUDA_SKINNY_MAX; i++)
        if (i < n && lane == 0) y[(size_t)i * ldy + j] = beta == 0.f && !bias ? acc[i] : base[i] + acc[i];
}

/* Both kernels load their weights first, then wait for the previous kernel
 * (common.cuh, PDL): with programmatic launch the loads overlap its tail. */
/* the calling block's group of rows: its first row, and how many */
__device__ __forceinline__ int group_rows(int n, int &r0) {
    r0 = (int)blockIdx.y * TC_CUDA_SKINNY_MAX;
    return n - r0 < TC_CUDA_SKINNY_MAX ? n - r0 : TC_CUDA_SKINNY_MAX;
}
template <typename T>
__global__ __launch_bounds__(256) static void skinny_kernel(float *y, int ldy, const float *x, int ldx, const T *W,
                                                            const float *bias, int n, int m, int k, float beta) {
    int r0;
    const int nr = group_rows(n, r0);
    uint4 raw[SKINNY_UNROLL];
    skinny_prefetch<T>(raw, W, m, k);
    tc_pdl_wait();
    tc_pdl_trigger();
    skinny_body<T>(y + (size_t)r0 * ldy, ldy, x + (size_t)r0 * ldx, ldx, W, bias, nr, m, k, beta, raw);
}

/* The transformed input of the prologue kernels, every block's own copy
 * in shared memory (xs [n, k]): TC_PRE_LN, x's rows layer-normalized with
 * the layernorm kernel's arithmetic (common.cuh); TC_PRE_SWIGLU, x [n, 2k]
 * gated as the swiglu kernel gates it. Each block repeats the transform
 * (n x k floats from L2: cheap next to a launch), so the result is bit
 * for bit the two ops' and the step has no LayerNorm or SwiGLU launch of
 * its own. pre_weights runs before tc_pdl_wait (the LayerNorm's weights are
 * weights too: this thread's columns j = tid + q * blockDim.x, the first
 * PRE_LW of them), pre_apply after it. */
#define PRE_LW 4
__device__ __forceinline__ void pre_weights(float (&lwr)[PRE_LW], float (&lbr)[PRE_LW], int pre, const float *lw,
                                            const float *lb, int k) {
#pragma unroll
    for (int q = 0; q < PRE_LW; q++) {
        const int j = threadIdx.x + q * blockDim.x;
        const bool in = pre == TC_PRE_LN && j < k;
        lwr[q] = in ? lw[j] : 0.f, lbr[q] = in ? lb[j] : 0.f;
    }
}
__device__ __forceinline__ void pre_apply(float *xs, float *red, const float *x, int ldx, int n, int k, int pre,
                                          const float *lw, const float *lb, float eps, const float (&lwr)[PRE_LW],
                                          const float (&lbr)[PRE_LW]) {
    /* every row's input in one pass (one memory latency for all of them) */
    const int nk = n * k;
    if (pre == TC_PRE_LN) {
        for (int t = threadIdx.x; t < nk; t += blockDim.x) xs[t] = x[(size_t)(t / k) * ldx + t % k];
        __syncthreads();
        for (int i = 0; i < n; i++) {
            float *oi = xs + (size_t)i * k;
            float mean, rs;
            /* the statistics over the shared copy: the same values, so the
             * layernorm kernel's bits; it returns after every thread's
             * reads of the row, so the in-place writes below are safe */
            tc_ln_stats(oi, k, eps, red, mean, rs);
#pragma unroll
            for (int q = 0; q < PRE_LW; q++) {
                const int j = threadIdx.x + q * blockDim.x;
                if (j < k) oi[j] = tc_ln_apply(oi[j], mean, rs, lwr[q], lbr[q]);
            }
            for (int j = threadIdx.x + PRE_LW * blockDim.x; j < k; j += blockDim.x)
                oi[j] = tc_ln_apply(oi[j], mean, rs, lw[j], lb[j]);
        }
    } else {
        for (int t = threadIdx.x; t < nk; t += blockDim.x) {
            const float *xi = x + (size_t)(t / k) * ldx;
            const int j = t % k;
            xs[t] = tc_swiglu1(xi[j], xi[k + j]);
        }
    }
    __syncthreads();
}

/* The prologue kernels' start: the column's weights and the LayerNorm's
 * loaded, the wait for the previous kernel (PDL), the transformed rows
 * into xs. */
template <typename T>
__device__ __forceinline__ void pre_start(uint4 (&raw)[SKINNY_UNROLL], float *xs, float *red, const T *W, int m,
                                          int k, const float *x, int ldx, int n, int pre, const float *lw,
                                          const float *lb, float eps) {
    skinny_prefetch<T>(raw, W, m, k);
    float lwr[PRE_LW], lbr[PRE_LW];
    pre_weights(lwr, lbr, pre, lw, lb, k);
    tc_pdl_wait();
    tc_pdl_trigger();
    pre_apply(xs, red, x, ldx, n, k, pre, lw, lb, eps, lwr, lbr);
}

template <typename T>
__global__ __launch_bounds__(256) static void skinny_pre_kernel(float *y, int ldy, const float *x, int ldx,
                                                                const T *W, const float *bias, int n, int m, int k,
                                                                float beta, int pre, const float *lw,
                                                                const float *lb, float eps) {
    extern __shared__ float xs[];
    __shared__ float red[TC_LN_THREADS / 32];
    int r0;
    const int nr = group_rows(n, r0);
    uint4 raw[SKINNY_UNROLL];
    pre_start<T>(raw, xs, red, W, m, k, x + (size_t)r0 * ldx, ldx, nr, pre, lw, lb, eps);
    skinny_body<T>(y + (size_t)r0 * ldy, ldy, xs, k, W, bias, nr, m, k, beta, raw);
}

/* The window pass's projection and rotation in one (backend.h qkv_rope):
 * qkv [n, 3d] = LN(x) W^T + bias as skinny_pre_kernel computes it, then,
 * the block's columns being whole pairs (an even number of warps from an
 * even column), each row's Q|K pairs rotated at its position and its K and
 * V columns copied to its window rows, as rope_kv_kernel does: the same
 * bits as the three ops. Rows from the parameters, or (drows: a replayed
 * graph) device memory. Dynamic shared memory: xs [g, d] (g = the rows of
 * a group), then the block's sums [warps][TC_CUDA_SKINNY_MAX]. */
struct qkv_rope_rows {
    tc_rope_row r[TC_CUDA_SKINNY_ROWS];
};
template <typename T>
__global__ __launch_bounds__(256) static void skinny_rope_kernel(float *y, int ldy, const float *x, int ldx,
                                                                 const T *W, const float *bias, int n, int d,
                                                                 const float *lw, const float *lb, float eps,
                                                                 const __grid_constant__ qkv_rope_rows rows,
                                                                 const tc_rope_row *drows, int head_dim, float base) {
    extern __shared__ float xs[];
    __shared__ float red[TC_LN_THREADS / 32];
    const int m = 3 * d, nw = blockDim.x >> 5, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int j0 = blockIdx.x * nw, j = j0 + w;
    float *res = xs + (size_t)(n < TC_CUDA_SKINNY_MAX ? n : TC_CUDA_SKINNY_MAX) * d;
    int r0;
    n = group_rows(n, r0); /* from here the group's rows, i the row in the group */
    uint4 raw[SKINNY_UNROLL];
    pre_start<T>(raw, xs, red, W, m, d, x + (size_t)r0 * ldx, ldx, n, TC_PRE_LN, lw, lb, eps);
    if (j < m) {
        float acc[TC_CUDA_SKINNY_MAX];
#pragma unroll
        for (int i = 0; i < TC_CUDA_SKINNY_MAX; i++) acc[i] = 0.f;
        skinny_dot<T>(acc, xs, d, W, n, d, j, raw);
        if (lane == 0)
#pragma unroll
            for (int i = 0; i < TC_CUDA_SKINNY_MAX; i++)
                if (i < n) res[w * TC_CUDA_SKINNY_MAX + i] = bias ? bias[j] + acc[i] : acc[i];
    }
    __syncthreads();
    const int half = head_dim / 2, np = nw / 2;
    for (int t = threadIdx.x; t < n * np; t += blockDim.x) {
        const int i = t / np, q = t % np, c = j0 + 2 * q; /* the pair's first column */
        if (c >= m) continue;
        float a = res[2 * q * TC_CUDA_SKINNY_MAX + i], b = res[(2 * q + 1) * TC_CUDA_SKINNY_MAX + i];
        const tc_rope_row r = drows ? drows[r0 + i] : rows.r[r0 + i];
        if (c < 2 * d) { /* Q|K: pair p = c / 2 of 2 * n_head heads */
            tc_rope_rot(a, b, r.pos, tc_rope_theta((c / 2) % half, head_dim, base));
            if (c >= d) r.k_dst[c - d] = a, r.k_dst[c - d + 1] = b;
        } else {
            r.v_dst[c - 2 * d] = a, r.v_dst[c - 2 * d + 1] = b;
        }
        float *yy = y + (size_t)(r0 + i) * ldy + c;
        yy[0] = a, yy[1] = b;
    }
}

/* a block's copy of its group's rows */
static size_t group_max(int n) { return (size_t)(n < TC_CUDA_SKINNY_MAX ? n : TC_CUDA_SKINNY_MAX); }
extern "C" size_t tc_cuda_linear_pre_smem(int n, int k) { return group_max(n) * (size_t)k * sizeof(float); }

extern "C" cudaError_t tc_cuda_linear_skinny(cudaStream_t st, float *y, int ldy, const float *x, int ldx,
                                             const void *W, const float *bias, int wtype, int n, int m, int k,
                                             float beta) {
    if (n <= 0 || m <= 0) return cudaSuccess;
    if (n > TC_CUDA_SKINNY_ROWS) return cudaErrorInvalidValue;
    const unsigned wb = (unsigned)g_skinny_warps, th = 32 * wb;
    const dim3 b((unsigned)((m + wb - 1) / wb), (unsigned)((n + TC_CUDA_SKINNY_MAX - 1) / TC_CUDA_SKINNY_MAX));
    switch (wtype) {
    case TC_WT_BF16:
        return tc_launch(skinny_kernel<__nv_bfloat16>, b, th, 0, st, y, ldy, x, ldx, (const __nv_bfloat16 *)W, bias, n,
                         m, k, beta);
    case TC_WT_F16:
        return tc_launch(skinny_kernel<__half>, b, th, 0, st, y, ldy, x, ldx, (const __half *)W, bias, n, m, k, beta);
    case TC_WT_F32:
        return tc_launch(skinny_kernel<float>, b, th, 0, st, y, ldy, x, ldx, (const float *)W, bias, n, m, k, beta);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" cudaError_t tc_cuda_linear_pre(cudaStream_t st, int pre, float *y, int ldy, const float *x, int ldx,
                                          const void *W, const float *bias, int wtype, int n, int m, int k,
                                          float beta, const float *lw, const float *lb, float eps) {
    if (n <= 0 || m <= 0) return cudaSuccess;
    const size_t smem = tc_cuda_linear_pre_smem(n, k);
    if (n > TC_CUDA_SKINNY_ROWS || smem > TC_CUDA_PRE_SMEM || k <= 0 || (pre != TC_PRE_LN && pre != TC_PRE_SWIGLU))
        return cudaErrorInvalidValue;
    /* the prologue's statistics take TC_LN_THREADS threads */
    const unsigned wb = (unsigned)(g_skinny_warps < TC_LN_THREADS / 32 ? TC_LN_THREADS / 32 : g_skinny_warps);
    const unsigned th = 32 * wb;
    const dim3 b((unsigned)((m + wb - 1) / wb), (unsigned)((n + TC_CUDA_SKINNY_MAX - 1) / TC_CUDA_SKINNY_MAX));
    switch (wtype) {
    case TC_WT_BF16:
        return tc_launch(skinny_pre_kernel<__nv_bfloat16>, b, th, smem, st, y, ldy, x, ldx, (const __nv_bfloat16 *)W,
                         bias, n, m, k, beta, pre, lw, lb, eps);
    case TC_WT_F16:
        return tc_launch(skinny_pre_kernel<__half>, b, th, smem, st, y, ldy, x, ldx, (const __half *)W, bias, n, m, k,
                         beta, pre, lw, lb, eps);
    case TC_WT_F32:
        return tc_launch(skinny_pre_kernel<float>, b, th, smem, st, y, ldy, x, ldx, (const float *)W, bias, n, m, k,
                         beta, pre, lw, lb, eps);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" size_t tc_cuda_qkv_rope_smem(int n, int d) {
    return (group_max(n) * (size_t)d + 8 * TC_CUDA_SKINNY_MAX) * sizeof(float);
}

extern "C" cudaError_t tc_cuda_qkv_rope(cudaStream_t st, float *y, int ldy, const float *x, int ldx, const void *W,
                                        const float *bias, int wtype, int n, int n_head, int head_dim,
                                        const float *lw, const float *lb, float eps, const tc_rope_row *rows,
                                        const tc_rope_row *drows, float base) {
    if (n <= 0) return cudaSuccess;
    const int d = n_head * head_dim;
    const size_t smem = tc_cuda_qkv_rope_smem(n, d);
    if (n > TC_CUDA_SKINNY_ROWS || n_head <= 0 || head_dim < 2 || head_dim % 2 || smem > TC_CUDA_PRE_SMEM)
        return cudaErrorInvalidValue;
    qkv_rope_rows rr;
    memset(&rr, 0, sizeof rr);
    for (int i = 0; i < n; i++) rr.r[i] = rows[i];
    /* whole pairs a block: an even number of warps, at least the
     * prologue's 4 */
    const unsigned wb = (unsigned)(g_skinny_warps < TC_LN_THREADS / 32 ? TC_LN_THREADS / 32 : g_skinny_warps);
    const unsigned th = 32 * wb;
    const dim3 b((unsigned)((3 * d + (int)wb - 1) / (int)wb), (unsigned)((n + TC_CUDA_SKINNY_MAX - 1) / TC_CUDA_SKINNY_MAX));
    switch (wtype) {
    case TC_WT_BF16:
        return tc_launch(skinny_rope_kernel<__nv_bfloat16>, b, th, smem, st, y, ldy, x, ldx,
                         (const __nv_bfloat16 *)W, bias, n, d, lw, lb, eps, rr, drows, head_dim, base);
    case TC_WT_F16:
        return tc_launch(skinny_rope_kernel<__half>, b, th, smem, st, y, ldy, x, ldx, (const __half *)W, bias, n, d,
                         lw, lb, eps, rr, drows, head_dim, base);
    case TC_WT_F32:
        return tc_launch(skinny_rope_kernel<float>, b, th, smem, st, y, ldy, x, ldx, (const float *)W, bias, n, d,
                         lw, lb, eps, rr, drows, head_dim, base);
    default: return cudaErrorInvalidValue;
    }
}

// dst [n, k] (contiguous) = x [n, k] (ldx) rounded to T
template <typename T> __global__ static void narrow_kernel(T *dst, const float *x, int ldx, int n, int k) {
    size_t total = (size_t)n * k;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / k, j = t % k;
        dst[t] = tc_from_f32<T>(x[i * ldx + j]);
    }
}

extern "C" cudaError_t tc_cuda_narrow(cudaStream_t st, void *dst, int wtype, const float *x, int ldx, int n, int k) {
    if (n <= 0 || k <= 0) return cudaSuccess;
    const unsigned th = 256, b = tc_cuda_blocks((size_t)n * k, th);
    switch (wtype) {
    case TC_WT_BF16: narrow_kernel<<<b, th, 0, st>>>((__nv_bfloat16 *)dst, x, ldx, n, k); break;
    case TC_WT_F16: narrow_kernel<<<b, th, 0, st>>>((__half *)dst, x, ldx, n, k); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}
