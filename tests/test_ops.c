/* test_ops.c — every CPU op against its naive twin on odd shapes
 * (1, 7, 19, 111, ...), by normalized MSE (ggml test-backend-ops style)
 * plus max abs error. Label: unit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/backend.h"

static int g_fail = 0, g_n = 0;
static uint64_t g_rng = 42;

static float frand(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}
static float *rnd(size_t n, float scale) {
    float *x = malloc(n * 4 + 4);
    for (size_t i = 0; i < n; i++) x[i] = frand() * scale;
    return x;
}
static float *dup(const float *x, size_t n) {
    float *y = malloc(n * 4 + 4);
    memcpy(y, x, n * 4);
    return y;
}

static void compare(const char *op, const char *shape, const float *a, const float *ref, size_t n, double tol) {
    double num = 0, den = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - ref[i];
        num += e * e;
        den += (double)ref[i] * ref[i];
        if (fabs(e) > mx) mx = fabs(e);
    }
    double nmse = den > 0 ? num / den : num;
    g_n++;
    int ok = nmse <= tol && isfinite(nmse);
    if (!ok) g_fail++;
    printf("%-5s %-10s %-40s nmse %.3e  max|err| %.3e\n", ok ? "ok" : "FAIL", op, shape, nmse, mx);
}

int main(void) {
    tc_backend cpu, nv;
    tc_backend_cpu_init(&cpu, 0);
    tc_backend_naive_init(&nv);
    const int odd[] = {1, 7, 19, 111};
    char sh[128];

    /* linear with and without bias, beta 0 / 1, strided output */
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) {
            int n = odd[a], m = odd[b], k = odd[(a + b + 1) % 4] + 3, ldy = m + 5, ldx = k + 2;
            float *x = rnd((size_t)n * ldx, 1), *W = rnd((size_t)m * k, 1), *bias = rnd(m, 1);
            float *y0 = rnd((size_t)n * ldy, 1), *y1 = dup(y0, (size_t)n * ldy);
            float beta = (a + b) % 2 ? 1.f : 0.f;
            cpu.linear(&cpu, y0, ldy, x, ldx, W, (a % 2) ? bias : NULL, n, m, k, beta);
            nv.linear(&nv, y1, ldy, x, ldx, W, (a % 2) ? bias : NULL, n, m, k, beta);
            snprintf(sh, sizeof sh, "n=%d m=%d k=%d beta=%g bias=%d", n, m, k, beta, a % 2);
            compare("linear", sh, y0, y1, (size_t)n * ldy, 1e-10);
            free(x); free(W); free(bias); free(y0); free(y1);
        }
    /* a batched hit step does not depend on its batch: a row of x gives
     * bitwise the same output in a batch of 16 as in a batch of 3 (the
     * row-batch kernel for 2..32 rows sums each output in one order;
     * x86 CPUs without AVX2+FMA use OpenBLAS instead, which does not) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        printf("%-5s %-10s %-40s\n", "skip", "linear", "batch invariance: no AVX2+FMA (OpenBLAS path)");
    else
#endif
    {
        int m = 300, k = 432, ld = k;
        float *x = rnd((size_t)16 * ld, 1), *W = rnd((size_t)m * k, 1), *bias = rnd(m, 1);
        float *y16 = rnd((size_t)16 * m, 1), *y3 = rnd((size_t)3 * m, 1);
        cpu.linear(&cpu, y16, m, x, ld, W, bias, 16, m, k, 0.f);
        cpu.linear(&cpu, y3, m, x + (size_t)13 * ld, ld, W, bias, 3, m, k, 0.f); /* rows 13, 14, 15 */
        int same = !memcmp(y16 + (size_t)13 * m, y3, (size_t)3 * m * 4);
        g_n++;
        if (!same) g_fail++;
        printf("%-5s %-10s %-40s\n", same ? "ok" : "FAIL", "linear", "rows 13-15: batch 16 == batch 3 bitwise");
        free(x); free(W); free(bias); free(y16); free(y3);
    }
    /* layernorm */
    for (int a = 0; a < 4; a++) {
        int n = odd[a], d = odd[(a + 2) % 4] + 1;
        float *x = rnd((size_t)n * d, 3), *w = rnd(d, 1), *b = rnd(d, 1);
        for (int i = 0; i < n * d; i++) x[i] += 5.0f; /* non-zero mean */
        float *o0 = rnd((size_t)n * d, 1), *o1 = rnd((size_t)n * d, 1);
        cpu.layernorm(&cpu, o0, x, w, b, n, d, 1e-5f);
        nv.layernorm(&nv, o1, x, w, b, n, d, 1e-5f);
        snprintf(sh, sizeof sh, "n=%d d=%d", n, d);
        compare("layernorm", sh, o0, o1, (size_t)n * d, 1e-10);
        free(x); free(w); free(b); free(o0); free(o1);
    }
    /* rope at large positions, strided */
    for (int a = 0; a < 4; a++) {
        int n = odd[a], nh = 3, hd = 2 * (a + 1) + 2, ld = nh * hd + 7;
        int64_t pos0 = a == 3 ? 999983 : 5 * a;
        float *x0 = rnd((size_t)n * ld, 1), *x1 = dup(x0, (size_t)n * ld);
        cpu.rope(&cpu, x0, ld, n, nh, hd, pos0, 10000.f);
        nv.rope(&nv, x1, ld, n, nh, hd, pos0, 10000.f);
        snprintf(sh, sizeof sh, "n=%d nh=%d hd=%d pos0=%lld", n, nh, hd, (long long)pos0);
        compare("rope", sh, x0, x1, (size_t)n * ld, 1e-12);
        free(x0); free(x1);
    }
    /* attention: causal / non-causal, offsets, tiles crossed (nk > 256,
     * nq > 64), query before all keys (fully masked rows) */
    struct { int nq, nk, causal; int64_t qp, kp; } at[] = {
        {1, 1, 1, 0, 0},     {1, 7, 1, 6, 0},      {7, 19, 1, 12, 0},    {19, 7, 0, 100, 3},
        {111, 111, 1, 0, 0}, {111, 300, 0, 5, 0},  {1, 600, 0, 999, 0},  {70, 519, 1, 449, 0},
        {19, 19, 1, 50, 40}, {7, 111, 0, 0, 999}, {65, 65, 1, 1000, 1000}, {5, 9, 1, 0, 2},
    };
    for (size_t t = 0; t < sizeof at / sizeof at[0]; t++) {
        int nh = 3, hd = 6, d = nh * hd, ldq = 3 * d + 1;
        int nq = at[t].nq, nk = at[t].nk;
        float *q = rnd((size_t)nq * ldq, 2), *k = rnd((size_t)nk * ldq, 2), *v = rnd((size_t)nk * ldq, 1);
        for (int beta = 0; beta < 2; beta++) {
            float *o0 = rnd((size_t)nq * (d + 3), 1), *o1 = dup(o0, (size_t)nq * (d + 3));
            cpu.attention(&cpu, o0, d + 3, q, ldq, k, ldq, v, ldq, nq, nk, nh, hd, at[t].qp, at[t].kp, at[t].causal,
                          (float)beta);
            nv.attention(&nv, o1, d + 3, q, ldq, k, ldq, v, ldq, nq, nk, nh, hd, at[t].qp, at[t].kp, at[t].causal,
                         (float)beta);
            snprintf(sh, sizeof sh, "nq=%d nk=%d c=%d qp=%lld kp=%lld b=%d", nq, nk, at[t].causal,
                     (long long)at[t].qp, (long long)at[t].kp, beta);
            compare("attention", sh, o0, o1, (size_t)nq * (d + 3), 1e-10);
            free(o0); free(o1);
        }
        free(q); free(k); free(v);
    }
    /* a batch of attentions (a batch's sessions: one dispatch) == each
     * alone: one query row or two, causal windows and a zip with beta 1,
     * different key counts, 12 heads of 36 */
    {
        const int nh = 12, hd = 36, d = nh * hd, ldq = 3 * d, n = 5;
        struct { int nq, nk, causal; int64_t qp, kp; float beta; } bt[5] = {
            {1, 257, 1, 1256, 1000, 0.f}, {1, 256, 0, 1256, 1000, 1.f}, {2, 40, 1, 1039, 1001, 0.f},
            {1, 5, 1, 4, 0, 0.f},         {1, 300, 0, 9, 0, 1.f}};
        tc_att_item it[5];
        float *bufs[5][5];
        for (int i = 0; i < n; i++) {
            float *q = rnd((size_t)bt[i].nq * ldq, 2), *k = rnd((size_t)bt[i].nk * d, 2), *v = rnd((size_t)bt[i].nk * d, 1);
            float *o0 = rnd((size_t)bt[i].nq * d, 1), *o1 = dup(o0, (size_t)bt[i].nq * d);
            bufs[i][0] = q, bufs[i][1] = k, bufs[i][2] = v, bufs[i][3] = o0, bufs[i][4] = o1;
            it[i] = (tc_att_item){o0, q, k, v, d, ldq, d, d, bt[i].nq, bt[i].nk, bt[i].qp, bt[i].kp, bt[i].causal,
                                  bt[i].beta};
        }
        cpu.attention_batch(&cpu, it, n, nh, hd);
        for (int i = 0; i < n; i++) {
            nv.attention(&nv, bufs[i][4], d, bufs[i][0], ldq, bufs[i][1], d, bufs[i][2], d, bt[i].nq, bt[i].nk, nh, hd,
                         bt[i].qp, bt[i].kp, bt[i].causal, bt[i].beta);
            snprintf(sh, sizeof sh, "batch item %d: nq=%d nk=%d c=%d beta=%g", i, bt[i].nq, bt[i].nk, bt[i].causal,
                     bt[i].beta);
            compare("att_batch", sh, bufs[i][3], bufs[i][4], (size_t)bt[i].nq * d, 1e-10);
            for (int k = 0; k < 5; k++) free(bufs[i][k]);
        }
    }
    /* attention at model head sizes (hd 16, 36: the direct 1-row path's
     * vector body and tail), 1..4-row query tiles, keys across tiles, and
     * enough work to be split over the thread pool */
    struct { int nq, nk, causal, nh, hd; int64_t qp, kp; } at2[] = {
        {1, 700, 0, 12, 36, 5000, 0}, {3, 300, 1, 12, 36, 297, 0}, {4, 260, 1, 4, 16, 255, 0},
        {2, 33, 1, 8, 32, 40, 8},     {200, 257, 0, 12, 36, 0, 9},  {130, 130, 1, 4, 16, 7, 7},
    };
    for (size_t t = 0; t < sizeof at2 / sizeof at2[0]; t++) {
        int nh = at2[t].nh, hd = at2[t].hd, d = nh * hd, ldq = 3 * d;
        int nq = at2[t].nq, nk = at2[t].nk;
        float *q = rnd((size_t)nq * ldq, 2), *k = rnd((size_t)nk * ldq, 2), *v = rnd((size_t)nk * ldq, 1);
        float *o0 = rnd((size_t)nq * d, 1), *o1 = dup(o0, (size_t)nq * d);
        cpu.attention(&cpu, o0, d, q, ldq, k, ldq, v, ldq, nq, nk, nh, hd, at2[t].qp, at2[t].kp, at2[t].causal, 1.f);
        nv.attention(&nv, o1, d, q, ldq, k, ldq, v, ldq, nq, nk, nh, hd, at2[t].qp, at2[t].kp, at2[t].causal, 1.f);
        snprintf(sh, sizeof sh, "nq=%d nk=%d c=%d nh=%d hd=%d", nq, nk, at2[t].causal, nh, hd);
        compare("attention", sh, o0, o1, (size_t)nq * d, 1e-10);
        free(q); free(k); free(v); free(o0); free(o1);
    }
    /* swiglu with large |h| (the exp's clamps) and a pool-split size */
    {
        int n = 130, F = 257;
        float *h = rnd((size_t)n * 2 * F, 100), *o0 = rnd((size_t)n * F, 1), *o1 = dup(o0, (size_t)n * F);
        cpu.swiglu(&cpu, o0, F, h, 2 * F, n, F);
        nv.swiglu(&nv, o1, F, h, 2 * F, n, F);
        compare("swiglu", "n=130 F=257 |h|<=100", o0, o1, (size_t)n * F, 1e-12);
        free(h); free(o0); free(o1);
    }
    /* layernorm and rope on pool-split sizes */
    {
        int n = 300, d = 432, nh = 24, hd = 36;
        float *x = rnd((size_t)n * d, 3), *w = rnd(d, 1), *b = rnd(d, 1);
        float *o0 = rnd((size_t)n * d, 1), *o1 = rnd((size_t)n * d, 1);
        cpu.layernorm(&cpu, o0, x, w, b, n, d, 1e-5f);
        nv.layernorm(&nv, o1, x, w, b, n, d, 1e-5f);
        compare("layernorm", "n=300 d=432", o0, o1, (size_t)n * d, 1e-10);
        float *r0 = rnd((size_t)n * 3 * d, 1), *r1 = dup(r0, (size_t)n * 3 * d);
        cpu.rope(&cpu, r0, 3 * d, n, nh, hd, 1048000, 10000.f);
        nv.rope(&nv, r1, 3 * d, n, nh, hd, 1048000, 10000.f);
        compare("rope", "n=300 nh=24 hd=36 pos0=1048000", r0, r1, (size_t)n * 3 * d, 1e-12);
        free(x); free(w); free(b); free(o0); free(o1); free(r0); free(r1);
    }
    /* swiglu, strided */
    for (int a = 0; a < 4; a++) {
        int n = odd[a], F = odd[(a + 1) % 4];
        float *h = rnd((size_t)n * (2 * F + 1), 4), *o0 = rnd((size_t)n * F, 1), *o1 = dup(o0, (size_t)n * F);
        cpu.swiglu(&cpu, o0, F, h, 2 * F + 1, n, F);
        nv.swiglu(&nv, o1, F, h, 2 * F + 1, n, F);
        snprintf(sh, sizeof sh, "n=%d F=%d", n, F);
        compare("swiglu", sh, o0, o1, (size_t)n * F, 1e-12);
        free(h); free(o0); free(o1);
    }
    /* embed, copy2d */
    {
        int V = 19, d = 7, n = 111;
        float *E = rnd((size_t)V * d, 1), *o0 = rnd((size_t)n * d, 1), *o1 = rnd((size_t)n * d, 1);
        int32_t ids[111];
        for (int i = 0; i < n; i++) ids[i] = (i * 7) % V;
        cpu.embed(&cpu, o0, E, ids, n, d);
        nv.embed(&nv, o1, E, ids, n, d);
        compare("embed", "V=19 d=7 n=111", o0, o1, (size_t)n * d, 0);
        cpu.copy2d(&cpu, o0, d, E, d, V, 5);
        nv.copy2d(&nv, o1, d, E, d, V, 5);
        compare("copy2d", "rows=19 cols=5", o0, o1, (size_t)n * d, 0);
        free(E); free(o0); free(o1);
    }
    printf("%d/%d op checks passed\n", g_n - g_fail, g_n);
    return g_fail ? 1 : 0;
}
