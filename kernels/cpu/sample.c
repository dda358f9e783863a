/* sample.c — the host sample op of backend.h: per row of logits, the token
 * the sampler (model/sampler.h) would draw with the row's tc_draw, found
 * the way the CUDA kernel (kernels/cuda/sample.cu) finds it, so the two
 * share one tested algorithm:
 *
 *   - candidates and orders on one 64-bit composite per token (the value's
 *     tc_topk_key high, the inverted id low: unique, larger = earlier);
 *   - "the first candidate, in topk order, at which the running mass
 *     reaches m" is a radix walk over the composite from its top byte:
 *     a histogram of the masses by the next byte among the tokens that
 *     match the bytes chosen so far, then the byte at which the mass from
 *     the top reaches m. Eight passes; every sum is an integer, so a GPU
 *     may add in any order and land on the same token;
 *   - top-k is the same walk with a weight of 1 a token;
 *   - plain temperature walks the ids in order (a prefix sum).
 *
 * On the host each pass keeps only the tokens still in play, so a walk is
 * O(V) (a sort was O(V log V)): the host sampler draws every full row
 * through tc_sample_row too (paper vocabulary, flat logits: top-p 2.2 vs
 * 4.1 ms a row with the sort, top-k 40 1.4 vs 8.1 ms; plain temperature
 * 0.50 vs 0.29-0.42 ms, the exact exp costing more than libm's expf). */
#include <stdlib.h>
#include <string.h>

#include "../../common/status.h"
#include "../backend.h"

/* sample_math.h's fmaf are exact on every path, but without the FMA
 * instruction each is a libm call (the Debian x86-64 baseline has none):
 * 5x slower per row. A clone for CPUs with FMA, picked at load time; both
 * give the same bits (fma is exactly rounded either way). */
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define TC_FMA_CLONES __attribute__((target_clones("fma", "default")))
#endif
#endif
#ifndef TC_FMA_CLONES
#define TC_FMA_CLONES
#endif

TC_FMA_CLONES void tc_draw_weights(uint64_t *w, const float *x, int n, float mx, float T) {
    for (int i = 0; i < n; i++) w[i] = tc_draw_weight(x[i], mx, T);
}

static uint64_t comp_at(const float *x, int i) {
    uint32_t b;
    memcpy(&b, &x[i], 4);
    return (uint64_t)tc_topk_key(b) << 32 | (uint32_t)(0xffffffffu - (uint32_t)i);
}
static int32_t comp_id(uint64_t c) { return (int32_t)(0xffffffffu - (uint32_t)c); }

/* The composite c* among the candidates idx[0..n) with W(> c*) < m <=
 * W(>= c*), W the mass of w (NULL: 1 a token) over them; 1 <= m <= W of
 * all. *above = W(> c*). Each pass keeps in idx (in place) only the tokens
 * matching the bytes chosen so far, so after the first pass or two it
 * reads a handful: O(V) a walk, where a sort is O(V log V). The CUDA
 * kernel runs the same passes over the row without the list. */
static uint64_t walk(const float *x, const uint64_t *w, int32_t *idx, int n, uint64_t m, uint64_t *above) {
    uint64_t prefix = 0, acc = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        uint64_t hist[256] = {0};
        for (int j = 0; j < n; j++) hist[comp_at(x, idx[j]) >> shift & 255] += w ? w[idx[j]] : 1;
        int b = 255;
        for (; b > 0 && acc + hist[b] < m; b--) acc += hist[b];
        prefix |= (uint64_t)b << shift;
        int k = 0;
        for (int j = 0; j < n; j++)
            if ((comp_at(x, idx[j]) >> shift & 255) == (uint64_t)b) idx[k++] = idx[j];
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
    for (int i = 0; i < V; i++) cand[i] = i;
    if (topk) { /* the candidates: the composites down to the k-th */
        memcpy(tmp, cand, (size_t)V * sizeof *tmp);
        const uint64_t lo = walk(x, NULL, tmp, V, (uint64_t)d->top_k, &above);
        nc = 0;
        for (int i = 0; i < V; i++)
            if (comp_at(x, i) >= lo) cand[nc++] = i;
        for (int j = 0; j < nc; j++) total += w[cand[j]] = tc_draw_weight(x[cand[j]], mx, d->temperature);
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
        memcpy(tmp, cand, (size_t)nc * sizeof *tmp);
        const uint64_t cut = walk(x, w, tmp, nc, tc_draw_need(d->top_p, total), &above);
        N = above + w[comp_id(cut)];
    }
    memcpy(tmp, cand, (size_t)nc * sizeof *tmp);
    return comp_id(walk(x, w, tmp, nc, tc_draw_target(d->r, N) + 1, &above));
}

tc_status tc_sample_rows(int32_t *tokens, const float *x, int n, int V, const tc_draw *draws) {
    if (n <= 0) return TC_OK;
    void *scratch = malloc(tc_sample_scratch_bytes(V));
    if (!scratch) return TC_FAIL(TC_ERR_NOMEM, "sample: out of memory for a row of %d tokens", V);
    for (int i = 0; i < n; i++) tokens[i] = tc_sample_row(x + (size_t)i * V, V, &draws[i], scratch);
    free(scratch);
    return TC_OK;
}
