#!/usr/bin/python3
"""test_overload.py TCONSTD — overload gives RESOURCE_EXHAUSTED promptly and
the daemon recovers (issue 9):

1. more sessions than --max-sessions: the sessions past the limit (Open,
   Stream, one-shot Generate, which needs a session too) get
   RESOURCE_EXHAUSTED at once, while two generations that cannot end on
   their own (a million tokens each) keep the daemon busy;
2. a flood of 400 requests from 32 threads against a full daemon: each is
   answered (RESOURCE_EXHAUSTED, none hangs, no other code), the busy
   generations run through it, and an Abort then ends them;
3. a flood of more one-shot Generates than --max-sessions +
   --max-queued-requests allow: every call ends OK or RESOURCE_EXHAUSTED,
   refusals come at once, the admitted ones all generate;
4. recovery: afterwards the whole --max-sessions can be opened again, the
   health check is SERVING and tconstd exits 0 on SIGTERM.
"Promptly" is checked with a generous bound (5 s) against generations
that run for much longer, so the test does not depend on machine speed."""
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from hardening import run, code_of, f_bytes, f_ids, f_int, sampling, decode, generation, wait_for

MAX_SESSIONS = 8
MAX_QUEUED = 4
RE = grpc.StatusCode.RESOURCE_EXHAUSTED
PROMPT_S = 5.0
LONG_TOKENS = 1_000_000  # the daemon's default --max-tokens: cannot end during the test


def body(d, ck):
    # 1. fill the daemon: MAX_SESSIONS - 2 open sessions + 2 long generations
    sids = []
    for i in range(MAX_SESSIONS - 2):
        info = decode(d.unary("OpenSession", f_ids(3, [1, 2, 3])))
        sids.append(info[1][0].decode())
    ck.check(len(sids) == MAX_SESSIONS - 2, f"{MAX_SESSIONS - 2} sessions open")
    long_res = {}

    def long_gen(i):
        n = 0
        try:
            for m in d.stream("Generate", f_bytes(1, f"long-{i}") + f_ids(3, [5, 6, 7]) +
                              f_bytes(4, sampling(LONG_TOKENS)), timeout=600, ch=d.channel()):
                n += generation(m)[0]
            long_res[i] = ("OK", n)
        except grpc.RpcError as e:
            long_res[i] = (e.code().name, n)

    busy = [threading.Thread(target=long_gen, args=(i,)) for i in range(2)]
    for t in busy:
        t.start()

    def server_info():
        r = decode(d.unary("ServerInfo", b"", timeout=30))
        return r.get(7, [0])[0], r.get(8, [0])[0]

    full = wait_for(lambda: server_info() == (MAX_SESSIONS, 2), 60)
    ck.check(full, f"the daemon is full: {MAX_SESSIONS} sessions, 2 generations running {server_info()}")
    code, dt = code_of(lambda: d.unary("OpenSession", b"", timeout=30))
    ck.check(code == RE and dt < PROMPT_S, f"OpenSession past --max-sessions -> {code.name} in {dt:.2f} s")
    code, dt = code_of(lambda: d.generate([1], 4, timeout=30))
    ck.check(code == RE and dt < PROMPT_S, f"one-shot Generate while full -> {code.name} in {dt:.2f} s")
    code, dt = code_of(lambda: list(d.ch.stream_stream(
        "/tconst.v1.TConst/Stream", request_serializer=None, response_deserializer=None)(
        iter([f_ids(3, [1]) + f_int(4, 1) + f_bytes(5, sampling(4))]), timeout=30)))
    ck.check(code == RE and dt < PROMPT_S, f"Stream while full -> {code.name} in {dt:.2f} s")

    # 2. a flood against the full daemon
    def flood_one(i):
        ch = chans[i % len(chans)]
        if i % 2:
            return code_of(lambda: d.unary("OpenSession", f_ids(3, [i % 512]), timeout=30, ch=ch))
        return code_of(lambda: d.generate([i % 512], 8, timeout=30, ch=ch))

    chans = [d.channel() for _ in range(8)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(32) as ex:
        res = list(ex.map(flood_one, range(400)))
    wall = time.monotonic() - t0
    codes = {c.name: sum(1 for r in res if r[0] == c) for c in set(r[0] for r in res)}
    worst = max(r[1] for r in res)
    ck.check(set(r[0] for r in res) == {RE}, f"flood of 400 while full: all RESOURCE_EXHAUSTED {codes}")
    ck.check(worst < PROMPT_S, f"slowest refusal {worst:.2f} s (flood took {wall:.1f} s)")
    ck.check(all(t.is_alive() for t in busy) and server_info()[1] == 2,
             "the long generations are still running through the flood")

    # 3. free the sessions, then a flood of one-shot generations
    for s in sids:
        d.unary("CloseSession", f_bytes(1, s))
    ck.check(decode(d.unary("Abort", f_bytes(1, "none"))).get(1, [0])[0] == 0, "Abort of an unknown id finds none")
    for i in range(2):
        ck.check(decode(d.unary("Abort", f_bytes(1, f"long-{i}"))).get(1, [0])[0] == 1,
                 f"Abort finds long generation {i}")
    for t in busy:
        t.join(120)
    ck.check(not any(t.is_alive() for t in busy), "the aborted generations end")
    ck.check(all(long_res.get(i, ("", 0))[0] == "CANCELLED" and 0 < long_res[i][1] < LONG_TOKENS for i in range(2)),
             f"the long generations streamed tokens, then ended CANCELLED on the Abort {long_res}")

    def gen_one(i):
        ch = chans[i % len(chans)]
        t0 = time.monotonic()
        try:
            return "OK", d.generate([i % 512, 7], 200, timeout=120, ch=ch), time.monotonic() - t0
        except grpc.RpcError as e:
            return e.code().name, 0, time.monotonic() - t0

    with ThreadPoolExecutor(64) as ex:
        res = list(ex.map(gen_one, range(64)))
    oks = [r for r in res if r[0] == "OK"]
    res_ex = [r for r in res if r[0] == RE.name]
    other = [r for r in res if r[0] not in ("OK", RE.name)]
    ck.check(not other, f"flood of 64 generations: {len(oks)} OK, {len(res_ex)} RESOURCE_EXHAUSTED, "
             f"{len(other)} other {sorted(set(r[0] for r in other))}")
    ck.check(len(oks) >= MAX_SESSIONS, f"at least --max-sessions ({MAX_SESSIONS}) of them admitted")
    ck.check(all(r[1] == 200 for r in oks), "every admitted generation delivered its 200 tokens")
    ck.check(all(r[2] < PROMPT_S for r in res_ex),
             f"refusals at once (slowest {max([r[2] for r in res_ex] or [0]):.2f} s)")

    # 4. recovery
    sess = []
    for i in range(MAX_SESSIONS):
        sess.append(decode(d.unary("OpenSession", f_ids(3, [9])))[1][0].decode())
    ck.check(len(sess) == MAX_SESSIONS, f"recovered: all {MAX_SESSIONS} sessions open again")
    code, _ = code_of(lambda: d.unary("OpenSession", b"", timeout=30))
    ck.check(code == RE, "and the next one is refused again")
    for s in sess:
        d.unary("CloseSession", f_bytes(1, s))
    ck.check(d.generate([1, 2], 16) == 16, "a Generate after it all")
    hc = decode(d.ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None,
                                 response_deserializer=None)(f_bytes(1, ""), timeout=30))
    ck.check(hc.get(1, [0])[0] == 1, "health: SERVING")


def main(tconstd):
    return run("overload", body, tconstd, "--max-sessions", str(MAX_SESSIONS), "--max-queued-requests", str(MAX_QUEUED),
               "--max-batch", "4")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
