/* forward.c — the workspace, the shared layer pieces (proj, Post, head)
 * and the window pass: hit steps of many sessions batched into one set of
 * GEMMs, window prefills, and the baseline's prefill/decode.
 * Written only against kernels/backend.h. The sync lives in sync.c. */
#include "forward.h"

#include <stdlib.h>
#include <string.h>

/* Which workspace this thread computes in (see tc_model_bind_workspace). */
static _Thread_local int tc_ws_cur = 0;

void tc_model_bind_workspace(int idx) {
    TC_ASSERT(idx >= 0 && idx < TC_WS_THREADS, "workspace index %d out of range", idx);
    tc_ws_cur = idx;
}

tc_status tc_workspace_init(tc_model *m) {
    m->ws = calloc(TC_WS_THREADS, sizeof *m->ws);
    if (!m->ws) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    return TC_OK;
}

void tc_workspace_free(tc_model *m) {
    if (!m || !m->ws) return;
    for (int w = 0; w < TC_WS_THREADS; w++)
        for (int i = 0; i < TC_WS_N; i++)
            if (m->ws[w].buf[i]) m->be->free(m->be, m->ws[w].buf[i]);
    free(m->ws);
    m->ws = NULL;
}

tc_status tc_ws_get(tc_model *m, int slot, size_t n, float **out) {
    tc_workspace *ws = &m->ws[tc_ws_cur];
    if (n > ws->cap[slot]) {
        size_t want = n + n / 4;
        void *p = m->be->alloc(m->be, want * 4);
        if (!p) return TC_FAIL(TC_ERR_NOMEM, "out of memory: workspace of %zu bytes", want * 4);
        if (ws->buf[slot]) m->be->free(m->be, ws->buf[slot]);
        ws->buf[slot] = p;
        ws->cap[slot] = want;
    }
    *out = ws->buf[slot];
    return TC_OK;
}

void tc_ws_release_above(tc_model *m, int slot, size_t max_floats) {
    tc_workspace *ws = &m->ws[tc_ws_cur];
    if (ws->cap[slot] > max_floats) {
        m->be->free(m->be, ws->buf[slot]);
        ws->buf[slot] = NULL;
        ws->cap[slot] = 0;
    }
}

/* y = beta*y + pre(x) W^T (+ bias), pre = LayerNorm (TC_PRE_LN, x [n, k])
 * or SwiGLU (TC_PRE_SWIGLU, x [n, 2k]): one op where the backend fuses
 * them (linear_pre), else the transform into tmp [n, k] and a linear */
static void lin_pre(tc_backend *be, int pre, float *y, int ldy, const float *x, int ldx, float *tmp, const void *W,
                    const float *bias, int n, int mm, int k, float beta, const float *ln_w, const float *ln_b,
                    float eps) {
    if (be->linear_pre) {
        be->linear_pre(be, pre, y, ldy, x, ldx, tmp, W, bias, n, mm, k, beta, ln_w, ln_b, eps);
        return;
    }
    if (pre == TC_PRE_LN) be->layernorm(be, tmp, x, ln_w, ln_b, n, k, eps); /* x rows are k wide (ld k) */
    else be->swiglu(be, tmp, k, x, ldx, n, k);
    be->linear(be, y, ldy, tmp, k, W, bias, n, mm, k, beta);
}

void tc_fwd_proj(tc_model *m, const tc_layer_weights *L, const float *Y, int64_t n, float *QKV, int64_t pos0,
                 float *ln_tile) {
    tc_backend *be = m->be;
    const tc_model_config *c = &m->cfg;
    int d = c->n_embd;
    for (int64_t r0 = 0; r0 < n; r0 += tc_row_tile(m)) {
        int t = (int)(n - r0 < tc_row_tile(m) ? n - r0 : tc_row_tile(m));
        float *qkv = QKV + (size_t)r0 * 3 * d;
        lin_pre(be, TC_PRE_LN, qkv, 3 * d, Y + (size_t)r0 * d, d, ln_tile, L->qkv_w, L->qkv_b, t, 3 * d, d, 0.f,
                L->norm1_w, L->norm1_b, c->norm_eps);
        /* Q and K are adjacent column blocks: rotate them as 2*nh heads,
         * one cos/sin per (position, pair) for both */
        be->rope(be, qkv, 3 * d, t, 2 * c->n_head, c->head_dim, pos0 + r0, c->rope_base);
    }
}

void tc_fwd_post(tc_model *m, const tc_layer_weights *L, float *R, const float *A, int64_t n, float *ln_tile,
                 float *h_tile, float *g_tile) {
    tc_backend *be = m->be;
    const tc_model_config *c = &m->cfg;
    int d = c->n_embd, F = c->ffn_hidden;
    for (int64_t r0 = 0; r0 < n; r0 += tc_row_tile(m)) {
        int t = (int)(n - r0 < tc_row_tile(m) ? n - r0 : tc_row_tile(m));
        float *r = R + (size_t)r0 * d;
        /* R' = R + A out^T + b */
        be->linear(be, r, d, A + (size_t)r0 * d, d, L->out_w, L->out_b, t, d, d, 1.f);
        /* R' + w2(silu(w1 n2) * w3 n2) */
        lin_pre(be, TC_PRE_LN, h_tile, 2 * F, r, d, ln_tile, L->w13, NULL, t, 2 * F, d, 0.f, L->norm2_w,
                L->norm2_b, c->norm_eps);
        lin_pre(be, TC_PRE_SWIGLU, r, d, h_tile, 2 * F, g_tile, L->w2, NULL, t, d, F, 1.f, NULL, NULL, 0.f);
    }
}

void tc_fwd_head(tc_model *m, const float *X, int n, float *logits) {
    tc_backend *be = m->be;
    const tc_model_config *c = &m->cfg;
    float *ln;
    /* LAST slot is free to reuse: callers pass rows gathered there only
     * when n is small; normalize into LN (>= tc_row_tile(m) rows) tiles */
    for (int r0 = 0; r0 < n; r0 += tc_row_tile(m)) {
        int t = n - r0 < tc_row_tile(m) ? n - r0 : tc_row_tile(m);
        TC_ASSERT(tc_ws_get(m, TC_WS_LN, (size_t)tc_row_tile(m) * c->n_embd, &ln) == TC_OK, "workspace");
        be->layernorm(be, ln, X + (size_t)r0 * c->n_embd, m->normf_w, m->normf_b, t, c->n_embd, c->norm_eps);
        be->linear(be, logits + (size_t)r0 * c->vocab_size, c->vocab_size, ln, c->n_embd, m->embedding, NULL, t,
                   c->vocab_size, c->n_embd, 0.f);
    }
}

/* K or V rows of flat layer li in the window cache */
static float *win_kv(const tc_session *s, int li, int which) {
    const tc_model_config *c = &s->m->cfg;
    return s->win + ((size_t)li * 2 + which) * (size_t)s->win_cap * c->n_embd;
}

/* a batch of attentions: one dispatch when the backend has it */
static void att_run(tc_backend *be, const tc_att_item *it, int n, int n_head, int head_dim) {
    if (be->attention_batch) {
        be->attention_batch(be, it, n, n_head, head_dim);
        return;
    }
    for (int i = 0; i < n; i++)
        be->attention(be, it[i].out, it[i].ldo, it[i].q, it[i].ldq, it[i].k, it[i].ldk, it[i].v, it[i].ldv, it[i].nq,
                      it[i].nk, n_head, head_dim, it[i].qpos0, it[i].kpos0, it[i].causal, it[i].beta);
}

/* A long prefill's attentions (the baseline's whole prompt: O(P^2) a
 * layer, minutes at 100K tokens on a CPU) in chunks of query rows, with a
 * cancel point between two, so a cancelled prefill stops within a chunk
 * rather than a layer (on an asynchronous backend too: the cancel point
 * waits for the chunk before it). Rows are independent (the same keys,
 * the causal ones cut to those a chunk's last row sees). Each item's
 * chunks in order; all of it[] before the caller's next call, so a second
 * softmax (beta 1) still follows the first. 1: cancelled. */
#define ATT_CANCEL_ROWS TC_DRAIN_ROWS
static int att_run_chunked(tc_backend *be, const tc_att_item *it, int n, int n_head, int head_dim) {
    for (int i = 0; i < n; i++) {
        for (int r0 = 0; r0 < it[i].nq; r0 += ATT_CANCEL_ROWS) {
            if (tc_backend_cancelled(be)) return 1;
            tc_att_item c = it[i];
            c.nq = it[i].nq - r0 < ATT_CANCEL_ROWS ? it[i].nq - r0 : ATT_CANCEL_ROWS;
            c.out += (size_t)r0 * (size_t)c.ldo;
            c.q += (size_t)r0 * (size_t)c.ldq;
            c.qpos0 += r0;
            if (c.causal) {
                const int64_t seen = c.qpos0 + c.nq - c.kpos0; /* keys at positions <= the chunk's last row */
                if (seen < c.nk) c.nk = seen > 0 ? (int)seen : 0;
            }
            att_run(be, &c, 1, n_head, head_dim);
        }
    }
    return 0;
}

/* the sessions' RoPE + window appends: one dispatch when the backend has it */
static void rope_kv_run(tc_backend *be, const tc_rope_kv_item *it, int n, int ldq, int n_head, int head_dim,
                        float base) {
    if (be->rope_kv_batch) {
        be->rope_kv_batch(be, it, n, ldq, n_head, head_dim, base);
        return;
    }
    const int d = n_head * head_dim;
    for (int i = 0; i < n; i++) {
        be->rope(be, it[i].qkv, ldq, it[i].n, 2 * n_head, head_dim, it[i].pos0, base); /* Q|K */
        be->copy2d(be, it[i].k_dst, d, it[i].qkv + d, ldq, it[i].n, d);
        be->copy2d(be, it[i].v_dst, d, it[i].qkv + 2 * d, ldq, it[i].n, d);
    }
}

/* the head's output buffers (backend memory), reserved before the step
 * so nothing allocates between capture_begin and capture_end */
typedef struct {
    float *last, *lg, *topk;
} head_bufs;

static tc_status head_reserve(tc_model *m, int B, const tc_fwd_out *out, head_bufs *h) {
    const int V = m->cfg.vocab_size;
    memset(h, 0, sizeof *h);
    if (!out || (!out->logits && !out->k && !out->draws)) return TC_OK;
    TC_ASSERT(out->logits || out->draws || (out->k >= 1 && out->k <= V && out->k <= TC_TOPK_MAX), "head: top k %d outside 1..%d",
              out->k, V);
    TC_CHECK(tc_ws_get(m, TC_WS_LAST, (size_t)B * m->cfg.n_embd, &h->last));
    TC_CHECK(tc_ws_get(m, TC_WS_LOGITS, (size_t)B * V, &h->lg));
    if (!out->logits && out->draws && m->be->sample) TC_CHECK(tc_ws_get(m, TC_WS_TOPK, (size_t)B, &h->topk));
    else if (!out->logits && !out->draws && m->be->topk)
        TC_CHECK(tc_ws_get(m, TC_WS_TOPK, (size_t)2 * B * out->k, &h->topk));
    return TC_OK;
}

/* logits of the B rows at last [B, d], and the device's top k of them or
 * the tokens it draws from them */
static void head_compute(tc_model *m, int B, const tc_fwd_out *out, const head_bufs *h, const float *last) {
    tc_fwd_head(m, last, B, h->lg);
    if (h->topk && out->draws)
        m->be->sample(m->be, (int32_t *)h->topk, h->lg, B, m->cfg.vocab_size, out->draws);
    else if (h->topk) m->be->topk(m->be, (int32_t *)h->topk, h->topk + (size_t)B * out->k, h->lg, B, m->cfg.vocab_size,
                             out->k);
}

/* -> out (host): the full rows, the device's top k or drawn tokens, or
 * (no topk / sample op) those of the downloaded rows */
static tc_status head_fetch(tc_model *m, int B, const tc_fwd_out *out, const head_bufs *h) {
    tc_backend *be = m->be;
    const int V = m->cfg.vocab_size, k = out->k;
    if (out->logits) {
        be->download(be, out->logits, h->lg, (size_t)B * V * 4);
        return TC_OK;
    }
    if (out->draws && h->topk) {
        be->download(be, out->tokens, h->topk, (size_t)B * 4);
        for (int i = 0; i < B; i++) /* a device that failed hands back -1 (NaN bits): never pass it on */
            if (out->tokens[i] < 0 || out->tokens[i] >= V)
                return TC_FAIL(TC_ERR_INTERNAL, "sample op: row %d drew token %d outside [0, %d)", i,
                               out->tokens[i], V);
        return TC_OK;
    }
    if (h->topk) { /* ids then values, one transfer */
        const size_t n = (size_t)B * k;
        int32_t stack[2 * 64], *buf = 2 * n <= 2 * 64 ? stack : malloc(2 * n * 4);
        if (!buf) return TC_FAIL(TC_ERR_NOMEM, "out of memory for %d rows of top-%d candidates", B, k);
        be->download(be, buf, h->topk, 2 * n * 4);
        memcpy(out->ids, buf, n * 4);
        memcpy(out->vals, buf + n, n * 4);
        if (buf != stack) free(buf);
        return TC_OK;
    }
    float *x = malloc((size_t)B * V * sizeof *x);
    if (!x) return TC_FAIL(TC_ERR_NOMEM, "out of memory for %d rows of logits", B);
    be->download(be, x, h->lg, (size_t)B * V * 4);
    tc_status st = TC_OK;
    if (out->draws) st = tc_sample_rows(out->tokens, x, B, V, out->draws);
    else tc_topk_rows(out->ids, out->vals, x, B, V, k);
    free(x);
    return st;
}

static tc_status window_run(tc_session **ss, const int64_t *cnt, int B, const tc_fwd_out *out);

/* A long prefill's buffers (the baseline's whole prompt: O(M d)) go back
 * after the pass, as the sync's do -- after every pass, a cancelled or
 * failed one too (else a cancelled 1M-token prompt kept ~10 GB mapped on
 * its thread); a hit step (M == B, perhaps a captured graph's buffers)
 * never reaches the threshold. */
tc_status tc_fwd_window(tc_session **ss, const int64_t *cnt, int B, const tc_fwd_out *out) {
    tc_status st = window_run(ss, cnt, B, out);
    tc_model *m = ss[0]->m;
    int64_t M = 0;
    for (int i = 0; i < B; i++) M += cnt[i];
    if (M != B && (size_t)M * 3 * (size_t)m->cfg.n_embd > TC_WS_KEEP_FLOATS) {
        tc_ws_release_above(m, TC_WS_X, TC_WS_KEEP_FLOATS);
        tc_ws_release_above(m, TC_WS_QKV, TC_WS_KEEP_FLOATS);
        tc_ws_release_above(m, TC_WS_A, TC_WS_KEEP_FLOATS);
        tc_ws_release_above(m, TC_WS_IDS, TC_WS_KEEP_FLOATS);
    }
    return st;
}

static tc_status window_run(tc_session **ss, const int64_t *cnt, int B, const tc_fwd_out *out) {
    tc_model *m = ss[0]->m;
    tc_backend *be = m->be;
    const tc_model_config *c = &m->cfg;
    const int d = c->n_embd, F = c->ffn_hidden, depth = c->inner_depth;
    int64_t M = 0;
    for (int i = 0; i < B; i++) {
        TC_ASSERT(cnt[i] >= 1 && cnt[i] <= ss[i]->n_tokens, "window: bad count");
        M += cnt[i];
        if (c->arch == TC_ARCH_TRANSFORMER) TC_CHECK(tc_session_win_reserve(ss[i], ss[i]->win_len + cnt[i]));
        else
            TC_ASSERT(ss[i]->win_len + cnt[i] <= ss[i]->win_cap, "window overflow: %lld + %lld > %lld",
                      (long long)ss[i]->win_len, (long long)cnt[i], (long long)ss[i]->win_cap);
    }
    float *X, *QKV, *A, *LN, *H, *G;
    int32_t *ids;
    TC_CHECK(tc_ws_get(m, TC_WS_X, (size_t)M * d, &X));
    TC_CHECK(tc_ws_get(m, TC_WS_QKV, (size_t)M * 3 * d, &QKV));
    TC_CHECK(tc_ws_get(m, TC_WS_A, (size_t)M * d, &A));
    TC_CHECK(tc_ws_get(m, TC_WS_LN, (size_t)tc_row_tile(m) * d, &LN));
    TC_CHECK(tc_ws_get(m, TC_WS_H, (size_t)tc_row_tile(m) * 2 * F, &H));
    TC_CHECK(tc_ws_get(m, TC_WS_G, (size_t)tc_row_tile(m) * F, &G));
    TC_CHECK(tc_ws_get(m, TC_WS_IDS, (size_t)M, (float **)&ids));
    const int want_head = out && (out->logits || out->k || out->draws);
    head_bufs hb;
    TC_CHECK(head_reserve(m, B, out, &hb));
    tc_att_item aw_stack[64], az_stack[64];
    tc_rope_kv_item rk_stack[64];
    tc_att_item *AW = B <= 64 ? aw_stack : malloc(sizeof *AW * (size_t)B);
    tc_att_item *AZ = B <= 64 ? az_stack : malloc(sizeof *AZ * (size_t)B);
    tc_rope_kv_item *RK = B <= 64 ? rk_stack : malloc(sizeof *RK * (size_t)B);
    if (!AW || !AZ || !RK) {
        if (AW != aw_stack) free(AW);
        if (AZ != az_stack) free(AZ);
        if (RK != rk_stack) free(RK);
        return TC_FAIL(TC_ERR_NOMEM, "out of memory for %d attention items", B);
    }
    {
        /* every session's new tokens in one upload (one synchronous copy a
         * step instead of B) */
        int32_t ids_stack[256], *hid = M <= 256 ? ids_stack : malloc((size_t)M * sizeof *hid);
        if (!hid) {
            if (AW != aw_stack) free(AW);
            if (AZ != az_stack) free(AZ);
            if (RK != rk_stack) free(RK);
            return TC_FAIL(TC_ERR_NOMEM, "out of memory for %lld token ids", (long long)M);
        }
        int64_t row = 0;
        for (int i = 0; i < B; i++) {
            memcpy(hid + row, ss[i]->tokens + ss[i]->n_tokens - cnt[i], (size_t)cnt[i] * sizeof *hid);
            row += cnt[i];
        }
        be->upload(be, ids, hid, (size_t)M * sizeof *hid);
        if (hid != ids_stack) free(hid);
    }
    /* from here to the head: device work only (no transfer, no allocation),
     * which the backend may capture and replay as one graph -- for hit steps
     * (one row a session), whose shape repeats step after step; a prefill
     * runs as called */
    const int capture = M == B && be->capture_begin && be->capture_end;
    int64_t most = 0; /* a session's rows, at most: a prefill this long attends in chunks */
    for (int i = 0; i < B; i++) most = cnt[i] > most ? cnt[i] : most;
    const int chunked = !capture && most > ATT_CANCEL_ROWS;
    /* a pass of this many rows waits for the device at its layer cancel
     * points (tc_backend_cancelled); a hit step's do not, so an
     * asynchronous backend keeps its queue full */
    const int drain_layers = !capture && M >= TC_DRAIN_ROWS;
    /* a replaying backend may only look at the first pass (capture_end 0)
     * and ask for the same ops again: nothing here changes host state */
    for (int pass = 0;; pass++) {
        TC_ASSERT(pass < 2, "window: the backend asked for the step's ops a third time");
        if (capture) be->capture_begin(be);
        be->embed(be, X, m->embedding, ids, (int)M, d);

        for (int b = 0; b < c->n_block; b++) {
            for (int l = 0; l < depth; l++) {
                /* a prefill (never a captured step) stops between layers
                 * when its caller gave up: the windows are as they were
                 * (win_len moves last), so the caller's roll back of the
                 * history is the whole roll back */
                if (!capture && (drain_layers ? tc_backend_cancelled(be) : tc_cancelled())) {
                    if (AW != aw_stack) free(AW);
                    if (AZ != az_stack) free(AZ);
                    if (RK != rk_stack) free(RK);
                    return TC_FAIL(TC_ERR_CANCELLED, "prefill of %lld rows cancelled", (long long)M);
                }
                int li = b * depth + l;
                const tc_layer_weights *L = &m->layers[li];
                /* per session (no device work yet): RoPE at its positions and
                 * its window rows; then every session's window attention in
                 * one batch, then the second softmax (zip, TLin history) added
                 * in a second one */
                int64_t row = 0;
                int nw = 0, nz = 0;
                for (int i = 0; i < B; i++) {
                    tc_session *s = ss[i];
                    int64_t n = cnt[i], p0 = s->n_tokens - n;
                    float *q = QKV + (size_t)row * 3 * d, *a = A + (size_t)row * d;
                    float *wk = win_kv(s, li, 0), *wv = win_kv(s, li, 1);
                    /* RoPE on Q|K at its positions, K and V rows into the window */
                    RK[i] = (tc_rope_kv_item){q, wk + (size_t)s->win_len * d, wv + (size_t)s->win_len * d, (int)n, p0};
                    TC_ASSERT(s->win_start + s->win_len == p0, "window position mismatch");
                    /* causal self-attention over the window (baseline: the cache) */
                    AW[nw++] = (tc_att_item){a, q, wk, wv, d, 3 * d, d, d, (int)n, (int)(s->win_len + n), p0,
                                             s->win_start, 1, 0.f};
                    if (be->attention_pairs) AZ[i] = (tc_att_item){0}; /* aligned with AW: nq 0 = no second softmax */
                    if (c->arch != TC_ARCH_TRANSFORMER) {
                        if (l >= 1 && s->zip_len > 0) {
                            /* second softmax over the zip of this layer's input */
                            size_t zoff = ((size_t)b * (depth - 1) + (l - 1)) * 2 * c->history_window * (size_t)d;
                            const float *zk = s->zip + zoff, *zv = zk + (size_t)c->history_window * d;
                            AZ[be->attention_pairs ? i : nz] = (tc_att_item){a, q, zk, zv, d, 3 * d, d, d, (int)n,
                                                                             (int)s->zip_len, p0, s->zip_pos, 0, 1.f};
                            nz++;
                        } else if (l == 0 && c->arch == TC_ARCH_TLIN && s->hist_len > 0) {
                            const float *hk = s->hist + (size_t)b * 2 * s->hist_cap * d;
                            const float *hv = hk + (size_t)s->hist_cap * d;
                            AZ[be->attention_pairs ? i : nz] = (tc_att_item){a, q, hk, hv, d, 3 * d, d, d, (int)n,
                                                                             (int)s->hist_len, p0, 0, 0, 1.f};
                            nz++;
                        }
                    }
                    row += n;
                }
                if (be->qkv_rope && M <= tc_row_tile(m)) { /* the projection and the RoPE in one op */
                    be->qkv_rope(be, RK, B, QKV, 3 * d, X, LN, L->qkv_w, L->qkv_b, (int)M, L->norm1_w, L->norm1_b,
                                 c->norm_eps, c->n_head, c->head_dim, c->rope_base);
                } else {
                    /* proj without RoPE position: rows of different sessions
                     * sit at different positions, so rotate per session */
                    for (int64_t r0 = 0; r0 < M; r0 += tc_row_tile(m)) {
                        int t = (int)(M - r0 < tc_row_tile(m) ? M - r0 : tc_row_tile(m));
                        lin_pre(be, TC_PRE_LN, QKV + (size_t)r0 * 3 * d, 3 * d, X + (size_t)r0 * d, d, LN,
                                L->qkv_w, L->qkv_b, t, 3 * d, d, 0.f, L->norm1_w, L->norm1_b, c->norm_eps);
                    }
                    rope_kv_run(be, RK, B, 3 * d, c->n_head, c->head_dim, c->rope_base);
                }
                if (chunked) { /* AZ aligned with AW (nq 0: none) or compact: nq > 0 items either way */
                    if (att_run_chunked(be, AW, nw, c->n_head, c->head_dim) ||
                        att_run_chunked(be, AZ, be->attention_pairs ? nw : nz, c->n_head, c->head_dim)) {
                        if (AW != aw_stack) free(AW);
                        if (AZ != az_stack) free(AZ);
                        if (RK != rk_stack) free(RK);
                        return TC_FAIL(TC_ERR_CANCELLED, "prefill of %lld rows cancelled", (long long)M);
                    }
                } else if (be->attention_pairs && nz > 0) { /* both softmaxes of every session, one dispatch */
                    be->attention_pairs(be, AW, AZ, nw, c->n_head, c->head_dim);
                } else { /* AZ is compact here, or empty */
                    att_run(be, AW, nw, c->n_head, c->head_dim);
                    att_run(be, AZ, nz, c->n_head, c->head_dim);
                }
                tc_fwd_post(m, L, X, A, M, LN, H, G);
            }
        }
        if (want_head) {
            /* each session's last row; a hit step's rows already are (one a session) */
            const float *last = X;
            if (M != B) {
                int64_t row = 0;
                for (int i = 0; i < B; i++) {
                    row += cnt[i];
                    be->copy2d(be, hb.last + (size_t)i * d, d, X + (size_t)(row - 1) * d, d, 1, d);
                }
                last = hb.last;
            }
            head_compute(m, B, out, &hb, last);
        }
        if (!capture || be->capture_end(be)) break;
    }
    if (AW != aw_stack) free(AW);
    if (AZ != az_stack) free(AZ);
    if (RK != rk_stack) free(RK);
    /* the head's results first: a fetch that fails (memory, a device's
     * bad token) leaves the windows as they were, so the caller's roll
     * back of the history is the whole roll back (the rows written past
     * win_len are overwritten by the next step) */
    if (want_head) TC_CHECK(head_fetch(m, B, out, &hb));
    for (int i = 0; i < B; i++) ss[i]->win_len += cnt[i];
    return TC_OK;
}
