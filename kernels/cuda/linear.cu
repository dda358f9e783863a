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
 * T = float: fp32 weights, x as is. */
template <typename T>
__global__ __launch_bounds__(256) static void skinny_kernel(float *y, int ldy, const float *x, int ldx, const T *W,
                                                            const float *bias, int n, int m, int k, float beta) {
    const int lane = threadIdx.x & 31;
    const int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (j >= m) return; /* whole warps */
    const T *w = W + (size_t)j * k;
    float acc[TC_CUDA_SKINNY_MAX];
#pragma unroll
    for (int i = 0; i < TC_CUDA_SKINNY_MAX; i++) acc[i] = 0.f;
    constexpr int VEC = 16 / sizeof(T); /* weights in one 16-byte load */
    if (k % VEC == 0 && ((uintptr_t)W & 15) == 0) {
        for (int t = lane * VEC; t < k; t += 32 * VEC) {
            const uint4 raw = *(const uint4 *)(w + t);
            T h[VEC];
            memcpy(h, &raw, sizeof raw);
            float wf[VEC];
#pragma unroll
            for (int u = 0; u < VEC; u++) wf[u] = tc_to_f32(h[u]);
#pragma unroll
            for (int i = 0; i < TC_CUDA_SKINNY_MAX; i++)
                if (i < n) {
                    const float *xr = x + (size_t)i * ldx + t;
#pragma unroll
                    for (int u = 0; u < VEC; u++) acc[i] = fmaf(wf[u], narrow<T>(xr[u]), acc[i]);
                }
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
            if (lane == 0) {
                float *yy = y + (size_t)i * ldy + j;
                /* as bias_kernel then a beta-1 GEMM would: (beta*y + bias) + xW;
                 * beta 0 must not read y */
                float base = beta == 0.f ? (bias ? bias[j] : 0.f) : (bias ? beta * *yy + bias[j] : beta * *yy);
                *yy = beta == 0.f && !bias ? v : base + v;
            }
        }
}

extern "C" cudaError_t tc_cuda_linear_skinny(cudaStream_t st, float *y, int ldy, const float *x, int ldx,
                                             const void *W, const float *bias, int wtype, int n, int m, int k,
                                             float beta) {
    if (n <= 0 || m <= 0) return cudaSuccess;
    if (n > TC_CUDA_SKINNY_MAX) return cudaErrorInvalidValue;
    const unsigned th = 256, b = (unsigned)((m + 7) / 8);
    switch (wtype) {
    case TC_WT_BF16:
        skinny_kernel<<<b, th, 0, st>>>(y, ldy, x, ldx, (const __nv_bfloat16 *)W, bias, n, m, k, beta);
        break;
    case TC_WT_F16: skinny_kernel<<<b, th, 0, st>>>(y, ldy, x, ldx, (const __half *)W, bias, n, m, k, beta); break;
    case TC_WT_F32: skinny_kernel<<<b, th, 0, st>>>(y, ldy, x, ldx, (const float *)W, bias, n, m, k, beta); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
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
