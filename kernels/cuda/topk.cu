/* topk.cu — per row of the logits, the k largest values in backend.h's
 * order (tc_topk_key descending, ties to the lower id): what the sampler
 * draws greedy and top-k tokens from, so the [B, V] logits never leave the
 * device. The result must equal tc_topk_rows (kernels/cpu/topk.c) bit for
 * bit: only integer comparisons of the same keys, and the values copied.
 *
 * One block per row. k = 1 is an argmax: one pass, a max of 64-bit
 * composite keys (value key high, inverted id low). k > 1 is a radix
 * select: four passes of an 8-bit histogram over the 32-bit value keys
 * find tau, the k-th key, and how many of the keys equal to tau are taken;
 * one pass gathers the keys above tau (in any order) and the first of
 * those equal to tau in id order (ballot + warp prefix); a bitonic sort of
 * the k composites in shared memory puts them in order. The row (V floats)
 * is read 5 times, from L2 after the first. */
#include <stdint.h>

#include "common.cuh"
#include "kernels_cuda.h"

#define TOPK_THREADS 1024 /* = TC_TOPK_MAX: one sort slot per thread */
#define FULL 0xffffffffu
#define ARGMAX_BATCH 16

static_assert(TOPK_THREADS >= TC_TOPK_MAX, "the bitonic sort gives one slot to each thread");

__device__ __forceinline__ uint32_t key_at(const float *x, int i) { return tc_topk_key(__float_as_uint(x[i])); }
__device__ __forceinline__ unsigned long long comp(uint32_t key, int i) {
    return (unsigned long long)key << 32 | (0xffffffffu - (uint32_t)i);
}

/* The largest composite among x[i], i = start, start + stride, ... < V:
 * ARGMAX_BATCH loads in flight a thread (a row is ~50 loads a thread at
 * V = 50,257 in one block of 1024: one at a time, the pass waited on each) */
__device__ __forceinline__ unsigned long long argmax_scan(const float *xr, int V, int start, int stride) {
    unsigned long long best = 0;
    for (int i0 = start; i0 < V; i0 += ARGMAX_BATCH * stride) {
        uint32_t kk[ARGMAX_BATCH];
#pragma unroll
        for (int u = 0; u < ARGMAX_BATCH; u++) {
            const int i = i0 + u * stride;
            kk[u] = i < V ? key_at(xr, i) : 0u;
        }
#pragma unroll
        for (int u = 0; u < ARGMAX_BATCH; u++) {
            const int i = i0 + u * stride;
            const unsigned long long c = comp(kk[u], i);
            if (i < V && c > best) best = c;
        }
    }
    return best;
}
__device__ __forceinline__ unsigned long long warp_max64(unsigned long long v) {
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long t = __shfl_xor_sync(FULL, v, o);
        if (t > v) v = t;
    }
    return v;
}

__global__ __launch_bounds__(TOPK_THREADS) static void topk_kernel(int32_t *ids, float *vals, const float *x, int V,
                                                                   int k) {
    __shared__ unsigned hist[256];
    __shared__ unsigned long long cand[TC_TOPK_MAX];
    __shared__ unsigned warp_cnt[TOPK_THREADS / 32];
    __shared__ unsigned long long warp_best[TOPK_THREADS / 32];
    __shared__ unsigned s_prefix, s_want, s_ngt;
    const float *xr = x + (size_t)blockIdx.x * V;
    int32_t *ir = ids + (size_t)blockIdx.x * k;
    float *vr = vals + (size_t)blockIdx.x * k;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarp = blockDim.x >> 5;

    if (k == 1) { /* argmax: the largest composite (composites of real ids are > 0) */
        unsigned long long best = warp_max64(argmax_scan(xr, V, tid, TOPK_THREADS));
        if (lane == 0) warp_best[warp] = best;
        __syncthreads();
        if (tid == 0) {
            for (int w = 1; w < nwarp; w++)
                if (warp_best[w] > best) best = warp_best[w];
            int id = (int)(0xffffffffu - (uint32_t)best);
            ir[0] = id;
            vr[0] = xr[id];
        }
        return;
    }

    /* radix select, 8 bits a pass from the top: after pass p, `prefix`
     * holds the top 8(p+1) bits of tau and `want` is tau's rank (1 = the
     * largest) among the keys that share them. Warps iterate in lockstep
     * (i < V tested inside) so the ballots see whole warps. */
    uint32_t prefix = 0, mask = 0, want = (uint32_t)k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int j = tid; j < 256; j += blockDim.x) hist[j] = 0;
        __syncthreads();
        for (int c0 = 0; c0 < V; c0 += blockDim.x) {
            const int i = c0 + tid;
            const uint32_t kk = i < V ? key_at(xr, i) : 0;
            const bool in = i < V && (kk & mask) == prefix;
            const unsigned act = __ballot_sync(FULL, in);
            if (in) {
                /* one shared atomic per distinct bucket of the warp: logits
                 * crowd into few buckets in the top bits */
                const unsigned bucket = (kk >> shift) & 255u;
                const unsigned peers = __match_any_sync(act, bucket);
                if (lane == __ffs(peers) - 1) atomicAdd(&hist[bucket], (unsigned)__popc(peers));
            }
        }
        __syncthreads();
        if (tid == 0) {
            uint32_t w = want;
            int d = 255;
            for (; d > 0 && w > hist[d]; d--) w -= hist[d];
            s_prefix = prefix | (uint32_t)d << shift;
            s_want = w;
        }
        __syncthreads();
        prefix = s_prefix, want = s_want, mask |= 255u << shift;
    }
    /* tau = prefix; the k - want keys above it and the `want` lowest ids
     * of those equal to it are the answer */
    const uint32_t tau = prefix, n_eq = want, n_gt = (uint32_t)k - want;
    if (tid == 0) s_ngt = 0;
    __syncthreads();
    uint32_t seen = 0; /* keys equal to tau in the chunks before (same in every thread) */
    for (int c0 = 0; c0 < V; c0 += blockDim.x) {
        const int i = c0 + tid;
        const uint32_t kk = i < V ? key_at(xr, i) : 0;
        const bool gt = i < V && kk > tau, eq = i < V && kk == tau;
        if (gt) cand[atomicAdd(&s_ngt, 1u)] = comp(kk, i);
        const unsigned bal = __ballot_sync(FULL, eq);
        if (lane == 0) warp_cnt[warp] = (unsigned)__popc(bal);
        __syncthreads();
        uint32_t before = 0, total = 0;
        for (int w = 0; w < nwarp; w++) {
            if (w < warp) before += warp_cnt[w];
            total += warp_cnt[w];
        }
        const uint32_t r = seen + before + (uint32_t)__popc(bal & ((1u << lane) - 1u));
        if (eq && r < n_eq) cand[n_gt + r] = comp(kk, i);
        seen += total;
        __syncthreads(); /* warp_cnt is rewritten next chunk */
    }
    /* bitonic sort, descending, of the k composites padded with 0 (below
     * every real composite) to a power of two P <= TOPK_THREADS */
    int P = 1;
    while (P < k) P <<= 1;
    if (tid >= k && tid < P) cand[tid] = 0;
    __syncthreads();
    for (int size = 2; size <= P; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            const int t = tid, u = t ^ stride;
            if (t < P && u > t) {
                const unsigned long long a = cand[t], b = cand[u];
                const bool desc = (t & size) == 0;
                if (desc ? a < b : a > b) cand[t] = b, cand[u] = a;
            }
            __syncthreads();
        }
    for (int j = tid; j < k; j += blockDim.x) {
        const int id = (int)(0xffffffffu - (uint32_t)cand[j]);
        ir[j] = id;
        vr[j] = xr[id];
    }
}

/* k = 1 over several blocks a row (grid (G, n)): a hit step at batch 1
 * had one block reading the 50,257 logits. Each block's largest composite
 * goes to part[row][block]; the row's last block to finish (a counter,
 * after a fence: the CUDA samples' threadfence reduction) takes the max of
 * the G and writes the id and value, and resets the counter for the next
 * launch. The same composites and the same max as the one-block pass. */
#define AM_THREADS 256
__global__ __launch_bounds__(AM_THREADS) static void argmax_kernel(int32_t *ids, float *vals, const float *x, int V,
                                                                   unsigned long long *part, unsigned *count) {
    __shared__ unsigned long long wb[AM_THREADS / 32];
    __shared__ int last;
    const int row = blockIdx.y, G = gridDim.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float *xr = x + (size_t)row * V;
    const int stride = G * AM_THREADS;
    tc_pdl_wait(); /* launched with tc_launch: the previous kernel's logits */
    tc_pdl_trigger();
    unsigned long long best = warp_max64(argmax_scan(xr, V, blockIdx.x * AM_THREADS + tid, stride));
    if (lane == 0) wb[warp] = best;
    __syncthreads();
    if (tid == 0) {
        for (int w = 1; w < AM_THREADS / 32; w++)
            if (wb[w] > best) best = wb[w];
        part[(size_t)row * G + blockIdx.x] = best;
        __threadfence(); /* the partial is visible before the count says so */
        last = atomicAdd(&count[row], 1u) == (unsigned)G - 1;
    }
    __syncthreads();
    if (!last || tid >= 32) return;
    __threadfence();
    unsigned long long b = 0;
    for (int g = lane; g < G; g += 32) {
        const unsigned long long v = ((volatile unsigned long long *)part)[(size_t)row * G + g];
        if (v > b) b = v;
    }
    b = warp_max64(b);
    if (lane == 0) {
        const int id = (int)(0xffffffffu - (uint32_t)b);
        ids[row] = id;
        vals[row] = xr[id];
        count[row] = 0;
    }
}

extern "C" cudaError_t tc_cuda_topk(cudaStream_t st, int32_t *ids, float *vals, const float *x, int n, int V, int k,
                                    unsigned long long *am_part, unsigned *am_count, int sms) {
    if (n <= 0) return cudaSuccess;
    if (k < 1 || k > V || k > TC_TOPK_MAX) return cudaErrorInvalidValue;
    if (k == 1 && am_part && am_count && n <= TC_CUDA_ARGMAX_ROWS) {
        int G = 2 * (sms > 0 ? sms : 132) / n; /* about two blocks an SM (132 SMs: an H100 / H200) */
        if (G > TC_CUDA_ARGMAX_SPLIT) G = TC_CUDA_ARGMAX_SPLIT;
        if (G < 1) G = 1;
        return tc_launch(argmax_kernel, dim3((unsigned)G, (unsigned)n), dim3(AM_THREADS), 0, st, ids, vals, x, V, am_part,
                         am_count);
    }
    topk_kernel<<<(unsigned)n, TOPK_THREADS, 0, st>>>(ids, vals, x, V, k);
    return cudaGetLastError();
}
