/* forward.h — internal: the workspace and the two forward passes shared by
 * the session API: the window pass (hit steps, window prefill, baseline
 * decode/prefill) and the sync (model/sync.c). Not a public API. */
#ifndef TC_MODEL_FORWARD_H
#define TC_MODEL_FORWARD_H

#include "session.h"

enum {
    TC_WS_X,    /* window rows          [M, d]   */
    TC_WS_QKV,  /* window projections   [M, 3d]  */
    TC_WS_A,    /* attention outputs    [M, d]   */
    TC_WS_LN,   /* normed tile          [T, d]   */
    TC_WS_H,    /* w1|w3 tile           [T, 2F]  */
    TC_WS_G,    /* swiglu tile          [T, F]   */
    TC_WS_C,    /* sync: block input C  [N, d]   */
    TC_WS_QKVC, /* sync: proj(C)        [N, 3d]  */
    TC_WS_Z,    /* sync: zip            [Wz, d]  */
    TC_WS_QKVZ, /* sync: proj(Z)        [Wz, 3d] */
    TC_WS_AT,   /* sync: attention tile [T, d]   */
    TC_WS_LAST, /* last rows for the head [B, d] */
    TC_WS_IDS,  /* token ids                     */
    TC_WS_LOGITS, /* head output       [B, V]    */
    TC_WS_TOPK, /* topk ids | values  [2, B, k]; drawn tokens [B] */
    TC_WS_N
};

/* rows per FFN / projection tile: 512 lets OpenBLAS amortize packing each
 * weight panel over more rows (paper-41m sync over 16K: 1.67 s at 128,
 * 1.43 s at 256, 1.30 s at 512, 1.39 s at 1024); the tile buffers are
 * O(tile x ffn) */
#define TC_ROW_TILE_DEFAULT 512
/* the backend's row tile (backend.h's row_tile), else the default */
#define tc_row_tile(m) ((m)->be->row_tile > 0 ? (m)->be->row_tile : TC_ROW_TILE_DEFAULT)

/* A pass of this many rows (a sync over this many history tokens, a
 * prefill's window pass) waits for the device at its cancel points
 * (tc_backend_cancelled: a cancelled pass stops after the work in flight);
 * a shorter one only reads the flag (it runs a few ms at most, and an
 * asynchronous backend keeps its queue full). */
#define TC_DRAIN_ROWS 4096
static inline int tc_cancel_point(tc_backend *be, int drain) {
    return drain ? tc_backend_cancelled(be) : tc_cancelled();
}

typedef struct tc_workspace {
    void *buf[TC_WS_N];
    size_t cap[TC_WS_N];
} tc_workspace;

tc_status tc_workspace_init(tc_model *m);
void tc_workspace_free(tc_model *m);
/* Grow-only scratch slot of at least n floats (backend memory). */
tc_status tc_ws_get(tc_model *m, int slot, size_t n, float **out);
/* Frees this thread's slot when it holds more than max_floats (the next
 * tc_ws_get allocates again). */
void tc_ws_release_above(tc_model *m, int slot, size_t max_floats);
#define TC_WS_KEEP_FLOATS ((size_t)16 << 20) /* 64 MiB per slot stays mapped */

/* proj: QKV = norm1(Y) qkv^T + b for n rows, RoPE on Q and K at pos0. */
void tc_fwd_proj(tc_model *m, const tc_layer_weights *L, const float *Y, int64_t n, float *QKV, int64_t pos0,
                 float *ln_tile);
/* Post(R, A) in place on R, n rows, in row tiles. */
void tc_fwd_post(tc_model *m, const tc_layer_weights *L, float *R, const float *A, int64_t n, float *ln_tile,
                 float *h_tile, float *g_tile);

/* What the window pass hands back for each session's last row (host
 * memory): nothing (NULL), the logits [B, V], (k >= 1) only the k largest
 * logits, ids [B, k] and vals [B, k] in tc_topk_rows's order, the
 * selection made by the backend's topk so [B, V] stays on the device, or
 * (draws) the token drawn from each row with draws[i], tokens [B], by the
 * backend's sample op (or, without one, tc_sample_rows on the rows). */
typedef struct {
    float *logits;
    int k;
    int32_t *ids;
    float *vals;
    const tc_draw *draws;
    int32_t *tokens;
} tc_fwd_out;

/* The window pass for B distinct sessions, cnt[i] new tokens each at
 * positions [s->n_tokens - cnt[i], s->n_tokens) (history already pushed),
 * all inside the session's current window. */
tc_status tc_fwd_window(tc_session **s, const int64_t *cnt, int B, const tc_fwd_out *out);

/* The sync: recompute zip (and TLin history) of s from tokens[0:n_ctx]. */
tc_status tc_fwd_sync(tc_session *s, int64_t n_ctx);

/* Capacity of the baseline's KV cache / TLin's history K/V, in rows. */
tc_status tc_session_win_reserve(tc_session *s, int64_t rows);
/* Validates ids and appends them to the history (no compute). */
tc_status tc_session_push_tokens(tc_session *s, const int32_t *t, int64_t n);
tc_status tc_session_hist_reserve(tc_session *s, int64_t rows);

/* LN_f + tied head on n rows of X -> logits [n, V]. */
void tc_fwd_head(tc_model *m, const float *X, int n, float *logits);

#endif
