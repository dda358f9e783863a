/* naive.c — the slowest, plainest version of every op: triple loops, a
 * full score row per query, double accumulation. Used only by tests as the
 * yardstick the CPU (and later CUDA) backend is measured against. */
#include "../backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/safetensors.h"

/* weight i of a matrix in the backend's weight format */
static float wget(const tc_backend *be, const void *W, size_t i) {
    switch (be->wtype) {
    case TC_WT_BF16: return tc_bf16_to_f32(((const uint16_t *)W)[i]);
    case TC_WT_F16: return tc_f16_to_f32(((const uint16_t *)W)[i]);
    default: return ((const float *)W)[i];
    }
}

/* an activation as a 16-bit-weight linear multiplies it (the CUDA
 * backend's skinny and tensor-core paths alike): rounded to that format */
static float xget(const tc_backend *be, float v) {
    switch (be->wtype) {
    case TC_WT_BF16: return tc_bf16_to_f32(tc_f32_to_bf16(v));
    case TC_WT_F16: return tc_f16_to_f32(tc_f32_to_f16(v));
    default: return v;
    }
}

static void nv_upload_weight(tc_backend *be, void *dst, const float *src, size_t rows, size_t cols) {
    uint16_t *d = dst;
    for (size_t i = 0; i < rows * cols; i++)
        d[i] = be->wtype == TC_WT_BF16 ? tc_f32_to_bf16(src[i]) : tc_f32_to_f16(src[i]);
}

static void *nv_alloc(tc_backend *be, size_t bytes) { (void)be; return malloc(bytes ? bytes : 1); }
static void nv_free(tc_backend *be, void *p) { (void)be; free(p); }
static void nv_copy(tc_backend *be, void *dst, const void *src, size_t bytes) { (void)be; memmove(dst, src, bytes); }
static void nv_copy2d(tc_backend *be, float *dst, int ldd, const float *src, int lds, int rows, int cols) {
    (void)be;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) dst[(size_t)i * ldd + j] = src[(size_t)i * lds + j];
}

static void nv_embed(tc_backend *be, float *out, const void *E, const int32_t *ids, int n, int d) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) out[(size_t)i * d + j] = wget(be, E, (size_t)ids[i] * d + j);
}

static void nv_layernorm(tc_backend *be, float *out, const float *x, const float *w, const float *b, int n, int d,
                         float eps) {
    (void)be;
    for (int i = 0; i < n; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < d; j++) m += x[(size_t)i * d + j];
        m /= d;
        for (int j = 0; j < d; j++) v += (x[(size_t)i * d + j] - m) * (x[(size_t)i * d + j] - m);
        v /= d;
        for (int j = 0; j < d; j++)
            out[(size_t)i * d + j] = (float)((x[(size_t)i * d + j] - m) / sqrt(v + eps) * w[j] + b[j]);
    }
}

static void nv_linear(tc_backend *be, float *y, int ldy, const float *x, int ldx, const void *W, const float *bias,
                      int n, int m, int k, float beta) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double s = bias ? bias[j] : 0.0;
            for (int t = 0; t < k; t++) s += (double)xget(be, x[(size_t)i * ldx + t]) * wget(be, W, (size_t)j * k + t);
            float *yy = &y[(size_t)i * ldy + j];
            *yy = (float)(beta == 0.f ? s : beta * *yy + s);
        }
}

static void nv_rope(tc_backend *be, float *x, int ld, int n, int n_head, int head_dim, int64_t pos0, float base) {
    (void)be;
    for (int i = 0; i < n; i++)
        for (int h = 0; h < n_head; h++)
            for (int j = 0; j < head_dim / 2; j++) {
                float a = (float)(pos0 + i) * tc_rope_theta(base, j, head_dim);
                float *p = x + (size_t)i * ld + (size_t)h * head_dim + 2 * j;
                float x0 = p[0], x1 = p[1];
                p[0] = x0 * cosf(a) - x1 * sinf(a);
                p[1] = x0 * sinf(a) + x1 * cosf(a);
            }
}

static void nv_attention(tc_backend *be, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                         const float *v, int ldv, int nq, int nk, int n_head, int head_dim, int64_t qpos0,
                         int64_t kpos0, int causal, float beta) {
    (void)be;
    double *s = malloc((size_t)(nk > 0 ? nk : 1) * sizeof *s);
    TC_ASSERT(s, "naive attention: out of memory");
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < nq; i++) {
            double mx = -INFINITY;
            int vis = 0;
            for (int j = 0; j < nk; j++) {
                if (causal && kpos0 + j > qpos0 + i) { s[j] = -INFINITY; continue; }
                double t = 0;
                for (int c = 0; c < head_dim; c++)
                    t += (double)q[(size_t)i * ldq + h * head_dim + c] * k[(size_t)j * ldk + h * head_dim + c];
                s[j] = t / sqrt((double)head_dim);
                mx = s[j] > mx ? s[j] : mx;
                vis++;
            }
            double sum = 0;
            for (int j = 0; j < nk; j++) { s[j] = s[j] == -INFINITY ? 0 : exp(s[j] - mx); sum += s[j]; }
            for (int c = 0; c < head_dim; c++) {
                double o = 0;
                for (int j = 0; j < nk; j++) o += s[j] * v[(size_t)j * ldv + h * head_dim + c];
                o = vis ? o / sum : 0.0;
                float *oo = &out[(size_t)i * ldo + h * head_dim + c];
                *oo = (float)(beta == 0.f ? o : beta * *oo + o);
            }
        }
    free(s);
}

static void nv_swiglu(tc_backend *be, float *out, int ldo, const float *h, int ldh, int n, int F) {
    (void)be;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < F; j++) {
            double a = h[(size_t)i * ldh + j], b = h[(size_t)i * ldh + F + j];
            out[(size_t)i * ldo + j] = (float)(a / (1.0 + exp(-a)) * b);
        }
}

tc_status tc_backend_naive_init(tc_backend *be) {
    memset(be, 0, sizeof *be);
    be->name = "naive";
    be->alloc = nv_alloc;
    be->free = nv_free;
    be->upload = nv_copy;
    be->download = nv_copy;
    be->copy2d = nv_copy2d;
    be->embed = nv_embed;
    be->layernorm = nv_layernorm;
    be->linear = nv_linear;
    be->rope = nv_rope;
    be->attention = nv_attention;
    be->swiglu = nv_swiglu;
    return TC_OK;
}

tc_status tc_backend_naive_init_wt(tc_backend *be, int wtype) {
    if (wtype != TC_WT_F32 && wtype != TC_WT_BF16 && wtype != TC_WT_F16)
        return TC_FAIL(TC_ERR_INVALID, "naive backend: unknown weight format %d", wtype);
    tc_backend_naive_init(be);
    be->wtype = wtype;
    if (wtype != TC_WT_F32) be->upload_weight = nv_upload_weight;
    return TC_OK;
}
