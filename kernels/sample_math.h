/* sample_math.h — the sampler's arithmetic, shared by the host sampler
 * (model/sampler.c), the CPU backends' sample op and the CUDA sample
 * kernel, so all three draw the same token bit for bit.
 *
 * The contract (model/sampler.h):
 *   - mx is the row's largest logit in tc_topk_key order (the first topk
 *     candidate);
 *   - a token's weight is w = floor(e(x) * 2^38), x = (l - mx) / T, where
 *     e is tc_draw_exp below: a fixed sequence of IEEE-754 single
 *     operations (every multiply-add an explicit fmaf), so any compiler on
 *     any device computes the same bits; w = 0 below x = -26 and for NaN;
 *   - masses are sums of weights in 64-bit integers (exact, so they do not
 *     depend on the order of the sum: a GPU may reduce in any order);
 *   - top-p keeps the shortest prefix of the candidates in topk order whose
 *     mass reaches tc_draw_need(top_p, total);
 *   - the draw takes 53 random bits r, and the token is the first, in the
 *     draw's order, at which the running mass passes tc_draw_target(r, N).
 *
 * Weights of at most 2^38 over at most 2^24 tokens (config.c's vocabulary
 * limit) sum below 2^62. */
#ifndef TC_KERNELS_SAMPLE_MATH_H
#define TC_KERNELS_SAMPLE_MATH_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define TC_HD __host__ __device__
#else
#define TC_HD
#endif

#define TC_DRAW_SCALE_LOG2 38 /* a weight of 1.0 (the row's max) is 2^38 */

/* 2^e for e in [-126, 127], exactly */
TC_HD static inline float tc_draw_pow2(int e) {
    union {
        uint32_t u;
        float f;
    } v;
    v.u = (uint32_t)(e + 127) << 23;
    return v.f;
}

/* w for the scaled logit x = (l - mx) / T (<= 0 when mx is the max):
 * exp(x) = 2^k e^r with k = rint(x log2 e), r = x - k ln2 (ln2 split in a
 * hi part of 15 bits, so k * hi is exact), e^r by a degree-7 Taylor
 * polynomial in Horner form (|r| <= 0.347: relative error < 2e-7). */
TC_HD static inline uint64_t tc_draw_weight_x(float x) {
    if (!(x >= -26.5f)) return 0; /* NaN, -inf, and weights below 1 */
    if (x > 0.f) x = 0.f;         /* only when mx is not the max (+inf / NaN rows) */
#ifdef __CUDA_ARCH__
    const float kf = rintf(__fmul_rn(x, 1.44269504f));
#else
    const float kf = rintf(x * 1.44269504f);
#endif
    float r = fmaf(-kf, 0.693145751953125f, x);
    r = fmaf(-kf, 1.42860677e-06f, r);
    float p = 1.98412698e-04f; /* 1/7! */
    p = fmaf(p, r, 1.38888889e-03f);
    p = fmaf(p, r, 8.33333333e-03f);
    p = fmaf(p, r, 4.16666667e-02f);
    p = fmaf(p, r, 1.66666667e-01f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.f);
    p = fmaf(p, r, 1.f);
#ifdef __CUDA_ARCH__ /* the products feed no add, but an edit must never let them fuse */
    const float w = __fmul_rn(p, tc_draw_pow2((int)kf + TC_DRAW_SCALE_LOG2));
#else
    const float w = p * tc_draw_pow2((int)kf + TC_DRAW_SCALE_LOG2);
#endif
    return (uint64_t)(int64_t)w; /* w in (0, 2^38]: the truncation (0 below 1) is exact in int64 */
}

/* w of logit l against the row's max mx at temperature T > 0 */
TC_HD static inline uint64_t tc_draw_weight(float l, float mx, float T) {
#ifdef __CUDA_ARCH__
    return tc_draw_weight_x(__fdiv_rn(__fsub_rn(l, mx), T));
#else
    return tc_draw_weight_x((l - mx) / T);
#endif
}

/* The mass top-p must reach out of total (>= 1): ceil(top_p * total) in
 * double, within [1, total]. */
TC_HD static inline uint64_t tc_draw_need(float top_p, uint64_t total) {
#ifdef __CUDA_ARCH__
    double m = __dmul_rn((double)top_p, __ull2double_rn(total));
#else
    double m = (double)top_p * (double)total;
#endif
    m = ceil(m);
    uint64_t need = m >= 1.0 ? (m >= 18446744073709551615.0 ? total : (uint64_t)m) : 1;
    return need < total ? need : total;
}

/* The draw's position in a mass N >= 1: floor(r N / 2^53), in [0, N)
 * (r: the top 53 bits of one xoshiro256** output; higher bits are
 * dropped, so a bad r can never point past the mass). */
TC_HD static inline uint64_t tc_draw_target(uint64_t r, uint64_t N) {
    r &= (1ull << 53) - 1;
#ifdef __CUDA_ARCH__
    const uint64_t hi = __umul64hi(r, N), lo = r * N;
    return hi << 11 | lo >> 53;
#else
    return (uint64_t)(((unsigned __int128)r * N) >> 53);
#endif
}

/* One row's draw for the backends' sample op (backend.h). */
typedef struct tc_draw {
    float temperature; /* 0: greedy (the first topk candidate) */
    float top_p;       /* (0, 1]; 1: off */
    int32_t top_k;     /* 0 or >= the vocabulary: off */
    int32_t pad_;
    uint64_t r; /* 53 random bits (unused when greedy) */
} tc_draw;

#endif
