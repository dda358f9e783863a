/* sampler.c — see sampler.h. Top-k and top-p are applied to the
 * temperature-scaled distribution, top-k first, as in HF transformers and
 * vLLM; the kept candidates are renormalized and drawn with one uniform.
 * The arithmetic is kernels/sample_math.h's (integer masses), which the
 * backends' sample op shares. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/backend.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

uint64_t tc_rng_bits53(uint64_t st[4]) { return xoshiro_next(st) >> 11; }

double tc_rng_uniform(uint64_t st[4]) { return (double)tc_rng_bits53(st) * (1.0 / 9007199254740992.0); }

tc_status tc_sampling_validate(const tc_sampling_params *p) {
    if (!(p->temperature >= 0.f) || !isfinite(p->temperature))
        return TC_FAIL(TC_ERR_INVALID, "temperature %g must be a finite number >= 0", p->temperature);
    if (p->top_k < 0) return TC_FAIL(TC_ERR_INVALID, "top_k %d must be >= 0 (0 = off)", p->top_k);
    if (!(p->top_p > 0.f && p->top_p <= 1.f)) return TC_FAIL(TC_ERR_INVALID, "top_p %g must be in (0, 1]", p->top_p);
    return TC_OK;
}

tc_status tc_sampler_init(tc_sampler *s, const tc_sampling_params *p, int vocab) {
    memset(s, 0, sizeof *s);
    TC_CHECK(tc_sampling_validate(p));
    s->p = *p;
    s->vocab = vocab;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    s->scratch = malloc(tc_sample_scratch_bytes(vocab));
    if (!s->scratch) {
        tc_sampler_free(s);
        return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    }
    return TC_OK;
}

void tc_sampler_free(tc_sampler *s) {
    free(s->scratch);
    s->scratch = NULL;
}

/* greedy in the backends' order (backend.h's tc_topk_key: -0 with +0, NaN
 * below -inf, ties to the lower id), so every path picks the same token:
 * `x[i] > x[best]` never moved off a NaN in x[0] */
int32_t tc_argmax(const float *x, int n) {
    int32_t best = 0;
    uint32_t u;
    memcpy(&u, &x[0], 4);
    uint32_t kb = tc_topk_key(u);
    for (int i = 1; i < n; i++) {
        memcpy(&u, &x[i], 4);
        const uint32_t k = tc_topk_key(u);
        if (k > kb) best = i, kb = k;
    }
    return best;
}

/* The draw over the candidates w[order[0..n)] in that order (top-k
 * already applied; for top-p alone, a prefix of the sorted vocabulary long
 * enough to hold the top-p cut): top-p, then one draw of 53 random bits
 * (sample_math.h). `total` (>= 1) is the mass of all the candidates.
 * Gives a position in order. Integer masses: the dense and sparse paths
 * and the backends' sample op pick the same position. */
static int draw(tc_sampler *s, const uint64_t *w, const int32_t *order, int n, uint64_t total) {
    if (s->p.top_p < 1.f) {
        const uint64_t need = tc_draw_need(s->p.top_p, total);
        uint64_t cum = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += w[order[i]];
            if (cum >= need) { keep = i + 1; break; }
        }
        n = keep;
        total = cum;
    }
    const uint64_t t = tc_draw_target(tc_rng_bits53(s->rng), total);
    uint64_t acc = 0;
    for (int i = 0; i < n; i++) {
        acc += w[order[i]];
        if (acc > t) return i;
    }
    return n - 1; /* not reached: t < total */
}

static uint64_t mass(const uint64_t *w, const int32_t *order, int n) {
    uint64_t t = 0;
    for (int i = 0; i < n; i++) t += w[order[i]];
    return t;
}

int tc_sampler_topk_need(const tc_sampling_params *p, int vocab) {
    if (p->temperature == 0.f) return 1;
    if (p->top_k > 0 && p->top_k < vocab && p->top_k <= TC_TOPK_MAX) return p->top_k;
    return 0;
}

/* The full row: the radix walk of kernels/cpu/sample.c (O(V); a GPU's
 * sample op runs the same), on the bits tc_sampler_draw_params takes. */
int32_t tc_sampler_sample(tc_sampler *s, const float *logits) {
    int32_t tok;
    if (s->p.temperature == 0.f) tok = tc_argmax(logits, s->vocab);
    else {
        tc_draw d;
        tc_sampler_draw_params(s, &d);
        tok = tc_sample_row(logits, s->vocab, &d, s->scratch);
    }
    if (s->lp_on && s->lp && s->lp_n < s->lp_cap) tc_logprob_of(logits, s->vocab, tok, s->lp_top, &s->lp[s->lp_n++]);
    return tok;
}

static uint32_t key_at(const float *x, int i) {
    uint32_t u;
    memcpy(&u, &x[i], 4);
    return tc_topk_key(u);
}

/* e^x for x <= 0 (NaN and x below -87: 0), relative error < 1e-7: 2^k
 * times 2^f's degree-7 Taylor polynomial, f in [-0.5, 0.5], on 4 lanes
 * (GCC vector extensions: SSE2 / NEON; no libm call, so the summing loop
 * runs 4 at a time -- libm's double exp made a logprob of a 50K
 * vocabulary cost 0.42 ms). */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
static inline v4f exp_neg4(v4f x) {
    const v4f t0 = x * 1.4426950408889634f;
    const v4i ok = t0 >= -126.f; /* masks (-1 / 0): NaN and -inf compare false, taken as -126 below, 0 at the end */
    const v4f t = (v4f)(((v4i)t0 & ok) | ((v4i)((v4f){0, 0, 0, 0} - 126.f) & ~ok));
    const v4f k = (t + 12582912.f) - 12582912.f; /* round to nearest (|t| < 2^22) */
    const v4f f = t - k;
    v4f p = f * 1.5252733804059841e-5f + 1.5403530393381609e-4f;
    p = p * f + 1.3333558146428443e-3f;
    p = p * f + 9.6181291076284772e-3f;
    p = p * f + 5.5504108664821580e-2f;
    p = p * f + 2.4022650695910071e-1f;
    p = p * f + 6.9314718055994531e-1f;
    p = p * f + 1.f;
    const v4i bits = (__builtin_convertvector(k, v4i) + 127) << 23; /* k in [-126, 0] */
    return (v4f)((v4i)(p * (v4f)bits) & ok);
}
static inline float exp_neg(float x) { return exp_neg4((v4f){x, x, x, x})[0]; }

void tc_logprob_of(const float *logits, int vocab, int32_t tok, int n_top, tc_logprob *out) {
    if (n_top > TC_LOGPROBS_MAX) n_top = TC_LOGPROBS_MAX;
    if (n_top > vocab) n_top = vocab;
    if (n_top < 0) n_top = 0;
    /* the max (NaN ignored), then the log-sum-exp: float exps summed in
     * blocks, the blocks in double (+inf: those tokens hold all the mass;
     * no finite logit: -inf everywhere) */
    float m8[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int i8 = 0;
    for (; i8 + 8 <= vocab; i8 += 8) /* 8 lanes: the vectorizer's shape */
        for (int l = 0; l < 8; l++) m8[l] = logits[i8 + l] > m8[l] ? logits[i8 + l] : m8[l];
    float mx = -INFINITY;
    for (int l = 0; l < 8; l++) mx = m8[l] > mx ? m8[l] : mx;
    for (int i = i8; i < vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    int n_inf = 0;
    double sum = 0;
    if (mx == INFINITY)
        for (int i = 0; i < vocab; i++) n_inf += logits[i] == INFINITY;
    else if (mx > -INFINITY) {
        for (int i = 0; i < i8; i += 256) { /* float lanes over 256 logits, then double */
            const int e = i + 256 < i8 ? i + 256 : i8;
            v4f b = {0, 0, 0, 0};
            for (int j = i; j < e; j += 4) {
                v4f v;
                memcpy(&v, logits + j, sizeof v);
                b += exp_neg4(v - mx);
            }
            sum += (double)b[0] + b[1] + b[2] + b[3];
        }
        for (int i = i8; i < vocab; i++) sum += exp_neg(logits[i] - mx);
    }
    const double lse = (double)mx + log(sum);
#define LP_OF(x) (n_inf ? ((x) == INFINITY ? -log((double)n_inf) : -INFINITY) \
                        : (isnan(x) || !(sum > 0)) ? -INFINITY : (double)(x) - lse)
    out->logprob = tok >= 0 && tok < vocab ? (float)LP_OF(logits[tok]) : -INFINITY;
    /* the n_top largest in the topk order (tc_topk_key: NaN below -inf,
     * the lower id on ties): an insertion into a short sorted list, which
     * most logits pass over at one comparison */
#define KEY(i) key_at(logits, i)
    int k = 0;
    float thr = -INFINITY;
    for (int i = 0; i < vocab && n_top > 0; i++) {
        if (k == n_top && !(logits[i] >= thr)) continue; /* below the list's last (NaN too): most logits */
        const uint32_t x = KEY(i);
        if (k == n_top && !(x > KEY(out->top_id[k - 1]))) continue;
        int at = k < n_top ? k++ : n_top - 1;
        for (; at > 0 && x > KEY(out->top_id[at - 1]); at--) out->top_id[at] = out->top_id[at - 1];
        out->top_id[at] = i;
        if (k == n_top) thr = isnan(logits[out->top_id[k - 1]]) ? -INFINITY : logits[out->top_id[k - 1]];
    }
#undef KEY
    out->n_top = k;
    for (int i = 0; i < k; i++) out->top_logprob[i] = (float)LP_OF(logits[out->top_id[i]]);
#undef LP_OF
}

int32_t tc_sampler_sample_topk(tc_sampler *s, const int32_t *ids, const float *vals, int k) {
    const int n = tc_sampler_topk_need(&s->p, s->vocab);
    TC_ASSERT(n >= 1 && n <= k, "sample_topk: sampler needs %d candidates, %d given", n, k);
    if (s->p.temperature == 0.f) return ids[0];
    /* the same arithmetic as tc_sampler_sample on the same floats: mx is
     * the row's max (candidate 0), w in candidate order */
    const float mx = vals[0];
    uint64_t *w = s->scratch;
    int32_t *order = (int32_t *)(w + s->vocab);
    tc_draw_weights(w, vals, n, mx, s->p.temperature);
    for (int i = 0; i < n; i++) order[i] = i;
    const uint64_t total = mass(w, order, n);
    if (!total) {
        (void)tc_rng_bits53(s->rng);
        return ids[0];
    }
    return ids[draw(s, w, order, n, total)];
}

void tc_sampler_draw_params(tc_sampler *s, tc_draw *d) {
    memset(d, 0, sizeof *d);
    d->temperature = s->p.temperature;
    d->top_p = s->p.top_p;
    d->top_k = s->p.top_k;
    d->r = s->p.temperature == 0.f ? 0 : tc_rng_bits53(s->rng);
}
