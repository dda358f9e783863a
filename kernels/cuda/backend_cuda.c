/* backend_cuda.c — the CUDA backend's host side: the tc_backend vtable,
 * device memory and transfers, linear through cuBLAS, and the launchers of
 * the kernels/cuda .cu files on the backend's stream. C11; device code lives only
 * in the .cu files.
 *
 * linear is row-major y[n,m] = beta*y + x[n,k] W[m,k]^T (+ bias); cuBLAS is
 * column-major, so it computes the transpose y^T = W x^T: W read as the
 * column-major [k,m] matrix with OP_T, x as column-major [k,n] (ld ldx),
 * y as column-major [m,n] (ld ldy). No copies, no transposes in memory.
 * Nothing here allocates after init except alloc itself (model/ grows its
 * workspace through it, never on a steady-state step). */
#include "backend_cuda_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../common/log.h"
#include "../../common/safetensors.h"
#include "kernels_cuda.h"

void tc_backend_cuda_bind_lane(int lane) {
    TC_ASSERT(lane >= 0 && lane < TC_CUDA_LANES, "cuda lane %d out of range", lane);
    tc_cuda_t_lane = lane;
}

/* Latches the first failure; logs it with the call site so the log reads
 * as a backtrace. */
void tc_cuda_fail(tc_cuda_ctx *c, const char *what, const char *detail, const char *file, int line) {
    if (atomic_exchange(&c->claimed, 1)) return; /* another thread is latching its failure */
    snprintf(c->first_error, sizeof c->first_error, "cuda device %d: %s failed: %s", c->device, what, detail);
    atomic_store(&c->poisoned, 1);
    tc_error_set("%s", c->first_error);
    TC_LOG(TC_LOG_ERROR, "cuda", "%s:%d: %s failed: %s (device %d poisoned; ops disabled)", file, line, what, detail,
           c->device);
}
int tc_cuda_cu_ok(tc_cuda_ctx *c, cudaError_t e, const char *what, const char *file, int line) {
    if (e == cudaSuccess) return 1;
    tc_cuda_fail(c, what, cudaGetErrorString(e), file, line);
    return 0;
}
int tc_cuda_blas_ok(tc_cuda_ctx *c, cublasStatus_t e, const char *what, const char *file, int line) {
    if (e == CUBLAS_STATUS_SUCCESS) return 1;
    tc_cuda_fail(c, what, cublasGetStatusString(e), file, line);
    return 0;
}

/* The stream of a memory op (alloc, free, upload, download) of the calling
 * thread, with L->mem_mu held from before the call until the op's last call
 * on that stream: the thread's lane L's stream, or the side stream while
 * another thread captures L (this one is not capturing: the ops assert
 * it). capture_begin takes mem_mu around cudaStreamBeginCapture, so L
 * cannot enter capture between the check and the op's calls on it.
 * On the side stream the op is not ordered after the work queued on L: a
 * thread whose lane another thread captures has no work of its own there
 * (the worker's RPC thread computes nothing), and what it frees is idle
 * (a session's work is waited for before its busy count drops: the worker
 * syncs its lane before every reply, then releases the session). */
static cudaStream_t mem_stream(tc_cuda_ctx *c, tc_cuda_lane *L) {
    pthread_mutex_lock(&L->mem_mu);
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(L->stream, &cs) != cudaSuccess) {
        (void)cudaGetLastError();
        cs = cudaStreamCaptureStatusActive; /* unknown: the stream that is never captured */
    }
    if (cs == cudaStreamCaptureStatusNone) return L->stream;
    atomic_fetch_add(&c->n_side, 1);
    return c->side;
}
static void mem_done(tc_cuda_lane *L) { pthread_mutex_unlock(&L->mem_mu); }

/* Device memory (weights, session state, workspaces) comes from the
 * device's stream-ordered pool when it has one: cudaMallocAsync /
 * cudaFreeAsync on the calling thread's lane (mem_stream), the pool keeping
 * freed memory for the next session (release threshold: never) -- unlike
 * cudaMalloc / cudaFree, which synchronize the whole device, so opening or
 * closing a session on the context thread would stall the generation
 * thread's hit steps. An allocation is waited for on its stream before it
 * is returned, so any lane may use it at once. */
static void *cuda_alloc(tc_backend *be, size_t bytes) {
    tc_cuda_ctx *c = ctx_of(be);
    TC_ASSERT(!tc_cuda_t_capturing, "cuda: alloc inside a captured step");
    if (!cuda_enter(c)) return NULL;
    void *p = NULL;
    const size_t n = bytes ? bytes : 256; /* a NULL result reads as out of memory in model/ */
    tc_cuda_lane *L = lane_of(c);
    cudaStream_t st = mem_stream(c, L);
    cudaError_t e = c->pooled ? cudaMallocAsync(&p, n, st) : cudaMalloc(&p, n);
    if (e != cudaSuccess) {
        mem_done(L);
        (void)cudaGetLastError(); /* out of memory is not sticky: clear it */
        TC_LOG(TC_LOG_WARN, "cuda", "allocation of %zu bytes failed on device %d: %s", bytes, c->device,
               cudaGetErrorString(e));
        return NULL;
    }
    /* the wait can only fail on a device error (a fault of earlier work on
     * the stream): latched, and the buffer given back */
    if (c->pooled && !CU_OK(c, cudaStreamSynchronize(st))) {
        (void)cudaFreeAsync(p, st);
        mem_done(L);
        return NULL;
    }
    mem_done(L);
    return p;
}
static void cuda_free(tc_backend *be, void *p) {
    tc_cuda_ctx *c = ctx_of(be);
    if (!p) return;
    TC_ASSERT(!tc_cuda_t_capturing, "cuda: free inside a captured step");
    /* freeing is still attempted on a poisoned device: it may succeed and
     * there is nothing better to do with the memory. Stream-ordered: after
     * the lane's queued work (mem_stream: never on a lane another thread is
     * capturing); the caller has no work of another lane on it (a session
     * is handed over only after a lane sync) */
    (void)cudaSetDevice(c->device);
    tc_cuda_lane *L = lane_of(c);
    cudaError_t e;
    if (c->pooled) {
        e = cudaFreeAsync(p, mem_stream(c, L));
        mem_done(L);
    } else {
        e = cudaFree(p);
    }
    if (e != cudaSuccess) (void)cudaGetLastError();
}

/* Synchronous on purpose: model/ reuses its host buffers right away. The
 * hit step uploads only its token ids, first thing, when the stream is idle
 * after the previous step's download. */
static void cuda_upload(tc_backend *be, void *dst, const void *src, size_t bytes) {
    tc_cuda_ctx *c = ctx_of(be);
    TC_ASSERT(!tc_cuda_t_capturing, "cuda: upload inside a captured step");
    if (!bytes || !cuda_enter(c)) return;
    tc_cuda_lane *L = lane_of(c);
    cudaStream_t st = mem_stream(c, L);
    if (CU_OK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, st))) (void)CU_OK(c, cudaStreamSynchronize(st));
    mem_done(L);
}

/* backend.h drain: a long pass's cancel point waits for its lane, so a
 * cancelled prefill or sync stops after the chunk in flight, not after
 * every launch the host had queued ahead */
static void cuda_drain(tc_backend *be) {
    tc_cuda_ctx *c = ctx_of(be);
    TC_ASSERT(!tc_cuda_t_capturing, "cuda: drain inside a captured step");
    if (cuda_enter(c)) (void)CU_OK(c, cudaStreamSynchronize(lane_of(c)->stream));
}

static void cuda_download(tc_backend *be, void *dst, const void *src, size_t bytes) {
    tc_cuda_ctx *c = ctx_of(be);
    TC_ASSERT(!tc_cuda_t_capturing, "cuda: download inside a captured step");
    if (!bytes) return;
    if (cuda_enter(c)) {
        tc_cuda_lane *L = lane_of(c);
        cudaStream_t st = mem_stream(c, L);
        const int ok = CU_OK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, st)) &&
                       CU_OK(c, cudaStreamSynchronize(st));
        mem_done(L);
        if (ok) return;
    }
    memset(dst, 0xff, bytes); /* NaN: never hand back stale numbers */
}

static void cuda_copy2d(tc_backend *be, float *dst, int ldd, const float *src, int lds, int rows, int cols) {
    tc_cuda_ctx *c = ctx_of(be);
    if (rows <= 0 || cols <= 0 || !cuda_enter(c)) return;
    if (REPLAY_MIX(lane_of(c), OP_COPY2D, P64(dst), ldd, P64(src), lds, rows, cols)) return;
    (void)CU_OK(c, cudaMemcpy2DAsync(dst, (size_t)ldd * 4, src, (size_t)lds * 4, (size_t)cols * 4, (size_t)rows,
                                     cudaMemcpyDeviceToDevice, lane_of(c)->stream));
}

static void cuda_embed(tc_backend *be, float *out, const void *E, const int32_t *ids, int n, int d) {
    tc_cuda_ctx *c = ctx_of(be);
    if (!cuda_enter(c)) return;
    if (REPLAY_MIX(lane_of(c), OP_EMBED, P64(out), P64(E), P64(ids), n, d)) return;
    (void)CU_OK(c, tc_cuda_embed(lane_of(c)->stream, out, E, be->wtype, ids, n, d));
}

static void cuda_layernorm(tc_backend *be, float *out, const float *x, const float *w, const float *b, int n, int d,
                           float eps) {
    tc_cuda_ctx *c = ctx_of(be);
    if (!cuda_enter(c)) return;
    if (REPLAY_MIX(lane_of(c), OP_LN, P64(out), P64(x), P64(w), P64(b), n, d, fbits(eps))) return;
    (void)CU_OK(c, tc_cuda_layernorm(lane_of(c)->stream, out, x, w, b, n, d, eps));
}

static void cuda_linear(tc_backend *be, float *y, int ldy, const float *x, int ldx, const void *W,
                        const float *bias, int n, int m, int k, float beta) {
    tc_cuda_ctx *c = ctx_of(be);
    if (n <= 0 || m <= 0 || !cuda_enter(c)) return;
    tc_cuda_lane *L = lane_of(c);
    const int skinny = n <= c->skinny_rows;
    if (REPLAY_MIX(L, OP_LINEAR, P64(y), ldy, P64(x), ldx, P64(W), P64(bias), n, m, k, fbits(beta), skinny)) return;
    if (skinny) {
        /* few rows (the hit step): one kernel, bias folded in */
        (void)CU_OK(c, tc_cuda_linear_skinny(L->stream, y, ldy, x, ldx, W, bias, be->wtype, n, m, k, beta));
        return;
    }
    if (bias) {
        if (!CU_OK(c, tc_cuda_bias(L->stream, y, ldy, bias, n, m, beta))) return;
        beta = 1.f;
    }
    const float one = 1.f;
    const int lda = k > 0 ? k : 1;
    if (be->wtype == TC_WT_F32) {
        (void)BLAS_OK(c, cublasSgemm(L->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, W, lda, x, ldx, &beta, y,
                                     ldy));
        return;
    }
    /* 16-bit weights, more rows: the tensor cores, activations rounded */
    if (L->xconv_elems < (size_t)k) { /* no weight that wide uploaded, or no device memory for it at load */
        char why[96];
        snprintf(why, sizeof why, "no buffer for %d-wide 16-bit activations (out of device memory at load)", k);
        tc_cuda_fail(c, "linear", why, __FILE__, __LINE__);
        return;
    }
    const cudaDataType_t dt = be->wtype == TC_WT_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    const int chunk = (int)(L->xconv_elems / (size_t)k);
    for (int r0 = 0; r0 < n; r0 += chunk) {
        const int t = n - r0 < chunk ? n - r0 : chunk;
        if (!CU_OK(c, tc_cuda_narrow(L->stream, L->xconv, be->wtype, x + (size_t)r0 * ldx, ldx, t, k))) return;
        if (!BLAS_OK(c, cublasGemmEx(L->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, t, k, &one, W, dt, lda, L->xconv, dt, lda,
                                     &beta, y + (size_t)r0 * ldy, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT)))
            return;
    }
}

/* a weight matrix in the backend's 16-bit format: rounded to nearest even
 * on the host, copied synchronously; each lane's activation buffer grows
 * to the widest k here, at load, never on the step path. Out of memory
 * poisons nothing (backend.h's upload_weight returns nothing, and the
 * loader reports out of memory from alloc): without a host buffer for the
 * whole matrix it is rounded and copied a slice at a time; without device
 * memory for TC_CUDA_CONV_ROWS rows of activations the buffer holds fewer
 * (the GEMM goes in more chunks), and with none at all a GEMM of this
 * width latches a clear error when it runs (cuda_linear). */
static void cuda_upload_weight(tc_backend *be, void *dst, const float *src, size_t rows, size_t cols) {
    tc_cuda_ctx *c = ctx_of(be);
    const size_t n = rows * cols;
    if (!n || !cuda_enter(c)) return;
    const int bf = be->wtype == TC_WT_BF16;
    uint16_t slice[4096];
    uint16_t *h = malloc(n * 2);
    const size_t step = h ? n : sizeof slice / sizeof *slice;
    for (size_t i0 = 0; i0 < n && !atomic_load(&c->poisoned); i0 += step) {
        const size_t m = n - i0 < step ? n - i0 : step;
        uint16_t *b = h ? h : slice;
        for (size_t i = 0; i < m; i++) b[i] = bf ? tc_f32_to_bf16(src[i0 + i]) : tc_f32_to_f16(src[i0 + i]);
        cuda_upload(be, (uint16_t *)dst + i0, b, m * 2);
    }
    free(h);
    for (int l = 0; l < TC_CUDA_LANES; l++) {
        tc_cuda_lane *L = &c->lane[l];
        if (L->xconv_k >= cols) continue;
        void *p = NULL;
        size_t conv_rows = TC_CUDA_CONV_ROWS;
        for (;;) {
            const cudaError_t e = cudaMalloc(&p, conv_rows * cols * 2);
            if (e == cudaSuccess) break;
            p = NULL;
            if (e != cudaErrorMemoryAllocation) { /* not a shortage: a device error */
                (void)CU_OK(c, e);
                return;
            }
            (void)cudaGetLastError(); /* out of memory is not sticky: clear it */
            if (conv_rows == 1) break;
            conv_rows /= 2;
        }
        if (!p) {
            TC_LOG(TC_LOG_WARN, "cuda", "device %d: no memory for lane %d's 16-bit activations (k %zu): a GEMM of "
                   "more than %d rows at that width will fail", c->device, l, cols, TC_CUDA_SKINNY_MAX);
            continue;
        }
        if (conv_rows < TC_CUDA_CONV_ROWS)
            TC_LOG(TC_LOG_WARN, "cuda", "device %d: lane %d's 16-bit activations in %zu rows, not %d (out of "
                   "memory): larger GEMMs go in chunks", c->device, l, conv_rows, TC_CUDA_CONV_ROWS);
        if (L->xconv) (void)cudaFree(L->xconv);
        L->xconv = p, L->xconv_elems = conv_rows * cols, L->xconv_k = cols;
    }
}

static void cuda_rope(tc_backend *be, float *x, int ld, int n, int n_head, int head_dim, int64_t pos0, float base) {
    tc_cuda_ctx *c = ctx_of(be);
    if (!cuda_enter(c)) return;
    if (REPLAY_MIX(lane_of(c), OP_ROPE, P64(x), ld, n, n_head, head_dim, (uint64_t)pos0, fbits(base))) return;
    (void)CU_OK(c, tc_cuda_rope(lane_of(c)->stream, x, ld, n, n_head, head_dim, pos0, base));
}

/* items a batched launch takes (rows, pairs, rope_kv): the kernel's
 * capacity, or fewer (TC_CUDA_BATCH_ITEMS, an A/B knob) */
static int batch_cap(const tc_cuda_ctx *c, int kernel_cap) {
    return c->batch_items > 0 && c->batch_items < kernel_cap ? c->batch_items : kernel_cap;
}

/* the window pass's RoPE + K/V appends of a batch, TC_CUDA_ROPE_BATCH
 * sessions a launch (instead of three launches per session) */
static void cuda_rope_kv_batch(tc_backend *be, const tc_rope_kv_item *it, int n, int ldq, int n_head, int head_dim,
                               float base) {
    tc_cuda_ctx *c = ctx_of(be);
    if (!cuda_enter(c)) return;
    tc_cuda_lane *L = lane_of(c);
    const int cap = batch_cap(c, TC_CUDA_ROPE_BATCH);
    for (int i = 0; i < n; i += cap) {
        const int cnt = n - i < cap ? n - i : cap;
        /* replay: the items from device memory; the grid (most rows) is the launch's own */
        const tc_rope_kv_item *dev = tc_cuda_stage_items(L, it + i, (size_t)cnt * sizeof *it);
        int most = 0;
        for (int j = 0; j < cnt; j++)
            if (it[i + j].n > most) most = it[i + j].n;
        if (REPLAY_MIX(L, OP_ROPE_KV, cnt, ldq, n_head, head_dim, fbits(base), (uint64_t)most)) continue;
        if (!CU_OK(c, tc_cuda_rope_kv(L->stream, it + i, cnt, ldq, n_head, head_dim, base, dev))) return;
    }
}

/* tc_cuda_attention on the calling thread's lane, its keys split across
 * blocks where the device would otherwise idle; the partials' scratch is the
 * lane's, grown here (never inside a captured step: there, and if growing
 * fails, the attention runs unsplit -- the same result up to summation
 * order) */
static cudaError_t att_call(tc_cuda_ctx *c, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                            const float *v, int ldv, int nq, int nk, int n_head, int head_dim, int64_t qpos0,
                            int64_t kpos0, int causal, float beta) {
    tc_cuda_lane *L = lane_of(c);
    if (REPLAY_MIX(L, OP_ATT, P64(out), ldo, P64(q), ldq, P64(k), ldk, P64(v), ldv, nq, nk, n_head, head_dim,
                   (uint64_t)qpos0, (uint64_t)kpos0, causal, fbits(beta), (uint64_t)tc_cuda_attention_mma_on()))
        return cudaSuccess;
    int splits = tc_cuda_t_capturing ? 1 : tc_cuda_attention_splits(nq, nk, n_head, c->sms);
    if (splits > 1) {
        const size_t need = TC_CUDA_ATT_PART_FLOATS(splits, nq, n_head, head_dim);
        if (L->att_part_floats < need) {
            void *p = NULL;
            /* stream-ordered: the old scratch is freed after the lane's work on it */
            if (L->att_part) (void)(c->pooled ? cudaFreeAsync(L->att_part, L->stream) : cudaFree(L->att_part));
            L->att_part = NULL, L->att_part_floats = 0;
            cudaError_t e = c->pooled ? cudaMallocAsync(&p, need * sizeof(float), L->stream)
                                      : cudaMalloc(&p, need * sizeof(float));
            if (e == cudaSuccess) L->att_part = p, L->att_part_floats = need;
            else (void)cudaGetLastError(); /* out of memory is not sticky: run unsplit */
        }
        if (!L->att_part) splits = 1;
    }
    return tc_cuda_attention(L->stream, out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, n_head, head_dim, qpos0, kpos0,
                             causal, beta, splits, L->att_part);
}

static void cuda_attention(tc_backend *be, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                           const float *v, int ldv, int nq, int nk, int n_head, int head_dim, int64_t qpos0,
                           int64_t kpos0, int causal, float beta) {
    tc_cuda_ctx *c = ctx_of(be);
    TC_ASSERT(head_dim <= TC_CUDA_ATT_MAX_HD, "cuda attention: head_dim %d > %d", head_dim, TC_CUDA_ATT_MAX_HD);
    if (!cuda_enter(c)) return;
    (void)CU_OK(c, att_call(c, out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, n_head, head_dim, qpos0, kpos0, causal, beta));
}

/* one launch of the row kernel (or, replaying, its hash and staged items) */
static cudaError_t att_rows_call(tc_cuda_ctx *c, const tc_att_item *rows, int nr, int n_head, int head_dim) {
    tc_cuda_lane *L = lane_of(c);
    const tc_att_item *dev = tc_cuda_stage_items(L, rows, (size_t)nr * sizeof *rows);
    int mq = 1;
    for (int i = 0; i < nr; i++)
        if (rows[i].nq > mq) mq = rows[i].nq;
    if (REPLAY_MIX(L, OP_ATT_ROWS, nr, n_head, head_dim, (uint64_t)mq)) return cudaSuccess;
    return tc_cuda_attention_rows(L->stream, rows, nr, n_head, head_dim, dev);
}

/* one launch of the pair kernel (or, replaying, its hash and staged items) */
static cudaError_t att_pairs_call(tc_cuda_ctx *c, const tc_att_item *w, const tc_att_item *z, int np, int n_head,
                                  int head_dim) {
    tc_cuda_lane *L = lane_of(c);
    const tc_att_item *dw = tc_cuda_stage_items(L, w, (size_t)np * sizeof *w);
    const tc_att_item *dz = tc_cuda_stage_items(L, z, (size_t)np * sizeof *z);
    int mq = 1;
    for (int i = 0; i < np; i++)
        if (w[i].nq > mq) mq = w[i].nq;
    if (REPLAY_MIX(L, OP_ATT_PAIRS, np, n_head, head_dim, (uint64_t)mq, (uint64_t)c->pairs)) return cudaSuccess;
    if (!dw || !dz) dw = dz = NULL; /* staging full: the parameters */
    /* two blocks a pair only while one a pair leaves multiprocessors idle:
     * at batch 256 (192 blocks a launch) the split measured 9% slower
     * (session 17), at batch 1 (12 blocks) 7% faster a step */
    const int split = c->pairs && np <= TC_CUDA_PAIR_SPLIT_MAX && tc_cuda_attention_pairs_split_fits(n_head, head_dim) &&
                      (c->pairs == 2 || (long)np * mq * n_head < (long)c->sms);
    return tc_cuda_attention_pairs(L->stream, w, z, np, n_head, head_dim, dw, dz, split ? L->pair_part : NULL,
                                   split ? L->pair_count : NULL);
}

/* the hit step's attentions of a batch: items of 1..4 query rows go to the
 * row kernel TC_CUDA_ATT_BATCH at a time (one launch instead of one per
 * session), larger ones one by one */
static void cuda_attention_batch(tc_backend *be, const tc_att_item *it, int n, int n_head, int head_dim) {
    tc_cuda_ctx *c = ctx_of(be);
    TC_ASSERT(head_dim <= TC_CUDA_ATT_MAX_HD, "cuda attention: head_dim %d > %d", head_dim, TC_CUDA_ATT_MAX_HD);
    if (!cuda_enter(c)) return;
    tc_att_item rows[TC_CUDA_ATT_BATCH];
    const int cap = batch_cap(c, TC_CUDA_ATT_BATCH);
    int nr = 0;
    for (int i = 0; i < n; i++) {
        const tc_att_item *t = &it[i];
        if (t->nq <= 0) continue;
        if (t->nq > TC_CUDA_ATT_ROW_MAX) {
            if (!CU_OK(c, att_call(c, t->out, t->ldo, t->q, t->ldq, t->k, t->ldk, t->v, t->ldv, t->nq, t->nk, n_head,
                                   head_dim, t->qpos0, t->kpos0, t->causal, t->beta)))
                return;
            continue;
        }
        rows[nr++] = *t;
        if (nr == cap) {
            if (!CU_OK(c, att_rows_call(c, rows, nr, n_head, head_dim))) return;
            nr = 0;
        }
    }
    if (nr) (void)CU_OK(c, att_rows_call(c, rows, nr, n_head, head_dim));
}

/* both softmaxes of the hit step: pairs of 1..4 query rows go to the pair
 * kernel TC_CUDA_ATT_PAIRS at a time, larger ones (a prefill's window) one
 * attention at a time, in the same order (w, then z) */
static void cuda_attention_pairs(tc_backend *be, const tc_att_item *w, const tc_att_item *z, int n, int n_head,
                                 int head_dim) {
    tc_cuda_ctx *c = ctx_of(be);
    TC_ASSERT(head_dim <= TC_CUDA_ATT_MAX_HD, "cuda attention: head_dim %d > %d", head_dim, TC_CUDA_ATT_MAX_HD);
    if (!cuda_enter(c)) return;
    tc_att_item pw[TC_CUDA_ATT_PAIRS], pz[TC_CUDA_ATT_PAIRS];
    /* pairs always split (a test) go TC_CUDA_PAIR_SPLIT_MAX to a launch */
    const int cap = batch_cap(c, c->pairs == 2 ? TC_CUDA_PAIR_SPLIT_MAX : TC_CUDA_ATT_PAIRS);
    int np = 0;
    for (int i = 0; i < n; i++) {
        if (w[i].nq <= 0 && z[i].nq <= 0) continue;
        /* no window rows but zip rows (backend.h still runs z), or a
         * prefill's window: one attention at a time */
        if (w[i].nq <= 0 || w[i].nq > TC_CUDA_ATT_ROW_MAX) {
            for (int r = 0; r < 2; r++) {
                const tc_att_item *t = r ? &z[i] : &w[i];
                if (t->nq > 0 &&
                    !CU_OK(c, att_call(c, t->out, t->ldo, t->q, t->ldq, t->k, t->ldk, t->v, t->ldv, t->nq, t->nk,
                                       n_head, head_dim, t->qpos0, t->kpos0, t->causal, t->beta)))
                    return;
            }
            continue;
        }
        pw[np] = w[i], pz[np] = z[i];
        if (++np == cap) {
            if (!CU_OK(c, att_pairs_call(c, pw, pz, np, n_head, head_dim))) return;
            np = 0;
        }
    }
    if (np) (void)CU_OK(c, att_pairs_call(c, pw, pz, np, n_head, head_dim));
}

/* backend.h linear_pre: up to skinny_rows rows whose transformed input
 * (a group of 8) fits the kernel's shared memory in one launch (the hit
 * step), more as the two ops through tmp */
static void cuda_swiglu(tc_backend *be, float *out, int ldo, const float *h, int ldh, int n, int F);
static void cuda_linear_pre(tc_backend *be, int pre, float *y, int ldy, const float *x, int ldx, float *tmp,
                            const void *W, const float *bias, int n, int m, int k, float beta, const float *ln_w,
                            const float *ln_b, float eps) {
    tc_cuda_ctx *c = ctx_of(be);
    if (n <= 0 || m <= 0 || !cuda_enter(c)) return;
    if (n > c->skinny_rows || tc_cuda_linear_pre_smem(n, k) > TC_CUDA_PRE_SMEM) {
        TC_ASSERT(pre != TC_PRE_LN || ldx == k, "cuda linear_pre: layernorm rows of stride %d, not %d", ldx, k);
        if (pre == TC_PRE_LN) cuda_layernorm(be, tmp, x, ln_w, ln_b, n, k, eps);
        else cuda_swiglu(be, tmp, k, x, ldx, n, k);
        cuda_linear(be, y, ldy, tmp, k, W, bias, n, m, k, beta);
        return;
    }
    tc_cuda_lane *L = lane_of(c);
    if (REPLAY_MIX(L, OP_LINEAR_PRE, (uint64_t)pre, P64(y), ldy, P64(x), ldx, P64(W), P64(bias), n, m, k,
                   fbits(beta), P64(ln_w), P64(ln_b), fbits(eps)))
        return;
    (void)CU_OK(c, tc_cuda_linear_pre(L->stream, pre, y, ldy, x, ldx, W, bias, be->wtype, n, m, k, beta, ln_w, ln_b,
                                      eps));
}

/* backend.h qkv_rope: up to skinny_rows rows in one launch (the
 * hit step: the projection, its rotation and the window appends), the
 * rows' positions and window pointers staged like rope_kv_batch's items;
 * more rows, items not in row order, or TC_CUDA_FUSE=2: the ops it stands
 * for */
static void cuda_qkv_rope(tc_backend *be, const tc_rope_kv_item *it, int n, float *qkv, int ldq, const float *x,
                          float *tmp, const void *W, const float *bias, int rows, const float *ln_w,
                          const float *ln_b, float eps, int n_head, int head_dim, float base) {
    tc_cuda_ctx *c = ctx_of(be);
    if (rows <= 0 || !cuda_enter(c)) return;
    const int d = n_head * head_dim;
    tc_rope_row rr[TC_CUDA_SKINNY_ROWS];
    int ok = c->fuse == 1 && rows <= c->skinny_rows && head_dim >= 2 && head_dim % 2 == 0 &&
             tc_cuda_qkv_rope_smem(rows, d) <= TC_CUDA_PRE_SMEM, r = 0;
    for (int i = 0; ok && i < n; i++) {
        if (it[i].n <= 0) continue; /* no rows, nothing to rotate (as rope_kv_batch) */
        if (it[i].qkv != qkv + (size_t)r * ldq || r + it[i].n > rows) {
            ok = 0;
            break;
        }
        for (int q = 0; q < it[i].n; q++)
            rr[r + q] = (tc_rope_row){it[i].k_dst + (size_t)q * d, it[i].v_dst + (size_t)q * d, it[i].pos0 + q};
        r += it[i].n;
    }
    if (!ok || r != rows) {
        if (be->linear_pre) {
            cuda_linear_pre(be, TC_PRE_LN, qkv, ldq, x, d, tmp, W, bias, rows, 3 * d, d, 0.f, ln_w, ln_b, eps);
        } else {
            cuda_layernorm(be, tmp, x, ln_w, ln_b, rows, d, eps);
            cuda_linear(be, qkv, ldq, tmp, d, W, bias, rows, 3 * d, d, 0.f);
        }
        cuda_rope_kv_batch(be, it, n, ldq, n_head, head_dim, base);
        return;
    }
    tc_cuda_lane *L = lane_of(c);
    /* replay: the rows from device memory; everything else is the launch's own */
    const tc_rope_row *dev = tc_cuda_stage_items(L, rr, (size_t)rows * sizeof *rr);
    if (REPLAY_MIX(L, OP_QKV_ROPE, P64(qkv), ldq, P64(x), P64(W), P64(bias), rows, P64(ln_w), P64(ln_b), fbits(eps),
                   n_head, head_dim, fbits(base)))
        return;
    (void)CU_OK(c, tc_cuda_qkv_rope(L->stream, qkv, ldq, x, d, W, bias, be->wtype, rows, n_head, head_dim, ln_w, ln_b,
                                    eps, rr, dev, base));
}

static void cuda_swiglu(tc_backend *be, float *out, int ldo, const float *h, int ldh, int n, int F) {
    tc_cuda_ctx *c = ctx_of(be);
    if (!cuda_enter(c)) return;
    if (REPLAY_MIX(lane_of(c), OP_SWIGLU, P64(out), ldo, P64(h), ldh, n, F)) return;
    (void)CU_OK(c, tc_cuda_swiglu(lane_of(c)->stream, out, ldo, h, ldh, n, F));
}

static void cuda_topk(tc_backend *be, int32_t *ids, float *vals, const float *x, int n, int V, int k) {
    tc_cuda_ctx *c = ctx_of(be);
    TC_ASSERT(k >= 1 && k <= V && k <= TC_TOPK_MAX, "cuda topk: k %d outside 1..%d", k, V);
    if (!cuda_enter(c)) return;
    if (REPLAY_MIX(lane_of(c), OP_TOPK, P64(ids), P64(vals), P64(x), n, V, k)) return;
    tc_cuda_lane *L = lane_of(c);
    (void)CU_OK(c, tc_cuda_topk(L->stream, ids, vals, x, n, V, k, L->am_part, L->am_count, c->sms));
}

/* the rows' draws are items (they change every step: the random bits),
 * staged like the attention items when replaying */
static void cuda_sample(tc_backend *be, int32_t *tokens, const float *x, int n, int V, const tc_draw *draws) {
    tc_cuda_ctx *c = ctx_of(be);
    if (n <= 0 || !cuda_enter(c)) return;
    tc_cuda_lane *L = lane_of(c);
    const tc_draw *dev = tc_cuda_stage_items(L, draws, (size_t)n * sizeof *draws);
    if (REPLAY_MIX(L, OP_SAMPLE, P64(tokens), P64(x), n, V)) return;
    (void)CU_OK(c, tc_cuda_sample(L->stream, tokens, x, n, V, draws, dev));
}

/* ---- TC_CUDA_PROFILE: each op timed (backend_cuda_graph.c keeps the timer) ---- */
#define PROF_OP(fn, OP, PARAMS, ARGS)                                                                                   \
    static void fn##_prof PARAMS {                                                                                      \
        tc_cuda_ctx *c_ = ctx_of(be);                                                                                   \
        int i_ = tc_cuda_prof_begin(c_);                                                                                        \
        fn ARGS;                                                                                                        \
        tc_cuda_prof_end(c_, i_, (OP));                                                                                         \
    }
PROF_OP(cuda_copy2d, P_COPY, (tc_backend *be, float *dst, int ldd, const float *src, int lds, int rows, int cols),
        (be, dst, ldd, src, lds, rows, cols))
PROF_OP(cuda_embed, P_EMBED, (tc_backend *be, float *out, const void *E, const int32_t *ids, int n, int d),
        (be, out, E, ids, n, d))
PROF_OP(cuda_layernorm, P_LAYERNORM,
        (tc_backend *be, float *out, const float *x, const float *w, const float *b, int n, int d, float eps),
        (be, out, x, w, b, n, d, eps))
PROF_OP(cuda_linear, n <= ctx_of(be)->skinny_rows ? P_SKINNY : P_GEMM,
        (tc_backend *be, float *y, int ldy, const float *x, int ldx, const void *W, const float *bias, int n, int m,
         int k, float beta),
        (be, y, ldy, x, ldx, W, bias, n, m, k, beta))
PROF_OP(cuda_linear_pre, n <= ctx_of(be)->skinny_rows ? P_PRE : P_GEMM,
        (tc_backend *be, int pre, float *y, int ldy, const float *x, int ldx, float *tmp, const void *W,
         const float *bias, int n, int m, int k, float beta, const float *ln_w, const float *ln_b, float eps),
        (be, pre, y, ldy, x, ldx, tmp, W, bias, n, m, k, beta, ln_w, ln_b, eps))
PROF_OP(cuda_rope, P_ROPE,
        (tc_backend *be, float *x, int ld, int n, int n_head, int head_dim, int64_t pos0, float base),
        (be, x, ld, n, n_head, head_dim, pos0, base))
PROF_OP(cuda_rope_kv_batch, P_ROPE,
        (tc_backend *be, const tc_rope_kv_item *it, int n, int ldq, int n_head, int head_dim, float base),
        (be, it, n, ldq, n_head, head_dim, base))
PROF_OP(cuda_attention, nq <= TC_CUDA_ATT_ROW_MAX ? P_ATT_STEP : nk > nq ? P_ATT_KQ : P_ATT_QK,
        (tc_backend *be, float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v,
         int ldv, int nq, int nk, int n_head, int head_dim, int64_t qpos0, int64_t kpos0, int causal, float beta),
        (be, out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, n_head, head_dim, qpos0, kpos0, causal, beta))
PROF_OP(cuda_attention_batch, P_ATT_STEP, (tc_backend *be, const tc_att_item *it, int n, int n_head, int head_dim),
        (be, it, n, n_head, head_dim))
PROF_OP(cuda_attention_pairs, P_ATT_STEP,
        (tc_backend *be, const tc_att_item *w, const tc_att_item *z, int n, int n_head, int head_dim),
        (be, w, z, n, n_head, head_dim))
PROF_OP(cuda_qkv_rope, rows <= ctx_of(be)->skinny_rows ? P_QKV_ROPE : P_GEMM,
        (tc_backend *be, const tc_rope_kv_item *it, int n, float *qkv, int ldq, const float *x, float *tmp,
         const void *W, const float *bias, int rows, const float *ln_w, const float *ln_b, float eps, int n_head,
         int head_dim, float base),
        (be, it, n, qkv, ldq, x, tmp, W, bias, rows, ln_w, ln_b, eps, n_head, head_dim, base))
PROF_OP(cuda_swiglu, P_SWIGLU, (tc_backend *be, float *out, int ldo, const float *h, int ldh, int n, int F),
        (be, out, ldo, h, ldh, n, F))
PROF_OP(cuda_topk, P_TOPK, (tc_backend *be, int32_t *ids, float *vals, const float *x, int n, int V, int k),
        (be, ids, vals, x, n, V, k))

PROF_OP(cuda_sample, P_SAMPLE, (tc_backend *be, int32_t *tokens, const float *x, int n, int V, const tc_draw *draws),
        (be, tokens, x, n, V, draws))

static void prof_install(tc_backend *be) {
    be->copy2d = cuda_copy2d_prof;
    be->embed = cuda_embed_prof;
    be->layernorm = cuda_layernorm_prof;
    be->linear = cuda_linear_prof;
    if (be->linear_pre) be->linear_pre = cuda_linear_pre_prof;
    if (be->qkv_rope) be->qkv_rope = cuda_qkv_rope_prof;
    be->rope = cuda_rope_prof;
    be->rope_kv_batch = cuda_rope_kv_batch_prof;
    be->attention = cuda_attention_prof;
    be->attention_batch = cuda_attention_batch_prof;
    be->attention_pairs = cuda_attention_pairs_prof;
    be->swiglu = cuda_swiglu_prof;
    be->topk = cuda_topk_prof;
    if (be->sample) be->sample = cuda_sample_prof;
}

int tc_backend_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* no driver / no device: not an error here */
        return 0;
    }
    return n;
}

tc_status tc_backend_cuda_init(tc_backend *be, int device) {
    tc_status st = TC_OK;
    memset(be, 0, sizeof *be);
    /* the knobs first: a bad value is an error on any machine */
    int wtype = TC_WT_F32, graphs = 2; /* replayed graphs: measured faster, exact (gpu.md) */
    const char *w = getenv("TC_CUDA_WEIGHTS"), *g = getenv("TC_CUDA_GRAPHS"), *pr = getenv("TC_CUDA_PROFILE");
    const char *am = getenv("TC_CUDA_ATT_MMA"), *fu = getenv("TC_CUDA_FUSE"), *pd = getenv("TC_CUDA_PDL");
    const char *pp = getenv("TC_CUDA_PAIRS"), *sw = getenv("TC_CUDA_SKINNY_WARPS"), *bi = getenv("TC_CUDA_BATCH_ITEMS");
    const char *sm = getenv("TC_CUDA_SAMPLE"), *sk = getenv("TC_CUDA_SAMPLE_KERNEL"), *sr = getenv("TC_CUDA_SKINNY_ROWS");
    int sample_kernel = 2, skinny_rows = 0; /* 0: by the weights' format, below */
    if (sr && *sr) {
        char *end = NULL;
        const long v = strtol(sr, &end, 10);
        if (*end || v < 1 || v > TC_CUDA_SKINNY_ROWS)
            return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_SKINNY_ROWS '%s': expected 1 to %d", sr, TC_CUDA_SKINNY_ROWS);
        skinny_rows = (int)v;
    }
    if (sk && *sk) {
        if (strlen(sk) != 1 || sk[0] < '0' || sk[0] > '2')
            return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_SAMPLE_KERNEL '%s': expected 0, 1 or 2", sk);
        sample_kernel = sk[0] - '0';
    }
    int batch_items = 0, sample = 1;
    if (sm && *sm) {
        if (!strcmp(sm, "0") || !strcmp(sm, "1") || !strcmp(sm, "2")) sample = sm[0] - '0';
        else return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_SAMPLE '%s': expected 0, 1 or 2", sm);
    }
    if (bi && *bi) {
        char *end = NULL;
        const long v = strtol(bi, &end, 10);
        if (*end || v < 1 || v > TC_CUDA_ATT_BATCH)
            return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_BATCH_ITEMS '%s': expected 1 to %d", bi, TC_CUDA_ATT_BATCH);
        batch_items = (int)v;
    }
    int profile = 0, att_mma = 1, fuse = 1, pdl = 1, pairs = 1, skinny_warps = 8;
    if (am && *am) {
        if (!strcmp(am, "0")) att_mma = 0;
        else if (strcmp(am, "1")) return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_ATT_MMA '%s': expected 0 or 1", am);
    }
    if (pd && *pd) {
        if (!strcmp(pd, "0")) pdl = 0;
        else if (strcmp(pd, "1")) return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_PDL '%s': expected 0 or 1", pd);
    }
    if (sw && *sw) {
        if (!strcmp(sw, "2")) skinny_warps = 2;
        else if (!strcmp(sw, "4")) skinny_warps = 4;
        else if (strcmp(sw, "8")) return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_SKINNY_WARPS '%s': expected 2, 4 or 8", sw);
    }
    if (pp && *pp) {
        if (!strcmp(pp, "0")) pairs = 0;
        else if (strcmp(pp, "1")) return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_PAIRS '%s': expected 0 or 1", pp);
    }
    if (fu && *fu) {
        if (!strcmp(fu, "0")) fuse = 0;
        else if (!strcmp(fu, "2")) fuse = 2;
        else if (strcmp(fu, "1")) return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_FUSE '%s': expected 0, 1 or 2", fu);
    }
    if (pr && *pr) {
        if (!strcmp(pr, "1")) profile = 1;
        else if (!strcmp(pr, "2")) profile = 2;
        else if (strcmp(pr, "0")) return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_PROFILE '%s': expected 0, 1 or 2", pr);
    }
    if (w && *w && strcmp(w, "f32")) {
        if (!strcmp(w, "bf16")) wtype = TC_WT_BF16;
        else if (!strcmp(w, "f16")) wtype = TC_WT_F16;
        else return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_WEIGHTS '%s': expected f32, bf16 or f16", w);
    }
    if (g && *g) {
        if (!strcmp(g, "0")) graphs = 0;
        else if (!strcmp(g, "1")) graphs = 1;
        else if (!strcmp(g, "2")) graphs = 2;
        else return TC_FAIL(TC_ERR_INVALID, "TC_CUDA_GRAPHS '%s': expected 0, 1 or 2", g);
    } else if (profile) {
        graphs = 0; /* the profile times ops, which a replayed graph hides: graphs only when asked for */
    }
    if (profile && !(pd && *pd)) pdl = 0; /* and ops that overlap their neighbours: PDL only when asked for */
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        return TC_FAIL(TC_ERR_UNSUPPORTED, "cuda: no usable device (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (device < 0 || device >= n)
        return TC_FAIL(TC_ERR_INVALID, "cuda: device %d out of range (%d device%s)", device, n, n == 1 ? "" : "s");
    tc_cuda_ctx *c = calloc(1, sizeof *c);
    if (!c) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    c->device = device;
    for (int l = 0; l < TC_CUDA_LANES; l++) pthread_mutex_init(&c->lane[l].mem_mu, NULL);
    be->ctx = c;
#define INIT_CU(call) do { if (!CU_OK(c, call)) { st = TC_ERR_INTERNAL; goto fail; } } while (0)
#define INIT_BLAS(call) do { if (!BLAS_OK(c, call)) { st = TC_ERR_INTERNAL; goto fail; } } while (0)
    INIT_CU(cudaSetDevice(device));
    INIT_CU(cudaStreamCreateWithFlags(&c->side, cudaStreamNonBlocking));
    for (int l = 0; l < TC_CUDA_LANES; l++) {
        tc_cuda_lane *L = &c->lane[l];
        INIT_CU(cudaStreamCreateWithFlags(&L->stream, cudaStreamNonBlocking));
        INIT_BLAS(cublasCreate(&L->blas));
        /* order matters: cublasSetStream resets the workspace to cuBLAS's pool */
        INIT_BLAS(cublasSetStream(L->blas, L->stream));
        INIT_CU(cudaMalloc(&L->blas_ws, TC_CUBLAS_WS_BYTES));
        INIT_CU(cudaMalloc((void **)&L->am_part,
                           (size_t)TC_CUDA_ARGMAX_ROWS * TC_CUDA_ARGMAX_SPLIT * sizeof *L->am_part));
        INIT_CU(cudaMalloc((void **)&L->am_count, (size_t)TC_CUDA_ARGMAX_ROWS * sizeof *L->am_count));
        /* on the lane's own (non-blocking) stream, done before any kernel reads it */
        INIT_CU(cudaMemsetAsync(L->am_count, 0, (size_t)TC_CUDA_ARGMAX_ROWS * sizeof *L->am_count, L->stream));
        INIT_CU(cudaMalloc((void **)&L->pair_part, TC_CUDA_PAIR_PART_FLOATS * sizeof *L->pair_part));
        INIT_CU(cudaMalloc((void **)&L->pair_count, TC_CUDA_PAIR_COUNTS * sizeof *L->pair_count));
        INIT_CU(cudaMemsetAsync(L->pair_count, 0, TC_CUDA_PAIR_COUNTS * sizeof *L->pair_count, L->stream));
        INIT_CU(cudaStreamSynchronize(L->stream));
        INIT_BLAS(cublasSetWorkspace(L->blas, L->blas_ws, TC_CUBLAS_WS_BYTES));
        /* fp32 compute, no TF32: exact against the CPU backend first */
        INIT_BLAS(cublasSetMathMode(L->blas, CUBLAS_DEFAULT_MATH));
    }
    INIT_CU(tc_cuda_attention_setup(att_mma));
    if (!tc_cuda_attention_tile_fits(TC_CUDA_ATT_MAX_HD)) {
        int hd = TC_CUDA_ATT_MAX_HD;
        while (hd > 0 && !tc_cuda_attention_tile_fits(hd)) hd--;
        TC_LOG(TC_LOG_INFO, "cuda", "device %d: the attention tile kernel's shared memory takes head_dim <= %d; "
               "prefills and syncs of wider heads run the row kernel (slower)", device, hd);
    }
    INIT_CU(tc_cuda_pdl_setup(pdl));
    TC_ASSERT(tc_cuda_linear_set_warps(skinny_warps) == 0, "skinny warps %d", skinny_warps);
    {
        int pools = 0;
        if (cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device) == cudaSuccess && pools) {
            cudaMemPool_t pool;
            uint64_t keep = UINT64_MAX; /* freed memory stays in the pool for the next session */
            INIT_CU(cudaDeviceGetDefaultMemPool(&pool, device));
            INIT_CU(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
            c->pooled = 1;
        }
        (void)cudaGetLastError();
    }
    c->graphs = graphs;
    c->pairs = pairs;
    c->fuse = fuse;
    c->batch_items = batch_items;
    c->skinny_rows = skinny_rows ? skinny_rows : wtype == TC_WT_F32 ? TC_CUDA_SKINNY_ROWS_F32 : TC_CUDA_SKINNY_ROWS_W16;
    c->sample = sample;
    (void)tc_cuda_sample_set_kernel(sample_kernel);
    be->wtype = wtype;
#undef INIT_CU
#undef INIT_BLAS

    be->name = "cuda";
    if (be->wtype != TC_WT_F32) be->upload_weight = cuda_upload_weight;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->upload = cuda_upload;
    be->download = cuda_download;
    be->copy2d = cuda_copy2d;
    be->embed = cuda_embed;
    be->layernorm = cuda_layernorm;
    be->linear = cuda_linear;
    be->rope = cuda_rope;
    be->rope_kv_batch = cuda_rope_kv_batch;
    be->attention = cuda_attention;
    be->attention_batch = cuda_attention_batch;
    be->attention_pairs = cuda_attention_pairs;
    be->swiglu = cuda_swiglu;
    be->linear_pre = fuse ? cuda_linear_pre : NULL;
    be->qkv_rope = fuse ? cuda_qkv_rope : NULL;
    be->topk = cuda_topk;
    if (c->sample) be->sample = cuda_sample;
    be->sample_min_rows = c->sample == 2 ? 2 : 1;
    be->capture_begin = tc_cuda_capture_begin;
    be->capture_end = tc_cuda_capture_end;
    be->drain = cuda_drain;
    be->row_tile = TC_CUDA_ROW_TILE;
    be->max_head_dim = TC_CUDA_ATT_MAX_HD;
    if (profile) {
        for (int l = 0; l < TC_CUDA_LANES; l++) {
            if (!(c->lane[l].prof = tc_cuda_prof_new(c, profile == 2))) {
                st = c->poisoned ? TC_ERR_INTERNAL : TC_ERR_NOMEM;
                goto fail;
            }
        }
        prof_install(be);
    }
    {
        struct cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) c->sms = prop.multiProcessorCount;
        if (c->sms > 0)
            TC_LOG(TC_LOG_INFO, "cuda", "device %d: %s, sm_%d%d, %.1f GiB, weights %s", device, prop.name,
                   prop.major, prop.minor, (double)prop.totalGlobalMem / (double)(1u << 30),
                   wtype == TC_WT_BF16 ? "bf16" : wtype == TC_WT_F16 ? "f16" : "f32");
    }
    return TC_OK;
fail:
    tc_backend_cuda_free(be);
    return st;
}

void tc_backend_cuda_free(tc_backend *be) {
    tc_cuda_ctx *c = ctx_of(be);
    if (c) {
        (void)cudaSetDevice(c->device);
        for (int l = 0; l < TC_CUDA_LANES; l++) {
            tc_cuda_lane *L = &c->lane[l];
            if (L->stream) (void)cudaStreamSynchronize(L->stream);
            if (L->exec) (void)cudaGraphExecDestroy(L->exec);
            for (int i = 0; i < TC_CUDA_KEPT; i++)
                if (L->kept[i].exec) (void)cudaGraphExecDestroy(L->kept[i].exec);
            if (L->stage_h) (void)cudaFreeHost(L->stage_h);
            if (L->stage_d) (void)cudaFree(L->stage_d);
            if (L->xconv) (void)cudaFree(L->xconv);
            if (L->att_part) (void)cudaFree(L->att_part);
            if (L->am_part) (void)cudaFree(L->am_part);
            if (L->am_count) (void)cudaFree(L->am_count);
            if (L->pair_part) (void)cudaFree(L->pair_part);
            if (L->pair_count) (void)cudaFree(L->pair_count);
            tc_cuda_prof_free(L->prof);
            if (L->blas) (void)cublasDestroy(L->blas);
            if (L->blas_ws) (void)cudaFree(L->blas_ws);
            if (L->stream) (void)cudaStreamDestroy(L->stream);
            pthread_mutex_destroy(&L->mem_mu);
            if (L->n_launch)
                TC_LOG(TC_LOG_DEBUG, "cuda", "lane %d: %ld graph launches, %ld instantiations", l, L->n_launch,
                       L->n_instantiate);
        }
        if (c->side) {
            (void)cudaStreamSynchronize(c->side);
            (void)cudaStreamDestroy(c->side);
        }
        (void)cudaGetLastError();
        free(c);
    }
    memset(be, 0, sizeof *be);
}

tc_status tc_backend_cuda_status(tc_backend *be) {
    tc_cuda_ctx *c = ctx_of(be);
    if (!c) return TC_FAIL(TC_ERR_INVALID, "cuda: backend not initialized");
    if (!atomic_load(&c->poisoned)) return TC_OK;
    return TC_FAIL(TC_ERR_INTERNAL, "%s (device poisoned)", c->first_error);
}

tc_status tc_backend_cuda_sync(tc_backend *be) {
    tc_cuda_ctx *c = ctx_of(be);
    if (!c) return TC_FAIL(TC_ERR_INVALID, "cuda: backend not initialized");
    /* a kernel fault surfaces here; any "last error" left after a clean
     * synchronize is a stale, non-sticky one (every launch is checked at
     * once): cleared, not latched */
    if (cuda_enter(c) && CU_OK(c, cudaStreamSynchronize(lane_of(c)->stream))) (void)cudaGetLastError();
    return tc_backend_cuda_status(be);
}

void *tc_backend_cuda_stream(tc_backend *be) {
    tc_cuda_ctx *c = ctx_of(be);
    return c ? (void *)lane_of(c)->stream : NULL;
}

void tc_backend_cuda_set_graphs(tc_backend *be, int on) {
    tc_cuda_ctx *c = ctx_of(be);
    if (c) c->graphs = on == 2 ? 2 : on != 0;
}

int tc_backend_cuda_set_att_mma(int on) { return tc_cuda_attention_set_mma(on); }

int tc_backend_cuda_set_pdl(int on) { return tc_cuda_pdl_set(on); }
int tc_backend_cuda_pdl_on(void) { return tc_cuda_pdl_on(); }

int tc_backend_cuda_set_skinny_warps(int warps) { return tc_cuda_linear_set_warps(warps); }

int tc_backend_cuda_set_skinny_rows(tc_backend *be, int rows) {
    if (rows < 1 || rows > TC_CUDA_SKINNY_ROWS) return -1;
    const int was = ctx_of(be)->skinny_rows;
    ctx_of(be)->skinny_rows = rows;
    return was;
}

void tc_backend_cuda_set_fuse(tc_backend *be, int mode) {
    tc_cuda_ctx *c = ctx_of(be);
    if (!c) return;
    c->fuse = mode == 1 || mode == 2 ? mode : 0;
    const int prof = c->lane[0].prof != NULL; /* TC_CUDA_PROFILE: the timed wrappers, as prof_install */
    be->linear_pre = !c->fuse ? NULL : prof ? cuda_linear_pre_prof : cuda_linear_pre;
    be->qkv_rope = !c->fuse ? NULL : prof ? cuda_qkv_rope_prof : cuda_qkv_rope;
}

void tc_backend_cuda_set_sample(tc_backend *be, int on) {
    tc_cuda_ctx *c = ctx_of(be);
    if (!c) return;
    c->sample = on == 1 || on == 2 ? on : 0;
    be->sample = !c->sample ? NULL : c->lane[0].prof ? cuda_sample_prof : cuda_sample;
    be->sample_min_rows = c->sample == 2 ? 2 : 1;
}

void tc_backend_cuda_set_pairs(tc_backend *be, int on) {
    tc_cuda_ctx *c = ctx_of(be);
    if (c) c->pairs = on == 2 ? 2 : on != 0;
}

long tc_backend_cuda_side_ops(tc_backend *be) {
    tc_cuda_ctx *c = ctx_of(be);
    return c ? atomic_load(&c->n_side) : 0;
}

void tc_backend_cuda_graph_stats(tc_backend *be, long *launches, long *instantiations) {
    tc_cuda_ctx *c = ctx_of(be);
    *launches = *instantiations = 0;
    for (int l = 0; c && l < TC_CUDA_LANES; l++) {
        *launches += c->lane[l].n_launch;
        *instantiations += c->lane[l].n_instantiate;
    }
}
