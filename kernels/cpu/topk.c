/* topk.c — the host top-k of backend.h: per row, the k largest values in
 * tc_topk_key order, ties to the lower id. A min-heap of the k best so far
 * on one 64-bit key (value key high, inverted id low), so a candidate is
 * one integer compare against the heap's worst: O(V) for typical rows,
 * O(V log k) at worst. k = 1 is a plain scan. */
#include <string.h>

#include "../../common/status.h"
#include "../backend.h"

/* larger = better: value key, then the lower id */
static uint64_t comp_key(const float *x, int32_t id) {
    uint32_t b;
    memcpy(&b, &x[id], 4);
    return (uint64_t)tc_topk_key(b) << 32 | (uint32_t)(0xffffffffu - (uint32_t)id);
}

static void sift_down(uint64_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l] < h[m]) m = l;
        if (r < n && h[r] < h[m]) m = r;
        if (m == i) return;
        uint64_t t = h[i];
        h[i] = h[m], h[m] = t;
        i = m;
    }
}

static void topk_row(int32_t *ids, float *vals, const float *x, int V, int k) {
    uint64_t h[TC_TOPK_MAX];
    if (k == 1) {
        uint64_t best = comp_key(x, 0);
        for (int i = 1; i < V; i++) {
            uint64_t c = comp_key(x, i);
            if (c > best) best = c;
        }
        h[0] = best;
    } else {
        for (int i = 0; i < k; i++) h[i] = comp_key(x, i);
        for (int i = k / 2 - 1; i >= 0; i--) sift_down(h, k, i);
        for (int i = k; i < V; i++) {
            uint64_t c = comp_key(x, i);
            if (c > h[0]) {
                h[0] = c;
                sift_down(h, k, 0);
            }
        }
        /* heap sort: the worst goes to the back each round -> descending */
        for (int n = k - 1; n > 0; n--) {
            uint64_t t = h[0];
            h[0] = h[n], h[n] = t;
            sift_down(h, n, 0);
        }
    }
    for (int j = 0; j < k; j++) {
        int32_t id = (int32_t)(0xffffffffu - (uint32_t)h[j]);
        ids[j] = id;
        vals[j] = x[id];
    }
}

void tc_topk_rows(int32_t *ids, float *vals, const float *x, int n, int V, int k) {
    TC_ASSERT(k >= 1 && k <= V && k <= TC_TOPK_MAX, "topk: k %d outside 1..min(V %d, %d)", k, V, TC_TOPK_MAX);
    for (int i = 0; i < n; i++)
        topk_row(ids + (size_t)i * k, vals + (size_t)i * k, x + (size_t)i * V, V, k);
}
