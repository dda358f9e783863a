/* sync.c — the global synchronization (DESIGN.md §1, §2): recompute every
 * block's zip K/V from the raw history tokens[0:N_ctx], a full O(N_ctx)
 * pass, never a recurrence.
 *
 * Memory: C [N, d] and proj(C) [N, 3d] (O(N d)) plus tiles. The focused
 * attention (Wz queries over N keys) and the restore attention (N queries
 * over Wz keys) are tiled inside the backend's attention; the FFN runs in
 * row tiles, so no N x N, N x F or N x vocab tensor ever exists. */
#include "forward.h"

#include <stdint.h>
#include <string.h>

#include "../common/log.h"

/* A sync whose caller gave up (tc_cancelled) between two of its layers or
 * tiles: the zip (and TLin history) are half written, so the session is
 * left stale -- a step refuses it and the next append syncs again from
 * the raw history, as after a failed window pass. */
/* row tiles of the compress projection between two cancel points */
#define PROJ_TILES 16

static tc_status cancelled(tc_session *s, int64_t n_ctx) {
    s->win_start = -1;
    s->win_len = 0;
    s->n_syncs--;
    tc_ws_release_above(s->m, TC_WS_C, TC_WS_KEEP_FLOATS); /* as a finished sync does */
    tc_ws_release_above(s->m, TC_WS_QKVC, TC_WS_KEEP_FLOATS);
    return TC_FAIL(TC_ERR_CANCELLED, "sync over %lld history tokens cancelled", (long long)n_ctx);
}

tc_status tc_fwd_sync(tc_session *s, int64_t n_ctx) {
    tc_model *m = s->m;
    tc_backend *be = m->be;
    const tc_model_config *c = &m->cfg;
    const int d = c->n_embd, F = c->ffn_hidden, depth = c->inner_depth, Woh = c->history_window;
    TC_ASSERT(c->arch != TC_ARCH_TRANSFORMER, "sync on a transformer");
    TC_ASSERT(n_ctx >= 0 && n_ctx <= s->n_tokens && n_ctx % c->generate_window == 0, "sync: bad n_ctx %lld",
              (long long)n_ctx);
    /* int key counts in the attention (and k0 + its key tile) must not wrap */
    if (n_ctx > (int64_t)INT32_MAX - 4096)
        return TC_FAIL(TC_ERR_EXHAUSTED, "sync: %lld history tokens exceed the 2^31 - 4096 limit", (long long)n_ctx);
    const int64_t hs = n_ctx > Woh ? n_ctx - Woh : 0, Wz = n_ctx - hs;

    /* everything that can fail first (the TLin history's room, the
     * workspace), the session's fields after: a sync refused for memory
     * leaves the session as it was, still due */
    float *C = NULL, *QKVC = NULL, *Z = NULL, *QKVZ = NULL, *AT = NULL, *LN = NULL, *H = NULL, *G = NULL;
    int32_t *ids = NULL;
    tc_status st = TC_OK;
    if (n_ctx > 0 &&
        ((st = tc_ws_get(m, TC_WS_C, (size_t)n_ctx * d, &C)) != TC_OK ||
         (st = tc_ws_get(m, TC_WS_QKVC, (size_t)n_ctx * 3 * d, &QKVC)) != TC_OK ||
         (st = tc_ws_get(m, TC_WS_Z, (size_t)Wz * d, &Z)) != TC_OK ||
         (st = tc_ws_get(m, TC_WS_QKVZ, (size_t)Wz * 3 * d, &QKVZ)) != TC_OK ||
         (st = tc_ws_get(m, TC_WS_AT, (size_t)(Wz > tc_row_tile(m) ? Wz : tc_row_tile(m)) * d, &AT)) != TC_OK ||
         (st = tc_ws_get(m, TC_WS_LN, (size_t)tc_row_tile(m) * d, &LN)) != TC_OK ||
         (st = tc_ws_get(m, TC_WS_H, (size_t)tc_row_tile(m) * 2 * F, &H)) != TC_OK ||
         (st = tc_ws_get(m, TC_WS_G, (size_t)tc_row_tile(m) * F, &G)) != TC_OK ||
         (st = tc_ws_get(m, TC_WS_IDS, (size_t)(n_ctx < 65536 ? n_ctx : 65536), (float **)&ids)) != TC_OK))
        goto refused;
    /* last: growing the TLin history drops its rows (the sync recomputes
     * them), so nothing may fail after it -- a refused workspace above
     * left the history a step still reads intact */
    if (c->arch == TC_ARCH_TLIN && (st = tc_session_hist_reserve(s, n_ctx)) != TC_OK) goto refused;
    s->win_len = 0;
    s->win_start = n_ctx;
    s->zip_len = Wz;
    s->zip_pos = hs;
    s->n_syncs++;
    if (c->arch == TC_ARCH_TLIN) s->hist_len = n_ctx;
    if (n_ctx == 0) return TC_OK;

    const int drain = n_ctx >= TC_DRAIN_ROWS; /* waits for the device at its cancel points */
    /* block 1 input: E[tokens[0:N_ctx]], gathered in chunks of ids */
    for (int64_t r0 = 0; r0 < n_ctx; r0 += 65536) {
        int64_t t = n_ctx - r0 < 65536 ? n_ctx - r0 : 65536;
        be->upload(be, ids, s->tokens + r0, (size_t)t * 4);
        be->embed(be, C + (size_t)r0 * d, m->embedding, ids, (int)t, d);
    }

    for (int b = 0; b < c->n_block; b++) {
        if (tc_cancel_point(be, drain)) return cancelled(s, n_ctx);
        const tc_layer_weights *Lc = &m->layers[b * depth];
        /* compress: (Qc, Kc, Vc) = proj(C) at positions 0.., in chunks of
         * PROJ_TILES row tiles with a cancel point between two (the same
         * tiles as one call: the same bits; paper-41m at 1M tokens is ~1
         * TFLOP a block, tens of seconds on a few cores) */
        for (int64_t r0 = 0; r0 < n_ctx; r0 += PROJ_TILES * (int64_t)tc_row_tile(m)) {
            if (r0 && tc_cancel_point(be, drain)) return cancelled(s, n_ctx);
            const int64_t t = n_ctx - r0 < PROJ_TILES * (int64_t)tc_row_tile(m) ? n_ctx - r0
                                                                                : PROJ_TILES * (int64_t)tc_row_tile(m);
            tc_fwd_proj(m, Lc, C + (size_t)r0 * d, t, QKVC + (size_t)r0 * 3 * d, r0, LN);
        }
        if (c->arch == TC_ARCH_TLIN) {
            float *hk = s->hist + (size_t)b * 2 * s->hist_cap * d, *hv = hk + (size_t)s->hist_cap * d;
            be->copy2d(be, hk, d, QKVC + d, 3 * d, (int)n_ctx, d);
            be->copy2d(be, hv, d, QKVC + 2 * d, 3 * d, (int)n_ctx, d);
        }
        /* Z = Post(C[hs:], Att(Qc[hs:]@hs, Kc, Vc@0)) — focused, non-causal */
        be->copy2d(be, Z, d, C + (size_t)hs * d, d, (int)Wz, d);
        be->attention(be, AT, d, QKVC + (size_t)hs * 3 * d, 3 * d, QKVC + d, 3 * d, QKVC + 2 * d, 3 * d, (int)Wz,
                      (int)n_ctx, c->n_head, c->head_dim, hs, 0, 0, 0.f);
        tc_fwd_post(m, Lc, Z, AT, Wz, LN, H, G);
        if (tc_cancel_point(be, drain)) return cancelled(s, n_ctx);
        /* hidden layers, then the restore layer's K/V: the zip of each
         * layer's input Z is what the window attends to */
        for (int l = 1; l < depth; l++) {
            const tc_layer_weights *L = &m->layers[b * depth + l];
            tc_fwd_proj(m, L, Z, Wz, QKVZ, hs, LN);
            float *zk = s->zip + ((size_t)b * (depth - 1) + (l - 1)) * 2 * (size_t)Woh * d;
            float *zv = zk + (size_t)Woh * d;
            be->copy2d(be, zk, d, QKVZ + d, 3 * d, (int)Wz, d);
            be->copy2d(be, zv, d, QKVZ + 2 * d, 3 * d, (int)Wz, d);
            if (l == depth - 1) break; /* restore: only its K/V of Z */
            be->attention(be, AT, d, QKVZ, 3 * d, QKVZ + d, 3 * d, QKVZ + 2 * d, 3 * d, (int)Wz, (int)Wz, c->n_head,
                          c->head_dim, hs, hs, 0, 0.f);
            tc_fwd_post(m, L, Z, AT, Wz, LN, H, G);
        }
        if (b == c->n_block - 1) break; /* the last block's C' is never used */
        /* restore: C' = Post(C, Att(Qc@0, Kz, Vz@hs)), in row tiles */
        const tc_layer_weights *Lr = &m->layers[b * depth + depth - 1];
        const float *zk = s->zip + ((size_t)b * (depth - 1) + (depth - 2)) * 2 * (size_t)Woh * d;
        const float *zv = zk + (size_t)Woh * d;
        for (int64_t r0 = 0; r0 < n_ctx; r0 += tc_row_tile(m)) {
            if (tc_cancel_point(be, drain)) return cancelled(s, n_ctx);
            int t = (int)(n_ctx - r0 < tc_row_tile(m) ? n_ctx - r0 : tc_row_tile(m));
            be->attention(be, AT, d, QKVC + (size_t)r0 * 3 * d, 3 * d, zk, d, zv, d, t, (int)Wz, c->n_head,
                          c->head_dim, r0, hs, 0, 0.f);
            tc_fwd_post(m, Lr, C + (size_t)r0 * d, AT, t, LN, H, G);
        }
    }
    TC_LOG(TC_LOG_DEBUG, "sync", "synced %lld tokens (zip %lld rows at %lld)", (long long)n_ctx, (long long)Wz,
           (long long)hs);
    /* O(N d) is the sync's working memory, not the session's: give large
     * buffers back so the process does not keep a long context's peak
     * between syncs (re-mapping costs far less than the sync itself) */
    tc_ws_release_above(m, TC_WS_C, TC_WS_KEEP_FLOATS);
    tc_ws_release_above(m, TC_WS_QKVC, TC_WS_KEEP_FLOATS);
    return TC_OK;
refused: /* for memory, the session as it was: what grew before the refusal goes back too */
    tc_ws_release_above(m, TC_WS_C, TC_WS_KEEP_FLOATS);
    tc_ws_release_above(m, TC_WS_QKVC, TC_WS_KEEP_FLOATS);
    return st;
}
