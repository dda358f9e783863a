/* linear.cu — the elementwise half of linear: y = beta*y + bias before the
 * cuBLAS GEMM accumulates x W^T into it with beta 1 (backend_cuda.c). The
 * GEMM is not here: cuBLAS owns it. */
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
