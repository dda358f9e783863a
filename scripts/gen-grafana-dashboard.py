#!/usr/bin/python3
"""gen-grafana-dashboard.py — writes helm/tconst/dashboards/tconst.json (the
Grafana dashboard the chart ships, metrics.grafanaDashboard) to stdout:
  /usr/bin/python3 scripts/gen-grafana-dashboard.py > helm/tconst/dashboards/tconst.json
The chart test checks that every metric it queries is one tconstd exports."""
import json
S = '{namespace="$namespace", pod=~"$pod"}'
def sel(m, extra=""):
    inner = S[1:-1] + (", " + extra if extra else "")
    return f"{m}{{{inner}}}"
def rate(m, extra=""):
    return f"rate({sel(m, extra)}[$__rate_interval])"
def q(qs, h):
    return f"histogram_quantile({qs}, sum by (le) ({rate(h + '_bucket')}))"
DS = {"type": "prometheus", "uid": "${datasource}"}
panels = []
pid = [0]
y = [0]
def row(title):
    pid[0] += 1
    panels.append({"id": pid[0], "type": "row", "title": title, "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1
x = [0]
def panel(title, targets, unit, desc, kind="timeseries", w=8, h=8):
    pid[0] += 1
    if x[0] + w > 24:
        x[0] = 0
        y[0] += h
    p = {"id": pid[0], "type": kind, "title": title, "description": desc, "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": x[0], "y": y[0]},
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
         "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": e, "legendFormat": l}
                     for i, (e, l) in enumerate(targets)]}
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    panels.append(p)
    x[0] += w
def endrow(h=8):
    x[0] = 0
    y[0] += h
def quantiles(title, hist, desc, qs=("0.5", "0.99")):
    panel(title, [(q(x_, hist), f"p{int(float(x_) * 100)}") for x_ in qs], "s", desc)
row("Traffic")
panel("Tokens / s", [(f"sum({rate('tconst_generated_tokens_total')})", "generated"),
                     (f"sum({rate('tconst_prompt_tokens_total')})", "prompt")], "short",
      "Tokens generated and prompt tokens accepted per second, all coordinators of the selection.")
panel("Requests / s by outcome", [(f"sum by (status) ({rate('tconst_requests_total')})", "{{status}}")], "reqps",
      "Finished requests per second: ok, cancelled, deadline, error; refused at admission: overloaded (RESOURCE_EXHAUSTED at a limit) and rejected (invalid, unknown or busy session, draining).")
panel("Requests in flight", [(f"sum({sel('tconst_requests_running')})", "running"),
                             (f"sum({sel('tconst_requests_queued')})", "queued"),
                             (f"sum({sel('tconst_requests_paused')})", "paused (client not reading)"),
                             (f"sum({sel('tconst_requests_resuming')})", "resuming"),
                             (f"sum({sel('tconst_large_requests')})", "large (over 16 KiB)")], "short",
      "Running requests (prefill or generating), admitted ones waiting for a --max-batch slot, generations paused by a slow reader, and requests over 16 KiB handled off the RPC thread.")
endrow()
row("Latency")
quantiles("Time to first token", "tconst_time_to_first_token_seconds",
          "From request arrival to its first streamed token (queueing and prefill included).", ("0.5", "0.9", "0.99"))
quantiles("Inter-token latency", "tconst_inter_token_latency_seconds",
          "Between consecutive streamed tokens of one request. A multi-step run delivers several at once and shares its time among them.")
quantiles("Boundary stall", "tconst_boundary_stall_seconds",
          "Time a generating session waits at a window boundary for its sync (DESIGN: about one sync). The other sessions keep generating.")
endrow()
quantiles("Request queue time", "tconst_request_queue_seconds",
          "Admission to first step: grows when --max-batch slots are the bottleneck.")
quantiles("Request duration", "tconst_request_duration_seconds",
          "Arrival to last response.")
quantiles("Prefill duration", "tconst_prefill_duration_seconds",
          "One request's append or prefill, of any length.")
endrow()
row("Syncs and workers")
panel("Syncs / s", [(f"sum({rate('tconst_syncs_total')})", "syncs / s")], "short",
      "Global synchronizations completed per second (on the context workers, or inline in the batch when short).")
quantiles("Sync duration", "tconst_sync_duration_seconds",
          "One sync on a context worker: linear in the session's history.")
panel("Sync queue", [(f"sum({sel('tconst_sync_queue_depth')})", "waiting"),
                     (f"sum({sel('tconst_syncs_running')})", "running")], "short",
      "Syncs waiting for a context worker (earliest deadline first) and running now. A queue that keeps growing: add context workers.")
endrow()
panel("Generation busy", [(f"avg({sel('tconst_generation_worker_busy_ratio')})", "mean"),
                          (f"max({sel('tconst_generation_worker_busy_ratio')})", "busiest coordinator")], "percentunit",
      "Fraction of recent wall time the generation threads spent in steps. Near 1: the generation workers are the bottleneck.")
panel("Steps / s", [(f"sum({rate('tconst_steps_total')})", "batched hit steps / s")], "short",
      "Generation steps executed (one batched hit step each; a multi-step call counts its longest run).")
panel("Workers", [(f"sum({sel('tconst_workers_up')})", "up"),
                  (f"sum(increase({sel('tconst_worker_restarts_total')}[1h]))", "restarts, last hour"),
                  (f"sum(increase({sel('tconst_worker_rebuilds_total')}[1h]))", "session copies rebuilt, last hour"),
                  (f"sum(increase({sel('tconst_session_failovers_total')}[1h]))", "session fail-overs, last hour")], "short",
      "Worker processes answering their supervisor (0 with in-process workers); restarts, session copies rebuilt from their history and sessions moved to another pair, each over the hour before the point.")
endrow()
panel("Data plane", [(f"sum({rate('tconst_data_plane_bytes_total')})", "bytes / s")], "Bps",
      "Session state shipped from context to generation workers.")
quantiles("Data plane transfer", "tconst_data_plane_transfer_seconds",
          "Time to ship one session state to its generation peer and install it.")
panel("Sessions", [(f"sum({sel('tconst_sessions_active')})", "open"),
                   (f"sum({rate('tconst_sessions_opened_total')}) * 60", "opened / min"),
                   (f"sum({rate('tconst_sessions_closed_total')}) * 60", "closed / min")], "short",
      "Open sessions, and sessions opened and closed per minute (by clients, idle expiry or the end of a plain Generate).")
endrow()
panel("Session state", [(f"sum({sel('tconst_state_bytes')})", "state")], "bytes",
      "Bytes of session state held: constant per TConstFormer session whatever its length.", w=8)
panel("Cancelled work", [(f"sum({rate('tconst_cancelled_steps_total')})", "steps"),
                         (f"sum({rate('tconst_cancelled_prefills_total')})", "prefills"),
                         (f"sum({rate('tconst_cancelled_syncs_total')})", "syncs"),
                         (f"sum({rate('tconst_failed_syncs_total')})", "failed syncs")], "short",
      "Work stopped because its request was cancelled or past its deadline, and syncs that failed with an error, per second.", w=8)
panel("Ready", [(f"min({sel('tconst_ready')})", "ready (min)"), (f"max({sel('tconst_draining')})", "draining (max)")], "short",
      "1 when every selected coordinator accepts requests; draining after SIGTERM.", kind="stat", w=4)
panel("Uptime", [(f"min(time() - {sel('tconst_start_time_seconds')})", "youngest coordinator")], "s",
      "Since the most recent coordinator start.", kind="stat", w=4)
dash = {
    "uid": "tconst-overview", "title": "tconst", "tags": ["tconst"], "editable": True, "schemaVersion": 39, "version": 1,
    "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "graphTooltip": 1,
    "description": "tconst coordinators: traffic, latency, syncs and workers (docs/metrics.md). Needs the namespace and pod labels the Prometheus Operator's ServiceMonitor adds.",
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
        {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DS, "refresh": 2,
         "query": {"query": "label_values(tconst_ready, namespace)", "refId": "ns"}, "definition": "label_values(tconst_ready, namespace)"},
        {"name": "pod", "label": "Coordinator", "type": "query", "datasource": DS, "refresh": 2, "multi": True,
         "includeAll": True, "allValue": ".*",
         "query": {"query": "label_values(tconst_ready{namespace=\"$namespace\"}, pod)", "refId": "pod"},
         "definition": "label_values(tconst_ready{namespace=\"$namespace\"}, pod)"},
    ]},
    "panels": panels,
}
print(json.dumps(dash, indent=2))
