/* load.c — tconst-load: a load generator for tconstd over gRPC (the
 * blocking client of daemon/rpc.h; one thread and one channel per
 * session). C sessions each hold one tconst.v1 Stream open and run turns
 * in it: append a prompt of P random ids, generate N tokens. Turns start
 * on a request-rate schedule shared by all sessions (--rate R turns/s,
 * evenly spaced; 0: closed loop, each session starts its next turn at
 * once), sessions start over --ramp seconds. With --turns-per-session K
 * a session ends its Stream after K turns (closing its daemon session)
 * and opens a new one, so histories stay bounded as in real traffic.
 *
 * Reports, over the turns that start after --warmup seconds: TTFT (turn
 * sent -> first generated token), ITL (between tokens), end-to-end latency,
 * p50/p90/p99 of each, tokens/s, turns by final gRPC status, and the RSS
 * of --pid (VmRSS from /proc/PID/status) sampled every second: at the end
 * of warm-up, the end, the peak, and a line every --rss-every seconds.
 * The measurements genai-perf / AIPerf report, so figures compare.
 * Not a correctness test: ids are not checked (tests/e2e does that). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/load/bench_util.h"
#include "daemon/rpc.h"
#include "tconst.pb-c.h"

typedef struct {
    const char *addr;
    int sessions, prompt, max_tokens, pid, turns_per_session;
    double duration, rate, ramp, warmup, rss_every;
} opts;

typedef struct {
    double *v;
    size_t n, cap;
} series;

static void push(series *s, double x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = x;
}

typedef struct {
    int id;
    series ttft, itl, e2e;
    long tokens, turns, codes[17];
    char last_err[640];
} worker;

static opts O;
static double T0;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static double g_next_turn; /* the schedule: when the next turn may start */
static atomic_int g_stop;

static void sleep_until(double t) {
    double d = t - tc_bench_now();
    if (d <= 0) return;
    struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

/* the start time of this session's next turn, or -1 when the run is over */
static double next_slot(void) {
    double t = tc_bench_now();
    if (O.rate > 0) {
        pthread_mutex_lock(&g_mu);
        if (g_next_turn < t - 1.0) g_next_turn = t; /* behind by > 1 s: don't burst to catch up */
        t = g_next_turn;
        g_next_turn += 1.0 / O.rate;
        pthread_mutex_unlock(&g_mu);
    }
    return t - T0 >= O.duration ? -1 : t;
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* One Stream (so one daemon session) for up to --turns-per-session turns;
 * 1 when it ended normally and the run goes on. */
static int run_stream(worker *w, uint64_t *rng) {
    tc_rpc_client *cl = NULL;
    tc_rpc_bidi *b = NULL;
    if (tc_rpc_client_open(&cl, O.addr) != TC_OK ||
        tc_rpc_bidi_open(cl, "/tconst.v1.TConst/Stream", O.duration + O.ramp + 120, &b) != TC_OK) {
        w->codes[TC_GRPC_UNAVAILABLE]++;
        snprintf(w->last_err, sizeof w->last_err, "cannot open the stream");
        if (cl) tc_rpc_client_close(cl);
        return 0;
    }
    int32_t *ids = malloc((size_t)O.prompt * sizeof *ids);
    Tconst__V1__SamplingParams sp = TCONST__V1__SAMPLING_PARAMS__INIT;
    sp._max_tokens_case = TCONST__V1__SAMPLING_PARAMS___MAX_TOKENS_MAX_TOKENS;
    sp.max_tokens = O.max_tokens;
    sp.ignore_eos = 1;
    int alive = 1, turns = 0;
    while (alive && !atomic_load(&g_stop) && (O.turns_per_session <= 0 || turns < O.turns_per_session)) {
        double t0 = next_slot();
        if (t0 < 0) break;
        sleep_until(t0);
        t0 = tc_bench_now();
        for (int i = 0; i < O.prompt; i++) ids[i] = (int32_t)(rng_next(rng) % 512);
        Tconst__V1__StreamRequest rq = TCONST__V1__STREAM_REQUEST__INIT;
        rq.token_ids = ids;
        rq.n_token_ids = (size_t)O.prompt;
        rq.generate = 1;
        rq.sampling = &sp;
        size_t n = tconst__v1__stream_request__get_packed_size(&rq);
        uint8_t *buf = malloc(n);
        tconst__v1__stream_request__pack(&rq, buf);
        tc_status st = tc_rpc_bidi_send(b, buf, n);
        free(buf);
        if (st != TC_OK) break;
        int measured = t0 - T0 >= O.warmup, got = 0;
        double tl = t0;
        for (;;) {
            uint8_t *m = NULL;
            size_t ml = 0;
            if (tc_rpc_bidi_recv(b, &m, &ml) != TC_OK || !m) {
                alive = 0; /* the stream ended: its status says why */
                break;
            }
            Tconst__V1__StreamResponse *r = tconst__v1__stream_response__unpack(NULL, ml, m);
            free(m);
            if (!r) continue;
            int fin = 0;
            if (r->event_case == TCONST__V1__STREAM_RESPONSE__EVENT_GENERATION) {
                Tconst__V1__GenerateResponse *g = r->generation;
                double t = tc_bench_now();
                if (g->n_token_ids > 0) {
                    if (measured) {
                        if (!got) push(&w->ttft, t - t0);
                        else
                            for (size_t k = 0; k < g->n_token_ids; k++) push(&w->itl, (t - tl) / (double)g->n_token_ids);
                    }
                    got += (int)g->n_token_ids;
                    tl = t;
                }
                if (g->finish_reason != TCONST__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) {
                    fin = 1;
                    if (g->finish_reason == TCONST__V1__FINISH_REASON__FINISH_REASON_ERROR ||
                        g->finish_reason == TCONST__V1__FINISH_REASON__FINISH_REASON_CANCELLED) {
                        snprintf(w->last_err, sizeof w->last_err, "turn ended %d: %s", g->finish_reason,
                                 g->error ? g->error : "");
                        alive = 0;
                    }
                }
            }
            tconst__v1__stream_response__free_unpacked(r, NULL);
            if (fin) break;
        }
        if (!alive) break;
        w->turns++;
        turns++;
        w->codes[0]++;
        if (measured) {
            push(&w->e2e, tc_bench_now() - t0);
            w->tokens += got;
        }
    }
    free(ids);
    tc_rpc_bidi_close_send(b);
    for (;;) { /* drain to the end of the stream */
        uint8_t *m = NULL;
        size_t ml = 0;
        if (tc_rpc_bidi_recv(b, &m, &ml) != TC_OK || !m) break;
        free(m);
    }
    tc_rpc_result res;
    tc_rpc_bidi_finish(b, &res);
    if (res.code != 0) {
        w->codes[res.code > 0 && res.code < 17 ? res.code : 2]++;
        snprintf(w->last_err, sizeof w->last_err, "stream status %d: %s", res.code, res.message);
    }
    tc_rpc_client_close(cl);
    return alive && res.code == 0 && turns > 0;
}

static void *session_main(void *arg) {
    worker *w = arg;
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(w->id + 1);
    sleep_until(T0 + O.ramp * w->id / (O.sessions > 1 ? O.sessions : 1));
    while (!atomic_load(&g_stop) && tc_bench_now() - T0 < O.duration && run_stream(w, &rng)) {
    }
    return NULL;
}

static double pct(const series *s, double p) {
    if (!s->n) return NAN;
    size_t i = (size_t)ceil(p / 100.0 * (double)s->n);
    return s->v[i ? i - 1 : 0];
}

static void report_series(const char *name, series *s) {
    qsort(s->v, s->n, sizeof *s->v, tc_bench_cmp_double);
    printf("| %-4s | %9zu | %8.2f | %8.2f | %8.2f | %8.2f |\n", name, s->n, pct(s, 50) * 1e3, pct(s, 90) * 1e3,
           pct(s, 99) * 1e3, s->n ? s->v[s->n - 1] * 1e3 : NAN);
}

static void merge(series *dst, const series *src) {
    for (size_t i = 0; i < src->n; i++) push(dst, src->v[i]);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: tconst-load --addr HOST:PORT [--sessions C] [--duration S] [--rate R] [--ramp S]\n"
            "                   [--warmup S] [--prompt P] [--max-tokens N] [--pid PID] [--rss-every S]\n"
            "                   [--turns-per-session K]\n");
}

int main(int argc, char **argv) {
    O = (opts){"127.0.0.1:50051", 16, 16, 32, 0, 0, 60, 0, 5, 10, 30};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        /* integer flags, number flags: the field, and the smallest value */
        static const struct {
            const char *name;
            int *i;
            double *d;
            double lo;
        } F[] = {{"--sessions", &O.sessions, NULL, 1},   {"--prompt", &O.prompt, NULL, 1},
                 {"--max-tokens", &O.max_tokens, NULL, 1}, {"--pid", &O.pid, NULL, 0},
                 {"--turns-per-session", &O.turns_per_session, NULL, 0},
                 {"--duration", NULL, &O.duration, 0},   {"--rate", NULL, &O.rate, 0},
                 {"--ramp", NULL, &O.ramp, 0},           {"--warmup", NULL, &O.warmup, 0},
                 {"--rss-every", NULL, &O.rss_every, 0}};
        int k = -1;
        for (int j = 0; j < (int)(sizeof F / sizeof F[0]); j++)
            if (!strcmp(a, F[j].name)) k = j;
        if (k < 0 && strcmp(a, "--addr")) {
            fprintf(stderr, "tconst-load: unknown flag %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "tconst-load: %s needs a value\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        if (k < 0) {
            O.addr = v;
            continue;
        }
        if (F[k].i) {
            long long x;
            if (tc_bench_arg_int("tconst-load", a, v, (long long)F[k].lo, 1000000000, &x) != 0) return 2;
            *F[k].i = (int)x;
        } else if (tc_bench_arg_num("tconst-load", a, v, F[k].lo, 1e9, F[k].d) != 0) {
            return 2;
        }
    }
    if (O.duration <= 0 || O.rss_every <= 0) {
        fprintf(stderr, "tconst-load: %s must be > 0\n", O.duration <= 0 ? "--duration" : "--rss-every");
        return 2;
    }
    if (O.warmup >= O.duration) {
        fprintf(stderr, "tconst-load: --warmup %g s leaves nothing of --duration %g s to measure\n", O.warmup,
                O.duration);
        return 2;
    }
    worker *w = calloc((size_t)O.sessions, sizeof *w);
    pthread_t *th = calloc((size_t)O.sessions, sizeof *th);
    T0 = tc_bench_now();
    g_next_turn = T0;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 256 << 10);
    for (int i = 0; i < O.sessions; i++) {
        w[i].id = i;
        pthread_create(&th[i], &at, session_main, &w[i]);
    }
    /* RSS of the daemon, once a second */
    long rss0 = -1, rss_peak = -1, rss_end = -1, rss_first = -1;
    double next_line = T0 + O.rss_every;
    printf("# tconst-load: %d sessions, %.0f s, rate %s, prompt %d, max_tokens %d, warm-up %.0f s, turns/session %d\n",
           O.sessions, O.duration, O.rate > 0 ? "fixed" : "closed loop", O.prompt, O.max_tokens, O.warmup,
           O.turns_per_session);
    if (O.rate > 0) printf("# rate %.1f turns/s\n", O.rate);
    while (tc_bench_now() - T0 < O.duration) {
        sleep_until(tc_bench_now() + 1.0);
        if (O.pid > 0) {
            long r = tc_bench_rss_kb(O.pid);
            if (rss_first < 0) rss_first = r;
            if (rss0 < 0 && tc_bench_now() - T0 >= O.warmup) rss0 = r;
            if (tc_bench_now() - T0 >= O.warmup && r > rss_peak) rss_peak = r;
            rss_end = r;
            if (tc_bench_now() >= next_line) {
                printf("# t=%4.0f s  rss %ld kB\n", tc_bench_now() - T0, r);
                fflush(stdout);
                next_line += O.rss_every;
            }
        }
    }
    atomic_store(&g_stop, 1);
    for (int i = 0; i < O.sessions; i++) pthread_join(th[i], NULL);
    double t_meas = tc_bench_now() - T0 - O.warmup;
    series ttft = {0}, itl = {0}, e2e = {0};
    long tokens = 0, turns = 0, codes[17] = {0};
    for (int i = 0; i < O.sessions; i++) {
        merge(&ttft, &w[i].ttft);
        merge(&itl, &w[i].itl);
        merge(&e2e, &w[i].e2e);
        tokens += w[i].tokens;
        turns += w[i].turns;
        for (int k = 0; k < 17; k++) codes[k] += w[i].codes[k];
        if (w[i].last_err[0]) fprintf(stderr, "session %d: %s\n", i, w[i].last_err);
        free(w[i].ttft.v);
        free(w[i].itl.v);
        free(w[i].e2e.v);
    }
    printf("\n| metric | samples | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n");
    report_series("TTFT", &ttft);
    report_series("ITL", &itl);
    report_series("E2E", &e2e);
    printf("\nturns completed: %ld (%.1f/s measured), generated tokens/s: %.0f\n", turns,
           (double)e2e.n / t_meas, (double)tokens / t_meas);
    long errors = 0;
    printf("statuses:");
    for (int k = 0; k < 17; k++)
        if (codes[k]) {
            printf(" %d=%ld", k, codes[k]);
            if (k) errors += codes[k];
        }
    printf("\nerrors: %ld\n", errors);
    if (O.pid > 0)
        printf("rss kB: start %ld, after warm-up %ld, end %ld, peak after warm-up %ld, growth after warm-up %+.1f%%\n",
               rss_first, rss0, rss_end, rss_peak, rss0 > 0 ? 100.0 * (double)(rss_end - rss0) / (double)rss0 : NAN);
    free(ttft.v);
    free(itl.v);
    free(e2e.v);
    free(w);
    free(th);
    return errors ? 1 : 0;
}
