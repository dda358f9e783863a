/* bench_persist — the persistent hit-step probe (docs/gpu.md "Next: a
 * persistent hit step"): does one co-resident kernel, with a device-side
 * barrier between phases, run a batch-1 hit step's chain of dependent
 * GEMVs closer to its weight-bytes floor than one kernel per phase?
 *
 * The chain has paper-41m's shapes (d 432, FFN 1280, 8 layers, vocab
 * 50,257, fp32 weights: 164 MB) and a hit step's phases per layer:
 *   P0 LayerNorm + QKV linear   [3d x d]
 *   P1 a stand-in for attention (elementwise over d, reads q, k, v)
 *   P2 out-projection + residual [d x d]
 *   P3 LayerNorm + w1|w3        [2f x d]
 *   P4 SwiGLU + w2 + residual   [d x f]
 * then the final LayerNorm + head [V x d]: 41 phases, 40 dependencies.
 * It is not the model (no window, no zip, no RoPE): it measures the
 * structure, so the model's kernels are not touched until it says the
 * rewrite pays.
 *
 * Three ways to run the same per-column arithmetic (one warp a column, the
 * input vector in shared memory, the same FMAs in the same order), so the
 * logits must agree bit for bit, and with a double-precision host
 * reference to 1e-4 of their scale (exit 1 otherwise):
 *   graph    one kernel a phase, captured in a CUDA graph, programmatic
 *            dependent launch on sm_90 (each kernel asks its first weight
 *            row into L2 before it waits): today's structure
 *   persist  one cooperative kernel of #SM x k blocks, a sense-reversing
 *            grid barrier between phases, each warp asking the next
 *            phase's first row into L2 before it arrives; launched
 *            directly and from a graph (where capture allows)
 * and a read kernel over 1 GiB for the bandwidth, in the same process.
 * Prints one line per variant: us a step (median of --reps batches of
 * --iters steps), and x over the floor (weight bytes / bandwidth).
 *
 * Without a device: "SKIPPED: no CUDA device", exit 77. */
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "bench_persist: %s: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

enum { WARPS = 8, THREADS = WARPS * 32, MAXK = 1280 };

struct Layer {
    const float *ln1w, *ln1b, *wqkv, *bqkv, *wo, *bo, *ln2w, *ln2b, *w13, *w2, *b2;
};
struct Net {
    int d, f, v, L;
    Layer layer[8];
    const float *lnfw, *lnfb, *head;
    const float *x0; /* the step's input row */
    float *x, *qkv, *att, *h13, *logits;
};
struct Barrier { /* count and gen on lines of their own: the spinners poll gen */
    alignas(128) unsigned count;
    alignas(128) unsigned gen;
};
/* the chain's tensors: in constant memory, so a phase's dynamic index
 * into the layers costs a constant-cache read in both kernels (a kernel
 * parameter indexed at run time would be copied to local memory) */
__constant__ Net c_net;

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    float s = 0.f;
    for (int i = 0; i < WARPS; i++) s += red[i];
    return s;
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void prefetch_row(const float *w, int k) {
    const int lane = threadIdx.x & 31;
    for (int off = lane * 32; off < k; off += 32 * 32) asm volatile("prefetch.global.L2 [%0];" ::"l"(w + off));
}
__device__ __forceinline__ unsigned ld_acquire(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_release(unsigned *p, unsigned v) {
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
/* every block of the grid (all co-resident: cooperative launch) arrives
 * before any leaves; the last to arrive resets the count and flips the
 * generation, so the barrier needs no reset between launches */
__device__ __forceinline__ void grid_barrier(Barrier *b) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned g = ld_acquire(&b->gen);
        __threadfence();
        if (atomicAdd(&b->count, 1u) == gridDim.x - 1) {
            b->count = 0;
            __threadfence();
            st_release(&b->gen, g + 1);
        } else {
            /* relaxed polls (an acquire may invalidate L1 each time),
             * one acquire once it moved */
            while (*(volatile unsigned *)&b->gen == g) __nanosleep(32);
            (void)ld_acquire(&b->gen);
        }
    }
    __syncthreads();
}

/* a warp's dot of weight row w [k] with xs [k] (shared): 16-byte loads,
 * four strides issued before their FMAs, a warp sum (k % 4 == 0) */
__device__ __forceinline__ float dot_row(const float *__restrict__ w, const float *xs, int k) {
    const int lane = threadIdx.x & 31;
    float acc = 0.f;
    for (int t0 = lane * 4; t0 < k; t0 += 4 * 128) {
        float4 r[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int t = t0 + u * 128;
            r[u] = t < k ? __ldg((const float4 *)(w + t)) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int t = t0 + u * 128;
            if (t < k) {
                acc = fmaf(r[u].x, xs[t], acc);
                acc = fmaf(r[u].y, xs[t + 1], acc);
                acc = fmaf(r[u].z, xs[t + 2], acc);
                acc = fmaf(r[u].w, xs[t + 3], acc);
            }
        }
    }
    return warp_sum(acc);
}

/* the same for two rows at once (a warp with several columns keeps two
 * rows' loads in flight): each sum's FMAs in dot_row's order, so the bits
 * are dot_row's */
__device__ __forceinline__ void dot_row2(const float *__restrict__ w0, const float *__restrict__ w1,
                                         const float *xs, int k, float &s0, float &s1) {
    const int lane = threadIdx.x & 31;
    float a0 = 0.f, a1 = 0.f;
    for (int t0 = lane * 4; t0 < k; t0 += 4 * 128) {
        float4 r0[4], r1[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int t = t0 + u * 128;
            r0[u] = t < k ? __ldg((const float4 *)(w0 + t)) : make_float4(0.f, 0.f, 0.f, 0.f);
            r1[u] = t < k ? __ldg((const float4 *)(w1 + t)) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int t = t0 + u * 128;
            if (t < k) {
                a0 = fmaf(r0[u].x, xs[t], a0), a1 = fmaf(r1[u].x, xs[t], a1);
                a0 = fmaf(r0[u].y, xs[t + 1], a0), a1 = fmaf(r1[u].y, xs[t + 1], a1);
                a0 = fmaf(r0[u].z, xs[t + 2], a0), a1 = fmaf(r1[u].z, xs[t + 2], a1);
                a0 = fmaf(r0[u].w, xs[t + 3], a0), a1 = fmaf(r1[u].w, xs[t + 3], a1);
            }
        }
    }
    s0 = warp_sum(a0), s1 = warp_sum(a1);
}

enum Pre { PRE_NONE, PRE_LN, PRE_SWIGLU };
/* One linear phase: out[j] = (res ? res[j] : 0) + (bias ? bias[j] : 0) +
 * W[j] . pre(in), for the columns j = gw, gw + nw, ... of the calling warp;
 * the block's input transform into xs first, when any of its warps has a
 * column. */
__device__ void linear_phase(Pre pre, const float *in, const float *lw, const float *lb, const float *W,
                             const float *bias, const float *res, float *out, int m, int k, int gw0, int gw_step,
                             int nw, float *xs, float *red) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    /* does this block have a column? (gw of warp 0 is the block's smallest) */
    if (gw0 >= m) return;
    if (pre == PRE_SWIGLU) {
        for (int t = threadIdx.x; t < k; t += blockDim.x) {
            const float a = in[t], b = in[k + t];
            xs[t] = a / (1.0f + expf(-a)) * b;
        }
        __syncthreads();
    } else {
        for (int t = threadIdx.x; t < k; t += blockDim.x) xs[t] = in[t];
        __syncthreads();
        if (pre == PRE_LN) {
            float s = 0.f;
            for (int t = threadIdx.x; t < k; t += blockDim.x) s += xs[t];
            const float mean = block_sum(s, red) / (float)k;
            float q = 0.f;
            for (int t = threadIdx.x; t < k; t += blockDim.x) {
                const float c = xs[t] - mean;
                q = fmaf(c, c, q);
            }
            const float rs = 1.0f / sqrtf(block_sum(q, red) / (float)k + 1e-5f);
            __syncthreads();
            for (int t = threadIdx.x; t < k; t += blockDim.x) xs[t] = fmaf((xs[t] - mean) * rs, lw[t], lb[t]);
            __syncthreads();
        }
    }
    int j = gw0 + warp * gw_step;
    for (; j + nw < m; j += 2 * nw) {
        float s0, s1;
        dot_row2(W + (size_t)j * k, W + (size_t)(j + nw) * k, xs, k, s0, s1);
        if (lane == 0) {
            out[j] = (res ? res[j] : 0.f) + (bias ? bias[j] : 0.f) + s0;
            out[j + nw] = (res ? res[j + nw] : 0.f) + (bias ? bias[j + nw] : 0.f) + s1;
        }
    }
    if (j < m) {
        const float s = dot_row(W + (size_t)j * k, xs, k);
        if (lane == 0) out[j] = (res ? res[j] : 0.f) + (bias ? bias[j] : 0.f) + s;
    }
}
/* the stand-in for attention: att = v * tanh(q * k), elementwise */
__device__ void att_phase(const float *qkv, float *att, int d, int t0, int nt) {
    for (int t = t0; t < d; t += nt) att[t] = qkv[2 * d + t] * tanhf(qkv[t] * qkv[d + t]);
}

/* phase p of the step (0 .. 5L): the call both kernels make */
__device__ void phase(int p, int gw0, int gw_step, int nw, int t0, int nt, float *xs, float *red) {
    const Net &n = c_net;
    const int d = n.d, f = n.f;
    if (p == 5 * n.L) {
        linear_phase(PRE_LN, n.x, n.lnfw, n.lnfb, n.head, nullptr, nullptr, n.logits, n.v, d, gw0, gw_step, nw, xs,
                     red);
        return;
    }
    const Layer &l = n.layer[p / 5];
    const float *x = p / 5 == 0 ? n.x0 : n.x;
    switch (p % 5) {
    case 0: linear_phase(PRE_LN, x, l.ln1w, l.ln1b, l.wqkv, l.bqkv, nullptr, n.qkv, 3 * d, d, gw0, gw_step, nw, xs, red); break;
    case 1: att_phase(n.qkv, n.att, d, t0, nt); break;
    case 2: linear_phase(PRE_NONE, n.att, nullptr, nullptr, l.wo, l.bo, x, n.x, d, d, gw0, gw_step, nw, xs, red); break;
    case 3: linear_phase(PRE_LN, n.x, l.ln2w, l.ln2b, l.w13, nullptr, nullptr, n.h13, 2 * f, d, gw0, gw_step, nw, xs, red); break;
    case 4: linear_phase(PRE_SWIGLU, n.h13, nullptr, nullptr, l.w2, l.b2, n.x, n.x, d, f, gw0, gw_step, nw, xs, red); break;
    }
}
/* phase p's weight row for global warp gw (nullptr: none), and its k */
__device__ const float *phase_row(int p, int gw, int &k) {
    const Net &n = c_net;
    const int d = n.d, f = n.f;
    if (p >= 5 * n.L) return k = d, gw < n.v ? n.head + (size_t)gw * d : nullptr;
    const Layer &l = n.layer[p / 5];
    switch (p % 5) {
    case 0: return k = d, gw < 3 * d ? l.wqkv + (size_t)gw * d : nullptr;
    case 2: return k = d, gw < d ? l.wo + (size_t)gw * d : nullptr;
    case 3: return k = d, gw < 2 * f ? l.w13 + (size_t)gw * d : nullptr;
    case 4: return k = f, gw < d ? l.w2 + (size_t)gw * f : nullptr;
    default: return k = 0, nullptr;
    }
}

/* graph: phase p as its own kernel, one column a warp */
__global__ __launch_bounds__(THREADS) void phase_kernel(int p) {
    __shared__ __align__(16) float xs[MAXK];
    __shared__ float red[WARPS];
    const int gw0 = blockIdx.x * WARPS;
    int k;
    const float *row = phase_row(p, gw0 + (threadIdx.x >> 5), k);
    if (row) prefetch_row(row, k);
    pdl_wait();
    pdl_trigger();
    phase(p, gw0, 1, gridDim.x * WARPS, blockIdx.x * blockDim.x + threadIdx.x, gridDim.x * blockDim.x, xs, red);
}

/* persist: every phase in one kernel; global warp gw = warp * gridDim.x +
 * block (columns 0 .. grid-1 land on different blocks, so a narrow phase
 * spreads over the multiprocessors) */
__global__ __launch_bounds__(THREADS, 4) void persist_kernel(Barrier *bar, int prefetch) {
    __shared__ __align__(16) float xs[MAXK];
    __shared__ float red[WARPS];
    const int nw = gridDim.x * WARPS, gw = (threadIdx.x >> 5) * gridDim.x + blockIdx.x;
    const int np = 5 * c_net.L + 1;
    for (int p = 0; p < np; p++) {
        phase(p, blockIdx.x, gridDim.x, nw, blockIdx.x * blockDim.x + threadIdx.x, gridDim.x * blockDim.x, xs, red);
        if (p + 1 < np) {
            int k;
            const float *row = prefetch ? phase_row(p + 1, gw, k) : nullptr;
            if (row) prefetch_row(row, k);
            grid_barrier(bar);
        }
    }
}

__global__ void read_kernel(const float4 *a, size_t n, float *sink) {
    float s = 0.f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float4 v = __ldg(a + i);
        s += v.x + v.y + v.z + v.w;
    }
    if (s == 12345.678f) *sink = s; /* keeps the loads */
}

/* ---- host ---- */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float urand() { /* splitmix64 -> [-1, 1) */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
struct HostT {
    std::vector<float> h;
    float *dp = nullptr;
};
static std::vector<HostT *> g_all;
static size_t g_weight_bytes;
static const float *tensor(HostT &t, size_t n, float scale, float bias, bool weight) {
    t.h.resize(n);
    for (auto &v : t.h) v = bias + scale * urand();
    CK(cudaMalloc(&t.dp, n * sizeof(float)));
    CK(cudaMemcpy(t.dp, t.h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    if (weight) g_weight_bytes += n * sizeof(float);
    g_all.push_back(&t);
    return t.dp;
}

struct HL {
    HostT ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, w13, w2, b2;
};

/* the step in double on the host, from the same fp32 values */
static std::vector<double> reference(const Net &n, HL *hl, HostT &lnfw, HostT &lnfb, HostT &head, HostT &x0) {
    const int d = n.d, f = n.f;
    std::vector<double> x(x0.h.begin(), x0.h.end()), xs(std::max(d, f)), qkv(3 * d), att(d), h13(2 * f);
    auto ln = [&](const std::vector<double> &in, HostT &w, HostT &b) {
        double m = 0, q = 0;
        for (int t = 0; t < d; t++) m += in[t];
        m /= d;
        for (int t = 0; t < d; t++) q += (in[t] - m) * (in[t] - m);
        const double rs = 1.0 / std::sqrt(q / d + 1e-5);
        for (int t = 0; t < d; t++) xs[t] = (in[t] - m) * rs * w.h[t] + b.h[t];
    };
    auto lin = [&](const HostT &W, int m, int k, const HostT *bias, std::vector<double> &out, const double *res) {
        for (int j = 0; j < m; j++) {
            double s = (res ? res[j] : 0) + (bias ? bias->h[j] : 0);
            for (int t = 0; t < k; t++) s += (double)W.h[(size_t)j * k + t] * xs[t];
            out[j] = s;
        }
    };
    for (int li = 0; li < n.L; li++) {
        HL &l = hl[li];
        ln(x, l.ln1w, l.ln1b);
        lin(l.wqkv, 3 * d, d, &l.bqkv, qkv, nullptr);
        for (int t = 0; t < d; t++) att[t] = qkv[2 * d + t] * std::tanh(qkv[t] * qkv[d + t]);
        for (int t = 0; t < d; t++) xs[t] = att[t];
        std::vector<double> xr = x;
        lin(l.wo, d, d, &l.bo, x, xr.data());
        ln(x, l.ln2w, l.ln2b);
        lin(l.w13, 2 * f, d, nullptr, h13, nullptr);
        for (int t = 0; t < f; t++) xs[t] = h13[t] / (1.0 + std::exp(-h13[t])) * h13[f + t];
        xr = x;
        lin(l.w2, d, f, &l.b2, x, xr.data());
    }
    ln(x, lnfw, lnfb);
    std::vector<double> logits(n.v);
    lin(head, n.v, d, nullptr, logits, nullptr);
    return logits;
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main(int argc, char **argv) {
    int reps = 5, iters = 200, dev = 0;
    for (int i = 1; i < argc; i++) {
        char *end = nullptr;
        long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : -1;
        const bool ok = end && *end == '\0' && v > 0 && v <= 100000;
        if (!strcmp(argv[i], "--reps") && ok) reps = (int)v, i++;
        else if (!strcmp(argv[i], "--iters") && ok) iters = (int)v, i++;
        else if (!strcmp(argv[i], "--device") && i + 1 < argc && sscanf(argv[i + 1], "cuda:%d", &dev) == 1) i++;
        else {
            fprintf(stderr, "bench_persist: bad argument '%s' (usage: bench_persist [--reps N] [--iters N] [--device cuda:N])\n",
                    argv[i]);
            return 2;
        }
    }
    int ndev = 0;
    const cudaError_t de = cudaGetDeviceCount(&ndev);
    /* no device, or no driver that can run it (a build machine: the CUDA
     * libraries without a GPU answer "insufficient driver"), as the other
     * gpu tests; any other error is a failure */
    if (de == cudaErrorNoDevice || de == cudaErrorInsufficientDriver || (de == cudaSuccess && ndev == 0)) {
        printf("SKIPPED: no CUDA device (%s)\n", de == cudaSuccess ? "none found" : cudaGetErrorString(de));
        return 77;
    }
    if (de != cudaSuccess) {
        fprintf(stderr, "bench_persist: cudaGetDeviceCount: %s\n", cudaGetErrorString(de));
        return 1;
    }
    if (dev < 0 || dev >= ndev) {
        fprintf(stderr, "bench_persist: --device cuda:%d: the machine has %d device(s)\n", dev, ndev);
        return 2;
    }
    CK(cudaSetDevice(dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    int coop = 0;
    CK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
    printf("device: %s, sm_%d%d, %d SMs, L2 %d MB, cooperative launch %s\n", prop.name, prop.major, prop.minor,
           prop.multiProcessorCount, prop.l2CacheSize >> 20, coop ? "yes" : "no");

    /* paper-41m's shapes */
    Net n = {};
    n.d = 432, n.f = 1280, n.v = 50257, n.L = 8;
    const int d = n.d, f = n.f;
    static HL hl[8];
    static HostT lnfw, lnfb, head, x0, x, qkv, att, h13, logits;
    const float sd = 1.0f / std::sqrt((float)d), sf = 1.0f / std::sqrt((float)f);
    for (int li = 0; li < n.L; li++) {
        HL &h = hl[li];
        Layer &l = n.layer[li];
        l.ln1w = tensor(h.ln1w, d, 0.1f, 1.0f, true);
        l.ln1b = tensor(h.ln1b, d, 0.1f, 0.f, true);
        l.wqkv = tensor(h.wqkv, (size_t)3 * d * d, sd, 0.f, true);
        l.bqkv = tensor(h.bqkv, 3 * d, 0.1f, 0.f, true);
        l.wo = tensor(h.wo, (size_t)d * d, sd, 0.f, true);
        l.bo = tensor(h.bo, d, 0.1f, 0.f, true);
        l.ln2w = tensor(h.ln2w, d, 0.1f, 1.0f, true);
        l.ln2b = tensor(h.ln2b, d, 0.1f, 0.f, true);
        l.w13 = tensor(h.w13, (size_t)2 * f * d, sd, 0.f, true);
        l.w2 = tensor(h.w2, (size_t)d * f, sf, 0.f, true);
        l.b2 = tensor(h.b2, d, 0.1f, 0.f, true);
    }
    n.lnfw = tensor(lnfw, d, 0.1f, 1.0f, true);
    n.lnfb = tensor(lnfb, d, 0.1f, 0.f, true);
    n.head = tensor(head, (size_t)n.v * d, sd, 0.f, true);
    n.x0 = tensor(x0, d, 1.0f, 0.f, false);
    n.x = (float *)tensor(x, d, 0.f, 0.f, false);
    n.qkv = (float *)tensor(qkv, 3 * d, 0.f, 0.f, false);
    n.att = (float *)tensor(att, d, 0.f, 0.f, false);
    n.h13 = (float *)tensor(h13, 2 * f, 0.f, 0.f, false);
    n.logits = (float *)tensor(logits, n.v, 0.f, 0.f, false);
    CK(cudaMemcpyToSymbol(c_net, &n, sizeof n));
    const int np = 5 * n.L + 1;
    printf("chain: %d phases, weights %.1f MB fp32\n", np, g_weight_bytes / 1e6);

    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    /* time(): median over reps of (iters launches of fn) / iters, in us */
    auto time_us = [&](auto fn) {
        fn(); /* warm */
        CK(cudaStreamSynchronize(st));
        std::vector<double> r;
        for (int rep = 0; rep < reps; rep++) {
            CK(cudaEventRecord(e0, st));
            for (int i = 0; i < iters; i++) fn();
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            float ms = 0.f;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            r.push_back(ms * 1000.0 / iters);
        }
        return median(r);
    };

    /* bandwidth: a read of 1 GiB */
    const size_t rn = (size_t)1 << 28; /* floats: 1 GiB */
    float4 *rbuf;
    float *sink;
    CK(cudaMalloc(&rbuf, rn * sizeof(float)));
    CK(cudaMemset(rbuf, 0, rn * sizeof(float)));
    CK(cudaMalloc(&sink, sizeof(float)));
    CK(cudaDeviceSynchronize()); /* the setup ran on the legacy stream; st does not wait for it */
    const unsigned rblocks = prop.multiProcessorCount * 8;
    const double read_us = time_us([&] { read_kernel<<<rblocks, 512, 0, st>>>(rbuf, rn / 4, sink); });
    CK(cudaGetLastError());
    const double bw = rn * sizeof(float) / (read_us * 1e-6); /* bytes/s */
    const double floor_us = g_weight_bytes / bw * 1e6;
    printf("read bandwidth: %.0f GB/s; floor (weights / bandwidth): %.1f us a step\n", bw / 1e9, floor_us);

    std::vector<double> want = reference(n, hl, lnfw, lnfb, head, x0);
    double scale = 0;
    for (double v : want) scale = std::max(scale, std::fabs(v));
    std::vector<float> got(n.v), first(n.v);
    int fail = 0;
    auto check = [&](const char *what, bool bitwise_vs_first) {
        CK(cudaStreamSynchronize(st));
        CK(cudaMemcpy(got.data(), n.logits, n.v * sizeof(float), cudaMemcpyDeviceToHost));
        double err = 0;
        bool finite = true;
        for (int j = 0; j < n.v; j++) {
            finite = finite && std::isfinite(got[j]);
            err = std::max(err, std::fabs(got[j] - want[j]));
        }
        bool ok = finite && err <= 1e-4 * scale;
        size_t diff = 0;
        if (bitwise_vs_first) {
            for (int j = 0; j < n.v; j++) diff += memcmp(&got[j], &first[j], sizeof(float)) != 0;
            ok = ok && diff == 0;
        } else {
            first = got;
        }
        printf("  check %-24s max |err| %.3g (scale %.3g)%s%s%s\n", what, err, scale, finite ? "" : ", NON-FINITE",
               bitwise_vs_first ? (diff ? ", DIFFERS from graph" : ", bitwise = graph") : "", ok ? "" : "  FAIL");
        fail |= !ok;
    };

    /* graph: one kernel a phase, PDL where sm_90 */
    const bool pdl = prop.major >= 9;
    auto launch_phase = [&](int p) {
        int m;
        if (p == 5 * n.L) m = n.v;
        else switch (p % 5) {
            case 0: m = 3 * d; break;
            case 1: m = 0; break;
            case 3: m = 2 * f; break;
            default: m = d;
            }
        const unsigned blocks = m ? (m + WARPS - 1) / WARPS : (d + THREADS - 1) / THREADS;
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(blocks), cfg.blockDim = dim3(THREADS), cfg.stream = st;
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = at, cfg.numAttrs = pdl ? 1 : 0;
        CK(cudaLaunchKernelEx(&cfg, phase_kernel, p));
    };
    cudaGraph_t g;
    cudaGraphExec_t gx;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int p = 0; p < np; p++) launch_phase(p);
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&gx, g, 0));
    CK(cudaGraphLaunch(gx, st));
    check("graph", false);
    const double graph_us = time_us([&] { CK(cudaGraphLaunch(gx, st)); });
    check("graph, after timing", true);
    printf("graph    (%d kernels%s): %7.1f us a step, %.2fx the floor\n", np, pdl ? ", PDL" : "", graph_us,
           graph_us / floor_us);

    /* persist */
    if (!coop) {
        printf("persist: SKIPPED (no cooperative launch on this device)\n");
        printf("summary: floor %.1f us, graph %.1f us (%.2fx), persist not run (no cooperative launch)\n", floor_us,
               graph_us, graph_us / floor_us);
        return fail;
    }
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persist_kernel, THREADS, 0));
    printf("persist: up to %d blocks of %d threads a multiprocessor\n", per_sm, THREADS);
    if (per_sm < 1) { /* registers or threads a block beyond what one multiprocessor holds */
        printf("summary: floor %.1f us, graph %.1f us (%.2fx), persist not run (0 blocks fit a multiprocessor)\n",
               floor_us, graph_us, graph_us / floor_us);
        return fail;
    }
    Barrier *bar;
    CK(cudaMalloc(&bar, sizeof *bar));
    CK(cudaMemset(bar, 0, sizeof *bar));
    double best = 1e30;
    for (int k = 1; k <= std::min(per_sm, 4); k++)
        for (int pf = 0; pf <= 1; pf++) {
            const unsigned blocks = prop.multiProcessorCount * k;
            cudaLaunchConfig_t cfg = {};
            cfg.gridDim = dim3(blocks), cfg.blockDim = dim3(THREADS), cfg.stream = st;
            cudaLaunchAttribute at[1];
            at[0].id = cudaLaunchAttributeCooperative;
            at[0].val.cooperative = 1;
            cfg.attrs = at, cfg.numAttrs = 1;
            auto go = [&] { CK(cudaLaunchKernelEx(&cfg, persist_kernel, bar, pf)); };
            CK(cudaMemsetAsync(n.logits, 0, n.v * sizeof(float), st));
            go();
            char what[64];
            snprintf(what, sizeof what, "persist %ux%d pf%d", blocks / prop.multiProcessorCount, THREADS, pf);
            check(what, true);
            const double us = time_us(go);
            check("  after timing", true);
            best = std::min(best, us);
            printf("persist  (%4u blocks, prefetch %d, direct): %7.1f us a step, %.2fx the floor\n", blocks, pf, us,
                   us / floor_us);
            /* the same from a graph, where a cooperative launch can be captured */
            cudaGraph_t pg;
            cudaGraphExec_t pgx;
            const cudaError_t be = cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
            const cudaError_t le = be == cudaSuccess ? cudaLaunchKernelEx(&cfg, persist_kernel, bar, pf) : be;
            pg = nullptr;
            const cudaError_t ce = be == cudaSuccess ? cudaStreamEndCapture(st, &pg) : be;
            const cudaError_t ie = le == cudaSuccess && ce == cudaSuccess ? cudaGraphInstantiate(&pgx, pg, 0) : ce;
            if (be != cudaSuccess || le != cudaSuccess || ce != cudaSuccess || ie != cudaSuccess) {
                (void)cudaGetLastError();
                if (pg) (void)cudaGraphDestroy(pg);
                printf("persist  (%4u blocks, prefetch %d, graph): capture not supported (%s)\n", blocks, pf,
                       cudaGetErrorString(be != cudaSuccess ? be : le != cudaSuccess ? le : ce != cudaSuccess ? ce : ie));
                continue;
            }
            CK(cudaMemsetAsync(n.logits, 0, n.v * sizeof(float), st));
            CK(cudaGraphLaunch(pgx, st));
            check("  from a graph", true);
            const double gus = time_us([&] { CK(cudaGraphLaunch(pgx, st)); });
            check("  graph, after timing", true);
            best = std::min(best, gus);
            printf("persist  (%4u blocks, prefetch %d, graph):  %7.1f us a step, %.2fx the floor\n", blocks, pf, gus,
                   gus / floor_us);
            CK(cudaGraphExecDestroy(pgx));
            CK(cudaGraphDestroy(pg));
        }
    printf("summary: floor %.1f us, graph %.1f us (%.2fx), best persist %.1f us (%.2fx): persist/graph = %.2f\n",
           floor_us, graph_us, graph_us / floor_us, best, best / floor_us, best / graph_us);
    printf("%s\n", fail ? "FAILED: the logits differ (see the checks above)" : "checks: all passed");
    return fail;
}
