/* test_engine.c — the engine against itself, for all three architectures:
 * streaming one token at a time == a fresh prefill over the same prefix
 * (the model's definition: sync over N_ctx + the window as one batch) ==
 * appends in random chunks == batched hit steps of several sessions at
 * different positions. Also: bad token ids are rejected and leave the
 * session usable. Label: unit. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include "../model/forward.h" /* TC_DRAIN_ROWS */
#include "../model/sampler.h"
#include "../model/session.h"

static int g_fail = 0;
static uint64_t g_rng = 7;
static uint32_t rnd(uint32_t n) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33) % n;
}

static double rel_err(const float *a, const float *b, int V) {
    double mx = 1, md = 0;
    for (int j = 0; j < V; j++) {
        if (fabs(b[j]) > mx) mx = fabs(b[j]);
        double d = fabs((double)a[j] - b[j]);
        if (!(d <= md)) md = d; /* NaN-safe */
    }
    return md / mx;
}

#include "expect.h"

static void run_arch(tc_arch arch, int nb, int depth, int woh, int wog, int L) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tc_test_engine_%d_%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid(), (int)arch);
    tc_model_config c;
    tc_config_preset(&c, "tiny", arch);
    c.vocab_size = 53; c.n_embd = 24; c.n_head = 3; c.head_dim = 8; c.ffn_hidden = 40;
    c.n_block = nb; c.eos_token_id = 1;
    if (arch != TC_ARCH_TRANSFORMER) { c.inner_depth = depth; c.history_window = woh; c.generate_window = wog; }
    if (tc_model_init_random(&c, 99, "f32", dir) != TC_OK) { printf("FAIL init: %s\n", tc_error_get()); g_fail++; return; }
    tc_backend be;
    tc_backend_cpu_init(&be, 1);
    tc_model *m;
    if (tc_model_load(&m, dir, &be) != TC_OK) { printf("FAIL load: %s\n", tc_error_get()); g_fail++; return; }
    const int V = c.vocab_size;
    int32_t *tok = malloc((size_t)L * 4);
    for (int i = 0; i < L; i++) tok[i] = (int32_t)rnd((uint32_t)V);
    float *ref = malloc((size_t)L * V * 4), *lg = malloc((size_t)V * 8 * 4);

    /* (a) one at a time */
    tc_session *s;
    tc_session_new(m, &s);
    for (int i = 0; i < L; i++) {
        tc_session *one = s;
        EXPECT(tc_step_batch(&one, &tok[i], 1, ref + (size_t)i * V) == TC_OK, "step %d", i);
    }
    size_t state0 = tc_session_state_bytes(s);
    if (arch == TC_ARCH_TCONST) EXPECT(s->n_syncs == (L - 1) / wog, "syncs %lld", (long long)s->n_syncs);
    tc_session_free(s);

    /* (b) fresh prefill over every prefix */
    double worst = 0;
    for (int n = 1; n <= L; n++) {
        tc_session_new(m, &s);
        EXPECT(tc_session_append(s, tok, n, lg) == TC_OK, "prefill %d", n);
        double e = rel_err(lg, ref + (size_t)(n - 1) * V, V);
        if (e > worst) worst = e;
        EXPECT(e < 1e-4, "prefill of %d tokens differs from streaming: rel %.3e", n, e);
        if (arch == TC_ARCH_TCONST && n == L) EXPECT(tc_session_state_bytes(s) == state0, "state bytes differ");
        tc_session_free(s);
    }
    /* (c) appends in random chunks */
    tc_session_new(m, &s);
    for (int n = 0; n < L;) {
        int k = 1 + (int)rnd(3 * (uint32_t)(wog + 1));
        if (n + k > L) k = L - n;
        EXPECT(tc_session_append(s, tok + n, k, lg) == TC_OK, "chunk");
        n += k;
        double e = rel_err(lg, ref + (size_t)(n - 1) * V, V);
        if (e > worst) worst = e;
        EXPECT(e < 1e-4, "chunked append to %d differs: rel %.3e", n, e);
    }
    /* (e) a bad id is rejected and the session is untouched */
    int32_t bad[2] = {3, V};
    int64_t before = s->n_tokens;
    EXPECT(tc_session_append(s, bad, 2, lg) == TC_ERR_INVALID, "bad id accepted");
    EXPECT(s->n_tokens == before, "bad id changed the history");
    int32_t neg = -1;
    tc_session *one = s;
    EXPECT(tc_step_batch(&one, &neg, 1, lg) == TC_ERR_INVALID, "negative id accepted");
    tc_session_free(s);

    /* (d) batched: 5 sessions at staggered positions, stepped together;
     * twins step in lockstep through tc_step_batch_topk (the backend's topk
     * on even steps, the download-and-select fallback on odd ones) and
     * must hand back exactly tc_topk_rows of the full logits */
    enum { B = 5 };
    tc_session *ss[B], *tw[B];
    int pos[B];
    const int K = V < 7 ? V : 7;
    int32_t cid[B * 7], want_id[B * 7];
    float cval[B * 7], want_val[B * 7];
    for (int b = 0; b < B; b++) {
        tc_session_new(m, &ss[b]);
        tc_session_new(m, &tw[b]);
        pos[b] = b * 3 + (b == 4 ? wog - 1 : 0);
        if (pos[b] > 0) tc_session_append(ss[b], tok, pos[b], NULL), tc_session_append(tw[b], tok, pos[b], NULL);
    }
    void (*topk_op)(tc_backend *, int32_t *, float *, const float *, int, int, int) = be.topk;
    EXPECT(topk_op != NULL, "the CPU backend has no topk op");
    for (int step = 0; pos[0] < L - 20; step++) {
        int32_t t[B];
        int nb2 = 0;
        tc_session *act[B], *act2[B];
        int idx[B];
        for (int b = 0; b < B; b++) {
            if (pos[b] >= L) continue;
            if ((step + b) % 7 == 6) continue; /* a session sits out now and then */
            act[nb2] = ss[b];
            act2[nb2] = tw[b];
            idx[nb2] = b;
            t[nb2++] = tok[pos[b]];
        }
        EXPECT(tc_step_batch(act, t, nb2, lg) == TC_OK, "batched step");
        be.topk = step % 2 ? NULL : topk_op;
        const int k = 1 + step % K;
        EXPECT(tc_step_batch_topk(act2, t, nb2, k, cid, cval) == TC_OK, "batched top-k step");
        be.topk = topk_op;
        tc_topk_rows(want_id, want_val, lg, nb2, V, k);
        EXPECT(!memcmp(cid, want_id, (size_t)nb2 * k * 4) && !memcmp(cval, want_val, (size_t)nb2 * k * 4),
               "step %d: top %d of the batch differs from the full logits' (%s)", step, k,
               step % 2 ? "fallback" : "backend op");
        for (int k2 = 0; k2 < nb2; k2++) {
            int b = idx[k2];
            double e = rel_err(lg + (size_t)k2 * V, ref + (size_t)pos[b] * V, V);
            if (e > worst) worst = e;
            EXPECT(e < 1e-4, "batched session %d at %d differs: rel %.3e", b, pos[b], e);
            pos[b]++;
        }
    }
    {
        tc_session *one2 = tw[0];
        int32_t t0 = 0;
        EXPECT(tc_step_batch_topk(&one2, &t0, 1, 0, cid, cval) == TC_ERR_INVALID, "top k 0 accepted");
        EXPECT(tc_step_batch_topk(&one2, &t0, 1, V + 1, cid, cval) == TC_ERR_INVALID, "top k > vocab accepted");
    }
    for (int b = 0; b < B; b++) tc_session_free(ss[b]), tc_session_free(tw[b]);

    /* (f) the worker split: a context copy (history extended, synced,
     * exported) and a generation copy (prefilled by import, hit steps,
     * sync state imported at each boundary); appends crossing a boundary
     * go through the context copy and a full export */
    {
        tc_session *cx, *gn;
        tc_session_new(m, &cx);
        tc_session_new(m, &gn);
        int P = 2 * (wog ? wog : 8) + 3, fed = 0; /* the context copy has tok[0:fed] */
        void *blob;
        size_t bl;
        EXPECT(tc_session_append(cx, tok, P, lg) == TC_OK, "split: prefill");
        fed = P;
        EXPECT(tc_session_export(cx, TC_STATE_FULL, &blob, &bl) == TC_OK, "split: export full");
        EXPECT(bl <= tc_state_max_bytes(&m->cfg, P) && (arch != TC_ARCH_TRANSFORMER || bl == tc_state_max_bytes(&m->cfg, P)),
               "split: a full state of %d tokens is %zu bytes, its bound %zu", P, bl, tc_state_max_bytes(&m->cfg, P));
        EXPECT(tc_session_import(gn, blob, bl) == TC_OK, "split: import full: %s", tc_error_get());
        free(blob);
        int n_imports = 0;
        for (int i = P; i < L; i++) {
            if (tc_session_sync_due(gn)) {
                EXPECT(tc_session_extend(cx, tok + fed, i - fed) == TC_OK, "split: extend");
                fed = i;
                EXPECT(tc_session_sync(cx, i) == TC_OK, "split: sync");
                EXPECT(tc_session_export(cx, TC_STATE_SYNC, &blob, &bl) == TC_OK, "split: export sync: %s", tc_error_get());
                EXPECT(bl <= tc_state_max_bytes(&m->cfg, i), "split: a sync state of %d tokens is %zu bytes, over its bound %zu", i, bl,
                       tc_state_max_bytes(&m->cfg, i));
                /* a blob for the wrong position is refused, the session untouched */
                if (n_imports == 0) {
                    tc_session *other;
                    tc_session_new(m, &other);
                    EXPECT(tc_session_import(other, blob, bl) == TC_ERR_INVALID, "split: sync state at the wrong length accepted");
                    EXPECT(tc_session_import(gn, blob, bl - 4) == TC_ERR_INVALID, "split: truncated blob accepted");
                    tc_session_free(other);
                }
                EXPECT(tc_session_import(gn, blob, bl) == TC_OK, "split: import sync: %s", tc_error_get());
                free(blob);
                n_imports++;
            }
            if (i == L / 2) { /* an append of several windows through the context copy */
                int k = 2 * (wog ? wog : 8) + 1;
                if (i + k > L) k = L - i;
                EXPECT(tc_session_extend(cx, tok + fed, i - fed) == TC_OK, "split: extend");
                EXPECT(tc_session_append(cx, tok + i, k, lg) == TC_OK, "split: append via context");
                fed = i + k;
                EXPECT(tc_session_export(cx, TC_STATE_FULL, &blob, &bl) == TC_OK, "split: export full 2");
                EXPECT(bl <= tc_state_max_bytes(&m->cfg, i + k), "split: a full state of %d tokens is %zu bytes, over its bound %zu",
                       i + k, bl, tc_state_max_bytes(&m->cfg, i + k));
                EXPECT(tc_session_import(gn, blob, bl) == TC_OK, "split: import full 2");
                free(blob);
                double e = rel_err(lg, ref + (size_t)(i + k - 1) * V, V);
                EXPECT(e < 1e-4, "split: append at %d differs: rel %.3e", i + k, e);
                i += k - 1;
                continue;
            }
            tc_session *g1 = gn;
            EXPECT(tc_step_batch(&g1, &tok[i], 1, lg) == TC_OK, "split: step %d", i);
            double e = rel_err(lg, ref + (size_t)i * V, V);
            if (e > worst) worst = e;
            EXPECT(e < 1e-4, "split: step at %d differs: rel %.3e", i, e);
        }
        if (arch != TC_ARCH_TRANSFORMER) EXPECT(n_imports >= 2, "split: only %d syncs crossed", n_imports);
        /* the bound saturates (a baseline of 2^62 tokens: no size_t holds it) and grows with the tokens */
        EXPECT(arch != TC_ARCH_TRANSFORMER || tc_state_max_bytes(&m->cfg, (int64_t)1 << 62) == SIZE_MAX, "state bound wraps");
        EXPECT(tc_state_max_bytes(&m->cfg, L) > tc_state_max_bytes(&m->cfg, P), "state bound does not grow");
        int32_t bogus[4] = {0};
        EXPECT(tc_session_import(gn, bogus, sizeof bogus) == TC_ERR_INVALID, "split: garbage blob accepted");
        tc_session_free(cx);
        tc_session_free(gn);
    }
    tc_session *dupb[2];
    tc_session_new(m, &dupb[0]);
    dupb[1] = dupb[0];
    int32_t two[2] = {1, 2};
    EXPECT(tc_step_batch(dupb, two, 2, lg) == TC_ERR_INVALID, "a session twice in a batch accepted");
    tc_session_free(dupb[0]);

    printf("%-12s blocks %d depth %d W_oh %d W_og %d, %d tokens: worst rel err %.2e\n", tc_arch_name(arch), nb,
           depth, woh, wog, L, worst);
    free(tok); free(ref); free(lg);
    tc_model_free(m);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
}

/* Two threads on one model, each with its own workspace: thread 1 prefills
 * and syncs fresh sessions while thread 0 steps others; every result equals
 * the single-threaded stream. */
typedef struct {
    tc_model *m;
    const int32_t *tok;
    int L, V, ws, fails;
    const float *ref;
} thr_arg;

static void *thr_prefill(void *p) {
    thr_arg *a = p;
    tc_model_bind_workspace(a->ws);
    float *lg = malloc((size_t)a->V * 4);
    for (int n = a->L / 2; n <= a->L; n += 3) {
        tc_session *s;
        tc_session_new(a->m, &s);
        if (tc_session_append(s, a->tok, n, lg) != TC_OK || rel_err(lg, a->ref + (size_t)(n - 1) * a->V, a->V) > 1e-4)
            a->fails++;
        tc_session_free(s);
    }
    free(lg);
    return NULL;
}

static void *thr_step(void *p) {
    thr_arg *a = p;
    tc_model_bind_workspace(a->ws);
    float *lg = malloc((size_t)a->V * 4);
    for (int rep = 0; rep < 3; rep++) {
        tc_session *s;
        tc_session_new(a->m, &s);
        for (int i = 0; i < a->L; i++) {
            tc_session *one = s;
            if (tc_step_batch(&one, &a->tok[i], 1, lg) != TC_OK || rel_err(lg, a->ref + (size_t)i * a->V, a->V) > 1e-4)
                a->fails++;
        }
        tc_session_free(s);
    }
    free(lg);
    return NULL;
}

static void run_threads(void) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tc_test_threads_%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    tc_model_config c;
    tc_config_preset(&c, "tiny", TC_ARCH_TCONST);
    c.vocab_size = 53; c.n_embd = 24; c.n_head = 3; c.head_dim = 8; c.ffn_hidden = 40;
    c.history_window = 6; c.generate_window = 5; c.eos_token_id = 1;
    tc_backend be;
    tc_model *m = NULL;
    if (tc_model_init_random(&c, 5, "f32", dir) != TC_OK || tc_backend_cpu_init(&be, 1) != TC_OK ||
        tc_model_load(&m, dir, &be) != TC_OK) {
        printf("FAIL threads setup: %s\n", tc_error_get());
        g_fail++;
        return;
    }
    const int L = 120, V = c.vocab_size;
    int32_t *tok = malloc((size_t)L * 4);
    float *ref = malloc((size_t)L * V * 4);
    for (int i = 0; i < L; i++) tok[i] = (int32_t)rnd((uint32_t)V);
    tc_session *s;
    tc_session_new(m, &s);
    for (int i = 0; i < L; i++) {
        tc_session *one = s;
        tc_step_batch(&one, &tok[i], 1, ref + (size_t)i * V);
    }
    tc_session_free(s);
    thr_arg a0 = {m, tok, L, V, 0, 0, ref}, a1 = {m, tok, L, V, 1, 0, ref};
    pthread_t t0, t1;
    pthread_create(&t0, NULL, thr_step, &a0);
    pthread_create(&t1, NULL, thr_prefill, &a1);
    pthread_join(t0, NULL);
    pthread_join(t1, NULL);
    EXPECT(a0.fails == 0, "stepping thread: %d mismatches while another thread synced", a0.fails);
    EXPECT(a1.fails == 0, "prefill thread: %d mismatches while another thread stepped", a1.fails);
    printf("threads: stepping and prefilling concurrently on one model: %s\n", a0.fails + a1.fails ? "MISMATCH" : "identical");
    free(tok);
    free(ref);
    tc_model_free(m);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
}

/* (g) 16-bit weights: a model stored as bf16 / f16 loaded onto the naive
 * backend keeping its matrices in 16 bits (the layout the CUDA backend
 * uses: model/weights.c's byte blob, w1|w3 halves, the tied head) must
 * stream the logits of the CPU backend's fp32 copy of the same values
 * (up to the 16-bit rounding of linear inputs), in about half the bytes */
static void run_wt16(const char *dtype, int wtype) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tc_test_engine_wt_%d_%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid(), dtype);
    tc_model_config c;
    tc_config_preset(&c, "tiny", TC_ARCH_TCONST);
    c.vocab_size = 53; c.n_embd = 24; c.n_head = 3; c.head_dim = 8; c.ffn_hidden = 40;
    c.n_block = 2; c.inner_depth = 4; c.history_window = 8; c.generate_window = 8; c.eos_token_id = 1;
    if (tc_model_init_random(&c, 5, dtype, dir) != TC_OK) { printf("FAIL init: %s\n", tc_error_get()); g_fail++; return; }
    tc_backend cpu, nv;
    tc_backend_cpu_init(&cpu, 1);
    EXPECT(tc_backend_naive_init_wt(&nv, wtype) == TC_OK, "naive init %s", dtype);
    tc_model *mc = NULL, *mn = NULL;
    if (tc_model_load(&mc, dir, &cpu) != TC_OK || tc_model_load(&mn, dir, &nv) != TC_OK) {
        printf("FAIL load %s: %s\n", dtype, tc_error_get());
        g_fail++;
        tc_model_free(mc);
        return;
    }
    EXPECT(mn->blob_bytes < mc->blob_bytes * 6 / 10, "%s: %zu bytes of weights, fp32 has %zu", dtype, mn->blob_bytes,
           mc->blob_bytes);
    const int V = c.vocab_size, L = 40;
    float *a = malloc((size_t)V * 4), *b = malloc((size_t)V * 4);
    tc_session *sc, *sn;
    tc_session_new(mc, &sc);
    tc_session_new(mn, &sn);
    double worst = 0;
    for (int i = 0; i < L; i++) {
        int32_t t = (int32_t)rnd((uint32_t)V);
        EXPECT(tc_session_append(sc, &t, 1, a) == TC_OK && tc_session_append(sn, &t, 1, b) == TC_OK, "append %d", i);
        double e = rel_err(b, a, V);
        if (!(e <= worst)) worst = e;
    }
    /* the same weights; the naive backend also rounds every linear's input
     * to 16 bits (bf16: 2^-9 relative), so a few 1e-3; a layout slip
     * (a matrix at the wrong offset) gives ~1 */
    EXPECT(worst < 5e-2, "%s weights: naive 16-bit vs cpu fp32 logits differ: rel %.3e", dtype, worst);
    EXPECT(sn->n_syncs >= 4, "%s: only %lld syncs", dtype, (long long)sn->n_syncs);
    printf("16-bit weights %s: %zu vs %zu bytes, %d tokens, %lld syncs: worst rel err %.2e\n", dtype, mn->blob_bytes,
           mc->blob_bytes, L, (long long)sn->n_syncs, worst);
    tc_session_free(sc), tc_session_free(sn);
    tc_model_free(mc), tc_model_free(mn);
    free(a), free(b);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
}

/* (h) capture passes: a backend that, like CUDA's replay mode
 * (TC_CUDA_GRAPHS=2), only looks at a hit step's ops in a first pass
 * (capture_end 0: nothing ran) and runs them in a second. model/ must then
 * issue the very same ops again without having changed anything: the
 * streams stay bit-identical to the plain CPU backend's, and both passes
 * hash the same op sequence. */
static tc_backend g_inner;   /* the CPU backend's own ops */
static int g_probing;        /* 1: the first pass, ops only hashed */
static uint64_t g_hash;      /* of the ops of the current pass */
static int g_next_probe = 1; /* what capture_begin starts */
static uint64_t g_probe_hash;
static int g_captures, g_pass_mismatch;
static void ph(uint64_t op, uint64_t a, uint64_t b) {
    const uint64_t v[3] = {op, a, b};
    const unsigned char *p = (const unsigned char *)v;
    for (size_t i = 0; i < sizeof v; i++) g_hash = (g_hash ^ p[i]) * 1099511628211ull;
}
#define PU(p) ((uint64_t)(uintptr_t)(p))
static void pr_embed(tc_backend *be, float *out, const void *E, const int32_t *ids, int n, int d) {
    ph(1, PU(out), (uint64_t)n);
    if (!g_probing) g_inner.embed(be, out, E, ids, n, d);
}
static void pr_layernorm(tc_backend *be, float *out, const float *x, const float *w, const float *b, int n, int d,
                         float eps) {
    ph(2, PU(x), (uint64_t)n);
    if (!g_probing) g_inner.layernorm(be, out, x, w, b, n, d, eps);
}
static void pr_linear(tc_backend *be, float *y, int ldy, const float *x, int ldx, const void *W, const float *bias,
                      int n, int m, int k, float beta) {
    ph(3, PU(W), (uint64_t)n * 65536u + (uint64_t)m);
    if (!g_probing) g_inner.linear(be, y, ldy, x, ldx, W, bias, n, m, k, beta);
}
static void pr_rope_kv(tc_backend *be, const tc_rope_kv_item *it, int n, int ldq, int n_head, int head_dim,
                       float base) {
    ph(4, (uint64_t)n, n > 0 ? (uint64_t)it[0].pos0 : 0);
    if (!g_probing) g_inner.rope_kv_batch(be, it, n, ldq, n_head, head_dim, base);
}
static void pr_att_batch(tc_backend *be, const tc_att_item *it, int n, int n_head, int head_dim) {
    ph(5, (uint64_t)n, n > 0 ? (uint64_t)it[0].nk : 0);
    if (!g_probing) g_inner.attention_batch(be, it, n, n_head, head_dim);
}
static void pr_att_pairs(tc_backend *be, const tc_att_item *w, const tc_att_item *z, int n, int n_head,
                         int head_dim) {
    ph(6, (uint64_t)n, n > 0 ? (uint64_t)w[0].nk * 65536u + (uint64_t)z[0].nk : 0);
    if (!g_probing) g_inner.attention_pairs(be, w, z, n, n_head, head_dim);
}
static void pr_swiglu(tc_backend *be, float *out, int ldo, const float *h, int ldh, int n, int F) {
    ph(7, PU(out), (uint64_t)n);
    if (!g_probing) g_inner.swiglu(be, out, ldo, h, ldh, n, F);
}
/* linear_pre as a backend may do it: the transform into tmp, then linear
 * (model/ must pass what its own fallback would use) */
static int g_pre_calls;
static void pr_linear_pre(tc_backend *be, int pre, float *y, int ldy, const float *x, int ldx, float *tmp,
                          const void *W, const float *bias, int n, int m, int k, float beta, const float *ln_w,
                          const float *ln_b, float eps) {
    ph(10, PU(W), (uint64_t)pre * 65536u + (uint64_t)n);
    if (g_probing) return;
    g_pre_calls++;
    if (pre == TC_PRE_LN) g_inner.layernorm(be, tmp, x, ln_w, ln_b, n, k, eps);
    else g_inner.swiglu(be, tmp, k, x, ldx, n, k);
    g_inner.linear(be, y, ldy, tmp, k, W, bias, n, m, k, beta);
}
/* qkv_rope as its contract reads: the items' rows follow one another from
 * qkv's first, and add up to rows; then the ops it stands for */
static int g_qkv_calls, g_qkv_bad;
static void pr_qkv_rope(tc_backend *be, const tc_rope_kv_item *it, int n, float *qkv, int ldq, const float *x,
                        float *tmp, const void *W, const float *bias, int rows, const float *ln_w, const float *ln_b,
                        float eps, int n_head, int head_dim, float base) {
    const int d = n_head * head_dim;
    ph(11, PU(W), (uint64_t)rows);
    if (g_probing) return;
    g_qkv_calls++;
    int r = 0;
    for (int i = 0; i < n; i++) {
        if (it[i].n > 0 && it[i].qkv != qkv + (size_t)r * ldq) g_qkv_bad++;
        r += it[i].n > 0 ? it[i].n : 0;
    }
    if (r != rows) g_qkv_bad++;
    g_inner.layernorm(be, tmp, x, ln_w, ln_b, rows, d, eps);
    g_inner.linear(be, qkv, ldq, tmp, d, W, bias, rows, 3 * d, d, 0.f);
    if (g_inner.rope_kv_batch) {
        g_inner.rope_kv_batch(be, it, n, ldq, n_head, head_dim, base);
        return;
    }
    for (int i = 0; i < n; i++) {
        g_inner.rope(be, it[i].qkv, ldq, it[i].n, 2 * n_head, head_dim, it[i].pos0, base);
        g_inner.copy2d(be, it[i].k_dst, d, it[i].qkv + d, ldq, it[i].n, d);
        g_inner.copy2d(be, it[i].v_dst, d, it[i].qkv + 2 * d, ldq, it[i].n, d);
    }
}
static void pr_copy2d(tc_backend *be, float *dst, int ldd, const float *src, int lds, int rows, int cols) {
    ph(8, PU(dst), (uint64_t)rows);
    if (!g_probing) g_inner.copy2d(be, dst, ldd, src, lds, rows, cols);
}
static void pr_topk(tc_backend *be, int32_t *ids, float *vals, const float *x, int n, int V, int k) {
    ph(9, (uint64_t)n, (uint64_t)k);
    if (!g_probing) g_inner.topk(be, ids, vals, x, n, V, k);
}
/* sample: the host op; checks the draws are whole in both passes */
static int g_sample_calls, g_sample_bad;
static void pr_sample(tc_backend *be, int32_t *tokens, const float *x, int n, int V, const tc_draw *d) {
    (void)be;
    ph(10, (uint64_t)n, (uint64_t)V);
    for (int i = 0; i < n; i++) g_sample_bad += d[i].temperature < 0.f || d[i].r >> 53;
    if (g_probing) return;
    g_sample_calls++;
    if (tc_sample_rows(tokens, x, n, V, d) != TC_OK) g_sample_bad++;
}
static void pr_begin(tc_backend *be) {
    (void)be;
    g_hash = 1469598103934665603ull;
    g_probing = g_next_probe;
}
static int pr_end(tc_backend *be) {
    (void)be;
    if (g_probing) {
        g_probing = 0;
        g_probe_hash = g_hash;
        g_next_probe = 0;
        return 0;
    }
    g_captures++;
    if (g_hash != g_probe_hash) g_pass_mismatch++;
    g_next_probe = 1;
    return 1;
}

static void run_probe(void) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tc_test_engine_probe_%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    tc_model_config c;
    tc_config_preset(&c, "tiny", TC_ARCH_TCONST);
    c.vocab_size = 53; c.n_embd = 24; c.n_head = 3; c.head_dim = 8; c.ffn_hidden = 40;
    c.n_block = 2; c.inner_depth = 3; c.history_window = 8; c.generate_window = 6; c.eos_token_id = 1;
    if (tc_model_init_random(&c, 7, "f32", dir) != TC_OK) { printf("FAIL init: %s\n", tc_error_get()); g_fail++; return; }
    tc_backend cpu, pb;
    tc_backend_cpu_init(&cpu, 1);
    tc_backend_cpu_init(&pb, 1);
    g_inner = pb;
    pb.embed = pr_embed, pb.layernorm = pr_layernorm, pb.linear = pr_linear, pb.swiglu = pr_swiglu;
    pb.copy2d = pr_copy2d, pb.linear_pre = pr_linear_pre, pb.qkv_rope = pr_qkv_rope;
    if (g_inner.rope_kv_batch) pb.rope_kv_batch = pr_rope_kv;
    if (g_inner.attention_batch) pb.attention_batch = pr_att_batch;
    if (g_inner.attention_pairs) pb.attention_pairs = pr_att_pairs;
    if (g_inner.topk) pb.topk = pr_topk;
    pb.sample = pr_sample;
    pb.capture_begin = pr_begin, pb.capture_end = pr_end;
    tc_model *ma = NULL, *mb = NULL;
    if (tc_model_load(&ma, dir, &cpu) != TC_OK || tc_model_load(&mb, dir, &pb) != TC_OK) {
        printf("FAIL load: %s\n", tc_error_get());
        g_fail++;
        tc_model_free(ma);
        return;
    }
    enum { B = 3, STEPS = 40 };
    const int V = c.vocab_size;
    tc_session *sa[B], *sb[B];
    float *la = malloc((size_t)B * V * 4), *lb = malloc((size_t)B * V * 4);
    int32_t ia[B], ib[B];
    float va[B], vb[B];
    int diff = 0, draw_diff = 0;
    /* draw steps: the probing backend's sample op against the host sampler
     * on the plain backend's full rows, one sampler pair a session */
    tc_sampler qa[B], qb[B];
    const tc_sampling_params qp[B] = {{0.8f, 0, 0.9f, 11}, {1.3f, 0, 1.f, 12}, {0.7f, 5, 0.95f, 13}};
    for (int i = 0; i < B; i++) tc_sampler_init(&qa[i], &qp[i], V), tc_sampler_init(&qb[i], &qp[i], V);
    for (int i = 0; i < B; i++) {
        int32_t p[5];
        for (int j = 0; j < 5 + i; j++) p[j % 5] = (int32_t)rnd((uint32_t)V);
        tc_session_new(ma, &sa[i]), tc_session_new(mb, &sb[i]);
        tc_session_append(sa[i], p, 1 + i, NULL), tc_session_append(sb[i], p, 1 + i, NULL);
    }
    g_captures = 0; /* the prefills above may have been captured too (one token, one row) */
    for (int k = 0; k < STEPS; k++) {
        int32_t tok[B];
        for (int i = 0; i < B; i++) tok[i] = (int32_t)rnd((uint32_t)V);
        for (int i = 0; i < B; i++) /* a due sync runs as called, outside any capture */
            if (tc_session_sync_due(sa[i])) {
                tc_session_sync(sa[i], sa[i]->n_tokens), tc_session_sync(sb[i], sb[i]->n_tokens);
            }
        if (k % 3 == 2) { /* full rows and the host sampler, then the sample op */
            tc_draw dr[B];
            int32_t na[B], nb[B];
            for (int i = 0; i < B; i++) tc_sampler_draw_params(&qb[i], &dr[i]);
            EXPECT(tc_step_batch(sa, tok, B, la) == TC_OK && tc_step_batch_draw(sb, tok, B, dr, nb) == TC_OK,
                   "draw step %d", k);
            for (int i = 0; i < B; i++) na[i] = tc_sampler_sample(&qa[i], la + (size_t)i * V);
            for (int i = 0; i < B; i++) draw_diff += na[i] != nb[i] || memcmp(qa[i].rng, qb[i].rng, 32) != 0;
        } else if (k % 3) { /* full rows, then top 2 */
            EXPECT(tc_step_batch(sa, tok, B, la) == TC_OK && tc_step_batch(sb, tok, B, lb) == TC_OK, "step %d", k);
            diff += memcmp(la, lb, (size_t)B * V * 4) != 0;
        } else {
            EXPECT(tc_step_batch_topk(sa, tok, B, 1, ia, va) == TC_OK &&
                       tc_step_batch_topk(sb, tok, B, 1, ib, vb) == TC_OK,
                   "topk step %d", k);
            diff += memcmp(ia, ib, sizeof ia) != 0 || memcmp(va, vb, sizeof va) != 0;
        }
    }
    EXPECT(diff == 0, "probe-then-run backend: %d of %d steps differ from the plain CPU backend", diff, STEPS);
    EXPECT(draw_diff == 0, "sample op: %d draws differ from the host sampler's", draw_diff);
    EXPECT(g_sample_calls == (STEPS + 1) / 3 && g_sample_bad == 0, "sample op: %d calls (want %d), %d bad",
           g_sample_calls, (STEPS + 1) / 3, g_sample_bad);
    for (int i = 0; i < B; i++) tc_sampler_free(&qa[i]), tc_sampler_free(&qb[i]);
    EXPECT(g_captures == STEPS, "%d captured steps of %d", g_captures, STEPS);
    EXPECT(g_pass_mismatch == 0, "%d steps issued other ops in their second pass", g_pass_mismatch);
    EXPECT(sb[0]->n_syncs >= 3, "only %lld syncs", (long long)sb[0]->n_syncs);
    EXPECT(g_pre_calls > 0, "model/ never used the backend's linear_pre");
    EXPECT(g_qkv_calls > 0 && g_qkv_bad == 0, "model/'s qkv_rope calls: %d, %d off its contract", g_qkv_calls,
           g_qkv_bad);
    printf("capture passes: %d steps of %d sessions probed then run, %lld syncs, %d fused linears: %s\n",
           g_captures, B, (long long)sb[0]->n_syncs, g_pre_calls, diff || g_pass_mismatch ? "MISMATCH" : "identical to the plain backend");
    for (int i = 0; i < B; i++) tc_session_free(sa[i]), tc_session_free(sb[i]);
    tc_model_free(ma), tc_model_free(mb);
    free(la), free(lb);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
}

/* ---- failure paths: an op that fails (memory refused, a device handing
 * back a bad token) leaves a session that later calls can use -- never an
 * abort, never stale state -- and that computes what a clean session does */
static int g_fail_alloc; /* 1: refuse allocations over 4 KiB, 2: refuse all, 3: refuse the g_fail_nth-th */
static int g_fail_nth, g_alloc_seen;
static void *(*g_real_alloc)(tc_backend *, size_t);
static void *failing_alloc(tc_backend *be, size_t n) {
    if (g_fail_alloc == 2 || (g_fail_alloc == 1 && n > 4096)) return NULL;
    if (g_fail_alloc == 3 && ++g_alloc_seen == g_fail_nth) return NULL;
    return g_real_alloc(be, n);
}
static void bad_sample(tc_backend *be, int32_t *tokens, const float *x, int n, int V, const tc_draw *d) {
    (void)be, (void)x, (void)V, (void)d;
    for (int i = 0; i < n; i++) tokens[i] = -1;
}
/* max |a - b| of the logits after one more step of each with token t */
static float step_diff(tc_session *a, tc_session *b, int32_t t, int V, tc_status *st) {
    float *la = malloc((size_t)V * 4), *lb = malloc((size_t)V * 4), md = INFINITY;
    *st = tc_step_batch(&a, &t, 1, la);
    if (*st == TC_OK && tc_step_batch(&b, &t, 1, lb) == TC_OK) {
        md = 0;
        for (int i = 0; i < V; i++) md = fmaxf(md, fabsf(la[i] - lb[i]));
    }
    free(la), free(lb);
    return md;
}
static int g_cancel_at, g_cancel_seen; /* the g_cancel_at-th cancel point says yes */
/* backend.h drain, counted: with g_drain_check set, every cancel point
 * must come after a drain (the point waits for the device's work) */
static int g_drains, g_drain_check, g_undrained;
static void count_drain(tc_backend *be) {
    (void)be;
    g_drains++;
}
static int cancel_kth(void *ud) {
    (void)ud;
    if (g_drain_check && g_drains == 0) g_undrained++;
    g_drains = 0;
    return ++g_cancel_seen >= g_cancel_at;
}
static void run_failures(tc_arch arch) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tc_test_engine_fail_%d_%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid(), (int)arch);
    tc_model_config c;
    tc_config_preset(&c, "tiny", arch);
    c.vocab_size = 53, c.n_embd = 24, c.n_head = 3, c.head_dim = 8, c.ffn_hidden = 40, c.eos_token_id = 1;
    if (arch != TC_ARCH_TRANSFORMER) c.history_window = 6, c.generate_window = 5;
    tc_backend be;
    tc_model *m = NULL;
    if (tc_model_init_random(&c, 5, "f32", dir) != TC_OK || tc_backend_cpu_init(&be, 1) != TC_OK ||
        tc_model_load(&m, dir, &be) != TC_OK) {
        printf("FAIL failures setup: %s\n", tc_error_get());
        g_fail++;
        return;
    }
    g_real_alloc = m->be->alloc;
    m->be->alloc = failing_alloc;
    const int V = c.vocab_size;
    int32_t t[64];
    for (int i = 0; i < 64; i++) t[i] = (int32_t)((i * 7 + 3) % V);
    tc_status st;
    float md;
    /* (a) an append crossing windows, its sync's memory refused */
    tc_session *s, *r;
    tc_session_new(m, &s), tc_session_new(m, &r);
    EXPECT(tc_session_append(s, t, 7, NULL) == TC_OK, "append 7");
    g_fail_alloc = 1;
    st = tc_session_append(s, t + 7, 30, NULL);
    g_fail_alloc = 0;
    EXPECT(st != TC_OK && s->n_tokens == 7, "append under refused memory: st %d, %lld tokens", st,
           (long long)s->n_tokens);
    EXPECT(tc_session_append(s, t + 7, 30, NULL) == TC_OK, "the same append again: %s", tc_error_get());
    EXPECT(tc_session_append(r, t, 7, NULL) == TC_OK && tc_session_append(r, t + 7, 30, NULL) == TC_OK,
           "clean twin");
    md = step_diff(s, r, t[40], V, &st);
    EXPECT(st == TC_OK && md == 0.f, "%s: after a refused append: step %d, max |dlogit| %g vs a clean session",
           tc_arch_name(arch), st, md);
    tc_session_free(s), tc_session_free(r);
    /* (b) a sample op handing back a bad token */
    tc_session_new(m, &s), tc_session_new(m, &r);
    EXPECT(tc_session_append(s, t, 7, NULL) == TC_OK && tc_session_append(r, t, 7, NULL) == TC_OK, "append 7");
    m->be->sample = bad_sample;
    /* the rows from which a sample op pays (the CUDA backend's TC_CUDA_SAMPLE=2: 2) */
    m->be->sample_min_rows = 2;
    EXPECT(!tc_model_draws_on_backend(m, 1) && tc_model_draws_on_backend(m, 2) && tc_model_draws_on_backend(m, 300),
           "sample_min_rows 2: the host draws a lone row, the backend 2 rows or more");
    m->be->sample_min_rows = 0;
    EXPECT(tc_model_draws_on_backend(m, 1), "sample_min_rows 0: the backend draws every step");
    const tc_draw d = {1.f, 1.f, 0, 0, 12345};
    int32_t nx;
    st = tc_step_batch_draw(&s, t + 7, 1, &d, &nx);
    m->be->sample = NULL;
    EXPECT(st != TC_OK && s->n_tokens == 7, "a bad drawn token is an error: st %d, %lld tokens", st,
           (long long)s->n_tokens);
    md = step_diff(s, r, t[7], V, &st);
    EXPECT(st == TC_OK && md == 0.f, "%s: after a failed draw: step %d, max |dlogit| %g vs a clean session",
           tc_arch_name(arch), st, md);
    tc_session_free(s), tc_session_free(r);
    /* (c) a step whose due sync (45 tokens, past every workspace so far)
     * gets no memory at all; the transformer's step may need none */
    tc_session_new(m, &s), tc_session_new(m, &r);
    EXPECT(tc_session_append(s, t, 45, NULL) == TC_OK && tc_session_append(r, t, 45, NULL) == TC_OK, "append 45");
    g_fail_alloc = 2;
    st = tc_step_batch(&s, t + 45, 1, NULL);
    g_fail_alloc = 0;
    if (st == TC_OK) {
        EXPECT(arch == TC_ARCH_TRANSFORMER, "%s: a step with a due sync ran without memory", tc_arch_name(arch));
        EXPECT(tc_step_batch(&r, t + 45, 1, NULL) == TC_OK, "twin step");
    } else
        EXPECT(s->n_tokens == 45, "step under refused memory: %lld tokens", (long long)s->n_tokens);
    md = step_diff(s, r, t[46], V, &st);
    EXPECT(st == TC_OK && md == 0.f, "%s: after a refused step: step %d, max |dlogit| %g vs a clean session",
           tc_arch_name(arch), st, md);
    EXPECT(s->n_syncs == r->n_syncs, "%s: %lld syncs vs %lld", tc_arch_name(arch), (long long)s->n_syncs,
           (long long)r->n_syncs);
    tc_session_free(s), tc_session_free(r);
    /* (d) the k-th allocation of a window-crossing append refused, for
     * each k it reaches: the session must be left as it was, so its next
     * append inside the old window computes what a clean twin computes
     * (a TLin sync grew its history -- dropping the rows -- before its
     * workspace was refused, and the next pass ran without them) */
    int refused = 0;
    int32_t tl[400]; /* longer than every history before: its sync's workspace must grow too */
    for (int i = 0; i < 400; i++) tl[i] = (int32_t)((i * 11 + 5) % V);
    for (int k = 1; k <= 16; k++) {
        tc_session_new(m, &s), tc_session_new(m, &r);
        EXPECT(tc_session_append(s, t, 7, NULL) == TC_OK && tc_session_append(r, t, 7, NULL) == TC_OK, "append 7");
        g_fail_alloc = 3, g_fail_nth = k, g_alloc_seen = 0;
        st = tc_session_append(s, tl, 300 + 10 * k, NULL); /* each k past the last: it allocates again */
        g_fail_alloc = 0;
        if (st == TC_OK) { /* past the append's allocations */
            tc_session_free(s), tc_session_free(r);
            break;
        }
        refused++;
        EXPECT(s->n_tokens == 7, "%s: allocation %d refused: %lld tokens kept", tc_arch_name(arch), k,
               (long long)s->n_tokens);
        float la[64], lb[64];
        EXPECT(V <= 64, "logit buffers");
        EXPECT(tc_session_append(s, t + 7, 1, la) == TC_OK && tc_session_append(r, t + 7, 1, lb) == TC_OK,
               "append 1 after the refusal: %s", tc_error_get());
        md = 0.f;
        for (int v = 0; v < V; v++) md = fmaxf(md, fabsf(la[v] - lb[v]));
        EXPECT(md == 0.f, "%s: allocation %d of a window-crossing append refused: the next append differs from a "
               "clean session by %g", tc_arch_name(arch), k, md);
        tc_session_free(s), tc_session_free(r);
    }
    /* TLin grows its history here; the others' workspaces may already be large enough */
    EXPECT(refused > 0 || arch != TC_ARCH_TLIN, "%s: no allocation of the window-crossing append was refused",
           tc_arch_name(arch));
    /* (e) a long append cancelled at its k-th cancel point, for each k it
     * reaches (the sync's blocks, layers and restore tiles, then the
     * window pass's layers): refused with TC_ERR_CANCELLED and the history
     * as it was; a step refuses a session left stale, a Sync job's sync
     * recovers it, and the next append computes what a clean twin does */
    int cut = 0;
    for (int k = 1; k <= 64; k++) {
        tc_session_new(m, &s), tc_session_new(m, &r);
        EXPECT(tc_session_append(s, t, 7, NULL) == TC_OK, "append 7");
        g_cancel_at = k, g_cancel_seen = 0;
        tc_cancel_hook prev = tc_cancel_arm(cancel_kth, NULL);
        st = tc_session_append(s, tl, 390, NULL);
        tc_cancel_restore(prev);
        if (st == TC_OK) {
            EXPECT(g_cancel_seen < k, "%s: cancel point %d said yes and the append went on", tc_arch_name(arch), k);
            tc_session_free(s), tc_session_free(r);
            break;
        }
        cut++;
        EXPECT(st == TC_ERR_CANCELLED && s->n_tokens == 7, "%s: cancelled at point %d: st %d (%s), %lld tokens kept",
               tc_arch_name(arch), k, st, tc_error_get(), (long long)s->n_tokens);
        if (s->win_stale) { /* a cancelled sync: no step until rebuilt */
            EXPECT(arch != TC_ARCH_TRANSFORMER, "the transformer has no sync to leave stale");
            EXPECT(tc_step_batch(&s, t + 7, 1, NULL) == TC_ERR_INVALID && s->n_tokens == 7,
                   "%s: cancelled at %d: a step on the stale session is refused", tc_arch_name(arch), k);
        }
        /* a stale session recomputes its window rows as one batch: its
         * twin appends the 8 tokens at once (the same shapes, so the
         * same bits); otherwise the twin appends 7 then 1. On odd k the
         * stale session is first refreshed (what an in-process worker
         * does before a step): the twin then appends 7 at once, then 1 */
        float la[64], lb[64];
        int stale = s->win_stale;
        if (stale && k % 2) {
            EXPECT(tc_session_refresh(s) == TC_OK && !s->win_stale && s->n_tokens == 7,
                   "%s: refresh after the cancel at %d: %s", tc_arch_name(arch), k, tc_error_get());
            stale = 0;
        }
        EXPECT(tc_session_append(s, t + 7, 1, la) == TC_OK, "append 1 after the cancel: %s", tc_error_get());
        EXPECT(stale ? tc_session_append(r, t, 8, lb) == TC_OK
                     : tc_session_append(r, t, 7, NULL) == TC_OK && tc_session_append(r, t + 7, 1, lb) == TC_OK,
               "twin");
        md = 0.f;
        for (int v = 0; v < V; v++) md = fmaxf(md, fabsf(la[v] - lb[v]));
        EXPECT(md == 0.f, "%s: cancelled at point %d: the next append differs from a clean session by %g",
               tc_arch_name(arch), k, md);
        md = step_diff(s, r, t[9], V, &st);
        EXPECT(st == TC_OK && md == 0.f, "%s: cancelled at %d: step %d, max |dlogit| %g vs a clean session",
               tc_arch_name(arch), k, st, md);
        tc_session_free(s), tc_session_free(r);
    }
    /* the sync's cancel points (2 blocks) and the window pass's layers at least */
    EXPECT(cut >= (arch == TC_ARCH_TRANSFORMER ? c.n_block : 2 * c.n_block), "%s: only %d cancel points reached",
           tc_arch_name(arch), cut);
    /* a Sync job cancelled half way: still due, and a sync then rebuilds it;
     * with 4-row tiles the second cancel point is inside the compress
     * projection (its chunks of 16 tiles), with the default after it. The
     * default's sync is over TC_DRAIN_ROWS tokens or more: each cancel
     * point waits for the device's work (drains); the 4-row tiles' is
     * shorter: none does */
    for (int rt = 0; rt <= 4 && arch != TC_ARCH_TRANSFORMER; rt += 4) {
        m->be->row_tile = rt;
        tc_session_new(m, &s), tc_session_new(m, &r);
        const int64_t W = c.generate_window, n = rt ? 60 * W : (TC_DRAIN_ROWS + W - 1) / W * W;
        const int drains = n >= TC_DRAIN_ROWS;
        int32_t *h = malloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) h[i] = (int32_t)((i * 13 + 1) % V);
        EXPECT(tc_session_append(s, h, n - 1, NULL) == TC_OK && tc_session_append(r, h, n - 1, NULL) == TC_OK,
               "append");
        EXPECT(tc_session_extend(s, h + n - 1, 1) == TC_OK && tc_session_extend(r, h + n - 1, 1) == TC_OK, "extend");
        g_cancel_at = 2, g_cancel_seen = 0;
        m->be->drain = count_drain, g_drain_check = 1, g_drains = 0, g_undrained = 0;
        tc_cancel_hook prev = tc_cancel_arm(cancel_kth, NULL);
        st = tc_session_sync(s, n);
        tc_cancel_restore(prev);
        if (drains)
            EXPECT(g_undrained == 0 && g_cancel_seen == 2, "a sync of %lld tokens' cancel points: %d of %d not "
                   "after a drain", (long long)n, g_undrained, g_cancel_seen);
        else
            EXPECT(g_undrained == g_cancel_seen && g_cancel_seen == 2, "a sync of %lld tokens' cancel points: "
                   "%d of %d drained (under %d rows none waits)", (long long)n, g_cancel_seen - g_undrained,
                   g_cancel_seen, TC_DRAIN_ROWS);
        g_drain_check = 0;
        EXPECT(st == TC_ERR_CANCELLED && tc_session_sync_due(s), "%s: a cancelled Sync: st %d, due %d",
               tc_arch_name(arch), st, tc_session_sync_due(s));
        /* with no predicate armed nothing can stop the sync: it never waits */
        g_drains = 0;
        EXPECT(tc_session_sync(s, n) == TC_OK && g_drains == 0, "a sync nothing can cancel drained %d times: %s",
               g_drains, tc_error_get());
        m->be->drain = NULL;
        EXPECT(tc_session_sync(r, n) == TC_OK, "the twin's sync: %s", tc_error_get());
        md = step_diff(s, r, t[3], V, &st);
        EXPECT(st == TC_OK && md == 0.f,
               "%s: after a cancelled Sync (row tile %d): step %d, max |dlogit| %g vs a clean session",
               tc_arch_name(arch), rt, st, md);
        free(h);
        tc_session_free(s), tc_session_free(r);
        m->be->row_tile = 0;
    }
    /* (e2) the baseline's long prefill attends in chunks of 4096 query
     * rows with a cancel point before each: 9000 rows are 3 chunks a
     * layer (+ the layer's own point), the logits as a twin fed in
     * pieces no larger than a chunk; cancelled inside a layer's
     * attention, the session is as it was and appends again */
    if (arch == TC_ARCH_TRANSFORMER) {
        enum { P = 9000 };
        int32_t *h = malloc(P * 4);
        float *la = malloc((size_t)V * 4), *lb = malloc((size_t)V * 4);
        for (int i = 0; i < P; i++) h[i] = (int32_t)((i * 31 + 7) % V);
        tc_session_new(m, &s), tc_session_new(m, &r);
        g_cancel_at = 1 << 30, g_cancel_seen = 0;
        m->be->drain = count_drain, g_drain_check = 1, g_drains = 0, g_undrained = 0;
        tc_cancel_hook prev = tc_cancel_arm(cancel_kth, NULL);
        EXPECT(tc_session_append(s, h, P, la) == TC_OK, "a %d-token prefill: %s", P, tc_error_get());
        tc_cancel_restore(prev);
        const int points = g_cancel_seen;
        EXPECT(points >= c.n_block * 4, "a %d-row prefill asks %d times whether to stop (want >= %d: 3 chunks and "
               "the layer, %d layers)", P, points, c.n_block * 4, c.n_block);
        EXPECT(g_undrained == 0, "%d of the prefill's %d cancel points asked before the backend drained", g_undrained,
               points);
        /* a hit step (one row a session) never waits for the device */
        g_drains = 0;
        EXPECT(tc_step_batch(&s, h, 1, NULL) == TC_OK && g_drains == 0, "a hit step drained the backend %d times: %s",
               g_drains, tc_error_get());
        m->be->drain = NULL, g_drain_check = 0;
        EXPECT(tc_session_append(r, h, 4000, NULL) == TC_OK && tc_session_append(r, h + 4000, 4000, NULL) == TC_OK &&
                   tc_session_append(r, h + 8000, P - 8000, lb) == TC_OK,
               "the twin in pieces: %s", tc_error_get());
        EXPECT(rel_err(la, lb, V) < 1e-5, "chunked prefill vs the twin: rel err %g", rel_err(la, lb, V));
        tc_session_free(s);
        tc_session_new(m, &s);
        g_cancel_at = 3, g_cancel_seen = 0; /* layer 0's second chunk */
        prev = tc_cancel_arm(cancel_kth, NULL);
        st = tc_session_append(s, h, P, NULL);
        tc_cancel_restore(prev);
        EXPECT(st == TC_ERR_CANCELLED && s->n_tokens == 0, "cancelled in layer 0's attention: st %d, %lld tokens", st,
               (long long)s->n_tokens);
        EXPECT(tc_session_append(s, h, P, la) == TC_OK && rel_err(la, lb, V) < 1e-5,
               "the same prefill after the cancel: %s", tc_error_get());
        tc_session_free(s), tc_session_free(r);
        free(h), free(la), free(lb);
    }
    /* (f) a batched step's rows readied apart (tc_step_ready): the
     * session whose sync is refused memory (2 x TC_DRAIN_ROWS tokens,
     * past every workspace so far: the largest, the drained sync's, is
     * 1.25 x its TC_DRAIN_ROWS-odd rows) fails alone, as it was; the other
     * steps as its clean twin does; a row failed on entry is skipped; the
     * failed one steps exactly once memory is back */
    {
        const int64_t n = 2 * TC_DRAIN_ROWS;
        int32_t *h = malloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) h[i] = (int32_t)((i * 17 + 2) % V);
        tc_session *q, *q2;
        tc_session_new(m, &s), tc_session_new(m, &r), tc_session_new(m, &q), tc_session_new(m, &q2);
        EXPECT(tc_session_append(s, h, 7, NULL) == TC_OK && tc_session_extend(s, h + 7, n - 7) == TC_OK &&
               tc_session_append(r, h, 7, NULL) == TC_OK && tc_session_extend(r, h + 7, n - 7) == TC_OK &&
               tc_session_append(q, t, 10, NULL) == TC_OK && tc_session_append(q2, t, 10, NULL) == TC_OK,
               "rows setup: %s", tc_error_get());
        /* q is at a boundary too (10 tokens, W 5): its small sync fits the
         * workspace the cases above grew, so it runs under refused memory */
        const int q_due = tc_session_sync_due(q);
        EXPECT(q_due == (arch != TC_ARCH_TRANSFORMER), "%s: the other row is due a sync", tc_arch_name(arch));
        tc_session *pair[2] = {s, q};
        tc_row_status rows[2];
        memset(rows, 0, sizeof rows);
        const int64_t syncs0 = s->n_syncs;
        g_fail_alloc = 1;
        int n_bad = tc_step_ready(pair, 2, rows);
        g_fail_alloc = 0;
        EXPECT(n_bad == 1 && rows[0].st != TC_OK && rows[0].msg[0] && rows[1].st == TC_OK && s->n_tokens == n &&
                   s->n_syncs == syncs0,
               "%s: ready under refused memory: %d failed, row 0 st %d (%s), row 1 st %d, %lld tokens",
               tc_arch_name(arch), n_bad, rows[0].st, rows[0].msg, rows[1].st, (long long)s->n_tokens);
        EXPECT(q->n_syncs == q2->n_syncs + q_due, "%s: the other row's sync ran: %lld syncs vs %lld",
               tc_arch_name(arch), (long long)q->n_syncs, (long long)q2->n_syncs);
        md = step_diff(q, q2, t[10], V, &st); /* q2's step runs its sync inside */
        EXPECT(st == TC_OK && md == 0.f, "%s: the row left in steps as a clean twin: step %d, max |dlogit| %g",
               tc_arch_name(arch), st, md);
        memset(rows, 0, sizeof rows);
        rows[0].st = TC_ERR_INTERNAL;
        EXPECT(tc_step_ready(&s, 1, rows) == 1 && s->win_stale && s->n_syncs == syncs0,
               "%s: a row failed on entry is skipped", tc_arch_name(arch));
        memset(rows, 0, sizeof rows);
        pair[0] = s, pair[1] = r;
        EXPECT(tc_step_ready(pair, 2, rows) == 0, "%s: ready with memory back: %s", tc_arch_name(arch), rows[0].msg);
        md = step_diff(s, r, t[3], V, &st);
        EXPECT(st == TC_OK && md == 0.f && s->n_syncs == r->n_syncs,
               "%s: the failed row, readied again, steps as a clean twin: step %d, max |dlogit| %g", tc_arch_name(arch),
               st, md);
        free(h);
        tc_session_free(s), tc_session_free(r), tc_session_free(q), tc_session_free(q2);
    }
    m->be->alloc = g_real_alloc;
    tc_model_free(m);
    tc_backend_cpu_free(&be);
    printf("failures %-12s refused memory in an append, a step and a batch's row, a bad drawn token, cancelled appends and syncs: sessions recover exactly\n",
           tc_arch_name(arch));
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
}

/* a backend whose attention takes heads up to max_head_dim refuses a
 * model with wider ones at load, naming it (the CUDA backend: 256) */
static void run_head_dim_limit(void) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tc_test_engine_hd_%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    tc_model_config c;
    tc_config_preset(&c, "tiny", TC_ARCH_TCONST);
    c.vocab_size = 53; c.n_embd = 24; c.n_head = 3; c.head_dim = 8; c.ffn_hidden = 40;
    c.n_block = 1; c.inner_depth = 3; c.history_window = 4; c.generate_window = 4;
    if (tc_model_init_random(&c, 5, "f32", dir) != TC_OK) { printf("FAIL init: %s\n", tc_error_get()); g_fail++; return; }
    tc_backend be;
    tc_backend_cpu_init(&be, 1);
    tc_model *m = NULL;
    be.max_head_dim = 6;
    EXPECT(tc_model_load(&m, dir, &be) == TC_ERR_UNSUPPORTED && strstr(tc_error_get(), "head_dim") &&
               strstr(tc_error_get(), "(6)"),
           "head_dim 8 refused by a backend taking 6: %s", tc_error_get());
    be.max_head_dim = 8;
    EXPECT(tc_model_load(&m, dir, &be) == TC_OK, "head_dim 8 loads on a backend taking 8: %s", tc_error_get());
    tc_model_free(m);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
}

int main(void) {
    run_head_dim_limit();
    run_failures(TC_ARCH_TCONST);
    run_failures(TC_ARCH_TLIN);
    run_failures(TC_ARCH_TRANSFORMER);
    run_arch(TC_ARCH_TCONST, 2, 4, 8, 8, 90);
    run_arch(TC_ARCH_TCONST, 3, 5, 5, 7, 90);
    run_arch(TC_ARCH_TCONST, 2, 3, 13, 6, 90);
    run_arch(TC_ARCH_TLIN, 2, 4, 8, 8, 90);
    run_arch(TC_ARCH_TLIN, 2, 5, 5, 9, 90);
    run_arch(TC_ARCH_TRANSFORMER, 3, 1, 0, 0, 300);
    run_threads();
    run_wt16("bf16", TC_WT_BF16);
    run_wt16("f16", TC_WT_F16);
    run_probe();
    printf(g_fail ? "engine: %d failures\n" : "engine: all checks passed\n", g_fail);
    return g_fail ? 1 : 0;
}
