/* layernorm.cu — LayerNorm per row, affine, fp32 two-pass (mean, then the
 * variance of x - mean) like the CPU backend, so a row with a large mean
 * does not lose precision. One block per row; rows are d <= a few
 * thousand wide, so one block's reduction is enough. Not fused with the
 * residual; the hit step's LayerNorms run inside the next linear instead
 * (linear.cu, the LN prologue: the same statistics code, common.cuh). */
#include "common.cuh"
#include "kernels_cuda.h"

// x, out [n, d]; w, b [d]; one block of TC_LN_THREADS per row
__global__ static void __launch_bounds__(TC_LN_THREADS)
    layernorm_kernel(float *out, const float *x, const float *w, const float *b, int d, float eps) {
    __shared__ float red[TC_LN_THREADS / 32];
    const float *xi = x + (size_t)blockIdx.x * d;
    float *oi = out + (size_t)blockIdx.x * d;
    float mean, rs;
    tc_pdl_wait(); /* launched with tc_launch: the previous kernel's x */
    tc_pdl_trigger();
    tc_ln_stats(xi, d, eps, red, mean, rs);
    for (int j = threadIdx.x; j < d; j += TC_LN_THREADS) oi[j] = tc_ln_apply(xi[j], mean, rs, w[j], b[j]);
}

extern "C" cudaError_t tc_cuda_layernorm(cudaStream_t st, float *out, const float *x, const float *w,
                                         const float *b, int n, int d, float eps) {
    if (n <= 0 || d <= 0) return cudaSuccess;
    return tc_launch(layernorm_kernel, dim3((unsigned)n), dim3(TC_LN_THREADS), 0, st, out, x, w, b, d, eps);
}
