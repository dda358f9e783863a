/* llama_bench: time llama.cpp on one GGUF the way `tconst bench itl` times
 * tconst, through the libllama C API of the prebuilt llama.cpp that the npm
 * package @node-llama-cpp/linux-x64 ships (built against that release's own
 * include/llama.h, taken from node-llama-cpp's llama/gitRelease.bundle).
 *
 * For each context N in --ctx, in a fresh llama_context sized N + steps:
 *   prefill_s  TTFT: llama_decode of the N-token prompt (n_batch chunks,
 *              logits of the last token only) + the greedy pick of the last
 *              token's logits
 *   step p50/p90/mean  --steps single-token decodes after it, each timed
 *              alone: llama_decode(1 token) + logits + argmax over the vocab
 *              (tconst's bench steps also take the top 1)
 *   kv_alloc_B the KV cache as allocated for this context (llama_n_ctx cells
 *              x layers x (K + V) row bytes of --kv type)
 *   kv_per_tok_B per token; kv_at_N_B = N x that (a context sized to N)
 *   rss_MiB    process VmRSS after the steps (model mmap included)
 *
 * Output: one line per N (fixed columns) and, with --csv, CSV rows.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

static int g_verbose = 0;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "llama_bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void log_cb(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (g_verbose || level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, int n, double p) {
    if (n == 0) return NAN;
    double r = p * (n - 1);
    int i = (int)r;
    if (i + 1 >= n) return sorted[n - 1];
    return sorted[i] + (r - i) * (sorted[i + 1] - sorted[i]);
}

static long parse_size(const char *s) {
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    if (e == s || errno) return -1;
    if (*e == 'K' || *e == 'k') v *= 1024, e++;
    else if (*e == 'M' || *e == 'm') v *= 1024 * 1024, e++;
    if (*e || v < 1 || v > (1L << 40)) return -1;
    return (long)v;
}

static double rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double r = NAN;
    if (!f) return r;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) r = atof(line + 6) / 1024.0;
    fclose(f);
    return r;
}

static bool no_progress(float p, void *ud) {
    (void)p;
    (void)ud;
    return true;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void usage(FILE *o) {
    fprintf(o,
            "usage: llama_bench --model FILE.gguf [options]\n"
            "  --ctx LIST       contexts, e.g. 1K,16K,64K (default 1K)\n"
            "  --steps N        timed single-token decodes per context (default 64, >= 1)\n"
            "  --threads T      llama.cpp threads for decode and prefill (default 2)\n"
            "  --batch B        prompt chunk (n_batch, default 2048); --ubatch U (default 512)\n"
            "  --kv f16|f32     KV cache type (default f16, llama.cpp's default)\n"
            "  --flash auto|on|off  flash attention (default auto, llama.cpp's default)\n"
            "  --backends DIR   directory of libggml-cpu-*.so (default: $LLAMA_BACKENDS_DIR)\n"
            "  --budget S       skip a context whose predicted prefill (the last one's x (N/N_last)^2)\n"
            "                   exceeds S seconds (default 0: never skip)\n"
            "  --label S        first CSV column (default: the model file name)\n"
            "  --csv FILE       also append CSV rows (header written if the file is new)\n"
            "  --info           print llama.cpp's system info and default params, then exit\n"
            "  -v               llama.cpp's own log\n");
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *ctx_list = "1K", *csv = NULL, *label = NULL;
    const char *backends = getenv("LLAMA_BACKENDS_DIR");
    int steps = 64, threads = 2, info = 0;
    double budget = 0;
    long n_batch = 2048, n_ubatch = 512;
    enum ggml_type kv = GGML_TYPE_F16;
    enum llama_flash_attn_type fa = LLAMA_FLASH_ATTN_TYPE_AUTO;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (die("%s needs a value (see --help)", a), ""))
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--model")) model_path = NEXT();
        else if (!strcmp(a, "--ctx")) ctx_list = NEXT();
        else if (!strcmp(a, "--csv")) csv = NEXT();
        else if (!strcmp(a, "--label")) label = NEXT();
        else if (!strcmp(a, "--backends")) backends = NEXT();
        else if (!strcmp(a, "--info")) info = 1;
        else if (!strcmp(a, "-v")) g_verbose = 1;
        else if (!strcmp(a, "--budget")) {
            char *e;
            const char *v = NEXT();
            budget = strtod(v, &e);
            if (e == v || *e || budget < 0) die("--budget: expected seconds >= 0, got '%s'", v);
        } else if (!strcmp(a, "--steps")) {
            long v = parse_size(NEXT());
            if (v < 1 || v > 100000) die("--steps: expected 1..100000, got '%s'", argv[i]);
            steps = (int)v;
        } else if (!strcmp(a, "--threads")) {
            long v = parse_size(NEXT());
            if (v < 1 || v > 512) die("--threads: expected 1..512, got '%s'", argv[i]);
            threads = (int)v;
        } else if (!strcmp(a, "--batch")) {
            if ((n_batch = parse_size(NEXT())) < 1) die("--batch: bad value '%s'", argv[i]);
        } else if (!strcmp(a, "--ubatch")) {
            if ((n_ubatch = parse_size(NEXT())) < 1) die("--ubatch: bad value '%s'", argv[i]);
        } else if (!strcmp(a, "--kv")) {
            const char *v = NEXT();
            if (!strcmp(v, "f16")) kv = GGML_TYPE_F16;
            else if (!strcmp(v, "f32")) kv = GGML_TYPE_F32;
            else die("--kv: expected f16 or f32, got '%s'", v);
        } else if (!strcmp(a, "--flash")) {
            const char *v = NEXT();
            if (!strcmp(v, "auto")) fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
            else if (!strcmp(v, "on")) fa = LLAMA_FLASH_ATTN_TYPE_ENABLED;
            else if (!strcmp(v, "off")) fa = LLAMA_FLASH_ATTN_TYPE_DISABLED;
            else die("--flash: expected auto, on or off, got '%s'", v);
        } else die("unknown option '%s' (see --help)", a);
#undef NEXT
    }

    /* contexts */
    long ctxs[64];
    int n_ctxs = 0;
    {
        char *dup = strdup(ctx_list), *save = NULL;
        for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            long v = parse_size(t);
            if (v < 1 || n_ctxs == 64) die("--ctx: bad context '%s' in '%s'", t, ctx_list);
            ctxs[n_ctxs++] = v;
        }
        free(dup);
        if (!n_ctxs) die("--ctx: empty list");
    }

    llama_log_set(log_cb, NULL);
    if (backends && *backends) ggml_backend_load_all_from_path(backends);
    else ggml_backend_load_all();
    llama_backend_init();

    if (info) {
        struct llama_context_params cp = llama_context_default_params();
        printf("system_info: %s\n", llama_print_system_info());
        printf("context defaults: n_ctx %u n_batch %u n_ubatch %u n_seq_max %u threads %d/%d "
               "flash_attn %s type_k %s type_v %s\n",
               cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max, cp.n_threads, cp.n_threads_batch,
               llama_flash_attn_type_name(cp.flash_attn_type), ggml_type_name(cp.type_k), ggml_type_name(cp.type_v));
        if (!model_path) return 0;
    }
    if (!model_path) die("--model FILE.gguf is required (see --help)");

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    if (!g_verbose) mp.progress_callback = no_progress;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) die("%s: llama.cpp could not load the model (rerun with -v)", model_path);
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int V = llama_vocab_n_tokens(vocab);
    const int L = llama_model_n_layer(model), d = llama_model_n_embd(model);
    const int H = llama_model_n_head(model), Hkv = llama_model_n_head_kv(model);
    const size_t kv_row = ggml_row_size(kv, (int64_t)(d / H) * Hkv); /* one token's K (or V) in one layer */
    const size_t kv_per_tok = (size_t)L * 2 * kv_row;
    if (info) {
        printf("model: %s n_params %llu size %llu B vocab %d n_embd %d n_layer %d n_head %d n_head_kv %d\n",
               model_path, (unsigned long long)llama_model_n_params(model),
               (unsigned long long)llama_model_size(model), V, d, L, H, Hkv);
        llama_model_free(model);
        return 0;
    }
    if (!label) {
        label = strrchr(model_path, '/');
        label = label ? label + 1 : model_path;
    }

    FILE *cf = NULL;
    if (csv) {
        FILE *probe = fopen(csv, "r");
        int fresh = probe == NULL;
        if (probe) fclose(probe);
        cf = fopen(csv, "a");
        if (!cf) die("%s: cannot open: %s", csv, strerror(errno));
        if (fresh)
            fprintf(cf, "label,engine,n_ctx,prefill_s,step_p50_ms,step_p90_ms,step_mean_ms,steps,"
                        "kv_alloc_bytes,kv_per_token_bytes,kv_at_n_bytes,rss_mib,threads,kv_type,flash\n");
    }

    printf("%-16s %8s %10s %11s %11s %11s %13s %12s %14s %8s\n", "label", "N", "prefill_s", "step_p50_ms",
           "step_p90_ms", "step_mean_ms", "kv_alloc_B", "kv_per_tok_B", "kv_at_N_B", "rss_MiB");
    fflush(stdout);

    double *dt = malloc(sizeof(double) * steps);
    double last_prefill = 0;
    long last_n = 0;
    for (int ci = 0; ci < n_ctxs; ci++) {
        const long N = ctxs[ci];
        if (budget > 0 && last_n > 0) {
            const double pred = last_prefill * ((double)N / last_n) * ((double)N / last_n);
            if (pred > budget) {
                printf("%-16s %8ld skipped: prefill predicted %.0f s > --budget %.0f s\n", label, N, pred, budget);
                if (cf) {
                    fprintf(cf, "%s,llama.cpp,%ld,,,,,0,,%zu,%zu,,%d,%s,%s\n", label, N, kv_per_tok,
                            kv_per_tok * (size_t)N, threads, ggml_type_name(kv), llama_flash_attn_type_name(fa));
                    fflush(cf);
                }
                continue;
            }
        }
        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = (uint32_t)(N + steps + 1);
        cp.n_batch = (uint32_t)(n_batch < N ? n_batch : N);
        cp.n_ubatch = (uint32_t)(n_ubatch < (long)cp.n_batch ? n_ubatch : (long)cp.n_batch);
        cp.n_seq_max = 1;
        cp.n_threads = threads;
        cp.n_threads_batch = threads;
        cp.type_k = kv;
        cp.type_v = kv;
        cp.flash_attn_type = fa;
        cp.no_perf = true;
        struct llama_context *ctx = llama_init_from_model(model, cp);
        if (!ctx) die("N=%ld: llama_init_from_model failed (rerun with -v)", N);
        const size_t kv_alloc = (size_t)llama_n_ctx(ctx) * kv_per_tok;

        /* prompt: deterministic ids past the special/byte tokens */
        llama_token *prompt = malloc(sizeof(llama_token) * N);
        for (long i = 0; i < N; i++) prompt[i] = (llama_token)(259 + (i * 7919 + 13) % (V - 259));

        double t0 = now_s();
        for (long off = 0; off < N; off += cp.n_batch) {
            long n = N - off < (long)cp.n_batch ? N - off : (long)cp.n_batch;
            struct llama_batch b = llama_batch_get_one(prompt + off, (int32_t)n);
            int rc = llama_decode(ctx, b);
            if (rc) die("N=%ld: llama_decode of the prompt failed at %ld (rc %d)", N, off, rc);
        }
        llama_token tok = argmax(llama_get_logits_ith(ctx, -1), V);
        const double prefill = now_s() - t0;

        for (int s = 0; s < steps; s++) {
            double a = now_s();
            struct llama_batch b = llama_batch_get_one(&tok, 1);
            int rc = llama_decode(ctx, b);
            if (rc) die("N=%ld: llama_decode of step %d failed (rc %d)", N, s, rc);
            tok = argmax(llama_get_logits_ith(ctx, -1), V);
            dt[s] = (now_s() - a) * 1e3;
        }
        double mean = 0;
        for (int s = 0; s < steps; s++) mean += dt[s];
        mean /= steps;
        qsort(dt, steps, sizeof *dt, cmp_d);
        const double p50 = pct(dt, steps, 0.5), p90 = pct(dt, steps, 0.9), rss = rss_mib();
        last_prefill = prefill;
        last_n = N;
        printf("%-16s %8ld %10.4f %11.4f %11.4f %11.4f %13zu %12zu %14zu %8.1f\n", label, N, prefill, p50, p90,
               mean, kv_alloc, kv_per_tok, kv_per_tok * (size_t)N, rss);
        fflush(stdout);
        if (cf) {
            fprintf(cf, "%s,llama.cpp,%ld,%.6f,%.6f,%.6f,%.6f,%d,%zu,%zu,%zu,%.1f,%d,%s,%s\n", label, N, prefill, p50,
                    p90, mean, steps, kv_alloc, kv_per_tok, kv_per_tok * (size_t)N, rss, threads, ggml_type_name(kv),
                    llama_flash_attn_type_name(fa));
            fflush(cf);
        }
        free(prompt);
        llama_free(ctx);
    }
    free(dt);
    if (cf) fclose(cf);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
