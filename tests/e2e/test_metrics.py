#!/usr/bin/python3
"""test_metrics.py — /metrics of a live daemon parses with
python3-prometheus-client's text_string_to_metric_families, has the
documented families with their types (histograms, gauges, counters), the
histograms are well formed, and the values move as requests run: token,
prompt, step, sync, session and request counters by the exact amounts,
the latency histograms by their observation counts, the session and
request gauges with what is open and running.
"""
import grpc
from prometheus_client.parser import text_string_to_metric_families

from harness import Daemon, run, wait_for

HISTOGRAMS = ["time_to_first_token_seconds", "inter_token_latency_seconds", "request_queue_seconds",
              "sync_duration_seconds"]
GAUGES = ["sessions_active", "requests_running", "requests_queued", "state_bytes"]
COUNTERS = ["generated_tokens", "prompt_tokens", "syncs", "steps", "requests", "sessions_opened",
            "sessions_closed"]


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=81)
    # syncs on the context worker (not inline), so sync_duration counts each one
    with Daemon(env, "--sync-inline-max", "0", model=model) as d:
        s = d.stub()
        st, text, hdr = d.http("/metrics", headers=True)
        ck.equal(st, 200, "GET /metrics is 200")
        ctype = {k.lower(): v for k, v in hdr.items()}.get("content-type", "")
        ck.check(ctype.startswith("text/plain") and "0.0.4" in ctype, "Content-Type is Prometheus text 0.0.4",
                 ctype)
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        for h in HISTOGRAMS:
            ck.check(fams.get("tconst_" + h) is not None and fams["tconst_" + h].type == "histogram",
                     f"tconst_{h} is a histogram")
        for g in GAUGES:
            ck.check(fams.get("tconst_" + g) is not None and fams["tconst_" + g].type == "gauge",
                     f"tconst_{g} is a gauge")
        for c in COUNTERS:  # the parser drops _total from counter family names
            ck.check(fams.get("tconst_" + c) is not None and fams["tconst_" + c].type == "counter",
                     f"tconst_{c}_total is a counter")
        statuses = {smp.labels.get("status") for smp in fams["tconst_requests"].samples}
        ck.equal(statuses, {"ok", "cancelled", "deadline", "error", "rejected", "overloaded"},
                 "requests_total has its six status series")

        m0 = d.metrics()

        def delta(m1, name, **lab):
            key = (name, tuple(sorted(lab.items())))
            return m1.get(key, 0) - m0.get(key, 0)

        # one Generate: 10 prompt tokens, 100 generated, crossing 3 windows
        prompt = list(range(40, 50))
        ids, last = d.generate_ids(s, prompt, env.sampling(max_tokens=100, ignore_eos=True))
        ck.equal(ids, env.generate(model, prompt, 100, ignore_eos=True), "a 100-token Generate (correct)")
        m1 = d.metrics()
        ck.equal(delta(m1, "tconst_generated_tokens_total"), 100, "generated_tokens_total += 100")
        ck.equal(delta(m1, "tconst_prompt_tokens_total"), 10, "prompt_tokens_total += 10")
        ck.equal(delta(m1, "tconst_requests_total", status="ok"), 1, "requests_total{status=ok} += 1")
        ck.equal(delta(m1, "tconst_time_to_first_token_seconds_count"), 1, "time_to_first_token count += 1")
        ck.equal(delta(m1, "tconst_inter_token_latency_seconds_count"), 99, "inter_token_latency count += 99")
        ck.equal(delta(m1, "tconst_request_queue_seconds_count"), 1, "request_queue count += 1")
        ck.equal(delta(m1, "tconst_steps_total"), 99, "steps_total += 99 (one step per token after the first)")
        ck.equal(delta(m1, "tconst_syncs_total"), 3, "syncs_total += 3 (window boundaries at 32, 64, 96)")
        ck.equal(delta(m1, "tconst_sync_duration_seconds_count"), 3, "sync_duration count += 3")
        ck.check(delta(m1, "tconst_time_to_first_token_seconds_sum") >= 0
                 and delta(m1, "tconst_inter_token_latency_seconds_sum") > 0, "histogram sums grow")
        ck.equal((delta(m1, "tconst_sessions_opened_total"), delta(m1, "tconst_sessions_closed_total")), (1, 1),
                 "its ephemeral session is opened and closed")
        ck.equal((m1[("tconst_requests_running", ())], m1[("tconst_sessions_active", ())],
                  m1[("tconst_state_bytes", ())]), (0, 0, 0), "afterwards nothing runs, no session, no state")

        # sessions: gauges follow what is open
        a = s.OpenSession(pb.OpenSessionRequest(token_ids=list(range(2, 80))), timeout=30)
        b = s.OpenSession(pb.OpenSessionRequest(token_ids=[5]), timeout=30)
        m2 = d.metrics()
        infos = [s.GetSession(pb.GetSessionRequest(session_id=x.session_id), timeout=30) for x in (a, b)]
        ck.equal(m2[("tconst_sessions_active", ())], 2, "two open sessions: sessions_active 2")
        ck.equal(m2[("tconst_state_bytes", ())], sum(i.state_bytes for i in infos),
                 "state_bytes == the sum of GetSession.state_bytes")
        ck.check(m2[("tconst_state_bytes", ())] > 0, "state_bytes > 0")
        ck.equal(delta(m2, "tconst_prompt_tokens_total"), 10 + 78 + 1, "prompt_tokens_total counts the opens")
        ck.equal(delta(m2, "tconst_syncs_total"), 3 + 1, "syncs_total counts the 78-token prefill's sync")

        # a running request shows in requests_running
        call = s.GenerateInSession(pb.GenerateInSessionRequest(
            session_id=a.session_id, sampling=env.sampling(max_tokens=100000, ignore_eos=True)), timeout=120)
        next(call)
        ck.check(wait_for(lambda: d.metric("tconst_requests_running") == 1, 30, "requests_running 1"),
                 "while a generation runs: requests_running 1")
        call.cancel()
        # one scrape is not atomic (counters are read before gauges): wait
        # for a snapshot where both the gauge and the counter have moved
        m3 = wait_for(lambda: (lambda m: m if m[("tconst_requests_running", ())] == 0 and
                               delta(m, "tconst_requests_total", status="cancelled") >= 1 else None)(d.metrics()), 30,
                      "requests_running 0 and the cancel counted")
        ck.check(m3 is not None, "cancelled: requests_running back to 0")
        if m3:
            ck.equal(delta(m3, "tconst_requests_total", status="cancelled"), 1, "requests_total{cancelled} += 1")
        # a deadline that passes mid-generation counts as deadline, not as
        # a cancel (gRPC core cancels the call before the engine looks)
        try:
            for _ in s.GenerateInSession(pb.GenerateInSessionRequest(
                    session_id=a.session_id, sampling=env.sampling(max_tokens=100000, ignore_eos=True)), timeout=1.0):
                pass
        except grpc.RpcError as e:
            ck.equal(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, "a 1 s deadline: DEADLINE_EXCEEDED")
        md = wait_for(lambda: (lambda m: m if m[("tconst_requests_running", ())] == 0 and
                               delta(m, "tconst_requests_total", status="deadline") >= 1 else None)(d.metrics()), 30,
                      "the deadline counted")
        ck.check(md is not None, "requests_total{deadline} += 1 for an expired deadline")
        if md:
            ck.equal(delta(md, "tconst_requests_total", status="cancelled"), 1, "... and cancelled stays at 1")
        for x in (a, b):
            s.CloseSession(pb.CloseSessionRequest(session_id=x.session_id), timeout=30)
        m4 = d.metrics()
        ck.equal((m4[("tconst_sessions_active", ())], m4[("tconst_state_bytes", ())]), (0, 0),
                 "closed: sessions_active 0, state_bytes 0")
        ck.equal(delta(m4, "tconst_sessions_closed_total"), 3, "sessions_closed_total += 3")

        # refused requests count as rejected, not as errors
        try:
            list(s.Generate(pb.GenerateRequest(token_ids=[600]), timeout=30))
        except grpc.RpcError:
            pass
        try:
            s.GetSession(pb.GetSessionRequest(session_id="nope"), timeout=30)
        except grpc.RpcError:
            pass
        try:
            s.Append(pb.AppendRequest(session_id="nope", token_ids=[3]), timeout=30)
        except grpc.RpcError:
            pass
        m5 = d.metrics()
        ck.equal((delta(m5, "tconst_requests_total", status="rejected"),
                  delta(m5, "tconst_requests_total", status="error")), (2, 0),
                 "a bad token id and an Append to an unknown session: rejected += 2, error += 0")

        # counters never go down; histograms are well formed
        for key, v in m0.items():
            if key[0].endswith("_total") or key[0].endswith("_count") or key[0].endswith("_bucket"):
                if m5.get(key, -1) < v:
                    ck.check(False, f"{key} went down", f"{v} -> {m5.get(key)}")
        ck.check(True, "no counter, _count or _bucket went down")
        for h in HISTOGRAMS:
            fam = [f for f in text_string_to_metric_families(d.http("/metrics")[1]) if f.name == "tconst_" + h][0]
            buckets = [(float(x.labels["le"]), x.value) for x in fam.samples if x.name.endswith("_bucket")]
            count = [x.value for x in fam.samples if x.name.endswith("_count")][0]
            vals = [v for _, v in sorted(buckets)]
            ck.check(len(buckets) >= 2 and buckets[-1][0] == float("inf") and vals == sorted(vals)
                     and vals[-1] == count, f"tconst_{h}: cumulative buckets, +Inf == count ({count:.0f})")

    # a limit reached is "overloaded", not "rejected"
    with Daemon(env, "--max-sessions", "1", model=model) as d:
        s = d.stub()
        m0 = d.metrics()
        s.OpenSession(pb.OpenSessionRequest(session_id="one"), timeout=30)
        code = None
        try:
            s.OpenSession(pb.OpenSessionRequest(session_id="two"), timeout=30)
        except grpc.RpcError as e:
            code = e.code()
        m1 = d.metrics()
        ck.equal((code, *(m1[("tconst_requests_total", (("status", st),))] - m0[("tconst_requests_total", (("status", st),))]
                          for st in ("overloaded", "rejected"))),
                 (grpc.StatusCode.RESOURCE_EXHAUSTED, 1, 0),
                 "a session past --max-sessions: RESOURCE_EXHAUSTED, overloaded += 1, rejected += 0")


if __name__ == "__main__":
    run("e2e metrics", body)
