/* rope.cu — in-place interleaved RoPE: (x[2j], x[2j+1]) of every head of
 * row i rotated by (float)(pos0 + i) * theta_j. theta_j is computed as
 * tc_rope_theta does ((float)pow(base, -2j/hd) in double) once per block
 * into shared memory, and the rotation uses explicit round-to-nearest
 * products so nvcc cannot contract it into FMAs: the result then matches
 * the CPU backend up to the last-ulp differences of sinf/cosf. */
#include "common.cuh"
#include "kernels_cuda.h"

__device__ __forceinline__ void theta_fill(float *theta, int head_dim, float base) {
    for (int j = threadIdx.x; j < head_dim / 2; j += blockDim.x) theta[j] = tc_rope_theta(j, head_dim, base);
    __syncthreads();
}

/* rotates the pair at pr (common.cuh's formula, shared with linear.cu's
 * fused QKV rotation) */
__device__ __forceinline__ void rotate(float *pr, int64_t pos, float theta) {
    float x0 = pr[0], x1 = pr[1];
    tc_rope_rot(x0, x1, pos, theta);
    pr[0] = x0, pr[1] = x1;
}

// x [n, n_head*head_dim] (ld); theta: head_dim/2 floats of dynamic smem
__global__ static void rope_kernel(float *x, int ld, int n, int n_head, int head_dim, int64_t pos0, float base) {
    extern __shared__ float theta[];
    theta_fill(theta, head_dim, base);
    const int half = head_dim / 2;
    const size_t per_row = (size_t)n_head * half, total = (size_t)n * per_row;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / per_row, r = t % per_row;
        int h = (int)(r / half), j = (int)(r % half);
        rotate(x + i * ld + (size_t)h * head_dim + 2 * j, pos0 + (int64_t)i, theta[j]);
    }
}

/* The window pass's per-session work, blockIdx.y = item: Q|K pairs of each
 * row rotated in place (as rope_kernel with 2*n_head heads), the rotated K
 * pair also stored to k_dst, and V copied to v_dst. */
template <int CAP> struct rope_kv_batch {
    tc_rope_kv_item it[CAP]; /* as attention.cu's batches: a small struct unless the batch needs the large */
};

template <int CAP>
__global__ static void rope_kv_kernel(const __grid_constant__ rope_kv_batch<CAP> b, const tc_rope_kv_item *dit, int ldq,
                                      int n_head, int head_dim, float base) {
    extern __shared__ float theta[];
    theta_fill(theta, head_dim, base);
    tc_pdl_wait(); /* launched with tc_launch: nothing above reads device memory */
    tc_pdl_trigger();
    /* the items: in the parameters, or (dit: a replayed graph) in device memory */
    const tc_rope_kv_item it = dit ? dit[blockIdx.y] : b.it[blockIdx.y];
    const int half = head_dim / 2, d = n_head * head_dim;
    /* d units a row: Q|K has d pairs (Q's first), V has d columns */
    const size_t total = it.n > 0 ? (size_t)it.n * d : 0; /* n <= 0: nothing, as on the CPU */
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        const size_t i = t / d;
        const int p = (int)(t % d), j = p % half;
        float *row = it.qkv + i * ldq;
        /* pair p of Q|K (h = p / half of 2*n_head heads) is columns 2p, 2p+1 */
        rotate(row + 2 * p, it.pos0 + (int64_t)i, theta[j]);
        if (2 * p >= d) { /* a K pair: into the window as well */
            it.k_dst[i * d + 2 * p - d] = row[2 * p];
            it.k_dst[i * d + 2 * p - d + 1] = row[2 * p + 1];
        }
        it.v_dst[i * d + p] = row[2 * d + p]; /* and V column p */
    }
}

extern "C" cudaError_t tc_cuda_rope(cudaStream_t st, float *x, int ld, int n, int n_head, int head_dim,
                                    int64_t pos0, float base) {
    if (n <= 0 || n_head <= 0 || head_dim < 2) return cudaSuccess;
    const unsigned th = 256;
    size_t smem = (size_t)(head_dim / 2) * sizeof(float); /* head_dim <= 24576 fits 48 KiB */
    rope_kernel<<<tc_cuda_blocks((size_t)n * n_head * (head_dim / 2), th), th, smem, st>>>(x, ld, n, n_head,
                                                                                          head_dim, pos0, base);
    return cudaGetLastError();
}

template <int CAP>
static cudaError_t rope_kv_launch(cudaStream_t st, const tc_rope_kv_item *it, int n, int ldq, int n_head,
                                  int head_dim, float base, const tc_rope_kv_item *dev_it) {
    rope_kv_batch<CAP> b;
    size_t most = 0;
    for (int i = 0; i < n; i++) {
        b.it[i] = it[i];
        if (it[i].n > 0 && (size_t)it[i].n > most) most = (size_t)it[i].n;
    }
    const unsigned th = 256;
    const int d = n_head * head_dim;
    unsigned gx = tc_cuda_blocks(most * d, th);
    if (gx > 1024) gx = 1024; /* grid-stride: y already multiplies by the items */
    size_t smem = (size_t)(head_dim / 2) * sizeof(float);
    return tc_launch(rope_kv_kernel<CAP>, dim3(gx, (unsigned)n), dim3(th), smem, st, b, dev_it, ldq, n_head, head_dim,
                     base);
}

extern "C" cudaError_t tc_cuda_rope_kv(cudaStream_t st, const tc_rope_kv_item *it, int n, int ldq, int n_head,
                                       int head_dim, float base, const tc_rope_kv_item *dev_it) {
    if (n <= 0 || n_head <= 0 || head_dim <= 0) return cudaSuccess;
    /* the kernel walks the pairs of the whole Q|K row, which are each head's
     * pairs only for an even head_dim (as tc_cuda_qkv_rope requires; the
     * model's config does too) */
    if (head_dim % 2 || n > TC_CUDA_ROPE_BATCH) return cudaErrorInvalidValue;
    if (n > TC_CUDA_BATCH_SMALL) return rope_kv_launch<TC_CUDA_ROPE_BATCH>(st, it, n, ldq, n_head, head_dim, base, dev_it);
    return rope_kv_launch<TC_CUDA_BATCH_SMALL>(st, it, n, ldq, n_head, head_dim, base, dev_it);
}
