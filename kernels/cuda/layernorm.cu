/* layernorm.cu — LayerNorm per row, affine, fp32 two-pass (mean, then the
 * variance of x - mean) like the CPU backend, so a row with a large mean
 * does not lose precision. One block per row; rows are d <= a few
 * thousand wide, so one block's reduction is enough. Not fused with the
 * residual yet (issue 7: fused kernels). */
#include "common.cuh"
#include "kernels_cuda.h"

#define LN_THREADS 128

/* Sum over the block; every thread gets the result. red: LN_THREADS/32 floats. */
__device__ static float block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = tc_warp_sum(v);
    __syncthreads(); /* red is reused between calls */
    if (lane == 0) red[w] = v;
    __syncthreads();
    float s = 0.f;
    for (int i = 0; i < LN_THREADS / 32; i++) s += red[i];
    return s;
}

// x, out [n, d]; w, b [d]; one block per row
__global__ static void __launch_bounds__(LN_THREADS)
    layernorm_kernel(float *out, const float *x, const float *w, const float *b, int d, float eps) {
    __shared__ float red[LN_THREADS / 32];
    const float *xi = x + (size_t)blockIdx.x * d;
    float *oi = out + (size_t)blockIdx.x * d;
    float s = 0.f;
    for (int j = threadIdx.x; j < d; j += LN_THREADS) s += xi[j];
    float mean = block_sum(s, red) / (float)d;
    float v = 0.f;
    for (int j = threadIdx.x; j < d; j += LN_THREADS) {
        float t = xi[j] - mean;
        v += t * t;
    }
    float var = block_sum(v, red) / (float)d;
    float rs = 1.0f / sqrtf(var + eps);
    for (int j = threadIdx.x; j < d; j += LN_THREADS) oi[j] = (xi[j] - mean) * rs * w[j] + b[j];
}

extern "C" cudaError_t tc_cuda_layernorm(cudaStream_t st, float *out, const float *x, const float *w,
                                         const float *b, int n, int d, float eps) {
    if (n <= 0 || d <= 0) return cudaSuccess;
    layernorm_kernel<<<(unsigned)n, LN_THREADS, 0, st>>>(out, x, w, b, d, eps);
    return cudaGetLastError();
}
