/* backend_cuda.h — the CUDA backend behind kernels/backend.h (C API).
 *
 * fp32 weights and activations, GEMMs through cuBLAS (fp32 compute, no
 * TF32), the other ops as kernels in the kernels/cuda .cu files. Everything runs
 * in order on one non-blocking stream owned by the backend; upload and
 * download are synchronous (the host buffer may be reused or read on
 * return, as with the CPU backend), the ops are asynchronous.
 *
 * Errors: the ops of backend.h return nothing, so the first CUDA or cuBLAS
 * failure is logged, latched (the device counts as poisoned, STYLE.md
 * tier iii) and every later op becomes a no-op; a download after that
 * fills its destination with NaN so stale data is never mistaken for a
 * result. Callers poll tc_backend_cuda_status() (a worker then exits and
 * is restarted).
 *
 * Not here (issue 7, see docs/gpu.md): bf16/fp16 weights, CUDA graphs, a
 * second stream for syncs, the batched hit-step attention, NCCL. */
#ifndef TC_BACKEND_CUDA_H
#define TC_BACKEND_CUDA_H

#include "../backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is none or no driver (the
 * GPU tests use this to report SKIPPED). Never fails. */
int tc_backend_cuda_device_count(void);

/* Binds `be` to CUDA device `device`: stream, cuBLAS handle and its
 * workspace. TC_ERR_UNSUPPORTED when no device/driver is present,
 * TC_ERR_INVALID for a device index out of range. */
tc_status tc_backend_cuda_init(tc_backend *be, int device);
void tc_backend_cuda_free(tc_backend *be);

/* TC_OK, or TC_ERR_INTERNAL once any CUDA/cuBLAS call of this backend
 * failed (sticky; tc_error_get() names the first failure). Does not wait. */
tc_status tc_backend_cuda_status(tc_backend *be);
/* Waits for all queued work of the backend, then returns its status. */
tc_status tc_backend_cuda_sync(tc_backend *be);
/* The backend's stream (a cudaStream_t), for callers that capture graphs
 * or order their own work after the backend's. */
void *tc_backend_cuda_stream(tc_backend *be);

#ifdef __cplusplus
}
#endif

#endif
