/* backend_cpu.c — the CPU backend: OpenBLAS SGEMM plus plain C loops the
 * compiler vectorizes. Attention is tiled flash-style (online softmax over
 * key tiles, SGEMMs per tile) so memory stays O(tile) for any context; a
 * query tile of a few rows (hit steps, decode) skips SGEMM for direct dot
 * products.
 *
 * Threading, chosen for small machines (2 cores here): OpenBLAS runs
 * single-threaded and this file splits each op itself over a small pool
 * (output columns of a GEMM, heads of an attention, rows of element-wise
 * ops). Everything runs in parallel then, softmax/LayerNorm/SwiGLU
 * included, and no idle OpenBLAS thread spins in sched_yield while the
 * caller does element-wise work (25% of a sync's cycles before). Ops too
 * small to pay a wake-up (~10 us) run on the caller's thread. */
#include "../backend.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TC_ATT_TQ 128 /* query rows per tile */
#define TC_ATT_TK 256 /* key rows per tile   */
#define TC_ATT_DIRECT 4 /* query tiles up to this many rows: dot products */
#define TC_POOL_MAX 8
#define TC_PAR_MIN_FLOPS (1 << 20) /* below this an op runs on the caller's thread */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__) /* ifunc resolvers run before the sanitizer runtime starts */
/* AVX2+FMA clone of the hot loops, picked at load time (ifunc) */
#define TC_HOT __attribute__((target_clones("arch=x86-64-v3", "default"), optimize("O3")))
/* AVX2+FMA only (no default clone): the row-batch GEMM, which pins
 * vectors in registers (v8_reg); other x86 CPUs use OpenBLAS instead */
#define TC_AVX2 __attribute__((target("avx2,fma"), optimize("O3"))) /* exactly what tc_have_avx2 checks */
#define tc_have_avx2() (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
/* keep a loaded vector in a register: an empty asm that "may change" it,
 * so GCC cannot fold its load into each FMA that uses it (it does, and
 * then a value used twice is loaded twice) */
#define v8_reg(v) __asm__("" : "+x"(v))
#else
#define TC_HOT
#define TC_AVX2
#define tc_have_avx2() 1
#define v8_reg(v) ((void)0)
#endif

typedef float tc_v8 __attribute__((vector_size(32)));
/* macros, not functions: a vector argument or return value outside the
 * AVX clone would change the calling convention */
#define v8_load(p) __extension__({ tc_v8 v_; memcpy(&v_, (p), sizeof v_); v_; })
#define v8_sum(a) (((a)[0] + (a)[4]) + ((a)[1] + (a)[5])) + (((a)[2] + (a)[6]) + ((a)[3] + (a)[7]))
/* ---- the pool: one per process, shared by every CPU backend ----------
 * par_run(n, fn, arg) runs fn(arg, i, n) for tasks i = 0..n-1. Tasks are
 * claimed from a shared counter by the caller and the workers alike, so a
 * worker that the OS has not scheduled yet (a busy, shared machine) costs
 * nothing: the caller runs its tasks. The counter carries the generation
 * in its high half, so a late worker can never claim a task of a later op.
 * A second caller arriving while the pool is busy runs serially. */
typedef void (*tc_par_fn)(void *arg, int i, int n);

static struct {
    pthread_once_t once;
    pthread_mutex_t busy, mu;
    pthread_cond_t cv;
    int size;               /* threads including the caller */
    _Atomic uint64_t state; /* generation << 32 | next task */
    atomic_int done;
    _Atomic(tc_par_fn) fn;
    _Atomic(void *) arg;
    atomic_int n;
} g_pool = {.once = PTHREAD_ONCE_INIT, .busy = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER,
            .cv = PTHREAD_COND_INITIALIZER};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* claims and runs tasks of generation gen until none is left */
static void pool_drain(uint32_t gen) {
    for (;;) {
        uint64_t st = atomic_load_explicit(&g_pool.state, memory_order_acquire);
        if ((uint32_t)(st >> 32) != gen) return;
        tc_par_fn fn = atomic_load_explicit(&g_pool.fn, memory_order_acquire);
        void *arg = atomic_load_explicit(&g_pool.arg, memory_order_acquire);
        int n = atomic_load_explicit(&g_pool.n, memory_order_acquire);
        int i = (int)(uint32_t)st;
        if (i >= n) return;
        /* success proves fn/arg/n were read while gen was current */
        if (!atomic_compare_exchange_weak_explicit(&g_pool.state, &st, st + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        fn(arg, i, n);
        atomic_fetch_add_explicit(&g_pool.done, 1, memory_order_acq_rel);
    }
}

static void *pool_worker(void *p) {
    (void)p;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        int spins = 0;
        /* spin briefly (ops come in bursts), then sleep */
        while ((g = (uint32_t)(atomic_load_explicit(&g_pool.state, memory_order_acquire) >> 32)) == seen &&
               ++spins < 4000)
            cpu_relax();
        if (g == seen) {
            pthread_mutex_lock(&g_pool.mu);
            while ((g = (uint32_t)(atomic_load(&g_pool.state) >> 32)) == seen)
                pthread_cond_wait(&g_pool.cv, &g_pool.mu);
            pthread_mutex_unlock(&g_pool.mu);
        }
        seen = g;
        pool_drain(g);
    }
    return NULL;
}

static void pool_start(void) {
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    g_pool.size = nc < 1 ? 1 : nc > TC_POOL_MAX ? TC_POOL_MAX : (int)nc;
    for (int i = 1; i < g_pool.size; i++) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &at, pool_worker, NULL);
        pthread_attr_destroy(&at);
        if (rc != 0) { g_pool.size = i; break; }
    }
}

/* tasks an op of `flops` work is cut into on backend be: 1 (the caller's
 * thread) below TC_PAR_MIN_FLOPS, else two per thread for balance */
static int par_width(tc_backend *be, double flops) {
    int want = (int)(intptr_t)be->ctx;
    int w = want < g_pool.size ? want : g_pool.size;
    if (flops < TC_PAR_MIN_FLOPS || w <= 1) return 1;
    return 2 * w;
}

static void par_run(int n, tc_par_fn fn, void *arg) {
    if (n <= 1 || pthread_mutex_trylock(&g_pool.busy) != 0) {
        for (int i = 0; i < n; i++) fn(arg, i, n);
        if (n < 1) fn(arg, 0, 1);
        return;
    }
    /* every task of the previous generation is done: nobody can claim */
    atomic_store_explicit(&g_pool.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&g_pool.arg, arg, memory_order_relaxed);
    atomic_store_explicit(&g_pool.n, n, memory_order_relaxed);
    atomic_store_explicit(&g_pool.done, 0, memory_order_relaxed);
    uint32_t gen = (uint32_t)(atomic_load(&g_pool.state) >> 32) + 1;
    pthread_mutex_lock(&g_pool.mu);
    atomic_store_explicit(&g_pool.state, (uint64_t)gen << 32, memory_order_release);
    pthread_cond_broadcast(&g_pool.cv);
    pthread_mutex_unlock(&g_pool.mu);
    pool_drain(gen);
    for (int spins = 0; atomic_load_explicit(&g_pool.done, memory_order_acquire) < n; spins++)
        if (spins < 4000) cpu_relax();
        else sched_yield();
    pthread_mutex_unlock(&g_pool.busy);
}

/* [lo, hi) of part i of n over `len` items, in multiples of `align` */
static void par_range(int len, int align, int i, int n, int *lo, int *hi) {
    int units = (len + align - 1) / align;
    *lo = (int)((long)units * i / n) * align;
    *hi = (int)((long)units * (i + 1) / n) * align;
    if (*hi > len) *hi = len;
    if (*lo > len) *lo = len;
}

/* ---- vector exp: Cephes-style, ~1 ulp, vectorizable (no libm call) ---- */
static inline float exp_approx(float x) {
    float fx = x * 1.44269504088896341f;
    float n = (fx + 12582912.f) - 12582912.f; /* round to nearest: 1.5 * 2^23 */
    float r = x - n * 0.693359375f;
    r -= n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* 2^n with n clamped in the integer domain (a float select would
     * keep the loop from vectorizing): below e^-87 the result is ~1e-38
     * instead of 0, above e^88 ~1e38 instead of inf; inputs are finite */
    int32_t ni = (int32_t)n;
    ni = ni < -126 ? -126 : ni;
    ni = ni > 127 ? 127 : ni;
    int32_t bits = (ni + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

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

static void cpu_embed(tc_backend *be, float *out, const void *Ev, const int32_t *ids, int n, int d) {
    (void)be;
    const float *E = Ev;
    for (int i = 0; i < n; i++) memcpy(out + (size_t)i * d, E + (size_t)ids[i] * d, (size_t)d * 4);
}

/* ---- layernorm, rows split over the pool ------------------------------ */
typedef struct {
    float *out;
    const float *x, *w, *b;
    int n, d;
    float eps;
} ln_args;

TC_HOT static void ln_rows(const ln_args *a, int r0, int r1) {
    const int d = a->d;
    for (int i = r0; i < r1; i++) {
        const float *xi = a->x + (size_t)i * d;
        float *oi = a->out + (size_t)i * d;
        float mean = 0.f;
        for (int j = 0; j < d; j++) mean += xi[j];
        mean /= (float)d;
        float var = 0.f;
        for (int j = 0; j < d; j++) {
            float t = xi[j] - mean;
            var += t * t;
        }
        var /= (float)d;
        float rs = 1.0f / sqrtf(var + a->eps);
        for (int j = 0; j < d; j++) oi[j] = (xi[j] - mean) * rs * a->w[j] + a->b[j];
    }
}
static void ln_task(void *p, int i, int n) {
    ln_args *a = p;
    int lo, hi;
    par_range(a->n, 1, i, n, &lo, &hi);
    ln_rows(a, lo, hi);
}
static void cpu_layernorm(tc_backend *be, float *out, const float *x, const float *w, const float *b, int n, int d,
                          float eps) {
    ln_args a = {out, x, w, b, n, d, eps};
    par_run(n > 1 ? par_width(be, 8.0 * n * d) : 1, ln_task, &a);
}

/* ---- linear: output columns split over the pool ------------------------ */
typedef struct {
    float *y;
    const float *x, *W, *bias;
    int ldy, ldx, n, m, k;
    float beta;
} lin_args;

/* y = beta y + x W^T for a few rows of x (the hit step of a batch): W is
 * read once, four rows at a time, and each 4-row block is reused from L1
 * for every row of x. OpenBLAS would pack W for each call (a copy of the
 * whole weight matrix per step: 17% of a batch-16 step of the small
 * preset). Each output sums its k products in the same order whatever n
 * is. */
#define TC_SKINNY_MAX 32
TC_AVX2 static void skinny_gemm(float *y, int ldy, const float *x, int ldx, const float *W, int n, int m, int k,
                               float beta) {
    const int k8 = k & ~7;
    int j = 0;
    for (; j + 4 <= m; j += 4) {
        const float *w0 = W + (size_t)j * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
        int i = 0, g = 0;
        for (; i + 2 <= n; i += 2, g++) { /* two rows of x: each W load feeds two FMAs */
            const float *xa = x + (size_t)i * ldx, *xb = xa + ldx;
            tc_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
            /* W comes from memory once per block, the rows of x reuse it
             * from L1: fetch the next block's rows meanwhile (pair p
             * fetches row p % 4), or memory idles while the pairs compute */
            const float *pf = j + 8 <= m ? w0 + (size_t)(4 + g % 4) * k : NULL;
            for (int c = 0; c < k8; c += 8) {
                if (pf && !(c & 8)) __builtin_prefetch(pf + c, 0, 3);
                tc_v8 xu = v8_load(xa + c), xv = v8_load(xb + c), w;
                /* v8_reg: GCC would fold each W load into both FMAs
                 * (10 loads per 8 FMAs, load-port bound); held in a
                 * register it is 6 loads per 8 FMAs */
                w = v8_load(w0 + c); v8_reg(w); a0 += xu * w, b0 += xv * w;
                w = v8_load(w1 + c); v8_reg(w); a1 += xu * w, b1 += xv * w;
                w = v8_load(w2 + c); v8_reg(w); a2 += xu * w, b2 += xv * w;
                w = v8_load(w3 + c); v8_reg(w); a3 += xu * w, b3 += xv * w;
            }
            float t[8] = {0};
            for (int c = k8; c < k; c++) {
                t[0] += xa[c] * w0[c], t[1] += xa[c] * w1[c], t[2] += xa[c] * w2[c], t[3] += xa[c] * w3[c];
                t[4] += xb[c] * w0[c], t[5] += xb[c] * w1[c], t[6] += xb[c] * w2[c], t[7] += xb[c] * w3[c];
            }
            t[0] += v8_sum(a0), t[1] += v8_sum(a1), t[2] += v8_sum(a2), t[3] += v8_sum(a3);
            t[4] += v8_sum(b0), t[5] += v8_sum(b1), t[6] += v8_sum(b2), t[7] += v8_sum(b3);
            for (int r = 0; r < 2; r++) {
                float *yi = y + (size_t)(i + r) * ldy + j;
                for (int q = 0; q < 4; q++) yi[q] = beta == 0.f ? t[4 * r + q] : beta * yi[q] + t[4 * r + q];
            }
        }
        for (; i < n; i++) {
            const float *xi = x + (size_t)i * ldx;
            tc_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            const float *pf = j + 8 <= m ? w0 + (size_t)4 * k : NULL; /* the next block's first row */
            for (int c = 0; c < k8; c += 8) {
                if (pf && !(c & 8)) __builtin_prefetch(pf + c, 0, 3);
                tc_v8 xv = v8_load(xi + c);
                a0 += xv * v8_load(w0 + c);
                a1 += xv * v8_load(w1 + c);
                a2 += xv * v8_load(w2 + c);
                a3 += xv * v8_load(w3 + c);
            }
            float t0 = 0.f, t1 = 0.f, t2 = 0.f, t3 = 0.f;
            for (int c = k8; c < k; c++) {
                t0 += xi[c] * w0[c];
                t1 += xi[c] * w1[c];
                t2 += xi[c] * w2[c];
                t3 += xi[c] * w3[c];
            }
            t0 += v8_sum(a0), t1 += v8_sum(a1), t2 += v8_sum(a2), t3 += v8_sum(a3);
            float *yi = y + (size_t)i * ldy + j;
            if (beta == 0.f) yi[0] = t0, yi[1] = t1, yi[2] = t2, yi[3] = t3;
            else yi[0] = beta * yi[0] + t0, yi[1] = beta * yi[1] + t1, yi[2] = beta * yi[2] + t2, yi[3] = beta * yi[3] + t3;
        }
    }
    for (; j < m; j++) {
        const float *w0 = W + (size_t)j * k;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * ldx;
            tc_v8 a0 = {0};
            for (int c = 0; c < k8; c += 8) a0 += v8_load(xi + c) * v8_load(w0 + c);
            float t0 = 0.f;
            for (int c = k8; c < k; c++) t0 += xi[c] * w0[c];
            t0 += v8_sum(a0);
            float *yi = y + (size_t)i * ldy + j;
            *yi = beta == 0.f ? t0 : beta * *yi + t0;
        }
    }
}

static void lin_cols(const lin_args *a, int j0, int j1) {
    int mm = j1 - j0;
    if (mm <= 0) return;
    float beta = a->beta;
    float *y = a->y + j0;
    if (a->bias) {
        const float *bias = a->bias + j0;
        for (int i = 0; i < a->n; i++) {
            float *yi = y + (size_t)i * a->ldy;
            if (beta == 0.f) memcpy(yi, bias, (size_t)mm * 4);
            else
                for (int j = 0; j < mm; j++) yi[j] = beta * yi[j] + bias[j];
        }
        beta = 1.f;
    }
    const float *W = a->W + (size_t)j0 * a->k;
    /* small weights (in cache, packing is cheap) stay with OpenBLAS: the
     * tiny preset's batch-16 step is faster there */
    if (a->n > 1 && a->n <= TC_SKINNY_MAX && (size_t)a->m * a->k >= 65536 && tc_have_avx2())
        skinny_gemm(y, a->ldy, a->x, a->ldx, W, a->n, mm, a->k, beta);
    else if (a->n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, mm, a->k, 1.f, W, a->k, a->x, 1, beta, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->n, mm, a->k, 1.f, a->x, a->ldx, W, a->k, beta, y,
                    a->ldy);
}
static void lin_task(void *p, int i, int n) {
    lin_args *a = p;
    int lo, hi;
    par_range(a->m, 16, i, n, &lo, &hi);
    lin_cols(a, lo, hi);
}
static void cpu_linear(tc_backend *be, float *y, int ldy, const float *x, int ldx, const void *Wv, const float *bias,
                       int n, int m, int k, float beta) {
    const float *W = Wv;
    if (n <= 0 || m <= 0) return;
    lin_args a = {y, x, W, bias, ldy, ldx, n, m, k, beta};
    /* a GEMV is bandwidth-bound; a small one (in cache) only pays a
     * wake-up when split, one over 1 MB of weights reads faster on both
     * cores (paper-41m hit step, batch 1: 10-15% faster, alternated A/B) */
    double work = n == 1 ? (m * (double)k > (1 << 18) ? 2.0 * m * k : 0) : 2.0 * n * m * (double)k;
    par_run(m >= 32 ? par_width(be, work) : 1, lin_task, &a);
}

/* ---- rope -------------------------------------------------------------- */
typedef struct {
    float *x;
    int ld, n, n_head, head_dim;
    int64_t pos0;
    const float *theta;
} rope_args;

static void rope_task(void *p, int ti, int tn) {
    rope_args *a = p;
    int lo, hi, half = a->head_dim / 2;
    par_range(a->n, 1, ti, tn, &lo, &hi);
    for (int i = lo; i < hi; i++) {
        float pf = (float)(a->pos0 + i);
        float *xi = a->x + (size_t)i * a->ld;
        /* cos/sin once per (position, pair), reused by every head; the
         * angle in fp32 exactly as the reference computes it */
        for (int j = 0; j < half; j++) {
            float ang = pf * a->theta[j];
            float c = cosf(ang), s = sinf(ang);
            for (int h = 0; h < a->n_head; h++) {
                float *pr = xi + (size_t)h * a->head_dim + 2 * j;
                float x0 = pr[0], x1 = pr[1];
                pr[0] = x0 * c - x1 * s;
                pr[1] = x0 * s + x1 * c;
            }
        }
    }
}

static void cpu_rope(tc_backend *be, float *x, int ld, int n, int n_head, int head_dim, int64_t pos0, float base) {
    int half = head_dim / 2;
    float theta[512];
    float *th = half <= 512 ? theta : malloc((size_t)half * 4);
    TC_ASSERT(th, "rope: out of memory");
    for (int j = 0; j < half; j++) th[j] = tc_rope_theta(base, j, head_dim);
    rope_args a = {x, ld, n, n_head, head_dim, pos0, th};
    par_run(par_width(be, 40.0 * n * half + 6.0 * n * half * n_head), rope_task, &a);
    if (th != theta) free(th);
}

/* the fused op is the unfused ops on the CPU (there is no launch to save);
 * it exists so the model's batched path runs in the CPU tests too */
static void cpu_rope_kv_batch(tc_backend *be, const tc_rope_kv_item *it, int n, int ldq, int n_head, int head_dim,
                              float base) {
    const int d = n_head * head_dim;
    for (int i = 0; i < n; i++) {
        cpu_rope(be, it[i].qkv, ldq, it[i].n, 2 * n_head, head_dim, it[i].pos0, base);
        cpu_copy2d(be, it[i].k_dst, d, it[i].qkv + d, ldq, it[i].n, d);
        cpu_copy2d(be, it[i].v_dst, d, it[i].qkv + 2 * d, ldq, it[i].n, d);
    }
}

/* ---- attention --------------------------------------------------------- */

/* softmax numerators of one score row over `lim` visible keys, online:
 * updates m, l, returns the factor the accumulator must be scaled by */
TC_HOT static float softmax_tile(float *si, int lim, int tk, float *mrow, float *lrow) {
    /* reductions in 8 lanes: GCC does not vectorize a float max/sum
     * reduction on its own without -ffast-math */
    float m8[8], s8[8];
    for (int u = 0; u < 8; u++) m8[u] = *mrow;
    int j = 0;
    for (; j + 8 <= lim; j += 8)
        for (int u = 0; u < 8; u++) m8[u] = si[j + u] > m8[u] ? si[j + u] : m8[u];
    float mx = *mrow;
    for (; j < lim; j++) mx = si[j] > mx ? si[j] : mx;
    for (int u = 0; u < 8; u++) mx = m8[u] > mx ? m8[u] : mx;
    float corr = *mrow == -INFINITY ? 0.f : expf(*mrow - mx);
    for (j = 0; j < lim; j++) si[j] = exp_approx(si[j] - mx);
    for (int u = 0; u < 8; u++) s8[u] = 0.f;
    for (j = 0; j + 8 <= lim; j += 8)
        for (int u = 0; u < 8; u++) s8[u] += si[j + u];
    float sum = ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7]));
    for (; j < lim; j++) sum += si[j];
    for (j = lim; j < tk; j++) si[j] = 0.f;
    *lrow = *lrow * corr + sum;
    *mrow = mx;
    return corr;
}

TC_HOT static void scale_row(float *a, int n, float s) {
    for (int c = 0; c < n; c++) a[c] *= s;
}

/* one query row, direct: scores by dot products, p.V by axpy; no SGEMM
 * call overhead for a 1-row problem. S has TC_ATT_TK floats. */
/* One query row over nk_vis keys (the hit step's attention). Four keys
 * at a time: their dot products run side by side (the latency of one
 * chain hides behind the others) and each pass over acc adds four value
 * rows. Every score and every acc element sums in the same order as one
 * key at a time would. */
TC_HOT static void att_row(float *acc, const float *q, const float *k, int ldk, const float *v, int ldv, int nk_vis,
                           int hd, float scale, float *S, float *mrow, float *lrow) {
    const int h8 = hd & ~7;
    for (int k0 = 0; k0 < nk_vis; k0 += TC_ATT_TK) {
        int tk = nk_vis - k0 < TC_ATT_TK ? nk_vis - k0 : TC_ATT_TK;
        int j = 0;
        for (; j + 4 <= tk; j += 4) {
            const float *ka = k + (size_t)(k0 + j) * ldk, *kb = ka + ldk, *kc = kb + ldk, *kd = kc + ldk;
            /* this head's slice of a K row is a few cache lines a row
             * apart: fetch the rows two blocks ahead */
            if (j + 12 <= tk)
                for (int r = 8; r < 12; r++)
                    for (int c = 0; c < hd; c += 16) __builtin_prefetch(ka + (size_t)r * ldk + c, 0, 3);
            tc_v8 pa = {0}, pb = {0}, pc = {0}, pd = {0};
            for (int c = 0; c < h8; c += 8) {
                tc_v8 qv = v8_load(q + c);
                pa += qv * v8_load(ka + c), pb += qv * v8_load(kb + c);
                pc += qv * v8_load(kc + c), pd += qv * v8_load(kd + c);
            }
            float ta = 0.f, tb = 0.f, tc = 0.f, td = 0.f;
            for (int c = h8; c < hd; c++) ta += q[c] * ka[c], tb += q[c] * kb[c], tc += q[c] * kc[c], td += q[c] * kd[c];
            ta += v8_sum(pa), tb += v8_sum(pb), tc += v8_sum(pc), td += v8_sum(pd);
            S[j] = ta * scale, S[j + 1] = tb * scale, S[j + 2] = tc * scale, S[j + 3] = td * scale;
        }
        for (; j < tk; j++) {
            const float *kj = k + (size_t)(k0 + j) * ldk;
            tc_v8 pa = {0};
            for (int c = 0; c < h8; c += 8) pa += v8_load(q + c) * v8_load(kj + c);
            float t = 0.f;
            for (int c = h8; c < hd; c++) t += q[c] * kj[c];
            t += v8_sum(pa);
            S[j] = t * scale;
        }
        float corr = softmax_tile(S, tk, tk, mrow, lrow);
        for (int c = 0; c < hd; c++) acc[c] *= corr;
        j = 0;
        for (; j + 4 <= tk; j += 4) {
            const float *va = v + (size_t)(k0 + j) * ldv, *vb = va + ldv, *vc = vb + ldv, *vd = vc + ldv;
            float pa = S[j], pb = S[j + 1], pc = S[j + 2], pd = S[j + 3];
            if (j + 12 <= tk)
                for (int r = 8; r < 12; r++)
                    for (int c = 0; c < hd; c += 16) __builtin_prefetch(va + (size_t)r * ldv + c, 0, 3);
            for (int c = 0; c < hd; c++) {
                float x = acc[c];
                x += pa * va[c];
                x += pb * vb[c];
                x += pc * vc[c];
                x += pd * vd[c];
                acc[c] = x;
            }
        }
        for (; j < tk; j++) {
            const float *vj = v + (size_t)(k0 + j) * ldv;
            float p = S[j];
            for (int c = 0; c < hd; c++) acc[c] += p * vj[c];
        }
    }
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
        if (tq <= TC_ATT_DIRECT) {
            for (int i = 0; i < tq; i++) {
                int64_t lim = causal ? qpos0 + q0 + i - kpos0 + 1 : nk;
                int vis = lim < 0 ? 0 : (lim < nk ? (int)lim : nk);
                att_row(acc + (size_t)i * hd, q + (size_t)(q0 + i) * ldq, k, ldk, v, ldv, vis, hd, scale, S,
                        &mrow[i], &lrow[i]);
            }
        } else {
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
                    if (lim == 0) {
                        memset(si, 0, (size_t)tk * 4);
                        continue;
                    }
                    scale_row(acc + (size_t)i * hd, hd, softmax_tile(si, lim, tk, &mrow[i], &lrow[i]));
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tq, hd, tk, 1.f, S, TC_ATT_TK,
                            v + (size_t)k0 * ldv, ldv, 1.f, acc, hd);
            }
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

/* One query row over nk_vis keys for heads [0, nh) at once (the hit
 * step): K and V rows are read front to back, all heads of a row
 * together, instead of one head's 144 bytes per 1.7 KB row per pass (12
 * strided passes over each cache; the per-head version missed cache on
 * most K/V lines at batch 16). Each head computes exactly what att_row
 * computes: the same dot products, the same softmax tiles, the same
 * order of value rows. S [nh, TC_ATT_TK], acc [nh * hd], m, l [nh]. */
TC_HOT static void att_row_heads(float *acc, const float *q, const float *k, int ldk, const float *v, int ldv,
                                 int nk_vis, int nh, int hd, float scale, float *S, float *mrow, float *lrow) {
    const int h8 = hd & ~7;
    for (int k0 = 0; k0 < nk_vis; k0 += TC_ATT_TK) {
        int tk = nk_vis - k0 < TC_ATT_TK ? nk_vis - k0 : TC_ATT_TK;
        for (int j = 0; j < tk; j++) {
            const float *kj = k + (size_t)(k0 + j) * ldk;
            for (int h = 0; h < nh; h++) {
                const float *qh = q + (size_t)h * hd, *kh = kj + (size_t)h * hd;
                tc_v8 pa = {0};
                for (int c = 0; c < h8; c += 8) pa += v8_load(qh + c) * v8_load(kh + c);
                float t = 0.f;
                for (int c = h8; c < hd; c++) t += qh[c] * kh[c];
                t += v8_sum(pa);
                S[(size_t)h * TC_ATT_TK + j] = t * scale;
            }
        }
        for (int h = 0; h < nh; h++) {
            float corr = softmax_tile(S + (size_t)h * TC_ATT_TK, tk, tk, &mrow[h], &lrow[h]);
            scale_row(acc + (size_t)h * hd, hd, corr);
        }
        int j = 0;
        for (; j + 4 <= tk; j += 4) {
            const float *va = v + (size_t)(k0 + j) * ldv, *vb = va + ldv, *vc = vb + ldv, *vd = vc + ldv;
            for (int h = 0; h < nh; h++) {
                const float *sh = S + (size_t)h * TC_ATT_TK + j;
                float pa = sh[0], pb = sh[1], pc = sh[2], pd = sh[3];
                float *ah = acc + (size_t)h * hd;
                size_t o = (size_t)h * hd;
                for (int c = 0; c < hd; c++) {
                    float x = ah[c];
                    x += pa * va[o + c];
                    x += pb * vb[o + c];
                    x += pc * vc[o + c];
                    x += pd * vd[o + c];
                    ah[c] = x;
                }
            }
        }
        for (; j < tk; j++) {
            const float *vj = v + (size_t)(k0 + j) * ldv;
            for (int h = 0; h < nh; h++) {
                float p = S[(size_t)h * TC_ATT_TK + j];
                float *ah = acc + (size_t)h * hd;
                const float *vh = vj + (size_t)h * hd;
                for (int c = 0; c < hd; c++) ah[c] += p * vh[c];
            }
        }
    }
}

/* heads [h0, h0 + nh) of a few query rows, each row all those heads at once */
static void att_direct(const tc_att_item *t, int h0, int nh, int hd, float *S, float *acc, float *mrow,
                       float *lrow) {
    const float scale = 1.0f / sqrtf((float)hd);
    size_t o = (size_t)h0 * hd;
    for (int i = 0; i < t->nq; i++) {
        int64_t lim = t->causal ? t->qpos0 + i - t->kpos0 + 1 : t->nk;
        int vis = lim < 0 ? 0 : (lim < t->nk ? (int)lim : t->nk);
        for (int h = 0; h < nh; h++) { mrow[h] = -INFINITY; lrow[h] = 0.f; }
        memset(acc, 0, (size_t)nh * hd * 4);
        att_row_heads(acc, t->q + (size_t)i * t->ldq + o, t->k + o, t->ldk, t->v + o, t->ldv, vis, nh, hd, scale, S,
                      mrow, lrow);
        float *oi = t->out + (size_t)i * t->ldo + o;
        for (int h = 0; h < nh; h++) {
            const float *ai = acc + (size_t)h * hd;
            float inv = lrow[h] > 0.f ? 1.0f / lrow[h] : 0.f; /* no visible key: zero */
            float *oh = oi + (size_t)h * hd;
            if (t->beta == 0.f)
                for (int c = 0; c < hd; c++) oh[c] = ai[c] * inv;
            else
                for (int c = 0; c < hd; c++) oh[c] = t->beta * oh[c] + ai[c] * inv;
        }
    }
}

/* A batch of attentions: (item, head) pairs split over the pool in one
 * dispatch; each pair computes exactly as cpu_attention's would. A task's
 * consecutive heads of one item with a few query rows (the hit step) run
 * together, reading each K/V row once for all of them. */
typedef struct {
    const tc_att_item *it;
    int n, n_head, head_dim;
} attb_args;

static void attb_task(void *p, int ti, int tn) {
    attb_args *a = p;
    int hd = a->head_dim, nhd = a->n_head, lo, hi;
    par_range(a->n * nhd, 1, ti, tn, &lo, &hi);
    if (lo >= hi) return;
    size_t ns = (size_t)TC_ATT_TQ * TC_ATT_TK, na = (size_t)TC_ATT_TQ * hd, nm = TC_ATT_TQ;
    if ((size_t)nhd * TC_ATT_TK > ns) ns = (size_t)nhd * TC_ATT_TK;
    if ((size_t)nhd * hd > na) na = (size_t)nhd * hd;
    if ((size_t)nhd > nm) nm = (size_t)nhd;
    size_t need = ns + na + 2 * nm;
    float stackbuf[TC_ATT_TQ * TC_ATT_TK + TC_ATT_TQ * 128 + 2 * TC_ATT_TQ];
    float *scr = need <= sizeof stackbuf / sizeof stackbuf[0] ? stackbuf : malloc(need * 4);
    TC_ASSERT(scr, "attention: out of memory for scratch");
    float *S = scr, *acc = S + ns, *mrow = acc + na, *lrow = mrow + nm;
    for (int x = lo; x < hi;) {
        const tc_att_item *t = &a->it[x / nhd];
        int h0 = x % nhd, nh = nhd - h0 < hi - x ? nhd - h0 : hi - x;
        if (t->nq > 0 && t->nq <= TC_ATT_DIRECT) {
            att_direct(t, h0, nh, hd, S, acc, mrow, lrow);
        } else if (t->nq > 0) {
            for (int h = h0; h < h0 + nh; h++) {
                size_t o = (size_t)h * hd;
                att_head(t->out + o, t->ldo, t->q + o, t->ldq, t->k + o, t->ldk, t->v + o, t->ldv, t->nq, t->nk, hd,
                         t->qpos0, t->kpos0, t->causal, t->beta, S, acc, mrow, lrow);
            }
        }
        x += nh;
    }
    if (scr != stackbuf) free(scr);
}

/* rows are a step's sessions (tens): one thread's scan of V each */
static void cpu_topk(tc_backend *be, int32_t *ids, float *vals, const float *x, int n, int V, int k) {
    (void)be;
    tc_topk_rows(ids, vals, x, n, V, k);
}

/* TC_CPU_SAMPLE=1 only (tests): the host sampler's sort is faster here */
static void cpu_sample(tc_backend *be, int32_t *tokens, const float *x, int n, int V, const tc_draw *draws) {
    (void)be;
    TC_ASSERT(tc_sample_rows(tokens, x, n, V, draws) == TC_OK, "cpu sample: %s", tc_error_get());
}

static void cpu_attention_batch(tc_backend *be, const tc_att_item *it, int n, int n_head, int head_dim) {
    if (n <= 0) return;
    /* a few query rows (the hit step) are bound by reading K and V, not by
     * their flops: split over the pool once that read is ~256 KB or more
     * (the batch-16 step of small / paper-41m ran its attention on one core) */
    double work = 0;
    for (int i = 0; i < n; i++) {
        double w = 4.0 * it[i].nq * (double)it[i].nk * n_head * head_dim;
        work += it[i].nq <= TC_ATT_DIRECT && it[i].nq > 0 ? w * 32.0 / it[i].nq : w;
    }
    attb_args a = {it, n, n_head, head_dim};
    par_run(par_width(be, work), attb_task, &a);
}

/* the pair op is the two batches on the CPU (one pool dispatch each, as
 * before); it exists so the model's paired path runs in the CPU tests */
static void cpu_attention_pairs(tc_backend *be, const tc_att_item *w, const tc_att_item *z, int n, int n_head,
                                int head_dim) {
    tc_att_item stack[64], *zc = n <= 64 ? stack : malloc(sizeof *zc * (size_t)n);
    TC_ASSERT(zc, "attention_pairs: out of memory");
    int nz = 0;
    for (int i = 0; i < n; i++)
        if (z[i].nq > 0) zc[nz++] = z[i];
    cpu_attention_batch(be, w, n, n_head, head_dim);
    cpu_attention_batch(be, zc, nz, n_head, head_dim);
    if (zc != stack) free(zc);
}

/* one attention: a batch of one (heads split over the pool) */
static void cpu_attention(tc_backend *be, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                          const float *v, int ldv, int nq, int nk, int n_head, int head_dim, int64_t qpos0,
                          int64_t kpos0, int causal, float beta) {
    if (nq <= 0) return;
    tc_att_item it = {out, q, k, v, ldo, ldq, ldk, ldv, nq, nk, qpos0, kpos0, causal, beta};
    cpu_attention_batch(be, &it, 1, n_head, head_dim);
}

/* ---- swiglu ------------------------------------------------------------ */
typedef struct {
    float *out;
    const float *h;
    int ldo, ldh, n, F;
} sw_args;

TC_HOT static void swiglu_row(float *o, const float *a, const float *b, int F) {
    for (int j = 0; j < F; j++) o[j] = a[j] / (1.0f + exp_approx(-a[j])) * b[j];
}
static void sw_task(void *p, int ti, int tn) {
    sw_args *s = p;
    int lo, hi;
    par_range(s->n, 1, ti, tn, &lo, &hi);
    for (int i = lo; i < hi; i++) {
        const float *a = s->h + (size_t)i * s->ldh;
        swiglu_row(s->out + (size_t)i * s->ldo, a, a + s->F, s->F);
    }
}
static void cpu_swiglu(tc_backend *be, float *out, int ldo, const float *h, int ldh, int n, int F) {
    sw_args a = {out, h, ldo, ldh, n, F};
    par_run(par_width(be, 20.0 * n * F), sw_task, &a);
}

tc_status tc_backend_cpu_init(tc_backend *be, int n_threads) {
    memset(be, 0, sizeof *be);
    /* TC_CPU_SAMPLE=1: hand sampling to the sample op (tc_sample_rows), so
     * CPU machines run the path a GPU worker takes (tests) */
    const char *cs = getenv("TC_CPU_SAMPLE");
    if (cs && strcmp(cs, "0") && strcmp(cs, "1"))
        return TC_FAIL(TC_ERR_INVALID, "TC_CPU_SAMPLE '%s': expected 0 or 1", cs);
    if (cs && !strcmp(cs, "1")) be->sample = cpu_sample;
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
    be->rope_kv_batch = cpu_rope_kv_batch;
    be->attention = cpu_attention;
    be->attention_batch = cpu_attention_batch;
    be->attention_pairs = cpu_attention_pairs;
    be->swiglu = cpu_swiglu;
    be->topk = cpu_topk;
    /* OpenBLAS single-threaded; the pool splits ops (see the top) */
    pthread_once(&g_pool.once, pool_start);
    openblas_set_num_threads(1);
    be->ctx = (void *)(intptr_t)(n_threads > 0 ? n_threads : g_pool.size);
    return TC_OK;
}

void tc_backend_cpu_free(tc_backend *be) { memset(be, 0, sizeof *be); }
