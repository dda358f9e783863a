/* metrics.h — every tconstd metric, declared once as X-macro lists, kept
 * in process-wide atomics and rendered as Prometheus text (format 0.0.4).
 *
 * Exported name = "tconst_" + the name below. Units are in the name
 * (_seconds, _bytes, _total for counters, _ratio). docs/metrics.md says
 * what each one means.
 *
 * Updates are lock-free atomics, safe from any thread and cheap enough for
 * the per-token path. There is no registry, no dynamic labels and no
 * per-thread aggregation: the only labelled metric is requests_total, whose
 * `status` label takes a fixed set of values, each its own counter
 * (TC_M_requests_total_ok, ...). This file does not serve HTTP (http.h). */
#ifndef TC_METRICS_H
#define TC_METRICS_H

#include <stdint.h>

/* X(name, help) — counters: monotonically increasing. */
#define TC_METRICS_COUNTERS(X)                                                              \
    X(generated_tokens_total, "Tokens generated (sampled and streamed) across all requests") \
    X(prompt_tokens_total, "Prompt tokens accepted (appended or prefilled) across all requests") \
    X(syncs_total, "Completed syncs (context window folded into the state)")                  \
    X(sessions_opened_total, "Sessions opened")                                               \
    X(sessions_closed_total, "Sessions closed, by the client or by expiry")                   \
    X(data_plane_bytes_total, "Bytes moved between workers on the data plane")                \
    X(steps_total, "Generation steps executed (one batched hit step each)")                   \
    X(cancelled_steps_total, "Steps whose result was dropped because the request was cancelled or past its deadline") \
    X(cancelled_prefills_total, "Prefills stopped part way because the request was cancelled or past its deadline") \
    X(cancelled_syncs_total, "Syncs at a window boundary stopped part way because the generation waiting for them was cancelled or past its deadline") \
    X(failed_syncs_total, "Syncs at a window boundary that failed with an error (tried again; a generation ends after 3 in a row)") \
    X(worker_restarts_total, "Worker processes restarted by tconstd after they exited or stopped answering") \
    X(worker_rebuilds_total, "Session copies rebuilt on a worker from the coordinator's token history (after a restart, or a failed or cancelled call on a both-roles worker)") \
    X(session_failovers_total, "Sessions moved to another worker pair after theirs stayed down past its recovery budget") \
    X(queued_behind_total, "Requests, forks and snapshots that came while their session's last request was ending and waited for it to let go of the session")

/* Labelled counters: X(name, label, VALUES, help), where VALUES(V, name)
 * expands V(name, value) once per allowed label value. Each (name, value)
 * pair is its own counter TC_M_<name>_<value>, exported as
 * tconst_<name>{<label>="<value>"}. */
#define TC_METRICS_REQUEST_STATUSES(V, name) \
    V(name, ok) V(name, cancelled) V(name, deadline) V(name, error) V(name, rejected) V(name, overloaded)

#define TC_METRICS_LABELED_COUNTERS(X) \
    X(requests_total, status, TC_METRICS_REQUEST_STATUSES, "Finished requests by outcome")

/* X(name, help) — gauges: current values, set or moved by deltas. */
#define TC_METRICS_GAUGES(X)                                                                  \
    X(sessions_active, "Sessions currently open")                                             \
    X(requests_running, "Requests in their prefill or generating")                             \
    X(requests_paused, "Generations paused over a second by a client not reading: no batch slot held") \
    X(requests_resuming, "Paused generations whose client reads again, waiting for a batch slot before new requests") \
    X(requests_queued, "Requests admitted and waiting to run")                                \
    X(large_requests, "Requests over 16 KiB handled off the RPC thread (text tokenized, ids checked): queued or running") \
    X(state_bytes, "Bytes of session state held (K/V windows and synced state)")              \
    X(sync_queue_depth, "Syncs waiting for a context worker")                                 \
    X(syncs_running, "Syncs running now on context workers")                                  \
    X(ready, "1 when the server accepts new requests, else 0")                                \
    X(draining, "1 while draining after SIGTERM, else 0")                                     \
    X(generation_worker_busy_ratio, "Fraction of recent wall time the generation threads spent executing steps (mean)") \
    X(workers_up, "Worker processes answering their supervisor (0 with in-process workers)")       \
    X(start_time_seconds, "Unix time the coordinator process started, in seconds")

/* X(name, help) — histograms, all in seconds, buckets TC_METRICS_BUCKETS. */
#define TC_METRICS_HISTOGRAMS(X)                                                              \
    X(time_to_first_token_seconds, "Time from request arrival to its first streamed token")   \
    X(inter_token_latency_seconds, "Time between consecutive streamed tokens of one request")  \
    X(request_queue_seconds, "Time a request waited between admission and its first step")    \
    X(sync_duration_seconds, "Duration of one sync on the context worker")                    \
    X(request_duration_seconds, "Time from request arrival to its last response")             \
    X(prefill_duration_seconds, "Duration of a request's prefill: its tokens appended on the workers")                             \
    X(boundary_stall_seconds, "Time a generating session waited at a window boundary for its sync") \
    X(data_plane_transfer_seconds, "Time to ship one session state from a context worker to its generation peer and install it")

/* Upper bounds (le) of the latency buckets, seconds; +Inf is implicit. */
#define TC_METRICS_BUCKETS \
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
#define TC_METRICS_N_BUCKETS 16 /* finite buckets; +Inf is one more */

#define TC_METRICS_ENUM_(name, help) TC_M_##name,
#define TC_METRICS_ENUM_LV_(name, value) TC_M_##name##_##value,
#define TC_METRICS_ENUM_L_(name, label, VALUES, help) VALUES(TC_METRICS_ENUM_LV_, name)
typedef enum {
    TC_METRICS_COUNTERS(TC_METRICS_ENUM_)
    TC_METRICS_LABELED_COUNTERS(TC_METRICS_ENUM_L_)
    TC_M_COUNT_
} tc_counter;
#undef TC_METRICS_ENUM_
#undef TC_METRICS_ENUM_LV_
#undef TC_METRICS_ENUM_L_

#define TC_METRICS_ENUM_(name, help) TC_G_##name,
typedef enum { TC_METRICS_GAUGES(TC_METRICS_ENUM_) TC_G_COUNT_ } tc_gauge;
#undef TC_METRICS_ENUM_

#define TC_METRICS_ENUM_(name, help) TC_H_##name,
typedef enum { TC_METRICS_HISTOGRAMS(TC_METRICS_ENUM_) TC_H_COUNT_ } tc_histogram;
#undef TC_METRICS_ENUM_

/* Counters: v >= 0; a negative or NaN v is ignored (counters never go down). */
void tc_metric_inc(tc_counter c, double v);
/* Gauges. */
void tc_metric_set(tc_gauge g, double v);
void tc_metric_add(tc_gauge g, double delta);
/* Histograms: one observation, seconds. NaN is ignored; a negative value
 * (a clock step) counts as 0 so that _sum never goes down. */
void tc_metric_observe(tc_histogram h, double secs);

/* Reads, for tests and ServerInfo. */
double tc_metric_get(tc_counter c);
double tc_metric_get_gauge(tc_gauge g);
/* Any out pointer may be NULL. buckets receives TC_METRICS_N_BUCKETS + 1
 * cumulative counts (last = +Inf = count), as exported. */
void tc_metric_get_histogram(tc_histogram h, uint64_t *count, double *sum, uint64_t *buckets);

/* "tconst_<name>" of a metric (labelled counters: without the label). */
const char *tc_metric_counter_name(tc_counter c);
const char *tc_metric_gauge_name(tc_gauge g);
const char *tc_metric_histogram_name(tc_histogram h);

/* The whole exposition, HELP/TYPE lines included; malloc'd, caller frees.
 * NULL only when out of memory. */
char *tc_metrics_render(void);

/* Zeroes everything (tests only: not atomic with respect to writers). */
void tc_metrics_reset(void);

#endif
