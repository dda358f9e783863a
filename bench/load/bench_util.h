/* bench_util.h — the small helpers tconst-load and tconst-soak share: a
 * monotonic clock, the RSS of a process, a comparator for sorting, strict
 * parsing of numeric flag values. */
#ifndef TC_BENCH_UTIL_H
#define TC_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double tc_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* VmRSS of pid in kB from /proc/PID/status, -1 when unreadable */
static inline long tc_bench_rss_kb(int pid) {
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    fclose(f);
    return kb;
}

static inline int tc_bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* the value of flag `name` as a number in [lo, hi]: the whole string (so
 * "10s" or "" is refused); prints why to stderr and returns -1 when not */
static inline int tc_bench_arg_num(const char *prog, const char *name, const char *v, double lo, double hi,
                                   double *out) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || x != x) {
        fprintf(stderr, "%s: %s: '%s' is not a number\n", prog, name, v);
        return -1;
    }
    if (x < lo || x > hi) {
        fprintf(stderr, "%s: %s: %s is out of range [%g, %g]\n", prog, name, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* the same for an integer flag (a whole number within [lo, hi]) */
static inline int tc_bench_arg_int(const char *prog, const char *name, const char *v, long long lo, long long hi,
                                   long long *out) {
    double x;
    if (tc_bench_arg_num(prog, name, v, (double)lo, (double)hi, &x)) return -1;
    if (x != (double)(long long)x) {
        fprintf(stderr, "%s: %s: '%s' is not an integer\n", prog, name, v);
        return -1;
    }
    *out = (long long)x;
    return 0;
}

#endif
