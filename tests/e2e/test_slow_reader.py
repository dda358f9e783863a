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
from harness import Daemon, run, wait_for

ROUND = 300
PROMPT = [11, 22, 33, 44]


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


if __name__ == "__main__":
    run("e2e slow reader", body)
