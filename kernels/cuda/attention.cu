/* attention.cu — multi-head attention, fp32, flash-style: keys are visited in
 * tiles with an online softmax (running max m, running sum l, rescaled
 * accumulator), so no nq x nk score matrix ever exists and memory is O(tile)
 * for any context length. Causal masking uses absolute positions (a query at
 * qpos0 + i sees keys at kpos0 + j <= qpos0 + i); strided q/k/v/out address
 * Q|K|V column blocks in place; beta accumulates (the window's second
 * softmax over the zip is added to the first, DESIGN.md §1).
 *
 * Two kernels:
 *   tile: many query rows (prefill, sync). Block = 8 warps x 8 query rows of
 *         one head; K/V tiles of 32 keys staged in shared memory; lane j
 *         scores key j of the tile for the warp's rows, register-blocked
 *         (float4 broadcasts of Q and of the probabilities).
 *   row:  nq <= TC_CUDA_ATT_ROW_MAX (the hit step). Block = 8 warps for one
 *         (query row, head); warps split the keys, each key's dot product is
 *         a coalesced warp reduction, and the 8 partial softmaxes are merged
 *         at the end through shared memory.
 * tc_cuda_attention_rows runs the row kernel for up to TC_CUDA_ATT_BATCH
 * attentions of a batch (the sessions of a hit step) in one launch;
 * tc_cuda_attention_pairs both softmaxes of up to TC_CUDA_ATT_PAIRS
 * sessions (window, then zip into the same output) in one.
 * The tile kernel splits long key ranges across blocks (grid z) when the
 * query blocks alone would leave SMs idle -- the sync's focused attention,
 * 256 queries over all N keys -- each split writing a partial (m, l, acc)
 * that att_combine_kernel merges (flash-decoding's split-K).
 * Every multiply-add is an explicit fmaf: what nvcc may contract is then
 * not a choice it can make differently in the kernels that share a body,
 * so a batched launch gives each item exactly the single call's bits.
 * Not here (issue 7): half-precision K/V. */
#include <math.h>

#include "common.cuh"
#include "kernels_cuda.h"

#ifndef ATT_WARPS
#define ATT_WARPS 8 /* 64 query rows a block: each K/V tile loaded once for more rows */
#endif
#define ATT_ROWS 8 /* query rows per warp */
#define ATT_BQ (ATT_WARPS * ATT_ROWS)
#define ATT_BK 32 /* keys per tile = lanes of a warp */
#define ROW_WARPS 8
/* V rows a row-kernel warp loads before using them (fewer with wide heads:
 * registers) */
#define ROW_VB(NC) ((NC) <= 2 ? 16 : 32 / (NC))
#define MMA_KT_MAX 8 /* the tensor-core tile kernel takes head_dim <= 64 */

/* the tile kernel's work on the tensor cores (att_mma_kernel) when
 * TC_CUDA_ATT_MMA is not 0 (g_att_mma_want) and the current device can run
 * it: bit d of g_att_mma_devs, set by tc_cuda_attention_setup on device d
 * when it is sm_80+ and the kernel's code for it was compiled for sm_80+
 * (a PTX of an older target, JIT-compiled, would reach its __trap). Devices
 * past 63 use the CUDA-core kernel. */
static int g_att_mma_want;
static unsigned long long g_att_mma_devs;

static int att_mma_on(void) { return g_att_mma_want && tc_cuda_arch_has(g_att_mma_devs); }

extern "C" int tc_cuda_attention_set_mma(int on) {
    g_att_mma_want = on != 0;
    return att_mma_on();
}

extern "C" int tc_cuda_attention_mma_on(void) { return att_mma_on(); }

/* First key index NOT visible to a query at absolute position qpos, clamped
 * to [0, nk]. */
__device__ __forceinline__ int att_key_limit(int64_t qpos, int64_t kpos0, int nk, int causal) {
    if (!causal) return nk;
    int64_t lim = qpos - kpos0 + 1;
    return lim <= 0 ? 0 : (lim >= nk ? nk : (int)lim);
}

__device__ __forceinline__ void att_store(float *o, float val, float beta) {
    *o = beta == 0.f ? val : fmaf(beta, *o, val); /* beta 0 never reads out */
}

/* Shared memory of the tile kernel for head_dim hd (hdp = hd rounded up
 * to 4, zero-padded): Q [BQ][hdp] (rows read as float4 broadcasts), P
 * [warps][rows][BK] (each warp's probabilities, float4 broadcasts in the
 * PV product), K^T [hdp][BK + 1] (lane = key reads a column; the odd
 * stride keeps the transposing stores conflict-free), V [BK][hd]. */
static size_t att_tile_smem(int hd) {
    const size_t hdp = (size_t)(hd + 3) / 4 * 4;
    return (ATT_BQ * hdp + (size_t)ATT_WARPS * ATT_ROWS * ATT_BK + hdp * (ATT_BK + 1) + (size_t)ATT_BK * hd) *
           sizeof(float);
}

/* The dynamic shared memory the tile kernel of class NC may use on device
 * d, set by tc_cuda_attention_setup (att_tile_setup): [d][0..3] for NC 1,
 * 2, 4, 8; -1: none fits. 0 (a device setup has not seen, or past 63):
 * 48 KiB, what a launch may use without opting in. */
static int g_att_tile_smem[64][4];
static constexpr int att_tile_class(int NC) { return NC <= 1 ? 0 : NC <= 2 ? 1 : NC <= 4 ? 2 : 3; }
/* whether the tile for head_dim hd (class NC) fits the current device */
static int att_tile_fits(int NC, int hd) {
    int d = 0, cap = 0;
    if (cudaGetDevice(&d) == cudaSuccess && d >= 0 && d < 64) cap = g_att_tile_smem[d][att_tile_class(NC)];
    if (cap == 0) cap = 48 * 1024;
    return cap > 0 && att_tile_smem(hd) <= (size_t)cap;
}

// out [nq, *] (ldo); q [nq, *] (ldq); k, v [nk, *] (ldk, ldv); head h at columns h*hd
// grid (ceil(nq / ATT_BQ), n_head, splits), block ATT_WARPS*32; NC = ceil(hd/32) rounded up to a power of 2.
// Register-blocked: a warp owns ATT_ROWS query rows; per key tile, lane j
// scores key j for all of them (4 head dims per float4 of Q), and lane c
// accumulates output columns c, c + 32, ... for all of them (4 keys per
// float4 of P) -- several FMAs per shared-memory load, where one row at a
// time was one.
template <int NC>
__global__ static void __launch_bounds__(ATT_WARPS * 32, 2)
    att_tile_kernel(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                    int nq, int nk, int hd, int64_t qpos0, int64_t kpos0, int causal, float beta, float scale,
                    int kchunk, float *part) {
    extern __shared__ float4 smem4[]; /* float4: 16-byte aligned */
    float *smem = (float *)smem4;
    const int hdp = (hd + 3) / 4 * 4, kts = ATT_BK + 1;
    float *Qs = smem, *Ps = Qs + ATT_BQ * hdp, *Kt = Ps + ATT_WARPS * ATT_ROWS * ATT_BK, *Vs = Kt + hdp * kts;
    const int h = blockIdx.y, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int q0 = blockIdx.x * ATT_BQ;
    const size_t col = (size_t)h * hd;

    for (int t = threadIdx.x; t < ATT_BQ * hdp; t += blockDim.x) {
        int r = t / hdp, c = t % hdp;
        Qs[t] = q0 + r < nq && c < hd ? q[(size_t)(q0 + r) * ldq + col + c] : 0.f;
    }
    for (int t = threadIdx.x; t < (hdp - hd) * kts; t += blockDim.x) Kt[hd * kts + t] = 0.f; /* padding */
    /* keys any row of this block can see */
    int last = (q0 + ATT_BQ < nq ? q0 + ATT_BQ : nq) - 1;
    int nk_blk = att_key_limit(qpos0 + last, kpos0, nk, causal);
    /* split over keys (blockIdx.z, part != NULL): this block's share */
    const int kbeg = part ? (int)blockIdx.z * kchunk : 0;
    if (part && kbeg + kchunk < nk_blk) nk_blk = kbeg + kchunk;

    int lim[ATT_ROWS];
    float m[ATT_ROWS], l[ATT_ROWS], acc[ATT_ROWS][NC];
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS; rr++) {
        int row = q0 + w * ATT_ROWS + rr;
        lim[rr] = row < nq ? att_key_limit(qpos0 + row, kpos0, nk, causal) : 0;
        m[rr] = -INFINITY;
        l[rr] = 0.f;
#pragma unroll
        for (int i = 0; i < NC; i++) acc[rr][i] = 0.f;
    }
    float *Pw = Ps + w * ATT_ROWS * ATT_BK;
    const float *Qw = Qs + (w * ATT_ROWS) * hdp;
    /* this thread's (key, column) walk over a K/V tile, stepping blockDim.x
     * elements: divisions once here, not per element per tile */
    const int r_first = threadIdx.x / hd, c_first = threadIdx.x % hd;
    const int r_step = (ATT_WARPS * 32) / hd, c_step = (ATT_WARPS * 32) % hd;

    for (int k0 = kbeg; k0 < nk_blk; k0 += ATT_BK) {
        const int tk = nk_blk - k0 < ATT_BK ? nk_blk - k0 : ATT_BK;
        __syncthreads(); /* previous tile fully consumed (and Qs loaded, first time) */
        for (int r = r_first, c = c_first; r < ATT_BK;) {
            bool in = r < tk;
            Kt[c * kts + r] = in ? k[(size_t)(k0 + r) * ldk + col + c] : 0.f;
            Vs[r * hd + c] = in ? v[(size_t)(k0 + r) * ldv + col + c] : 0.f;
            r += r_step, c += c_step;
            if (c >= hd) c -= hd, r++;
        }
        __syncthreads();

        /* scores: lane = key k0 + lane, for the warp's ATT_ROWS rows */
        float s[ATT_ROWS];
#pragma unroll
        for (int rr = 0; rr < ATT_ROWS; rr++) s[rr] = 0.f;
        for (int c = 0; c < hdp; c += 4) {
            const float k0v = Kt[c * kts + lane], k1v = Kt[(c + 1) * kts + lane], k2v = Kt[(c + 2) * kts + lane],
                        k3v = Kt[(c + 3) * kts + lane];
#pragma unroll
            for (int rr = 0; rr < ATT_ROWS; rr++) {
                const float4 qv = *(const float4 *)(Qw + rr * hdp + c);
                s[rr] = fmaf(qv.x, k0v, s[rr]);
                s[rr] = fmaf(qv.y, k1v, s[rr]);
                s[rr] = fmaf(qv.z, k2v, s[rr]);
                s[rr] = fmaf(qv.w, k3v, s[rr]);
            }
        }
#pragma unroll
        for (int rr = 0; rr < ATT_ROWS; rr++) {
            bool vis = lane < tk && k0 + lane < lim[rr];
            float sc = vis ? s[rr] * scale : -INFINITY;
            float mx = fmaxf(m[rr], tc_warp_max(sc));
            float p = 0.f;
            if (mx != -INFINITY) { /* else nothing visible yet for this row (warp-uniform) */
                float corr = m[rr] == -INFINITY ? 0.f : expf(m[rr] - mx);
                p = vis ? expf(sc - mx) : 0.f;
                l[rr] = fmaf(l[rr], corr, tc_warp_sum(p));
                m[rr] = mx;
#pragma unroll
                for (int i = 0; i < NC; i++) acc[rr][i] *= corr;
            }
            Pw[rr * ATT_BK + lane] = p;
        }
        __syncwarp();
        /* acc[row][c] += sum_j p[row][j] * V[j][c], lane owns c = lane + 32 i;
         * keys past tk have p = 0 and V = 0: whole float4s of keys */
        for (int j = 0; j < tk; j += 4) {
            float vj[4][NC];
#pragma unroll
            for (int u = 0; u < 4; u++)
#pragma unroll
                for (int i = 0; i < NC; i++) {
                    int c = lane + 32 * i;
                    vj[u][i] = c < hd ? Vs[(j + u) * hd + c] : 0.f;
                }
#pragma unroll
            for (int rr = 0; rr < ATT_ROWS; rr++) {
                const float4 pp = *(const float4 *)(Pw + rr * ATT_BK + j);
#pragma unroll
                for (int i = 0; i < NC; i++) {
                    acc[rr][i] = fmaf(pp.x, vj[0][i], acc[rr][i]);
                    acc[rr][i] = fmaf(pp.y, vj[1][i], acc[rr][i]);
                    acc[rr][i] = fmaf(pp.z, vj[2][i], acc[rr][i]);
                    acc[rr][i] = fmaf(pp.w, vj[3][i], acc[rr][i]);
                }
            }
        }
        __syncwarp(); /* Pw is rewritten by the next tile */
    }

    if (part) { /* the split's partial softmax: m, l, unnormalized acc; att_combine_kernel merges */
        const int H = gridDim.y;
#pragma unroll
        for (int rr = 0; rr < ATT_ROWS; rr++) {
            int row = q0 + w * ATT_ROWS + rr;
            if (row >= nq) continue;
            float *pp = part + (((size_t)blockIdx.z * nq + row) * H + h) * (hd + 2);
            if (lane == 0) pp[0] = m[rr], pp[1] = l[rr];
#pragma unroll
            for (int i = 0; i < NC; i++) {
                int c = lane + 32 * i;
                if (c < hd) pp[2 + c] = acc[rr][i];
            }
        }
        return;
    }
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS; rr++) {
        int row = q0 + w * ATT_ROWS + rr;
        if (row >= nq) continue;
        float inv = l[rr] > 0.f ? 1.0f / l[rr] : 0.f; /* no visible key: zero, as on the CPU */
        float *o = out + (size_t)row * ldo + col;
#pragma unroll
        for (int i = 0; i < NC; i++) {
            int c = lane + 32 * i;
            if (c < hd) att_store(o + c, acc[rr][i] * inv, beta);
        }
    }
}

// one (head h, query row) per block of ROW_WARPS*32 threads; dynamic smem:
// att_row_smem(hd). Warps take 32 keys at a time; lane j owns key k0 + j
// and computes its whole dot product (no warp reduction per key: the 32
// K rows are loaded in parallel, which is what a hit step waits on), then
// lane c of the warp owns output columns c, c + 32, ...
static size_t att_row_smem(int hd) { return ((size_t)hd + (size_t)ROW_WARPS * (hd + 2)) * sizeof(float); }
template <int NC>
__device__ __forceinline__ void att_row_body(int h, int row, float *out, int ldo, const float *q, int ldq,
                                             const float *k, int ldk, const float *v, int ldv, int nk, int hd,
                                             int64_t qpos0, int64_t kpos0, int causal, float beta, float scale,
                                             float *plain = nullptr) {
    /* plain: the normalized result stored there as is ([hd], no beta),
     * instead of into out (the split pair kernel's partner slot) */
    extern __shared__ float smem[]; /* q [hd], then per warp: m, l, acc[hd] */
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const size_t col = (size_t)h * hd;
    const int lim = att_key_limit(qpos0 + row, kpos0, nk, causal);
    float *qs = smem;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) qs[c] = q[(size_t)row * ldq + col + c];
    __syncthreads();

    float acc[NC];
#pragma unroll
    for (int i = 0; i < NC; i++) acc[i] = 0.f;
    float m = -INFINITY, l = 0.f;
    for (int k0 = w * 32; k0 < lim; k0 += ROW_WARPS * 32) {
        const int tk = lim - k0 < 32 ? lim - k0 : 32, key = k0 + lane;
        float sc = -INFINITY;
        if (lane < tk) {
            const float *kr = k + (size_t)key * ldk + col;
            float part = 0.f;
            if (NC <= 2) { /* the whole K row's loads in flight at once, then the FMAs in order */
                float kv[32 * NC];
#pragma unroll
                for (int c = 0; c < 32 * NC; c++) kv[c] = c < hd ? kr[c] : 0.f;
#pragma unroll
                for (int c = 0; c < 32 * NC; c++)
                    if (c < hd) part = fmaf(qs[c], kv[c], part);
            } else {
#pragma unroll 8
                for (int c = 0; c < hd; c++) part = fmaf(qs[c], kr[c], part);
            }
            sc = part * scale;
        }
        float mx = fmaxf(m, tc_warp_max(sc)); /* tk >= 1: finite */
        float corr = m == -INFINITY ? 0.f : expf(m - mx);
        float p = lane < tk ? expf(sc - mx) : 0.f;
        l = fmaf(l, corr, tc_warp_sum(p));
        m = mx;
#pragma unroll
        for (int i = 0; i < NC; i++) acc[i] *= corr;
        /* V rows of the warp's keys, ROW_VB at a time: their loads issued
         * together, then the FMAs in key order */
        constexpr int VB = ROW_VB(NC);
        for (int j0 = 0; j0 < tk; j0 += VB) {
            float vv[VB][NC];
#pragma unroll
            for (int u = 0; u < VB; u++) {
                const float *vr = v + (size_t)(k0 + j0 + u) * ldv + col;
#pragma unroll
                for (int i = 0; i < NC; i++) {
                    int c = lane + 32 * i;
                    vv[u][i] = j0 + u < tk && c < hd ? vr[c] : 0.f;
                }
            }
#pragma unroll
            for (int u = 0; u < VB; u++) {
                const float pj = __shfl_sync(0xffffffffu, p, (j0 + u) & 31);
                if (j0 + u < tk) {
#pragma unroll
                    for (int i = 0; i < NC; i++) {
                        int c = lane + 32 * i;
                        if (c < hd) acc[i] = fmaf(pj, vv[u][i], acc[i]);
                    }
                }
            }
        }
    }
    /* merge the warps' partial softmaxes */
    float *ws = smem + hd; /* after q */
    float *mine_s = ws + w * (hd + 2);
    if (lane == 0) { mine_s[0] = m; mine_s[1] = l; }
#pragma unroll
    for (int i = 0; i < NC; i++) {
        int c = lane + 32 * i;
        if (c < hd) mine_s[2 + c] = acc[i];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int ww = 0; ww < ROW_WARPS; ww++) M = fmaxf(M, ws[ww * (hd + 2)]);
    float L = 0.f;
    for (int ww = 0; ww < ROW_WARPS; ww++) {
        float mw = ws[ww * (hd + 2)];
        if (mw != -INFINITY) L = fmaf(ws[ww * (hd + 2) + 1], expf(mw - M), L);
    }
    float inv = L > 0.f ? 1.0f / L : 0.f;
    float *o = plain ? plain : out + (size_t)row * ldo + col;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float a = 0.f;
        for (int ww = 0; ww < ROW_WARPS; ww++) {
            float mw = ws[ww * (hd + 2)];
            if (mw != -INFINITY) a = fmaf(ws[ww * (hd + 2) + 2 + c], expf(mw - M), a);
        }
        if (plain) o[c] = a * inv;
        else att_store(o + c, a * inv, beta);
    }
}

// grid (n_head, nq), block ROW_WARPS*32
template <int NC>
__global__ static void __launch_bounds__(ROW_WARPS * 32)
    att_row_kernel(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                   int nk, int hd, int64_t qpos0, int64_t kpos0, int causal, float beta, float scale) {
    att_row_body<NC>(blockIdx.x, blockIdx.y, out, ldo, q, ldq, k, ldk, v, ldv, nk, hd, qpos0, kpos0, causal, beta,
                     scale);
}

/* A batch's hit-step attentions in one launch: the items travel in the
 * kernel's parameter space, read in place (__grid_constant__, no
 * per-thread copy): CAP x 80 bytes, a small struct (TC_CUDA_BATCH_SMALL
 * items: 2.5 KiB) for a small batch, the large one (TC_CUDA_ATT_BATCH:
 * 20 KiB, past the old 4 KiB limit: CUDA 12.1+ and Volta+ take 32 KiB)
 * only when the batch needs it, so a small step does not copy 20 KiB of
 * parameters per launch. */
template <int CAP> struct att_rows_batch {
    tc_att_item it[CAP];
};

// grid (n_head, max nq of the items, items), block ROW_WARPS*32; each block
// exactly as att_row_kernel's for its item (the same results, bit for bit)
template <int NC, int CAP>
__global__ static void __launch_bounds__(ROW_WARPS * 32)
    att_rows_kernel(const __grid_constant__ att_rows_batch<CAP> b, const tc_att_item *dit, int hd, float scale) {
    tc_pdl_wait(); /* launched with tc_launch: everything below reads the step's data */
    tc_pdl_trigger();
    /* the items: in the parameters, or (dit: a replayed graph) in device memory */
    const tc_att_item t = dit ? dit[blockIdx.z] : b.it[blockIdx.z];
    if ((int)blockIdx.y >= t.nq) return; /* the whole block: no barrier is skipped by part of it */
    att_row_body<NC>(blockIdx.x, blockIdx.y, t.out, t.ldo, t.q, t.ldq, t.k, t.ldk, t.v, t.ldv, t.nk, hd, t.qpos0,
                     t.kpos0, t.causal, t.beta, scale);
}

template <int NC, int CAP>
static cudaError_t att_rows_launch(cudaStream_t st, const tc_att_item *it, int n, int n_head, int hd,
                                   const tc_att_item *dev) {
    if constexpr (CAP < TC_CUDA_ATT_BATCH)
        if (n > CAP) return att_rows_launch<NC, TC_CUDA_ATT_BATCH>(st, it, n, n_head, hd, dev);
    att_rows_batch<CAP> b;
    int mq = 1;
    for (int i = 0; i < n; i++) {
        b.it[i] = it[i];
        if (it[i].nq > mq) mq = it[i].nq;
    }
    dim3 grid((unsigned)n_head, (unsigned)mq, (unsigned)n);
    size_t smem = att_row_smem(hd);
    return tc_launch(att_rows_kernel<NC, CAP>, grid, dim3(ROW_WARPS * 32), smem, st, b, dev, hd,
                     1.0f / sqrtf((float)hd));
}

extern "C" cudaError_t tc_cuda_attention_rows(cudaStream_t st, const tc_att_item *it, int n, int n_head,
                                              int head_dim, const tc_att_item *dev) {
    if (n <= 0 || n_head <= 0 || head_dim <= 0) return cudaSuccess;
    if (n > TC_CUDA_ATT_BATCH || head_dim > TC_CUDA_ATT_MAX_HD || n_head > 65535) return cudaErrorInvalidValue;
    for (int i = 0; i < n; i++)
        if (it[i].nq < 1 || it[i].nq > TC_CUDA_ATT_ROW_MAX) return cudaErrorInvalidValue;
    if (head_dim <= 32) return att_rows_launch<1, TC_CUDA_BATCH_SMALL>(st, it, n, n_head, head_dim, dev);
    if (head_dim <= 64) return att_rows_launch<2, TC_CUDA_BATCH_SMALL>(st, it, n, n_head, head_dim, dev);
    if (head_dim <= 128) return att_rows_launch<4, TC_CUDA_BATCH_SMALL>(st, it, n, n_head, head_dim, dev);
    return att_rows_launch<8, TC_CUDA_BATCH_SMALL>(st, it, n, n_head, head_dim, dev);
}

/* The hit step's two softmaxes of up to TC_CUDA_ATT_PAIRS sessions in one
 * launch: block (head, row, session) computes the window's attention, then
 * -- the same threads, after a barrier for the shared scratch -- adds the
 * zip's (or TLin history's) into the same output, each exactly as
 * att_row_kernel would. 2 x CAP items of parameters (att_rows_batch). */
template <int CAP> struct att_pairs_batch {
    tc_att_item w[CAP], z[CAP];
};

template <int NC, int CAP>
__global__ static void __launch_bounds__(ROW_WARPS * 32)
    att_pairs_kernel(const __grid_constant__ att_pairs_batch<CAP> b, const tc_att_item *dw, const tc_att_item *dz, int hd,
                     float scale) {
    tc_pdl_wait(); /* launched with tc_launch: everything below reads the step's data */
    tc_pdl_trigger();
    /* the items: in the parameters, or (dw, dz: a replayed graph) in device memory */
    const tc_att_item w = dw ? dw[blockIdx.z] : b.w[blockIdx.z], z = dw ? dz[blockIdx.z] : b.z[blockIdx.z];
    if ((int)blockIdx.y >= w.nq) return; /* the whole block */
    att_row_body<NC>(blockIdx.x, blockIdx.y, w.out, w.ldo, w.q, w.ldq, w.k, w.ldk, w.v, w.ldv, w.nk, hd, w.qpos0,
                     w.kpos0, w.causal, w.beta, scale);
    if (z.nq <= 0) return; /* uniform over the block */
    __syncthreads(); /* the scratch is reused; each output element stays with its thread */
    att_row_body<NC>(blockIdx.x, blockIdx.y, z.out, z.ldo, z.q, z.ldq, z.k, z.ldk, z.v, z.ldv, z.nk, hd, z.qpos0,
                     z.kpos0, z.causal, z.beta, scale);
}

/* The same two softmaxes in two blocks at once (grid z = 2 x sessions:
 * block 2i the window's, 2i + 1 the zip's), each writing its normalized
 * result to its slot of part; the pair's second block to finish (a
 * counter after a fence, as topk.cu's argmax) stores both into out in the
 * sequential kernel's order -- the window's with its beta, then the zip's
 * onto it -- so out gets the same bits, with half the dependent latency
 * (a hit step waits on it). Slot of (session i, row r, head h, which):
 * part + (((i * ROW_MAX + r) * n_head + h) * 2 + which) * hd; counter
 * (i * ROW_MAX + r) * n_head + h, left zero. A session without a zip
 * (z.nq == 0) is its window block alone, straight into out. */
template <int NC, int CAP>
__global__ static void __launch_bounds__(ROW_WARPS * 32)
    att_pairs_split_kernel(const __grid_constant__ att_pairs_batch<CAP> b, const tc_att_item *dw, const tc_att_item *dz,
                           int hd, float scale, float *part, unsigned *count) {
    __shared__ int last;
    tc_pdl_wait(); /* launched with tc_launch: everything below reads the step's data */
    tc_pdl_trigger();
    const int i = blockIdx.z >> 1, which = blockIdx.z & 1;
    const tc_att_item w = dw ? dw[i] : b.w[i], z = dw ? dz[i] : b.z[i];
    if ((int)blockIdx.y >= w.nq) return; /* the whole block */
    if (z.nq <= 0) {
        if (which == 0)
            att_row_body<NC>(blockIdx.x, blockIdx.y, w.out, w.ldo, w.q, w.ldq, w.k, w.ldk, w.v, w.ldv, w.nk, hd,
                             w.qpos0, w.kpos0, w.causal, w.beta, scale);
        return;
    }
    const size_t cell = ((size_t)i * TC_CUDA_ATT_ROW_MAX + blockIdx.y) * gridDim.x + blockIdx.x;
    float *slot = part + (cell * 2 + which) * hd;
    const tc_att_item &t = which ? z : w;
    att_row_body<NC>(blockIdx.x, blockIdx.y, t.out, t.ldo, t.q, t.ldq, t.k, t.ldk, t.v, t.ldv, t.nk, hd, t.qpos0,
                     t.kpos0, t.causal, t.beta, scale, slot);
    __threadfence(); /* the slot is visible before the counter says so */
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&count[cell], 1u) == 1u;
    __syncthreads();
    if (!last) return;
    __threadfence();
    const volatile float *pw = part + cell * 2 * hd, *pz = pw + hd;
    const size_t col = (size_t)blockIdx.x * hd;
    float *ow = w.out + (size_t)blockIdx.y * w.ldo + col, *oz = z.out + (size_t)blockIdx.y * z.ldo + col;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        att_store(ow + c, pw[c], w.beta);
        att_store(oz + c, pz[c], z.beta); /* after the window's store of the same thread: its sum */
    }
    if (threadIdx.x == 0) count[cell] = 0;
}

template <int NC, int CAP>
static cudaError_t att_pairs_launch(cudaStream_t st, const tc_att_item *w, const tc_att_item *z, int n, int n_head,
                                    int hd, const tc_att_item *dw, const tc_att_item *dz, float *part,
                                    unsigned *count) {
    if constexpr (CAP < TC_CUDA_ATT_PAIRS)
        if (n > CAP) return att_pairs_launch<NC, TC_CUDA_ATT_PAIRS>(st, w, z, n, n_head, hd, dw, dz, part, count);
    att_pairs_batch<CAP> b;
    int mq = 1;
    for (int i = 0; i < n; i++) {
        b.w[i] = w[i];
        b.z[i] = z[i];
        if (w[i].nq > mq) mq = w[i].nq;
    }
    size_t smem = att_row_smem(hd);
    if (part && count)
        return tc_launch(att_pairs_split_kernel<NC, CAP>, dim3((unsigned)n_head, (unsigned)mq, (unsigned)(2 * n)),
                         dim3(ROW_WARPS * 32), smem, st, b, dw, dz, hd, 1.0f / sqrtf((float)hd), part, count);
    dim3 grid((unsigned)n_head, (unsigned)mq, (unsigned)n);
    return tc_launch(att_pairs_kernel<NC, CAP>, grid, dim3(ROW_WARPS * 32), smem, st, b, dw, dz, hd,
                     1.0f / sqrtf((float)hd));
}

extern "C" cudaError_t tc_cuda_attention_pairs(cudaStream_t st, const tc_att_item *w, const tc_att_item *z, int n,
                                               int n_head, int head_dim, const tc_att_item *dw,
                                               const tc_att_item *dz, float *part, unsigned *count) {
    if (n <= 0 || n_head <= 0 || head_dim <= 0) return cudaSuccess;
    if (n > TC_CUDA_ATT_PAIRS || head_dim > TC_CUDA_ATT_MAX_HD || n_head > 65535) return cudaErrorInvalidValue;
    for (int i = 0; i < n; i++)
        if (w[i].nq < 1 || w[i].nq > TC_CUDA_ATT_ROW_MAX || (z[i].nq != 0 && z[i].nq != w[i].nq))
            return cudaErrorInvalidValue;
    if (!tc_cuda_attention_pairs_split_fits(n_head, head_dim) || n > TC_CUDA_PAIR_SPLIT_MAX) part = NULL, count = NULL;
    if (head_dim <= 32) return att_pairs_launch<1, TC_CUDA_BATCH_SMALL>(st, w, z, n, n_head, head_dim, dw, dz, part, count);
    if (head_dim <= 64) return att_pairs_launch<2, TC_CUDA_BATCH_SMALL>(st, w, z, n, n_head, head_dim, dw, dz, part, count);
    if (head_dim <= 128) return att_pairs_launch<4, TC_CUDA_BATCH_SMALL>(st, w, z, n, n_head, head_dim, dw, dz, part, count);
    return att_pairs_launch<8, TC_CUDA_BATCH_SMALL>(st, w, z, n, n_head, head_dim, dw, dz, part, count);
}

extern "C" int tc_cuda_attention_pairs_split_fits(int n_head, int head_dim) {
    return n_head > 0 && head_dim > 0 && n_head <= TC_CUDA_PAIR_HEADS &&
           (size_t)n_head * (size_t)head_dim <= TC_CUDA_PAIR_D;
}

/* ---- tensor-core tile kernel (sm_80+, head_dim <= 64): 3xTF32 ----
 * The sync's attentions (focused: 256 queries over all N keys; restore:
 * causal over 8192-row tiles) are ~45% of its device time on the CUDA-core
 * tile kernel (~10 TFLOP/s). Here both products -- S = Q K^T and O += P V --
 * run on the tensor cores (mma.sync m16n8k8, TF32 inputs, fp32
 * accumulators), each fp32 operand split as x = hi + lo (hi = x rounded to
 * TF32, lo = the rest rounded to TF32) and every product taken as
 * hi*hi + hi*lo + lo*hi: the dropped lo*lo term and lo's own rounding are
 * ~2^-21 of the product, so results track fp32 (the op test's 1e-10 NMSE
 * bound, as the CUDA-core kernel) where plain TF32 (2^-11) would not.
 * Block = 4 warps x 16 query rows (MMA_BQ = ATT_BQ, so the key splits and
 * the combine kernel are shared with the tile kernel); K/V tiles of 32 keys
 * staged in shared memory already split (hi, lo), rows padded to 8*KT + 4
 * words so every fragment load is bank-conflict free.
 * Fragments (PTX ISA, mma.m16n8k8 .tf32; g = lane / 4, t = lane % 4):
 *   A 16x8: a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4)
 *   B 8x8:  b0 (t, g)  b1 (t+4, g)
 *   C 16x8: c0 (g, 2t) c1 (g, 2t+1) c2 (g+8, 2t) c3 (g+8, 2t+1)
 * P V reuses S's accumulators as A without shuffles: the contraction runs
 * over keys, so A's column t is taken as key 2t and column t+4 as key
 * 2t+1 (a = {c0, c2, c1, c3}), and B's rows t, t+4 are V's keys 2t, 2t+1. */
#define MMA_WARPS 4
#define MMA_BQ (MMA_WARPS * 16)
#define MMA_BK 32
static_assert(MMA_BQ == ATT_BQ, "the key splits assume one query block size");

__device__ __forceinline__ uint32_t tf32_rna(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ void tf32_split(float x, uint32_t &hi, uint32_t &lo) {
    hi = tf32_rna(x);
    lo = tf32_rna(x - __uint_as_float(hi));
}
/* d += a b, one m16n8k8 TF32 product */
__device__ __forceinline__ void mma_tf32(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
/* a b in 3xTF32: hi*hi into dh, the small terms lo*hi + hi*lo into dl
 * (kept apart, so the big running sum is not re-rounded by each small one) */
__device__ __forceinline__ void mma_acc3(float (&dh)[4], float (&dl)[4], const uint32_t (&ah)[4],
                                         const uint32_t (&al)[4], uint32_t bh0, uint32_t bh1, uint32_t bl0,
                                         uint32_t bl1) {
    mma_tf32(dl, al[0], al[1], al[2], al[3], bh0, bh1);
    mma_tf32(dl, ah[0], ah[1], ah[2], ah[3], bl0, bl1);
    mma_tf32(dh, ah[0], ah[1], ah[2], ah[3], bh0, bh1);
}

// grid (ceil(nq / MMA_BQ), n_head, splits), block MMA_WARPS*32; head_dim <= 8*KT.
template <int KT>
__global__ static void __launch_bounds__(MMA_WARPS * 32)
    att_mma_kernel(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                   int nq, int nk, int hd, int64_t qpos0, int64_t kpos0, int causal, float beta, float scale,
                   int kchunk, float *part) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int HDP = 8 * KT, KS = HDP + 4;
    __shared__ uint32_t Kh[MMA_BK * KS], Kl[MMA_BK * KS], Vh[MMA_BK * KS], Vl[MMA_BK * KS];
    const int h = blockIdx.y, lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int q0 = blockIdx.x * MMA_BQ, r0 = q0 + w * 16;
    const size_t col = (size_t)h * hd;

    /* this warp's 16 query rows as A fragments, split once */
    uint32_t qh[KT][4], ql[KT][4];
#pragma unroll
    for (int kc = 0; kc < KT; kc++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int row = r0 + g + (i & 1) * 8, c = 8 * kc + t + (i >> 1) * 4;
            const float x = row < nq && c < hd ? q[(size_t)row * ldq + col + c] : 0.f;
            tf32_split(x, qh[kc][i], ql[kc][i]);
        }
    int lim[2];
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        const int row = r0 + g + 8 * ri;
        lim[ri] = row < nq ? att_key_limit(qpos0 + row, kpos0, nk, causal) : 0;
    }
    const int last = (q0 + MMA_BQ < nq ? q0 + MMA_BQ : nq) - 1;
    int nk_blk = att_key_limit(qpos0 + last, kpos0, nk, causal);
    const int kbeg = part ? (int)blockIdx.z * kchunk : 0;
    if (part && kbeg + kchunk < nk_blk) nk_blk = kbeg + kchunk;

    /* rows g (ri 0) and g + 8 (ri 1): running max, this thread's share of
     * the running sum (its columns; the quad's four are added at the end),
     * output accumulators as C fragments of 8-column tiles */
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    float o[KT][4];
#pragma unroll
    for (int nt = 0; nt < KT; nt++) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;

    for (int k0 = kbeg; k0 < nk_blk; k0 += MMA_BK) {
        const int tk = nk_blk - k0 < MMA_BK ? nk_blk - k0 : MMA_BK;
        __syncthreads(); /* previous tile consumed */
        for (int idx = threadIdx.x; idx < MMA_BK * HDP; idx += MMA_WARPS * 32) {
            const int r = idx / HDP, c = idx % HDP;
            const bool in = r < tk && c < hd;
            const float kx = in ? k[(size_t)(k0 + r) * ldk + col + c] : 0.f;
            const float vx = in ? v[(size_t)(k0 + r) * ldv + col + c] : 0.f;
            tf32_split(kx, Kh[r * KS + c], Kl[r * KS + c]);
            tf32_split(vx, Vh[r * KS + c], Vl[r * KS + c]);
        }
        __syncthreads();

        /* S = Q K^T for 16 rows x 32 keys: n-tile j holds keys 8j .. 8j+7;
         * the hi*hi terms and the two small ones in separate accumulators
         * (mma_acc3), added once in fp32 */
        float s[4][4], sc_[4][4];
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) s[j][i] = sc_[j][i] = 0.f;
#pragma unroll
        for (int kc = 0; kc < KT; kc++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int a = (8 * j + g) * KS + 8 * kc + t;
                mma_acc3(s[j], sc_[j], qh[kc], ql[kc], Kh[a], Kh[a + 4], Kl[a], Kl[a + 4]);
            }
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) s[j][i] += sc_[j][i];

        /* online softmax, per row half; s becomes the probabilities */
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            float mx = m[ri];
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int kk = 8 * j + 2 * t + e; /* key k0 + kk */
                    const bool vis = kk < tk && k0 + kk < lim[ri];
                    const float sc = vis ? s[j][2 * ri + e] * scale : -INFINITY;
                    s[j][2 * ri + e] = sc;
                    mx = fmaxf(mx, sc);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            /* mx = -inf: nothing visible to this row yet; p = 0, corr unused */
            const float corr = m[ri] == -INFINITY ? 0.f : expf(m[ri] - mx);
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float sc = s[j][2 * ri + e];
                    const float p = sc == -INFINITY ? 0.f : expf(sc - mx);
                    s[j][2 * ri + e] = p;
                    sum += p;
                }
            l[ri] = fmaf(l[ri], corr, sum);
            m[ri] = mx;
#pragma unroll
            for (int nt = 0; nt < KT; nt++) o[nt][2 * ri] *= corr, o[nt][2 * ri + 1] *= corr;
        }

        /* O += P V: key chunk j is S's n-tile j (see the mapping above).
         * The tile's product goes to fresh accumulators, added to o in fp32
         * (round to nearest): the tensor cores' own accumulation truncates,
         * and chained through every tile of a 64K-key attention its bias
         * grew to ~1e-5 of the result (measured: NMSE 2e-10 vs the CPU) */
        uint32_t ph[4][4], pl[4][4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            tf32_split(s[j][0], ph[j][0], pl[j][0]);
            tf32_split(s[j][2], ph[j][1], pl[j][1]);
            tf32_split(s[j][1], ph[j][2], pl[j][2]);
            tf32_split(s[j][3], ph[j][3], pl[j][3]);
        }
#pragma unroll
        for (int nt = 0; nt < KT; nt++) {
            float th[4] = {0.f, 0.f, 0.f, 0.f}, tl[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int a = (8 * j + 2 * t) * KS + g + 8 * nt;
                mma_acc3(th, tl, ph[j], pl[j], Vh[a], Vh[a + KS], Vl[a], Vl[a + KS]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++) o[nt][i] += th[i] + tl[i];
        }
    }

#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        l[ri] += __shfl_xor_sync(0xffffffffu, l[ri], 1);
        l[ri] += __shfl_xor_sync(0xffffffffu, l[ri], 2);
    }
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        const int row = r0 + g + 8 * ri;
        if (row >= nq) continue;
        if (part) { /* the split's partial softmax, as the tile kernel writes it */
            float *pp = part + (((size_t)blockIdx.z * nq + row) * gridDim.y + h) * (hd + 2);
            if (t == 0) pp[0] = m[ri], pp[1] = l[ri];
#pragma unroll
            for (int nt = 0; nt < KT; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int c = 8 * nt + 2 * t + e;
                    if (c < hd) pp[2 + c] = o[nt][2 * ri + e];
                }
        } else {
            const float inv = l[ri] > 0.f ? 1.0f / l[ri] : 0.f; /* no visible key: zero, as on the CPU */
            float *orow = out + (size_t)row * ldo + col;
#pragma unroll
            for (int nt = 0; nt < KT; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int c = 8 * nt + 2 * t + e;
                    if (c < hd) att_store(orow + c, o[nt][2 * ri + e] * inv, beta);
                }
        }
    }
#else
    __trap(); /* dispatched only on sm_80+ (att_mma_ok) */
#endif
}

/* merges the splits' partial softmaxes of one (query row, head) per block:
 * out = beta*out + sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M) */
__global__ static void att_combine_kernel(float *out, int ldo, const float *part, int nq, int hd, int splits,
                                          float beta) {
    const int row = blockIdx.x, h = blockIdx.y, H = gridDim.y;
    const size_t stride = (size_t)nq * H * (hd + 2);
    const float *p0 = part + ((size_t)row * H + h) * (hd + 2);
    float M = -INFINITY;
    for (int sp = 0; sp < splits; sp++) M = fmaxf(M, p0[sp * stride]);
    float L = 0.f;
    for (int sp = 0; sp < splits; sp++) {
        float ms = p0[sp * stride];
        if (ms != -INFINITY) L = fmaf(p0[sp * stride + 1], expf(ms - M), L);
    }
    const float inv = L > 0.f ? 1.0f / L : 0.f; /* no visible key: zero, as unsplit */
    float *o = out + (size_t)row * ldo + (size_t)h * hd;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float a = 0.f;
        for (int sp = 0; sp < splits; sp++) {
            float ms = p0[sp * stride];
            if (ms != -INFINITY) a = fmaf(p0[sp * stride + 2 + c], expf(ms - M), a);
        }
        att_store(o + c, a * inv, beta);
    }
}

/* Key splits for the tile kernel: enough blocks to give every SM
 * ATT_SPLIT_OCC of them when the query blocks x heads alone do not (the
 * sync's focused attention: Wz = 256 queries over all N keys is 16 x 12
 * blocks on paper-41m), each split at least ATT_SPLIT_MIN keys. 1: no split. */
#define ATT_SPLIT_OCC 8
#define ATT_SPLIT_MIN 1024
#define ATT_SPLIT_MAX 64
extern "C" int tc_cuda_attention_splits(int nq, int nk, int n_head, int sms) {
    if (nq <= TC_CUDA_ATT_ROW_MAX || nk < 2 * ATT_SPLIT_MIN || sms <= 0) return 1;
    const long blocks = (long)((nq + ATT_BQ - 1) / ATT_BQ) * n_head, want = (long)sms * ATT_SPLIT_OCC;
    if (blocks >= want) return 1;
    long s = (want + blocks - 1) / blocks, by_keys = nk / ATT_SPLIT_MIN;
    if (s > by_keys) s = by_keys;
    if (s > ATT_SPLIT_MAX) s = ATT_SPLIT_MAX;
    return s < 2 ? 1 : (int)s;
}

template <int NC>
static cudaError_t att_launch(cudaStream_t st, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                              const float *v, int ldv, int nq, int nk, int n_head, int hd, int64_t qpos0,
                              int64_t kpos0, int causal, float beta, int splits, float *part) {
    const float scale = 1.0f / sqrtf((float)hd);
    if (nq <= TC_CUDA_ATT_ROW_MAX) {
        dim3 grid((unsigned)n_head, (unsigned)nq);
        size_t smem = att_row_smem(hd);
        att_row_kernel<NC><<<grid, ROW_WARPS * 32, smem, st>>>(out, ldo, q, ldq, k, ldk, v, ldv, nk, hd, qpos0,
                                                                kpos0, causal, beta, scale);
    } else {
        if (splits < 2 || !part) splits = 1;
        /* keys per split, whole tiles */
        const int kchunk = ((nk + splits - 1) / splits + ATT_BK - 1) / ATT_BK * ATT_BK;
        dim3 grid((unsigned)((nq + ATT_BQ - 1) / ATT_BQ), (unsigned)n_head, (unsigned)splits);
        float *pt = splits > 1 ? part : NULL;
        if (hd <= 8 * MMA_KT_MAX && att_mma_on()) {
            const int kt = (hd + 7) / 8;
#define MMA_GO(KT)                                                                                                  \
    att_mma_kernel<KT><<<grid, MMA_WARPS * 32, 0, st>>>(out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, hd, qpos0, kpos0, \
                                                        causal, beta, scale, kchunk, pt)
            if (kt <= 1) MMA_GO(1);
            else if (kt <= 2) MMA_GO(2);
            else if (kt <= 4) MMA_GO(4);
            else if (kt <= 5) MMA_GO(5);
            else if (kt <= 6) MMA_GO(6);
            else MMA_GO(8);
#undef MMA_GO
        } else if (att_tile_fits(NC, hd)) {
            att_tile_kernel<NC><<<grid, ATT_WARPS * 32, att_tile_smem(hd), st>>>(
                out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, hd, qpos0, kpos0, causal, beta, scale, kchunk, pt);
        } else {
            /* the tile does not fit this device's shared memory (head_dim
             * 256 on sm_86 / sm_89: 99 KiB a block, the tile 137 KiB): the
             * row kernel, one block a query row (the same result up to
             * summation order; slower), never split; at most 65535 rows
             * a launch (grid.y), so longer ones go in chunks */
            for (int r0 = 0; r0 < nq; r0 += 65535) {
                const int m = nq - r0 < 65535 ? nq - r0 : 65535;
                att_row_kernel<NC><<<dim3((unsigned)n_head, (unsigned)m), ROW_WARPS * 32, att_row_smem(hd), st>>>(
                    out + (size_t)r0 * (size_t)ldo, ldo, q + (size_t)r0 * (size_t)ldq, ldq, k, ldk, v, ldv, nk, hd,
                    qpos0 + r0, kpos0, causal, beta, scale);
                const cudaError_t e = cudaGetLastError();
                if (e != cudaSuccess) return e;
            }
            return cudaSuccess;
        }
        if (splits > 1)
            att_combine_kernel<<<dim3((unsigned)nq, (unsigned)n_head), 64, 0, st>>>(out, ldo, part, nq, hd, splits,
                                                                                 beta);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t tc_cuda_attention(cudaStream_t st, float *out, int ldo, const float *q, int ldq,
                                         const float *k, int ldk, const float *v, int ldv, int nq, int nk,
                                         int n_head, int head_dim, int64_t qpos0, int64_t kpos0, int causal,
                                         float beta, int splits, float *part) {
    if (nq <= 0 || n_head <= 0 || head_dim <= 0) return cudaSuccess;
    if (head_dim > TC_CUDA_ATT_MAX_HD || n_head > 65535) return cudaErrorInvalidValue;
    if (head_dim <= 32)
        return att_launch<1>(st, out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, n_head, head_dim, qpos0, kpos0, causal,
                             beta, splits, part);
    if (head_dim <= 64)
        return att_launch<2>(st, out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, n_head, head_dim, qpos0, kpos0, causal,
                             beta, splits, part);
    if (head_dim <= 128)
        return att_launch<4>(st, out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, n_head, head_dim, qpos0, kpos0, causal,
                             beta, splits, part);
    return att_launch<8>(st, out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, n_head, head_dim, qpos0, kpos0, causal, beta,
                         splits, part);
}

/* The tile kernel's widest tile per class (att_tile_smem(32 NC)) is 40 KiB
 * at head_dim 64, 72.5 KiB at 128, 137 KiB at 256: past the default 48 KiB
 * a block, within the opt-in maximum of sm_80 (163 KiB) and sm_90 (227
 * KiB), not of sm_86 / sm_89 (99 KiB). Each class is raised to what the
 * device allows (its opt-in maximum less the kernel's static shared
 * memory), capped at its widest tile; att_tile_fits then sends a head_dim
 * whose tile is larger to the row kernel. */
template <int NC> static cudaError_t att_tile_setup(int dev, int optin) {
    cudaFuncAttributes fa;
    cudaError_t e = cudaFuncGetAttributes(&fa, att_tile_kernel<NC>);
    if (e != cudaSuccess) return e;
    const long limit = NC >= 4 ? optin : 48 * 1024, cap = limit - (long)fa.sharedSizeBytes;
    const long want = (long)att_tile_smem(32 * NC), v = want < cap ? want : cap;
    if (v <= 0) { /* nothing fits: every head_dim of the class to the row kernel */
        if (dev >= 0 && dev < 64) g_att_tile_smem[dev][att_tile_class(NC)] = -1;
        return cudaSuccess;
    }
    if (NC >= 4 &&
        (e = cudaFuncSetAttribute(att_tile_kernel<NC>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)v)) !=
            cudaSuccess)
        return e;
    if (dev >= 0 && dev < 64) g_att_tile_smem[dev][att_tile_class(NC)] = (int)v;
    return cudaSuccess;
}

extern "C" int tc_cuda_attention_tile_fits(int head_dim) {
    if (head_dim <= 0 || head_dim > TC_CUDA_ATT_MAX_HD) return 0;
    return att_tile_fits(head_dim <= 32 ? 1 : head_dim <= 64 ? 2 : head_dim <= 128 ? 4 : 8, head_dim);
}

extern "C" cudaError_t tc_cuda_attention_setup(int mma) {
    cudaError_t e;
    if ((e = tc_cuda_arch_bit(att_mma_kernel<5>, 8, 80, &g_att_mma_devs)) != cudaSuccess) return e;
    g_att_mma_want = mma != 0;
    int dev = 0, optin = 0;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) != cudaSuccess)
        return e;
    if ((e = att_tile_setup<1>(dev, optin)) != cudaSuccess || (e = att_tile_setup<2>(dev, optin)) != cudaSuccess ||
        (e = att_tile_setup<4>(dev, optin)) != cudaSuccess)
        return e;
    return att_tile_setup<8>(dev, optin);
}
