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

        # The other way round: a new session whose prompt crosses a window
        # boundary needs a copy on the context worker (an Open, then its
        # prefill) while session L's boundary sync of P history tokens runs
        # there: its first token comes while that sync still runs. L's 16
        # tokens from a history of 24 mod 32 cross exactly one boundary, so
        # L is still unfinished exactly while that one sync runs.
        # (Session 29: the Open queued behind the sync on the context
        # thread; the new request's token came ~20 s later, with L's.)
        n_l = P - P % 32 + 24
        lid = stub.OpenSession(pb.OpenSessionRequest(token_ids=(b_prompt * 2)[:n_l]),
                               timeout=600).session_id
        l_done = threading.Event()

        def l_run():
            for _ in stub.GenerateInSession(pb.GenerateInSessionRequest(
                    session_id=lid, sampling=env.sampling(max_tokens=16, ignore_eos=True)), timeout=600):
                pass
            l_done.set()

        lt = threading.Thread(target=l_run)
        lt.start()
        ck.check(wait_for(lambda: (d.metric("tconst_syncs_running") or 0) >= 1 or l_done.is_set(), 120,
                          "L's sync running"), "L's boundary sync runs on the context worker")
        c_prompt = [(i * 13) % 300 + 11 for i in range(40)]  # 40 > W_og 32: a prefill through the context worker
        c_ids, _ = d.generate_ids(stub, c_prompt, env.sampling(max_tokens=1, ignore_eos=True), timeout=600)
        # L's sync is the only one that can be running now (the new request
        # is done, L crosses one boundary): still running means the new
        # request did not wait for it (when it did, it ended within ms of
        # L's sync, after the gauge went back to 0)
        still = (d.metric("tconst_syncs_running") or 0) >= 1 and not l_done.is_set()
        ck.check(still, f"a new 40-token request's first token came while L's sync of ~{n_l} history tokens "
                        "still ran", "L's sync had ended: the new session's Open or prefill waited behind it")
        lt.join(600)
        ck.equal(c_ids, env.generate(model, c_prompt, 1, ignore_eos=True), "its token equals tconst generate")


if __name__ == "__main__":
    run("e2e prefill_overlap", body)
