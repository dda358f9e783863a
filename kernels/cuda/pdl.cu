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

extern "C" int tc_cuda_pdl_on(void) { return g_pdl_want && tc_cuda_arch_has(g_pdl_devs); }

extern "C" cudaError_t tc_cuda_pdl_setup(int want) {
    const cudaError_t e = tc_cuda_arch_bit(pdl_probe_kernel, 9, 90, &g_pdl_devs);
    if (e == cudaSuccess) g_pdl_want = want != 0;
    return e;
}

extern "C" int tc_cuda_pdl_set(int on) {
    g_pdl_want = on != 0;
    return tc_cuda_pdl_on();
}
