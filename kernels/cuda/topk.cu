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

static_assert(TOPK_THREADS >= TC_TOPK_MAX, "the bitonic sort gives one slot to each thread");

__device__ __forceinline__ uint32_t key_at(const float *x, int i) { return tc_topk_key(__float_as_uint(x[i])); }
__device__ __forceinline__ unsigned long long comp(uint32_t key, int i) {
    return (unsigned long long)key << 32 | (0xffffffffu - (uint32_t)i);
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
        unsigned long long best = 0;
        for (int i = tid; i < V; i += blockDim.x) {
            unsigned long long c = comp(key_at(xr, i), i);
            if (c > best) best = c;
        }
        for (int o = 16; o > 0; o >>= 1) {
            unsigned long long b = __shfl_xor_sync(FULL, best, o);
            if (b > best) best = b;
        }
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

extern "C" cudaError_t tc_cuda_topk(cudaStream_t st, int32_t *ids, float *vals, const float *x, int n, int V,
                                    int k) {
    if (n <= 0) return cudaSuccess;
    if (k < 1 || k > V || k > TC_TOPK_MAX) return cudaErrorInvalidValue;
    topk_kernel<<<(unsigned)n, TOPK_THREADS, 0, st>>>(ids, vals, x, V, k);
    return cudaGetLastError();
}
