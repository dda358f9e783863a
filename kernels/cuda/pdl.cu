/* pdl.cu — where programmatic dependent launch is on (common.cuh's
 * tc_launch): bit d of g_pdl_devs when device d is sm_90 or later and the
 * code it runs was compiled for sm_90 or later (a JIT of older PTX has the
 * griddepcontrol instructions compiled out, so its kernels would not wait),
 * and the knob (TC_CUDA_PDL, g_pdl_want). Process-wide, like the
 * tensor-core attention's mask: set at backend init, read at each launch
 * (cudaGetDevice is a thread-local read). Devices past 63 launch plainly. */
#include "common.cuh"
#include "kernels_cuda.h"

static int g_pdl_want = 1;
static unsigned long long g_pdl_devs;

/* compiled with the same flags as every kernel: its PTX version is theirs */
__global__ static void pdl_probe_kernel(int *p) {
    tc_pdl_wait();
    if (p) *p = 0;
}

extern "C" int tc_cuda_pdl_on(void) {
    int d = 0;
    return g_pdl_want && g_pdl_devs && cudaGetDevice(&d) == cudaSuccess && d >= 0 && d < 64 &&
           (g_pdl_devs >> d & 1ull);
}

extern "C" cudaError_t tc_cuda_pdl_setup(int want) {
    cudaError_t e;
    int dev = 0, major = 0;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev)) != cudaSuccess)
        return e;
    cudaFuncAttributes fa;
    if ((e = cudaFuncGetAttributes(&fa, pdl_probe_kernel)) != cudaSuccess) return e;
    if (major >= 9 && fa.ptxVersion >= 90 && dev >= 0 && dev < 64) g_pdl_devs |= 1ull << dev;
    g_pdl_want = want != 0;
    return cudaSuccess;
}

extern "C" int tc_cuda_pdl_set(int on) {
    g_pdl_want = on != 0;
    return tc_cuda_pdl_on();
}
