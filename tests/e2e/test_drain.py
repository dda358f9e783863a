#!/usr/bin/python3
"""test_drain.py — SIGTERM with streams in flight.

1. --drain-timeout 300: a stream whose client has stopped reading (so it is
   paused by backpressure and cannot finish) keeps the daemon draining.
   Meanwhile: a Health Watch receives NOT_SERVING, Check says NOT_SERVING,
   /readyz is 503 (/healthz still 200), new Generate / OpenSession get
   UNAVAILABLE, and an open session cannot take new work. Then the client
   reads on: its stream completes normally with every token (== tconst
   generate), as does a second stream that kept reading; the daemon exits 0.
2. --drain-timeout 1, SIGHUP: a generation of max_tokens 1000000 cannot finish; once
   the drain timeout expires it ends with UNAVAILABLE (the ids it got are
   right), so does a paused one, and the daemon exits 0.
3. --drain-timeout 600: an idle Stream (waiting for its client) ends with
   UNAVAILABLE "server shutting down" as soon as nothing runs, and a second
   SIGTERM during a drain cancels a running generation: either way the
   daemon exits 0 without waiting out the timeout.
"""
import queue
import signal
import threading

import grpc

from harness import Daemon, run, wait_for

N_PAUSED = 3000  # far more than the stalled transport and --stream-queue hold (test_slow_reader: < 1000)
N_READING = 1000


def drain_completes(env, ck):
    pb, hpb = env.pb, env.health_pb
    model = env.model("tconstformer", seed=71)
    # the references first: run after SIGTERM they would eat into the drain
    # (under ASan, minutes); the daemon is not involved in them
    want_reading = env.generate(model, [4, 5, 6], N_READING, ignore_eos=True)
    want_paused = env.generate(model, [1, 2, 3], N_PAUSED, ignore_eos=True)
    # --drain-timeout is a hard deadline on everything after SIGTERM (the
    # rest of the reading stream, then all of the paused one): generous, as
    # are the calls' deadlines, which count from before the SIGTERM
    with Daemon(env, "--drain-timeout", "300", "--stream-queue", "16", model=model) as d:
        ch = d.channel()
        s, h = d.stub(ch), d.health(ch)
        sid = s.OpenSession(pb.OpenSessionRequest(token_ids=[7, 7, 7]), timeout=30).session_id

        watch_ev = queue.Queue()
        watch = h.Watch(hpb.HealthCheckRequest(), timeout=300)

        def watcher():
            try:
                for m in watch:
                    watch_ev.put(m.status)
            except grpc.RpcError as e:
                watch_ev.put(e.code())

        threading.Thread(target=watcher, daemon=True).start()
        ck.equal(watch_ev.get(timeout=30), hpb.HealthCheckResponse.SERVING, "Watch starts SERVING")

        # stream 1: read one message, then stop reading (paused by
        # backpressure: on its own channel with a 4 KB stream window that
        # never grows, and long messages (a 48-byte request_id), so its ids
        # cannot all wait in the buffers and the generation cannot finish
        # until the client reads)
        pch = d.channel(**{"grpc.http2.lookahead_bytes": 4096, "grpc.http2.bdp_probe": 0})
        paused = d.stub(pch).Generate(pb.GenerateRequest(token_ids=[1, 2, 3], request_id="paused-" + "x" * 40,
                                                         sampling=env.sampling(max_tokens=N_PAUSED, ignore_eos=True)),
                                      timeout=300)
        first = next(paused)
        # stream 2: read throughout, in a thread
        reading_res = {}
        reading_started = threading.Event()

        def reading():
            ids = []
            try:
                for r in s.Generate(pb.GenerateRequest(token_ids=[4, 5, 6], sampling=env.sampling(
                        max_tokens=N_READING, ignore_eos=True)), timeout=300):
                    ids += r.token_ids
                    reading_started.set()
                    reading_res["last"] = r
                reading_res["status"] = "OK"
            except grpc.RpcError as e:
                reading_res["status"] = e.code()
            reading_res["ids"] = ids
            reading_started.set()

        rt = threading.Thread(target=reading)
        rt.start()
        reading_started.wait(60)

        d.signal(signal.SIGTERM)
        ck.equal(watch_ev.get(timeout=30), hpb.HealthCheckResponse.NOT_SERVING,
                 "on SIGTERM the Watch receives NOT_SERVING")
        ck.check(wait_for(lambda: d.http("/readyz")[0] == 503, 30, "/readyz 503"), "/readyz flips to 503")
        ck.equal(d.http("/healthz")[0], 200, "/healthz stays 200 while draining")
        ck.equal(h.Check(hpb.HealthCheckRequest(), timeout=30).status, hpb.HealthCheckResponse.NOT_SERVING,
                 "Health/Check says NOT_SERVING while draining")
        UN = grpc.StatusCode.UNAVAILABLE
        ck.rpc_error(lambda: s.Generate(pb.GenerateRequest(token_ids=[1], sampling=env.sampling(max_tokens=2)),
                                        timeout=30), UN, "a new Generate while draining", "draining")
        ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(token_ids=[1]), timeout=30), UN,
                     "a new OpenSession while draining", "draining")
        ck.rpc_error(lambda: s.Append(pb.AppendRequest(session_id=sid, token_ids=[1]), timeout=30), UN,
                     "an Append to an open session while draining", "draining")
        info = s.ServerInfo(pb.ServerInfoRequest(), timeout=30)
        ck.check(info.draining and info.requests_running >= 1, "ServerInfo says draining, a request running",
                 str(info))
        m = d.metrics()
        ck.equal((m.get(("tconst_draining", ())), m.get(("tconst_ready", ()))), (1.0, 0.0),
                 "metrics: tconst_draining 1, tconst_ready 0")
        rt.join(300)
        ck.equal(reading_res.get("status"), "OK", "the reading stream ends OK")
        ck.equal(reading_res.get("ids"), want_reading,
                 f"it delivered all {N_READING} ids (== tconst generate)")
        info = s.ServerInfo(pb.ServerInfoRequest(), timeout=30)
        ck.check(d.proc.poll() is None and info.requests_running == 1,
                 "the daemon waits for the paused stream (the one request still running)", str(info))

        # the paused client reads on: its stream completes normally
        ids = list(first.token_ids)
        last = first
        status = "OK"
        try:
            for r in paused:
                ids += r.token_ids
                last = r
        except grpc.RpcError as e:
            status = e.code()
        ck.equal(status, "OK", "the paused stream ends OK after SIGTERM")
        ck.equal(ids, want_paused, f"it delivered all {N_PAUSED} ids (== tconst generate)")
        ck.equal(last.finish_reason, pb.FINISH_REASON_LENGTH, "its finish_reason is LENGTH")
        rc = d.wait_exit()
        ck.equal(rc, 0, "the daemon exits 0 once the streams are done")
        try:
            while True:
                ev = watch_ev.get(timeout=30)
                if not isinstance(ev, int):
                    break
        except queue.Empty:
            ev = None
        ck.equal(ev, UN, "the Watch ends with UNAVAILABLE at shutdown")


def drain_timeout(env, ck):
    """The same drain, from SIGHUP (a closed terminal): not the default
    kill mid-stream. (Its disposition set to the default in the child: a
    run under nohup would have it ignored, and tconstd keeps it so.)"""
    pb = env.pb
    model = env.model("tconstformer", seed=71)
    with Daemon(env, "--drain-timeout", "1", model=model,
                preexec=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL)) as d:
        s = d.stub()
        call = s.Generate(pb.GenerateRequest(token_ids=[1, 2, 3], sampling=env.sampling(
            max_tokens=1000000, ignore_eos=True)), timeout=300)
        ids = list(next(call).token_ids)
        paused = s.Generate(pb.GenerateRequest(token_ids=[1, 2, 3], sampling=env.sampling(
            max_tokens=1000000, ignore_eos=True)), timeout=300)
        next(paused)  # running, then unread: paused by backpressure
        d.signal(signal.SIGHUP)
        status, details, last = "OK", "", None
        try:
            for r in call:
                ids += r.token_ids
                last = r
        except grpc.RpcError as e:
            status, details = e.code(), e.details()
        ck.equal(status, grpc.StatusCode.UNAVAILABLE, "a stream still running at the drain timeout gets "
                                                      "UNAVAILABLE")
        # the engine ends it with a last message (finish_reason CANCELLED)
        # and "server shutting down"; when its status is still queued behind
        # unsent messages as the gRPC server stops, the client sees gRPC's
        # own "Cancelling all calls" instead: either way UNAVAILABLE
        print(f"     ({details!r}; last finish_reason {last.finish_reason if last else None})")
        ck.check(0 < len(ids) < 1000000, f"it stopped early ({len(ids)} ids)")
        n = min(len(ids), 500)
        ck.equal(ids[:n], env.generate(model, [1, 2, 3], n, ignore_eos=True), "the ids it got were right")
        ck.equal(d.wait_exit(), 0, "the daemon exits 0 after the drain timeout")
        with open(d.log_path, errors="replace") as f:
            ck.check("(Hangup): draining" in f.read(), "SIGHUP drained it (the log names the signal)")
        status, details, n = "OK", "", 0
        try:
            for r in paused:
                n += len(r.token_ids)
        except grpc.RpcError as e:
            status, details = e.code(), e.details()
        ck.equal(status, grpc.StatusCode.UNAVAILABLE, f"a paused stream ends with UNAVAILABLE too "
                                                      f"(after {n} more ids)")
        print(f"     ({details!r})")


def drain_idle_and_second_signal(env, ck):
    """--drain-timeout 600 (far past the harness's wait for an exit): a
    Stream waiting for its client's next request does not hold the exit
    once the running work is done -- it ends with tconstd's UNAVAILABLE
    "server shutting down", not gRPC's at the end of the grace; and a second
    signal during a drain cancels what still runs (a generation of 1M
    tokens: UNAVAILABLE, right ids), so the daemon exits 0 at once."""
    pb = env.pb
    model = env.model("tconstformer", seed=71)
    with Daemon(env, "--drain-timeout", "600", model=model) as d:
        s = d.stub()
        q = queue.Queue()
        q.put(pb.StreamRequest(token_ids=[1, 2, 3]))
        st = s.Stream(iter(q.get, None), timeout=300)
        ck.equal(next(st).appended.length, 3, "an idle Stream: its append answered, no generation")
        q2 = queue.Queue()  # and one that has sent nothing yet
        silent = s.Stream(iter(q2.get, None), timeout=300)
        # a call after it on the same connection: the silent one's headers
        # came first, so the server holds it once this one is answered
        s.ModelInfo(pb.ModelInfoRequest(), timeout=30)
        d.signal(signal.SIGTERM)
        status, details = "OK", ""
        try:
            for _ in st:
                pass
        except grpc.RpcError as e:
            status, details = e.code(), e.details()
        ck.equal((status, details), (grpc.StatusCode.UNAVAILABLE, "server shutting down"),
                 "the idle Stream ends with tconstd's UNAVAILABLE once the drain has nothing left to run")
        status2 = "OK"
        try:
            for _ in silent:
                pass
        except grpc.RpcError as e:
            status2 = e.code()
        ck.equal(status2, grpc.StatusCode.UNAVAILABLE, "the Stream that sent nothing ends with UNAVAILABLE")
        ck.equal(d.wait_exit(), 0, "the daemon exits 0 without waiting out --drain-timeout 600")
        ck.check("1 calls that sent no request yet: cancelled" in open(d.log_path, errors="replace").read(),
                 "... cancelled at the shutdown (the log counts it), not waited for")
        q.put(None)
        q2.put(None)
    with Daemon(env, "--drain-timeout", "600", model=model) as d:
        s = d.stub()
        call = s.Generate(pb.GenerateRequest(token_ids=[1, 2, 3], sampling=env.sampling(
            max_tokens=1000000, ignore_eos=True)), timeout=300)
        ids, err = list(next(call).token_ids), [None]

        def reader():
            try:
                for r in call:
                    ids.extend(r.token_ids)
            except grpc.RpcError as e:
                err[0] = e

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        d.signal(signal.SIGTERM)
        log = lambda: open(d.log_path, errors="replace").read()
        ck.check(wait_for(lambda: "draining" in log() or None, 60, "the drain's log line"), "the first SIGTERM drains")
        d.signal(signal.SIGTERM)
        th.join(120)
        ck.check(not th.is_alive() and err[0] is not None and err[0].code() == grpc.StatusCode.UNAVAILABLE,
                 "a second SIGTERM during the drain ends the running generation with UNAVAILABLE", repr(err[0]))
        n = min(len(ids), 300)
        ck.check(0 < len(ids) < 1000000 and ids[:n] == env.generate(model, [1, 2, 3], n, ignore_eos=True),
                 f"its ids were right ({len(ids)})")
        ck.equal(d.wait_exit(), 0, "the daemon exits 0 without waiting out --drain-timeout 600")
        ck.check("during the drain: cancelling what still runs" in log(), "the log says why")


def body(env, ck):
    drain_completes(env, ck)
    drain_timeout(env, ck)
    drain_idle_and_second_signal(env, ck)


if __name__ == "__main__":
    run("e2e drain", body)
