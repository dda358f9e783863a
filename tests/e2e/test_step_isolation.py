#!/usr/bin/python3
"""test_step_isolation.py — one session's failed step ends its own request,
not the batch it stepped in (DESIGN.md §9: no session loses data).

The generation worker steps every running session in one batched call. A
session at a window boundary whose context is short is synced inside that
call (--sync-inline-max); its sync can fail on its own (memory refused).
The step readies each session apart first (tc_step_ready): the one that
fails is left out with its error, the rest of the batch steps without it.

The fault is injected with TC_FAULT_STEP_SYNC_AT=F (test-only, read by
tconst-worker and by the in-process worker): an inline sync of a session
whose history holds exactly F tokens fails. In each layout (split, one
worker with both roles, in-process):
  - stream B (a prompt longer than F, so it never holds F tokens at a
    boundary) generates up to 1M tokens; once its first token has
    arrived, request A starts with a prompt 3 tokens short of F = 3 W;
  - A ends with INTERNAL naming the injected fault, after the tokens it
    generated before the boundary, each equal to `tconst generate`'s;
  - B goes on: once it has 2 W more tokens than when A ended (a boundary
    crossed since) the test cancels it; it saw no error but that cancel,
    and its tokens equal `tconst generate`'s token for token;
  - the worker's log says the failed session was left out of a batch of 2
    or more sessions (so B really was in A's batch), and the engine's that
    the rest of the batch stepped;
  - a request after it runs clean, and tconst_syncs_total does not count
    the failed inline sync.
"""
import json
import os
import re
import threading

import grpc

from harness import Daemon, run

N_B = 1000000
N_A = 40


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=7)
    W = json.load(open(os.path.join(model, "config.json")))["generate_window"]
    F = 3 * W
    prompt_a = [(i * 13 + 5) % 500 + 2 for i in range(F - 3)]
    prompt_b = [(i * 31 + 7) % 500 + 2 for i in range(4 * W + 5)]
    want_a = env.generate(model, prompt_a, N_A, ignore_eos=True)
    for layout in ("split", "both", "inprocess"):
        os.environ["TC_FAULT_STEP_SYNC_AT"] = str(F)
        try:
            d = Daemon(env, "--worker-mode", layout, "--sync-inline-max", "1000000", model=model)
            d.start()
        finally:
            del os.environ["TC_FAULT_STEP_SYNC_AT"]  # only this daemon (and its workers) inherit it
        with d:
            s = d.stub()
            got_b, err_b, cv = [], [None], threading.Condition()
            call_b = s.Generate(pb.GenerateRequest(token_ids=prompt_b, sampling=env.sampling(
                max_tokens=N_B, ignore_eos=True)), timeout=240)

            def reader():
                try:
                    for r in call_b:
                        with cv:
                            got_b.extend(r.token_ids)
                            cv.notify_all()
                except grpc.RpcError as e:
                    err_b[0] = e
                finally:
                    with cv:
                        err_b.append("ended")
                        cv.notify_all()

            th = threading.Thread(target=reader, daemon=True)
            th.start()
            with cv:
                ck.check(cv.wait_for(lambda: got_b or len(err_b) > 1, 120) and err_b[0] is None,
                         f"{layout}: stream B is generating")
            got_a, err_a = [], None
            try:
                for r in s.Generate(pb.GenerateRequest(token_ids=prompt_a, sampling=env.sampling(
                        max_tokens=N_A, ignore_eos=True)), timeout=120):
                    got_a += r.token_ids
            except grpc.RpcError as e:
                err_a = e
            with cv:
                n_then = len(got_b)
                ck.check(cv.wait_for(lambda: len(got_b) >= n_then + 2 * W or len(err_b) > 1, 120) and
                         err_b[0] is None, f"{layout}: stream B went on after A ended ({n_then} tokens then)")
            call_b.cancel()
            th.join(120)
            ck.check(not th.is_alive(), f"{layout}: stream B ended")
            ck.check(err_a is not None and err_a.code() == grpc.StatusCode.INTERNAL and
                     "injected fault (TC_FAULT_STEP_SYNC_AT)" in err_a.details(),
                     f"{layout}: A ends with INTERNAL naming the failed inline sync", repr(err_a))
            ck.check(0 < len(got_a) < N_A and got_a == want_a[:len(got_a)],
                     f"{layout}: A's tokens before its boundary equal tconst generate's ({len(got_a)})")
            ck.check(err_b[0] is not None and err_b[0].code() == grpc.StatusCode.CANCELLED,
                     f"{layout}: stream B saw no error but the test's cancel", repr(err_b[0]))
            ck.equal(got_b, env.generate(model, prompt_b, len(got_b), ignore_eos=True),
                     f"{layout}: stream B == tconst generate, {len(got_b)} tokens")
            log = open(d.log_path, "rb").read().decode(errors="replace")
            sizes = [int(m.group(2)) for m in re.finditer(r"(\d+) of (\d+) sessions left out of the batch", log)]
            ck.check(sizes and max(sizes) >= 2,
                     f"{layout}: the worker left A out of a batch of 2 or more sessions (batches {sizes})")
            ck.check("its step failed, the rest of the batch of" in log,
                     f"{layout}: the engine ended A alone and stepped the rest")
            again, _ = d.generate_ids(s, prompt_b[:W + 2], env.sampling(max_tokens=W, ignore_eos=True),
                                      timeout=120)
            ck.equal(again, env.generate(model, prompt_b[:W + 2], W, ignore_eos=True),
                     f"{layout}: the next request runs clean")
            # a failed inline sync is no sync: A again adds to
            # tconst_syncs_total what a request with its prompt that stops
            # before the boundary adds (its prefill's)
            m0 = d.metric("tconst_syncs_total")
            d.generate_ids(s, prompt_a, env.sampling(max_tokens=2, ignore_eos=True), timeout=120)
            m1 = d.metric("tconst_syncs_total")
            try:
                d.generate_ids(s, prompt_a, env.sampling(max_tokens=N_A, ignore_eos=True), timeout=120)
            except grpc.RpcError:
                pass
            m2 = d.metric("tconst_syncs_total")
            ck.equal(m2 - m1, m1 - m0, f"{layout}: tconst_syncs_total does not count the failed inline sync")


if __name__ == "__main__":
    run("step_isolation", body)
