/* test_backend_ops_gpu.c — every CUDA op against the CPU backend, ggml
 * test-backend-ops style: the same random inputs through both, normalized
 * MSE (sum (a-b)^2 / sum b^2) against a per-op threshold from ONE table
 * with the reason for each number. Odd shapes (1, 7, 19, 111, ...),
 * strided inputs and outputs, both attention kernels (row: nq <= 4; tile),
 * every head_dim class (<=32, <=64, <=128, <=256), causal with offsets,
 * fully masked rows, beta 0 / 1. Outputs are pre-filled with NaN on the GPU
 * so an op that reads what it should overwrite fails, and the padding
 * columns of strided outputs must come back untouched.
 *
 * Without a CUDA device: prints "SKIPPED: no CUDA device", exits 77
 * (ctest SKIP_RETURN_CODE). Label: gpu. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/safetensors.h"
#include "../../kernels/backend.h"
#include "../../kernels/cuda/backend_cuda.h"
#include "../../kernels/cuda/kernels_cuda.h" /* the batch launches' capacities */

#define TC_SKIP 77

/* Thresholds: normalized MSE, CUDA vs CPU, both fp32. fp32 rounding is
 * ~6e-8 relative, so a result that differs only in summation order sits
 * near 1e-14; the thresholds leave 2-4 orders of headroom and are still
 * ~6 orders below what a real bug (a wrong row, a missing term) gives. */
static const struct {
    const char *op;
    double nmse;
    const char *why;
} TOL[] = {
    {"embed", 0.0, "a gather: must be bit-exact"},
    {"copy2d", 0.0, "a copy: must be bit-exact"},
    {"layernorm", 1e-11, "same two-pass fp32 algorithm; block-tree vs sequential sums of d terms"},
    {"linear", 1e-10, "cuBLAS fp32 (TF32 off) vs OpenBLAS: k-term dot products summed in another order"},
    {"rope", 1e-11, "same fp32 theta and unfused products; CUDA sinf/cosf are within 2 ulp of glibc"},
    {"attention", 1e-10, "online softmax over 32-key tiles vs 256-key tiles; expf within 2 ulp; FMA contraction"},
    {"swiglu", 1e-11, "expf and the division within 2 ulp of glibc"},
    {"topk", 0.0, "a selection by integer keys: ids and values must be bit-exact (checked with memcmp)"},
    {"sample", 0.0, "sample_math.h's IEEE-exact weights and integer masses: the very token of tc_sample_rows"},
};

static int g_fail = 0, g_n = 0;
static uint64_t g_rng = 4242;

static double tol_of(const char *op) {
    for (size_t i = 0; i < sizeof TOL / sizeof TOL[0]; i++)
        if (strcmp(TOL[i].op, op) == 0) return TOL[i].nmse;
    fprintf(stderr, "no threshold for op %s\n", op);
    abort();
}

static float frand(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}
static float *rnd(size_t n, float scale) {
    float *x = malloc(n * 4 + 4);
    if (!x) abort();
    for (size_t i = 0; i < n; i++) x[i] = frand() * scale;
    return x;
}
static float *nans(size_t n) {
    float *x = malloc(n * 4 + 4);
    if (!x) abort();
    for (size_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

static tc_backend g_gpu, g_cpu;

/* device copy of n floats of host memory */
static float *dev(const float *h, size_t n) {
    float *d = g_gpu.alloc(&g_gpu, n * 4 + 4);
    if (!d) {
        fprintf(stderr, "cuda alloc of %zu bytes failed\n", n * 4);
        abort();
    }
    g_gpu.upload(&g_gpu, d, h, n * 4);
    return d;
}
/* host copy of n floats of device memory; frees the device buffer */
static float *host(float *d, size_t n) {
    float *h = malloc(n * 4 + 4);
    if (!h) abort();
    g_gpu.download(&g_gpu, h, d, n * 4);
    g_gpu.free(&g_gpu, d);
    return h;
}

/* Compares rows x cols of gpu against cpu (leading dimension ld); the
 * columns [cols, ld) of gpu must still equal `init` (nothing written past
 * the op's columns). */
static void compare(const char *op, const char *shape, const float *gpu, const float *cpu, const float *init,
                    int rows, int cols, int ld) {
    double num = 0, den = 0, mx = 0;
    int pad_bad = 0;
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < cols; j++) {
            double e = (double)gpu[(size_t)i * ld + j] - cpu[(size_t)i * ld + j];
            num += e * e;
            den += (double)cpu[(size_t)i * ld + j] * cpu[(size_t)i * ld + j];
            if (!(fabs(e) <= mx)) mx = fabs(e); /* NaN-safe */
        }
        for (int j = cols; init && j < ld; j++) {
            float a = gpu[(size_t)i * ld + j], b = init[(size_t)i * ld + j];
            if (memcmp(&a, &b, 4) != 0) pad_bad++;
        }
    }
    double nmse = den > 0 ? num / den : num, tol = tol_of(op);
    int ok = isfinite(nmse) && nmse <= tol && pad_bad == 0;
    g_n++;
    if (!ok) g_fail++;
    printf("%-5s %-10s %-48s nmse %.3e (<= %.0e)  max|err| %.3e%s\n", ok ? "ok" : "FAIL", op, shape, nmse, tol,
           mx, pad_bad ? "  PADDING WRITTEN" : "");
}

/* the skinny kernels' row limit in force (tc_backend_cuda_set_skinny_rows) */
static int g_skinny_rows;

/* Rows in groups of 8 (skinny_rows past 8): each row of an n-row linear,
 * LN + linear, SwiGLU + linear is bit for bit that row alone -- a batch of
 * up to skinny_rows sessions steps each as it would alone. */
static void test_skinny_groups(void) {
    static const int ns[] = {9, 16, 19, 32};
    const int m = 1297, k = 432;
    char sh[128];
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (int pre = -1; pre <= TC_PRE_SWIGLU; pre++) {
            if (pre == 0) continue; /* -1: plain linear; TC_PRE_LN (1), TC_PRE_SWIGLU (2) */
            const int n = ns[a], xw = pre == TC_PRE_SWIGLU ? 2 * k : k, ldy = m + 3;
            float *x = rnd((size_t)n * xw, 2), *W = rnd((size_t)m * k, 1), *bias = rnd(m, 1), *lw = rnd(k, 1),
                  *lb = rnd(k, 1), *y0 = nans((size_t)n * ldy), *t0 = nans((size_t)n * k);
            float *dx = dev(x, (size_t)n * xw), *dW = dev(W, (size_t)m * k), *db = dev(bias, m), *dlw = dev(lw, k),
                  *dlb = dev(lb, k), *dy = dev(y0, (size_t)n * ldy), *dy1 = dev(y0, (size_t)n * ldy),
                  *dt = dev(t0, (size_t)n * k);
            for (int r = -1; r < n; r++) { /* -1: all n rows at once; r: row r alone */
                float *yy = r < 0 ? dy : dy1 + (size_t)r * ldy;
                const float *xx = r < 0 ? dx : dx + (size_t)r * xw;
                const int nr = r < 0 ? n : 1;
                if (pre < 0) g_gpu.linear(&g_gpu, yy, ldy, xx, xw, dW, db, nr, m, k, 0.f);
                else g_gpu.linear_pre(&g_gpu, pre, yy, ldy, xx, xw, dt, dW, db, nr, m, k, 0.f, dlw, dlb, 1e-5f);
            }
            float *ya = host(dy, (size_t)n * ldy), *yb = host(dy1, (size_t)n * ldy);
            const int same = !memcmp(ya, yb, (size_t)n * ldy * 4);
            snprintf(sh, sizeof sh, "%s n=%d m=%d k=%d, skinny rows %d", pre < 0 ? "linear" : pre == TC_PRE_LN ?
                     "LN + linear" : "SwiGLU + linear", n, m, k, g_skinny_rows);
            g_n++;
            if (!same) g_fail++;
            printf("%-5s groups     %-48s == each row alone, bitwise\n", same ? "ok" : "FAIL", sh);
            g_gpu.free(&g_gpu, dx), g_gpu.free(&g_gpu, dW), g_gpu.free(&g_gpu, db), g_gpu.free(&g_gpu, dlw);
            g_gpu.free(&g_gpu, dlb), g_gpu.free(&g_gpu, dt);
            free(x), free(W), free(bias), free(lw), free(lb), free(y0), free(t0), free(ya), free(yb);
        }
}

static void test_linear(void) {
    const int odd[] = {1, 7, 19, 111};
    char sh[128];
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++) {
            /* a == 4 / b == 4: a larger GEMM of the paper-41m's width */
            int n = a < 4 ? odd[a] : 257, m = b < 4 ? odd[b] : 1297;
            int k = (a == 4 || b == 4) ? 432 : odd[(a + b + 1) % 4] + 3, ldy = m + 5, ldx = k + 2;
            int has_bias = a % 2;
            float beta = (a + b) % 2 ? 1.f : 0.f;
            float *x = rnd((size_t)n * ldx, 1), *W = rnd((size_t)m * k, 1), *bias = rnd(m, 1);
            float *y = rnd((size_t)n * ldy, 1);
            /* beta 0 must not read y: give the GPU NaN there */
            float *yg0 = nans((size_t)n * ldy);
            if (beta != 0.f) memcpy(yg0, y, (size_t)n * ldy * 4);
            float *dx = dev(x, (size_t)n * ldx), *dW = dev(W, (size_t)m * k), *db = dev(bias, m);
            float *dy = dev(yg0, (size_t)n * ldy);
            g_gpu.linear(&g_gpu, dy, ldy, dx, ldx, dW, has_bias ? db : NULL, n, m, k, beta);
            g_cpu.linear(&g_cpu, y, ldy, x, ldx, W, has_bias ? bias : NULL, n, m, k, beta);
            float *yg = host(dy, (size_t)n * ldy);
            snprintf(sh, sizeof sh, "n=%d m=%d k=%d beta=%g bias=%d", n, m, k, beta, has_bias);
            compare("linear", sh, yg, y, yg0, n, m, ldy);
            g_gpu.free(&g_gpu, dx); g_gpu.free(&g_gpu, dW); g_gpu.free(&g_gpu, db);
            free(x); free(W); free(bias); free(y); free(yg0); free(yg);
        }
}

/* linear_pre (LayerNorm or SwiGLU fused into the skinny linear): bit for
 * bit the GPU's own two ops (the op and linear, through a scratch), and
 * the CPU's two ops at the linear bound; n = 9 and a k too wide for the
 * kernel's shared memory take the backend's two-op path */
static void test_linear_pre(void) {
    struct { int pre, n, m, k; } cs[] = {
        {TC_PRE_LN, 1, 1296, 432},     {TC_PRE_LN, 3, 7, 19},        {TC_PRE_LN, 8, 2560, 432},
        {TC_PRE_LN, 9, 100, 432},      {TC_PRE_LN, 2, 33, 8000},     {TC_PRE_SWIGLU, 1, 432, 1280},
        {TC_PRE_SWIGLU, 5, 17, 37},    {TC_PRE_SWIGLU, 8, 432, 1280}, {TC_PRE_SWIGLU, 12, 40, 64},
        /* at the fused kernel's shared-memory bound (8 x 1528 floats:
         * fused) and just past it (4 x 3072: 48 KiB exactly, the two ops) */
        {TC_PRE_LN, 8, 50, 1528},      {TC_PRE_SWIGLU, 4, 40, 3072},
    };
    if (!g_gpu.linear_pre) {
        printf("FAIL  linear_pre: the CUDA backend has none (TC_CUDA_FUSE=0?)\n");
        g_fail++, g_n++;
        return;
    }
    char sh[160];
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++)
        for (int beta = 0; beta < 2; beta++) {
            const int pre = cs[t].pre, n = cs[t].n, m = cs[t].m, k = cs[t].k, has_bias = (int)(t + beta) % 2;
            const int xw = pre == TC_PRE_LN ? k : 2 * k, ldx = pre == TC_PRE_LN ? k : xw + 3, ldy = m + 2;
            float *x = rnd((size_t)n * ldx, 2), *W = rnd((size_t)m * k, 1), *bias = rnd(m, 1), *lw = rnd(k, 1),
                  *lb = rnd(k, 1), *y = rnd((size_t)n * ldy, 1), *tmp = malloc((size_t)n * k * 4 + 4);
            for (int i = 0; i < n * ldx; i++) x[i] += pre == TC_PRE_LN ? 3.0f : 0.f; /* LN: non-zero mean */
            float *yg0 = nans((size_t)n * ldy), *tnan = nans((size_t)n * k);
            if (beta) memcpy(yg0, y, (size_t)n * ldy * 4);
            float *dx = dev(x, (size_t)n * ldx), *dW = dev(W, (size_t)m * k), *db = dev(bias, m), *dlw = dev(lw, k),
                  *dlb = dev(lb, k), *dy = dev(yg0, (size_t)n * ldy), *dy2 = dev(yg0, (size_t)n * ldy),
                  *dt = dev(tnan, (size_t)n * k), *dt2 = dev(tnan, (size_t)n * k);
            const float *bb = has_bias ? db : NULL;
            g_gpu.linear_pre(&g_gpu, pre, dy, ldy, dx, ldx, dt, dW, bb, n, m, k, (float)beta, dlw, dlb, 1e-5f);
            if (pre == TC_PRE_LN) {
                g_gpu.layernorm(&g_gpu, dt2, dx, dlw, dlb, n, k, 1e-5f);
                g_cpu.layernorm(&g_cpu, tmp, x, lw, lb, n, k, 1e-5f);
            } else {
                g_gpu.swiglu(&g_gpu, dt2, k, dx, ldx, n, k);
                g_cpu.swiglu(&g_cpu, tmp, k, x, ldx, n, k);
            }
            g_gpu.linear(&g_gpu, dy2, ldy, dt2, k, dW, bb, n, m, k, (float)beta);
            g_cpu.linear(&g_cpu, y, ldy, tmp, k, W, has_bias ? bias : NULL, n, m, k, (float)beta);
            float *yg = host(dy, (size_t)n * ldy), *yg2 = host(dy2, (size_t)n * ldy);
            snprintf(sh, sizeof sh, "%s n=%d m=%d k=%d beta=%d bias=%d", pre == TC_PRE_LN ? "LN" : "SwiGLU", n, m, k,
                     beta, has_bias);
            compare("linear", sh, yg, y, yg0, n, m, ldy);
            int same = memcmp(yg, yg2, (size_t)n * ldy * 4) == 0;
            g_n++;
            if (!same) g_fail++;
            printf("%-5s linear_pre %s: == the two GPU ops, bitwise\n", same ? "ok" : "FAIL", sh);
            g_gpu.free(&g_gpu, dx); g_gpu.free(&g_gpu, dW); g_gpu.free(&g_gpu, db); g_gpu.free(&g_gpu, dlw);
            g_gpu.free(&g_gpu, dlb); g_gpu.free(&g_gpu, dt); g_gpu.free(&g_gpu, dt2); /* host() freed dy, dy2 */
            free(x); free(W); free(bias); free(lw); free(lb); free(y); free(tmp); free(yg0); free(tnan); free(yg);
            free(yg2);
        }
}

static void test_layernorm(void) {
    const int n_[] = {1, 7, 19, 111, 128}, d_[] = {8, 20, 112, 432, 1297};
    char sh[128];
    for (int a = 0; a < 5; a++) {
        int n = n_[a], d = d_[(a + 2) % 5];
        float *x = rnd((size_t)n * d, 3), *w = rnd(d, 1), *b = rnd(d, 1);
        for (int i = 0; i < n * d; i++) x[i] += 5.0f; /* non-zero mean */
        float *o = rnd((size_t)n * d, 1), *og0 = nans((size_t)n * d);
        float *dx = dev(x, (size_t)n * d), *dw = dev(w, d), *db = dev(b, d), *dout = dev(og0, (size_t)n * d);
        g_gpu.layernorm(&g_gpu, dout, dx, dw, db, n, d, 1e-5f);
        g_cpu.layernorm(&g_cpu, o, x, w, b, n, d, 1e-5f);
        float *og = host(dout, (size_t)n * d);
        snprintf(sh, sizeof sh, "n=%d d=%d", n, d);
        compare("layernorm", sh, og, o, NULL, n, d, d);
        g_gpu.free(&g_gpu, dx); g_gpu.free(&g_gpu, dw); g_gpu.free(&g_gpu, db);
        free(x); free(w); free(b); free(o); free(og0); free(og);
    }
}

static void test_rope(void) {
    char sh[128];
    struct { int n, nh, hd; int64_t pos0; } c[] = {
        {1, 3, 4, 0}, {7, 3, 6, 5}, {19, 3, 8, 10}, {111, 3, 10, 999983}, {5, 12, 36, 1000000},
        {3, 2, 256, 123456789}, {128, 4, 16, 65536},
    };
    for (size_t t = 0; t < sizeof c / sizeof c[0]; t++) {
        int n = c[t].n, nh = c[t].nh, hd = c[t].hd, ld = nh * hd + 7;
        float *x = rnd((size_t)n * ld, 1), *init = malloc((size_t)n * ld * 4);
        memcpy(init, x, (size_t)n * ld * 4);
        float *dx = dev(x, (size_t)n * ld);
        g_gpu.rope(&g_gpu, dx, ld, n, nh, hd, c[t].pos0, 10000.f);
        g_cpu.rope(&g_cpu, x, ld, n, nh, hd, c[t].pos0, 10000.f);
        float *xg = host(dx, (size_t)n * ld);
        snprintf(sh, sizeof sh, "n=%d nh=%d hd=%d pos0=%lld", n, nh, hd, (long long)c[t].pos0);
        compare("rope", sh, xg, x, init, n, nh * hd, ld);
        free(x); free(init); free(xg);
    }
}

/* the prefill/sync tile attention runs on the tensor cores (3xTF32) for
 * head_dim <= 64 on sm_80+, on the CUDA cores otherwise: each case through
 * both where the device has both (mma = 1, 0) */
static void test_attention_mode(int mma);
static void test_attention(void) {
    int on = tc_backend_cuda_set_att_mma(1);
    printf("attention: tensor-core tile path %s\n", on ? "on (cases run with it, then without)" : "unavailable");
    /* where the tile does not fit the device's shared memory (head_dim 256
     * on sm_86 / sm_89), those cases run the row kernel */
    printf("attention: CUDA-core tile kernel at head_dim 128: %s, 256: %s\n",
           tc_cuda_attention_tile_fits(128) ? "fits" : "row kernel instead",
           tc_cuda_attention_tile_fits(256) ? "fits" : "row kernel instead");
    if (on) test_attention_mode(1);
    tc_backend_cuda_set_att_mma(0);
    test_attention_mode(0);
    tc_backend_cuda_set_att_mma(1);
}
static void test_attention_mode(int mma) {
    char sh[160];
    /* row kernel: nq <= 4; tile kernel: above. nk > 256 crosses the row
     * kernel's 8-warp stride, nk > 32 the tile kernel's key tile. */
    struct { int nq, nk, causal, nh, hd; int64_t qp, kp; } at[] = {
        {1, 1, 1, 3, 6, 0, 0},          {1, 7, 1, 3, 6, 6, 0},          {1, 600, 0, 3, 6, 999, 0},
        {1, 1000, 1, 12, 36, 700, 0},   {1, 19, 0, 2, 256, 0, 0},       {3, 300, 1, 4, 64, 298, 0},
        {4, 9, 1, 3, 8, 0, 2},          {1, 5, 1, 3, 8, 0, 10},         {2, 0, 0, 3, 8, 0, 0},
        {7, 19, 1, 3, 6, 12, 0},        {19, 7, 0, 3, 6, 100, 3},       {111, 111, 1, 3, 6, 0, 0},
        {111, 300, 0, 3, 6, 5, 0},      {70, 519, 1, 3, 6, 449, 0},     {19, 19, 1, 3, 6, 50, 40},
        {7, 111, 0, 3, 6, 0, 999},      {65, 65, 1, 3, 6, 1000, 1000},  {5, 9, 1, 3, 6, 0, 2},
        {33, 77, 1, 4, 100, 44, 0},     {17, 45, 0, 2, 256, 0, 0},      {256, 2000, 0, 12, 36, 1744, 0},
        {513, 513, 1, 4, 64, 0, 0},     {40, 64, 1, 3, 128, 24, 0},     {9, 3, 0, 5, 31, 0, 0},
        /* keys split across blocks (tc_cuda_attention_splits): the sync's
         * focused shape; causal rows that see none of the later splits;
         * a split boundary inside the visible range */
        {256, 40000, 0, 12, 36, 39744, 0}, {64, 8192, 1, 2, 32, 0, 0}, {64, 8192, 1, 2, 32, 4000, 0},
        {20, 5000, 1, 3, 100, 4990, 0},
        /* the tensor-core path: every head_dim class it instantiates
         * (8 x 1, 2, 4, 5, 6, 8), rows not a multiple of 16, a causal
         * diagonal crossing key tiles, keys split with 16-row warps past nq */
        {50, 77, 1, 2, 12, 30, 0},      {33, 200, 1, 3, 24, 170, 3},    {100, 300, 0, 2, 40, 0, 0},
        {17, 100, 1, 2, 48, 90, 5},     {130, 4100, 1, 2, 64, 3990, 0}, {5, 3000, 0, 12, 36, 0, 0},
    };
    for (size_t t = 0; t < sizeof at / sizeof at[0]; t++) {
        int nh = at[t].nh, hd = at[t].hd, d = nh * hd, ldq = 3 * d + 1, ldo = d + 3;
        int nq = at[t].nq, nk = at[t].nk;
        size_t nkr = nk > 0 ? (size_t)nk : 1;
        float *q = rnd((size_t)nq * ldq, 2), *k = rnd(nkr * ldq, 2), *v = rnd(nkr * ldq, 1);
        float *dq = dev(q, (size_t)nq * ldq), *dk = dev(k, nkr * ldq), *dv = dev(v, nkr * ldq);
        for (int beta = 0; beta < 2; beta++) {
            float *o = rnd((size_t)nq * ldo, 1), *og0;
            if (beta) { og0 = malloc((size_t)nq * ldo * 4); memcpy(og0, o, (size_t)nq * ldo * 4); }
            else og0 = nans((size_t)nq * ldo);
            float *dout = dev(og0, (size_t)nq * ldo);
            /* q, k, v as column blocks of one strided buffer, as model/ does */
            g_gpu.attention(&g_gpu, dout, ldo, dq, ldq, dk + d, ldq, dv + 2 * d, ldq, nq, nk, nh, hd, at[t].qp,
                            at[t].kp, at[t].causal, (float)beta);
            g_cpu.attention(&g_cpu, o, ldo, q, ldq, k + d, ldq, v + 2 * d, ldq, nq, nk, nh, hd, at[t].qp, at[t].kp,
                            at[t].causal, (float)beta);
            float *og = host(dout, (size_t)nq * ldo);
            snprintf(sh, sizeof sh, "nq=%d nk=%d nh=%d hd=%d c=%d qp=%lld kp=%lld b=%d%s", nq, nk, nh, hd,
                     at[t].causal, (long long)at[t].qp, (long long)at[t].kp, beta,
                     nq > 4 && hd <= 64 ? (mma ? " mma" : " simt") : "");
            compare("attention", sh, og, o, og0, nq, d, ldo);
            free(o); free(og0); free(og);
        }
        g_gpu.free(&g_gpu, dq); g_gpu.free(&g_gpu, dk); g_gpu.free(&g_gpu, dv);
        free(q); free(k); free(v);
    }
}

/* attention_batch: TC_CUDA_ATT_BATCH + 40 items (a launch of the large
 * parameter struct, then one of the small),
 * 1..4 query rows through the batched row kernel and 7 rows through the
 * tile kernel, per-item lengths, causal or not, beta 0 or 1. Each item
 * against the CPU backend (NMSE), and bitwise against the single-item
 * attention op on the GPU (the batched kernel runs the same code). */
static void test_attention_batch(void) {
    enum { N = TC_CUDA_ATT_BATCH + 40 };
    const int cfg[2][2] = {{12, 36}, {3, 100}};
    for (int cf = 0; cf < 2; cf++) {
        int nh = cfg[cf][0], hd = cfg[cf][1], d = nh * hd, ldq = 3 * d + 1, ldo = d + 3;
        tc_att_item gi[N];
        float *hq[N], *hk[N], *hv[N], *ho[N], *hinit[N], *dq[N], *dk[N], *dv[N], *dout[N], *dsingle[N];
        int bitwise = 1;
        for (int i = 0; i < N; i++) {
            int nq = i % 5 == 4 ? 7 : 1 + i % 4, nk = 1 + (i * 37) % 300, causal = i % 2;
            /* causal items: row 0 sees (i * 13) % (nk + 1) keys, from none to
             * all; later rows one more each */
            int64_t kp = i % 3, qp = causal ? kp - 1 + (i * 13) % (nk + 1) : kp + nk - 1;
            float beta = i % 3 == 0 ? 1.f : 0.f;
            size_t nkr = (size_t)nk;
            hq[i] = rnd((size_t)nq * ldq, 2), hk[i] = rnd(nkr * d, 2), hv[i] = rnd(nkr * d, 1);
            ho[i] = rnd((size_t)nq * ldo, 1);
            hinit[i] = malloc((size_t)nq * ldo * 4);
            if (!hinit[i]) abort();
            if (beta != 0.f) memcpy(hinit[i], ho[i], (size_t)nq * ldo * 4);
            else for (size_t j = 0; j < (size_t)nq * ldo; j++) hinit[i][j] = NAN;
            dq[i] = dev(hq[i], (size_t)nq * ldq), dk[i] = dev(hk[i], nkr * d), dv[i] = dev(hv[i], nkr * d);
            dout[i] = dev(hinit[i], (size_t)nq * ldo), dsingle[i] = dev(hinit[i], (size_t)nq * ldo);
            gi[i] = (tc_att_item){dout[i], dq[i], dk[i], dv[i], ldo, ldq, d, d, nq, nk, qp, kp, causal, beta};
            g_cpu.attention(&g_cpu, ho[i], ldo, hq[i], ldq, hk[i], d, hv[i], d, nq, nk, nh, hd, qp, kp, causal, beta);
            g_gpu.attention(&g_gpu, dsingle[i], ldo, dq[i], ldq, dk[i], d, dv[i], d, nq, nk, nh, hd, qp, kp, causal,
                            beta);
        }
        g_gpu.attention_batch(&g_gpu, gi, N, nh, hd);
        for (int i = 0; i < N; i++) {
            int nq = gi[i].nq;
            float *og = host(dout[i], (size_t)nq * ldo), *os = host(dsingle[i], (size_t)nq * ldo);
            if (memcmp(og, os, (size_t)nq * ldo * 4) != 0) {
                if (bitwise) /* the first differing item, for the log */
                    for (size_t j = 0; j < (size_t)nq * ldo; j++)
                        if (memcmp(&og[j], &os[j], 4)) {
                            printf("      item %d (nq %d nk %d causal %d beta %g): element %zu: batch %a, single %a\n",
                                   i, nq, gi[i].nk, gi[i].causal, gi[i].beta, j, og[j], os[j]);
                            break;
                        }
                bitwise = 0;
            }
            char sh[160];
            snprintf(sh, sizeof sh, "batch item %d: nq=%d nk=%d nh=%d hd=%d c=%d b=%g", i, nq, gi[i].nk, nh, hd,
                     gi[i].causal, gi[i].beta);
            compare("attention", sh, og, ho[i], hinit[i], nq, d, ldo);
            g_gpu.free(&g_gpu, dq[i]); g_gpu.free(&g_gpu, dk[i]); g_gpu.free(&g_gpu, dv[i]);
            free(og); free(os); free(hq[i]); free(hk[i]); free(hv[i]); free(ho[i]); free(hinit[i]);
        }
        g_n++;
        if (!bitwise) g_fail++;
        printf("%-5s %-10s nh=%d hd=%d: %d items, attention_batch == attention bitwise\n", bitwise ? "ok" : "FAIL",
               "att_batch", nh, hd, N);
    }
}

static void test_swiglu(void) {
    const int odd[] = {1, 7, 19, 111, 128};
    char sh[128];
    for (int a = 0; a < 5; a++) {
        int n = odd[a], F = a == 4 ? 1280 : odd[(a + 1) % 4], ldh = 2 * F + 1, ldo = F + 2;
        float *h = rnd((size_t)n * ldh, 4), *o = rnd((size_t)n * ldo, 1);
        float *og0 = malloc((size_t)n * ldo * 4);
        memcpy(og0, o, (size_t)n * ldo * 4);
        float *dh = dev(h, (size_t)n * ldh), *dout = dev(og0, (size_t)n * ldo);
        g_gpu.swiglu(&g_gpu, dout, ldo, dh, ldh, n, F);
        g_cpu.swiglu(&g_cpu, o, ldo, h, ldh, n, F);
        float *og = host(dout, (size_t)n * ldo);
        snprintf(sh, sizeof sh, "n=%d F=%d", n, F);
        compare("swiglu", sh, og, o, og0, n, F, ldo);
        g_gpu.free(&g_gpu, dh);
        free(h); free(o); free(og0); free(og);
    }
}

static void test_embed_copy2d(void) {
    int V = 19, d = 7, n = 111;
    float *E = rnd((size_t)V * d, 1), *o = rnd((size_t)n * d, 1);
    int32_t ids[111];
    for (int i = 0; i < n; i++) ids[i] = (i * 7) % V;
    float *dE = dev(E, (size_t)V * d), *dout = dev(o, (size_t)n * d);
    int32_t *dids = g_gpu.alloc(&g_gpu, sizeof ids);
    g_gpu.upload(&g_gpu, dids, ids, sizeof ids);
    g_gpu.embed(&g_gpu, dout, dE, dids, n, d);
    g_cpu.embed(&g_cpu, o, E, ids, n, d);
    float *og = host(dout, (size_t)n * d);
    compare("embed", "V=19 d=7 n=111", og, o, NULL, n, d, d);
    free(og);
    /* copy2d: 5 of 7 columns of E into a wider strided destination */
    int ldd = 9;
    float *dst = rnd((size_t)V * ldd, 1), *init = malloc((size_t)V * ldd * 4);
    memcpy(init, dst, (size_t)V * ldd * 4);
    float *ddst = dev(dst, (size_t)V * ldd);
    g_gpu.copy2d(&g_gpu, ddst, ldd, dE + 1, d, V, 5);
    g_cpu.copy2d(&g_cpu, dst, ldd, E + 1, d, V, 5);
    float *dg = host(ddst, (size_t)V * ldd);
    compare("copy2d", "rows=19 cols=5 lds=7 ldd=9", dg, dst, init, V, 5, ldd);
    g_gpu.free(&g_gpu, dE); g_gpu.free(&g_gpu, dids);
    free(E); free(o); free(dst); free(init); free(dg);
}

/* attention_pairs: TC_CUDA_ATT_PAIRS + 12 sessions (a launch of the large
 * parameter struct, then one of the small; split: launches of
 * TC_CUDA_PAIR_SPLIT_MAX), a
 * causal window softmax each and, for most, a second non-causal one over a
 * zip added into the same output; one session with 3 query rows, one with
 * 7 (the one-by-one path), one with no window rows but a zip (run alone,
 * as backend.h says). Must equal, bit for bit, the window batch
 * followed by the zip batch (what the model ran before), and the CPU
 * within the attention bound. split: the two softmaxes in two blocks at
 * once (tc_backend_cuda_set_pairs 2: every launch), else one block after
 * the other; run split, sequential, split again (the pair counters must be
 * left zero). */
static void test_attention_pairs(int split) {
    tc_backend_cuda_set_pairs(&g_gpu, split ? 2 : 0);
    enum { N = TC_CUDA_ATT_PAIRS + 12 };
    const int nh = 12, hd = 36, d = nh * hd, ldq = 3 * d + 1, ldo = d + 3;
    tc_att_item w[N], z[N], w2[N], zc[N];
    float *hq[N], *hk[N], *hv[N], *hzk[N], *hzv[N], *ho[N], *dq[N], *dk[N], *dv[N], *dzk[N], *dzv[N], *d1[N], *d2[N];
    int nz = 0;
    for (int i = 0; i < N; i++) {
        const int nq = i == 10 ? 7 : i == 5 ? 3 : 1, nk = 1 + (i * 37) % 300, zl = i % 4 == 3 ? 0 : 8 + (i * 11) % 60;
        const int64_t kp = 500 + i, qp = kp + nk - nq; /* the window's last rows */
        hq[i] = rnd((size_t)nq * ldq, 2), hk[i] = rnd((size_t)nk * d, 2), hv[i] = rnd((size_t)nk * d, 1);
        hzk[i] = rnd((size_t)(zl + 1) * d, 2), hzv[i] = rnd((size_t)(zl + 1) * d, 1);
        ho[i] = nans((size_t)nq * ldo);
        dq[i] = dev(hq[i], (size_t)nq * ldq), dk[i] = dev(hk[i], (size_t)nk * d), dv[i] = dev(hv[i], (size_t)nk * d);
        dzk[i] = dev(hzk[i], (size_t)(zl + 1) * d), dzv[i] = dev(hzv[i], (size_t)(zl + 1) * d);
        d1[i] = dev(ho[i], (size_t)nq * ldo), d2[i] = dev(ho[i], (size_t)nq * ldo);
        w[i] = (tc_att_item){d1[i], dq[i], dk[i], dv[i], ldo, ldq, d, d, nq, nk, qp, kp, 1, 0.f};
        w2[i] = w[i], w2[i].out = d2[i];
        z[i] = zl ? (tc_att_item){d1[i], dq[i], dzk[i], dzv[i], ldo, ldq, d, d, nq, zl, qp, 0, 0, 1.f}
                  : (tc_att_item){0};
        const int zonly = i == 6; /* no window rows, a zip: backend.h still runs z (here with beta 0) */
        if (zonly) w[i].nq = w2[i].nq = 0, z[i].beta = 0.f;
        if (zl) zc[nz] = z[i], zc[nz++].out = d2[i];
        if (!zonly)
            g_cpu.attention(&g_cpu, ho[i], ldo, hq[i], ldq, hk[i], d, hv[i], d, nq, nk, nh, hd, qp, kp, 1, 0.f);
        if (zl)
            g_cpu.attention(&g_cpu, ho[i], ldo, hq[i], ldq, hzk[i], d, hzv[i], d, nq, zl, nh, hd, qp, 0, 0,
                            zonly ? 0.f : 1.f);
    }
    g_gpu.attention_pairs(&g_gpu, w, z, N, nh, hd);
    g_gpu.attention_batch(&g_gpu, w2, N, nh, hd);
    g_gpu.attention_batch(&g_gpu, zc, nz, nh, hd);
    int bitwise = 1;
    for (int i = 0; i < N; i++) {
        const int nq = w[i].nq ? w[i].nq : z[i].nq;
        float *o1 = host(d1[i], (size_t)nq * ldo), *o2 = host(d2[i], (size_t)nq * ldo);
        if (memcmp(o1, o2, (size_t)nq * ldo * 4) != 0) bitwise = 0;
        char sh[160];
        snprintf(sh, sizeof sh, "pair %d: nq=%d window %d zip %d", i, nq, w[i].nk, z[i].nq ? z[i].nk : 0);
        compare("attention", sh, o1, ho[i], NULL, nq, d, ldo);
        g_gpu.free(&g_gpu, dq[i]), g_gpu.free(&g_gpu, dk[i]), g_gpu.free(&g_gpu, dv[i]);
        g_gpu.free(&g_gpu, dzk[i]), g_gpu.free(&g_gpu, dzv[i]);
        free(o1), free(o2), free(hq[i]), free(hk[i]), free(hv[i]), free(hzk[i]), free(hzv[i]), free(ho[i]);
    }
    g_n++;
    if (!bitwise) g_fail++;
    printf("%-5s %-10s %d sessions (%d with a zip), %s: attention_pairs == window batch + zip batch, bitwise\n",
           bitwise ? "ok" : "FAIL", "att_pairs", N, nz, split ? "two blocks a pair" : "one block a pair");
    tc_backend_cuda_set_pairs(&g_gpu, 1);
}

/* 16-bit weights (TC_CUDA_WEIGHTS=bf16 / f16): linear and embed of a
 * backend holding its matrices in 16 bits against the CPU on the same
 * rounded values -- weights and inputs (the GPU rounds x itself, to
 * nearest even as the host does), so only the summation order differs:
 * the fp32 bound. n <= 8 is the skinny kernel, larger n the tensor-core
 * GEMM, 700 rows in two chunks; k = 432 and 1280 take the 16-byte loads,
 * 19 the scalar loop. */
static float round16(int wtype, float v) {
    return wtype == TC_WT_BF16 ? tc_bf16_to_f32(tc_f32_to_bf16(v)) : tc_f16_to_f32(tc_f32_to_f16(v));
}

static void test_weights16(int wtype) {
    const char *name = wtype == TC_WT_BF16 ? "bf16" : "f16";
    tc_backend g16;
    setenv("TC_CUDA_WEIGHTS", name, 1);
    tc_status st = tc_backend_cuda_init(&g16, 0);
    unsetenv("TC_CUDA_WEIGHTS");
    g_n++;
    if (st != TC_OK || g16.wtype != wtype || !g16.upload_weight) {
        g_fail++;
        printf("FAIL  cuda init with TC_CUDA_WEIGHTS=%s: %s\n", name, st != TC_OK ? tc_error_get() : "wrong wtype");
        return;
    }
    const int ns[] = {1, 3, 8, 9, 257, 700}, ms[] = {7, 1297}, ks[] = {432, 19, 1280};
    char sh[128];
    for (int a = 0; a < 6; a++)
        for (int b = 0; b < 2; b++)
            for (int kk = 0; kk < 3; kk++) {
                const int n = ns[a], m = ms[b], k = ks[kk], ldy = m + 3, ldx = k + 4, has_bias = (a + kk) % 2;
                const float beta = (a + b) % 2 ? 1.f : 0.f;
                float *x = rnd((size_t)n * ldx, 1), *W = rnd((size_t)m * k, 1), *bias = rnd(m, 1);
                float *y = rnd((size_t)n * ldy, 1), *yg0 = nans((size_t)n * ldy);
                if (beta != 0.f) memcpy(yg0, y, (size_t)n * ldy * 4);
                for (size_t i = 0; i < (size_t)m * k; i++) /* the CPU gets the values the GPU will hold */
                    W[i] = round16(wtype, W[i]);
                float *xr = malloc((size_t)n * ldx * 4); /* ... and the inputs it will multiply */
                for (size_t i = 0; i < (size_t)n * ldx; i++) xr[i] = round16(wtype, x[i]);
                void *dW = g16.alloc(&g16, tc_wt_bytes(wtype, (size_t)m * k));
                if (!dW) abort();
                g16.upload_weight(&g16, dW, W, (size_t)m, (size_t)k);
                float *dx = g16.alloc(&g16, (size_t)n * ldx * 4), *db = g16.alloc(&g16, (size_t)m * 4);
                float *dy = g16.alloc(&g16, (size_t)n * ldy * 4);
                g16.upload(&g16, dx, x, (size_t)n * ldx * 4);
                g16.upload(&g16, db, bias, (size_t)m * 4);
                g16.upload(&g16, dy, yg0, (size_t)n * ldy * 4);
                g16.linear(&g16, dy, ldy, dx, ldx, dW, has_bias ? db : NULL, n, m, k, beta);
                g_cpu.linear(&g_cpu, y, ldy, xr, ldx, W, has_bias ? bias : NULL, n, m, k, beta);
                float *yg = malloc((size_t)n * ldy * 4);
                g16.download(&g16, yg, dy, (size_t)n * ldy * 4);
                snprintf(sh, sizeof sh, "%s n=%d m=%d k=%d beta=%g bias=%d", name, n, m, k, beta, has_bias);
                compare("linear", sh, yg, y, yg0, n, m, ldy);
                if (n == 1 && b == 1 && kk == 0) { /* embed from the same matrix: rows of E are rows of W */
                    int32_t ids[5] = {0, 1296, 5, 5, 640}, *did = g16.alloc(&g16, sizeof ids);
                    float *out = nans((size_t)5 * k), *want = malloc((size_t)5 * k * 4);
                    float *dout = g16.alloc(&g16, (size_t)5 * k * 4);
                    g16.upload(&g16, did, ids, sizeof ids);
                    g16.embed(&g16, dout, dW, did, 5, k);
                    g16.download(&g16, out, dout, (size_t)5 * k * 4);
                    g_cpu.embed(&g_cpu, want, W, ids, 5, k);
                    snprintf(sh, sizeof sh, "%s embed 5 rows of [%d, %d]", name, m, k);
                    compare("embed", sh, out, want, NULL, 5, k, k);
                    g16.free(&g16, did), g16.free(&g16, dout);
                    free(out), free(want);
                }
                g16.free(&g16, dW), g16.free(&g16, dx), g16.free(&g16, db), g16.free(&g16, dy);
                free(x), free(xr), free(W), free(bias), free(y), free(yg0), free(yg);
            }
    if (tc_backend_cuda_sync(&g16) != TC_OK) {
        g_fail++;
        printf("FAIL  %s backend error: %s\n", name, tc_error_get());
    }
    tc_backend_cuda_free(&g16);
}

/* rope_kv_batch: TC_CUDA_ROPE_BATCH + 14 sessions (a launch of the large
 * parameter struct, then one of the small) of 1-3
 * rows, one of 9, at positions up to 10^6, QKV rows padded (ldq > 3d);
 * against the CPU backend's op (rope + two copy2d per item): Q|K within
 * rope's bound, the padding untouched, V copied exactly, K in the window
 * equal to K in QKV */
static void test_rope_kv_batch(void) {
    enum { NI = TC_CUDA_ROPE_BATCH + 14 };
    const int nh = 12, hd = 36, d = nh * hd, ldq = 3 * d + 5;
    int rows[NI], off[NI + 1];
    int64_t pos[NI];
    off[0] = 0;
    for (int i = 0; i < NI; i++) {
        /* frand is in [-1, 1): rows 1..3, positions 0..1e6 */
        rows[i] = i == 33 ? 9 : 1 + (int)((frand() + 1.f) * 1.4995f);
        pos[i] = (int64_t)((frand() + 1.f) * 5e5f);
        off[i + 1] = off[i] + rows[i];
    }
    const int M = off[NI];
    float *q = rnd((size_t)M * ldq, 1), *init = malloc((size_t)M * ldq * 4);
    float *kc = nans((size_t)M * d), *vc = nans((size_t)M * d);
    memcpy(init, q, (size_t)M * ldq * 4);
    float *dq = dev(q, (size_t)M * ldq), *dk = dev(kc, (size_t)M * d), *dv = dev(vc, (size_t)M * d);
    tc_rope_kv_item ig[NI], ic[NI];
    for (int i = 0; i < NI; i++) {
        ig[i] = (tc_rope_kv_item){dq + (size_t)off[i] * ldq, dk + (size_t)off[i] * d, dv + (size_t)off[i] * d, rows[i],
                                  pos[i]};
        ic[i] = (tc_rope_kv_item){q + (size_t)off[i] * ldq, kc + (size_t)off[i] * d, vc + (size_t)off[i] * d, rows[i],
                                  pos[i]};
    }
    g_gpu.rope_kv_batch(&g_gpu, ig, NI, ldq, nh, hd, 10000.f);
    g_cpu.rope_kv_batch(&g_cpu, ic, NI, ldq, nh, hd, 10000.f);
    float *qg = host(dq, (size_t)M * ldq), *kg = host(dk, (size_t)M * d), *vg = host(dv, (size_t)M * d);
    char sh[128];
    snprintf(sh, sizeof sh, "rope_kv: %d items, %d rows, nh=%d hd=%d", NI, M, nh, hd);
    compare("rope", sh, qg, q, init, M, 2 * d, ldq);
    compare("rope", "rope_kv: K in the window", kg, kc, NULL, M, d, d);
    compare("copy2d", "rope_kv: V in the window", vg, vc, NULL, M, d, d);
    int kq = 0; /* the window's K is the rotated K of QKV, bit for bit */
    for (int r = 0; r < M; r++) kq += memcmp(kg + (size_t)r * d, qg + (size_t)r * ldq + d, (size_t)d * 4) != 0;
    g_n++;
    if (kq) g_fail++;
    printf("%-5s %-10s %-48s %d rows differ\n", kq ? "FAIL" : "ok", "rope_kv", "window K == QKV's K", kq);
    /* an odd head_dim: the kernel walks the pairs of the whole Q|K row,
     * not each head's, so the launcher refuses it before any launch */
    tc_rope_kv_item odd = {dq, dk, dv, 1, 0};
    const cudaError_t oe =
        tc_cuda_rope_kv((cudaStream_t)tc_backend_cuda_stream(&g_gpu), &odd, 1, ldq, 1, 35, 10000.f, NULL);
    g_n++;
    if (oe != cudaErrorInvalidValue) g_fail++;
    printf("%-5s %-10s %-48s %s\n", oe == cudaErrorInvalidValue ? "ok" : "FAIL", "rope_kv", "head_dim 35 refused",
           cudaGetErrorString(oe));
    free(q), free(init), free(kc), free(vc), free(qg), free(kg), free(vg);
}

/* qkv_rope (the projection, RoPE and window appends in one launch, up to 8
 * rows): bit for bit the GPU's linear_pre then rope_kv_batch -- QKV (its
 * padding untouched), K and V in the windows (rows around them left as
 * they were). Items of 1, 0 and several rows; 9 rows and items out of row
 * order take the backend's two-op path, the same bits by construction. */
static void test_qkv_rope(void) {
    static const struct { int nh, hd, ni, n[6]; int reverse; } cs[] = {
        {12, 36, 1, {1}, 0},          {12, 36, 4, {2, 0, 1, 2}, 0}, {12, 36, 6, {1, 1, 2, 1, 2, 1}, 0},
        {4, 16, 3, {3, 3, 3}, 0},     {4, 16, 2, {1, 2}, 1},        {2, 64, 2, {4, 4}, 0},
        /* more than 8 rows: in groups of 8 with skinny_rows >= 20, else the two ops */
        {12, 36, 5, {4, 4, 4, 4, 4}, 0}, {4, 16, 6, {3, 1, 2, 3, 1, 3}, 0},
    };
    char sh[160];
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) {
        const int nh = cs[t].nh, hd = cs[t].hd, d = nh * hd, ldq = 3 * d + 3, ni = cs[t].ni;
        int rows = 0, off[6];
        for (int i = 0; i < ni; i++) off[i] = rows, rows += cs[t].n[i];
        const int wrows = rows + 2; /* a window of the items' rows with a spare row either side */
        float *x = rnd((size_t)rows * d, 2), *W = rnd((size_t)3 * d * d, 1), *bias = rnd((size_t)3 * d, 1),
              *lw = rnd(d, 1), *lb = rnd(d, 1), *q0 = nans((size_t)rows * ldq), *w0 = rnd((size_t)wrows * d, 1);
        for (int i = 0; i < rows * d; i++) x[i] += 3.0f;
        float *dx = dev(x, (size_t)rows * d), *dW = dev(W, (size_t)3 * d * d), *db = dev(bias, 3 * d),
              *dlw = dev(lw, d), *dlb = dev(lb, d), *dt = dev(q0, (size_t)rows * d);
        float *dq[2], *dk[2], *dv[2];
        tc_rope_kv_item it[2][6];
        for (int a = 0; a < 2; a++) {
            dq[a] = dev(q0, (size_t)rows * ldq), dk[a] = dev(w0, (size_t)wrows * d), dv[a] = dev(w0, (size_t)wrows * d);
            for (int i = 0; i < ni; i++) {
                const int ii = cs[t].reverse ? ni - 1 - i : i; /* reversed: item i's rows are not next */
                it[a][i] = (tc_rope_kv_item){dq[a] + (size_t)off[ii] * ldq, dk[a] + (size_t)(off[ii] + 1) * d,
                                             dv[a] + (size_t)(off[ii] + 1) * d, cs[t].n[ii], 1000 + 97 * ii};
            }
        }
        g_gpu.qkv_rope(&g_gpu, it[0], ni, dq[0], ldq, dx, dt, dW, db, rows, dlw, dlb, 1e-5f, nh, hd, 10000.f);
        g_gpu.linear_pre(&g_gpu, TC_PRE_LN, dq[1], ldq, dx, d, dt, dW, db, rows, 3 * d, d, 0.f, dlw, dlb, 1e-5f);
        g_gpu.rope_kv_batch(&g_gpu, it[1], ni, ldq, nh, hd, 10000.f);
        float *q1 = host(dq[0], (size_t)rows * ldq), *q2 = host(dq[1], (size_t)rows * ldq);
        float *k1 = host(dk[0], (size_t)wrows * d), *k2 = host(dk[1], (size_t)wrows * d);
        float *v1 = host(dv[0], (size_t)wrows * d), *v2 = host(dv[1], (size_t)wrows * d);
        int same = !memcmp(q1, q2, (size_t)rows * ldq * 4) && !memcmp(k1, k2, (size_t)wrows * d * 4) &&
               !memcmp(v1, v2, (size_t)wrows * d * 4);
        /* and the window's spare rows are as they were */
        same = same && !memcmp(k1, w0, (size_t)d * 4) && !memcmp(v1 + (size_t)(wrows - 1) * d, w0 + (size_t)(wrows - 1) * d, (size_t)d * 4);
        snprintf(sh, sizeof sh, "%d items, %d rows, nh=%d hd=%d%s", ni, rows, nh, hd,
                 cs[t].reverse ? ", out of row order" : rows > g_skinny_rows ? ", two-op path" : rows > 8 ? ", groups of 8" : "");
        /* (with skinny rows 1 and one row, the fused kernel; else the two ops) */
        g_n++;
        if (!same) g_fail++;
        printf("%-5s qkv_rope   %-48s == linear_pre + rope_kv_batch, bitwise\n", same ? "ok" : "FAIL", sh);
        g_gpu.free(&g_gpu, dx), g_gpu.free(&g_gpu, dW), g_gpu.free(&g_gpu, db), g_gpu.free(&g_gpu, dlw);
        g_gpu.free(&g_gpu, dlb), g_gpu.free(&g_gpu, dt);
        free(x), free(W), free(bias), free(lw), free(lb), free(q0), free(w0);
        free(q1), free(q2), free(k1), free(k2), free(v1), free(v2);
    }
}

/* topk: the same rows through the CUDA op and tc_topk_rows must give the
 * same ids and bit-identical values: random rows, rows of 5 distinct values
 * (ties decided by id), ±0 / ±inf / NaN, a spike, for k = 1 (the argmax
 * path) up to TC_TOPK_MAX and V = 1 .. 50257 */
static void test_topk(void) {
    static const int Vs[] = {1, 7, 1000, 50257};
    static const int ks[] = {1, 2, 40, 1000, TC_TOPK_MAX};
    const int n = 5;
    for (size_t vi = 0; vi < sizeof Vs / sizeof *Vs; vi++) {
        const int V = Vs[vi];
        float *x = rnd((size_t)n * V, 10.f);
        for (int j = 0; j < V; j++) {
            x[V + j] = (float)(j * 7 % 5) - 2.f; /* row 1: 5 values */
            /* row 2: NaN, -0, +0, -inf */
            x[2 * V + j] = j % 11 == 0 ? NAN : j % 3 == 0 ? -0.f : (j % 3 == 1 ? 0.f : -INFINITY);
            x[3 * V + j] = 1e-7f * (float)(j % 13); /* row 3: tiny, tied */
        }
        x[4 * V + V / 2] = INFINITY; /* row 4: random with a spike */
        float *dx = dev(x, (size_t)n * V);
        for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
            const int k = ks[ki] < V ? ks[ki] : V;
            int32_t *hid = malloc((size_t)n * k * 4), *gid = malloc((size_t)n * k * 4);
            float *hv = malloc((size_t)n * k * 4), *gv = malloc((size_t)n * k * 4);
            int32_t *did = g_gpu.alloc(&g_gpu, (size_t)n * k * 4);
            float *dv = g_gpu.alloc(&g_gpu, (size_t)n * k * 4);
            if (!hid || !gid || !hv || !gv || !did || !dv) abort();
            tc_topk_rows(hid, hv, x, n, V, k);
            g_gpu.topk(&g_gpu, did, dv, dx, n, V, k);
            g_gpu.download(&g_gpu, gid, did, (size_t)n * k * 4);
            g_gpu.download(&g_gpu, gv, dv, (size_t)n * k * 4);
            int bad = -1;
            for (int i = 0; i < n * k && bad < 0; i++)
                if (gid[i] != hid[i] || memcmp(&gv[i], &hv[i], 4)) bad = i;
            g_n++;
            if (bad >= 0) g_fail++;
            char shape[64];
            snprintf(shape, sizeof shape, "%d rows, V %d, k %d", n, V, k);
            printf("%-5s %-10s %-48s", bad < 0 ? "ok" : "FAIL", "topk", shape);
            if (bad >= 0)
                printf(" row %d entry %d: gpu id %d (%a), cpu id %d (%a)", bad / k, bad % k, gid[bad], gv[bad],
                       hid[bad], hv[bad]);
            printf("\n");
            g_gpu.free(&g_gpu, did), g_gpu.free(&g_gpu, dv);
            free(hid), free(gid), free(hv), free(gv);
        }
        g_gpu.free(&g_gpu, dx);
        free(x);
    }
}

/* sample: rows of every kind through the CUDA op (draws in the launch's
 * parameters, 32 rows a launch, and from device memory as a replayed graph
 * reads them) and through tc_sample_rows must give the same tokens, for
 * greedy, plain temperature, top-k (past TC_TOPK_MAX too), top-p and both,
 * V = 1 .. 50257. */
static void test_sample_kind(int kind) {
    static const int Vs[] = {1, 7, 1000, 50257};
    static const float temps[] = {0.05f, 0.7f, 1.f, 3.f, 1000.f};
    static const int topks[] = {0, 1, 3, 40, 1500};
    static const float topps[] = {1.f, 0.9f, 0.5f, 1e-6f};
    const int n = 45; /* two launches of 32 and 13 rows */
    (void)tol_of("sample");
    for (size_t vi = 0; vi < sizeof Vs / sizeof *Vs; vi++) {
        const int V = Vs[vi];
        float *x = rnd((size_t)n * V, 10.f);
        for (int r = 0; r < n; r++)
            for (int j = 0; j < V; j++) {
                float *v = &x[(size_t)r * V + j];
                switch (r % 6) {
                case 1: *v = (float)(j * 7 % 5) - 2.f; break; /* 5 values, ties by id */
                case 2: *v = j % 11 == 0 ? NAN : j % 3 == 0 ? -0.f : (j % 3 == 1 ? 0.f : -INFINITY); break;
                case 3: *v = 1e-7f * (float)(j % 13); break; /* tiny, tied */
                case 4: if (j == V / 2) *v = r % 12 == 4 ? INFINITY : 40.f; break; /* a spike */
                case 5: *v = 0.25f; break; /* all equal */
                default: break;
                }
            }
        tc_draw *d = calloc((size_t)n, sizeof *d);
        for (int r = 0; r < n; r++) {
            d[r].temperature = r % 9 == 0 ? 0.f : temps[r % 5];
            d[r].top_k = topks[(r / 5) % 5];
            d[r].top_p = topps[(r / 2) % 4];
            g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
            d[r].r = g_rng >> 11;
        }
        int32_t *want = malloc((size_t)n * 4), *got = malloc((size_t)n * 4), *got2 = malloc((size_t)n * 4);
        float *dx = dev(x, (size_t)n * V);
        int32_t *dt = g_gpu.alloc(&g_gpu, (size_t)n * 4), *dt2 = g_gpu.alloc(&g_gpu, (size_t)n * 4);
        tc_draw *dd = g_gpu.alloc(&g_gpu, (size_t)n * sizeof *d);
        if (!want || !got || !got2 || !dx || !dt || !dt2 || !dd) abort();
        if (tc_sample_rows(want, x, n, V, d) != TC_OK) abort();
        g_gpu.sample(&g_gpu, dt, dx, n, V, d);
        g_gpu.download(&g_gpu, got, dt, (size_t)n * 4);
        g_gpu.upload(&g_gpu, dd, d, (size_t)n * sizeof *d);
        const cudaError_t e = tc_cuda_sample((cudaStream_t)tc_backend_cuda_stream(&g_gpu), dt2, dx, n, V, NULL, dd);
        g_gpu.download(&g_gpu, got2, dt2, (size_t)n * 4);
        for (int path = 0; path < 2; path++) {
            const int32_t *g = path ? got2 : got;
            int bad = path && e != cudaSuccess ? n : -1;
            for (int r = 0; r < n && bad < 0; r++)
                if (g[r] != want[r]) bad = r;
            g_n++;
            if (bad >= 0) g_fail++;
            char shape[80];
            snprintf(shape, sizeof shape, "walk %d, %d rows, V %d, draws from %s", kind, n, V,
                     path ? "device memory" : "parameters");
            printf("%-5s %-10s %-48s", bad < 0 ? "ok" : "FAIL", "sample", shape);
            if (bad >= 0 && bad < n)
                printf(" row %d (T %g top_k %d top_p %g): gpu %d, cpu %d", bad, d[bad].temperature, d[bad].top_k,
                       d[bad].top_p, g[bad], want[bad]);
            if (path && e != cudaSuccess) printf(" launch: %s", cudaGetErrorString(e));
            printf("\n");
        }
        g_gpu.free(&g_gpu, dx), g_gpu.free(&g_gpu, dt), g_gpu.free(&g_gpu, dt2), g_gpu.free(&g_gpu, dd);
        free(want), free(got), free(got2), free(d), free(x);
    }
}

/* every walk of sample.cu (TC_CUDA_SAMPLE_KERNEL), then the default back */
static void test_sample(void) {
    for (int kind = 0; kind <= 2; kind++) {
        if (tc_cuda_sample_set_kernel(kind) != kind) abort();
        test_sample_kind(kind);
    }
    (void)tc_cuda_sample_set_kernel(2);
}

int main(void) {
    /* line-buffered: an abort (a poisoned device) must not lose the lines
     * that say how far the test got */
    setvbuf(stdout, NULL, _IOLBF, 0);
    int ndev = tc_backend_cuda_device_count();
    if (ndev == 0) {
        printf("SKIPPED: no CUDA device\n");
        return TC_SKIP;
    }
    if (tc_backend_cuda_init(&g_gpu, 0) != TC_OK) {
        printf("FAIL: cuda init on a machine with %d device(s): %s\n", ndev, tc_error_get());
        return 1;
    }
    tc_backend_cpu_init(&g_cpu, 0);
    g_skinny_rows = tc_backend_cuda_set_skinny_rows(&g_gpu, TC_CUDA_SKINNY_MAX); /* read (TC_CUDA_SKINNY_ROWS) */
    (void)tc_backend_cuda_set_skinny_rows(&g_gpu, g_skinny_rows);
    /* TC_GPU_OPS_ONLY=NAME runs one group (for the slower sanitizer tools:
     * gpu-run-bundle's racecheck stage) */
    const char *only = getenv("TC_GPU_OPS_ONLY");
#define GROUP(name) if (!only || !*only || !strcmp(only, name))
    GROUP("linear") {
        test_embed_copy2d();
        test_layernorm();
        test_linear();
        test_linear_pre();
        /* the skinny kernels with 2 and 4 columns a block (the default is 8) */
        for (int w = 2; w <= 4; w += 2) {
            printf("--    skinny linears with %d warps a block\n", w);
            tc_backend_cuda_set_skinny_warps(w);
            test_linear();
            test_linear_pre();
            test_qkv_rope();
        }
        tc_backend_cuda_set_skinny_warps(8);
        /* up to 32 rows on the skinny kernels, in groups of 8; and only
         * 1 (every batch on cuBLAS and the unfused ops) */
        const int rows_was = tc_backend_cuda_set_skinny_rows(&g_gpu, TC_CUDA_SKINNY_ROWS);
        TC_ASSERT(rows_was >= 0, "skinny rows");
        for (int sr = TC_CUDA_SKINNY_ROWS; sr >= 1; sr = sr > 1 ? 1 : 0) {
            printf("--    skinny linears of up to %d rows\n", sr);
            (void)tc_backend_cuda_set_skinny_rows(&g_gpu, sr);
            g_skinny_rows = sr;
            test_linear();
            test_linear_pre();
            test_qkv_rope();
            if (sr > TC_CUDA_SKINNY_MAX) test_skinny_groups();
        }
        (void)tc_backend_cuda_set_skinny_rows(&g_gpu, rows_was);
        g_skinny_rows = rows_was;
        test_rope();
        test_rope_kv_batch();
        test_qkv_rope();
        test_swiglu();
    }
    GROUP("attention") {
        test_attention();
        test_attention_batch();
        test_attention_pairs(1);
        test_attention_pairs(0);
        test_attention_pairs(1);
    }
    GROUP("sample") {
        test_topk();
        tc_backend_cuda_set_sample(&g_gpu, 1);
        test_sample();
    }
    GROUP("weights16") {
        test_weights16(TC_WT_BF16);
        test_weights16(TC_WT_F16);
    }
#undef GROUP
    if (only && *only && strcmp(only, "linear") && strcmp(only, "attention") && strcmp(only, "sample") &&
        strcmp(only, "weights16")) {
        printf("FAIL: TC_GPU_OPS_ONLY '%s': expected linear, attention, sample or weights16\n", only);
        g_fail++;
    }
    if (tc_backend_cuda_sync(&g_gpu) != TC_OK) {
        printf("FAIL: cuda backend reported an error: %s\n", tc_error_get());
        g_fail++;
    }
    tc_backend_cuda_free(&g_gpu);
    tc_backend_cpu_free(&g_cpu);
    printf("%d/%d gpu op checks passed\n", g_n - g_fail, g_n);
    return g_fail ? 1 : 0;
}
