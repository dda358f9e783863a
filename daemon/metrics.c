/* metrics.c — storage (C11 atomics) and Prometheus text rendering of the
 * metrics declared in metrics.h. Doubles live in _Atomic uint64_t as bit
 * patterns so that adds are a CAS loop with no lock and no libatomic. */
#include "metrics.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names and help, from the X-macro lists -------------------------- */

#define NAME_(name, help) "tconst_" #name,
#define HELP_(name, help) help,
static const char *const counter_names[] = {TC_METRICS_COUNTERS(NAME_)};
static const char *const counter_help[] = {TC_METRICS_COUNTERS(HELP_)};
static const char *const gauge_names[] = {TC_METRICS_GAUGES(NAME_)};
static const char *const gauge_help[] = {TC_METRICS_GAUGES(HELP_)};
static const char *const hist_names[] = {TC_METRICS_HISTOGRAMS(NAME_)};
static const char *const hist_help[] = {TC_METRICS_HISTOGRAMS(HELP_)};
#undef NAME_
#undef HELP_

#define ONE_(name, help) +1
enum { N_PLAIN_COUNTERS = 0 TC_METRICS_COUNTERS(ONE_) };
#undef ONE_

/* Labelled counters: one family row each, and one series row per value, in
 * enum order starting at N_PLAIN_COUNTERS. */
typedef struct { const char *name, *label, *help; } family;
#define FAM_(name, label, VALUES, help) {"tconst_" #name, #label, help},
static const family label_families[] = {TC_METRICS_LABELED_COUNTERS(FAM_)};
#undef FAM_

typedef struct { const char *family, *value; } series;
#define SER_V_(name, value) {"tconst_" #name, #value},
#define SER_(name, label, VALUES, help) VALUES(SER_V_, name)
static const series label_series[] = {TC_METRICS_LABELED_COUNTERS(SER_)};
#undef SER_V_
#undef SER_

#define N_FAMILIES (sizeof label_families / sizeof label_families[0])
#define N_SERIES (sizeof label_series / sizeof label_series[0])
_Static_assert(N_PLAIN_COUNTERS + N_SERIES == TC_M_COUNT_, "labelled counter table out of step with the enum");
_Static_assert(sizeof counter_names / sizeof counter_names[0] == N_PLAIN_COUNTERS, "counter names");

static const double bucket_le[TC_METRICS_N_BUCKETS] = {TC_METRICS_BUCKETS};
_Static_assert(sizeof bucket_le / sizeof bucket_le[0] == TC_METRICS_N_BUCKETS, "TC_METRICS_N_BUCKETS is wrong");

/* ---- storage --------------------------------------------------------- */

typedef struct {
    _Atomic uint64_t bucket[TC_METRICS_N_BUCKETS + 1]; /* per bucket, not cumulative; last = +Inf */
    _Atomic uint64_t sum;                              /* double bits */
} hist;

static _Atomic uint64_t counters[TC_M_COUNT_]; /* double bits */
static _Atomic uint64_t gauges[TC_G_COUNT_];   /* double bits */
static hist hists[TC_H_COUNT_];

static uint64_t d2u(double d) { uint64_t u; memcpy(&u, &d, sizeof u); return u; }
static double u2d(uint64_t u) { double d; memcpy(&d, &u, sizeof d); return d; }

static void atomic_add_double(_Atomic uint64_t *p, double v) {
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, d2u(u2d(old) + v), memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}

static double load_double(_Atomic uint64_t *p) { return u2d(atomic_load_explicit(p, memory_order_relaxed)); }

void tc_metric_inc(tc_counter c, double v) {
    if ((unsigned)c >= TC_M_COUNT_ || !(v >= 0)) return;
    atomic_add_double(&counters[c], v);
}

void tc_metric_set(tc_gauge g, double v) {
    if ((unsigned)g >= TC_G_COUNT_) return;
    atomic_store_explicit(&gauges[g], d2u(v), memory_order_relaxed);
}

void tc_metric_add(tc_gauge g, double delta) {
    if ((unsigned)g >= TC_G_COUNT_) return;
    atomic_add_double(&gauges[g], delta);
}

void tc_metric_observe(tc_histogram h, double secs) {
    if ((unsigned)h >= TC_H_COUNT_ || isnan(secs)) return;
    if (secs < 0) secs = 0; /* clock steps must not make _sum go down */
    int i = 0;
    while (i < TC_METRICS_N_BUCKETS && secs > bucket_le[i]) i++;
    atomic_fetch_add_explicit(&hists[h].bucket[i], 1, memory_order_relaxed);
    atomic_add_double(&hists[h].sum, secs);
}

double tc_metric_get(tc_counter c) { return (unsigned)c < TC_M_COUNT_ ? load_double(&counters[c]) : 0; }

double tc_metric_get_gauge(tc_gauge g) { return (unsigned)g < TC_G_COUNT_ ? load_double(&gauges[g]) : 0; }

void tc_metric_get_histogram(tc_histogram h, uint64_t *count, double *sum, uint64_t *buckets) {
    uint64_t cum = 0;
    if ((unsigned)h >= TC_H_COUNT_) h = 0;
    for (int i = 0; i <= TC_METRICS_N_BUCKETS; i++) {
        cum += atomic_load_explicit(&hists[h].bucket[i], memory_order_relaxed);
        if (buckets) buckets[i] = cum;
    }
    if (count) *count = cum;
    if (sum) *sum = load_double(&hists[h].sum);
}

const char *tc_metric_counter_name(tc_counter c) {
    if ((unsigned)c >= TC_M_COUNT_) return "";
    return (int)c < N_PLAIN_COUNTERS ? counter_names[c] : label_series[c - N_PLAIN_COUNTERS].family;
}
const char *tc_metric_gauge_name(tc_gauge g) { return (unsigned)g < TC_G_COUNT_ ? gauge_names[g] : ""; }
const char *tc_metric_histogram_name(tc_histogram h) { return (unsigned)h < TC_H_COUNT_ ? hist_names[h] : ""; }

void tc_metrics_reset(void) {
    for (int i = 0; i < TC_M_COUNT_; i++) atomic_store(&counters[i], d2u(0));
    for (int i = 0; i < TC_G_COUNT_; i++) atomic_store(&gauges[i], d2u(0));
    for (int h = 0; h < TC_H_COUNT_; h++) {
        for (int i = 0; i <= TC_METRICS_N_BUCKETS; i++) atomic_store(&hists[h].bucket[i], 0);
        atomic_store(&hists[h].sum, d2u(0));
    }
}

/* ---- rendering ------------------------------------------------------- */

/* Prometheus float text: shortest round-trip form, +Inf/-Inf/NaN. */
static void fmt_value(char *buf, size_t cap, double v) {
    if (isnan(v)) { snprintf(buf, cap, "NaN"); return; }
    if (isinf(v)) { snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf"); return; }
    if (v == trunc(v) && fabs(v) < 1e15) { snprintf(buf, cap, "%.0f", v); return; } /* 10, not 1e+01 */
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static void header(FILE *f, const char *name, const char *help, const char *type) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *tc_metrics_render(void) {
    char *out = NULL, v[40], le[40];
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f) return NULL;

    for (int c = 0; c < N_PLAIN_COUNTERS; c++) {
        header(f, counter_names[c], counter_help[c], "counter");
        fmt_value(v, sizeof v, load_double(&counters[c]));
        fprintf(f, "%s %s\n", counter_names[c], v);
    }
    for (size_t fi = 0; fi < N_FAMILIES; fi++) {
        const family *fam = &label_families[fi];
        header(f, fam->name, fam->help, "counter");
        for (size_t s = 0; s < N_SERIES; s++) {
            if (strcmp(label_series[s].family, fam->name) != 0) continue;
            fmt_value(v, sizeof v, load_double(&counters[N_PLAIN_COUNTERS + s]));
            fprintf(f, "%s{%s=\"%s\"} %s\n", fam->name, fam->label, label_series[s].value, v);
        }
    }
    for (int g = 0; g < TC_G_COUNT_; g++) {
        header(f, gauge_names[g], gauge_help[g], "gauge");
        fmt_value(v, sizeof v, load_double(&gauges[g]));
        fprintf(f, "%s %s\n", gauge_names[g], v);
    }
    for (int h = 0; h < TC_H_COUNT_; h++) {
        uint64_t b[TC_METRICS_N_BUCKETS + 1], count;
        double sum;
        /* _count is the +Inf bucket, read once, so the two always agree. */
        tc_metric_get_histogram((tc_histogram)h, &count, &sum, b);
        header(f, hist_names[h], hist_help[h], "histogram");
        for (int i = 0; i < TC_METRICS_N_BUCKETS; i++) {
            fmt_value(le, sizeof le, bucket_le[i]);
            fprintf(f, "%s_bucket{le=\"%s\"} %llu\n", hist_names[h], le, (unsigned long long)b[i]);
        }
        fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", hist_names[h], (unsigned long long)count);
        fmt_value(v, sizeof v, sum);
        fprintf(f, "%s_sum %s\n%s_count %llu\n", hist_names[h], v, hist_names[h], (unsigned long long)count);
    }
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}
