/* backend_cpu.c — the CPU backend: OpenBLAS SGEMM plus plain C loops the
 * compiler vectorizes. Attention is tiled flash-style (online softmax over
 * key tiles, SGEMMs per tile) so memory stays O(tile) for any context. */
#include "../backend.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TC_ATT_TQ 64  /* query rows per tile */
#define TC_ATT_TK 256 /* key rows per tile   */

float tc_rope_theta(float base, int j, int head_dim) {
    return (float)pow((double)base, -2.0 * (double)j / (double)head_dim);
}

static void *cpu_alloc(tc_backend *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
    return p;
}
static void cpu_free(tc_backend *be, void *p) { (void)be; free(p); }
static void cpu_copy(tc_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memmove(dst, src, bytes);
}
static void cpu_copy2d(tc_backend *be, float *dst, int ldd, const float *src, int lds, int rows, int cols) {
    (void)be;
    for (int i = 0; i < rows; i++) memmove(dst + (size_t)i * ldd, src + (size_t)i * lds, (size_t)cols * 4);
}

static void cpu_embed(tc_backend *be, float *out, const float *E, const int32_t *ids, int n, int d) {
    (void)be;
    for (int i = 0; i < n; i++) memcpy(out + (size_t)i * d, E + (size_t)ids[i] * d, (size_t)d * 4);
}

static void cpu_layernorm(tc_backend *be, float *out, const float *x, const float *w, const float *b, int n, int d,
                          float eps) {
    (void)be;
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *oi = out + (size_t)i * d;
        float mean = 0.f;
        for (int j = 0; j < d; j++) mean += xi[j];
        mean /= (float)d;
        float var = 0.f;
        for (int j = 0; j < d; j++) {
            float t = xi[j] - mean;
            var += t * t;
        }
        var /= (float)d;
        float rs = 1.0f / sqrtf(var + eps);
        for (int j = 0; j < d; j++) oi[j] = (xi[j] - mean) * rs * w[j] + b[j];
    }
}

static void cpu_linear(tc_backend *be, float *y, int ldy, const float *x, int ldx, const float *W, const float *bias,
                       int n, int m, int k, float beta) {
    (void)be;
    if (n <= 0 || m <= 0) return;
    if (bias) {
        if (beta == 0.f) {
            for (int i = 0; i < n; i++) memcpy(y + (size_t)i * ldy, bias, (size_t)m * 4);
        } else {
            for (int i = 0; i < n; i++) {
                float *yi = y + (size_t)i * ldy;
                for (int j = 0; j < m; j++) yi[j] = beta * yi[j] + bias[j];
            }
        }
        beta = 1.f;
    }
    if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, m, k, 1.f, W, k, x, 1, beta, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, k, 1.f, x, ldx, W, k, beta, y, ldy);
}

static void cpu_rope(tc_backend *be, float *x, int ld, int n, int n_head, int head_dim, int64_t pos0, float base) {
    (void)be;
    int half = head_dim / 2;
    float theta[512];
    float *th = half <= 512 ? theta : malloc((size_t)half * 4);
    TC_ASSERT(th, "rope: out of memory");
    for (int j = 0; j < half; j++) th[j] = tc_rope_theta(base, j, head_dim);
    for (int i = 0; i < n; i++) {
        float p = (float)(pos0 + i);
        float *xi = x + (size_t)i * ld;
        for (int j = 0; j < half; j++) {
            float a = p * th[j];
            float c = cosf(a), s = sinf(a);
            for (int h = 0; h < n_head; h++) {
                float *pr = xi + (size_t)h * head_dim + 2 * j;
                float x0 = pr[0], x1 = pr[1];
                pr[0] = x0 * c - x1 * s;
                pr[1] = x0 * s + x1 * c;
            }
        }
    }
    if (th != theta) free(th);
}

/* Flash-style attention for one head. Scratch: S [TQ, TK], acc [TQ, hd],
 * m, l [TQ]. */
static void att_head(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                     int nq, int nk, int hd, int64_t qpos0, int64_t kpos0, int causal, float beta, float *S,
                     float *acc, float *mrow, float *lrow) {
    const float scale = 1.0f / sqrtf((float)hd);
    for (int q0 = 0; q0 < nq; q0 += TC_ATT_TQ) {
        int tq = nq - q0 < TC_ATT_TQ ? nq - q0 : TC_ATT_TQ;
        for (int i = 0; i < tq; i++) { mrow[i] = -INFINITY; lrow[i] = 0.f; }
        memset(acc, 0, (size_t)tq * hd * 4);
        /* causal: keys visible to the last query of this tile */
        int nk_vis = nk;
        if (causal) {
            int64_t lim = qpos0 + q0 + tq - 1 - kpos0 + 1;
            nk_vis = lim < 0 ? 0 : (lim < nk ? (int)lim : nk);
        }
        for (int k0 = 0; k0 < nk_vis; k0 += TC_ATT_TK) {
            int tk = nk_vis - k0 < TC_ATT_TK ? nk_vis - k0 : TC_ATT_TK;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tq, tk, hd, scale, q + (size_t)q0 * ldq, ldq,
                        k + (size_t)k0 * ldk, ldk, 0.f, S, TC_ATT_TK);
            for (int i = 0; i < tq; i++) {
                float *si = S + (size_t)i * TC_ATT_TK;
                int lim = tk;
                if (causal) {
                    int64_t l = qpos0 + q0 + i - (kpos0 + k0) + 1;
                    lim = l < 0 ? 0 : (l < tk ? (int)l : tk);
                }
                float mx = mrow[i];
                for (int j = 0; j < lim; j++) mx = si[j] > mx ? si[j] : mx;
                if (lim == 0) {
                    for (int j = 0; j < tk; j++) si[j] = 0.f;
                    continue;
                }
                float corr = mrow[i] == -INFINITY ? 0.f : expf(mrow[i] - mx);
                float sum = 0.f;
                for (int j = 0; j < lim; j++) {
                    float e = expf(si[j] - mx);
                    si[j] = e;
                    sum += e;
                }
                for (int j = lim; j < tk; j++) si[j] = 0.f;
                lrow[i] = lrow[i] * corr + sum;
                mrow[i] = mx;
                float *ai = acc + (size_t)i * hd;
                for (int c = 0; c < hd; c++) ai[c] *= corr;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tq, hd, tk, 1.f, S, TC_ATT_TK,
                        v + (size_t)k0 * ldv, ldv, 1.f, acc, hd);
        }
        for (int i = 0; i < tq; i++) {
            float *oi = out + (size_t)(q0 + i) * ldo;
            const float *ai = acc + (size_t)i * hd;
            float inv = lrow[i] > 0.f ? 1.0f / lrow[i] : 0.f; /* no visible key: zero */
            if (beta == 0.f)
                for (int c = 0; c < hd; c++) oi[c] = ai[c] * inv;
            else
                for (int c = 0; c < hd; c++) oi[c] = beta * oi[c] + ai[c] * inv;
        }
    }
}

static void cpu_attention(tc_backend *be, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                          const float *v, int ldv, int nq, int nk, int n_head, int head_dim, int64_t qpos0,
                          int64_t kpos0, int causal, float beta) {
    (void)be;
    if (nq <= 0) return;
    size_t need = (size_t)TC_ATT_TQ * TC_ATT_TK + (size_t)TC_ATT_TQ * head_dim + 2 * TC_ATT_TQ;
    float stackbuf[TC_ATT_TQ * TC_ATT_TK + TC_ATT_TQ * 128 + 2 * TC_ATT_TQ];
    float *scr = need <= sizeof stackbuf / sizeof stackbuf[0] ? stackbuf : malloc(need * 4);
    TC_ASSERT(scr, "attention: out of memory for scratch");
    float *S = scr, *acc = S + (size_t)TC_ATT_TQ * TC_ATT_TK, *mrow = acc + (size_t)TC_ATT_TQ * head_dim,
          *lrow = mrow + TC_ATT_TQ;
    for (int h = 0; h < n_head; h++) {
        size_t o = (size_t)h * head_dim;
        att_head(out + o, ldo, q + o, ldq, k + o, ldk, v + o, ldv, nq, nk, head_dim, qpos0, kpos0, causal, beta, S,
                 acc, mrow, lrow);
    }
    if (scr != stackbuf) free(scr);
}

static void cpu_swiglu(tc_backend *be, float *out, int ldo, const float *h, int ldh, int n, int F) {
    (void)be;
    for (int i = 0; i < n; i++) {
        const float *a = h + (size_t)i * ldh, *b = a + F;
        float *o = out + (size_t)i * ldo;
        for (int j = 0; j < F; j++) o[j] = a[j] / (1.0f + expf(-a[j])) * b[j];
    }
}

tc_status tc_backend_cpu_init(tc_backend *be, int n_threads) {
    memset(be, 0, sizeof *be);
    be->name = "cpu";
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->copy2d = cpu_copy2d;
    be->embed = cpu_embed;
    be->layernorm = cpu_layernorm;
    be->linear = cpu_linear;
    be->rope = cpu_rope;
    be->attention = cpu_attention;
    be->swiglu = cpu_swiglu;
    if (n_threads > 0) openblas_set_num_threads(n_threads);
    return TC_OK;
}

void tc_backend_cpu_free(tc_backend *be) { memset(be, 0, sizeof *be); }
