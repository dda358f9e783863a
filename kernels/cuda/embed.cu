/* embed.cu — embedding gather: out[i,:] = E[ids[i],:]. ids are device int32
 * (model/ uploads them); bad ids are rejected by model/ before upload. */
#include "common.cuh"
#include "kernels_cuda.h"

// out [n, d], E [V, d], ids [n]
__global__ static void embed_kernel(float *out, const float *E, const int32_t *ids, int n, int d) {
    size_t total = (size_t)n * d;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / d, j = t % d;
        out[t] = E[(size_t)ids[i] * d + j];
    }
}

extern "C" cudaError_t tc_cuda_embed(cudaStream_t st, float *out, const float *E, const int32_t *ids, int n, int d) {
    if (n <= 0 || d <= 0) return cudaSuccess;
    const unsigned th = 256;
    embed_kernel<<<tc_cuda_blocks((size_t)n * d, th), th, 0, st>>>(out, E, ids, n, d);
    return cudaGetLastError();
}
