/* main.c — tconst-worker: flags, the model on its device, the data plane,
 * the control-plane gRPC server, signals. It prints one line when ready:
 *   tconst-worker ready: role R control HOST:PORT data ADDR pid P
 * (tconstd reads it to learn a port picked with :0). SIGTERM/SIGINT stop
 * it; a worker spawned by tconstd also dies with its parent
 * (PR_SET_PDEATHSIG, set by the spawner). Exit codes: 0 clean, 2 bad
 * flags or model, 3 device poisoned (STYLE.md: the coordinator restarts). */
#include <errno.h>
#include <malloc.h>
#include <sys/resource.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/hostport.h"
#include "../common/knobs.h"
#include "../common/fault.h"
#include "../common/log.h"
#include "../model/session.h"
#include "worker.h"
#ifdef TC_HAVE_CUDA
#include "../kernels/cuda/backend_cuda.h"
#endif

typedef struct {
    char *role, *device, *listen, *data_listen, *transport, *model, *log_level, *log_format, *weight_dtype;
    int64_t threads, max_message_bytes, max_session_tokens, nice;
    double peer_timeout, orphan_timeout;
} wcfg;

/* The device's health for the worker (tc_worker_opts.device_status): the
 * CUDA backend's sticky error, and a fault for the tests. The environment
 * variable TC_FAULT_DEVICE_POISON=ROLE:N:MARKER makes the worker of that
 * role report a poisoned device from its N-th check on, once per MARKER
 * file (created then; a restarted worker finds it and runs clean):
 * tests/e2e/test_poison.py exercises the exit-3-and-restart path with no
 * GPU. */
typedef struct {
    tc_backend *be;
    int cuda;
    atomic_long fault_after; /* 0: no fault armed */
    char fault_marker[1024];
    atomic_long checks;
    atomic_int fired;
} dev_health;

/* compute: the fault counts only checks of the compute threads (replies
 * to Open/Append/Sync/Step/Import...), not the supervisor's pings, so it
 * fires in the middle of the work, not after a fixed time */
static tc_status dev_status(void *arg, int compute) {
    dev_health *h = arg;
    long after = atomic_load(&h->fault_after);
    if (compute && after > 0 && !atomic_load(&h->fired) && atomic_fetch_add(&h->checks, 1) + 1 >= after) {
        int fd = open(h->fault_marker, O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd >= 0) {
            close(fd);
            atomic_store(&h->fired, 1);
        } else {
            if (errno != EEXIST)
                TC_LOG(TC_LOG_ERROR, "worker", "fault injection: cannot create %s: %s; disarmed", h->fault_marker,
                       strerror(errno));
            atomic_store(&h->fault_after, 0); /* fired before, by an earlier process */
        }
    }
    if (atomic_load(&h->fired)) return TC_FAIL(TC_ERR_INTERNAL, "injected device fault (TC_FAULT_DEVICE_POISON)");
#ifdef TC_HAVE_CUDA
    /* a compute thread's reply waits for its lane's work: the next call on
     * the session may run on the other thread's lane (backend_cuda.h) */
    if (h->cuda) return compute ? tc_backend_cuda_sync(h->be) : tc_backend_cuda_status(h->be);
#endif
    return TC_OK;
}

/* each compute thread on its own CUDA lane: the context thread's syncs
 * overlap the generation thread's hit steps */
static void dev_thread_init(void *arg, int role) {
    dev_health *h = arg;
#ifdef TC_HAVE_CUDA
    if (h->cuda) tc_backend_cuda_bind_lane(role);
#else
    (void)h, (void)role;
#endif
}

/* TC_FAULT_DEVICE_POISON=ROLE:N:MARKER, armed when ROLE is this worker's */
static int dev_fault_parse(dev_health *h, const char *role) {
    const char *v = getenv("TC_FAULT_DEVICE_POISON");
    if (!v || !*v) return 0;
    char r[32];
    long n = 0;
    int used = 0;
    if (sscanf(v, "%31[^:]:%ld:%n", r, &n, &used) != 2 || used == 0 || n < 1 || !v[used] ||
        strlen(v + used) >= sizeof h->fault_marker) {
        fprintf(stderr, "tconst-worker: error: TC_FAULT_DEVICE_POISON '%s': expected ROLE:N:MARKER_FILE\n", v);
        return -1;
    }
    if (strcmp(r, role) != 0) return 0;
    if (access(v + used, F_OK) == 0) return 0; /* fired in an earlier process: run clean */
    atomic_store(&h->fault_after, n);
    snprintf(h->fault_marker, sizeof h->fault_marker, "%s", v + used);
    TC_LOG(TC_LOG_WARN, "worker", "fault injection armed: device poisoned at check %ld (marker %s)", n,
           h->fault_marker);
    return 0;
}

#define K(name, type, def, lo, hi, help, field) {name, type, def, lo, hi, help, offsetof(wcfg, field)}
static const tc_knob KNOBS[] = {
    K("role", TC_KNOB_STR, "both", 0, 0, "context (syncs, boundary-crossing prefills), generation (batched hit steps) or both", role),
    K("device", TC_KNOB_STR, "cpu", 0, 0, "cpu or cuda:N", device),
    K("listen", TC_KNOB_STR, "127.0.0.1:50061", 0, 0, "control-plane gRPC address (host:port; port 0 picks one)", listen),
    K("data-listen", TC_KNOB_STR, "127.0.0.1:0", 0, 0, "data-plane (host transport) address a context peer sends to", data_listen),
    K("transport", TC_KNOB_STR, "host", 0, 0, "data plane: host (TCP) or nccl (GPU workers, when built with NCCL)", transport),
    K("model", TC_KNOB_STR, "", 0, 0, "model directory (empty: the built-in tiny tconstformer)", model),
    K("threads", TC_KNOB_INT, "0", 0, 1024, "compute threads of the CPU backend, at most 8 and the online CPUs (0: all of those; OpenBLAS itself runs single-threaded under it)", threads),
    K("weight-dtype", TC_KNOB_STR, "", 0, 0, "format of the weight matrices on a CUDA device: f32 (exact against the file), bf16 or f16 (half the bytes; inputs rounded to match, fp32 accumulation); empty: TC_CUDA_WEIGHTS, else f32. The CPU computes in fp32 whatever this says", weight_dtype),
    K("max-message-bytes", TC_KNOB_INT, "268435456", 1024, 4294967295.0, "largest control or data-plane message", max_message_bytes),
    K("max-session-tokens", TC_KNOB_INT, "2147479551", 1, 2147479551.0, "tokens a session may hold (tconstd passes its --max-session-tokens to the workers it starts): the data plane takes a session's state up to that size whatever --max-message-bytes says (a baseline session's K/V cache grows 2 x layers x d x 4 bytes a token; set it on workers you start yourself to bound what a peer may send them: the default admits any state)", max_session_tokens),
    K("orphan-timeout", TC_KNOB_DOUBLE, "30", 0.5, 86400, "seconds the coordinator this worker serves may stay silent before another coordinator may take the worker over (its session copies are then dropped: a coordinator that died leaves none behind); until then another is refused", orphan_timeout),
    K("peer-timeout", TC_KNOB_DOUBLE, "30", 0.1, 86400, "seconds a data-plane send or an Import waits for the peer", peer_timeout),
    K("nice", TC_KNOB_INT, "0", 0, 19, "CPU scheduling niceness of this worker (a context worker sharing cores with its generation peer yields to it)", nice),
    K("log-level", TC_KNOB_STR, "", 0, 0, "error, warn, info, debug or trace (empty: TC_LOG_LEVEL, else info)", log_level),
    K("log-format", TC_KNOB_STR, "", 0, 0, "text or json (empty: TC_LOG_FORMAT, else text)", log_format),
};
#define N_KNOBS ((int)(sizeof KNOBS / sizeof KNOBS[0]))

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && n < (1 << 20) && fseek(f, 0, SEEK_SET) == 0 && (b = malloc((size_t)n + 1))) {
        if (fread(b, 1, (size_t)n, f) != (size_t)n) free(b), b = NULL;
        else b[n] = 0;
    }
    fclose(f);
    return b;
}

int main(int argc, char **argv) {
    mallopt(M_MMAP_THRESHOLD, 4 << 20); /* as tconstd: a long sync's workspace goes back to the OS */
    tc_log_init();
    wcfg cfg;
    int help = 0;
    if (argc == 2 && !strcmp(argv[1], "--config-markdown")) {
        tc_knobs_markdown(KNOBS, N_KNOBS, stdout, "tconst-worker");
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "--count-devices")) {
        /* tconstd's --device auto asks this: "cuda-devices N", N the GPUs
         * this build can use (0 without a CUDA backend, driver or GPU) */
        int n = 0;
#ifdef TC_HAVE_CUDA
        n = tc_backend_cuda_device_count();
#endif
        printf("cuda-devices %d\n", n);
        return 0;
    }
    if (tc_knobs_parse(KNOBS, N_KNOBS, &cfg, argc, argv, "tconst-worker",
                       "A tconst worker: one device, the model on it, syncs and/or batched hit steps for tconstd.",
                       &help) != TC_OK) {
        fprintf(stderr, "tconst-worker: error: %s\n", tc_error_get());
        return 2;
    }
    if (help) {
        tc_knobs_free(KNOBS, N_KNOBS, &cfg);
        return 0;
    }
    int rc = 2;
    if (tc_log_configure("tconst-worker", cfg.log_level, cfg.log_format) != 0) goto done;
    if (strcmp(cfg.role, "context") && strcmp(cfg.role, "generation") && strcmp(cfg.role, "both")) {
        fprintf(stderr, "tconst-worker: error: --role '%s': expected context, generation or both\n", cfg.role);
        goto done;
    }
    int cuda_dev = -1;
    if (!strncmp(cfg.device, "cuda:", 5)) {
        char *end;
        long dv = strtol(cfg.device + 5, &end, 10);
        if (*end || end == cfg.device + 5 || dv < 0 || dv > 255) {
            fprintf(stderr, "tconst-worker: error: --device '%s': expected cpu or cuda:N\n", cfg.device);
            goto done;
        }
        cuda_dev = (int)dv;
    } else if (strcmp(cfg.device, "cpu") != 0) {
        fprintf(stderr, "tconst-worker: error: --device '%s': expected cpu or cuda:N\n", cfg.device);
        goto done;
    }
    if (cfg.weight_dtype[0] && strcmp(cfg.weight_dtype, "f32") && strcmp(cfg.weight_dtype, "bf16") &&
        strcmp(cfg.weight_dtype, "f16")) {
        fprintf(stderr, "tconst-worker: error: --weight-dtype '%s': expected f32, bf16 or f16\n", cfg.weight_dtype);
        goto done;
    }
    /* the CUDA backend reads its format at init: one parser for the flag
     * and the variable */
    if (cfg.weight_dtype[0] && cuda_dev >= 0) setenv("TC_CUDA_WEIGHTS", cfg.weight_dtype, 1);
    else if (cfg.weight_dtype[0] && strcmp(cfg.weight_dtype, "f32"))
        TC_LOG(TC_LOG_WARN, "worker", "--weight-dtype %s: the CPU keeps its weights in fp32", cfg.weight_dtype);
    if (tc_listen_addr_check("--listen", cfg.listen, 1) != TC_OK ||
        tc_listen_addr_check("--data-listen", cfg.data_listen, 0) != TC_OK) { /* the data plane: HOST:PORT */
        fprintf(stderr, "tconst-worker: error: %s\n", tc_error_get());
        goto done;
    }
    if (strcmp(cfg.transport, "host") && strcmp(cfg.transport, "nccl")) {
        fprintf(stderr, "tconst-worker: error: --transport '%s': expected host or nccl\n", cfg.transport);
        goto done;
    }
    if (!strcmp(cfg.transport, "nccl")) {
#ifdef TC_HAVE_NCCL
        if (cuda_dev < 0) {
            fprintf(stderr, "tconst-worker: error: --transport nccl needs --device cuda:N\n");
            goto done;
        }
#else
        fprintf(stderr, "tconst-worker: error: --transport nccl: this build has no NCCL; use host\n");
        goto done;
#endif
    }
    /* Appends on a thread of their own: always on the CPU; on a GPU with
     * TC_CUDA_PREFILL_LANE=1 (lane 2; off until measured on a GPU), never
     * with NCCL, whose sends must come from one thread in the order the
     * peer receives them */
    int prefill_thread = cuda_dev < 0;
    const char *pl = getenv("TC_CUDA_PREFILL_LANE");
    if (pl && *pl && strcmp(pl, "0") && strcmp(pl, "1")) {
        fprintf(stderr, "tconst-worker: error: TC_CUDA_PREFILL_LANE '%s': expected 0 or 1\n", pl);
        goto done;
    }
    if (cuda_dev >= 0 && pl && !strcmp(pl, "1")) {
        if (!strcmp(cfg.transport, "nccl")) {
            fprintf(stderr, "tconst-worker: error: TC_CUDA_PREFILL_LANE=1 needs --transport host (NCCL sends come "
                            "from one thread)\n");
            goto done;
        }
        prefill_thread = 1;
        TC_LOG(TC_LOG_INFO, "worker", "prefills on a thread and CUDA lane of their own (TC_CUDA_PREFILL_LANE=1)");
    }

    if (cfg.nice > 0 && setpriority(PRIO_PROCESS, 0, (int)cfg.nice) != 0)
        TC_LOG(TC_LOG_WARN, "worker", "--nice %d: %s", (int)cfg.nice, strerror(errno));
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    struct sigaction hup_was; /* SIGHUP stops it as SIGTERM does, unless ignored from the start (nohup) */
    if (sigaction(SIGHUP, NULL, &hup_was) == 0 && hup_was.sa_handler != SIG_IGN) sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    tc_backend be;
    int be_ok = 0;
    tc_model *m = NULL;
    tc_transport *tp = NULL;
    tc_worker *w = NULL;
    tc_rpc_server *rpc = NULL;
    char *config_json = NULL;
    char dir[4096];
    if (cuda_dev >= 0) {
#ifdef TC_HAVE_CUDA
        if (tc_backend_cuda_init(&be, cuda_dev) != TC_OK) {
            fprintf(stderr, "tconst-worker: error: --device %s: %s\n", cfg.device, tc_error_get());
            goto out;
        }
#else
        fprintf(stderr, "tconst-worker: error: --device %s: this build has no CUDA backend\n", cfg.device);
        goto out;
#endif
    } else if (tc_backend_cpu_init(&be, (int)cfg.threads) != TC_OK) {
        fprintf(stderr, "tconst-worker: error: %s\n", tc_error_get());
        goto out;
    }
    be_ok = 1;
    if (cfg.model[0]) snprintf(dir, sizeof dir, "%s", cfg.model);
    else if (tc_model_builtin_dir(dir, sizeof dir) != TC_OK) {
        fprintf(stderr, "tconst-worker: error: cannot create the built-in model: %s\n", tc_error_get());
        goto out;
    }
    if (tc_model_load(&m, dir, &be) != TC_OK) {
        fprintf(stderr, "tconst-worker: error: %s\n", tc_error_get());
        goto out;
    }
    char cp[4200];
    snprintf(cp, sizeof cp, "%s/config.json", dir);
    if (!(config_json = read_file(cp))) {
        fprintf(stderr, "tconst-worker: error: cannot read %s\n", cp);
        goto out;
    }
    /* the data plane carries whole session states: a baseline session's
     * K/V cache or a TLinFormer's compress-layer history outgrows any
     * fixed message limit, so its bound is the largest state a session of
     * --max-session-tokens tokens can have (at least --max-message-bytes) */
    size_t state_max = tc_state_max_bytes(&m->cfg, cfg.max_session_tokens);
    const uint64_t data_max = state_max > (uint64_t)cfg.max_message_bytes ? state_max : (uint64_t)cfg.max_message_bytes;
    if (strcmp(cfg.role, "both") != 0)
        TC_LOG(TC_LOG_INFO, "worker", "data plane: states up to %.3g MB (a session of %lld tokens)", (double)data_max / 1e6,
               (long long)cfg.max_session_tokens);
    if (strcmp(cfg.role, "both") != 0 && strcmp(cfg.transport, "host") == 0 &&
        tc_transport_host_open(&tp, !strcmp(cfg.role, "generation") ? cfg.data_listen : "", data_max,
                               /* the mailbox: one largest state beside what the fixed limit allowed before */
                               data_max > UINT64_MAX - 4 * (uint64_t)cfg.max_message_bytes
                                   ? UINT64_MAX : data_max + 4 * (uint64_t)cfg.max_message_bytes) != TC_OK) {
        fprintf(stderr, "tconst-worker: error: --data-listen %s: %s\n", cfg.data_listen, tc_error_get());
        goto out;
    }
#ifdef TC_HAVE_NCCL
    tc_transport_nccl_limits(data_max); /* for the transports Connect opens */
#endif
    static dev_health health; /* outlives the worker (its threads read it) */
    health.be = &be;
    health.cuda = cuda_dev >= 0;
    if (dev_fault_parse(&health, cfg.role) != 0) goto out;
    tc_worker_opts o = {cfg.role, cfg.device, cfg.peer_timeout, cfg.transport, cuda_dev, cfg.orphan_timeout,
                        health.cuda || atomic_load(&health.fault_after) ? dev_status : NULL, &health,
                        dev_thread_init, 0, prefill_thread, 0, 0, 0, 0, cfg.max_message_bytes};
    /* tests: TC_FAULT_SYNC_ERRORS=N fails this worker's first N Syncs
     * (tests/e2e/test_poison.py: a sync that keeps failing ends the
     * generation with the error); TC_FAULT_STEP_SYNC_AT=N fails a Step's
     * inline sync of a session N tokens long, that session alone (the
     * rest of its batch steps on); TC_FAULT_CONNECT_ERRORS=N fails its
     * first N Connects (tests/e2e/test_connect_retry.py: the coordinator
     * tries again, the pair is not live meanwhile); TC_FAULT_APPEND_REPLY_AT
     * and TC_FAULT_STEP_REPLY_AT=N send the N-th Append (with logits) or
     * Step reply malformed (tests/e2e/test_poison.py: the coordinator
     * refuses it and rebuilds the copy, which took what the history did not) */
    int64_t fse, fsa, fce, far, fsr;
    if (tc_fault_env_count("TC_FAULT_SYNC_ERRORS", 1000000, &fse) != TC_OK ||
        tc_fault_env_count("TC_FAULT_STEP_SYNC_AT", INT64_MAX, &fsa) != TC_OK ||
        tc_fault_env_count("TC_FAULT_CONNECT_ERRORS", 1000000, &fce) != TC_OK ||
        tc_fault_env_count("TC_FAULT_APPEND_REPLY_AT", INT64_MAX, &far) != TC_OK ||
        tc_fault_env_count("TC_FAULT_STEP_REPLY_AT", INT64_MAX, &fsr) != TC_OK) {
        fprintf(stderr, "tconst-worker: error: %s\n", tc_error_get());
        goto out;
    }
    o.fault_sync_errors = (int)fse;
    o.fault_step_sync_at = fsa;
    o.fault_connect_errors = (int)fce;
    o.fault_append_reply_at = far, o.fault_step_reply_at = fsr;
    if (far || fsr)
        TC_LOG(TC_LOG_WARN, "worker", "fault injection armed: Append reply %lld, Step reply %lld go out malformed",
               (long long)far, (long long)fsr);
    if (fce) TC_LOG(TC_LOG_WARN, "worker", "fault injection armed: the first %lld Connects fail", (long long)fce);
    if (fse) TC_LOG(TC_LOG_WARN, "worker", "fault injection armed: the first %lld Syncs fail", (long long)fse);
    if (fsa)
        TC_LOG(TC_LOG_WARN, "worker", "fault injection armed: a Step's inline sync at %lld tokens fails", (long long)fsa);
    /* gRPC takes an int: the limit the server enforces is the one Info tells */
    const int mm = cfg.max_message_bytes > 2147483647 ? 2147483647 : (int)cfg.max_message_bytes;
    o.max_message_bytes = mm;
    if (tc_worker_new(&w, m, tp, config_json, &o) != TC_OK) {
        fprintf(stderr, "tconst-worker: error: %s\n", tc_error_get());
        goto out;
    }
    /* the coordinator's calls only: pings find a vanished coordinator's
     * connection (its orphans are then dropped by --orphan-timeout) */
    const tc_rpc_server_opts ro = {mm, 30000, 10000, 0, 0, 0};
    if (tc_rpc_server_start(&rpc, cfg.listen, &ro, tc_worker_handlers(), w) != TC_OK) {
        const char *why = tc_error_get() ? tc_error_get() : "cannot start";
        if (strstr(why, "--listen")) fprintf(stderr, "tconst-worker: error: %s\n", why);
        else fprintf(stderr, "tconst-worker: error: --listen %s: %s\n", cfg.listen, why);
        goto out;
    }
    {
        char host[300];
        snprintf(host, sizeof host, "%s", cfg.listen);
        char *colon = strrchr(host, ':');
        if (colon && strncmp(host, "unix", 4) != 0) snprintf(colon, sizeof host - (size_t)(colon - host), ":%d", tc_rpc_server_port(rpc));
        printf("tconst-worker ready: role %s control %s data %s pid %d\n", cfg.role, host,
               tp && tp->address(tp)[0] ? tp->address(tp) : "-", (int)getpid());
        fflush(stdout);
    }
    TC_LOG(TC_LOG_INFO, "worker", "role %s device %s model %s (%s)", cfg.role, cfg.device, dir, tc_arch_name(m->cfg.arch));
    int sig = 0;
    sigwait(&sigs, &sig);
    if (tc_worker_poisoned(w)) {
        /* no teardown: a compute thread may be blocked (an Import waiting
         * for its peer, a hung device), and freeing device memory on a
         * failed device can hang too; the supervisor needs the exit now */
        TC_LOG(TC_LOG_ERROR, "worker", "stopping: device %s poisoned (exit status 3)", cfg.device);
        _exit(3); /* no fflush either: another thread may hold a stdio lock */
    } else {
        TC_LOG(TC_LOG_INFO, "worker", "signal %d: stopping", sig);
        rc = 0;
    }
out:
    /* first the data plane: an Import waiting for its message or a send to
     * a stopped peer fails now (and its call is answered within the RPC
     * server's grace) instead of holding tc_worker_free's join for up to
     * --peer-timeout */
    if (tp) tp->close(tp);
    if (rpc) tc_rpc_server_stop(rpc, 1.0);
    tc_worker_free(w);
    if (tp) tp->free(tp);
    if (m) tc_model_free(m);
    if (be_ok) {
#ifdef TC_HAVE_CUDA
        if (cuda_dev >= 0) tc_backend_cuda_free(&be);
        else
#endif
            tc_backend_cpu_free(&be);
    }
    free(config_json);
done:
    tc_knobs_free(KNOBS, N_KNOBS, &cfg);
    return rc;
}
