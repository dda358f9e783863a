/* sample.c — the host sample op of backend.h: per row of logits, the token
 * the sampler (model/sampler.h) would draw with the row's tc_draw, found
 * the way the CUDA kernel (kernels/cuda/sample.cu) finds it, so the two
 * share one tested algorithm:
 *
 *   - candidates and orders on one 64-bit composite per token (the value's
 *     tc_topk_key high, the inverted id low: unique, larger = earlier);
 *   - "the first candidate, in topk order, at which the running mass
 *     reaches m" is a radix walk over the composite from its top bits:
 *     a histogram of the masses by the next digit among the tokens that
 *     match the digits chosen so far, then the digit at which the mass
 *     from the top reaches m. Every sum is an integer, so a GPU may add in
 *     any order, and take other digits (the kernel takes bytes), and land
 *     on the same token;
 *   - top-k is the same walk with a weight of 1 a token;
 *   - plain temperature walks the ids in order (a prefix sum).
 *
 * On the host each pass keeps only the tokens still in play, so a walk is
 * O(V) (a sort was O(V log V)), and the host sampler draws every full row
 * through tc_sample_row too. Paper vocabulary (50,257), one core, per row,
 * before (session 17's expf and sort) / after: uniform logits in [-6, 6]
 * at T 0.8: top-p 0.95 4.3-4.6 / 0.96 ms, top-k 40 + top-p 7.8-8.5 / 0.62
 * ms, plain T 1.0 0.30-0.35 / 0.25 ms; in [-30, 30]: 2.7 / 0.67, 9.3 /
 * 0.41, 0.42 / 0.17 ms. The weights go 8 lanes at a time (AVX2 + FMA, the
 * same IEEE operations), the key and the compaction without branches.
 * Session 21 (a 12-bit first digit, no candidate list copied when every
 * token is one; another machine, before / after, side by side): top-p
 * 0.95 0.58-0.61 / 0.42-0.44 ms, top-k 40 + top-p 0.33-0.35 / 0.24-0.25
 * ms, plain T 1.0 0.14 / 0.11 ms. */
#include <stdlib.h>
#include <string.h>

#include "../../common/status.h"
#include "../backend.h"

/* sample_math.h's fmaf are exact on every path, but without the FMA
 * instruction each is a libm call (the Debian x86-64 baseline has none):
 * 5x slower per row. A clone for CPUs with FMA, picked at load time; both
 * give the same bits (fma is exactly rounded either way). */
#if defined(__x86_64__) && defined(__has_attribute) && !defined(__SANITIZE_THREAD__) /* ifuncs run before TSan starts */
#if __has_attribute(target_clones)
#define TC_FMA_CLONES __attribute__((target_clones("fma", "default")))
#endif
#endif
#ifndef TC_FMA_CLONES
#define TC_FMA_CLONES
#endif

TC_FMA_CLONES static void weights_scalar(uint64_t *w, const float *x, int n, float mx, float T) {
    for (int i = 0; i < n; i++) w[i] = tc_draw_weight(x[i], mx, T);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* tc_draw_weight_x eight at a time: the same IEEE operations lane by lane
 * (sub, div, mul, round to nearest even, fnmadd = fma(-a, b, c) exactly,
 * fmadd), the float -> integer step per lane as the scalar does it. */
__attribute__((target("avx2,fma"))) static void weights_avx2(uint64_t *w, const float *x, int n, float mx, float T) {
    const __m256 vmx = _mm256_set1_ps(mx), vT = _mm256_set1_ps(T), lim = _mm256_set1_ps(-26.5f);
    const __m256 zero = _mm256_setzero_ps(), l2e = _mm256_set1_ps(1.44269504f);
    const __m256 hi = _mm256_set1_ps(0.693145751953125f), lo = _mm256_set1_ps(1.42860677e-06f);
    const __m256 c7 = _mm256_set1_ps(1.98412698e-04f), c6 = _mm256_set1_ps(1.38888889e-03f);
    const __m256 c5 = _mm256_set1_ps(8.33333333e-03f), c4 = _mm256_set1_ps(4.16666667e-02f);
    const __m256 c3 = _mm256_set1_ps(1.66666667e-01f), c2 = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f);
    const __m256i bias = _mm256_set1_epi32(127 + TC_DRAW_SCALE_LOG2);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx), vT);
        const __m256 ok = _mm256_cmp_ps(v, lim, _CMP_GE_OQ); /* NaN, -inf, below -26.5: weight 0 */
        v = _mm256_blendv_ps(v, zero, _mm256_cmp_ps(v, zero, _CMP_GT_OQ));
        const __m256 kf = _mm256_round_ps(_mm256_mul_ps(v, l2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fnmadd_ps(kf, hi, v);
        r = _mm256_fnmadd_ps(kf, lo, r);
        __m256 p = _mm256_fmadd_ps(c7, r, c6);
        p = _mm256_fmadd_ps(p, r, c5);
        p = _mm256_fmadd_ps(p, r, c4);
        p = _mm256_fmadd_ps(p, r, c3);
        p = _mm256_fmadd_ps(p, r, c2);
        p = _mm256_fmadd_ps(p, r, one);
        p = _mm256_fmadd_ps(p, r, one);
        /* kf in [-38, 0] where ok: 2^(kf + 38) by its exponent bits */
        const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(kf), bias), 23);
        const __m256 wf = _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), ok);
        float f[8];
        _mm256_storeu_ps(f, wf);
        for (int k = 0; k < 8; k++) w[i + k] = (uint64_t)(int64_t)f[k]; /* in [0, 2^38]: [0, 1) truncates to 0 */
    }
    for (; i < n; i++) w[i] = tc_draw_weight(x[i], mx, T);
}
#endif

void tc_draw_weights(uint64_t *w, const float *x, int n, float mx, float T) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        weights_avx2(w, x, n, mx, T);
        return;
    }
#endif
    weights_scalar(w, x, n, mx, T);
}

static uint64_t comp_at(const float *x, int i) {
    uint32_t b;
    memcpy(&b, &x[i], 4);
    return (uint64_t)tc_topk_key(b) << 32 | (uint32_t)(0xffffffffu - (uint32_t)i);
}
static int32_t comp_id(uint64_t c) { return (int32_t)(0xffffffffu - (uint32_t)c); }

/* The composite c* among the candidates src[0..n) (NULL: the tokens 0 ..
 * n-1) with W(> c*) < m <= W(>= c*), W the mass of w (NULL: 1 a token)
 * over them; 1 <= m <= W of all. *above = W(> c*). Each pass keeps in idx
 * (room for n) only the tokens matching the bits chosen so far, so after
 * the first pass it reads a handful: O(V) a walk, where a sort is
 * O(V log V). The CUDA kernel finds the same composite. */
static uint64_t walk(const float *x, const uint64_t *w, const int32_t *src, int32_t *idx, int n, uint64_t m,
                     uint64_t *above) {
    /* digits from the top: 12 bits first (sign, exponent and 3 mantissa
     * bits of the value: one pass over a row leaves ~1/100 of it in play,
     * where a byte left most of it for a second pass), then bytes; 25%
     * less time a top-p row (paper vocabulary, uniform logits) */
    static const int width[] = {12, 8, 8, 8, 8, 8, 8, 4};
    static const uint64_t zero[1 << 12];
    uint64_t hist[1 << 12], prefix = 0, acc = 0;
    int shift = 64;
    for (int p = 0; p < (int)(sizeof width / sizeof width[0]); p++) {
        const int nb = 1 << width[p];
        const uint64_t mask = (uint64_t)nb - 1;
        const int32_t *in = p ? idx : src; /* NULL: the identity (no list to read or copy) */
        shift -= width[p];
        memcpy(hist, zero, (size_t)nb * sizeof *hist);
#define TOK(j) (in ? in[j] : (j))
        if (w)
            for (int j = 0; j < n; j++) hist[comp_at(x, TOK(j)) >> shift & mask] += w[TOK(j)];
        else
            for (int j = 0; j < n; j++) hist[comp_at(x, TOK(j)) >> shift & mask]++;
        int b = nb - 1;
        for (; b > 0 && acc + hist[b] < m; b--) acc += hist[b];
        prefix |= (uint64_t)b << shift;
        int k = 0;
        for (int j = 0; j < n; j++) { /* branch-free: which tokens match is a coin toss per token */
            const int32_t t = TOK(j);
            idx[k] = t;
            k += (comp_at(x, t) >> shift & mask) == (uint64_t)b;
        }
#undef TOK
        n = k;
    }
    *above = acc;
    return prefix;
}

size_t tc_sample_scratch_bytes(int V) { return (size_t)V * (sizeof(uint64_t) + 2 * sizeof(int32_t)); }

int32_t tc_sample_row(const float *x, int V, const tc_draw *d, void *scratch) {
    uint64_t *w = scratch;
    int32_t *cand = (int32_t *)(w + V), *tmp = cand + V;
    uint64_t top = 0;
    for (int i = 0; i < V; i++) {
        const uint64_t c = comp_at(x, i);
        if (c > top) top = c;
    }
    if (d->temperature == 0.f) return comp_id(top);
    const float mx = x[comp_id(top)];
    const int topk = d->top_k > 0 && d->top_k < V;
    uint64_t above, total = 0;
    int nc = V;
    const int32_t *cands = NULL; /* NULL: every token */
    if (topk) { /* the candidates: the composites down to the k-th */
        const uint64_t lo = walk(x, NULL, NULL, tmp, V, (uint64_t)d->top_k, &above);
        nc = 0;
        for (int i = 0; i < V; i++)
            if (comp_at(x, i) >= lo) cand[nc++] = i;
        for (int j = 0; j < nc; j++) total += w[cand[j]] = tc_draw_weight(x[cand[j]], mx, d->temperature);
        cands = cand;
    } else {
        tc_draw_weights(w, x, V, mx, d->temperature);
        for (int i = 0; i < V; i++) total += w[i];
    }
    if (!total) return comp_id(top);
    if (!topk && d->top_p >= 1.f) { /* plain temperature: ids in order */
        const uint64_t t = tc_draw_target(d->r, total);
        uint64_t acc = 0;
        for (int i = 0; i < V; i++)
            if ((acc += w[i]) > t) return i;
        return V - 1; /* not reached: t < total */
    }
    uint64_t N = total;
    if (d->top_p < 1.f) { /* the nucleus: the candidates down to the one where the mass reaches need */
        const uint64_t cut = walk(x, w, cands, tmp, nc, tc_draw_need(d->top_p, total), &above);
        N = above + w[comp_id(cut)];
    }
    return comp_id(walk(x, w, cands, tmp, nc, tc_draw_target(d->r, N) + 1, &above));
}

tc_status tc_sample_rows(int32_t *tokens, const float *x, int n, int V, const tc_draw *draws) {
    if (n <= 0) return TC_OK;
    void *scratch = malloc(tc_sample_scratch_bytes(V));
    if (!scratch) return TC_FAIL(TC_ERR_NOMEM, "sample: out of memory for a row of %d tokens", V);
    for (int i = 0; i < n; i++) tokens[i] = tc_sample_row(x + (size_t)i * V, V, &draws[i], scratch);
    free(scratch);
    return TC_OK;
}
