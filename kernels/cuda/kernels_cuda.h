/* kernels_cuda.h — internal: the CUDA launchers behind backend_cuda.c, one
 * op family per .cu file. Not a public API (model/ sees only backend.h).
 *
 * Every launcher takes the stream first, never allocates, never
 * synchronizes, checks its launch (cudaGetLastError) and returns the CUDA
 * error (cudaSuccess when fine). Its CPU twin is the op of the same name in
 * kernels/cpu/backend_cpu.c: same arguments, `tc_backend *` in place of the
 * stream. All pointers are device memory; shapes as in kernels/backend.h.
 * fp32 throughout: no fast-math, so results track the CPU backend to a few
 * ulps (see the tolerance table in tests/gpu/test_backend_ops_gpu.c). */
#ifndef TC_KERNELS_CUDA_H
#define TC_KERNELS_CUDA_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "../backend.h" /* tc_att_item */

#ifdef __cplusplus
extern "C" {
#endif

/* embed.cu: out[i,:] = E[ids[i],:], E in weight format wtype (TC_WT_*)
 *                                                  out [n, d], E [V, d] */
cudaError_t tc_cuda_embed(cudaStream_t st, float *out, const void *E, int wtype, const int32_t *ids, int n, int d);

/* layernorm.cu: out = LN(x) * w + b per row (two-pass mean/variance, as
 * the CPU backend)                               x, out [n, d] (ld d) */
cudaError_t tc_cuda_layernorm(cudaStream_t st, float *out, const float *x, const float *w, const float *b, int n,
                              int d, float eps);

/* linear.cu: the non-GEMM part of linear: y = beta*y + bias (broadcast over
 * n rows). The GEMM itself is cuBLAS, in backend_cuda.c.  y [n, m] (ldy) */
cudaError_t tc_cuda_bias(cudaStream_t st, float *y, int ldy, const float *bias, int n, int m, float beta);
/* linear.cu, any wtype: y = beta*y + bias (NULL: none) + x W^T for
 * n <= TC_CUDA_SKINNY_ROWS rows (in groups of TC_CUDA_SKINNY_MAX, one
 * launch; a row's bits do not depend on its group), the bias folded in, x rounded
 * to wtype, fp32 accumulation; and (16-bit wtypes) dst [n, k] = x rounded
 * to wtype, the GEMM's input for larger n.
 *                                   y [n, m] (ldy), x [n, k] (ldx), W [m, k] */
#define TC_CUDA_SKINNY_MAX 8
#define TC_CUDA_SKINNY_ROWS 32
cudaError_t tc_cuda_linear_skinny(cudaStream_t st, float *y, int ldy, const float *x, int ldx, const void *W,
                                  const float *bias, int wtype, int n, int m, int k, float beta);
/* tc_cuda_linear_skinny of a transformed input (backend.h linear_pre):
 * pre TC_PRE_LN, x [n, k] layer-normalized with (lw, lb, eps); TC_PRE_SWIGLU,
 * x [n, 2k] gated; bit for bit tc_cuda_layernorm / tc_cuda_swiglu then
 * tc_cuda_linear_skinny. n <= TC_CUDA_SKINNY_ROWS and
 * tc_cuda_linear_pre_smem(n, k) <= TC_CUDA_PRE_SMEM (a group's transformed
 * rows in shared memory). */
#define TC_CUDA_PRE_SMEM (48 * 1024 - 256) /* the default dynamic limit, less room for the kernel's static red[] */
cudaError_t tc_cuda_linear_pre(cudaStream_t st, int pre, float *y, int ldy, const float *x, int ldx, const void *W,
                               const float *bias, int wtype, int n, int m, int k, float beta, const float *lw,
                               const float *lb, float eps);
size_t tc_cuda_linear_pre_smem(int n, int k);
/* columns (warps) a block of the skinny kernels: 2, 4 or 8 (default);
 * the LN / SwiGLU prologue kernel takes at least 4. -1 for another value.
 * Process-wide; the results do not depend on it. */
int tc_cuda_linear_set_warps(int warps);
/* backend.h qkv_rope for n <= TC_CUDA_SKINNY_ROWS rows: y [n, 3d] (ldy) =
 * LN(x [n, d]) W^T + bias as tc_cuda_linear_pre (TC_PRE_LN) computes it,
 * then row i's Q|K pairs rotated at rows[i].pos and its K, V columns
 * copied to rows[i].k_dst / v_dst, as tc_cuda_rope_kv does: the same bits
 * as the two launches, in one. d = n_head * head_dim (head_dim even);
 * tc_cuda_qkv_rope_smem(n, d) <= TC_CUDA_PRE_SMEM. Rows from `rows`, or
 * (drows: a replayed graph) from device memory holding a copy. */
typedef struct {
    float *k_dst, *v_dst; /* the row's K and V in its window (d floats each) */
    int64_t pos;
} tc_rope_row;
size_t tc_cuda_qkv_rope_smem(int n, int d);
cudaError_t tc_cuda_qkv_rope(cudaStream_t st, float *y, int ldy, const float *x, int ldx, const void *W,
                             const float *bias, int wtype, int n, int n_head, int head_dim, const float *lw,
                             const float *lb, float eps, const tc_rope_row *rows, const tc_rope_row *drows,
                             float base);
cudaError_t tc_cuda_narrow(cudaStream_t st, void *dst, int wtype, const float *x, int ldx, int n, int k);

/* rope.cu: in-place interleaved RoPE, row i at position pos0 + i; angle
 * (float)pos * theta_j, theta_j = (float)pow(base, -2j/hd) in double as
 * tc_rope_theta does.                            x [n, n_head*head_dim] (ld) */
cudaError_t tc_cuda_rope(cudaStream_t st, float *x, int ld, int n, int n_head, int head_dim, int64_t pos0,
                         float base);

/* rope.cu: up to TC_CUDA_ROPE_BATCH items of backend.h's rope_kv_batch in
 * one launch: each item's Q|K rotated in place as tc_cuda_rope would (with
 * 2*n_head heads), its K and V rows copied to k_dst / v_dst. The kernel
 * reads the items from its parameters, or, when dev_it is given (a graph
 * replayed with new items: backend_cuda.c), from dev_it in device memory,
 * a copy of `it` by the time the kernel runs. The same for dev / dw, dz
 * of the two attention batches below. An odd head_dim is refused
 * (cudaErrorInvalidValue), as tc_cuda_qkv_rope refuses it. */
#define TC_CUDA_ROPE_BATCH 256
cudaError_t tc_cuda_rope_kv(cudaStream_t st, const tc_rope_kv_item *it, int n, int ldq, int n_head, int head_dim,
                            float base, const tc_rope_kv_item *dev_it);

/* swiglu.cu: out[i,j] = silu(h[i,j]) * h[i,F+j]     h [n, 2F] (ldh), out [n, F] */
cudaError_t tc_cuda_swiglu(cudaStream_t st, float *out, int ldo, const float *h, int ldh, int n, int F);

/* swiglu.cu: a one-thread kernel that keeps the stream busy for ns
 * nanoseconds (TC_CUDA_PROFILE=2) */
cudaError_t tc_cuda_spin(cudaStream_t st, long long ns);

/* sample.cu: per row of x [n, V], the token backend.h's sample op draws
 * (tc_sample_rows's, bit for bit) with draws[i] (host; up to 32 rows a
 * launch in its parameters) or dev[i] (device memory, a replayed graph;
 * then draws is unused).                                   tokens [n] */
cudaError_t tc_cuda_sample(cudaStream_t st, int32_t *tokens, const float *x, int n, int V, const tc_draw *draws,
                           const tc_draw *dev);
/* Which of sample.cu's walks runs (0, 1, 2: see there; default 2), process-
 * wide, between steps; -1 for another value. The same tokens in each. */
int tc_cuda_sample_set_kernel(int kind);

/* topk.cu: per row of x [n, V], the k largest as backend.h's topk (the
 * order of tc_topk_rows, bit for bit).        ids, vals [n, k]; k <= TC_TOPK_MAX */
cudaError_t tc_cuda_topk(cudaStream_t st, int32_t *ids, float *vals, const float *x, int n, int V, int k,
                         unsigned long long *am_part, unsigned *am_count, int sms);
/* k = 1 with am_part (TC_CUDA_ARGMAX_ROWS x TC_CUDA_ARGMAX_SPLIT) and
 * am_count (TC_CUDA_ARGMAX_ROWS, zero before the first call; every call
 * leaves it zero) for n <= TC_CUDA_ARGMAX_ROWS: each row's argmax over
 * several blocks, about two per multiprocessor (sms: the device's count;
 * 0: 132, an H100's). A stream's calls must not share the scratch with
 * another stream's. */
#define TC_CUDA_ARGMAX_ROWS 1024
#define TC_CUDA_ARGMAX_SPLIT 16

/* attention.cu: out = beta*out + concat_h softmax(q_h k_h^T/sqrt(hd)) v_h,
 * causal with absolute position offsets, strided q/k/v/out. Flash-style:
 * K/V tiles through shared memory, online softmax in registers, never an
 * nq x nk score matrix; a row kernel (keys split across warps) for
 * nq <= TC_CUDA_ATT_ROW_MAX (the hit step). head_dim <= TC_CUDA_ATT_MAX_HD. */
#define TC_CUDA_ATT_MAX_HD 256
#define TC_CUDA_ATT_ROW_MAX 4
cudaError_t tc_cuda_attention(cudaStream_t st, float *out, int ldo, const float *q, int ldq, const float *k,
                              int ldk, const float *v, int ldv, int nq, int nk, int n_head, int head_dim,
                              int64_t qpos0, int64_t kpos0, int causal, float beta, int splits, float *part);
/* Key splits tc_cuda_attention should use on a device of `sms`
 * multiprocessors (1: none); splits > 1 needs `part` of
 * TC_CUDA_ATT_PART_FLOATS floats, a scratch the call owns until the stream
 * reaches it. */
int tc_cuda_attention_splits(int nq, int nk, int n_head, int sms);
#define TC_CUDA_ATT_PART_FLOATS(splits, nq, n_head, hd) ((size_t)(splits) * (nq) * (n_head) * ((hd) + 2))
/* Up to TC_CUDA_ATT_BATCH attentions of a batch (backend.h's tc_att_item)
 * with 1..TC_CUDA_ATT_ROW_MAX query rows each in one launch of the row
 * kernel, each item computed exactly as tc_cuda_attention would. */
#define TC_CUDA_ATT_BATCH 256
cudaError_t tc_cuda_attention_rows(cudaStream_t st, const tc_att_item *it, int n, int n_head, int head_dim,
                                   const tc_att_item *dev);
/* Up to TC_CUDA_ATT_PAIRS sessions' two hit-step softmaxes (backend.h's
 * attention_pairs: w[i], then z[i] into the same output when z[i].nq > 0,
 * z[i].nq == w[i].nq <= TC_CUDA_ATT_ROW_MAX) in one launch, each as
 * tc_cuda_attention computes it. With part (TC_CUDA_PAIR_PART_FLOATS) and
 * count (TC_CUDA_PAIR_COUNTS, zero before the first call; every call
 * leaves it zero), where n_head * head_dim <= TC_CUDA_PAIR_D and n_head <=
 * TC_CUDA_PAIR_HEADS (tc_cuda_attention_pairs_split_fits): the two
 * softmaxes of a session in two blocks at once, the same bits; the
 * scratch is the call's until the stream reaches it. Else (NULL) one
 * block after the other. */
#define TC_CUDA_ATT_PAIRS 128
#define TC_CUDA_PAIR_SPLIT_MAX 16 /* sessions a split launch takes (the scratch's size) */
#define TC_CUDA_PAIR_D 8192
#define TC_CUDA_PAIR_HEADS 256
#define TC_CUDA_PAIR_PART_FLOATS ((size_t)TC_CUDA_PAIR_SPLIT_MAX * TC_CUDA_ATT_ROW_MAX * 2 * TC_CUDA_PAIR_D)
#define TC_CUDA_PAIR_COUNTS ((size_t)TC_CUDA_PAIR_SPLIT_MAX * TC_CUDA_ATT_ROW_MAX * TC_CUDA_PAIR_HEADS)
/* items a launch's small parameter struct holds (rows, pairs, rope_kv):
 * larger batches take the TC_CUDA_*_BATCH / _PAIRS struct */
#define TC_CUDA_BATCH_SMALL 16
cudaError_t tc_cuda_attention_pairs(cudaStream_t st, const tc_att_item *w, const tc_att_item *z, int n, int n_head,
                                    int head_dim, const tc_att_item *dw, const tc_att_item *dz, float *part,
                                    unsigned *count);
int tc_cuda_attention_pairs_split_fits(int n_head, int head_dim);
/* One-time setup for the current device (the tile kernel's opt-in to more
 * than 48 KiB of dynamic shared memory, up to the device's limit; mma != 0:
 * prefills' and syncs' attentions with head_dim <= 64 on the tensor cores,
 * 3xTF32, where the device is sm_80 or later); called by
 * tc_backend_cuda_init, never on the step path. Process-wide. */
cudaError_t tc_cuda_attention_setup(int mma);
/* whether the CUDA-core tile kernel's tile for head_dim fits the current
 * device's shared memory (after setup); where not, tc_cuda_attention runs
 * those prefills and syncs (nq > TC_CUDA_ATT_ROW_MAX) on the row kernel,
 * one block a query row (nq <= 65535, else cudaErrorInvalidValue): head_dim
 * 256 on sm_86 / sm_89 (99 KiB a block). */
int tc_cuda_attention_tile_fits(int head_dim);
/* the tensor-core path on (on != 0; where the device has it) or off; returns
 * whether it is on. For tests and A/B runs, between steps. */
int tc_cuda_attention_set_mma(int on);
/* whether the current device's prefill/sync attention (head_dim <= 64)
 * takes the tensor-core path now (joins the replay hash) */
int tc_cuda_attention_mma_on(void);

/* Programmatic dependent launch (pdl.cu, common.cuh tc_launch): the hit
 * step's kernels start while the one before them finishes, prefetching
 * their weights. Setup once per device at backend init (want: TC_CUDA_PDL);
 * set turns it on or off between steps (tests, A/B runs) and returns
 * whether the current device now runs it; on says whether it does. */
cudaError_t tc_cuda_pdl_setup(int want);
int tc_cuda_pdl_set(int on);
int tc_cuda_pdl_on(void);

#ifdef __cplusplus
}
#endif

#endif
