#!/usr/bin/python3
"""test_queue_wakeup.py — a job queued behind a full batch starts when a
running job ends. With --max-batch 1 two sessions generate at once, round
after round: the second waits in the queue until the first retires. The
engine used to signal only its idle condition on a retirement, so a
queued job could miss its wakeup and wait out the client's deadline (the
review that found it saw 4-9 of 100 rounds hang). Each round must finish
both streams, with every token, inside the deadline; the deadline only
bounds a hang, nothing here is timed. In-process and split workers, with
and without a journal.
"""
import os
import tempfile
import threading

import grpc

from harness import Daemon, run

ROUNDS = 60


def rounds(env, ck, label, *args):
    pb = env.pb
    with Daemon(env, "--max-batch", "1", *args, model=env.model("tconstformer", seed=5)) as d:
        stub = d.stub()
        sids = [stub.OpenSession(pb.OpenSessionRequest(token_ids=[1, 2, 3]), timeout=30).session_id
                for _ in range(2)]
        bad = []
        for it in range(ROUNDS):
            res = {}

            def gen(k):
                try:
                    msgs = list(stub.GenerateInSession(
                        pb.GenerateInSessionRequest(session_id=sids[k], token_ids=[5],
                                                    sampling=env.sampling(max_tokens=3, ignore_eos=True)),
                        timeout=60))  # bounds a missed wakeup only: generous for a loaded machine (ASan)
                    res[k] = sum(len(m.token_ids) for m in msgs)
                except grpc.RpcError as e:
                    res[k] = e.code().name

            ts = [threading.Thread(target=gen, args=(k,)) for k in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            if res != {0: 3, 1: 3}:
                bad.append((it, res))
        ck.check(not bad, f"{label}: {ROUNDS} rounds of two streams through a batch of one, each got its 3 tokens",
                 f"rounds that did not: {bad[:5]}")


def body(env, ck):
    rounds(env, ck, "in-process", "--worker-mode", "inprocess")
    with tempfile.TemporaryDirectory(dir=env.tmp) as dd:
        rounds(env, ck, "in-process, journal", "--worker-mode", "inprocess", "--data-dir", dd)
    rounds(env, ck, "split workers")


if __name__ == "__main__":
    run("e2e queue_wakeup", body)
