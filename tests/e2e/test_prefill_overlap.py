#!/usr/bin/python3
"""test_prefill_overlap.py — a long prefill does not hold up another
session's boundary syncs (DESIGN §5: a session's stall at a boundary is
about one sync). Prefills run on a compute thread (worker) or engine
thread (in-process) of their own, in their own workspace, so a
generating session crosses its window boundaries (each a sync on the
context side, its history past --sync-inline-max) while another request's
prompt of P tokens prefills.

Checked by order of events, not by time: session A (a 700-token history,
so its syncs go to the context side) generates 256 tokens -- 8 window
boundaries of the model's W_og = 32 -- and finishes while B's prefill,
started before A's boundaries, is still running (B's first token not yet
out). A's tokens equal `tconst generate`, B's the same request run alone. Before the change A waited at
its first boundary until B's prefill had ended.
"""
import os
import threading

import grpc

from harness import Daemon, run, wait_for

SLOW = bool(os.environ.get("ASAN_OPTIONS"))
P = 100_000 if SLOW else 300_000  # B's prompt: seconds of prefill with the wide zip below
A_TOKENS = 256


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=5, wide_zip=True)
    a_prompt = [(i * 31) % 400 + 3 for i in range(700)]
    b_prompt = [(i * 7919 + 13) % 500 + 7 for i in range(P)]
    want_a = env.generate(model, a_prompt, A_TOKENS, ignore_eos=True)
    with Daemon(env, model=model) as d:
        stub = d.stub()
        sid = stub.OpenSession(pb.OpenSessionRequest(token_ids=a_prompt), timeout=120).session_id
        a_ids, b_ids, b_done = [], [], threading.Event()
        a_call = stub.GenerateInSession(pb.GenerateInSessionRequest(
            session_id=sid, sampling=env.sampling(max_tokens=A_TOKENS, ignore_eos=True)), timeout=600)
        a_ids += next(a_call).token_ids  # A runs (its start is done) before B's prefill takes the start thread
        starts0 = d.metric("tconst_request_queue_seconds_count") or 0

        def b_run():
            try:
                for m in stub.Generate(pb.GenerateRequest(token_ids=b_prompt, sampling=env.sampling(
                        max_tokens=1, ignore_eos=True)), timeout=600):
                    b_ids.extend(m.token_ids)
            except grpc.RpcError as e:
                b_ids.append(e.code().name)
            b_done.set()

        bt = threading.Thread(target=b_run)
        bt.start()
        ck.check(wait_for(lambda: (d.metric("tconst_request_queue_seconds_count") or 0) > starts0 or b_done.is_set(),
                          60, "B's prefill starting"), "B's prefill starts")
        for m in a_call:  # A's remaining tokens: its boundaries, while B prefills
            a_ids += m.token_ids
        b_running = not b_done.is_set()
        ck.check(b_running, f"A's {A_TOKENS} tokens (8 window boundaries, each a sync of ~1K history tokens) "
                            f"came while B's {P}-token prefill was still running",
                 "B ended first: A's syncs waited behind B's prefill")
        ck.equal(a_ids, want_a, "A's tokens equal tconst generate")
        bt.join(600)
        # B's prompt is too long for a command line: its reference is the
        # same request again, alone
        alone, _ = d.generate_ids(stub, b_prompt, env.sampling(max_tokens=1, ignore_eos=True), timeout=600)
        ck.check(len(b_ids) == 1 and b_ids == alone, "B's first token equals the same request run alone",
                 f"{b_ids} vs {alone}")


if __name__ == "__main__":
    run("e2e prefill_overlap", body)
