#!/usr/bin/python3
"""test_metrics_prom.py — the /metrics exposition parses with the official
Prometheus client parser and carries the values test_metrics --emit
recorded (keep in step with record_fixture in test_metrics.c). Label: unit.

usage: test_metrics_prom.py PATH/TO/test_metrics
"""
import math
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

# The metric set of DESIGN/STYLE: adding or renaming one must be deliberate.
COUNTERS = ["generated_tokens", "prompt_tokens", "syncs", "requests", "sessions_opened",
            "sessions_closed", "data_plane_bytes", "steps", "cancelled_steps", "cancelled_prefills", "cancelled_syncs", "failed_syncs", "worker_restarts",
            "worker_rebuilds", "session_failovers", "queued_behind"]
GAUGES = ["sessions_active", "requests_running", "requests_paused", "requests_resuming", "requests_queued", "large_requests", "state_bytes",
          "sync_queue_depth", "syncs_running", "ready", "draining", "generation_worker_busy_ratio", "workers_up",
          "start_time_seconds"]
HISTOGRAMS = ["time_to_first_token_seconds", "inter_token_latency_seconds", "request_queue_seconds",
              "sync_duration_seconds", "request_duration_seconds", "prefill_duration_seconds",
              "boundary_stall_seconds", "data_plane_transfer_seconds"]
BUCKETS = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
           "1", "2.5", "5", "10", "30", "60", "+Inf"]  # Go client style (shortest form)

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL", msg)


def main():
    text = subprocess.run([sys.argv[1], "--emit"], check=True, capture_output=True, text=True).stdout
    fams = {f.name: f for f in text_string_to_metric_families(text)}

    # The client parser strips _total from counter family names.
    want = {"tconst_" + c: "counter" for c in COUNTERS}
    want.update({"tconst_" + g: "gauge" for g in GAUGES})
    want.update({"tconst_" + h: "histogram" for h in HISTOGRAMS})
    check(set(fams) == set(want), f"families differ: extra {set(fams) - set(want)}, missing {set(want) - set(fams)}")
    for name, typ in want.items():
        if name in fams:
            check(fams[name].type == typ, f"{name}: type {fams[name].type}, want {typ}")
            check(fams[name].documentation.strip() != "", f"{name}: empty HELP")

    values = {}
    for f in fams.values():
        for s in f.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def val(name, **labels):
        return values.get((name, tuple(sorted(labels.items()))))

    check(val("tconst_generated_tokens_total") == 42, "generated_tokens_total")
    check(val("tconst_prompt_tokens_total") == 1000, "prompt_tokens_total")
    check(val("tconst_syncs_total") == 3, "syncs_total")
    check(val("tconst_data_plane_bytes_total") == 2.5e6, "data_plane_bytes_total")
    check(val("tconst_steps_total") == 0, "steps_total")
    for status, v in {"ok": 3, "cancelled": 1, "deadline": 0, "error": 0, "rejected": 2, "overloaded": 0}.items():
        check(val("tconst_requests_total", status=status) == v, f"requests_total{{status={status}}}")
    check(len(fams["tconst_requests"].samples) == 6, "requests_total has exactly 6 status series")
    check(val("tconst_sessions_active") == 3, "sessions_active")
    check(val("tconst_state_bytes") == 123456789, "state_bytes")
    check(val("tconst_ready") == 1, "ready")
    check(val("tconst_draining") == 0, "draining")
    check(val("tconst_generation_worker_busy_ratio") == 0.25, "busy_ratio")

    # TTFT observations 0.0001 0.0005 0.003 0.003 2 100 -> cumulative buckets
    h = "tconst_time_to_first_token_seconds"
    expect = [2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 6]
    got = [val(h + "_bucket", le=le) for le in BUCKETS]
    check(got == expect, f"{h} buckets {got}, want {expect}")
    check(val(h + "_count") == 6, f"{h}_count")
    check(math.isclose(val(h + "_sum"), 102.0066, rel_tol=1e-12), f"{h}_sum {val(h + '_sum')}")
    s = "tconst_sync_duration_seconds"
    check([val(s + "_bucket", le=le) for le in BUCKETS] == [0] * 10 + [1] * 7, f"{s} buckets")
    check(val(s + "_sum") == 0.75 and val(s + "_count") == 1, f"{s} sum/count")
    for name in HISTOGRAMS:
        fam = "tconst_" + name
        check(len([x for x in fams[fam].samples if x.name == fam + "_bucket"]) == len(BUCKETS),
              f"{fam}: {len(BUCKETS)} buckets")

    print(f"{'FAIL' if failures else 'PASS'}: {len(fams)} families, {len(values)} samples parsed, "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
