/* test_metrics.c — metric storage and Prometheus rendering: counters,
 * labelled counters, gauges, histogram buckets (le is inclusive), edge
 * values, concurrent updates from several threads. Label: unit.
 *
 * `test_metrics --emit` records a fixed set of values (the ones
 * test_metrics_prom.py expects) and prints the exposition to stdout. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/metrics.h"

static int g_fail = 0, g_n = 0;

#define EXPECT(cond, ...)                                                                      \
    do {                                                                                       \
        g_n++;                                                                                 \
        if (!(cond)) {                                                                         \
            g_fail++;                                                                          \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                             \
            printf(__VA_ARGS__);                                                               \
            printf("\n");                                                                      \
        }                                                                                      \
    } while (0)

/* Keep in step with test_metrics_prom.py. */
static void record_fixture(void) {
    tc_metrics_reset();
    tc_metric_inc(TC_M_generated_tokens_total, 42);
    tc_metric_inc(TC_M_prompt_tokens_total, 1000);
    tc_metric_inc(TC_M_syncs_total, 3);
    tc_metric_inc(TC_M_data_plane_bytes_total, 2.5e6);
    tc_metric_inc(TC_M_requests_total_ok, 3);
    tc_metric_inc(TC_M_requests_total_cancelled, 1);
    tc_metric_inc(TC_M_requests_total_rejected, 2);
    tc_metric_set(TC_G_sessions_active, 5);
    tc_metric_add(TC_G_sessions_active, -2);
    tc_metric_set(TC_G_state_bytes, 123456789);
    tc_metric_set(TC_G_ready, 1);
    tc_metric_set(TC_G_generation_worker_busy_ratio, 0.25);
    const double ttft[] = {0.0001, 0.0005, 0.003, 0.003, 2, 100};
    for (size_t i = 0; i < sizeof ttft / sizeof ttft[0]; i++)
        tc_metric_observe(TC_H_time_to_first_token_seconds, ttft[i]);
    tc_metric_observe(TC_H_sync_duration_seconds, 0.75);
}

static void test_basic(void) {
    record_fixture();
    EXPECT(tc_metric_get(TC_M_generated_tokens_total) == 42, "counter");
    EXPECT(tc_metric_get(TC_M_requests_total_ok) == 3 && tc_metric_get(TC_M_requests_total_error) == 0, "labelled");
    EXPECT(tc_metric_get_gauge(TC_G_sessions_active) == 3, "gauge set+add: %g", tc_metric_get_gauge(TC_G_sessions_active));
    tc_metric_inc(TC_M_generated_tokens_total, -5);
    tc_metric_inc(TC_M_generated_tokens_total, NAN);
    EXPECT(tc_metric_get(TC_M_generated_tokens_total) == 42, "negative / NaN counter increments are ignored");

    uint64_t count, b[TC_METRICS_N_BUCKETS + 1];
    double sum;
    tc_metric_get_histogram(TC_H_time_to_first_token_seconds, &count, &sum, b);
    EXPECT(count == 6, "count %llu", (unsigned long long)count);
    EXPECT(fabs(sum - 102.0066) < 1e-9, "sum %.17g", sum);
    /* le=0.0005 holds 0.0001 and 0.0005 (inclusive bound) */
    EXPECT(b[0] == 2, "le=0.0005: %llu", (unsigned long long)b[0]);
    EXPECT(b[2] == 2 && b[3] == 4, "le=0.0025 %llu, le=0.005 %llu", (unsigned long long)b[2], (unsigned long long)b[3]);
    EXPECT(b[11] == 5 && b[TC_METRICS_N_BUCKETS - 1] == 5 && b[TC_METRICS_N_BUCKETS] == 6, "le=2.5, le=60, +Inf");
    tc_metric_observe(TC_H_time_to_first_token_seconds, NAN);
    tc_metric_observe(TC_H_time_to_first_token_seconds, -1);
    tc_metric_get_histogram(TC_H_time_to_first_token_seconds, &count, &sum, b);
    EXPECT(count == 7 && b[0] == 3 && fabs(sum - 102.0066) < 1e-9, "NaN ignored, negative counts as 0");

    EXPECT(strcmp(tc_metric_counter_name(TC_M_requests_total_deadline), "tconst_requests_total") == 0, "name");
    EXPECT(strcmp(tc_metric_gauge_name(TC_G_ready), "tconst_ready") == 0, "gauge name");
    EXPECT(strcmp(tc_metric_histogram_name(TC_H_boundary_stall_seconds), "tconst_boundary_stall_seconds") == 0, "h");

    tc_metrics_reset();
    tc_metric_get_histogram(TC_H_time_to_first_token_seconds, &count, &sum, NULL);
    EXPECT(count == 0 && sum == 0 && tc_metric_get(TC_M_requests_total_ok) == 0 &&
               tc_metric_get_gauge(TC_G_sessions_active) == 0,
           "reset");
    printf("ok   basic\n");
}

static void test_render(void) {
    record_fixture();
    tc_metric_set(TC_G_draining, INFINITY); /* odd values render as Prometheus floats */
    tc_metric_set(TC_G_sync_queue_depth, NAN);
    char *t = tc_metrics_render();
    EXPECT(t != NULL, "render");
    if (!t) return;
    const char *want[] = {
        "# HELP tconst_generated_tokens_total ",
        "# TYPE tconst_generated_tokens_total counter\ntconst_generated_tokens_total 42\n",
        "# TYPE tconst_requests_total counter\n",
        "tconst_requests_total{status=\"ok\"} 3\n",
        "tconst_requests_total{status=\"deadline\"} 0\n",
        "tconst_requests_total{status=\"rejected\"} 2\n",
        "# TYPE tconst_sessions_active gauge\ntconst_sessions_active 3\n",
        "tconst_state_bytes 123456789\n",
        "tconst_generation_worker_busy_ratio 0.25\n",
        "tconst_draining +Inf\n",
        "tconst_sync_queue_depth NaN\n",
        "# TYPE tconst_time_to_first_token_seconds histogram\n",
        "tconst_time_to_first_token_seconds_bucket{le=\"0.0005\"} 2\n",
        "tconst_time_to_first_token_seconds_bucket{le=\"60\"} 5\n",
        "tconst_time_to_first_token_seconds_bucket{le=\"+Inf\"} 6\n",
        "tconst_time_to_first_token_seconds_sum 102.0066\n",
        "tconst_time_to_first_token_seconds_count 6\n",
        "tconst_data_plane_bytes_total 2500000\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        EXPECT(strstr(t, want[i]), "render lacks:\n%s", want[i]);
    /* every declared metric has its HELP and TYPE */
    const char *all[] = {
#define N_(name, ...) "tconst_" #name,
        TC_METRICS_COUNTERS(N_) TC_METRICS_GAUGES(N_) TC_METRICS_HISTOGRAMS(N_)
#undef N_
            "tconst_requests_total"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        char h[128];
        snprintf(h, sizeof h, "# HELP %s ", all[i]);
        EXPECT(strstr(t, h), "no HELP for %s", all[i]);
        snprintf(h, sizeof h, "# TYPE %s ", all[i]);
        EXPECT(strstr(t, h), "no TYPE for %s", all[i]);
    }
    EXPECT(t[strlen(t) - 1] == '\n', "ends with a newline");
    free(t);
    tc_metrics_reset();
    printf("ok   render\n");
}

#define N_THREADS 8
#define N_ITERS 100000

static void *hammer(void *arg) {
    (void)arg;
    for (int i = 0; i < N_ITERS; i++) {
        tc_metric_inc(TC_M_steps_total, 1);
        tc_metric_inc(TC_M_data_plane_bytes_total, 0.5);
        tc_metric_add(TC_G_requests_running, 1);
        tc_metric_add(TC_G_requests_running, -1);
        tc_metric_add(TC_G_requests_queued, 1);
        tc_metric_observe(TC_H_inter_token_latency_seconds, (i % 2) ? 0.002 : 0.5);
        if (i % 1000 == 0) free(tc_metrics_render()); /* scrapes race with writers */
    }
    return NULL;
}

static void test_threads(void) {
    tc_metrics_reset();
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) pthread_create(&th[i], NULL, hammer, NULL);
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    const double n = (double)N_THREADS * N_ITERS;
    uint64_t count, b[TC_METRICS_N_BUCKETS + 1];
    double sum;
    tc_metric_get_histogram(TC_H_inter_token_latency_seconds, &count, &sum, b);
    EXPECT(tc_metric_get(TC_M_steps_total) == n, "steps %g", tc_metric_get(TC_M_steps_total));
    EXPECT(tc_metric_get(TC_M_data_plane_bytes_total) == n / 2, "bytes %g", tc_metric_get(TC_M_data_plane_bytes_total));
    EXPECT(tc_metric_get_gauge(TC_G_requests_running) == 0, "running %g", tc_metric_get_gauge(TC_G_requests_running));
    EXPECT(tc_metric_get_gauge(TC_G_requests_queued) == n, "queued %g", tc_metric_get_gauge(TC_G_requests_queued));
    EXPECT(count == (uint64_t)n && b[3] == (uint64_t)n / 2, "histogram count %llu, le=0.005 %llu",
           (unsigned long long)count, (unsigned long long)b[3]);
    EXPECT(fabs(sum - n / 2 * 0.502) < 1e-6 * n, "histogram sum %.17g", sum);
    tc_metrics_reset();
    printf("ok   %d threads x %d updates\n", N_THREADS, N_ITERS);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--emit") == 0) {
        record_fixture();
        char *t = tc_metrics_render();
        if (!t) return 1;
        fputs(t, stdout);
        free(t);
        return 0;
    }
    test_basic();
    test_render();
    test_threads();
    printf("%s: %d checks, %d failed\n", g_fail ? "FAIL" : "PASS", g_n, g_fail);
    return g_fail ? 1 : 0;
}
