/* test_gpu_parity.c — the tiny models on the CUDA backend against the CPU
 * backend, end to end through the session API: the same random-init model
 * directory loaded onto both, a prompt, then greedy decoding where each
 * backend picks its own argmax. For each of the three architectures the two
 * token streams must be identical, every step's logits within the parity
 * bound of DESIGN.md §7 (max|dlogit| <= 1e-3 * max(1, max|logit|)), and the
 * TConstFormer / TLinFormer streams must cross >= 8 syncs (W_oh != W_og for
 * one of them). A fresh prefill over the whole stream on the GPU must give
 * the same last logits as the CPU stream (sync + window batch path).
 * Passes: as called, without programmatic dependent launch, with each
 * session's two hit-step softmaxes in one block and no fused ops (the
 * reference for the bitwise checks below); as called with all three (the
 * defaults: must give the first pass's logits bit for bit -- the same
 * arithmetic, launched overlapping, split over two blocks, fused); hit steps captured as CUDA graphs; replayed graphs
 * (TC_CUDA_GRAPHS=2), both compared bit for bit with the first pass and
 * the result reported; graphs with three
 * threads at once on the backend's three lanes (the worker's layout);
 * graphs captured on lane 0 while a thread bound to no lane (as the
 * worker's RPC thread, which frees a departed coordinator's sessions)
 * allocates, uploads, downloads and frees on the same lane: nothing may
 * join the capture, no error may be latched; and
 * 16-bit weights (bf16, f16) against the naive backend's 16-bit twin.
 *
 * Without a CUDA device: prints "SKIPPED: no CUDA device", exits 77
 * (ctest SKIP_RETURN_CODE). Label: gpu. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../kernels/cuda/backend_cuda.h"
#include "../../kernels/cuda/kernels_cuda.h" /* TC_CUDA_SKINNY_MAX / _ROWS */
#include "../../model/sampler.h"
#include "../../model/session.h"

#define TC_SKIP 77
#define MIN_SYNCS 8

static int g_fail = 0;

#include "../expect.h"

static double rel_err(const float *a, const float *ref, int V) {
    double mx = 1, md = 0;
    for (int j = 0; j < V; j++) {
        if (fabs(ref[j]) > mx) mx = fabs(ref[j]);
        double d = fabs((double)a[j] - ref[j]);
        if (!(d <= md)) md = d; /* NaN-safe */
    }
    return md / mx;
}

static int32_t argmax(const float *x, int V) {
    int32_t b = 0;
    for (int j = 1; j < V; j++)
        if (x[j] > x[b]) b = j;
    return b;
}

/* gap between the best and second-best logit: a divergence at a near-tie
 * is reported with it so a reader can tell a tie from a bug */
static double top2_gap(const float *x, int V) {
    int32_t b = argmax(x, V);
    double s = -INFINITY;
    for (int j = 0; j < V; j++)
        if (j != b && x[j] > s) s = x[j];
    return (double)x[b] - s;
}

typedef struct {
    tc_arch arch;
    int woh, wog; /* 0: the preset's */
    int prompt, decode;
} parity_case;

/* a pass: its GPU backend, the model file's dtype (both backends load
 * the same values) and the logit bound (DESIGN §7's 1e-3 for fp32; wider
 * for 16-bit weights, whose GEMMs round the activations too, where a
 * greedy divergence at a near-tie of the CPU's logits is allowed) */
typedef struct {
    const char *name;
    tc_backend *gpu;
    const char *dtype;
    double tol;
    tc_backend *ref; /* NULL: the CPU backend */
    int bits;        /* BITS_*: this pass's GPU logits against the first pass's */
} pass_t;
enum { BITS_NONE, BITS_RECORD, BITS_MUST, BITS_REPORT };

/* the first pass's GPU logits, per case: every step's, in order */
#define N_CASES 3
static float *g_bits[N_CASES];
static size_t g_bits_n[N_CASES];

static void run_case(tc_backend *cpu, const parity_case *pc, int ci, const pass_t *ps) {
    tc_backend *gpu = ps->gpu;
    size_t nbits = 0;
    long bits_diff = -1; /* first differing logit of the bitwise check */

    if (ps->ref) cpu = ps->ref;
    const char *pass = ps->name;
    const double tol = ps->tol;
    int near_tie = 0;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tc_gpu_parity_%d_%d_%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid(),
             (int)pc->arch, pass);
    tc_model_config c;
    tc_config_preset(&c, "tiny", pc->arch);
    if (pc->arch != TC_ARCH_TRANSFORMER) {
        c.history_window = pc->woh;
        c.generate_window = pc->wog;
    }
    tc_model *mg = NULL, *mc = NULL;
    tc_session *sg = NULL, *sc = NULL, *sk = NULL;
    const int V = c.vocab_size, L = pc->prompt + pc->decode;
    /* sk: a twin of sg stepped through tc_step_batch_topk (the device's topk
     * on the device's logits) must hand back tc_topk_rows of sg's logits */
    int32_t kid[64], wid[64];
    float kval[64], wval[64];
    int topk_bad = 0;
    /* sd: a twin stepped through tc_step_batch_draw (the device's sample
     * op) must draw what the host sampler draws from sg's logits: a
     * sampler pair a case, the mode changing step to step */
    tc_session *sd = NULL;
    tc_sampler qa, qb;
    const tc_sampling_params qp[4] = {{0.9f, 0, 1.f, 5}, {1.1f, 0, 0.8f, 5}, {0.7f, 7, 0.9f, 5}, {0.f, 0, 1.f, 5}};
    int draw_bad = 0, draws = 0;
    tc_backend_cuda_set_sample(gpu, 1);
    tc_sampler_init(&qa, &qp[0], V), tc_sampler_init(&qb, &qp[0], V);
    int32_t *tg = malloc((size_t)L * 4), *tcpu = malloc((size_t)L * 4);
    float *lg = malloc((size_t)V * 4), *lc = malloc((size_t)V * 4);
    double worst = 0;
    int diverged = -1;
    if (tc_model_init_random(&c, 7, ps->dtype, dir) != TC_OK) {
        EXPECT(0, "%s: init: %s", tc_arch_name(pc->arch), tc_error_get());
        goto done;
    }
    if (tc_model_load(&mc, dir, cpu) != TC_OK || tc_model_load(&mg, dir, gpu) != TC_OK) {
        EXPECT(0, "%s: load: %s", tc_arch_name(pc->arch), tc_error_get());
        goto done;
    }
    for (int i = 0; i < pc->prompt; i++) tg[i] = tcpu[i] = (int32_t)((i * 131 + 17) % V);
    tc_session_new(mg, &sg);
    tc_session_new(mc, &sc);
    tc_session_new(mg, &sk);
    tc_session_new(mg, &sd);
    EXPECT(tc_session_append(sd, tg, pc->prompt, NULL) == TC_OK, "gpu prefill (draw twin)");
    EXPECT(tc_session_append(sg, tg, pc->prompt, lg) == TC_OK, "gpu prefill");
    EXPECT(tc_session_append(sk, tg, pc->prompt, NULL) == TC_OK, "gpu prefill (top-k twin)");
    EXPECT(tc_session_append(sc, tcpu, pc->prompt, lc) == TC_OK, "cpu prefill");
    if (ps->bits == BITS_RECORD) {
        free(g_bits[ci]);
        g_bits[ci] = malloc((size_t)(pc->prompt + pc->decode) * (size_t)V * 4);
        g_bits_n[ci] = 0;
    }
    for (int i = pc->prompt; i < L; i++) {
        if (ps->bits == BITS_RECORD && g_bits[ci]) {
            memcpy(g_bits[ci] + nbits, lg, (size_t)V * 4);
            g_bits_n[ci] = nbits + (size_t)V;
        } else if (ps->bits != BITS_NONE && g_bits[ci] && bits_diff < 0) {
            if (nbits + (size_t)V > g_bits_n[ci]) bits_diff = (long)nbits;
            else
                for (int j = 0; j < V && bits_diff < 0; j++)
                    if (memcmp(&lg[j], &g_bits[ci][nbits + (size_t)j], 4)) bits_diff = (long)(nbits + (size_t)j);
        }
        nbits += (size_t)V;
        double e = rel_err(lg, lc, V);
        if (!(e <= worst)) worst = e;
        EXPECT(e <= tol, "%s: logits before token %d: rel %.3e > %.0e", tc_arch_name(pc->arch), i, e, tol);
        tg[i] = argmax(lg, V);
        tcpu[i] = argmax(lc, V);
        if (tg[i] != tcpu[i] && diverged < 0) {
            diverged = i;
            double mx = 1;
            for (int j = 0; j < V; j++) mx = fabs(lc[j]) > mx ? fabs(lc[j]) : mx;
            if (tol > 1e-3 && top2_gap(lc, V) <= 2 * tol * mx) { /* 16-bit: a near-tie may flip */
                near_tie = 1;
                printf("note  [%s] %s: greedy streams part at token %d on a near-tie (cpu top-2 gap %.3e)\n", pass,
                       tc_arch_name(pc->arch), i, top2_gap(lc, V));
                break;
            }
            EXPECT(0, "%s: greedy streams diverge at token %d: gpu %d, cpu %d (cpu top-2 gap %.3e)",
                   tc_arch_name(pc->arch), i, tg[i], tcpu[i], top2_gap(lc, V));
        }
        if (diverged >= 0) break;
        tc_session *one = sg;
        EXPECT(tc_step_batch(&one, &tg[i], 1, lg) == TC_OK, "gpu step %d", i);
        const int k = 1 + i % (V < 64 ? V : 64);
        one = sk;
        EXPECT(tc_step_batch_topk(&one, &tg[i], 1, k, kid, kval) == TC_OK, "gpu top-k step %d", i);
        tc_topk_rows(wid, wval, lg, 1, V, k);
        if ((memcmp(kid, wid, (size_t)k * 4) || memcmp(kval, wval, (size_t)k * 4)) && !topk_bad++)
            EXPECT(0, "%s: step %d: the device's top %d differs from tc_topk_rows of the logits (first id %d vs %d)",
                   tc_arch_name(pc->arch), i, k, kid[0], wid[0]);
        qa.p = qb.p = qp[i % 4];
        tc_draw dr;
        int32_t drawn = -1;
        tc_sampler_draw_params(&qb, &dr);
        one = sd;
        EXPECT(tc_step_batch_draw(&one, &tg[i], 1, &dr, &drawn) == TC_OK, "gpu draw step %d", i);
        const int32_t want = tc_sampler_sample(&qa, lg);
        draws++;
        if ((drawn != want || memcmp(qa.rng, qb.rng, sizeof qa.rng)) && !draw_bad++)
            EXPECT(0, "%s: step %d: the device drew %d, the host sampler %d from the same logits (T %g top_k %d "
                   "top_p %g)", tc_arch_name(pc->arch), i, drawn, want, qa.p.temperature, qa.p.top_k, qa.p.top_p);
        one = sc;
        EXPECT(tc_step_batch(&one, &tcpu[i], 1, lc) == TC_OK, "cpu step %d", i);
    }
    if (pc->arch != TC_ARCH_TRANSFORMER && !near_tie)
        EXPECT(sg->n_syncs >= MIN_SYNCS && sg->n_syncs == sc->n_syncs, "%s: %lld gpu / %lld cpu syncs, want >= %d",
               tc_arch_name(pc->arch), (long long)sg->n_syncs, (long long)sc->n_syncs, MIN_SYNCS);
    EXPECT(tc_backend_cuda_sync(gpu) == TC_OK, "cuda backend error: %s", tc_error_get());
    if (diverged < 0) {
        /* the logits after the last token, streamed ... */
        double e = rel_err(lg, lc, V);
        if (!(e <= worst)) worst = e;
        EXPECT(e <= tol, "%s: logits after %d tokens: rel %.3e > %.0e", tc_arch_name(pc->arch), L, e, tol);
        /* ... and the whole stream as one prefill on the GPU (one sync +
         * the window as a causal batch) against the CPU's stream */
        tc_session *fresh = NULL;
        tc_session_new(mg, &fresh);
        EXPECT(tc_session_append(fresh, tg, L, lg) == TC_OK, "gpu prefill of %d tokens", L);
        e = rel_err(lg, lc, V);
        if (!(e <= worst)) worst = e;
        EXPECT(e <= tol, "%s: gpu prefill of %d tokens vs cpu stream: rel %.3e", tc_arch_name(pc->arch), L, e);
        tc_session_free(fresh);
    }
    if (ps->bits == BITS_MUST || ps->bits == BITS_REPORT) {
        if (!g_bits[ci]) bits_diff = 0;
        else if (bits_diff < 0 && nbits != g_bits_n[ci]) bits_diff = (long)nbits; /* a different number of steps */
        if (ps->bits == BITS_MUST)
            EXPECT(bits_diff < 0, "%s: [%s] logits differ from the first pass's in bits (first at step %ld, logit %ld)",
                   tc_arch_name(pc->arch), pass, bits_diff / V, bits_diff % V);
        printf("bits  [%s] %-12s %s the first pass's logits bit for bit%s\n", pass, tc_arch_name(pc->arch),
               bits_diff < 0 ? "equal to" : "DIFFER from", ps->bits == BITS_MUST ? " (required)" : " (reported)");
    }
    printf("%-5s [%s] %-12s W_oh %d W_og %d, %d + %d tokens, %lld syncs: streams %s, worst rel logit err %.2e, "
           "device top-k %s, device draws %s (%d)\n",
           (diverged < 0 || near_tie) && !topk_bad && !draw_bad ? "ok" : "FAIL", pass, tc_arch_name(pc->arch), c.history_window, c.generate_window, pc->prompt,
           pc->decode, sg ? (long long)sg->n_syncs : 0LL, diverged < 0 ? "identical" : near_tie ? "part at a near-tie" : "DIVERGED", worst,
           topk_bad ? "DIFFERS" : "exact", draw_bad ? "DIFFER" : "exact", draws);
done:
    tc_session_free(sk);
    tc_session_free(sd);
    tc_sampler_free(&qa), tc_sampler_free(&qb);
    tc_session_free(sg);
    tc_session_free(sc);
    tc_model_free(mg);
    tc_model_free(mc);
    free(tg); free(tcpu); free(lg); free(lc);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
}

/* >= 8 syncs: (prompt + decode - 1) / W_og >= 8 for the two constant-state ones */
static const parity_case CASES[N_CASES] = {
    {TC_ARCH_TCONST, 24, 8, 5, 80},      /* W_oh != W_og, zip longer than the window */
    {TC_ARCH_TLIN, 16, 16, 21, 140},     /* history K/V grows with N */
    {TC_ARCH_TRANSFORMER, 0, 0, 5, 120}, /* KV cache grows; no syncs */
};
static tc_backend *g_gpu, *g_cpu;

static void run_pass(const pass_t *ps) {
    for (int i = 0; i < N_CASES; i++) run_case(g_cpu, &CASES[i], i, ps);
}
static void run_all(const char *name, int bits) {
    pass_t ps = {name, g_gpu, "f32", 1e-3, NULL, bits};
    run_pass(&ps);
}

/* A batch of 12 sessions (different prompts and lengths) stepped
 * together, against a twin of each stepped alone, over 3 windows of
 * steps: with the skinny kernels taking 12 rows (skinny_rows >= 12, in
 * groups of 8) each row's logits must equal its twin's bit for bit -- a
 * session's tokens do not depend on who shares its batch; with cuBLAS
 * for the batch (skinny_rows 8) they are within the parity bound, and
 * the bits are reported. The replayed graphs on. */
static void batch_invariance(int skinny_rows) {
    enum { NB = 12 };
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tc_gpu_parity_%d_batch", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    tc_model_config c;
    tc_config_preset(&c, "tiny", TC_ARCH_TCONST);
    c.history_window = 24, c.generate_window = 8;
    const int V = c.vocab_size, steps = 3 * c.generate_window + 1;
    tc_model *m = NULL;
    tc_session *sb[NB] = {0}, *s1[NB] = {0};
    int32_t tok[NB], prompt[40];
    float *lb = malloc((size_t)NB * V * 4), *l1 = malloc((size_t)V * 4);
    int bits_same = 1;
    double worst = 0;
    const int was = tc_backend_cuda_set_skinny_rows(g_gpu, skinny_rows);
    TC_ASSERT(was >= 0, "skinny rows %d", skinny_rows);
    if (!lb || !l1 || tc_model_init_random(&c, 9, "f32", dir) != TC_OK || tc_model_load(&m, dir, g_gpu) != TC_OK) {
        EXPECT(0, "batch invariance: set-up: %s", tc_error_get());
        goto done;
    }
    for (int b = 0; b < NB; b++) {
        const int np = 3 + 3 * b; /* 3 .. 36 tokens: the sessions sit at different points of their windows */
        for (int i = 0; i < np; i++) prompt[i] = (int32_t)((i * 37 + b * 101 + 5) % V);
        EXPECT(tc_session_new(m, &sb[b]) == TC_OK && tc_session_new(m, &s1[b]) == TC_OK, "sessions");
        EXPECT(tc_session_append(sb[b], prompt, np, l1) == TC_OK, "prefill %d", b);
        EXPECT(tc_session_append(s1[b], prompt, np, NULL) == TC_OK, "prefill %d (twin)", b);
        tok[b] = argmax(l1, V);
    }
    for (int st = 0; st < steps; st++) {
        EXPECT(tc_step_batch(sb, tok, NB, lb) == TC_OK, "batch step %d: %s", st, tc_error_get());
        for (int b = 0; b < NB; b++) {
            tc_session *one = s1[b];
            EXPECT(tc_step_batch(&one, &tok[b], 1, l1) == TC_OK, "step %d of session %d alone", st, b);
            if (memcmp(l1, lb + (size_t)b * V, (size_t)V * 4)) bits_same = 0;
            const double e = rel_err(lb + (size_t)b * V, l1, V);
            if (!(e <= worst)) worst = e;
        }
        for (int b = 0; b < NB; b++) tok[b] = argmax(lb + (size_t)b * V, V);
    }
    EXPECT(tc_backend_cuda_sync(g_gpu) == TC_OK, "cuda backend error: %s", tc_error_get());
    if (skinny_rows >= NB)
        EXPECT(bits_same, "batch of %d, skinny rows %d: a row's logits differ from its session's alone", NB,
               skinny_rows);
    EXPECT(worst <= 1e-3, "batch of %d: rel %.3e from the sessions alone", NB, worst);
    printf("%-5s [batch] %d sessions stepped together %d times (skinny rows %d): logits %s each session's alone%s, "
           "worst rel err %.2e\n", (skinny_rows < NB || bits_same) && worst <= 1e-3 ? "ok" : "FAIL", NB, steps,
           skinny_rows, bits_same ? "equal to" : "DIFFER from", skinny_rows >= NB ? " bit for bit (required)" :
           " (reported)", worst);
done:
    for (int b = 0; b < NB; b++) tc_session_free(sb[b]), tc_session_free(s1[b]);
    tc_model_free(m);
    free(lb), free(l1);
    (void)tc_backend_cuda_set_skinny_rows(g_gpu, was); /* as it was (TC_CUDA_SKINNY_ROWS) */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
}

/* the worker's RPC thread: bound to no lane (so lane 0, the generation
 * thread's), freeing session memory while the generation thread captures
 * its hit steps there. Each round: alloc (sizes vary), upload a pattern,
 * read it back, free. */
typedef struct {
    atomic_int stop;
    long rounds, bad;
} foreign_t;
static void *foreign_main(void *arg) {
    foreign_t *f = arg;
    enum { N = 16384 };
    int32_t *h = malloc(N * sizeof *h), *back = malloc(N * sizeof *back);
    if (!h || !back) {
        f->bad++;
        free(h), free(back);
        return NULL;
    }
    while (!atomic_load(&f->stop)) {
        void *p = g_gpu->alloc(g_gpu, N * sizeof *h + (size_t)(f->rounds % 7) * 4096);
        if (!p) {
            f->bad++;
            break;
        }
        for (int i = 0; i < N; i++) h[i] = (int32_t)(f->rounds * 131 + i);
        g_gpu->upload(g_gpu, p, h, N * sizeof *h);
        g_gpu->download(g_gpu, back, p, N * sizeof *back);
        if (memcmp(h, back, N * sizeof *h)) f->bad++;
        g_gpu->free(g_gpu, p);
        f->rounds++;
        usleep(50);
    }
    free(h), free(back);
    return NULL;
}

/* a worker's other compute threads: the context thread (lane 1) and the
 * prefill thread (lane 2, TC_CUDA_PREFILL_LANE=1), each in its own
 * workspace */
static void *lane_main(void *arg) {
    const int lane = (int)(intptr_t)arg;
    char name[16];
    snprintf(name, sizeof name, "lane%d", lane);
    tc_backend_cuda_bind_lane(lane);
    tc_model_bind_workspace(lane);
    run_all(name, BITS_REPORT);
    return NULL;
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
    tc_backend gpu, cpu;
    if (tc_backend_cuda_init(&gpu, 0) != TC_OK) {
        printf("FAIL: cuda init on a machine with %d device(s): %s\n", ndev, tc_error_get());
        return 1;
    }
    tc_backend_cpu_init(&cpu, 0);
    g_gpu = &gpu, g_cpu = &cpu;
    tc_backend_cuda_set_graphs(&gpu, 0);
    const int pdl = tc_backend_cuda_set_pdl(1);
    tc_backend_cuda_set_pdl(0);
    tc_backend_cuda_set_pairs(&gpu, 0);
    tc_backend_cuda_set_fuse(&gpu, 0);
    run_all("plain", BITS_RECORD);
    tc_backend_cuda_set_pdl(1);
    tc_backend_cuda_set_pairs(&gpu, 1);
    tc_backend_cuda_set_fuse(&gpu, 1);
    if (!pdl) printf("note  programmatic dependent launch: not on this device (sm_90+)\n");
    run_all("fast", BITS_MUST);
    tc_backend_cuda_set_graphs(&gpu, 1);
    run_all("graphs", BITS_REPORT);
    long launches, inst;
    tc_backend_cuda_graph_stats(&gpu, &launches, &inst);
    EXPECT(launches > 0 && inst >= 1 && inst <= launches, "graphs on: %ld launches, %ld instantiations", launches,
           inst);
    printf("graphs: %ld hit steps launched as graphs, %ld instantiated, the rest updated in place\n", launches, inst);
    /* replay (TC_CUDA_GRAPHS=2): a step whose launches hash as the kept
     * graph's is that graph, launched as is with the step's items */
    tc_backend_cuda_set_graphs(&gpu, 2);
    run_all("replay", BITS_REPORT);
    batch_invariance(TC_CUDA_SKINNY_MAX);
    batch_invariance(TC_CUDA_SKINNY_ROWS);
    long launches2, inst2;
    tc_backend_cuda_graph_stats(&gpu, &launches2, &inst2);
    launches2 -= launches, inst2 -= inst;
    EXPECT(launches2 > 0 && inst2 >= 1 && inst2 < launches2, "replay: %ld launches, %ld instantiations", launches2,
           inst2);
    printf("replay: %ld hit steps launched as graphs, %ld captured, %ld replayed as kept\n", launches2, inst2,
           launches2 - inst2);
    /* an unbound thread's memory ops while this one captures on lane 0
     * (graphs 1: every hit step captured): they go on the backend's side
     * stream while the lane is capturing, else on the lane */
    tc_backend_cuda_set_graphs(&gpu, 1);
    {
        foreign_t f = {0};
        pthread_t tf;
        const long side0 = tc_backend_cuda_side_ops(&gpu);
        if (pthread_create(&tf, NULL, foreign_main, &f) != 0) {
            EXPECT(0, "pthread_create");
        } else {
            run_all("foreign", BITS_REPORT);
            atomic_store(&f.stop, 1);
            pthread_join(tf, NULL);
            EXPECT(f.rounds > 0 && f.bad == 0, "unbound thread during captures: %ld rounds, %ld bad", f.rounds,
                   f.bad);
            EXPECT(tc_backend_cuda_status(&gpu) == TC_OK, "unbound thread during captures: %s", tc_error_get());
            printf("foreign: %ld alloc/upload/download/free rounds from an unbound thread, %ld ops on the side "
                   "stream (a capture was running)\n",
                   f.rounds, tc_backend_cuda_side_ops(&gpu) - side0);
        }
    }
    /* lanes: a thread on each other lane (the worker's context and
     * prefill threads) while this one runs lane 0, all capturing */
    pthread_t th[TC_CUDA_LANES];
    int started = 0;
    for (int l = 1; l < TC_CUDA_LANES; l++, started++)
        if (pthread_create(&th[l], NULL, lane_main, (void *)(intptr_t)l) != 0) {
            EXPECT(0, "pthread_create");
            break;
        }
    run_all("lane0", BITS_REPORT);
    for (int l = 1; l <= started; l++) pthread_join(th[l], NULL);
    /* 16-bit weights: the model stored in bf16 / f16, the reference the
     * naive backend holding the same 16-bit matrices and rounding linear
     * inputs as the GPU does (double accumulation); a first-guess bound of
     * 1e-2 (the two round slightly different fp32 inputs), to be replaced
     * by what a GPU run measures */
    static const struct { const char *dtype; int wt; } W16[] = {{"bf16", TC_WT_BF16}, {"f16", TC_WT_F16}};
    for (int w = 0; w < 2; w++) {
        tc_backend g16;
        setenv("TC_CUDA_WEIGHTS", W16[w].dtype, 1);
        tc_status st = tc_backend_cuda_init(&g16, 0);
        unsetenv("TC_CUDA_WEIGHTS");
        if (st != TC_OK || g16.wtype != W16[w].wt) {
            EXPECT(0, "cuda init with TC_CUDA_WEIGHTS=%s: %s", W16[w].dtype, st != TC_OK ? tc_error_get() : "wtype");
            continue;
        }
        tc_backend_cuda_set_graphs(&g16, 1);
        tc_backend nv;
        tc_backend_naive_init_wt(&nv, W16[w].wt);
        pass_t ps = {W16[w].dtype, &g16, W16[w].dtype, 1e-2, &nv, BITS_NONE};
        run_pass(&ps);
        EXPECT(tc_backend_cuda_sync(&g16) == TC_OK, "%s backend: %s", W16[w].dtype, tc_error_get());
        tc_backend_cuda_free(&g16);
    }
    for (int i = 0; i < N_CASES; i++) free(g_bits[i]);
    tc_backend_cuda_free(&gpu);
    tc_backend_cpu_free(&cpu);
    printf("%s\n", g_fail ? "gpu parity FAILED" : "gpu parity passed");
    return g_fail ? 1 : 0;
}
