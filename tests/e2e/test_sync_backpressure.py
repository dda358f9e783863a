#!/usr/bin/python3
"""test_sync_backpressure.py — tconstd --max-queued-syncs (DESIGN.md §5:
admission and backpressure on queued syncs).

Syncs queue for the context worker. When as many wait as the limit says,
the context workers are behind: a new request is refused with
RESOURCE_EXHAUSTED naming the knob (it would only stall at its first
boundary), while the generations already running go on once the syncs
drain. The test makes the backlog certain rather than likely: with
--sync-inline-max 0 every sync goes to the context worker, which the test
stops (SIGSTOP; --worker-timeout long enough that it is not taken for
dead). Two streams reach boundaries: one sync is in flight on the stopped
worker (tconst_syncs_running 1), the other waits (tconst_sync_queue_depth
1 = --max-queued-syncs 1); neither can change until SIGCONT. Then:
  - a new Generate gets RESOURCE_EXHAUSTED naming --max-queued-syncs;
  - after SIGCONT the queue drains, both streams go on, their ids equal
    `tconst generate`'s (nothing was lost);
  - once they end, a new Generate runs (== `tconst generate`).
"""
import os
import signal
import threading

import grpc

from harness import Daemon, run, wait_for
from test_faults import children

N = 1000000


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=13)
    prompts = [[(i * 11 + 3 + k) % 400 + 2 for i in range(9 + 5 * k)] for k in range(2)]
    want = [env.generate(model, p, 200, ignore_eos=True) for p in prompts]
    d = Daemon(env, "--sync-inline-max", "0", "--max-queued-syncs", "1", "--worker-timeout", "300", model=model)
    d.start()
    with d:
        s = d.stub()
        kids = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(children(d.proc.pid)), 30, "workers")
        ck.check(kids is not None, "a context and a generation worker", str(kids))
        if not kids:
            return
        got, errs, cv = [[], []], [None, None], threading.Condition()
        calls = [s.Generate(pb.GenerateRequest(token_ids=p, sampling=env.sampling(max_tokens=N, ignore_eos=True)),
                            timeout=240) for p in prompts]

        def reader(k):
            try:
                for r in calls[k]:
                    with cv:
                        got[k].extend(r.token_ids)
                        cv.notify_all()
            except grpc.RpcError as e:
                with cv:
                    errs[k] = e
                    cv.notify_all()
        ths = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(2)]
        for t in ths:
            t.start()
        with cv:
            ck.check(cv.wait_for(lambda: all(got), 60), "both streams generate")
        os.kill(kids["context"], signal.SIGSTOP)
        try:
            # one sync in flight on the stopped worker and one waiting: a
            # state that cannot change until SIGCONT (the context thread is
            # inside the in-flight call, so nothing takes the waiting one)
            depth = wait_for(lambda: d.metric("tconst_syncs_running") >= 1 and
                             d.metric("tconst_sync_queue_depth") >= 1, 60, "a sync in flight and one waiting")
            ck.check(depth, "with the context worker stopped, a sync is in flight and one waits")
            ck.rpc_error(lambda: d.generate_ids(s, [5, 6, 7], env.sampling(max_tokens=4, ignore_eos=True), timeout=60),
                         grpc.StatusCode.RESOURCE_EXHAUSTED, "a new Generate while 1 sync waits",
                         "--max-queued-syncs 1")
            ck.equal(d.metric("tconst_sync_queue_depth"), 1.0, "the sync still waits (the refusal was the limit's)")
        finally:
            os.kill(kids["context"], signal.SIGCONT)
        ck.check(wait_for(lambda: d.metric("tconst_sync_queue_depth") == 0, 60, "the queue drained"),
                 "after SIGCONT the queue drains")
        with cv:
            ck.check(cv.wait_for(lambda: all(len(g) >= 200 for g in got) or any(errs), 120) and not any(errs),
                     "both streams go on past 200 tokens", str(errs))
        for k in range(2):
            ck.equal(got[k][:200], want[k], f"stream {k}: its first 200 ids == tconst generate (nothing lost)")
        # (while the two streams run, their syncs can queue again: one in
        # flight, one waiting is the limit; so they end first)
        for c in calls:
            c.cancel()
        for t in ths:
            t.join(30)
        ck.check(wait_for(lambda: d.metric("tconst_sync_queue_depth") == 0 and d.metric("tconst_requests_running")
                          == 0, 60, "the streams ended"), "the streams end, no sync waits")
        ids, _ = d.generate_ids(s, [5, 6, 7], env.sampling(max_tokens=4, ignore_eos=True), timeout=60)
        ck.equal(ids, env.generate(model, [5, 6, 7], 4, ignore_eos=True), "a new Generate runs again")
    # ServerInfo names every admission limit a client can meet (DESIGN §5),
    # fractional seconds kept (an idle timeout of 0.5 s is not "0: never")
    with Daemon(env, "--max-queued-syncs", "3", "--idle-timeout", "0.5", "--large-request-budget", "8388608",
                model=model) as d:
        lim = d.stub().ServerInfo(env.pb.ServerInfoRequest(), timeout=30).limits
        ck.equal((lim.max_queued_syncs, lim.large_request_budget, lim.idle_timeout, lim.idle_timeout_seconds),
                 (3, 8388608, 0.5, 1), "ServerInfo's limits: max_queued_syncs, large_request_budget, idle_timeout "
                 "(idle_timeout_seconds rounds up: 0 would read as never)")


if __name__ == "__main__":
    run("sync_backpressure", body)
