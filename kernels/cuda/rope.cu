/* rope.cu — in-place interleaved RoPE: (x[2j], x[2j+1]) of every head of
 * row i rotated by (float)(pos0 + i) * theta_j. theta_j is computed as
 * tc_rope_theta does ((float)pow(base, -2j/hd) in double) once per block
 * into shared memory, and the rotation uses explicit round-to-nearest
 * products so nvcc cannot contract it into FMAs: the result then matches
 * the CPU backend up to the last-ulp differences of sinf/cosf. */
#include "common.cuh"
#include "kernels_cuda.h"

// x [n, n_head*head_dim] (ld); theta: head_dim/2 floats of dynamic smem
__global__ static void rope_kernel(float *x, int ld, int n, int n_head, int head_dim, int64_t pos0, float base) {
    extern __shared__ float theta[];
    const int half = head_dim / 2;
    for (int j = threadIdx.x; j < half; j += blockDim.x)
        theta[j] = (float)pow((double)base, -2.0 * (double)j / (double)head_dim);
    __syncthreads();
    const size_t per_row = (size_t)n_head * half, total = (size_t)n * per_row;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / per_row, r = t % per_row;
        int h = (int)(r / half), j = (int)(r % half);
        float a = __fmul_rn((float)(pos0 + (int64_t)i), theta[j]);
        float c = cosf(a), s = sinf(a);
        float *pr = x + i * ld + (size_t)h * head_dim + 2 * j;
        float x0 = pr[0], x1 = pr[1];
        pr[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        pr[1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    }
}

extern "C" cudaError_t tc_cuda_rope(cudaStream_t st, float *x, int ld, int n, int n_head, int head_dim,
                                    int64_t pos0, float base) {
    if (n <= 0 || n_head <= 0 || head_dim < 2) return cudaSuccess;
    const unsigned th = 256;
    size_t smem = (size_t)(head_dim / 2) * sizeof(float); /* head_dim <= 24576 fits 48 KiB */
    rope_kernel<<<tc_cuda_blocks((size_t)n * n_head * (head_dim / 2), th), th, smem, st>>>(x, ld, n, n_head,
                                                                                          head_dim, pos0, base);
    return cudaGetLastError();
}
