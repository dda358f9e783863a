/* sample.cu — backend.h's sample op: per row of the logits, the token the
 * host sampler draws (model/sampler.h), drawn where the logits are, so a
 * step downloads B ids instead of [B, V] floats. It must equal
 * tc_sample_rows (kernels/cpu/sample.c) bit for bit; it runs the same
 * algorithm, in parallel:
 *
 *   - one block a row; each token's 64-bit composite (tc_topk_key of the
 *     value high, the inverted id low) and weight (sample_math.h: a fixed
 *     sequence of IEEE single operations, so the device computes the
 *     host's bits) are recomputed from the row wherever needed;
 *   - masses are 64-bit integer sums: the block adds in any order and gets
 *     the host's numbers;
 *   - "the first candidate in topk order at which the running mass
 *     reaches m" (the top-k cut, the top-p cut, the draw) is a radix walk
 *     from the composite's top byte: a 256-bucket histogram of the masses
 *     by the next byte among the tokens matching the bytes so far, then
 *     warp 0 finds the byte where the mass from the top reaches m. Eight
 *     passes a walk; each thread adds runs of one bucket before its atomic
 *     (the top bytes of a row's keys are mostly equal), into two 32-bit
 *     words a bucket; once the tokens in play fit a shared-memory list,
 *     the later passes read the list, not the row (walk kinds below);
 *   - plain temperature draws in id order: the warps' segment masses
 *     scanned in order, then the one warp whose segment holds the draw
 *     walks it with warp scans.
 *
 * A launch takes up to SAMPLE_CAP rows' draws in its parameters, or (a
 * replayed graph) every row's from device memory. */
#include <stdint.h>
#include <string.h>

#include "../sample_math.h"
#include "common.cuh"
#include "kernels_cuda.h"

#define SAMPLE_THREADS 1024
#define SAMPLE_CAP 32
#define FULL 0xffffffffu

struct sample_batch {
    tc_draw d[SAMPLE_CAP];
};

/* one row's state, shared by the block */
struct row_ctx {
    const float *x;
    int V;
    float mx, T;
    unsigned long long lo; /* candidates: composites >= lo */
};

__device__ __forceinline__ unsigned long long comp_at(const float *x, int i) {
    return (unsigned long long)tc_topk_key(__float_as_uint(x[i])) << 32 | (0xffffffffu - (uint32_t)i);
}
__device__ __forceinline__ int comp_id(unsigned long long c) { return (int)(0xffffffffu - (uint32_t)c); }

/* weight of token i (0 below the candidates' cut) */
__device__ __forceinline__ unsigned long long weight_at(const row_ctx &r, int i, unsigned long long c) {
    return c >= r.lo ? tc_draw_weight(r.x[i], r.mx, r.T) : 0ull;
}

/* block-wide max / sum of 64-bit integers; every thread gets the result.
 * red: SAMPLE_THREADS / 32 words of shared memory */
__device__ unsigned long long block_max(unsigned long long v, unsigned long long *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long t = __shfl_xor_sync(FULL, v, o);
        if (t > v) v = t;
    }
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = red[0];
    for (int i = 1; i < (int)(blockDim.x >> 5); i++)
        if (red[i] > v) v = red[i];
    return v;
}
__device__ unsigned long long block_sum(unsigned long long v, unsigned long long *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) v += red[i];
    return v;
}

/* Which walk (TC_CUDA_SAMPLE_KERNEL, tc_cuda_sample_set_kernel): 0 the
 * first one (64-bit shared atomics; every pass reads the whole row), 1 the
 * histogram as two 32-bit words a bucket (32-bit shared atomics are one
 * instruction; 64-bit ones a compare-and-swap loop that 1024 threads on a
 * few buckets serialize), 2 as 1 and, once the tokens in play fit
 * SAMPLE_LIST, a list of them in shared memory that the later passes read
 * instead of the row. Same tokens in all three (integer sums). */
static int g_sample_kernel = 2;

#define SAMPLE_LIST 4096

/* 64-bit w into a bucket of 32-bit halves: lo wraps into hi exactly */
__device__ __forceinline__ void hist_add(unsigned *lo, unsigned *hi, int b, unsigned long long w) {
    const unsigned wl = (unsigned)w;
    const unsigned old = atomicAdd(&lo[b], wl);
    const unsigned h = (unsigned)(w >> 32) + (old + wl < old ? 1u : 0u);
    if (h) atomicAdd(&hi[b], h);
}

/* The composite c* among the candidates with W(> c*) < m <= W(>= c*)
 * (weighted: the tokens' weights; else 1 a token); *above = W(> c*).
 * kernels/cpu/sample.c's walk: the same answer (its digits may differ;
 * the composite is the same). */
template <int KIND>
__device__ unsigned long long walk(const row_ctx &r, int weighted, unsigned long long m, unsigned long long *above) {
    __shared__ unsigned long long hist[256];
    __shared__ unsigned hlo[256], hhi[256];
    __shared__ int list[KIND == 2 ? 2 : 1][KIND == 2 ? SAMPLE_LIST : 1];
    __shared__ unsigned long long s_prefix, s_acc;
    __shared__ int s_n, s_cnt; /* tokens in list[cur] (-1: the row is read); the compaction's count */
    const int tid = threadIdx.x, lane = tid & 31;
    int cur = 0;
    __syncthreads(); /* every thread has read the last walk's result */
    if (tid == 0) s_prefix = 0, s_acc = 0, s_n = -1;
    for (int shift = 56; shift >= 0; shift -= 8) {
        __syncthreads(); /* s_prefix / s_acc / s_n from the last pass; hist free */
        if (tid < 256) {
            if (KIND == 0) hist[tid] = 0;
            else hlo[tid] = 0, hhi[tid] = 0;
        }
        __syncthreads();
        const unsigned long long prefix = s_prefix, hi = shift == 56 ? 0ull : ~0ull << (shift + 8);
        const int n_in = KIND == 2 ? s_n : -1, end = n_in < 0 ? r.V : n_in;
        int run_b = -1;
        unsigned long long run = 0;
        for (int j = tid; j < end; j += blockDim.x) {
            const int i = n_in < 0 ? j : list[cur][j];
            const unsigned long long c = comp_at(r.x, i);
            if (c < r.lo || (c & hi) != prefix) continue;
            const unsigned long long w = weighted ? weight_at(r, i, c) : 1ull;
            if (!w) continue;
            const int b = (int)(c >> shift & 255);
            if (b != run_b) {
                if (run) {
                    if (KIND == 0) atomicAdd(&hist[run_b], run);
                    else hist_add(hlo, hhi, run_b, run);
                }
                run_b = b, run = 0;
            }
            run += w;
        }
        if (run) {
            if (KIND == 0) atomicAdd(&hist[run_b], run);
            else hist_add(hlo, hhi, run_b, run);
        }
        __syncthreads();
        if (KIND != 0 && tid < 256) hist[tid] = (unsigned long long)hhi[tid] << 32 | hlo[tid];
        if (KIND != 0) __syncthreads();
        if (tid < 32) { /* lane L holds buckets 255 - 8L down to 248 - 8L */
            const int top = 255 - 8 * lane;
            unsigned long long mine = 0;
            for (int j = 0; j < 8; j++) mine += hist[top - j];
            unsigned long long inc = mine;
            for (int o = 1; o < 32; o <<= 1) {
                const unsigned long long t = __shfl_up_sync(FULL, inc, o);
                if (lane >= o) inc += t;
            }
            const unsigned long long acc = s_acc;
            const unsigned hit = __ballot_sync(FULL, acc + inc >= m);
            __syncwarp(); /* every lane has read s_acc before lane f writes it (racecheck: a ballot orders no memory) */
            const int f = hit ? __ffs((int)hit) - 1 : 31; /* none: bucket 0, as the host's walk ends */
            if (lane == f) {
                unsigned long long a = acc + inc - mine;
                int b = top;
                for (;; b--) {
                    if (b == 0 || a + hist[b] >= m) break;
                    a += hist[b];
                }
                s_prefix = prefix | (unsigned long long)b << shift;
                s_acc = a;
            }
        }
        if (KIND == 2 && shift > 0 && shift < 56) {
            /* the tokens left in play into the other list, while they fit
             * (after the top byte most of a row is still in play) */
            if (tid == 0) s_cnt = 0;
            __syncthreads();
            const unsigned long long np = s_prefix, nhi = ~0ull << shift;
            for (int j0 = 0; j0 < end; j0 += blockDim.x) { /* whole warps: ballots */
                const int j = j0 + tid;
                int i = -1, keep = 0;
                if (j < end) {
                    i = n_in < 0 ? j : list[cur][j];
                    const unsigned long long c = comp_at(r.x, i);
                    keep = c >= r.lo && (c & nhi) == np && (!weighted || weight_at(r, i, c));
                }
                const unsigned bal = __ballot_sync(FULL, keep);
                int base = 0;
                if (lane == 0 && bal) base = atomicAdd(&s_cnt, __popc(bal));
                base = __shfl_sync(FULL, base, 0);
                const int at = base + __popc(bal & ((1u << lane) - 1));
                if (keep && at < SAMPLE_LIST) list[cur ^ 1][at] = i;
            }
            __syncthreads();
            if (tid == 0) s_n = s_cnt <= SAMPLE_LIST ? s_cnt : n_in;
            __syncthreads();
            if (s_cnt <= SAMPLE_LIST) cur ^= 1;
        }
    }
    __syncthreads();
    *above = s_acc;
    return s_prefix;
}

/* plain temperature: the first id at which the running mass in id order
 * passes t (< the row's total). Warp w owns a contiguous segment of the
 * ids, read 32 consecutive at a time (coalesced); the warps' masses are
 * scanned in order, and the warp whose segment holds t walks it again
 * with a warp scan a step, the first lane past t giving the token. */
__device__ int draw_by_id(const row_ctx &r, unsigned long long t, unsigned long long *red) {
    __shared__ int s_tok;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, nw = (int)(blockDim.x >> 5);
    const int seg = (r.V + nw - 1) / nw;
    const int i0 = min(r.V, w * seg), i1 = min(r.V, i0 + seg);
    unsigned long long mine = 0;
    for (int i = i0 + lane; i < i1; i += 32) mine += weight_at(r, i, comp_at(r.x, i));
    for (int o = 16; o > 0; o >>= 1) mine += __shfl_xor_sync(FULL, mine, o); /* the warp's mass, every lane */
    if (tid == 0) s_tok = r.V - 1;
    __syncthreads();
    if (lane == 0) red[w] = mine;
    __syncthreads();
    unsigned long long acc = 0;
    for (int i = 0; i < w; i++) acc += red[i];
    if (mine && acc <= t && t < acc + mine) { /* uniform in the warp */
        for (int base = i0; base < i1; base += 32) {
            const int i = base + lane;
            unsigned long long inc = i < i1 ? weight_at(r, i, comp_at(r.x, i)) : 0ull;
            for (int o = 1; o < 32; o <<= 1) {
                const unsigned long long v = __shfl_up_sync(FULL, inc, o);
                if (lane >= o) inc += v;
            }
            const unsigned hit = __ballot_sync(FULL, acc + inc > t);
            if (hit) {
                if (lane == __ffs((int)hit) - 1) s_tok = i;
                break;
            }
            acc += __shfl_sync(FULL, inc, 31);
        }
    }
    __syncthreads();
    return s_tok;
}

template <int KIND>
__global__ __launch_bounds__(SAMPLE_THREADS) static void sample_kernel(int32_t *tokens, const float *x, int V,
                                                                       const sample_batch p, const tc_draw *dev,
                                                                       int row0) {
    __shared__ unsigned long long red[SAMPLE_THREADS / 32];
    const int row = row0 + (int)blockIdx.x;
    const tc_draw d = dev ? dev[row] : p.d[blockIdx.x];
    row_ctx r;
    r.x = x + (size_t)row * V, r.V = V, r.T = d.temperature, r.lo = 0;
    unsigned long long top = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const unsigned long long c = comp_at(r.x, i);
        if (c > top) top = c;
    }
    top = block_max(top, red);
    int tok = comp_id(top);
    if (d.temperature != 0.f) {
        r.mx = r.x[tok];
        unsigned long long above;
        const int topk = d.top_k > 0 && d.top_k < V;
        if (topk) r.lo = walk<KIND>(r, 0, (unsigned long long)d.top_k, &above); /* the k-th composite */
        unsigned long long part = 0;
        for (int i = threadIdx.x; i < V; i += blockDim.x) part += weight_at(r, i, comp_at(r.x, i));
        const unsigned long long total = block_sum(part, red);
        if (total && !topk && d.top_p >= 1.f) {
            tok = draw_by_id(r, tc_draw_target(d.r, total), red);
        } else if (total) {
            unsigned long long N = total;
            if (d.top_p < 1.f) { /* the nucleus: down to the candidate where the mass reaches need */
                const unsigned long long cut = walk<KIND>(r, 1, tc_draw_need(d.top_p, total), &above);
                const int ci = comp_id(cut);
                N = above + weight_at(r, ci, cut);
            }
            tok = comp_id(walk<KIND>(r, 1, tc_draw_target(d.r, N) + 1, &above));
        }
    }
    if (threadIdx.x == 0) tokens[row] = tok;
}

static void launch(int kind, unsigned rows, cudaStream_t st, int32_t *tokens, const float *x, int V,
                   const sample_batch &p, const tc_draw *dev, int row0) {
    if (kind == 0) sample_kernel<0><<<rows, SAMPLE_THREADS, 0, st>>>(tokens, x, V, p, dev, row0);
    else if (kind == 1) sample_kernel<1><<<rows, SAMPLE_THREADS, 0, st>>>(tokens, x, V, p, dev, row0);
    else sample_kernel<2><<<rows, SAMPLE_THREADS, 0, st>>>(tokens, x, V, p, dev, row0);
}

extern "C" int tc_cuda_sample_set_kernel(int kind) {
    if (kind < 0 || kind > 2) return -1;
    g_sample_kernel = kind;
    return kind;
}

extern "C" cudaError_t tc_cuda_sample(cudaStream_t st, int32_t *tokens, const float *x, int n, int V,
                                      const tc_draw *draws, const tc_draw *dev) {
    if (n <= 0) return cudaSuccess;
    if (V < 1) return cudaErrorInvalidValue;
    const int kind = g_sample_kernel;
    sample_batch p;
    if (dev) { /* a replayed graph: every row's draw from device memory */
        memset(&p, 0, sizeof p);
        launch(kind, (unsigned)n, st, tokens, x, V, p, dev, 0);
        return cudaGetLastError();
    }
    for (int r0 = 0; r0 < n; r0 += SAMPLE_CAP) {
        const int cnt = n - r0 < SAMPLE_CAP ? n - r0 : SAMPLE_CAP;
        memset(&p, 0, sizeof p);
        memcpy(p.d, draws + r0, (size_t)cnt * sizeof *draws);
        launch(kind, (unsigned)cnt, st, tokens, x, V, p, NULL, r0);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}
