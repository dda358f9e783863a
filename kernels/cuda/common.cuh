/* common.cuh — internal: small helpers shared by the .cu files (grid sizing,
 * warp reductions). Device code only; no state. */
#ifndef TC_CUDA_COMMON_CUH
#define TC_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
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

/* weights in 16 bits (backend.h's TC_WT_*): to fp32 exactly, from fp32
 * rounded to nearest even */
__device__ __forceinline__ float tc_to_f32(float v) { return v; }
__device__ __forceinline__ float tc_to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float tc_to_f32(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T tc_from_f32(float v);
template <> __device__ __forceinline__ float tc_from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 tc_from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half tc_from_f32<__half>(float v) { return __float2half_rn(v); }

#endif
