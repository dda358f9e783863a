/* test_sampler.c — the sampler and the top-k selection it can draw from.
 *
 * (a) tc_topk_rows against a full sort of the row by the documented order
 *     (tc_topk_key descending, ties to the lower id), on rows full of ties,
 *     ±0, ±inf and NaN, for k from 1 to TC_TOPK_MAX and V from 1 to 50257.
 * (b) tc_sampler_sample_topk on a row's candidates draws exactly what
 *     tc_sampler_sample draws from the full row (token and RNG state),
 *     for greedy, temperature + top-k (+ top-p), on rows built to collide:
 *     exact ties, logits that expf rounds to one probability, one huge
 *     logit, and at temperatures from 0.05 to 1000.
 * (c) top-p alone (the nucleus found by the radix walk) draws what the
 *     definition (full sort, integer mass) draws, nuclei 1 .. 45K.
 * (d) tc_sampler_topk_need and the samplers' statistics: a seeded top-k
 *     draw never leaves the top k, and frequencies follow the softmax.
 * (e) the deterministic exp (sample_math.h) against libm's: relative
 *     error, monotonicity, the max's weight exactly 2^38.
 * (f) the host sample op (tc_sample_rows: the radix walk the CUDA kernel
 *     runs, and the sampler's full-row path) draws what the contract,
 *     written out with a full sort, draws with the RNG bits
 *     tc_sampler_draw_params hands it: every sampling mode, top-k past
 *     TC_TOPK_MAX, rows of ties, NaN, +-inf, several rows at once.
 * (g) tc_logprob_of: the log-softmax and the most likely tokens against
 *     the definition; a sampler recording logprobs draws the same tokens.
 * Label: unit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/backend.h"
#include "../model/sampler.h"

static int g_fail = 0;
#include "expect.h"

static uint64_t g_rng = 12345;
static uint32_t rnd(uint32_t n) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33) % n;
}
static float frnd(void) { return (float)rnd(1u << 24) / (float)(1u << 24); }

static const float *g_row;
static uint32_t key_of(const float *x, int i) {
    uint32_t b;
    memcpy(&b, &x[i], 4);
    return tc_topk_key(b);
}
static int by_order(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    uint32_t x = key_of(g_row, i), y = key_of(g_row, j);
    if (x != y) return x > y ? -1 : 1;
    return i - j;
}

/* kinds of rows */
enum { ROW_RANDOM, ROW_TIES, ROW_SPECIAL, ROW_TINY, ROW_SPIKE, ROW_N };
static void fill_row(float *x, int V, int kind) {
    for (int i = 0; i < V; i++) {
        switch (kind) {
        case ROW_RANDOM: x[i] = 20.f * frnd() - 10.f; break;
        case ROW_TIES: x[i] = (float)((int)rnd(9) - 4) * 0.5f; break; /* 9 values, many exact ties */
        case ROW_SPECIAL: {
            static const float sp[] = {0.f, -0.f, 1.f, -1.f, INFINITY, -INFINITY, 3.5f, -2.25f};
            x[i] = rnd(4) ? sp[rnd(8)] : NAN;
            break;
        }
        case ROW_TINY: x[i] = (frnd() - 0.5f) * 1e-6f; break; /* expf rounds neighbours to one probability */
        case ROW_SPIKE: x[i] = frnd(); break;
        }
    }
    if (kind == ROW_SPIKE) x[rnd((uint32_t)V)] = 80.f;
}

static void test_topk_rows(void) {
    static const int Vs[] = {1, 2, 5, 64, 1000, 3001, 50257};
    const int ks[] = {1, 2, 3, 17, 256, TC_TOPK_MAX};
    int checked = 0;
    for (size_t vi = 0; vi < sizeof Vs / sizeof *Vs; vi++) {
        const int V = Vs[vi];
        float *x = malloc((size_t)V * 2 * sizeof *x);
        int *order = malloc((size_t)V * sizeof *order);
        int32_t *ids = malloc((size_t)2 * TC_TOPK_MAX * 4);
        float *vals = malloc((size_t)2 * TC_TOPK_MAX * 4);
        for (int kind = 0; kind < ROW_N; kind++) {
            if (kind == ROW_SPECIAL && V > 64) continue; /* NaN rows: small ones suffice */
            fill_row(x, V, kind);
            fill_row(x + V, V, (kind + 1) % ROW_N); /* a second row: rows are independent */
            for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
                const int k = ks[ki] < V ? ks[ki] : V;
                tc_topk_rows(ids, vals, x, 2, V, k);
                for (int r = 0; r < 2; r++) {
                    g_row = x + (size_t)r * V;
                    for (int i = 0; i < V; i++) order[i] = i;
                    qsort(order, (size_t)V, sizeof *order, by_order);
                    int bad = -1;
                    for (int j = 0; j < k && bad < 0; j++) {
                        uint32_t a, b;
                        memcpy(&a, &vals[r * k + j], 4);
                        memcpy(&b, &g_row[order[j]], 4);
                        if (ids[r * k + j] != order[j] || a != b) bad = j;
                    }
                    EXPECT(bad < 0, "topk V %d k %d kind %d row %d: entry %d is id %d, the sorted row has %d", V, k,
                           kind, r, bad, bad < 0 ? 0 : ids[r * k + bad], bad < 0 ? 0 : order[bad]);
                    checked++;
                }
            }
        }
        free(x), free(order), free(ids), free(vals);
    }
    printf("topk: %d rows match the full sort\n", checked);
}

/* dense and sparse samplers on one row, from one seed, draw after draw */
static int same_draws(const float *x, int V, tc_sampling_params p, int draws, int *diffs) {
    tc_sampler a, b;
    if (tc_sampler_init(&a, &p, V) != TC_OK || tc_sampler_init(&b, &p, V) != TC_OK) {
        printf("FAIL sampler init: %s\n", tc_error_get());
        g_fail++;
        return 0;
    }
    int need = tc_sampler_topk_need(&p, V);
    int k = need + (int)rnd(3); /* more candidates than needed must not matter */
    if (k > V) k = V;
    if (k > TC_TOPK_MAX) k = TC_TOPK_MAX;
    int32_t *ids = malloc((size_t)k * 4);
    float *vals = malloc((size_t)k * 4);
    tc_topk_rows(ids, vals, x, 1, V, k);
    int ok = 1;
    for (int d = 0; d < draws; d++) {
        int32_t ta = tc_sampler_sample(&a, x), tb = tc_sampler_sample_topk(&b, ids, vals, k);
        if (ta != tb || memcmp(a.rng, b.rng, sizeof a.rng)) {
            ok = 0;
            (*diffs)++;
            break;
        }
    }
    free(ids), free(vals);
    tc_sampler_free(&a), tc_sampler_free(&b);
    return ok;
}

static void test_sparse_equals_dense(void) {
    static const float temps[] = {0.f, 0.05f, 0.7f, 1.f, 3.f, 1000.f};
    static const int topks[] = {1, 2, 5, 40, 333, TC_TOPK_MAX};
    static const float topps[] = {1.f, 0.9f, 0.5f, 1e-6f};
    static const int Vs[] = {50, 1000, 50257};
    int runs = 0, diffs = 0;
    for (size_t vi = 0; vi < sizeof Vs / sizeof *Vs; vi++) {
        const int V = Vs[vi];
        float *x = malloc((size_t)V * sizeof *x);
        for (int kind = 0; kind < ROW_N; kind++) {
            if (kind == ROW_SPECIAL) continue; /* the samplers take finite logits */
            fill_row(x, V, kind);
            for (size_t ti = 0; ti < sizeof temps / sizeof *temps; ti++)
                for (size_t ki = 0; ki < sizeof topks / sizeof *topks; ki++)
                    for (size_t pi = 0; pi < sizeof topps / sizeof *topps; pi++) {
                        tc_sampling_params p = {temps[ti], topks[ki], topps[pi], rnd(1u << 30)};
                        if (tc_sampler_topk_need(&p, V) == 0) continue; /* dense only: nothing to compare */
                        if (V > 1000 && rnd(8)) continue; /* a full-vocabulary dense draw sorts 50K: sample */
                        if (!same_draws(x, V, p, V > 1000 ? 3 : 40, &diffs))
                            printf("FAIL sparse != dense: V %d kind %d T %g top_k %d top_p %g\n", V, kind,
                                   p.temperature, p.top_k, p.top_p);
                        runs++;
                    }
        }
        free(x);
    }
    EXPECT(diffs == 0, "%d of %d sampler runs drew differently from the candidates", diffs, runs);
    printf("sampler: %d runs, sparse == dense in all but %d\n", runs, diffs);
}

/* top-p alone, the definition written out plainly (sampler.h and
 * sample_math.h): the whole vocabulary sorted, the weights' integer mass,
 * the shortest prefix whose mass reaches tc_draw_need, one draw over it.
 * The sampler finds the prefix by quickselect of the 64, 256, 1024, ...
 * best and must draw the same. */
static int32_t ref_topp(const float *x, int V, float T, float top_p, uint64_t rng[4], int *nucleus) {
    int *order = malloc((size_t)V * sizeof *order);
    uint64_t *w = malloc((size_t)V * sizeof *w);
    for (int i = 0; i < V; i++) order[i] = i;
    g_row = x;
    qsort(order, (size_t)V, sizeof *order, by_order);
    const float mx = x[order[0]];
    uint64_t total = 0;
    for (int i = 0; i < V; i++) total += w[i] = tc_draw_weight(x[i], mx, T);
    const uint64_t need = tc_draw_need(top_p, total);
    uint64_t cum = 0;
    int keep = V;
    for (int i = 0; i < V; i++) {
        cum += w[order[i]];
        if (cum >= need) { keep = i + 1; break; }
    }
    const uint64_t t = tc_draw_target(tc_rng_bits53(rng), cum);
    uint64_t acc = 0;
    int32_t tok = -1;
    for (int i = 0; i < keep && tok < 0; i++)
        if ((acc += w[order[i]]) > t) tok = order[i];
    *nucleus = keep;
    free(w), free(order);
    return tok;
}

static void test_top_p_alone(void) {
    static const float temps[] = {0.01f, 0.1f, 0.8f, 5.f};
    static const float topps[] = {0.5f, 0.9f, 0.99f};
    const int V = 50257;
    float *x = malloc((size_t)V * sizeof *x);
    int runs = 0, bad = 0, widest = 0, narrowest = V;
    for (int kind = 0; kind < ROW_N; kind++) {
        if (kind == ROW_SPECIAL) continue;
        fill_row(x, V, kind);
        for (size_t ti = 0; ti < sizeof temps / sizeof *temps; ti++)
            for (size_t pi = 0; pi < sizeof topps / sizeof *topps; pi++) {
                tc_sampling_params p = {temps[ti], 0, topps[pi], rnd(1u << 30)};
                tc_sampler s;
                if (tc_sampler_init(&s, &p, V) != TC_OK) { g_fail++; continue; }
                uint64_t rng[4];
                memcpy(rng, s.rng, sizeof rng);
                for (int d = 0; d < 2; d++) {
                    int nuc;
                    int32_t want = ref_topp(x, V, p.temperature, p.top_p, rng, &nuc), got = tc_sampler_sample(&s, x);
                    if (nuc > widest) widest = nuc;
                    if (nuc < narrowest) narrowest = nuc;
                    if (got != want || memcmp(rng, s.rng, sizeof rng)) {
                        bad++;
                        printf("FAIL top-p alone: kind %d T %g top_p %g draw %d: token %d, the definition says %d "
                               "(nucleus %d)\n", kind, p.temperature, p.top_p, d, got, want, nuc);
                        break;
                    }
                }
                tc_sampler_free(&s);
                runs++;
            }
    }
    free(x);
    EXPECT(bad == 0, "%d of %d top-p runs differ from the definition", bad, runs);
    EXPECT(narrowest < 64 && widest > 4096, "nuclei %d..%d do not reach every selection size", narrowest, widest);
    printf("top-p alone: %d runs equal the full-sort definition, nuclei of %d to %d tokens\n", runs, narrowest,
           widest);
}

static void test_need_and_stats(void) {
    const int V = 100;
    tc_sampling_params greedy = {0.f, 0, 1.f, 1}, tk = {1.f, 10, 1.f, 1}, full = {1.f, 0, 1.f, 1},
                       topp = {1.f, 0, 0.9f, 1}, kbig = {1.f, V, 1.f, 1}, kmax = {1.f, TC_TOPK_MAX + 1, 1.f, 1};
    EXPECT(tc_sampler_topk_need(&greedy, V) == 1, "greedy needs 1");
    EXPECT(tc_sampler_topk_need(&tk, V) == 10, "top_k 10 needs 10");
    EXPECT(tc_sampler_topk_need(&full, V) == 0, "plain temperature needs the full row");
    EXPECT(tc_sampler_topk_need(&topp, V) == 0, "top_p alone needs the full row");
    EXPECT(tc_sampler_topk_need(&kbig, V) == 0, "top_k >= vocab is off: the full row");
    EXPECT(tc_sampler_topk_need(&kmax, 1 << 20) == 0, "top_k past TC_TOPK_MAX: the full row");

    /* softmax frequencies over 4 candidates: logits log(1..4), T = 1, top-k 4 of 100 */
    float x[100];
    for (int i = 0; i < V; i++) x[i] = -30.f;
    const int hot[4] = {17, 3, 88, 41};
    for (int j = 0; j < 4; j++) x[hot[j]] = logf((float)(j + 1));
    tc_sampling_params p = {1.f, 4, 1.f, 99};
    tc_sampler s;
    EXPECT(tc_sampler_init(&s, &p, V) == TC_OK, "init");
    int32_t ids[4];
    float vals[4];
    tc_topk_rows(ids, vals, x, 1, V, 4);
    EXPECT(ids[0] == 41 && ids[1] == 88 && ids[2] == 3 && ids[3] == 17, "top-4 order: %d %d %d %d", ids[0], ids[1], ids[2], ids[3]);
    int cnt[4] = {0}, n = 20000, outside = 0;
    for (int d = 0; d < n; d++) {
        int32_t t = tc_sampler_sample_topk(&s, ids, vals, 4);
        int j = 0;
        while (j < 4 && hot[j] != t) j++;
        if (j == 4) outside++;
        else cnt[j]++;
    }
    EXPECT(outside == 0, "%d draws outside the top 4", outside);
    for (int j = 0; j < 4; j++) {
        double want = (j + 1) / 10.0, got = (double)cnt[j] / n;
        /* 6 sigma of a binomial at n = 20000: < 0.022 */
        EXPECT(fabs(got - want) < 0.022, "candidate %d drawn %.4f of the time, softmax says %.4f", j, got, want);
    }
    tc_sampler_free(&s);
}

/* tc_topk_key (branch-free) against its definition written plainly; the
 * whole 2^32 range was checked once (session 18), here 2^24 patterns a
 * run plus the boundaries */
static uint32_t key_def(uint32_t bits) {
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0; /* NaN */
    if (bits == 0x80000000u) bits = 0;                /* -0 == +0 */
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}
static void test_key(void) {
    static const uint32_t edge[] = {0, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7f800001u, 0xff800001u, 0x7fffffffu,
                                    0xffffffffu, 1, 0x80000001u, 0x7f7fffffu, 0xff7fffffu};
    int bad = 0;
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++) bad += tc_topk_key(edge[i]) != key_def(edge[i]);
    uint32_t b = 0x9e3779b9u;
    for (int i = 0; i < 1 << 24; i++) {
        b = b * 1664525u + 1013904223u;
        bad += tc_topk_key(b) != key_def(b);
    }
    EXPECT(bad == 0, "tc_topk_key differs from its definition on %d patterns", bad);
}

/* greedy picks in the backends' order whatever the row holds: a NaN first
 * (the host's argmax never moved off it) or among the others, -0 with +0 */
static void test_greedy_order(void) {
    const float nan = nanf("");
    const float rows[][5] = {{nan, 1, 3, 2, -1}, {1, nan, 3, nan, 3}, {-0.f, 0.f, -1, nan, -INFINITY},
                             {nan, nan, nan, nan, nan}, {-INFINITY, nan, -INFINITY, -5, nan}};
    int bad = 0;
    for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
        int32_t id;
        float v;
        tc_topk_rows(&id, &v, rows[r], 1, 5, 1);
        bad += tc_argmax(rows[r], 5) != id;
    }
    EXPECT(bad == 0, "tc_argmax differs from tc_topk_rows (k 1) on %d of 5 rows with NaN, -0 and -inf", bad);
    EXPECT(tc_argmax(rows[0], 5) == 2, "argmax of {NaN, 1, 3, 2, -1} is %d, want 2", tc_argmax(rows[0], 5));
}

static void test_draw_exp(void) {
    int bad = 0, nonmono = 0, n = 0;
    uint64_t prev = 0;
    double worst = 0;
    for (float x = -26.f; x <= 0.f; x += 1.f / 4096.f, n++) {
        const uint64_t w = tc_draw_weight_x(x);
        if (w < prev) nonmono++;
        prev = w;
        const double want = exp((double)x) * 0x1p38;
        if (want < 0x1p24) continue; /* below, the floor to an integer dominates */
        const double rel = fabs((double)w - want) / want;
        if (rel > worst) worst = rel;
        bad += rel > 1e-6;
    }
    EXPECT(bad == 0, "%d of %d weights off exp by more than 1e-6 (worst %.3g)", bad, n, worst);
    EXPECT(nonmono == 0, "the weight decreases %d times as x grows", nonmono);
    EXPECT(tc_draw_weight_x(0.f) == (1ull << 38) && tc_draw_weight(3.5f, 3.5f, 0.7f) == (1ull << 38),
           "the max's weight is not 2^38");
    EXPECT(tc_draw_weight_x(-27.f) == 0 && tc_draw_weight_x(NAN) == 0 && tc_draw_weight_x(-INFINITY) == 0,
           "far tail / NaN / -inf must weigh 0");
    EXPECT(tc_draw_need(1.f, 12345) == 12345 && tc_draw_need(0.5f, 3) == 2 && tc_draw_need(1e-9f, 5) == 1,
           "tc_draw_need");
    EXPECT(tc_draw_target((1ull << 53) - 1, 1000) == 999 && tc_draw_target(0, 1000) == 0 &&
               tc_draw_target(1ull << 52, 1ull << 61) == 1ull << 60,
           "tc_draw_target");
    printf("draw exp: %d points, worst relative error %.3g\n", n, worst);
    /* the row loop (AVX2 + FMA lanes where the CPU has them) against the
     * scalar definition, bit for bit: grids, specials, odd lengths */
    enum { NW = 70001 };
    float *xs = malloc(NW * sizeof *xs);
    uint64_t *wv = malloc(NW * sizeof *wv);
    static const float specials[] = {NAN, -NAN, INFINITY, -INFINITY, 0.f, -0.f, 1e-40f, -1e-40f, 3.4e38f, -3.4e38f,
                                     -26.5f, -26.499998f, -26.500002f};
    static const float mxs[] = {0.f, 5.25f, -3.f, 1e-30f, INFINITY};
    static const float Ts[] = {1.f, 0.05f, 0.7f, 3.f, 1000.f, 1e-3f};
    int diff = 0, checked = 0;
    for (size_t a = 0; a < sizeof mxs / sizeof *mxs; a++)
        for (size_t b = 0; b < sizeof Ts / sizeof *Ts; b++) {
            for (int i = 0; i < NW; i++)
                xs[i] = i % 97 == 0 ? specials[(i / 97) % (sizeof specials / sizeof *specials)]
                                    : mxs[a] - (float)(i % 40000) * (30.f / 40000.f) * Ts[b] + (frnd() - 0.5f) * 1e-3f;
            const int len = NW - (int)(a + b) % 7; /* tails of 0..7 lanes */
            tc_draw_weights(wv, xs, len, mxs[a], Ts[b]);
            for (int i = 0; i < len; i++, checked++) diff += wv[i] != tc_draw_weight(xs[i], mxs[a], Ts[b]);
        }
    free(xs), free(wv);
    EXPECT(diff == 0, "tc_draw_weights differs from tc_draw_weight at %d of %d points", diff, checked);
    printf("draw weights: the row loop equals the scalar weight at %d points\n", checked);
}

/* The whole contract written out plainly, with a full sort (independent
 * of the radix walk that tc_sample_row, and so the sampler and the GPU
 * kernel, run): the token drawn from row x with d. */
static int32_t ref_draw(const float *x, int V, const tc_draw *d) {
    int *order = malloc((size_t)V * sizeof *order);
    uint64_t *w = malloc((size_t)V * sizeof *w);
    for (int i = 0; i < V; i++) order[i] = i;
    g_row = x;
    qsort(order, (size_t)V, sizeof *order, by_order);
    int32_t tok = order[0];
    if (d->temperature == 0.f) goto out;
    const float mx = x[order[0]];
    for (int i = 0; i < V; i++) w[i] = tc_draw_weight(x[i], mx, d->temperature);
    const int topk = d->top_k > 0 && d->top_k < V;
    int n = topk ? d->top_k : V;
    uint64_t total = 0, acc = 0;
    for (int j = 0; j < n; j++) total += w[order[j]];
    if (!total) goto out;
    if (!topk && d->top_p >= 1.f) { /* plain temperature: the vocabulary in id order */
        const uint64_t t = tc_draw_target(d->r, total);
        for (int i = 0; i < V; i++)
            if ((acc += w[i]) > t) { tok = i; break; }
        goto out;
    }
    if (d->top_p < 1.f) {
        const uint64_t need = tc_draw_need(d->top_p, total);
        uint64_t cum = 0;
        for (int j = 0; j < n; j++)
            if ((cum += w[order[j]]) >= need) { n = j + 1; break; }
        total = cum;
    }
    const uint64_t t = tc_draw_target(d->r, total);
    for (int j = 0; j < n; j++)
        if ((acc += w[order[j]]) > t) { tok = order[j]; break; }
out:
    free(w), free(order);
    return tok;
}

/* the host sample op (the radix walk) against the sort-based definition,
 * row by row (several rows in one call), draw after draw; and the sampler
 * (which draws full rows through the same walk) takes the same bits */
static void test_sample_op(void) {
    static const float temps[] = {0.f, 0.05f, 0.7f, 1.f, 3.f, 1000.f};
    static const int topks[] = {0, 1, 3, 40, 1500};
    static const float topps[] = {1.f, 0.9f, 0.5f, 1e-6f};
    static const int Vs[] = {2, 50, 1000, 50257};
    enum { R = 3 };
    int runs = 0, bad = 0;
    for (size_t vi = 0; vi < sizeof Vs / sizeof *Vs; vi++) {
        const int V = Vs[vi];
        float *x = malloc((size_t)R * V * sizeof *x);
        for (int kind = 0; kind < ROW_N; kind++) {
            for (int r = 0; r < R; r++) fill_row(x + (size_t)r * V, V, (kind + r) % ROW_N);
            for (size_t ti = 0; ti < sizeof temps / sizeof *temps; ti++)
                for (size_t ki = 0; ki < sizeof topks / sizeof *topks; ki++)
                    for (size_t pi = 0; pi < sizeof topps / sizeof *topps; pi++) {
                        if (V > 1000 && rnd(6)) continue; /* the sort-based reference is slow at 50K */
                        tc_sampler a[R], b[R];
                        tc_draw d[R];
                        int ok = 1;
                        for (int r = 0; r < R; r++) {
                            tc_sampling_params p = {temps[ti], topks[ki], topps[pi], rnd(1u << 30)};
                            if (tc_sampler_init(&a[r], &p, V) != TC_OK || tc_sampler_init(&b[r], &p, V) != TC_OK)
                                ok = 0;
                        }
                        for (int step = 0; ok && step < (V > 1000 ? 2 : 8); step++) {
                            int32_t got[R];
                            for (int r = 0; r < R; r++) tc_sampler_draw_params(&a[r], &d[r]);
                            if (tc_sample_rows(got, x, R, V, d) != TC_OK) ok = 0;
                            for (int r = 0; ok && r < R; r++) {
                                const float *row = x + (size_t)r * V;
                                const int32_t want = ref_draw(row, V, &d[r]), smp = tc_sampler_sample(&b[r], row);
                                /* greedy: the host's argmax and the op's topk order differ on NaN rows only */
                                const int greedy_nan = temps[ti] == 0.f && (kind + r) % ROW_N == ROW_SPECIAL;
                                if (got[r] != want || (!greedy_nan && smp != got[r]) ||
                                    memcmp(a[r].rng, b[r].rng, sizeof a[r].rng)) {
                                    printf("FAIL sample op: V %d kind %d row %d T %g top_k %d top_p %g step %d: "
                                           "%d, the definition says %d, the sampler drew %d\n", V, (kind + r) % ROW_N,
                                           r, temps[ti], topks[ki], topps[pi], step, got[r], want, smp);
                                    ok = 0;
                                }
                            }
                        }
                        for (int r = 0; r < R; r++) tc_sampler_free(&a[r]), tc_sampler_free(&b[r]);
                        bad += !ok;
                        runs++;
                    }
        }
        free(x);
    }
    EXPECT(bad == 0, "%d of %d sample-op runs differ from the sampler", bad, runs);
    printf("sample op: %d runs of %d rows draw what the sampler draws\n", runs, R);
}

/* (g) tc_logprob_of against the definition: the log-softmax in long
 * double and the first n_top of a full sort in the topk order; a sampler
 * with lp_on records one per draw, and draws what it draws without. */
static void test_logprobs(void) {
    static const int Vs[] = {1, 3, 64, 1000, 50257};
    const int V_MAX = 50257;
    float *x = malloc((size_t)V_MAX * 4);
    int *ord = malloc((size_t)V_MAX * sizeof *ord);
    int bad = 0, checked = 0;
    for (size_t vi = 0; vi < sizeof Vs / sizeof Vs[0]; vi++) {
        const int V = Vs[vi];
        for (int kind = 0; kind < ROW_N; kind++) {
            fill_row(x, V, kind);
            if (kind == ROW_SPECIAL) /* +inf: all the mass on the +inf ones; kept apart below */
                for (int i = 0; i < V; i++)
                    if (x[i] == INFINITY) x[i] = 5.f;
            long double mx = -INFINITY, sum = 0;
            for (int i = 0; i < V; i++)
                if (!isnan(x[i]) && x[i] > mx) mx = x[i];
            for (int i = 0; i < V; i++)
                if (!isnan(x[i]) && x[i] > -INFINITY) sum += expl((long double)x[i] - mx);
            g_row = x;
            for (int i = 0; i < V; i++) ord[i] = i;
            qsort(ord, (size_t)V, sizeof *ord, by_order);
            for (int n_top = 0; n_top <= TC_LOGPROBS_MAX; n_top += 5) {
                const int32_t tok = (int32_t)rnd((uint32_t)V);
                tc_logprob lp;
                tc_logprob_of(x, V, tok, n_top, &lp);
                const int want_n = n_top < V ? n_top : V;
                int ok = lp.n_top == want_n;
                for (int i = 0; ok && i < want_n; i++) ok = lp.top_id[i] == ord[i];
                for (int i = -1; ok && i < want_n; i++) {
                    const int32_t t = i < 0 ? tok : lp.top_id[i];
                    const float got = i < 0 ? lp.logprob : lp.top_logprob[i];
                    const long double want = isnan(x[t]) || x[t] == -INFINITY ? -INFINITY : (long double)x[t] - mx - logl(sum);
                    ok = isinf(want) ? got == -INFINITY : fabsl((long double)got - want) <= 1e-6L * (1 + fabsl(want));
                }
                checked++;
                if (!ok && bad++ < 3) printf("  logprobs V %d kind %d n_top %d tok %d: got %g (%d top)\n", V, kind, n_top, tok, lp.logprob, lp.n_top);
            }
        }
    }
    EXPECT(bad == 0, "logprobs: %d of %d rows differ from the log-softmax and the sorted top tokens", bad, checked);
    /* +inf logits: those share the mass, all others -inf */
    float y[4] = {1.f, INFINITY, NAN, INFINITY};
    tc_logprob lp;
    tc_logprob_of(y, 4, 3, 4, &lp);
    EXPECT(fabsf(lp.logprob - logf(0.5f)) < 1e-6f && lp.n_top == 4 && lp.top_id[0] == 1 && lp.top_id[1] == 3 &&
               lp.top_id[2] == 0 && lp.top_id[3] == 2 && lp.top_logprob[2] == -INFINITY && lp.top_logprob[3] == -INFINITY,
           "logprobs: +inf logits share the mass (got %g, top %d %d %d %d)", lp.logprob, lp.top_id[0], lp.top_id[1],
           lp.top_id[2], lp.top_id[3]);
    /* a sampler with logprobs on draws the same tokens and records each */
    fill_row(x, 1000, ROW_RANDOM);
    tc_sampling_params p = {0.8f, 0, 0.9f, 77};
    tc_sampler a, b;
    tc_logprob rec[8];
    EXPECT(tc_sampler_init(&a, &p, 1000) == TC_OK && tc_sampler_init(&b, &p, 1000) == TC_OK, "sampler init");
    b.lp_on = 1, b.lp_top = 3, b.lp = rec, b.lp_cap = 8, b.lp_n = 0;
    int same = 1;
    for (int i = 0; i < 10; i++) {
        const int32_t ta = tc_sampler_sample(&a, x), tb = tc_sampler_sample(&b, x);
        same &= ta == tb;
        if (i < 8) {
            tc_logprob want;
            tc_logprob_of(x, 1000, tb, 3, &want);
            same &= want.logprob == rec[i].logprob && want.n_top == 3 && rec[i].n_top == 3 &&
                    !memcmp(want.top_id, rec[i].top_id, 3 * 4) && !memcmp(want.top_logprob, rec[i].top_logprob, 3 * 4);
        }
    }
    EXPECT(same && b.lp_n == 8, "logprobs: a sampler recording them draws the same tokens, one record a draw up to "
                                "lp_cap (%d records)", b.lp_n);
    tc_sampler_free(&a);
    tc_sampler_free(&b);
    free(x);
    free(ord);
}

int main(void) {
    test_logprobs();
    test_key();
    test_greedy_order();
    test_draw_exp();
    test_sample_op();
    test_topk_rows();
    test_sparse_equals_dense();
    test_top_p_alone();
    test_need_and_stats();
    printf(g_fail ? "sampler: %d failures\n" : "sampler: all checks passed\n", g_fail);
    return g_fail ? 1 : 0;
}
