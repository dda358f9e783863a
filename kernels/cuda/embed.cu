/* embed.cu — embedding gather: out[i,:] = E[ids[i],:], E in the backend's
 * weight format (fp32, bf16 or fp16; the 16-bit ones widened exactly).
 * ids are device int32 (model/ uploads them); bad ids are rejected by
 * model/ before upload. */
#include "common.cuh"
#include "kernels_cuda.h"

// out [n, d], E [V, d], ids [n]
template <typename T>
__global__ static void embed_kernel(float *out, const T *E, const int32_t *ids, int n, int d) {
    size_t total = (size_t)n * d;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / d, j = t % d;
        out[t] = tc_to_f32(E[(size_t)ids[i] * d + j]);
    }
}

extern "C" cudaError_t tc_cuda_embed(cudaStream_t st, float *out, const void *E, int wtype, const int32_t *ids,
                                     int n, int d) {
    if (n <= 0 || d <= 0) return cudaSuccess;
    const unsigned th = 256, b = tc_cuda_blocks((size_t)n * d, th);
    switch (wtype) {
    case TC_WT_F32: embed_kernel<<<b, th, 0, st>>>(out, (const float *)E, ids, n, d); break;
    case TC_WT_BF16: embed_kernel<<<b, th, 0, st>>>(out, (const __nv_bfloat16 *)E, ids, n, d); break;
    case TC_WT_F16: embed_kernel<<<b, th, 0, st>>>(out, (const __half *)E, ids, n, d); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}
