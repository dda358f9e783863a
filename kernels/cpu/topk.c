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

static uint32_t key_at(const float *logits, int32_t i) {
    uint32_t b;
    memcpy(&b, &logits[i], 4);
    return tc_topk_key(b);
}
/* i ranks before j in cmp_desc's order (a total order: ids are distinct) */
static int before(const float *logits, int32_t i, int32_t j) {
    uint32_t a = key_at(logits, i), b = key_at(logits, j);
    return a > b || (a == b && i < j);
}

/* see backend.h: Hoare quickselect, median-of-three pivots */
int tc_topk_select(int32_t *idx, int n, int k, const float *logits) {
    int lo = 0, hi = n - 1, rounds = 0;
    while (hi > lo) {
        if (++rounds > 64) return -1;
        int mid = lo + (hi - lo) / 2;
        /* median of three as the pivot */
        if (before(logits, idx[mid], idx[lo])) { int32_t t = idx[mid]; idx[mid] = idx[lo]; idx[lo] = t; }
        if (before(logits, idx[hi], idx[lo])) { int32_t t = idx[hi]; idx[hi] = idx[lo]; idx[lo] = t; }
        if (before(logits, idx[hi], idx[mid])) { int32_t t = idx[hi]; idx[hi] = idx[mid]; idx[mid] = t; }
        const int32_t pv = idx[mid];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(logits, idx[i], pv)) i++;
            while (before(logits, pv, idx[j])) j--;
            if (i <= j) {
                int32_t t = idx[i];
                idx[i++] = idx[j];
                idx[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
    return 0;
}
