/* bench_journal.c — the session journal's costs as a streaming session
 * sees them: a session of N history rows written one message at a time
 * (append µs a row), then closed: how long tc_journal_session_delete
 * holds the journal (and the engine's lock around it, daemon/engine.c),
 * and how long the background purge takes after. Also the reload time.
 *
 *   tconst-bench-journal [--rows N] [--tokens T] [--dir D]
 *   tconst-bench-journal --sessions S [--rows N]
 *
 * The second form is a batched step as the engine journals it: S sessions
 * each get one token a step, all S in one transaction
 * (tc_journal_append_rows), N steps; µs a step, then the file's size.
 *
 * Not a test: figures go to docs/benchmarks.md. To compare with an older
 * journal.c, build this file against it by hand:
 *   gcc -O2 -I. bench/journal/bench_journal.c old_journal.c build/libtc_common.a -lsqlite3 -lpthread -lm */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/journal.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static tc_status count(void *ud, const char *id, int64_t created_ms, const int32_t *tokens, int64_t n) {
    (void)id, (void)created_ms, (void)tokens;
    *(int64_t *)ud += n;
    return TC_OK;
}

/* the old journal has no settle: TC_BENCH_NO_SETTLE builds without it */
#ifdef TC_BENCH_NO_SETTLE
#define SETTLE(j) ((void)0)
#else
#define SETTLE(j) tc_journal_settle((j), NULL)
#endif

static void cleanup(const char *dir, const char *tmp) {
    if (dir != tmp) return;
    char p[400];
    const char *f[] = {"journal.db", "journal.db-wal", "journal.db-shm", "LOCK"};
    for (int i = 0; i < 4; i++) snprintf(p, sizeof p, "%s/%s", tmp, f[i]), unlink(p);
    rmdir(tmp);
}

static long long file_bytes(const char *dir, const char *name) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat sb;
    return stat(p, &sb) == 0 ? (long long)sb.st_size : 0;
}

/* S sessions, one token each a step, one transaction a step */
static int batched(tc_journal *j, const char *dir, const char *tmp, long sessions, long steps) {
    char (*ids)[16] = calloc((size_t)sessions, sizeof *ids);
    tc_journal_row *r = calloc((size_t)sessions, sizeof *r);
    int32_t *tok = calloc((size_t)sessions, 4);
    for (long s = 0; s < sessions; s++) {
        snprintf(ids[s], sizeof ids[s], "s%ld", s);
        if (tc_journal_create(j, ids[s], 1, tok, 1, NULL) != TC_OK) return fprintf(stderr, "%s\n", tc_error_get()), 1;
        r[s].id = ids[s], r[s].tokens = tok + s, r[s].n = 1;
    }
    const double t0 = now_s();
    for (long i = 1; i < steps; i++) {
        for (long s = 0; s < sessions; s++) tok[s] = (int32_t)(i + s);
        if (tc_journal_append_rows(j, r, (int)sessions) != TC_OK) return fprintf(stderr, "%s\n", tc_error_get()), 1;
    }
    const double dt = now_s() - t0;
    int64_t n = 0;
    const double t1 = now_s();
    if (tc_journal_load(j, count, &n) != TC_OK) return fprintf(stderr, "%s\n", tc_error_get()), 1;
    const double load = now_s() - t1;
    tc_journal_close(j);
    printf("%ld sessions x %ld steps: %.1f us a step (%.2f us a session-token), load %.1f ms (%lld tokens), "
           "journal.db %.1f MB + wal %.1f MB\n",
           sessions, steps, 1e6 * dt / (double)(steps - 1), 1e6 * dt / (double)(steps - 1) / (double)sessions, 1e3 * load,
           (long long)n, (double)file_bytes(dir, "journal.db") / 1e6, (double)file_bytes(dir, "journal.db-wal") / 1e6);
    cleanup(dir, tmp);
    free(ids), free(r), free(tok);
    return 0;
}

int main(int argc, char **argv) {
    long rows = 1000000, toks = 1, sessions = 0;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atol(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) toks = atol(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--sessions") && i + 1 < argc) sessions = atol(argv[++i]);
        else return fprintf(stderr, "usage: %s [--rows N] [--tokens T] [--sessions S] [--dir D]\n", argv[0]), 2;
    }
    if (rows < 1 || toks < 1 || toks > 1 << 20 || sessions < 0 || sessions > 1 << 16)
        return fprintf(stderr, "--rows, --tokens and --sessions must be positive (--sessions at most 65536)\n"), 2;
    char tmp[] = "/tmp/tc_bench_journal_XXXXXX";
    if (!dir && !(dir = mkdtemp(tmp))) return perror("mkdtemp"), 1;
    tc_log_set_level(TC_LOG_WARN);
    tc_journal *j = NULL;
    if (tc_journal_open(&j, dir) != TC_OK) return fprintf(stderr, "%s\n", tc_error_get()), 1;
    if (sessions) return batched(j, dir, tmp, sessions, rows);
    int32_t *t = calloc((size_t)toks, 4);
    double t0 = now_s();
    if (tc_journal_create(j, "s", 1, t, toks, NULL) != TC_OK) return fprintf(stderr, "%s\n", tc_error_get()), 1;
    for (long i = 1; i < rows; i++) {
        t[0] = (int32_t)i;
        if (tc_journal_append(j, "s", t, toks) != TC_OK) return fprintf(stderr, "%s\n", tc_error_get()), 1;
    }
    SETTLE(j);
    const double append = now_s() - t0;
    int64_t n = 0;
    t0 = now_s();
    if (tc_journal_load(j, count, &n) != TC_OK) return fprintf(stderr, "%s\n", tc_error_get()), 1;
    const double load = now_s() - t0;
    t0 = now_s();
    if (tc_journal_session_delete(j, "s") != TC_OK) return fprintf(stderr, "%s\n", tc_error_get()), 1;
    const double del = now_s() - t0;
    t0 = now_s();
    SETTLE(j);
    const double purge = now_s() - t0;
    printf("rows %ld x %ld tokens: append %.2f us a row (%.2f s), load %.1f ms (%lld tokens), "
           "close holds the journal %.3f ms, background purge %.1f ms\n",
           rows, toks, 1e6 * append / (double)rows, append, 1e3 * load, (long long)n, 1e3 * del, 1e3 * purge);
    tc_journal_close(j);
    free(t);
    cleanup(dir, tmp);
    return 0;
}
