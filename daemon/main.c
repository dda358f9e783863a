/* main.c — tconstd, the coordinator: knobs, model, engine, gRPC API, ops
 * endpoints, signals. Start-up: HTTP first (/healthz answers while the
 * model loads, /readyz says 503), then the model, the gRPC server (Health
 * NOT_SERVING), a warm-up, and only then readiness. SIGTERM/SIGINT/SIGHUP drain:
 * readiness flips, admission stops (UNAVAILABLE), running streams get
 * --drain-timeout seconds, the rest are cancelled with UNAVAILABLE, exit 0.
 * Signals are taken by a signal thread (sig_main, below). */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/knobs.h"
#include "../common/log.h"
#include "../model/config.h"
#include "../model/weights.h"
#include "../tokenizer/bpe.h"
#include "engine.h"
#include "http.h"
#include "journal.h"
#include "../common/hostport.h"
#include "worker_remote.h"
#include "metrics.h"
#include "service.h"
#include "spawn.h"
#include "openai.h"

#define TC_VERSION "0.1.0"

typedef struct {
    char *listen, *http_listen, *openai_listen, *served_model_name, *model, *data_dir, *log_level, *log_format;
    char *workers, *worker_mode, *worker_binary, *device, *context_device, *weight_dtype;
    double worker_timeout, worker_start_timeout, liveness_timeout;
    int64_t context_nice;
    int64_t max_sessions, max_queued, max_queued_syncs, max_batch, max_tokens, max_session_tokens, max_state_bytes, stream_queue, max_message_bytes,
        large_request_budget, threads, warmup_tokens, openai_max_connections, grpc_max_streams, grpc_max_pending_calls,
        grpc_memory_quota;
    double grpc_keepalive, grpc_keepalive_timeout;
    int overlap_syncs;
    int64_t sync_inline_max, multi_step;
    double multi_step_ms;
    double idle_timeout, drain_timeout;
} dcfg;

#define K(name, type, def, lo, hi, help, field) {name, type, def, lo, hi, help, offsetof(dcfg, field)}
static const tc_knob KNOBS[] = {
    K("listen", TC_KNOB_STR, "127.0.0.1:50051", 0, 0, "gRPC address (host:port; port 0 picks one)", listen),
    K("http-listen", TC_KNOB_STR, "127.0.0.1:9180", 0, 0, "ops HTTP address for /metrics /healthz /readyz", http_listen),
    K("openai-listen", TC_KNOB_STR, "", 0, 0, "address of the OpenAI-compatible HTTP API (POST /v1/completions, GET /v1/models; host:port, port 0 picks one); empty: off. No TLS or auth: a private address, or a proxy in front", openai_listen),
    K("served-model-name", TC_KNOB_STR, "", 0, 0, "the model's name in the OpenAI API (\"model\" in requests, /v1/models); empty: the model directory's last component (tconst-tiny for the built-in model)", served_model_name),
    K("openai-max-connections", TC_KNOB_INT, "256", 1, 65536, "OpenAI API connections at once (a thread each; a generation holds its connection); more wait in the listen queue", openai_max_connections),
    K("model", TC_KNOB_STR, "", 0, 0, "model directory (empty: the built-in tiny tconstformer)", model),
    K("data-dir", TC_KNOB_STR, "", 0, 0, "data directory: the SQLite session journal (empty: sessions do not survive a restart)", data_dir),
    K("worker-mode", TC_KNOB_STR, "split", 0, 0, "without --workers: split (spawn a context and a generation worker), both (one worker, both roles) or inprocess (no worker processes)", worker_mode),
    K("workers", TC_KNOB_STR, "", 0, 0, "tconst-worker control addresses to attach to (host:port,...; context and generation workers pair up in order); empty: spawn workers", workers),
    K("worker-binary", TC_KNOB_STR, "", 0, 0, "tconst-worker to spawn (empty: next to tconstd)", worker_binary),
    K("device", TC_KNOB_STR, "auto", 0, 0, "device of spawned workers: auto (the GPUs the worker binary sees: none, cpu; one, cuda:0 for both workers; two or more with --worker-mode split, generation on cuda:0 and context on cuda:1), cpu or cuda:N", device),
    K("context-device", TC_KNOB_STR, "", 0, 0, "device of the spawned context worker with --worker-mode split (empty: --device), e.g. cuda:1 beside a generation worker on cuda:0", context_device),
    K("weight-dtype", TC_KNOB_STR, "", 0, 0, "format of the weight matrices of spawned CUDA workers: f32 (exact against the file), bf16 or f16 (half the bytes); empty: the workers' default (TC_CUDA_WEIGHTS, else f32). Attached workers take tconst-worker --weight-dtype", weight_dtype),
    K("context-nice", TC_KNOB_INT, "0", 0, 19, "niceness of spawned context workers: where both workers share CPU cores, syncs yield to generation (longer boundary stalls, steadier token rate)", context_nice),
    K("worker-timeout", TC_KNOB_DOUBLE, "10", 0.5, 3600, "seconds a worker may leave pings unanswered before it is killed and restarted (spawned) or marked down (attached)", worker_timeout),
    K("worker-start-timeout", TC_KNOB_DOUBLE, "120", 1, 86400, "seconds a starting worker gets to load its model", worker_start_timeout),
    K("max-sessions", TC_KNOB_INT, "256", 1, 1e6, "open sessions at most (more: RESOURCE_EXHAUSTED)", max_sessions),
    K("max-queued-requests", TC_KNOB_INT, "256", 1, 1e6, "requests waiting to start at most (more: RESOURCE_EXHAUSTED)", max_queued),
    K("max-queued-syncs", TC_KNOB_INT, "0", 0, 1e6, "syncs waiting for a context worker (tconst_sync_queue_depth) at which new requests get RESOURCE_EXHAUSTED: the context workers are behind and new work would stall at its first boundary; running generations go on (0: no limit)", max_queued_syncs),
    K("max-batch", TC_KNOB_INT, "64", 1, 4096, "generations stepped together in one batched hit step", max_batch),
    K("max-tokens", TC_KNOB_INT, "1000000", 1, 2147483647.0, "largest max_tokens a request may ask for", max_tokens),
    K("max-state-bytes", TC_KNOB_INT, "0", 0, 1e18, "bytes of session state (K/V windows, zips, histories on the workers; tconst_state_bytes) the sessions may hold together: at or past it new requests get RESOURCE_EXHAUSTED until sessions close (0: no limit)", max_state_bytes),
    K("max-session-tokens", TC_KNOB_INT, "0", 0, 2147479551.0, "tokens a session may hold, prompt and generated (0: 2^31 - 4097, the sync's limit); a generation reaching it ends with finish_reason length", max_session_tokens),
    K("stream-queue", TC_KNOB_INT, "64", 1, 1e6, "unread messages per stream before its generation pauses", stream_queue),
    K("max-message-bytes", TC_KNOB_INT, "4194304", 1024, 1073741824.0, "largest request message (larger: RESOURCE_EXHAUSTED)", max_message_bytes),
    K("grpc-keepalive", TC_KNOB_DOUBLE, "30", 1, 86400, "seconds between the server's pings on a connection with nothing to send: a client that vanished without closing its connection (a dead host, a partition, a frozen process) is seen after this plus --grpc-keepalive-timeout, and its calls end (a Stream's session is no longer held open by it)", grpc_keepalive),
    K("grpc-keepalive-timeout", TC_KNOB_DOUBLE, "10", 1, 3600, "seconds a client gets to answer the server's ping before its connection is closed", grpc_keepalive_timeout),
    K("grpc-max-streams", TC_KNOB_INT, "1024", 1, 1e6, "calls at once on one client connection (HTTP/2 streams; a client's further calls wait on its side)", grpc_max_streams),
    K("grpc-max-pending-calls", TC_KNOB_INT, "1024", 1, 1e6, "calls, over all connections, that have not sent their first message yet; past it a new call gets RESOURCE_EXHAUSTED at once (each holds a stream's buffers)", grpc_max_pending_calls),
    K("grpc-memory-quota", TC_KNOB_INT, "4294967296", 0, 1e15, "bytes gRPC may use for its connections' buffers, all together (messages on their way in included); 0: no quota. At least 4 x --max-message-bytes (else refused at start)", grpc_memory_quota),
    K("large-request-budget", TC_KNOB_INT, "67108864", 16384, 1e15, "bytes of large requests (messages over 16 KiB, handled on threads of their own) queued or running at once; past it a large request gets RESOURCE_EXHAUSTED, smaller ones still run. Each holds a copy of its message, and tokenizing text takes ~100 B of scratch per byte: size it to the memory tconstd may use for them. At least --max-message-bytes (else refused at start)", large_request_budget),
    K("overlap-syncs", TC_KNOB_BOOL, "true", 0, 0, "run syncs on the context thread, overlapping other sessions' steps (false: inline in the batch)", overlap_syncs),
    K("sync-inline-max", TC_KNOB_INT, "512", 0, 1e9, "a sync over at most this many history tokens runs inline in the generation batch instead of on the context worker (short syncs cost less than the hand-off and never wait behind a long one; 0: all go to the context worker)", sync_inline_max),
    K("multi-step", TC_KNOB_INT, "8", 1, 1024, "tokens a generation worker makes per session in one Step call, feeding back what it samples (its own step loop: one round trip per run, not per token; tokens reach the stream in runs). 1: a call per token. In-process workers step one token at a time; so does a generation in a named session (GenerateInSession, Stream, a Generate with session_id) whose stop strings more than 2048 tokens could complete (its runs end after each token that can complete one)", multi_step),
    K("multi-step-ms", TC_KNOB_DOUBLE, "10", 0, 60000, "milliseconds one multi-step call may compute before it returns what it has (bounds the delay of cancels and of new sessions joining the batch; 0: no limit)", multi_step_ms),
    K("idle-timeout", TC_KNOB_DOUBLE, "3600", 0, 1e9, "seconds before an idle session is closed (0: never)", idle_timeout),
    K("drain-timeout", TC_KNOB_DOUBLE, "30", 0, 86400, "seconds running streams get to finish after SIGTERM", drain_timeout),
    K("liveness-timeout", TC_KNOB_DOUBLE, "30", 0, 86400, "seconds the engine's lock may stay held, or the gRPC thread stay inside one event, before /healthz answers 503 (a wedged daemon: the liveness probe restarts it); both are held for moments only in normal work. At least 2 (the watchdog looks every second); 0: /healthz always 200", liveness_timeout),
    K("threads", TC_KNOB_INT, "0", 0, 1024, "compute threads of the CPU backend, at most 8 and the online CPUs (0: all of those; OpenBLAS itself runs single-threaded under it)", threads),
    K("warmup-tokens", TC_KNOB_INT, "0", 0, 1e8, "history tokens synced once before readiness (0: one window)", warmup_tokens),
    K("log-level", TC_KNOB_STR, "", 0, 0, "error, warn, info, debug or trace (empty: TC_LOG_LEVEL, else info)", log_level),
    K("log-format", TC_KNOB_STR, "", 0, 0, "text or json (empty: TC_LOG_FORMAT, else text)", log_format),
};
#define N_KNOBS ((int)(sizeof KNOBS / sizeof KNOBS[0]))

/* read by the HTTP hooks (the ops server thread): loaded once per call;
 * cleared before the ops server stops, and the service freed after */
static _Atomic(tc_service *) g_svc;

/* Liveness (/healthz): a watchdog thread takes the engine's lock every
 * second (waiting up to a second) and notes when it last could; the hook
 * reads that and how long the RPC thread has been inside one event. The
 * hook itself never blocks: the ops server answers at once. */
static pthread_mutex_t g_live_mu = PTHREAD_MUTEX_INITIALIZER; /* the two below: the hook reads them under it, and
                                                                 * main clears them under it before freeing */
static tc_engine *g_live_eng;
static tc_rpc_server *g_live_rpc;
static _Atomic double g_live_ok;     /* tc_now_s() (monotonic) of the watchdog's last lock */
static double g_live_timeout;        /* --liveness-timeout, set before the ops server starts */
static atomic_int g_live_reported;   /* the first 503's reason logged */
static pthread_mutex_t g_wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wd_cv; /* on CLOCK_MONOTONIC (main, before the thread): a wall-clock step is no stall */
static int g_wd_stop; /* g_wd_mu */

static void *watchdog_main(void *arg) {
    tc_engine *e = arg;
    int held = 0; /* probes in a row that found the lock held */
    pthread_mutex_lock(&g_wd_mu);
    while (!g_wd_stop) {
        pthread_mutex_unlock(&g_wd_mu);
        if (tc_engine_lock_probe(e, 1.0)) {
            atomic_store(&g_live_ok, tc_now_s());
            held = 0;
        } else if (!held++) {
            TC_LOG(TC_LOG_WARN, "main", "the engine's lock has been held for over a second");
        }
        pthread_mutex_lock(&g_wd_mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        if (!g_wd_stop) pthread_cond_timedwait(&g_wd_cv, &g_wd_mu, &ts);
    }
    pthread_mutex_unlock(&g_wd_mu);
    return NULL;
}

/* SIGTERM / SIGINT: taken by one thread from the moment they are blocked,
 * so a signal during the start-up (workers loading, a journal restore)
 * stops it at once instead of being held until the daemon is ready --
 * which it then never becomes. The warm-up's one compute call is not
 * interrupted: the stop comes when it returns (docs/operations.md). Our threads keep the
 * signals blocked; a handler (writing the number to a pipe) runs in the
 * signal thread, which unblocks them, or in a library thread created
 * before main could block them (OpenBLAS's pool): either way the signal
 * thread reads it. sigwait alone would let the kernel pick such a thread
 * and the default action kill the process. */
static pthread_mutex_t g_sig_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_sig_cv = PTHREAD_COND_INITIALIZER;
static int g_sig;              /* the first signal (g_sig_mu) */
static tc_engine *g_drain_eng; /* while draining (g_sig_mu): a second signal cancels what still runs */
static int g_n_sig;            /* signals taken (g_sig_mu) */
static atomic_int g_starting = 1; /* cleared just before ready */
static int g_sig_pipe[2] = {-1, -1};

static void on_signal(int sig) {
    const int saved = errno;
    const unsigned char b = (unsigned char)sig;
    ssize_t r = write(g_sig_pipe[1], &b, 1);
    (void)r;
    errno = saved;
}

static void *sig_main(void *arg) {
    pthread_sigmask(SIG_UNBLOCK, (sigset_t *)arg, NULL);
    for (;;) {
        unsigned char b = 0;
        const ssize_t r = read(g_sig_pipe[0], &b, 1);
        if (r == 0) return NULL; /* the pipe closed: no more signals */
        if (r != 1) continue;    /* EINTR */
        pthread_mutex_lock(&g_sig_mu);
        const int first = !g_sig;
        g_n_sig++;
        if (first) {
            g_sig = b;
            pthread_cond_broadcast(&g_sig_cv);
        } else if (g_drain_eng) {
            /* a second signal while draining: the operator does not want to
             * wait -- what still runs ends now (UNAVAILABLE, resumable) */
            TC_LOG(TC_LOG_WARN, "main", "signal %d (%s) during the drain: cancelling what still runs", b,
                   strsignal(b));
            tc_engine_cancel_all(g_drain_eng);
        }
        pthread_mutex_unlock(&g_sig_mu);
        if (first && atomic_load(&g_starting)) tc_spawn_cancel(); /* the waits for workers give up */
    }
}
static int sig_seen(void) {
    pthread_mutex_lock(&g_sig_mu);
    const int s = g_sig;
    pthread_mutex_unlock(&g_sig_mu);
    return s;
}

/* the worker supervisor: the number of live worker pairs moved */
static void on_live_pairs(void *ud, int n) {
    tc_service *svc = ud;
    tc_service_set_workers_up(svc, n > 0);
    tc_metric_set(TC_G_ready, tc_service_serving(svc));
}

static int hook_ready(void *ud) {
    (void)ud;
    tc_service *s = atomic_load(&g_svc);
    return s && tc_service_serving(s);
}
static int hook_alive(void *ud) {
    (void)ud;
    if (g_live_timeout <= 0) return 1;
    pthread_mutex_lock(&g_live_mu);
    const double eng_stuck = g_live_eng ? tc_now_s() - atomic_load(&g_live_ok) : 0,
                 rpc_busy = g_live_rpc ? tc_rpc_server_busy_s(g_live_rpc) : 0;
    pthread_mutex_unlock(&g_live_mu);
    if (eng_stuck < g_live_timeout && rpc_busy < g_live_timeout) return 1;
    if (!atomic_exchange(&g_live_reported, 1))
        TC_LOG(TC_LOG_ERROR, "main", "not alive: %s %.1f s (--liveness-timeout %.1f): /healthz answers 503",
               eng_stuck >= g_live_timeout ? "the engine's lock not free for" : "the gRPC thread inside one event for",
               eng_stuck >= g_live_timeout ? eng_stuck : rpc_busy, g_live_timeout);
    return 0;
}

static tc_status warm_up(tc_worker_client *wc, int64_t n) {
    const tc_model_config *c = wc->cfg;
    int W = c->arch == TC_ARCH_TRANSFORMER ? 32 : c->generate_window;
    if (n <= 0) n = W + 1;
    int32_t *t = malloc((size_t)n * 4);
    float *lg = malloc((size_t)c->vocab_size * 4);
    tc_wc_session *s = NULL;
    tc_status st = TC_ERR_NOMEM;
    if (t && lg) {
        for (int64_t i = 0; i < n; i++) t[i] = (int32_t)((i * 7919) % c->vocab_size);
        st = wc->session_new(wc, &s);
        if (st == TC_OK) st = wc->append(wc, s, t, n, lg);
        if (st == TC_OK) st = wc->step(wc, &s, t, 1, NULL, NULL, lg, NULL);
        if (s) wc->session_free(wc, s);
    }
    free(t);
    free(lg);
    return st;
}


/* tconst-worker next to this binary (installed side by side), or in the
 * build tree's worker/ directory */
static void find_worker_binary(char out[4200], size_t n) {
    char self[3800];
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    if (l <= 0) {
        snprintf(out, n, "tconst-worker");
        return;
    }
    self[l] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    const char *cand[2] = {"%s/tconst-worker", "%s/worker/tconst-worker"};
    for (int i = 0; i < 2; i++) {
        snprintf(out, n, cand[i], self);
        if (access(out, X_OK) == 0) return;
    }
    snprintf(out, n, "%s/tconst-worker", self);
}

/* --device names the spawned workers' device: "auto", "cpu" or "cuda:N".
 * A cuda:N cannot apply to the in-process worker (CPU only) or to attached
 * workers (each picks its own --device): refuse instead of running on the
 * CPU. auto means the CPU there. */
static int check_one_device(const dcfg *c, const char *flag, const char *d) {
    if (!strcmp(d, "auto") && !strcmp(flag, "--device")) return 0;
    if (strncmp(d, "cuda:", 5) == 0) {
        char *end;
        long n = strtol(d + 5, &end, 10);
        if (d[5] < '0' || d[5] > '9' || *end || n > 255) { /* digits only: not "cuda: 1", "cuda:+1" */
            fprintf(stderr, "tconstd: error: %s '%s': expected %scpu or cuda:N\n", flag, d,
                    strcmp(flag, "--device") ? "" : "auto, ");
            return -1;
        }
        if (c->workers[0]) {
            fprintf(stderr, "tconstd: error: %s %s: attached workers (--workers) choose their own device "
                            "(tconst-worker --device)\n", flag, d);
            return -1;
        }
        if (!strcmp(c->worker_mode, "inprocess")) {
            fprintf(stderr, "tconstd: error: %s %s: the in-process worker runs on the CPU; use "
                            "--worker-mode split or both for a GPU\n", flag, d);
            return -1;
        }
    } else if (strcmp(d, "cpu") != 0) {
        fprintf(stderr, "tconstd: error: %s '%s': expected %scpu or cuda:N\n", flag, d,
                strcmp(flag, "--device") ? "" : "auto, ");
        return -1;
    }
    return 0;
}
static int check_limits(const dcfg *c) {
    if (strlen(c->served_model_name) > 255) { /* the OpenAI API's name buffer */
        fprintf(stderr, "tconstd: error: --served-model-name: %zu bytes (at most 255)\n", strlen(c->served_model_name));
        return -1;
    }
    if (c->liveness_timeout > 0 && c->liveness_timeout < 2) {
        fprintf(stderr, "tconstd: error: --liveness-timeout %g: at least 2 seconds (the watchdog looks every "
                        "second), or 0 to turn the check off\n", c->liveness_timeout);
        return -1;
    }
    if (c->large_request_budget < c->max_message_bytes) {
        fprintf(stderr, "tconstd: error: --large-request-budget %lld is below --max-message-bytes %lld: a request of "
                        "the largest size allowed could never run; raise the budget (its tokenizing takes ~100 B "
                        "of memory a byte) or lower the message size\n", (long long)c->large_request_budget,
                (long long)c->max_message_bytes);
        return -1;
    }
    if (c->grpc_memory_quota > 0 && c->grpc_memory_quota < 4 * c->max_message_bytes) {
        fprintf(stderr, "tconstd: error: --grpc-memory-quota %lld is below 4 x --max-message-bytes %lld: messages "
                        "of the largest size allowed would be refused by gRPC for memory, not by the size limit "
                        "with its message; raise the quota (0: none) or lower the message size\n",
                (long long)c->grpc_memory_quota, (long long)c->max_message_bytes);
        return -1;
    }
    return 0;
}
static int check_device(const dcfg *c) {
    /* before anything starts, with or without --workers (where the mode
     * does not apply, a typo is still a typo) */
    if (strcmp(c->worker_mode, "split") != 0 && strcmp(c->worker_mode, "both") != 0 &&
        strcmp(c->worker_mode, "inprocess") != 0) {
        fprintf(stderr, "tconstd: error: --worker-mode '%s': expected split, both or inprocess\n", c->worker_mode);
        return -1;
    }
    if (check_one_device(c, "--device", c->device) != 0) return -1;
    if (c->weight_dtype[0]) {
        if (strcmp(c->weight_dtype, "f32") && strcmp(c->weight_dtype, "bf16") && strcmp(c->weight_dtype, "f16")) {
            fprintf(stderr, "tconstd: error: --weight-dtype '%s': expected f32, bf16 or f16\n", c->weight_dtype);
            return -1;
        }
        if (c->workers[0] || !strcmp(c->worker_mode, "inprocess")) {
            fprintf(stderr, "tconstd: error: --weight-dtype %s: only spawned workers take it (attached ones: "
                            "tconst-worker --weight-dtype; the in-process worker computes in fp32)\n",
                    c->weight_dtype);
            return -1;
        }
    }
    if (!c->context_device[0]) return 0;
    if (strcmp(c->worker_mode, "split") != 0 || c->workers[0]) {
        fprintf(stderr, "tconstd: error: --context-device %s: only spawned workers in --worker-mode split have a "
                        "context worker of their own\n", c->context_device);
        return -1;
    }
    return check_one_device(c, "--context-device", c->context_device);
}

/* --device auto (DESIGN §4: spawned workers on the best available
 * devices, the CPU when there is no GPU): asks the worker binary how many
 * GPUs it can use (tconst-worker --count-devices: 0 from a build without
 * the CUDA backend, or without a driver or GPU). None: cpu. One: cuda:0
 * for every worker. Two or more with --worker-mode split: the generation
 * worker on cuda:0, the context worker on cuda:1 (its syncs beside the
 * hit steps, not on the same GPU), unless --context-device names one. A
 * probe that fails falls back to the CPU with a warning. */
static void resolve_device(const dcfg *c, const char *bin, char *dev, size_t dn, char *ctx, size_t cn) {
    snprintf(dev, dn, "%s", c->device);
    snprintf(ctx, cn, "%s", c->context_device);
    if (strcmp(c->device, "auto") != 0) return;
    snprintf(dev, dn, "cpu");
    char path[4200];
    snprintf(path, sizeof path, "%s", bin);
    char *argv[] = {path, "--count-devices", NULL};
    char line[128];
    pid_t pid = -1;
    int n = -1;
    tc_status st = tc_spawn(argv, 60.0, NULL, &pid, line, sizeof line);
    if (pid > 0) tc_child_stop(pid, 5.0);
    if (st != TC_OK && tc_spawn_cancelled()) return; /* a signal during the start-up: it stops anyway */
    if (st != TC_OK || sscanf(line, "cuda-devices %d", &n) != 1 || n < 0) {
        TC_LOG(TC_LOG_WARN, "main", "--device auto: cannot count GPUs with %s (%s): the workers run on the CPU", bin,
               st != TC_OK ? (tc_error_get() ? tc_error_get() : "failed") : "unexpected answer");
        return;
    }
    const int split = !strcmp(c->worker_mode, "split");
    if (n > 0) snprintf(dev, dn, "cuda:0");
    if (n > 1 && split && !ctx[0]) snprintf(ctx, cn, "cuda:1");
    TC_LOG(TC_LOG_INFO, "main", "--device auto: %d GPU(s): %s worker%s on %s%s%s", n,
           split ? "generation" : "both roles'", split ? "" : "s", dev, split ? ", context worker on " : "",
           split ? (ctx[0] ? ctx : dev) : "");
}

int main(int argc, char **argv) {
    /* Large buffers (a long context's sync workspace, 1 KB per history
     * token) always come from mmap, so freeing them returns the memory:
     * glibc's dynamic threshold would otherwise move them onto the heap
     * after the first free and keep the peak resident for good. */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    /* gRPC's completion threads and the engine threads otherwise each get
     * an arena, and freed memory scattered over many arenas stays resident
     * (the slow creep of the 256-session load run) */
    mallopt(M_ARENA_MAX, 2);
    tc_log_init();
    dcfg cfg;
    int help = 0;
    if (argc == 2 && !strcmp(argv[1], "--config-markdown")) { /* docs/config.md comes from the table */
        tc_knobs_markdown(KNOBS, N_KNOBS, stdout, "tconstd");
        return 0;
    }
    if (tc_knobs_parse(KNOBS, N_KNOBS, &cfg, argc, argv, "tconstd",
                       "The tconst coordinator: gRPC API (tconst.v1) over constant-state streaming models.",
                       &help) != TC_OK) {
        fprintf(stderr, "tconstd: error: %s\n", tc_error_get());
        return 2;
    }
    if (help) {
        tc_knobs_free(KNOBS, N_KNOBS, &cfg);
        return 0;
    }
    if (tc_log_configure("tconstd", cfg.log_level, cfg.log_format) != 0) {
        tc_knobs_free(KNOBS, N_KNOBS, &cfg);
        return 2;
    }
    /* addresses before anything loads: a bad port is a flag error (2),
     * not something found after the workers and the journal started */
    if (tc_listen_addr_check("--listen", cfg.listen, 1) != TC_OK ||
        tc_listen_addr_check("--http-listen", cfg.http_listen, 0) != TC_OK || /* HTTP: HOST:PORT only */
        (cfg.openai_listen[0] && tc_listen_addr_check("--openai-listen", cfg.openai_listen, 0) != TC_OK)) {
        fprintf(stderr, "tconstd: error: %s\n", tc_error_get());
        tc_knobs_free(KNOBS, N_KNOBS, &cfg);
        return 2;
    }
    if (check_device(&cfg) != 0 || check_limits(&cfg) != 0) {
        tc_knobs_free(KNOBS, N_KNOBS, &cfg);
        return 2;
    }
    if (cfg.data_dir[0]) {
        struct stat sb;
        if (stat(cfg.data_dir, &sb) != 0 && mkdir(cfg.data_dir, 0755) != 0) {
            fprintf(stderr, "tconstd: error: --data-dir %s: %s\n", cfg.data_dir, strerror(errno));
            tc_knobs_free(KNOBS, N_KNOBS, &cfg);
            return 2;
        }
    }
    /* every thread inherits a blocked SIGTERM/SIGINT/SIGHUP; main takes
     * them. SIGHUP (the terminal went away) drains like SIGTERM rather than
     * killing the daemon mid-stream -- unless it was ignored when tconstd
     * started (nohup): then it stays ignored */
    struct sigaction hup_was;
    const int hup = sigaction(SIGHUP, NULL, &hup_was) == 0 && hup_was.sa_handler != SIG_IGN;
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    if (hup) sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
#ifdef __SANITIZE_THREAD__
    /* TSan runs a handler only when the thread leaves its interceptor: a
     * restarted read() of the signal thread would never leave (make test-tsan) */
    sa.sa_flags = 0;
#endif
    sigfillset(&sa.sa_mask);
    pthread_t sig_th;
    if (pipe2(g_sig_pipe, O_CLOEXEC) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0 ||
        (hup && sigaction(SIGHUP, &sa, NULL) != 0) ||
        pthread_create(&sig_th, NULL, sig_main, &sigs) != 0) {
        fprintf(stderr, "tconstd: error: cannot start the signal thread\n");
        tc_knobs_free(KNOBS, N_KNOBS, &cfg);
        return 1;
    }
    pthread_detach(sig_th);

    int rc = 1;
    tc_http_server *http = NULL;
    tc_openai *oai = NULL;
    tc_worker_client *wc = NULL;
    tc_bpe *bpe = NULL;
    tc_engine *eng = NULL;
    tc_rpc_server *rpc = NULL;
    tc_service *svc = NULL;
    tc_journal *journal = NULL;
    double rpc_grace = 0;
    pthread_t wd;
    int wd_on = 0; /* the liveness watchdog runs */
    tc_metric_set(TC_G_ready, 0);
    tc_metric_set(TC_G_start_time_seconds, (double)tc_wall_ms() / 1000.0);
    g_live_timeout = cfg.liveness_timeout;
    tc_http_hooks hooks = {hook_ready, hook_alive, NULL};
    if (tc_http_start(&http, cfg.http_listen, &hooks) != TC_OK) {
        fprintf(stderr, "tconstd: error: %s\n", tc_error_get());
        goto out;
    }
    /* model directory: given, or the built-in tiny model */
    char dir[4096];
    if (cfg.model[0]) snprintf(dir, sizeof dir, "%s", cfg.model);
    else if (tc_model_builtin_dir(dir, sizeof dir) != TC_OK) {
        fprintf(stderr, "tconstd: error: cannot create the built-in model: %s\n", tc_error_get());
        goto out;
    }
    if (!cfg.workers[0] && !strcmp(cfg.worker_mode, "inprocess")) {
        TC_LOG(TC_LOG_INFO, "main", "loading model %s (in-process worker)", dir);
        if (tc_worker_local_open(&wc, dir, (int)cfg.threads) != TC_OK) {
            fprintf(stderr, "tconstd: error: %s\n", tc_error_get());
            goto out;
        }
    } else {
        char bin[4200];
        if (cfg.worker_binary[0]) snprintf(bin, sizeof bin, "%s", cfg.worker_binary);
        else find_worker_binary(bin, sizeof bin);
        static char dev[64] = "cpu", ctxdev[64]; /* the workers' options point here for good (respawns) */
        if (!cfg.workers[0]) resolve_device(&cfg, bin, dev, sizeof dev, ctxdev, sizeof ctxdev);
        tc_remote_opts ro = {cfg.workers, cfg.worker_mode, bin, dir, dev, ctxdev, cfg.log_level, cfg.log_format,
                             (int)cfg.threads, cfg.worker_timeout, cfg.worker_start_timeout, 3600,
                             (int)cfg.context_nice, (int)cfg.max_sessions, cfg.weight_dtype,
                             (long long)cfg.max_session_tokens};
        TC_LOG(TC_LOG_INFO, "main", "model %s on %s", dir, cfg.workers[0] ? cfg.workers : "spawned workers");
        if (tc_worker_remote_open(&wc, &ro) != TC_OK) {
            fprintf(stderr, "tconstd: error: %s\n", tc_error_get());
            goto out;
        }
    }
    tc_status bst = tc_bpe_load(&bpe, dir);
    if (bst == TC_ERR_UNSUPPORTED) bpe = NULL;
    else if (bst != TC_OK) {
        fprintf(stderr, "tconstd: error: %s\n", tc_error_get());
        goto out;
    }
    if (bpe && tc_bpe_vocab_size(bpe) > wc->cfg->vocab_size) { /* text would become ids the model lacks */
        fprintf(stderr, "tconstd: error: %s: the tokenizer has %d tokens, more than config.json's vocab_size %d (a "
                        "tokenizer left from another model?)\n", dir, tc_bpe_vocab_size(bpe), wc->cfg->vocab_size);
        goto out;
    }
    if (bpe && tc_bpe_vocab_size(bpe) < wc->cfg->vocab_size) /* a head padded past the tokenizer */
        TC_LOG(TC_LOG_WARN, "main", "the model's vocab_size %d exceeds the tokenizer's %d: generated ids %d..%d "
               "stream as U+FFFD in text (their ids are sent as they are)", wc->cfg->vocab_size,
               tc_bpe_vocab_size(bpe), tc_bpe_vocab_size(bpe), wc->cfg->vocab_size - 1);
    tc_service_info info = {dir, TC_VERSION, (int)cfg.max_message_bytes, (long long)cfg.large_request_budget};
    if (tc_service_init(&svc, NULL, wc, bpe, &info) != TC_OK) {
        fprintf(stderr, "tconstd: error: %s\n", tc_error_get() ? tc_error_get() : "cannot start the service");
        goto out;
    }
    if (wc->live_pairs) /* worker processes: ready only while a pair is up (told the count now, then changes) */
        tc_worker_remote_on_live(wc, on_live_pairs, svc);
    tc_engine_limits lim = {(int)cfg.max_sessions, (int)cfg.max_queued, (int)cfg.max_batch, (int)cfg.max_tokens,
                            (int)cfg.stream_queue, cfg.idle_timeout, cfg.overlap_syncs, cfg.sync_inline_max,
                            (int)cfg.multi_step, cfg.multi_step_ms / 1000.0, cfg.max_session_tokens,
                            cfg.max_state_bytes, (int)cfg.max_queued_syncs};
    if (tc_engine_start(&eng, wc, bpe, &lim, tc_service_sink()) != TC_OK) {
        fprintf(stderr, "tconstd: error: %s\n", tc_error_get());
        goto out;
    }
    tc_service_bind_engine(svc, eng);
    if (cfg.data_dir[0]) {
        int n = 0;
        if (tc_journal_open(&journal, cfg.data_dir) != TC_OK || tc_engine_attach_journal(eng, journal, &n) != TC_OK) {
            fprintf(stderr, "tconstd: error: %s\n", tc_error_get());
            goto out;
        }
        TC_LOG(TC_LOG_INFO, "main", "restored %d sessions from %s", n, cfg.data_dir);
    }
    atomic_store(&g_svc, svc);
    const tc_rpc_server_opts ro = {(int)cfg.max_message_bytes, (int)(cfg.grpc_keepalive * 1000),
                                   (int)(cfg.grpc_keepalive_timeout * 1000), (int)cfg.grpc_max_streams,
                                   (int)cfg.grpc_max_pending_calls, cfg.grpc_memory_quota};
    if (tc_rpc_server_start(&rpc, cfg.listen, &ro, tc_service_handlers(), svc) != TC_OK) {
        fprintf(stderr, "tconstd: error: %s\n", tc_error_get());
        goto out;
    }
    if (cfg.openai_listen[0]) {
        char name[256];
        if (cfg.served_model_name[0]) snprintf(name, sizeof name, "%s", cfg.served_model_name);
        else if (!cfg.model[0]) snprintf(name, sizeof name, "tconst-tiny");
        else {
            char d[4096];
            snprintf(d, sizeof d, "%s", dir);
            size_t n = strlen(d);
            while (n > 1 && d[n - 1] == '/') d[--n] = 0;
            const char *b = strrchr(d, '/');
            snprintf(name, sizeof name, "%.255s", b && b[1] ? b + 1 : d); /* a file name: 255 bytes at most */
        }
        tc_openai_config oc = {eng, name, bpe != NULL, bpe, cfg.max_message_bytes, (int)cfg.openai_max_connections,
                               hook_ready, NULL};
        if (tc_openai_start(&oai, cfg.openai_listen, &oc) != TC_OK) {
            fprintf(stderr, "tconstd: error: %s\n", tc_error_get());
            goto out;
        }
    }
    atomic_store(&g_live_ok, tc_now_s());
    if (cfg.liveness_timeout > 0) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&g_wd_cv, &ca);
        pthread_condattr_destroy(&ca);
        if (pthread_create(&wd, NULL, watchdog_main, eng) == 0) wd_on = 1;
        else TC_LOG(TC_LOG_WARN, "main", "no liveness watchdog thread: /healthz checks only the gRPC thread");
    }
    pthread_mutex_lock(&g_live_mu);
    if (wd_on) g_live_eng = eng;
    g_live_rpc = rpc;
    pthread_mutex_unlock(&g_live_mu);
    /* warm-up: first touch of weights, BLAS threads, one sync */
    double tw = tc_now_s();
    if (!sig_seen() && warm_up(wc, cfg.warmup_tokens) != TC_OK) { /* not begun after a signal */
        fprintf(stderr, "tconstd: error: warm-up failed: %s\n", tc_error_get());
        goto out;
    }
    if (!sig_seen()) TC_LOG(TC_LOG_INFO, "main", "warm-up done in %.3f s", tc_now_s() - tw);
    atomic_store(&g_starting, 0);
    if (sig_seen()) { /* during the start-up: never ready, a clean stop */
        TC_LOG(TC_LOG_INFO, "main", "signal %d during the start-up: stopping without serving", sig_seen());
        rc = 0;
        goto out;
    }
    tc_service_set_serving(svc, 1, 0);
    tc_metric_set(TC_G_ready, tc_service_serving(svc));
    {
        /* the addresses as bound: the port gRPC / the HTTP server picked
         * for a ":0"; a unix: socket has no port, its path is the address */
        char host[300];
        snprintf(host, sizeof host, "%s", cfg.listen);
        char *colon = strrchr(host, ':');
        if (colon && strncmp(host, "unix", 4) != 0) /* unix:PATH, unix-abstract:NAME */
            snprintf(colon, sizeof host - (size_t)(colon - host), ":%d", tc_rpc_server_port(rpc));
        char hh[300];
        snprintf(hh, sizeof hh, "%s", cfg.http_listen);
        colon = strrchr(hh, ':');
        if (colon) snprintf(colon, sizeof hh - (size_t)(colon - hh), ":%d", tc_http_port(http));
        char oa[320] = "";
        if (oai) {
            snprintf(oa, sizeof oa, " openai %s", cfg.openai_listen);
            colon = strrchr(oa, ':');
            if (colon) snprintf(colon, sizeof oa - (size_t)(colon - oa), ":%d", tc_openai_port(oai));
        }
        printf("tconstd %s ready: grpc %s http %s model %s (%s, %s)%s\n", TC_VERSION, host, hh, dir,
               tc_arch_name(wc->cfg->arch), bpe ? "text+ids" : "ids only", oa);
        fflush(stdout);
    }
    pthread_mutex_lock(&g_sig_mu);
    while (!g_sig) pthread_cond_wait(&g_sig_cv, &g_sig_mu);
    const int sig = g_sig;
    /* from here a second signal cancels what runs; one that came already
     * (before this thread woke) does it now */
    g_drain_eng = eng;
    tc_engine_drain(eng);
    if (g_n_sig > 1) tc_engine_cancel_all(eng);
    pthread_mutex_unlock(&g_sig_mu);
    TC_LOG(TC_LOG_INFO, "main", "signal %d (%s): draining (up to %.1f s)", sig, strsignal(sig), cfg.drain_timeout);
    tc_service_set_serving(svc, 1, 1);
    tc_metric_set(TC_G_ready, 0);
    tc_metric_set(TC_G_draining, 1);
    double drain_end = tc_now_s() + cfg.drain_timeout;
    if (!tc_engine_wait_idle(eng, cfg.drain_timeout))
        TC_LOG(TC_LOG_WARN, "main", "drain timeout: cancelling what still runs (UNAVAILABLE)");
    /* what the streams queued (their last tokens, statuses) still goes out */
    rpc_grace = drain_end - tc_now_s();
    if (rpc_grace < 2.0) rpc_grace = 2.0;
    rc = 0;
out:
    if (rc != 0 && sig_seen() && atomic_load(&g_starting)) { /* a start-up step failed because it was cancelled */
        TC_LOG(TC_LOG_INFO, "main", "signal %d during the start-up: stopping", sig_seen());
        rc = 0;
    }
    pthread_mutex_lock(&g_sig_mu);
    g_drain_eng = NULL; /* stopped below */
    pthread_mutex_unlock(&g_sig_mu);
    if (svc) tc_service_end_watchers(svc);
    /* cancels the rest with UNAVAILABLE; the engine stays allocated while
     * the RPC thread may still reach it (a send completing calls on_sent,
     * a cancelled stream's on_done closes its session): freed only after
     * the RPC server has stopped (it was freed first, and a wake on the
     * freed engine could hang the RPC thread and the shutdown with it) */
    /* the drain is over: a job still waiting for a dead worker to come
     * back gives up now instead of holding the exit for minutes */
    if (wc && wc->abandon_waits) wc->abandon_waits(wc);
    pthread_mutex_lock(&g_live_mu); /* both freed below: no hook reads them after this */
    g_live_rpc = NULL;
    g_live_eng = NULL;
    pthread_mutex_unlock(&g_live_mu);
    if (wd_on) {
        pthread_mutex_lock(&g_wd_mu);
        g_wd_stop = 1;
        pthread_cond_signal(&g_wd_cv);
        pthread_mutex_unlock(&g_wd_mu);
        pthread_join(wd, NULL);
    }
    if (eng) tc_engine_quiesce(eng);
    /* the work is done (or cut): a Stream waiting for its client's next
     * request would hold the exit for the rest of the grace */
    if (svc) tc_service_end_idle_streams(svc);
    if (rpc) tc_rpc_server_stop(rpc, rpc_grace);
    tc_service_stop_queue(svc);
    if (eng) tc_engine_quiesce(eng); /* the API's jobs end: its connection threads can be joined */
    tc_openai_stop(oai);
    if (eng) tc_engine_stop(eng);
    eng = NULL;
    if (svc) tc_service_bind_engine(svc, NULL);
    atomic_store(&g_svc, NULL);
    if (http) tc_http_stop(http);
    if (wc && wc->live_pairs) tc_worker_remote_on_live(wc, NULL, NULL); /* the supervisor outlives svc */
    tc_service_free(svc);
    tc_journal_close(journal); /* after the engine: it writes to it */
    if (bpe) tc_bpe_free(bpe);
    if (wc) wc->free(wc);
    tc_knobs_free(KNOBS, N_KNOBS, &cfg);
    TC_LOG(TC_LOG_INFO, "main", "exit %d", rc);
    return rc;
}
