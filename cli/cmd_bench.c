/* cmd_bench.c — `tconst bench <sub>`: the engine benchmarks of issue 3
 * (DESIGN.md §8). Each sub-benchmark prints a table and, with --csv FILE,
 * writes the same rows as CSV. Every figure is measured in the same run as
 * what it is compared with (ratios side by side); medians of repetitions.
 *
 *   itl      hit-step p50/p90, sync step, amortized per token vs context N
 *   state    session state bytes (history excluded) and process RSS vs N
 *   prefill  time to first token for prompts of N tokens
 *   batch    aggregate hit-step tokens/s at B concurrent sessions
 *   floor    memory bandwidth (triad) and SGEMM rate, and the hit step /
 *            sync of the model as ratios to those floors
 *   flat     hit steps at a short and a long context, alternated
 *
 * A context of N is reached with one tc_session_append of N tokens (one
 * sync + the window), never N hit steps. The baseline transformer's prefill
 * is O(N^2): a context is skipped when its predicted time or memory exceeds
 * the budget (--budget seconds), and the table says so.
 * --device cuda:N runs the model on the CUDA backend (the tconst-cuda
 * binary, built with kernels/cuda); floor then measures the device: copy bandwidth (bytes
 * read + written by a device-to-device copy of 256 MiB) and the cuBLAS
 * SGEMM rate (4096^3, fp32), and waits for the device before reading a
 * clock after a sync (steps end with a logits download, which waits).
 * Not here: the daemon, tokenization. */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef TC_HAVE_CUDA
#include "../kernels/cuda/backend_cuda.h"
#endif
#include "../model/sampler.h"
#include "../model/session.h"
#include "cli.h"

#define MAX_CTX 16

typedef struct {
    const char *preset, *model;
    int arch_mask; /* bit 0 tconstformer, bit 1 transformer */
    int64_t ctx[MAX_CTX];
    int n_ctx;
    int64_t batch[MAX_CTX];
    int n_batch;
    int64_t reps, threads, batch_ctx;
    double budget;
    int cuda; /* --device cuda:N: N; -1 for the CPU */
    FILE *csv;
} bench_opts;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* q-quantile (0..1) of n values; sorts them in place */
static double quantile(double *v, int n, double q) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    int i = (int)floor(q * (n - 1) + 0.5);
    return v[i];
}

static double rss_mib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (double)res * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static double mem_available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024.0;
}

/* --sampling top-p: every row drawn with T 0.8, top_p 0.95 (no top-k), a
 * sampler that needs the whole row: by the backend's sample op where it
 * has one (tc_step_batch_draw: B ids leave the device), else from the
 * downloaded [B, vocab] logits on the host, as a worker does */
static int g_sampling; /* 0 greedy, 1 top-p */
static tc_sampler g_smp;
static float *g_lg;
static size_t g_lg_cap;

static tc_status bench_step_topp(tc_session **ss, const int32_t *tok, int B, int32_t *picks) {
    tc_model *m = ss[0]->m;
    const int V = m->cfg.vocab_size;
    if (g_smp.vocab != V) {
        tc_sampler_free(&g_smp);
        const tc_sampling_params p = {0.8f, 0, 0.95f, 1};
        TC_CHECK(tc_sampler_init(&g_smp, &p, V));
    }
    if (tc_model_draws_on_backend(m, B)) {
        tc_draw *d = malloc((size_t)B * sizeof *d);
        if (!d) return TC_FAIL(TC_ERR_NOMEM, "out of memory for %d draws", B);
        for (int i = 0; i < B; i++) tc_sampler_draw_params(&g_smp, &d[i]);
        tc_status st = tc_step_batch_draw(ss, tok, B, d, picks);
        free(d);
        return st;
    }
    if ((size_t)B * V > g_lg_cap) {
        float *n = realloc(g_lg, (size_t)B * V * sizeof *n);
        if (!n) return TC_FAIL(TC_ERR_NOMEM, "out of memory for %d rows of logits", B);
        g_lg = n, g_lg_cap = (size_t)B * V;
    }
    TC_CHECK(tc_step_batch(ss, tok, B, g_lg));
    for (int i = 0; i < B; i++) picks[i] = tc_sampler_sample(&g_smp, g_lg + (size_t)i * V);
    return TC_OK;
}

/* One timed step of B sessions, sampled as the worker samples: greedily,
 * the head's top 1 on the backend (on a GPU the [B, vocab] logits never
 * leave it), or (--sampling top-p) as above; the picks into next (NULL:
 * not wanted). */
static tc_status bench_step(tc_session **ss, const int32_t *tok, int B, int32_t *next) {
    int32_t ids_stack[256], *ids = B <= 256 ? ids_stack : malloc((size_t)B * sizeof *ids);
    float vals_stack[256], *vals = B <= 256 ? vals_stack : malloc((size_t)B * sizeof *vals);
    tc_status st = !ids || !vals ? TC_FAIL(TC_ERR_NOMEM, "out of memory for %d picks", B)
                   : g_sampling  ? bench_step_topp(ss, tok, B, ids)
                                 : tc_step_batch_topk(ss, tok, B, 1, ids, vals);
    if (st == TC_OK && next) memcpy(next, ids, (size_t)B * sizeof *ids);
    if (ids != ids_stack) free(ids);
    if (vals != vals_stack) free(vals);
    return st;
}

static void rand_ids(int32_t *ids, int64_t n, int V, uint64_t *x) {
    for (int64_t i = 0; i < n; i++) {
        *x = *x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((*x >> 33) % (uint64_t)V);
    }
}

/* ---- models: a preset materialized once per (preset, arch) under $TMPDIR */

/* frees the model (when given) and the backend bench_load chose */
static void bench_free(const bench_opts *o, tc_backend *be, tc_model *m) {
    if (m) tc_model_free(m);
#ifdef TC_HAVE_CUDA
    if (o->cuda >= 0) {
        long launches, inst;
        tc_backend_cuda_graph_stats(be, &launches, &inst);
        printf("# cuda graphs: %s (TC_CUDA_GRAPHS): %ld hit steps launched as graphs, %ld instantiated (the rest "
               "updated in place, or replayed as kept)\n",
               launches ? "on" : "off", launches, inst);
        const char *pairs = getenv("TC_CUDA_PAIRS");
        printf("# programmatic dependent launch (TC_CUDA_PDL): %s; softmax pairs (TC_CUDA_PAIRS): %s\n",
               tc_backend_cuda_pdl_on() ? "on" : "off",
               pairs && !strcmp(pairs, "0") ? "one block" : "two blocks");
        tc_backend_cuda_free(be);
        return;
    }
#endif
    (void)o;
    tc_backend_cpu_free(be);
}

/* TC_CUDA_PROFILE=1 (CUDA): the device time by op since the last call,
 * printed under title (NULL: only reset) */
static void bench_profile(const bench_opts *o, tc_backend *be, const char *title) {
#ifdef TC_HAVE_CUDA
    if (o->cuda >= 0) (void)tc_backend_cuda_profile(be, title, title ? stdout : NULL);
#else
    (void)o, (void)be, (void)title;
#endif
}

/* waits for the device's queued work (CUDA); its status. CPU: TC_OK */
static tc_status bench_wait(const bench_opts *o, tc_backend *be) {
#ifdef TC_HAVE_CUDA
    if (o->cuda >= 0) return tc_backend_cuda_sync(be);
#endif
    (void)o; (void)be;
    return TC_OK;
}

static tc_status bench_load(const bench_opts *o, tc_arch arch, tc_backend *be, tc_model **m) {
    char dir[4096];
    if (o->model) {
        snprintf(dir, sizeof dir, "%s", o->model);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/tconst-bench-%s-%s-v1-%u", tmp && *tmp ? tmp : "/tmp", o->preset,
                 tc_arch_name(arch), (unsigned)getuid());
        char st[4200];
        snprintf(st, sizeof st, "%s/model.safetensors", dir);
        struct stat sb;
        if (stat(st, &sb) != 0) {
            tc_model_config c;
            TC_CHECK(tc_config_preset(&c, o->preset, arch));
            char tmpd[4200];
            snprintf(tmpd, sizeof tmpd, "%s.tmp%d", dir, (int)getpid());
            TC_CHECK(tc_model_init_random(&c, 1, "f32", tmpd));
            if (rename(tmpd, dir) != 0 && stat(st, &sb) != 0)
                return TC_FAIL(TC_ERR_IO, "cannot create bench model at %s", dir);
        }
    }
    if (o->cuda >= 0) {
#ifdef TC_HAVE_CUDA
        TC_CHECK(tc_backend_cuda_init(be, o->cuda));
#else
        return TC_FAIL(TC_ERR_UNSUPPORTED, "--device cuda:%d: this binary has no CUDA backend; use tconst-cuda (built when CMake finds nvcc)",
                       o->cuda);
#endif
    } else {
        TC_CHECK(tc_backend_cpu_init(be, (int)o->threads));
    }
    tc_status st = tc_model_load(m, dir, be);
    if (st != TC_OK) bench_free(o, be, NULL);
    return st;
}

/* Steps per timed "window": W_og; the baseline has none and uses its
 * preset's tconstformer W_og so both amortize over the same span. */
static int bench_window(const bench_opts *o, const tc_model_config *c) {
    if (c->generate_window > 0) return c->generate_window;
    tc_model_config t;
    if (!o->model && tc_config_preset(&t, o->preset, TC_ARCH_TCONST) == TC_OK) return t.generate_window;
    return 128;
}

/* ---- analytic costs ---------------------------------------------------- */

/* bytes a batch-1 hit step must read: every layer's weights + the tied
 * head (the embedding row gather is negligible); matrices in the
 * backend's weight format (wtype: 4 or 2 bytes), vectors fp32 */
static double hit_weight_bytes(const tc_model_config *c, int wtype) {
    double d = c->n_embd, F = c->ffn_hidden, w = (double)tc_wt_bytes(wtype, 1);
    double mats = 3 * d * d + d * d + 3 * d * F, vecs = 3 * d + d + 4 * d;
    return (w * mats + 4.0 * vecs) * tc_config_n_layers(c) + w * (double)c->vocab_size * d;
}

/* FLOPs of one sync over n_ctx tokens (GEMMs and attention matmuls, which
 * are all of it but O(N d) element-wise work), following model/sync.c */
static double sync_flops(const tc_model_config *c, int64_t n_ctx) {
    double d = c->n_embd, F = c->ffn_hidden, N = (double)n_ctx;
    double Wz = n_ctx < c->history_window ? N : c->history_window;
    double post = 2 * (d * d + 2 * F * d + F * d), proj = 2 * d * 3 * d;
    double f = 0;
    for (int b = 0; b < c->n_block; b++) {
        f += N * proj + 4 * Wz * N * d + Wz * post; /* compress */
        f += (c->inner_depth - 2) * (Wz * proj + 4 * Wz * Wz * d + Wz * post);
        f += Wz * proj; /* restore K/V of Z */
        if (b < c->n_block - 1) f += 4 * N * Wz * d + N * post;
    }
    return f;
}

/* ---- floors: memory bandwidth (STREAM triad) and SGEMM rate ------------ */

typedef struct {
    float *a, *b, *c;
    size_t n;
} triad_arg;

static void *triad_run(void *p) {
    triad_arg *t = p;
    for (size_t i = 0; i < t->n; i++) t->a[i] = t->b[i] + 3.0f * t->c[i];
    return NULL;
}

/* bytes/s of a = b + s*c over 3 x 64 MiB arrays, split over nt threads,
 * median of reps; counted as STREAM does (3 arrays, no write-allocate) */
static double floor_bandwidth(int nt, int reps) {
    const size_t n = (size_t)16 << 20;
    float *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4);
    double t[16], bw = NAN;
    if (!a || !b || !c) goto done;
    for (size_t i = 0; i < n; i++) { a[i] = 0; b[i] = 1; c[i] = 2; }
    if (nt < 1) nt = 1;
    if (nt > 8) nt = 8;
    if (reps > 16) reps = 16;
    for (int r = 0; r < reps; r++) {
        pthread_t th[8];
        triad_arg ar[8];
        double t0 = now_s();
        for (int i = 0; i < nt; i++) {
            size_t lo = n * i / nt, hi = n * (i + 1) / nt;
            ar[i] = (triad_arg){a + lo, b + lo, c + lo, hi - lo};
            if (i) pthread_create(&th[i], NULL, triad_run, &ar[i]);
        }
        triad_run(&ar[0]);
        for (int i = 1; i < nt; i++) pthread_join(th[i], NULL);
        t[r] = now_s() - t0;
    }
    bw = 3.0 * n * 4 / quantile(t, reps, 0.5);
done:
    free(a); free(b); free(c);
    return bw;
}

/* FLOP/s of one square SGEMM (OpenBLAS, its current thread count) */
static double floor_sgemm(int n, int reps) {
    float *A = malloc((size_t)n * n * 4), *B = malloc((size_t)n * n * 4), *C = malloc((size_t)n * n * 4);
    double t[16], r = NAN;
    if (!A || !B || !C) goto done;
    for (size_t i = 0; i < (size_t)n * n; i++) { A[i] = (float)(i % 7) * 0.1f; B[i] = (float)(i % 5) * 0.1f; }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.f, A, n, B, n, 0.f, C, n); /* warm */
    if (reps > 16) reps = 16;
    for (int i = 0; i < reps; i++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.f, A, n, B, n, 0.f, C, n);
        t[i] = now_s() - t0;
    }
    r = 2.0 * n * n * (double)n / quantile(t, reps, 0.5);
done:
    free(A); free(B); free(C);
    return r;
}

/* The device's floors through the backend's own ops (CUDA): bytes/s of a
 * device-to-device copy of 256 MiB (read + written), and FLOP/s of one
 * n^3 linear (cuBLAS SGEMM, fp32); medians of reps, after a warm-up. */
static tc_status floor_device(const bench_opts *o, tc_backend *be, int reps, double *bw, double *gemm) {
    const int rows = 65536, cols = 1024, n = 4096; /* 256 MiB; 4096^3 */
    float *a = be->alloc(be, (size_t)rows * cols * 4), *b = be->alloc(be, (size_t)rows * cols * 4);
    float *A = be->alloc(be, (size_t)n * n * 4), *B = be->alloc(be, (size_t)n * n * 4);
    float *C = be->alloc(be, (size_t)n * n * 4), *h = malloc((size_t)n * n * 4);
    double t[2][16];
    tc_status st = TC_OK;
    if (reps > 16) reps = 16;
    if (!a || !b || !A || !B || !C || !h) st = TC_FAIL(TC_ERR_NOMEM, "floor: out of device or host memory");
    if (st == TC_OK) {
        for (size_t i = 0; i < (size_t)n * n; i++) h[i] = (float)(i % 7) * 0.1f;
        be->upload(be, A, h, (size_t)n * n * 4);
        be->upload(be, B, h, (size_t)n * n * 4);
        be->copy2d(be, b, cols, A, cols, n * n / cols, cols); /* b's first 64 MiB from A, the rest as allocated */
        be->copy2d(be, a, cols, b, cols, rows, cols);         /* warm-ups */
        be->linear(be, C, n, A, n, B, NULL, n, n, n, 0.f);
        st = bench_wait(o, be);
    }
    for (int r = 0; st == TC_OK && r < reps; r++) {
        double t0 = now_s();
        be->copy2d(be, a, cols, b, cols, rows, cols);
        if ((st = bench_wait(o, be)) != TC_OK) break;
        t[0][r] = now_s() - t0;
        t0 = now_s();
        be->linear(be, C, n, A, n, B, NULL, n, n, n, 0.f);
        if ((st = bench_wait(o, be)) != TC_OK) break;
        t[1][r] = now_s() - t0;
    }
    if (st == TC_OK) {
        *bw = 2.0 * rows * (double)cols * 4 / quantile(t[0], reps, 0.5);
        *gemm = 2.0 * n * n * (double)n / quantile(t[1], reps, 0.5);
    }
    if (a) be->free(be, a);
    if (b) be->free(be, b);
    if (A) be->free(be, A);
    if (B) be->free(be, B);
    if (C) be->free(be, C);
    free(h);
    return st;
}

/* ---- one context point: prefill, hit steps, sync steps ------------------ */

typedef struct {
    int ok;
    char note[160];
    double prefill_s, hit_p50, hit_p90, sync_s, amort_s, rss;
    size_t state;
} point;

/* Builds a session at context n (one append of n tokens + 1, so the
 * window holds one token), then, when steps > 0, times `windows` windows
 * of single steps: W_og - 1 hit steps and the sync step that follows
 * (transformer: W_og decode steps per "window"). */
static tc_status run_point(tc_model *m, int64_t n, int W, int windows, int steps, point *p) {
    const tc_model_config *c = &m->cfg;
    tc_session *s = NULL;
    int32_t *ids = NULL;
    float *lg = NULL;
    double *hit = NULL, *syn = NULL;
    int nh = 0, ns = 0;
    tc_status st = TC_OK;
    uint64_t x = 12345 + (uint64_t)n;
    memset(p, 0, sizeof *p);
    int64_t n0 = n - n % W + 1;
    ids = malloc((size_t)n0 * 4);
    lg = malloc((size_t)c->vocab_size * 4);
    hit = malloc(sizeof *hit * (size_t)(windows * W + 1));
    syn = malloc(sizeof *syn * (size_t)(windows + 1));
    if (!ids || !lg || !hit || !syn) { st = TC_FAIL(TC_ERR_NOMEM, "out of memory"); goto fail; }
    rand_ids(ids, n0, c->vocab_size, &x);
    if ((st = tc_session_new(m, &s)) != TC_OK) goto fail;
    double t0 = now_s();
    if ((st = tc_session_append(s, ids, n0, lg)) != TC_OK) goto fail;
    p->prefill_s = now_s() - t0;
    p->state = tc_session_state_bytes(s);
    int32_t t = tc_argmax(lg, c->vocab_size);
    for (int w = 0; steps && w < windows; w++)
        for (int i = 0; i < W; i++) {
            int is_sync = tc_session_sync_due(s);
            double a = now_s();
            if ((st = bench_step(&s, &t, 1, &t)) != TC_OK) goto fail;
            double e = now_s() - a;
            if (is_sync) syn[ns++] = e;
            else hit[nh++] = e;
        }
    p->rss = rss_mib();
    if (steps) {
        double sum = 0;
        for (int i = 0; i < nh; i++) sum += hit[i];
        for (int i = 0; i < ns; i++) sum += syn[i];
        p->amort_s = sum / (nh + ns);
        p->hit_p50 = quantile(hit, nh, 0.5);
        p->hit_p90 = quantile(hit, nh, 0.9);
        p->sync_s = ns ? quantile(syn, ns, 0.5) : NAN;
    }
    p->ok = 1;
fail:
    tc_session_free(s);
    free(ids); free(lg); free(hit); free(syn);
    return st;
}

/* bytes one more context point needs beyond the model: the baseline's
 * KV cache (capacity doubles) + the prefill workspace; TConst's sync
 * workspace C, proj(C) and the ids */
static double point_bytes(const tc_model_config *c, int64_t n) {
    double d = c->n_embd;
    if (c->arch == TC_ARCH_TRANSFORMER) return 2.0 * 2 * tc_config_n_layers(c) * d * 4 * n + 5.0 * d * 4 * n;
    return 4.0 * d * 4 * n + 8.0 * n;
}

/* ---- the sub-benchmarks ------------------------------------------------- */

static const char *fmt_n(int64_t n, char *buf, size_t len) {
    if (n >= 1048576 && n % 1048576 == 0) snprintf(buf, len, "%lldM", (long long)(n >> 20));
    else if (n >= 1024 && n % 1024 == 0) snprintf(buf, len, "%lldK", (long long)(n >> 10));
    else snprintf(buf, len, "%lld", (long long)n);
    return buf;
}

/* itl, state and prefill share one loop over (arch, N): `what` picks the
 * columns. Prediction for skipping: the last measured time scaled by N
 * (tconstformer: linear sync) or N^2 (transformer prefill). */
enum { SUB_ITL, SUB_STATE, SUB_PREFILL };

static int bench_context(const bench_opts *o, int what) {
    if (what == SUB_ITL) {
        printf("%-10s %-12s %6s %10s %10s %10s %10s %10s %12s %8s  %s\n", "preset", "arch", "N", "prefill_s",
               "hit_p50_ms", "hit_p90_ms", "sync_ms", "amort_ms", "state_B", "rss_MiB", "note");
        if (o->csv) fprintf(o->csv, "preset,arch,n_ctx,prefill_s,hit_p50_ms,hit_p90_ms,sync_ms,amort_ms,state_bytes,rss_mib,note\n");
    } else if (what == SUB_STATE) {
        printf("%-10s %-12s %8s %14s %10s  %s\n", "preset", "arch", "N", "state_bytes", "rss_MiB", "note");
        if (o->csv) fprintf(o->csv, "preset,arch,n_ctx,state_bytes,rss_mib,note\n");
    } else {
        printf("%-10s %-12s %8s %12s  %s\n", "preset", "arch", "prompt", "ttft_s", "note");
        if (o->csv) fprintf(o->csv, "preset,arch,prompt,ttft_s,note\n");
    }
    const char *label = o->model ? o->model : o->preset;
    for (int ai = 0; ai < 2; ai++) {
        if (!(o->arch_mask & (1 << ai))) continue;
        tc_arch arch = ai == 0 ? TC_ARCH_TCONST : TC_ARCH_TRANSFORMER;
        tc_backend be;
        tc_model *m = NULL;
        tc_status st = bench_load(o, arch, &be, &m);
        if (st != TC_OK) return tc_cli_fail("bench", st);
        if (o->model) arch = m->cfg.arch;
        int64_t prev_n = 0;
        double prev_pre = 0, prev_rest = 0;
        for (int ci = 0; ci < o->n_ctx; ci++) {
            int64_t n = o->ctx[ci];
            char nb[32], note[200] = "";
            point p = {0};
            double pred = 0;
            if (prev_n) {
                /* prefill: O(N^2) baseline, O(N) tconstformer; the steps:
                 * O(N) baseline, flat + one O(N) sync per window */
                double r = (double)n / prev_n;
                pred = prev_pre * (arch == TC_ARCH_TRANSFORMER ? r * r : r) + prev_rest * r;
            }
            double need = point_bytes(&m->cfg, n);
            if (need > 0.8 * mem_available_bytes())
                snprintf(note, sizeof note, "skipped: needs ~%.1f GiB, %.1f GiB available", need / 1073741824.0,
                         mem_available_bytes() / 1073741824.0);
            else if (pred > o->budget)
                snprintf(note, sizeof note, "skipped: predicted %.0f s > budget %.0f s", pred, o->budget);
            else {
                double t0 = now_s();
                st = run_point(m, n, bench_window(o, &m->cfg), (int)o->reps, what == SUB_ITL, &p);
                if (st == TC_OK && (st = bench_wait(o, &be)) != TC_OK) p.ok = 0; /* device fault */
                if (st != TC_OK) snprintf(note, sizeof note, "failed: %s", tc_error_get());
                prev_n = n;
                prev_pre = p.prefill_s;
                prev_rest = now_s() - t0 - p.prefill_s;
            }
            fmt_n(n, nb, sizeof nb);
            const char *an = tc_arch_name(arch);
            if (!p.ok) {
                printf("%-10s %-12s %8s  %s\n", label, an, nb, note);
                if (o->csv) {
                    if (what == SUB_ITL) fprintf(o->csv, "%s,%s,%lld,,,,,,,,%s\n", label, an, (long long)n, note);
                    else if (what == SUB_STATE) fprintf(o->csv, "%s,%s,%lld,,,%s\n", label, an, (long long)n, note);
                    else fprintf(o->csv, "%s,%s,%lld,,%s\n", label, an, (long long)n, note);
                }
            } else if (what == SUB_ITL) {
                printf("%-10s %-12s %6s %10.3f %10.4f %10.4f %10.2f %10.4f %12zu %8.0f\n", label, an, nb,
                       p.prefill_s, p.hit_p50 * 1e3, p.hit_p90 * 1e3, p.sync_s * 1e3, p.amort_s * 1e3, p.state,
                       p.rss);
                if (o->csv)
                    fprintf(o->csv, "%s,%s,%lld,%.6f,%.6f,%.6f,%.4f,%.6f,%zu,%.1f,\n", label, an, (long long)n,
                            p.prefill_s, p.hit_p50 * 1e3, p.hit_p90 * 1e3, p.sync_s * 1e3, p.amort_s * 1e3, p.state,
                            p.rss);
            } else if (what == SUB_STATE) {
                printf("%-10s %-12s %8s %14zu %10.0f\n", label, an, nb, p.state, p.rss);
                if (o->csv) fprintf(o->csv, "%s,%s,%lld,%zu,%.1f,\n", label, an, (long long)n, p.state, p.rss);
            } else {
                printf("%-10s %-12s %8s %12.4f\n", label, an, nb, p.prefill_s);
                if (o->csv) fprintf(o->csv, "%s,%s,%lld,%.6f,\n", label, an, (long long)n, p.prefill_s);
            }
            fflush(stdout);
        }
        bench_free(o, &be, m);
    }
    return 0;
}

/* Median time of one batched step for each batch size of Bs, at context
 * ctx (all sessions in the same window phase, so no step syncs). The
 * sizes are timed side by side: every round runs a block of steps of each
 * size in turn, so a ratio to B = 1 compares steps taken under the same
 * machine conditions (on a shared VM, runs of one size a minute apart
 * differed by 30%). */
#define TC_BATCH_BLOCK 4
static tc_status time_batches(tc_model *m, const int64_t *Bs, int nb, int64_t ctx, int W, int steps, double *step_s) {
    const tc_model_config *c = &m->cfg;
    int total = 0, maxb = 0;
    for (int b = 0; b < nb; b++) {
        total += (int)Bs[b];
        if (Bs[b] > maxb) maxb = (int)Bs[b];
    }
    tc_session **ss = calloc((size_t)total, sizeof *ss);
    int32_t *ids = NULL, *tok = malloc((size_t)maxb * 4);
    float *lg = malloc((size_t)maxb * c->vocab_size * 4);
    double *t = malloc(sizeof *t * (size_t)(steps + 1) * (size_t)nb);
    uint64_t x = 777;
    tc_status st = TC_OK;
    int64_t n0 = ctx - ctx % W + 1;
    if (steps > W - 2 && c->arch != TC_ARCH_TRANSFORMER) steps = W - 2;
    ids = malloc((size_t)n0 * 4);
    if (!ss || !ids || !tok || !lg || !t) { st = TC_FAIL(TC_ERR_NOMEM, "out of memory"); goto fail; }
    for (int i = 0; i < total; i++) {
        rand_ids(ids, n0, c->vocab_size, &x);
        if ((st = tc_session_new(m, &ss[i])) != TC_OK) goto fail;
        if ((st = tc_session_append(ss[i], ids, n0, NULL)) != TC_OK) goto fail;
    }
    for (int k0 = 0; k0 < steps; k0 += TC_BATCH_BLOCK) {
        int off = 0;
        for (int b = 0; b < nb; off += (int)Bs[b], b++) {
            int B = (int)Bs[b];
            for (int k = k0; k < k0 + TC_BATCH_BLOCK && k < steps; k++) {
                rand_ids(tok, B, c->vocab_size, &x);
                double a = now_s();
                if ((st = bench_step(ss + off, tok, B, NULL)) != TC_OK) goto fail;
                t[(size_t)b * steps + k] = now_s() - a;
            }
        }
    }
    for (int b = 0; b < nb; b++) step_s[b] = quantile(t + (size_t)b * steps, steps, 0.5);
fail:
    for (int i = 0; ss && i < total; i++) tc_session_free(ss[i]);
    free(ss); free(ids); free(tok); free(lg); free(t);
    return st;
}

static int bench_batch(const bench_opts *o) {
    printf("%-10s %-12s %4s %8s %10s %12s %10s\n", "preset", "arch", "B", "ctx", "step_ms", "tokens_s", "vs_B1");
    if (o->csv) fprintf(o->csv, "preset,arch,B,ctx,step_ms,tokens_s,speedup_vs_b1\n");
    const char *label = o->model ? o->model : o->preset;
    for (int ai = 0; ai < 2; ai++) {
        if (!(o->arch_mask & (1 << ai))) continue;
        tc_backend be;
        tc_model *m = NULL;
        tc_status st = bench_load(o, ai == 0 ? TC_ARCH_TCONST : TC_ARCH_TRANSFORMER, &be, &m);
        if (st != TC_OK) return tc_cli_fail("bench", st);
        double t[MAX_CTX], base = 0;
        char nb[32];
        if (g_sampling) {
            const int from = !m->be->sample ? 0 : m->be->sample_min_rows > 1 ? m->be->sample_min_rows : 1;
            if (!from) printf("# sampling: top-p (T 0.8, top_p 0.95) on the host, from the downloaded logits\n");
            else if (from == 1) printf("# sampling: top-p (T 0.8, top_p 0.95) drawn by the backend's sample op\n");
            else
                printf("# sampling: top-p (T 0.8, top_p 0.95) drawn by the backend's sample op from batch %d, "
                       "on the host below\n", from);
        }
        st = time_batches(m, o->batch, o->n_batch, o->batch_ctx, bench_window(o, &m->cfg), 8 * (int)o->reps, t);
        if (st == TC_OK) st = bench_wait(o, &be); /* a device fault: an error, not figures */
        if (st != TC_OK) { bench_free(o, &be, m); return tc_cli_fail("bench", st); }
        for (int bi = 0; bi < o->n_batch; bi++) {
            int B = (int)o->batch[bi];
            double tps = B / t[bi];
            if (B == 1 || base == 0) base = tps / B;
            printf("%-10s %-12s %4d %8s %10.3f %12.1f %10.2f\n", label, tc_arch_name(m->cfg.arch), B,
                   fmt_n(o->batch_ctx, nb, sizeof nb), t[bi] * 1e3, tps, tps / base);
            if (o->csv)
                fprintf(o->csv, "%s,%s,%d,%lld,%.6f,%.3f,%.4f\n", label, tc_arch_name(m->cfg.arch), B,
                        (long long)o->batch_ctx, t[bi] * 1e3, tps, tps / base);
            fflush(stdout);
        }
        bench_free(o, &be, m);
    }
    return 0;
}

/* The floors and the model figures side by side: each repetition times
 * the triad, a block of hit steps, an SGEMM and one sync back to back, and
 * its ratios use that repetition's own floors (a shared machine's load
 * moves within a minute; floors measured apart made a sync look 118% of
 * the SGEMM rate). Reported: the per-repetition rows and the medians. */
static int bench_floor(const bench_opts *o) {
    tc_backend be;
    tc_model *m = NULL;
    tc_status st = bench_load(o, TC_ARCH_TCONST, &be, &m);
    if (st != TC_OK) return tc_cli_fail("bench", st);
    /* the engine runs OpenBLAS single-threaded and splits ops over its own
     * pool (kernels/cpu/backend_cpu.c); the SGEMM floor is OpenBLAS's own
     * multi-threaded rate on all cores */
    int nt = o->threads > 0 ? (int)o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int reps = (int)o->reps < 3 ? 3 : o->reps > 16 ? 16 : (int)o->reps;
    const tc_model_config *c = &m->cfg;
    const int W = c->generate_window, V = c->vocab_size;
    int64_t n = o->n_ctx ? o->ctx[0] : 65536, nh0 = 1024 > W ? 1024 : W;
    tc_session *h = NULL, *s = NULL;
    int32_t *ids = malloc((size_t)(n > nh0 ? n : nh0) * 4);
    float *lg = malloc((size_t)V * 4);
    double bw[16], gemm[16], hit[16], syn[16], rh[16], rs[16], hs[32];
    uint64_t x = 99;
    if (!ids || !lg) st = TC_FAIL(TC_ERR_NOMEM, "out of memory");
    /* h: a short context for hit steps (flat in N); s: the sync at n */
    if (st == TC_OK) rand_ids(ids, nh0 + 1, V, &x), st = tc_session_new(m, &h);
    if (st == TC_OK) st = tc_session_append(h, ids, nh0 + 1, lg);
    if (st == TC_OK) rand_ids(ids, n, V, &x), st = tc_session_new(m, &s);
    if (st == TC_OK) st = tc_session_append(s, ids, n, NULL);
    const double wb = hit_weight_bytes(c, be.wtype), fl = sync_flops(c, n);
    for (int r = 0; st == TC_OK && r < reps; r++) {
        if (o->cuda >= 0) {
            st = floor_device(o, &be, 3, &bw[r], &gemm[r]);
        } else {
            double b1 = floor_bandwidth(1, 3), bn = floor_bandwidth(nt, 3);
            bw[r] = b1 > bn ? b1 : bn;
        }
        int k = 0;
        int32_t t = tc_argmax(lg, V);
        bench_profile(o, &be, NULL);
        while (st == TC_OK && k < 32) { /* 32 hit steps; a due sync (1K context) untimed */
            if (tc_session_sync_due(h)) { st = tc_session_sync(h, h->n_tokens); continue; }
            double a = now_s();
            st = bench_step(&h, &t, 1, &t);
            hs[k++] = now_s() - a;
        }
        if (st != TC_OK) break;
        bench_profile(o, &be, r == reps - 1 ? "hit steps at batch 1 (32, and any sync due among them)" : NULL);
        hit[r] = quantile(hs, k, 0.5);
        if (o->cuda < 0) {
            openblas_set_num_threads(nt);
            gemm[r] = floor_sgemm(1536, 3);
            openblas_set_num_threads(1);
        }
        bench_profile(o, &be, NULL);
        double a = now_s();
        st = tc_session_sync(s, n);
        if (st == TC_OK) st = bench_wait(o, &be);
        syn[r] = now_s() - a;
        if (st == TC_OK) bench_profile(o, &be, r == reps - 1 ? "one sync" : NULL);
        rh[r] = hit[r] / (wb / bw[r]);
        rs[r] = (fl / gemm[r]) / syn[r];
    }
    tc_session_free(h);
    tc_session_free(s);
    free(ids);
    free(lg);
    if (st != TC_OK) { bench_free(o, &be, m); return tc_cli_fail("bench", st); }
    char nb[32];
    /* 16-bit weights (TC_CUDA_WEIGHTS): the hit step's bytes are theirs, and
     * so is the GEMM floor (the backend's linear, a bf16 / f16 GEMM), while
     * a sync's attentions stay fp32: its share of that rate is lower */
    const char *wname = be.wtype == TC_WT_BF16 ? "bf16" : be.wtype == TC_WT_F16 ? "f16" : "fp32";
    printf("floors and model figures side by side, %d repetitions (threads %d; %.1f MB of %s weights per hit "
           "step; sync over %s tokens = %.1f GFLOP; GEMM floor in %s)\n", reps, nt, wb / 1e6, wname,
           fmt_n(n, nb, sizeof nb), fl / 1e9, wname);
    printf("%4s %12s %10s %12s %12s %12s %10s %12s\n", "rep", o->cuda >= 0 ? "copy_GB/s" : "triad_GB/s", "hit_ms",
           "hit/floor", o->cuda >= 0 ? "cuBLAS_GF/s" : "SGEMM_GF/s", "sync_s", "sync_GF/s", "sync/SGEMM");
    for (int r = 0; r < reps; r++)
        printf("%4d %12.2f %10.3f %12.2f %12.2f %12.3f %10.2f %11.0f%%\n", r + 1, bw[r] / 1e9, hit[r] * 1e3, rh[r],
               gemm[r] / 1e9, syn[r], fl / syn[r] / 1e9, 100 * rs[r]);
    double tmp[16]; /* quantile sorts its input: medians of copies, the rows stay aligned */
    memcpy(tmp, rh, sizeof(double) * (size_t)reps);
    double mrh = quantile(tmp, reps, 0.5);
    memcpy(tmp, rs, sizeof(double) * (size_t)reps);
    double mrs = quantile(tmp, reps, 0.5);
    printf("median: hit step, batch 1 = %.2f x the bandwidth floor; sync = %.0f%% of the %s GEMM rate\n", mrh,
           100 * mrs, wname);
    if (o->csv) {
        const char *label = o->model ? o->model : o->preset;
        fprintf(o->csv, "preset,rep,triad_gbs,hit_ms,hit_over_floor,sgemm_gflops,sync_s,sync_gflops,sync_over_sgemm\n");
        for (int r = 0; r < reps; r++)
            fprintf(o->csv, "%s,%d,%.4f,%.6f,%.4f,%.4f,%.6f,%.4f,%.4f\n", label, r + 1, bw[r] / 1e9, hit[r] * 1e3,
                    rh[r], gemm[r] / 1e9, syn[r], fl / syn[r] / 1e9, rs[r]);
        fprintf(o->csv, "%s,median,,,%.4f,,,,%.4f\n", label, mrh, mrs);
    }
    bench_free(o, &be, m);
    return 0;
}

/* Hit-step flatness, side by side: a session at the first context and one
 * at the last, their hit steps alternated (A, B, A, B, ...) so both see
 * the same machine load; --reps fresh pairs, W_og - 2 steps each. */
static int bench_flat(const bench_opts *o) {
    tc_backend be;
    tc_model *m = NULL;
    tc_status st = bench_load(o, TC_ARCH_TCONST, &be, &m);
    if (st != TC_OK) return tc_cli_fail("bench", st);
    const tc_model_config *c = &m->cfg;
    const int W = bench_window(o, c), per = W > 2 ? W - 2 : 1;
    int64_t nc[2] = {o->ctx[0], o->ctx[o->n_ctx - 1]};
    size_t cap = (size_t)o->reps * per;
    double *t[2] = {malloc(cap * sizeof(double)), malloc(cap * sizeof(double))};
    float *lg = malloc((size_t)c->vocab_size * 4);
    int32_t *ids = malloc((size_t)(nc[1] > nc[0] ? nc[1] : nc[0]) * 4 + 8);
    uint64_t x = 4242;
    int cnt = 0;
    if (!t[0] || !t[1] || !lg || !ids) st = TC_FAIL(TC_ERR_NOMEM, "out of memory");
    for (int r = 0; st == TC_OK && r < o->reps; r++) {
        tc_session *s[2] = {NULL, NULL};
        for (int k = 0; k < 2 && st == TC_OK; k++) {
            int64_t n0 = nc[k] - nc[k] % W + 1;
            rand_ids(ids, n0, c->vocab_size, &x);
            st = tc_session_new(m, &s[k]);
            if (st == TC_OK) st = tc_session_append(s[k], ids, n0, lg);
        }
        for (int i = 0; i < per && st == TC_OK; i++, cnt++)
            for (int k = 0; k < 2 && st == TC_OK; k++) {
                int32_t tok;
                rand_ids(&tok, 1, c->vocab_size, &x);
                double a = now_s();
                st = bench_step(&s[k], &tok, 1, NULL);
                t[k][cnt] = now_s() - a;
            }
        tc_session_free(s[0]);
        tc_session_free(s[1]);
    }
    if (st == TC_OK) st = bench_wait(o, &be);
    if (st == TC_OK) {
        char b0[32], b1[32];
        const char *label = o->model ? o->model : o->preset;
        double p0 = quantile(t[0], cnt, 0.5), p1 = quantile(t[1], cnt, 0.5);
        double q0 = quantile(t[0], cnt, 0.9), q1 = quantile(t[1], cnt, 0.9);
        printf("%-10s %8s %8s %12s %12s %12s %12s %8s  (%d hit steps each, alternated)\n", "preset", "N_short",
               "N_long", "p50_short_ms", "p50_long_ms", "p90_short_ms", "p90_long_ms", "ratio", cnt);
        printf("%-10s %8s %8s %12.4f %12.4f %12.4f %12.4f %8.3f\n", label, fmt_n(nc[0], b0, sizeof b0),
               fmt_n(nc[1], b1, sizeof b1), p0 * 1e3, p1 * 1e3, q0 * 1e3, q1 * 1e3, p1 / p0);
        if (o->csv) {
            fprintf(o->csv, "preset,n_short,n_long,p50_short_ms,p50_long_ms,p90_short_ms,p90_long_ms,ratio,steps\n");
            fprintf(o->csv, "%s,%lld,%lld,%.6f,%.6f,%.6f,%.6f,%.4f,%d\n", label, (long long)nc[0], (long long)nc[1],
                    p0 * 1e3, p1 * 1e3, q0 * 1e3, q1 * 1e3, p1 / p0, cnt);
        }
    }
    free(t[0]); free(t[1]); free(lg); free(ids);
    bench_free(o, &be, m);
    return st == TC_OK ? 0 : tc_cli_fail("bench", st);
}

/* "1K,4K,16K,1M" -> counts, each at most 2^40: far past any machine's
 * memory, and low enough that sums and byte counts of them fit int64 */
static tc_status parse_list(const char *flag, const char *v, int64_t *out, int *n) {
    const long long max = 1LL << 40;
    if (!v) return TC_FAIL(TC_ERR_INVALID, "%s: missing value", flag);
    *n = 0;
    const char *p = v;
    if (!*p) return TC_FAIL(TC_ERR_INVALID, "%s: '' is not a list of positive counts", flag);
    while (*p) {
        char *e;
        errno = 0;
        long long x = strtoll(p, &e, 10);
        /* digits first: strtoll would also take blanks and a sign */
        if (*p < '0' || *p > '9' || e == p || x <= 0)
            return TC_FAIL(TC_ERR_INVALID, "%s: '%s' is not a list of positive counts", flag, v);
        int shift = *e == 'K' || *e == 'k' ? 10 : *e == 'M' || *e == 'm' ? 20 : 0;
        if (errno == ERANGE || x > max >> shift) /* checked before the shift, which could overflow */
            return TC_FAIL(TC_ERR_INVALID, "%s: '%.*s' in '%s' is out of range (at most 2^40)", flag,
                           (int)(e - p) + (shift > 0), p, v);
        x <<= shift;
        e += shift > 0;
        if (*n >= MAX_CTX) return TC_FAIL(TC_ERR_INVALID, "%s: at most %d values", flag, MAX_CTX);
        out[(*n)++] = x;
        if (*e == ',' && e[1]) e++;
        else if (*e) return TC_FAIL(TC_ERR_INVALID, "%s: unexpected '%c' in '%s'", flag, *e, v);
        p = e;
    }
    return TC_OK;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: tconst bench itl|state|prefill|batch|floor|flat [options]\n"
            "  (flat: hit steps at the first and last --ctx, alternated side by side)\n"
            "  --preset tiny|small|paper-41m   random-init model of that preset (cached under $TMPDIR)\n"
            "  --model DIR                     a model directory instead (its own architecture)\n"
            "  --arch tconstformer|transformer|both   (default both; floor: tconstformer)\n"
            "  --ctx LIST      contexts, e.g. 1K,4K,16K,64K,256K,1M (floor: the sync's N, default 64K)\n"
            "  --batch LIST    batch sizes for `batch`, timed side by side (default 1,4,16,64); --batch-ctx N (default 1K)\n"
            "  --reps R        windows timed per context / repetitions (default 2)\n"
            "  --budget S      skip a context whose predicted time exceeds S seconds (default 120)\n"
            "  --threads T     compute threads of the CPU backend (default: the online CPUs, at most 8)\n"
            "  --device D      cpu (default) or cuda:N (tconst-cuda only; floor: device copy\n"
            "                  bandwidth and cuBLAS SGEMM instead of the triad and OpenBLAS)\n"
            "  --sampling S    greedy (default: the top 1 on the backend) or top-p (T 0.8, top_p 0.95:\n"
            "                  the backend's sample op where it has one, else the host sampler on the rows)\n"
            "  --csv FILE      also write the rows as CSV\n");
}

int tc_cli_bench(int argc, char **argv) {
    bench_opts o = {.preset = "tiny", .arch_mask = 3, .reps = 2, .budget = 120, .batch_ctx = 1024, .cuda = -1};
    static const int64_t def_ctx[] = {1024, 4096, 16384, 65536, 262144, 1048576};
    static const int64_t def_batch[] = {1, 4, 16, 64};
    const char *csv = NULL;
    int rc = 0;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    memcpy(o.ctx, def_ctx, sizeof def_ctx);
    o.n_ctx = 6;
    memcpy(o.batch, def_batch, sizeof def_batch);
    o.n_batch = 4;
    int ctx_given = 0;
    tc_status st = TC_OK;
    for (int i = 2; i < argc && st == TC_OK; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 1;
        if (!strcmp(a, "--preset") && v) o.preset = v;
        else if (!strcmp(a, "--model") && v) o.model = v;
        else if (!strcmp(a, "--csv") && v) csv = v;
        else if (!strcmp(a, "--arch") && v) {
            if (!strcmp(v, "both")) o.arch_mask = 3;
            else if (!strcmp(v, "tconstformer")) o.arch_mask = 1;
            else if (!strcmp(v, "transformer")) o.arch_mask = 2;
            else st = TC_FAIL(TC_ERR_INVALID, "--arch '%s': expected tconstformer, transformer or both", v);
        } else if (!strcmp(a, "--ctx")) { st = parse_list("--ctx", v, o.ctx, &o.n_ctx); ctx_given = 1; }
        else if (!strcmp(a, "--batch")) {
            int64_t sum = 0;
            if ((st = parse_list("--batch", v, o.batch, &o.n_batch)) == TC_OK)
                for (int b = 0; b < o.n_batch; b++) sum += o.batch[b];
            /* every size's sessions live at once (timed side by side) */
            if (st == TC_OK && sum > 4096)
                st = TC_FAIL(TC_ERR_INVALID, "--batch '%s': %lld sessions in all, at most 4096", v, (long long)sum);
        }
        else if (!strcmp(a, "--batch-ctx")) st = tc_cli_int(a, v, 1, (int64_t)1 << 30, &o.batch_ctx);
        else if (!strcmp(a, "--reps")) st = tc_cli_int(a, v, 1, 1000, &o.reps);
        else if (!strcmp(a, "--device") && v) {
            char *e = NULL;
            long dv = !strncmp(v, "cuda:", 5) ? strtol(v + 5, &e, 10) : -1;
            if (!strcmp(v, "cpu")) o.cuda = -1;
            else if (e && v[5] >= '0' && v[5] <= '9' && !*e && dv <= 255) o.cuda = (int)dv;
            else st = TC_FAIL(TC_ERR_INVALID, "--device '%s': expected cpu or cuda:N", v);
        }
        else if (!strcmp(a, "--threads")) st = tc_cli_int(a, v, 0, 256, &o.threads);
        else if (!strcmp(a, "--sampling") && v) {
            if (!strcmp(v, "greedy")) g_sampling = 0;
            else if (!strcmp(v, "top-p")) g_sampling = 1;
            else st = TC_FAIL(TC_ERR_INVALID, "--sampling '%s': expected greedy or top-p", v);
        }
        else if (!strcmp(a, "--budget")) st = tc_cli_float(a, v, 0, 1e9, &o.budget);
        else { fprintf(stderr, "tconst bench: error: unknown flag '%s' (or missing value)\n", a); return 2; }
        i += used;
    }
    if (st != TC_OK) return tc_cli_usage_fail("bench", st); /* a flag's bad value */
    if (!strcmp(sub, "floor") && !ctx_given) { o.ctx[0] = 65536; o.n_ctx = 1; }
    if (o.model) o.arch_mask = 1; /* the directory's own architecture */
    if (csv && !(o.csv = fopen(csv, "w"))) return tc_cli_fail("bench", TC_FAIL(TC_ERR_IO, "%s: cannot write", csv));
    if (!strcmp(sub, "itl")) rc = bench_context(&o, SUB_ITL);
    else if (!strcmp(sub, "state")) rc = bench_context(&o, SUB_STATE);
    else if (!strcmp(sub, "prefill")) rc = bench_context(&o, SUB_PREFILL);
    else if (!strcmp(sub, "batch")) rc = bench_batch(&o);
    else if (!strcmp(sub, "floor")) rc = bench_floor(&o);
    else if (!strcmp(sub, "flat")) rc = bench_flat(&o);
    else {
        fprintf(stderr, "tconst bench: error: unknown sub-benchmark '%s'\n", sub);
        usage(stderr);
        rc = 2;
    }
    if (o.csv && fclose(o.csv) != 0 && rc == 0) rc = tc_cli_fail("bench", TC_FAIL(TC_ERR_IO, "%s: write failed", csv));
    tc_sampler_free(&g_smp);
    free(g_lg);
    g_lg = NULL, g_lg_cap = 0;
    return rc;
}
