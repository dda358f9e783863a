/* linear.cu — the parts of linear that are not cuBLAS's (backend_cuda.c):
 *  - y = beta*y + bias, before the GEMM accumulates x W^T with beta 1;
 *  - the skinny product for n <= TC_CUDA_SKINNY_MAX rows (the hit step:
 *    memory-bound, so it reads the weights once, one warp per output
 *    column, bias folded in: one launch where cuBLAS took a bias kernel and
 *    a GEMV with its host-side heuristics);
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

/* The product itself, raw holding what skinny_prefetch loaded: the first
 * strides from raw, the rest loaded SKINNY_UNROLL strides at a time. */
template <typename T>
__device__ __forceinline__ void skinny_body(float *y, int ldy, const float *x, int ldx, const T *W,
                                            const float *bias, int n, int m, int k, float beta,
                                            const uint4 (&raw0)[SKINNY_UNROLL]) {
    const int lane = threadIdx.x & 31;
    const int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (j >= m) return; /* whole warps */
    const T *w = W + (size_t)j * k;
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
        if (i < n) {
            const float v = tc_warp_sum(acc[i]);
            if (lane == 0) y[(size_t)i * ldy + j] = beta == 0.f && !bias ? v : base[i] + v;
        }
}

/* Both kernels load their weights first, then wait for the previous kernel
 * (common.cuh, PDL): with programmatic launch the loads overlap its tail. */
template <typename T>
__global__ __launch_bounds__(256) static void skinny_kernel(float *y, int ldy, const float *x, int ldx, const T *W,
                                                            const float *bias, int n, int m, int k, float beta) {
    uint4 raw[SKINNY_UNROLL];
    skinny_prefetch<T>(raw, W, m, k);
    tc_pdl_wait();
    tc_pdl_trigger();
    skinny_body<T>(y, ldy, x, ldx, W, bias, n, m, k, beta, raw);
}

/* The same product of a transformed input, the transform done by every
 * block into shared memory first (xs [n, k]): TC_PRE_LN, x's rows
 * layer-normalized with the layernorm kernel's arithmetic (common.cuh);
 * TC_PRE_SWIGLU, x [n, 2k] gated as the swiglu kernel gates it. Each
 * block repeats the transform (n x k floats from L2: cheap next to a
 * launch), so the result is bit for bit the two ops' and the step has no
 * LayerNorm or SwiGLU launch of its own. */
template <typename T>
__global__ __launch_bounds__(256) static void skinny_pre_kernel(float *y, int ldy, const float *x, int ldx,
                                                                const T *W, const float *bias, int n, int m, int k,
                                                                float beta, int pre, const float *lw,
                                                                const float *lb, float eps) {
    extern __shared__ float xs[];
    __shared__ float red[TC_LN_THREADS / 32];
    uint4 raw[SKINNY_UNROLL];
    skinny_prefetch<T>(raw, W, m, k);
    /* the LayerNorm's weights are weights too: this thread's columns j =
     * tid + q * blockDim.x, the first PRE_LW of them */
    constexpr int PRE_LW = 4;
    float lwr[PRE_LW], lbr[PRE_LW];
#pragma unroll
    for (int q = 0; q < PRE_LW; q++) {
        const int j = threadIdx.x + q * blockDim.x;
        const bool in = pre == TC_PRE_LN && j < k;
        lwr[q] = in ? lw[j] : 0.f, lbr[q] = in ? lb[j] : 0.f;
    }
    tc_pdl_wait();
    tc_pdl_trigger();
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
    skinny_body<T>(y, ldy, xs, k, W, bias, n, m, k, beta, raw);
}

extern "C" size_t tc_cuda_linear_pre_smem(int n, int k) { return (size_t)n * (size_t)k * sizeof(float); }

extern "C" cudaError_t tc_cuda_linear_skinny(cudaStream_t st, float *y, int ldy, const float *x, int ldx,
                                             const void *W, const float *bias, int wtype, int n, int m, int k,
                                             float beta) {
    if (n <= 0 || m <= 0) return cudaSuccess;
    if (n > TC_CUDA_SKINNY_MAX) return cudaErrorInvalidValue;
    const unsigned th = 256, b = (unsigned)((m + 7) / 8);
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
    if (n > TC_CUDA_SKINNY_MAX || smem > TC_CUDA_PRE_SMEM || k <= 0 || (pre != TC_PRE_LN && pre != TC_PRE_SWIGLU))
        return cudaErrorInvalidValue;
    const unsigned th = 256, b = (unsigned)((m + 7) / 8);
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
