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

/* LayerNorm's row statistics, the one arithmetic of the layernorm kernel
 * and of the skinny linear's LN prologue (so the fused op gives the
 * unfused bits): threads 0..TC_LN_THREADS-1 of the block take columns
 * j, j + TC_LN_THREADS, ...; warp sums; the warps' sums added in order.
 * Two passes (mean, then the variance of x - mean). Every thread of the
 * block (blockDim.x >= TC_LN_THREADS, a multiple of 32) must call it; red:
 * TC_LN_THREADS / 32 floats of shared memory. */
#define TC_LN_THREADS 128
__device__ __forceinline__ float tc_ln_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = tc_warp_sum(v);
    __syncthreads(); /* red is reused between calls */
    if (lane == 0 && w < TC_LN_THREADS / 32) red[w] = v;
    __syncthreads();
    float s = 0.f;
    for (int i = 0; i < TC_LN_THREADS / 32; i++) s += red[i];
    return s;
}
__device__ __forceinline__ void tc_ln_stats(const float *xi, int d, float eps, float *red, float &mean, float &rs) {
    float s = 0.f;
    if (threadIdx.x < TC_LN_THREADS)
        for (int j = threadIdx.x; j < d; j += TC_LN_THREADS) s += xi[j];
    mean = tc_ln_sum(s, red) / (float)d;
    float v = 0.f;
    if (threadIdx.x < TC_LN_THREADS)
        for (int j = threadIdx.x; j < d; j += TC_LN_THREADS) {
            const float t = xi[j] - mean;
            v = fmaf(t, t, v);
        }
    const float var = tc_ln_sum(v, red) / (float)d;
    rs = 1.0f / sqrtf(var + eps);
}
__device__ __forceinline__ float tc_ln_apply(float x, float mean, float rs, float w, float b) {
    return fmaf((x - mean) * rs, w, b);
}
/* SwiGLU's gate, as the CPU backend computes it (expf, not __expf) */
__device__ __forceinline__ float tc_swiglu1(float a, float b) { return a / (1.0f + expf(-a)) * b; }

/* RoPE's theta_j = (float)pow(base, -2j/hd) in double (as the host's
 * tc_rope_theta), and the rotation of a pair by (float)pos * theta with
 * explicit round-to-nearest products (no FMA contraction): the one formula
 * of rope.cu's kernels and of the QKV linear's fused rotation */
__device__ __forceinline__ float tc_rope_theta(int j, int head_dim, float base) {
    return (float)pow((double)base, -2.0 * (double)j / (double)head_dim);
}
__device__ __forceinline__ void tc_rope_rot(float &x0, float &x1, int64_t pos, float theta) {
    const float a = __fmul_rn((float)pos, theta);
    const float c = cosf(a), s = sinf(a);
    const float r0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    const float r1 = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    x0 = r0, x1 = r1;
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

/* Programmatic dependent launch (sm_90+, docs/gpu.md "PDL"): a kernel
 * launched with tc_launch may start while the kernel before it on the
 * stream still runs. Each such kernel reads nothing another kernel writes
 * and writes nothing before tc_pdl_wait() (which returns once the previous
 * grid has completed and its memory is visible): only model weights, which
 * no step writes, may be read before it. Every thread passes the wait
 * before it exits, so the grid cannot complete before its predecessor and
 * the order stays transitive. tc_pdl_trigger() then lets the next kernel
 * launch. Both are no-ops when the kernel was launched without the
 * attribute, and compiled out below sm_90. */
__device__ __forceinline__ void tc_pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void tc_pdl_trigger(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* Per-device capability masks (bit d: device d, devices past 63 never):
 * tc_cuda_arch_bit sets the current device's bit when it is at least
 * sm_<min_major>x and the code `kernel` runs there was built for at least
 * PTX min_ptx (a JIT of older PTX lacks what the newer code needs);
 * tc_cuda_arch_has reads it for the current device. Host code. */
template <typename K>
static inline cudaError_t tc_cuda_arch_bit(K kernel, int min_major, int min_ptx, unsigned long long *mask) {
    cudaError_t e;
    int dev = 0, major = 0;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev)) != cudaSuccess)
        return e;
    cudaFuncAttributes fa;
    if ((e = cudaFuncGetAttributes(&fa, kernel)) != cudaSuccess) return e;
    if (major >= min_major && fa.ptxVersion >= min_ptx && dev >= 0 && dev < 64) *mask |= 1ull << dev;
    return cudaSuccess;
}
static inline int tc_cuda_arch_has(unsigned long long mask) {
    int d = 0;
    return mask && cudaGetDevice(&d) == cudaSuccess && d >= 0 && d < 64 && (mask >> d & 1ull);
}
/* the bit of the current device in pdl.cu's mask, and the knob */
extern "C" int tc_cuda_pdl_on(void);

/* A launch of a kernel that calls tc_pdl_wait() before touching what
 * another kernel writes: with the programmatic-serialization attribute
 * where the current device runs PDL (tc_cuda_pdl_on), a plain launch
 * otherwise. */
template <typename... KArgs, typename... Args>
static inline cudaError_t tc_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                    Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = tc_cuda_pdl_on() ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, ((KArgs)args)...);
}

#endif
