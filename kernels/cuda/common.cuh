/* common.cuh — internal: small helpers shared by the .cu files (grid sizing,
 * warp reductions). Device code only; no state. */
#ifndef TC_CUDA_COMMON_CUH
#define TC_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stddef.h>

/* Blocks for a grid-stride loop over `total` items: enough to fill the GPU,
 * never more than the grid limit. */
static inline unsigned tc_cuda_blocks(size_t total, unsigned threads) {
    size_t b = (total + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535u * 16u) b = 65535u * 16u;
    return (unsigned)b;
}

__device__ __forceinline__ float tc_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float tc_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
