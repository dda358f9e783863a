#!/usr/bin/python3
"""test_connect_retry.py — a failed data-plane Connect is tried again, and
the pair is not used until it succeeds (DESIGN.md §4, §9).

The coordinator connects each context worker to its generation peer
(Connect: the host transport's address, or a fresh NCCL communicator on
GPUs). A Connect can fail: the peer restarted in between, NCCL's init
timed out. Before, such a failure was only logged: the pair counted as
live and every sync on it failed. Now the pair stays out of placement
(and readiness) until a later Connect succeeds; the supervisor tries again
with a backoff (0.5 s, doubling to 10 s), and the start waits for it (at
most --worker-start-timeout).

The fault is injected in the workers (TC_FAULT_CONNECT_ERRORS=N: a
worker's first N Connects fail; every new process counts afresh). Checked,
with --sync-inline-max 0 (every sync crosses the data plane):
  1. the start: three Connects fail, the fourth succeeds, and only then
     does tconstd warm up and become ready; streams over many syncs equal
     `tconst generate`;
  2. the context worker is killed mid-stream: its replacement fails three
     Connects too; the paused streams go on after it is connected, with no
     error, equal to `tconst generate`;
  3. Connects that always fail: tconstd does not start; it exits 1 naming
     the data plane and the Connect's error, after --worker-start-timeout.
"""
import os
import re
import signal

from harness import Daemon, Streams, run, wait_for
from test_faults import children

N_TOK = 150


def log_of(d):
    return open(d.log_path, "rb").read().decode(errors="replace")


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=9)
    prompts = [[(i * 29 + k * 13) % 500 + 2 for i in range(n)] for k, n in enumerate((6, 45))]
    want = [env.generate(model, p, N_TOK, ignore_eos=True) for p in prompts]
    fail_re = r"cannot connect context-\d+ to generation-\d+: .*injected fault \(TC_FAULT_CONNECT_ERRORS\); trying again"

    os.environ["TC_FAULT_CONNECT_ERRORS"] = "3"
    try:
        d = Daemon(env, "--worker-mode", "split", "--worker-timeout", "5", "--sync-inline-max", "0", model=model)
        d.start()
    finally:
        del os.environ["TC_FAULT_CONNECT_ERRORS"]  # only this daemon's workers inherit it
    with d:
        log = log_of(d)
        fails = [m.start() for m in re.finditer(fail_re, log)]
        ck.equal(len(fails), 3, "start: the first 3 Connects failed and were logged with the retry")
        linked = log.find(" sends to generation-")
        warm = log.find("warm-up done")
        ck.check(fails and linked > fails[-1], "start: a fourth Connect succeeded after them")
        ck.check(0 <= linked < warm, "start: the warm-up (and readiness) came only after the data plane was connected")
        s = d.stub()

        # 1. streams over many syncs, every one through the data plane
        for k, p in enumerate(prompts):
            got, _ = d.generate_ids(s, p, env.sampling(max_tokens=N_TOK, ignore_eos=True), timeout=120)
            ck.equal(got, want[k], f"start: stream {k} == tconst generate, {N_TOK} tokens")

        # 2. the context worker killed mid-stream; its replacement (a new
        # process: TC_FAULT_CONNECT_ERRORS counts afresh) fails 3 Connects
        kids = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(children(d.proc.pid)), 30, "both workers")
        if not ck.check(kids is not None, "tconstd has a context and a generation worker"):
            return
        st = Streams(s, [pb.GenerateRequest(token_ids=p, sampling=env.sampling(max_tokens=N_TOK, ignore_eos=True))
                         for p in prompts], pause_at=20)
        got, errors = st.got, st.errors
        ck.check(st.wait_paused(), "kill: every stream reached 20 tokens and paused")
        n_before = len(re.findall(fail_re, log_of(d)))
        os.kill(kids["context"], signal.SIGKILL)
        st.resume()
        ck.check(st.join(), "kill: every stream ended (no hang)")
        ck.equal([repr(e) if e else None for e in errors], [None] * len(prompts), "kill: no stream saw an error")
        for k in range(len(prompts)):
            ck.equal(got[k], want[k], f"kill: stream {k} == uninterrupted tconst generate, {N_TOK} tokens")
        # the streams may have ended before the kill (nothing then waits
        # for the new worker): its Connects are awaited, not read once
        fails_after = wait_for(lambda: (lambda k: k if k >= 3 else None)(len(re.findall(fail_re, log_of(d))) - n_before),
                               120, "the new context worker's 3 failed Connects")
        ck.equal(fails_after, 3, "kill: the new context worker's first 3 Connects failed")
        ck.check(wait_for(lambda: log_of(d).count(" sends to generation-") >= 2, 120, "a later Connect"),
                 "kill: and a later one connected it")
        ck.check(wait_for(lambda: d.metric("tconst_workers_up") == 2.0, 120, "both workers up"),
                 "kill: both workers are up at the end")

    # 3. Connects that never succeed: no start, a clear error
    os.environ["TC_FAULT_CONNECT_ERRORS"] = "1000"
    try:
        d = Daemon(env, "--worker-mode", "split", "--worker-start-timeout", "3", model=model, wait_ready=False)
        d.start()
    finally:
        del os.environ["TC_FAULT_CONNECT_ERRORS"]
    with d:
        rc = d.wait_exit(120)
        ck.equal(rc, 1, "never connected: tconstd exits 1")
        log = log_of(d)
        ck.check(re.search(r"error: cannot connect the data plane of context-\d+ to generation-\d+ \(within "
                           r"--worker-start-timeout 3 s\): .*TC_FAULT_CONNECT_ERRORS", log) is not None,
                 "never connected: the error names the data plane, the timeout and the Connect's error")
        ck.check(d.ready_line is None and "warm-up done" not in log, "never connected: it never became ready")


if __name__ == "__main__":
    run("connect_retry", body)
