#!/usr/bin/python3
"""test_slow_reader.py — backpressure: a client that opens a long stream
(max_tokens 1000000) and stops reading does not stall other clients, and
its generation pauses instead of piling up messages in the daemon.

The stalled client's channel turns off HTTP/2 BDP probing and sets a 4 KB
stream window, so the transport fills after some tens of messages (with
the defaults, after thousands, the window growing with BDP probes); from
then on the daemon's bounded per-stream queue (--stream-queue 16) must hold
the generation. Checked by counting, not by timing: other clients run full
generations (== tconst generate) while it is stalled, and a round of 300
steps eventually adds no token for the stalled stream (tconst_generated_tokens_total grows by exactly the other
client's tokens); the stalled request stays running; the daemon's RSS stays
small; reading on resumes the stream with the right ids.
"""
import threading

import grpc
from harness import Daemon, run, wait_for

ROUND = 300
PROMPT = [11, 22, 33, 44]
# ids past what the daemon can have generated ahead of a reader: 16 queued
# messages (--stream-queue 16) of at most 8 ids (--multi-step 8) and a 4 KB
# transport window, with room to spare
RESUME_MARGIN = 3000


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=91)
    want_fast = env.generate(model, [5, 6, 7], ROUND, ignore_eos=True)
    with Daemon(env, "--stream-queue", "16", model=model) as d:
        fast = d.stub(d.channel())
        slow = d.stub(d.channel(**{"grpc.http2.bdp_probe": 0, "grpc.http2.lookahead_bytes": 4096}))
        g0 = d.metric("tconst_generated_tokens_total")
        call = slow.Generate(pb.GenerateRequest(token_ids=PROMPT, request_id="slow-reader-" + "x" * 40,
                                                sampling=env.sampling(max_tokens=1000000, ignore_eos=True)),
                             timeout=300)
        got = list(next(call).token_ids)  # it runs; now it is not read

        rounds, plateau, stalled, fast_ok = 0, None, [], True
        for rounds in range(1, 9):
            before = d.metric("tconst_generated_tokens_total")
            ids, _ = d.generate_ids(fast, [5, 6, 7], env.sampling(max_tokens=ROUND, ignore_eos=True), timeout=120)
            fast_ok &= ids == want_fast
            after = d.metric("tconst_generated_tokens_total")
            stalled.append(int(after - before - ROUND))
            if after - before == ROUND:
                plateau = int(before - g0 - ROUND * (rounds - 1))
                break
        print(f"     (stalled stream's tokens per round: {stalled})")
        ck.check(fast_ok, f"{rounds} other streams of {ROUND} tokens completed (each == tconst generate) while "
                          "one client did not read")
        ck.check(plateau is not None, f"the stalled generation pauses: a round of {ROUND} steps adds no token "
                                      "for it", f"tokens per round {stalled}")
        if plateau is not None:
            ck.check(plateau < 1000, f"the stalled stream generated a bounded number of tokens ({plateau})")
        m = d.metrics()
        ck.equal((m[("tconst_requests_running", ())], m[("tconst_sessions_active", ())]), (1, 1),
                 "the stalled request is still running (paused, not dropped)")
        rss1 = rss_kb(d.proc.pid)
        ids, _ = d.generate_ids(fast, [5, 6, 7], env.sampling(max_tokens=ROUND, ignore_eos=True), timeout=120)
        ck.equal(ids, want_fast, "one more stream after the pause is right too")
        rss2 = rss_kb(d.proc.pid)
        ck.check(0 < rss2 < 256 * 1024 and rss2 - rss1 < 32 * 1024, f"the daemon's RSS stays small "
                                                                     f"({rss1} -> {rss2} kB)")

        # the slow client reads on: the stream resumes with the right ids
        n_more = 1000
        for r in call:
            got += r.token_ids
            if len(got) >= n_more:
                break
        ck.equal(got, env.generate(model, PROMPT, len(got), ignore_eos=True),
                 f"reading on, the stalled stream resumes: {len(got)} ids == tconst generate")
        call.cancel()
        ck.check(wait_for(lambda: d.metric("tconst_requests_running") == 0, 30, "requests_running 0"),
                 "cancelled: requests_running back to 0")

    # A paused generation whose client reads again goes before new
    # requests: with one slot (--max-batch 1), A pauses and gives it up, B
    # takes it, C queues behind B. A's client reads again while B holds
    # the slot (tconst_requests_resuming 1); B ends; A takes the slot, not
    # C. Checked by counting, not timing: A's server cannot run more than
    # its unread queue ahead of its reader, so while A's reader is still
    # RESUME_MARGIN ids from A's end, A has not ended and C (which needs
    # the only slot) cannot have started.
    n_a = 6000
    with Daemon(env, "--max-batch", "1", "--stream-queue", "16", model=model) as d:
        pch = d.channel(**{"grpc.http2.bdp_probe": 0, "grpc.http2.lookahead_bytes": 4096})
        stub = d.stub(d.channel())
        a = d.stub(pch).Generate(pb.GenerateRequest(token_ids=PROMPT, request_id="resume-a-" + "x" * 40,
                                                    sampling=env.sampling(max_tokens=n_a, ignore_eos=True)),
                                 timeout=300)
        a_ids = list(next(a).token_ids)
        ck.check(wait_for(lambda: d.metric("tconst_requests_paused") == 1, 60, "A paused"),
                 "A, not read, pauses and gives up the only slot")
        b = stub.Generate(pb.GenerateRequest(token_ids=[5, 6, 7], request_id="resume-b",
                                             sampling=env.sampling(max_tokens=1000000, ignore_eos=True)), timeout=300)
        ck.check(len(next(b).token_ids) > 0, "B takes the slot and runs")
        b_end = []
        tb = threading.Thread(target=lambda: b_end.append(drain(b)))
        tb.start()
        c_msgs = []
        c = stub.Generate(pb.GenerateRequest(token_ids=[9, 8, 7], request_id="resume-c",
                                             sampling=env.sampling(max_tokens=5, ignore_eos=True)), timeout=300)

        def read_c():
            try:
                for r in c:
                    c_msgs.append(list(r.token_ids))
            except grpc.RpcError as e:
                c_msgs.append(e.code().name)
        tc = threading.Thread(target=read_c)
        tc.start()
        ck.check(wait_for(lambda: d.metric("tconst_requests_queued") == 1, 60, "C queued"),
                 "C waits for the slot B holds (tconst_requests_queued 1)")
        seen = {}

        def read_a():  # A's client reads again, to the end
            try:
                for r in a:
                    a_ids.extend(r.token_ids)
                    if "c" not in seen and len(a_ids) >= n_a - RESUME_MARGIN:
                        seen["c"] = list(c_msgs)
                        seen["queued"] = d.metric("tconst_requests_queued")
            except grpc.RpcError as e:
                seen["error"] = e.code().name
        ta = threading.Thread(target=read_a)
        ta.start()
        ck.check(wait_for(lambda: d.metric("tconst_requests_resuming") == 1, 60, "A resuming"),
                 "A's client reads again while B holds the slot: A waits for it (tconst_requests_resuming 1)")
        ck.check(stub.Abort(pb.AbortRequest(request_id="resume-b"), timeout=30).found, "Abort B")
        ta.join(240)
        tb.join(60)
        tc.join(120)
        ck.equal(a_ids, env.generate(model, PROMPT, n_a, ignore_eos=True), f"A resumes and ends: {n_a} ids == tconst generate")
        ck.equal((seen.get("c"), seen.get("queued"), seen.get("error")), ([], 1.0, None),
                 f"B's slot went to A, the resuming generation: {RESUME_MARGIN} ids before A's end, C has not started")
        want_c = env.generate(model, [9, 8, 7], 5, ignore_eos=True)
        ck.equal([t for m in c_msgs if isinstance(m, list) for t in m], want_c, "C runs after A: == tconst generate")
        ck.equal(d.metric("tconst_requests_resuming"), 0.0, "tconst_requests_resuming back to 0")


def drain(call):
    try:
        for _ in call:
            pass
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


if __name__ == "__main__":
    run("e2e slow reader", body)
