#!/usr/bin/python3
"""test_liveness.py — /healthz reports a wedged daemon (the liveness probe
of the Helm chart restarts it), and only a wedged one.

tconstd's watchdog takes the engine's lock every second; /healthz answers
503 once the lock has not been free for --liveness-timeout seconds, or the
gRPC thread has been inside one event that long. The wedges are injected
(TC_FAULT_ENGINE_WEDGE=1, test-only), one detector at a time, each in a
daemon of its own with --liveness-timeout 5 (not the minimum, 2: /healthz
must still be 200 after a generation on a loaded machine, under ASan too):
  - request_id "wedge-lock": the request is refused and a thread takes
    the engine's lock for ever (the gRPC thread stays free): /healthz
    turns 503 and the log names the engine's lock;
  - request_id "wedge-rpc": the gRPC thread stops inside the call (the
    engine's lock free): /healthz turns 503 and the log names the gRPC
    thread.
Before the wedge /healthz is 200 while a generation runs. The daemons are
then killed (SIGKILL: they cannot drain). Not wedged, the engine's lock is
never held for a second: the whole e2e suite passed with a watchdog that
aborted tconstd on any such hold. A --liveness-timeout below 2 s (the
watchdog looks every second) is refused at start-up.
"""
import os
import signal
import subprocess
import threading

import grpc

from harness import Daemon, run, wait_for


def wedged(env, ck, model, kind, reason):
    os.environ["TC_FAULT_ENGINE_WEDGE"] = "1"
    try:
        d = Daemon(env, "--liveness-timeout", "5", model=model)
        d.start()
    finally:
        del os.environ["TC_FAULT_ENGINE_WEDGE"]
    try:
        s = d.stub()
        ids, _ = d.generate_ids(s, [5, 6, 7], env.sampling(max_tokens=40, ignore_eos=True), timeout=60)
        ck.equal((len(ids), d.http("/healthz")[0]), (40, 200), f"{kind}: a generation runs, /healthz 200")
        if kind == "wedge-lock":
            ck.rpc_error(lambda: d.generate_ids(s, [5, 6, 7], env.sampling(max_tokens=4), request_id=kind, timeout=30),
                         grpc.StatusCode.INTERNAL, f"{kind}: the request that wedges the engine", "TC_FAULT_ENGINE_WEDGE")
        else:
            def call():
                try:
                    d.generate_ids(s, [5, 6, 7], env.sampling(max_tokens=4), request_id=kind, timeout=5)
                except grpc.RpcError:
                    pass  # it never answers: DEADLINE_EXCEEDED
            threading.Thread(target=call, daemon=True).start()
        # the wedge lasts for ever: the wait only bounds a failure
        ck.check(wait_for(lambda: d.http("/healthz", timeout=5)[0] == 503, 60, "healthz 503"),
                 f"{kind}: the wedged daemon: /healthz 503")
        log = open(d.log_path, "rb").read().decode(errors="replace")
        ck.check("not alive: " + reason in log and "--liveness-timeout 5.0" in log,
                 f"{kind}: the log says why: {reason}", log[-400:])
    finally:
        d.proc.send_signal(signal.SIGKILL)  # wedged: no drain
        d.proc.wait()
        d.proc = None


def body(env, ck):
    model = env.model("tconstformer", seed=4)
    wedged(env, ck, model, "wedge-lock", "the engine's lock not free for")
    wedged(env, ck, model, "wedge-rpc", "the gRPC thread inside one event for")
    r = subprocess.run([env.tconstd, "--model", model, "--liveness-timeout", "1"], capture_output=True, text=True,
                       timeout=60)
    ck.check(r.returncode == 2 and "--liveness-timeout 1" in r.stderr and "at least 2" in r.stderr,
             "--liveness-timeout 1: refused at start-up", f"rc {r.returncode} {r.stderr[-200:]}")


if __name__ == "__main__":
    run("liveness", body)
