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
 * On the host the sampler's sort-based path is the faster one (a row's
 * walk reads it 8-24 times); this file is the reference for the GPU and
 * runs wherever a backend hands the op to model/. */
#include <stdlib.h>
#include <string.h>

#include "../../common/status.h"
#include "../backend.h"

static uint64_t comp_at(const float *x, int i) {
    uint32_t b;
    memcpy(&b, &x[i], 4);
    return (uint64_t)tc_topk_key(b) << 32 | (uint32_t)(0xffffffffu - (uint32_t)i);
}
static int32_t comp_id(uint64_t c) { return (int32_t)(0xffffffffu - (uint32_t)c); }

/* The composite c* among c[i] >= lo with W(> c*) < m <= W(>= c*), W the
 * mass of w (NULL: 1 a token) over the candidates; 1 <= m <= W(>= lo).
 * *above = W(> c*). */
static uint64_t walk(const uint64_t *c, int V, const uint64_t *w, uint64_t lo, uint64_t m, uint64_t *above) {
    uint64_t prefix = 0, acc = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        uint64_t hist[256] = {0};
        const uint64_t hi = shift == 56 ? 0 : ~0ull << (shift + 8);
        for (int i = 0; i < V; i++)
            if (c[i] >= lo && (c[i] & hi) == prefix) hist[c[i] >> shift & 255] += w ? w[i] : 1;
        int b = 255;
        for (; b > 0 && acc + hist[b] < m; b--) acc += hist[b];
        prefix |= (uint64_t)b << shift;
    }
    *above = acc;
    return prefix;
}

static int32_t sample_row(const float *x, int V, const tc_draw *d, uint64_t *c, uint64_t *w) {
    uint64_t top = 0;
    for (int i = 0; i < V; i++) {
        c[i] = comp_at(x, i);
        if (c[i] > top) top = c[i];
    }
    if (d->temperature == 0.f) return comp_id(top);
    const float mx = x[comp_id(top)];
    const int topk = d->top_k > 0 && d->top_k < V;
    uint64_t lo = 0, above, total = 0;
    if (topk) lo = walk(c, V, NULL, 0, (uint64_t)d->top_k, &above); /* the k-th composite */
    for (int i = 0; i < V; i++) total += w[i] = c[i] >= lo ? tc_draw_weight(x[i], mx, d->temperature) : 0;
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
        const uint64_t cut = walk(c, V, w, lo, tc_draw_need(d->top_p, total), &above);
        N = above + w[comp_id(cut)];
    }
    return comp_id(walk(c, V, w, lo, tc_draw_target(d->r, N) + 1, &above));
}

tc_status tc_sample_rows(int32_t *tokens, const float *x, int n, int V, const tc_draw *draws) {
    if (n <= 0) return TC_OK;
    uint64_t *c = malloc((size_t)V * 2 * sizeof *c);
    if (!c) return TC_FAIL(TC_ERR_NOMEM, "sample: out of memory for a row of %d tokens", V);
    for (int i = 0; i < n; i++) tokens[i] = sample_row(x + (size_t)i * V, V, &draws[i], c, c + V);
    free(c);
    return TC_OK;
}
