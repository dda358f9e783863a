/* backend_cuda.h — the CUDA backend behind kernels/backend.h (C API).
 *
 * fp32 activations; weights fp32, or bf16 / f16 with TC_CUDA_WEIGHTS;
 * GEMMs of more than 8 rows through cuBLAS (fp32 compute, no TF32), fewer
 * rows and the other ops as kernels in the kernels/cuda .cu files.
 *
 * Lanes: the backend owns TC_CUDA_LANES non-blocking streams, each with
 * its own cuBLAS handle and workspace. A thread's ops run in order on its
 * lane (tc_backend_cuda_bind_lane; lane 0 unless bound), so a worker's
 * context thread (syncs, lane 1), generation thread (hit steps, lane 0)
 * and, with TC_CUDA_PREFILL_LANE=1, prefill thread (Appends, lane 2)
 * overlap on one GPU. Work of two lanes is not ordered: a thread hands a
 * session to another only after tc_backend_cuda_sync (the worker does so
 * before every reply). Upload and download are synchronous on the lane
 * (the host buffer may be reused or read on return, as with the CPU
 * backend); the ops are asynchronous.
 *
 * Graphs: the ops a hit step brackets with capture_begin / capture_end run
 * as one CUDA graph: by default (TC_CUDA_GRAPHS=2) a kept graph replayed
 * while the step's launches stay the same (up to 4 a lane), its per-session
 * items staged; TC_CUDA_GRAPHS=1 captures every step, 0 launches each op
 * (or tc_backend_cuda_set_graphs).
 *
 * Errors: the ops of backend.h return nothing, so the first CUDA or cuBLAS
 * failure is logged, latched (the device counts as poisoned, STYLE.md
 * tier iii) and every later op becomes a no-op; a download after that
 * fills its destination with NaN so stale data is never mistaken for a
 * result. Callers poll tc_backend_cuda_status() (a worker then exits and
 * is restarted).
 *
 * Not here (issue 7, see docs/gpu.md): graphs that replay without
 * re-capture, tensor-core attention, 16-bit activations. */
#ifndef TC_BACKEND_CUDA_H
#define TC_BACKEND_CUDA_H

#include <stdio.h>

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
/* Waits for the queued work of the calling thread's lane, then returns the
 * backend's status. */
tc_status tc_backend_cuda_sync(tc_backend *be);
/* The calling thread's lane's stream (a cudaStream_t), for callers that
 * order their own work after the backend's. */
void *tc_backend_cuda_stream(tc_backend *be);

/* Lanes (see the top): 0 for the generation thread and anything unbound,
 * 1 for the context thread, 2 for the prefill thread (a worker started
 * with TC_CUDA_PREFILL_LANE=1; else idle: a stream, a cuBLAS handle and
 * its 32 MiB workspace). Per thread, for every CUDA backend. */
#define TC_CUDA_LANES 3
void tc_backend_cuda_bind_lane(int lane);
/* Memory ops (alloc, free, upload, download) never go on a lane's stream
 * while another thread captures it (anything enqueued there would join
 * that capture): a thread bound to no lane, like the worker's RPC thread
 * freeing the sessions of a coordinator that left, shares lane 0 with the
 * generation thread's captured hit steps. Those ops go on a stream of the
 * backend's that is never captured; how many did so far (for tests). */
long tc_backend_cuda_side_ops(tc_backend *be);

/* Hit steps as graphs: 0 off, 1 captured every step, 2 replayed (default;
 * TC_CUDA_GRAPHS in the environment at init), and how many graphs were
 * launched and how many instantiated (the rest were updated in place or
 * replayed as kept) so far. */
void tc_backend_cuda_set_graphs(tc_backend *be, int on);
void tc_backend_cuda_graph_stats(tc_backend *be, long *launches, long *instantiations);

/* Prefill and sync attention (head_dim <= 64) on the tensor cores, 3xTF32
 * (default where the device is sm_80 or later; TC_CUDA_ATT_MMA=0 at init
 * turns it off), or on the CUDA cores: on or off for every CUDA backend of
 * the process; returns whether it is on. For tests and A/B benchmarks. */
int tc_backend_cuda_set_att_mma(int on);

/* The hit step's kernels launched with programmatic dependent launch
 * (sm_90+: each may start, and load its weights, while the kernel before it
 * finishes; the results are the same bits), default on where the device
 * has it (TC_CUDA_PDL=0 at init turns it off; TC_CUDA_PROFILE turns it off
 * unless TC_CUDA_PDL is set): on or off for every CUDA backend of the
 * process, between steps; returns whether the current device runs it. For
 * tests and A/B benchmarks. */
int tc_backend_cuda_set_pdl(int on);
/* whether the current device runs it now (for reports) */
int tc_backend_cuda_pdl_on(void);

/* The hit step's two softmaxes of a session (attention_pairs) in two
 * blocks at once, the second to finish storing both: 1 (default) while one
 * block a pair would leave multiprocessors idle (small batches), 2 always
 * (tests), 0 never (TC_CUDA_PAIRS=0 at init: one block after the other);
 * the same bits in every mode. For tests and A/B benchmarks, between
 * steps. */
void tc_backend_cuda_set_pairs(tc_backend *be, int on);
/* The sample op (sample.cu: the token drawn on the device, so a dense
 * sampler's step downloads ids, not [B, V] logits): 1 (the default;
 * TC_CUDA_SAMPLE at init) for every step, 2 for steps of 2 rows or more
 * (the host draws a lone row), 0 never. Between steps. */
void tc_backend_cuda_set_sample(tc_backend *be, int mode);

/* Columns (warps) a block of the hit step's skinny linears: 2, 4 or 8
 * (TC_CUDA_SKINNY_WARPS at init, default 8); the results do not depend on
 * it. Process-wide, between steps; -1 for another value. For tests and
 * A/B benchmarks. */
int tc_backend_cuda_set_skinny_warps(int warps);

/* Linears (and the fused LN / SwiGLU / QKV + RoPE ones) of up to `rows`
 * rows on the skinny kernels, in groups of 8 side by side, more on cuBLAS
 * (and the LN, SwiGLU, RoPE as ops of their own): 1 to 32
 * (TC_CUDA_SKINNY_ROWS at init). A row's result is the same bits in any
 * group, so a batch of up to `rows` sessions steps each as it would alone
 * (batch invariance; slower past 8 rows, docs/gpu.md). Between steps. The
 * value before; -1 for another value (nothing changed). */
int tc_backend_cuda_set_skinny_rows(tc_backend *be, int rows);

/* The hit step's fusions (TC_CUDA_FUSE at init): 1 LN / SwiGLU into the
 * skinny linears and the RoPE + window appends into the QKV linear, 2 the
 * first only, 0 neither; the same bits in every mode. For tests and A/B
 * runs, between steps, not with TC_CUDA_PROFILE. */
void tc_backend_cuda_set_fuse(tc_backend *be, int mode);

/* TC_CUDA_PROFILE=1 in the environment at init: the device time of every
 * op outside a captured graph, from CUDA events around it, summed per op
 * class on each lane (with 1 the host's launch cost is inside the interval
 * when the stream is idle; with 2 a spin kernel ahead of each op keeps it
 * out: device time alone, the step itself slowed down). Writes the calling thread's lane's table under
 * `title` to `out` (NULL: nothing) and zeroes it. 0 when profiling is off
 * (nothing written). A measuring mode: two event records an op of host
 * time. */
int tc_backend_cuda_profile(tc_backend *be, const char *title, FILE *out);

#ifdef __cplusplus
}
#endif

#endif
