#!/usr/bin/python3
"""test_concurrency.py — 64 concurrent streaming Generates (threads, four
channels): 62 complete and each equals `tconst generate` for its prompt and
parameters; one client cancels mid-stream and one has a 3 s deadline on a
generation that cannot finish in time. Both end (CANCELLED /
DEADLINE_EXCEEDED), /metrics counts them (requests_total cancelled +
deadline grows by 2), requests_running and sessions_active return to 0,
and the daemon still serves.
"""
import threading
import time

import grpc

from harness import Daemon, run, wait_for

N_CALLS = 64
N_TOKENS = 120
PROMPTS = [[5, 6, 7], [100, 200, 300, 400, 500], list(range(2, 70)), [511] * 33]
PARAMS = [dict(), dict(temperature=0.8, top_k=40, top_p=0.9, seed=7)]
CANCEL_AT = 20
DEADLINE_S = 3.0  # the deadline client: long enough to be admitted among 64 under the sanitizers


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=51)
    kinds = [(p, q) for p in range(len(PROMPTS)) for q in range(len(PARAMS))]
    want = {k: env.generate(model, PROMPTS[k[0]], N_TOKENS, ignore_eos=True, **PARAMS[k[1]]) for k in kinds}
    with Daemon(env, model=model) as d:
        chans = [d.channel() for _ in range(4)]
        stubs = [d.stub(ch) for ch in chans]
        m0 = d.metrics()
        barrier = threading.Barrier(N_CALLS)
        results = [None] * N_CALLS
        CANCEL, DEADLINE = 10, 37  # which callers misbehave

        def caller(i):
            stub = stubs[i % len(stubs)]
            k = kinds[i % len(kinds)]
            long_run = i in (CANCEL, DEADLINE)
            sp = env.sampling(max_tokens=1000000 if long_run else N_TOKENS, ignore_eos=True, **PARAMS[k[1]])
            req = pb.GenerateRequest(token_ids=PROMPTS[k[0]], sampling=sp, request_id=f"c{i}")
            ids, last = [], None
            barrier.wait(60)
            try:
                call = stub.Generate(req, timeout=DEADLINE_S if i == DEADLINE else 120)
                for r in call:
                    ids += r.token_ids
                    last = r
                    if i == CANCEL and len(ids) >= CANCEL_AT:
                        call.cancel()
                results[i] = ("ok", ids, last)
            except grpc.RpcError as e:
                results[i] = (e.code(), ids, e.details())

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(N_CALLS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        ck.check(not any(t.is_alive() for t in threads), "all 64 callers returned")
        print(f"     (64 streams in {time.monotonic() - t0:.1f} s)")

        good = 0
        for i, res in enumerate(results):
            if i in (CANCEL, DEADLINE) or res is None:
                continue
            k = kinds[i % len(kinds)]
            if res[0] == "ok" and res[1] == want[k] and res[2].finish_reason == pb.FINISH_REASON_LENGTH:
                good += 1
            else:
                print(f"     caller {i}: {res[0]} {len(res[1])} ids, {res[1][:8]}... want {want[k][:8]}...")
        ck.equal(good, N_CALLS - 2, f"{N_CALLS - 2} undisturbed streams each == tconst generate "
                                    f"({N_TOKENS} ids, finish LENGTH)")
        rc = results[CANCEL]
        ck.check(rc is not None and rc[0] == grpc.StatusCode.CANCELLED and len(rc[1]) >= CANCEL_AT,
                 "the cancelling client ends with CANCELLED after its first tokens",
                 str(rc and (rc[0], len(rc[1]))))
        k = kinds[CANCEL % len(kinds)]
        n = min(len(rc[1]), N_TOKENS)
        ck.equal(rc[1][:n], want[k][:n], "the cancelled stream's tokens were right up to the cancel")
        rd = results[DEADLINE]
        ck.check(rd is not None and rd[0] == grpc.StatusCode.DEADLINE_EXCEEDED,
                 "the 3 s deadline client ends with DEADLINE_EXCEEDED", str(rd and rd[0]))
        k = kinds[DEADLINE % len(kinds)]
        n = min(len(rd[1]), N_TOKENS)
        ck.equal(rd[1][:n], want[k][:n], f"the deadline stream's tokens ({len(rd[1])}) were right until it ended")

        # the server let go of both: nothing runs, nothing is open, and the
        # two show up in requests_total as cancelled or deadline
        def idle():
            m = d.metrics()
            return m if (m[("tconst_requests_running", ())] == 0 and m[("tconst_requests_queued", ())] == 0
                         and m[("tconst_sessions_active", ())] == 0) else None

        m1 = wait_for(idle, 30, "requests_running, requests_queued, sessions_active back to 0")
        ck.check(m1 is not None, "requests_running, requests_queued and sessions_active return to 0")
        if m1 is not None:
            def grew(name, **lab):
                key = (name, tuple(sorted(lab.items())))
                return m1.get(key, 0) - m0.get(key, 0)
            stopped = grew("tconst_requests_total", status="cancelled") + grew("tconst_requests_total",
                                                                              status="deadline")
            ck.equal(stopped, 2, "requests_total{status=cancelled|deadline} grew by 2")
            ck.equal(grew("tconst_requests_total", status="ok"), N_CALLS - 2, "requests_total{status=ok} grew by 62")
            ck.check(grew("tconst_cancelled_steps_total") >= 1, "cancelled_steps_total grew")
            gen = grew("tconst_generated_tokens_total")
            ck.check((N_CALLS - 2) * N_TOKENS + CANCEL_AT <= gen, "generated_tokens_total counts the 62 streams",
                     f"{gen}")
            # the stopped requests generate nothing more: the counter is
            # still where it was once a later request has come and gone
            d.generate_ids(stubs[0], [5, 6, 7], env.sampling(max_tokens=5, ignore_eos=True))
            m2 = wait_for(idle, 30, "idle again")
            ck.equal(m2 and m2[("tconst_generated_tokens_total", ())] - m1[("tconst_generated_tokens_total", ())], 5,
                     "afterwards generated_tokens_total moves only by a new request's tokens")
        ids, _ = d.generate_ids(stubs[1], PROMPTS[0], env.sampling(max_tokens=N_TOKENS, ignore_eos=True))
        ck.equal(ids, want[(0, 0)], "the daemon still serves a correct Generate")


if __name__ == "__main__":
    run("e2e concurrency", body)
