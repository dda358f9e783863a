#!/usr/bin/python3
"""test_liveness.py — /healthz reports a wedged daemon (the liveness probe
of the Helm chart restarts it), and only a wedged one.

tconstd's watchdog takes the engine's lock every second; /healthz answers
503 once the lock has not been free for --liveness-timeout seconds, or the
gRPC thread has been inside one event that long. The wedge is injected
(TC_FAULT_ENGINE_WEDGE=1, test-only: a request with request_id "wedge"
takes the engine's lock on the gRPC thread and never lets it go, as a
deadlock would). Checked, with --liveness-timeout 1:
  - before it, /healthz is 200 while requests run;
  - after it, /healthz turns 503 and the log says why ("not alive");
  - this daemon is then killed (SIGKILL: its gRPC thread cannot drain).
Not wedged, the engine's lock is never held for a second: the whole e2e
suite passed with a watchdog that aborted tconstd on any such hold.
"""
import os
import signal
import threading

from harness import Daemon, run, wait_for


def body(env, ck):
    model = env.model("tconstformer", seed=4)
    os.environ["TC_FAULT_ENGINE_WEDGE"] = "1"
    try:
        d = Daemon(env, "--liveness-timeout", "1", model=model)
        d.start()
    finally:
        del os.environ["TC_FAULT_ENGINE_WEDGE"]
    try:
        s = d.stub()
        ids, _ = d.generate_ids(s, [5, 6, 7], env.sampling(max_tokens=40, ignore_eos=True), timeout=60)
        ck.equal((len(ids), d.http("/healthz")[0]), (40, 200), "a generation runs, /healthz 200")

        def wedge():
            try:
                d.generate_ids(s, [5, 6, 7], env.sampling(max_tokens=4), request_id="wedge", timeout=5)
            except Exception:  # noqa: BLE001 -- it never answers: DEADLINE_EXCEEDED
                pass
        threading.Thread(target=wedge, daemon=True).start()
        ck.check(wait_for(lambda: d.http("/healthz", timeout=5)[0] == 503, 30, "healthz 503"),
                 "the wedged daemon: /healthz 503")
        log = open(d.log_path, "rb").read().decode(errors="replace")
        ck.check("not alive:" in log and "--liveness-timeout 1.0" in log, "the log says why it is not alive",
                 log[-400:])
    finally:
        d.proc.send_signal(signal.SIGKILL)  # the gRPC thread is stuck: no drain
        d.proc.wait()
        d.proc = None


if __name__ == "__main__":
    run("liveness", body)
