/* session.h — the public engine API: per-session state (DESIGN.md §2) and
 * its three operations, for all three architectures.
 *
 *   tc_session_append  feeds tokens (a prefill when the session is empty):
 *                      at most one sync, then the window rows as one
 *                      causal batch; optionally the logits of the last one.
 *   tc_step_batch      one token for each of B sessions: the hit steps of
 *                      all of them share every GEMM (continuous batching);
 *                      sessions at a window boundary are synced first.
 *   tc_session_sync    the global synchronization alone, for schedulers
 *                      that run it apart from the hit steps.
 *
 * State: token history (host, 4 B/token), window K/V per layer, zip K/V
 * per hidden/restore layer, TLin history K/V, the baseline's KV cache.
 * Threads: a model's weights are shared read-only; each thread computing
 * with it binds its own workspace (tc_model_bind_workspace: 0, the default,
 * 1 or 2), and a session is used by one thread at a time. So a context
 * thread may sync some sessions, and a prefill thread prefill others,
 * while a generation thread steps the rest. */
#ifndef TC_MODEL_SESSION_H
#define TC_MODEL_SESSION_H

#include <stdint.h>

#include "weights.h"

typedef struct tc_session {
    tc_model *m;
    int32_t *tokens;      /* history [n_tokens] */
    int64_t n_tokens, tok_cap;
    /* window K/V: [n_layers][2][win_cap][d]; rows [0, win_len) hold
     * positions [win_start, win_start + win_len). The transformer's whole
     * KV cache is its "window" (win_start 0, grows). */
    float *win;
    int64_t win_cap, win_len, win_start;
    /* zip K/V: [n_block][inner_depth-1][2][W_oh][d]; zip_len rows at
     * positions [zip_pos, zip_pos + zip_len). */
    float *zip;
    int64_t zip_len, zip_pos;
    /* TLin compress-layer history K/V: [n_block][2][hist_cap][d] */
    float *hist;
    int64_t hist_len, hist_cap;
    int64_t n_syncs;
    /* history extended without its window rows (tc_session_extend): the
     * next append recomputes the window from win_start */
    int win_stale;
} tc_session;

tc_status tc_session_new(tc_model *m, tc_session **out);
void tc_session_free(tc_session *s);

/* Appends n tokens; logits (may be NULL) receives vocab_size floats: the
 * logits after the last appended token. Token ids are validated. */
tc_status tc_session_append(tc_session *s, const int32_t *tokens, int64_t n, float *logits);
/* A session left stale (a cancelled append or sync: win_stale) gets its
 * sync and window rows recomputed from its history, adding no token, so a
 * step takes it again; a session that is not stale is left as it is. */
tc_status tc_session_refresh(tc_session *s);

/* Readies each session of a coming batched step: a stale one gets its
 * window rows back (tc_session_refresh), one at a window boundary its sync
 * (the work tc_step_batch would otherwise do inside, where one session's
 * failure fails the whole batch). rows[i] says how session i fared; a row
 * already failed on entry is skipped (a caller's own check). A failed
 * row's history is as it was; only the rows still TC_OK may step.
 * Returns how many rows failed. */
int tc_step_ready(tc_session **s, int B, tc_row_status *rows);

/* One token per session (sessions distinct); logits [B, vocab] or NULL. */
tc_status tc_step_batch(tc_session **s, const int32_t *tokens, int B, float *logits);
/* The same step, handing back only the k largest logits of each row: ids
 * [B, k] and vals [B, k] (host memory) in tc_topk_rows's order (value
 * descending, ties to the lower id), selected by the backend so the
 * [B, vocab] logits never leave the device. 1 <= k <= min(vocab,
 * TC_TOPK_MAX). What tc_sampler_sample_topk draws from. */
tc_status tc_step_batch_topk(tc_session **s, const int32_t *tokens, int B, int k, int32_t *ids, float *vals);
/* The same step, handing back only the token drawn from each row with
 * draws[i] (tc_sampler_draw_params), next [B] (host memory): what
 * tc_sampler_sample would draw from the row, drawn where the logits are by
 * the backend's sample op, so only B ids leave the device. Without the
 * op, the rows are downloaded and drawn by tc_sample_rows. */
tc_status tc_step_batch_draw(tc_session **s, const int32_t *tokens, int B, const tc_draw *draws, int32_t *next);
/* 1 when the model's backend draws a step of B rows on its device
 * (tc_step_batch_draw then moves B ids instead of [B, vocab] logits); 0:
 * the host sampler is as fast (CPU backends, or B below the backend's
 * sample_min_rows). */
int tc_model_draws_on_backend(const tc_model *m, int B);

/* True when the next token starts a new window (a sync is due first). */
int tc_session_sync_due(const tc_session *s);
/* Recomputes the zip from tokens[0:n_ctx] (n_ctx a multiple of W_og, at
 * most n_tokens) and clears the window. */
tc_status tc_session_sync(tc_session *s, int64_t n_ctx);

/* Scratch workspaces per model, one per computing thread. */
#define TC_WS_THREADS 3 /* generation, context (syncs), prefills */
/* Binds the calling thread to workspace idx (0 .. TC_WS_THREADS-1). */
void tc_model_bind_workspace(int idx);

/* Moving state between workers (model/state.c). Extend adds history
 * tokens without computing them (a context worker's copy of a session);
 * the next append or sync catches up. Export: TC_STATE_SYNC right after a
 * sync (zip, TLin history: what a generation worker needs to go on),
 * TC_STATE_FULL everything incl. tokens and window rows (a prefill, a
 * rebuild after a worker restart, the baseline's KV cache). Import
 * validates the blob against the session's model before touching it. */
enum { TC_STATE_SYNC = 1, TC_STATE_FULL = 2 };
tc_status tc_session_extend(tc_session *s, const int32_t *tokens, int64_t n);
tc_status tc_session_export(const tc_session *s, int kind, void **blob, size_t *len);
tc_status tc_session_import(tc_session *s, const void *blob, size_t len);
/* The largest blob export makes for a session of up to max_tokens tokens
 * of this model, either kind (saturates at SIZE_MAX): the data plane's
 * largest message. The baseline's grows by its K/V rows a token (2 x
 * layers x d x 4 bytes), TLinFormer's by its compress-layer history, a
 * TConstFormer's by its 4-byte token alone. */
size_t tc_state_max_bytes(const tc_model_config *c, int64_t max_tokens);

/* Bytes of device state, the token history excluded. */
size_t tc_session_state_bytes(const tc_session *s);

#endif
