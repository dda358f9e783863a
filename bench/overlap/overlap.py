#!/usr/bin/env python3
"""overlap.py TCONSTD TCONST [SRC] — does a sync overlap the other sessions'
generation? (DESIGN.md §5: generation throughput while syncs run vs none.)

16 light sessions generate concurrently, first alone, then while 4 heavy
sessions with a long history (a sync costs ~0.1-1 s each) generate beside
them, so a heavy sync is due every few steps. The light sessions' aggregate
token rate in the second phase over the first is the overlap ratio. The
layouts run side by side in one invocation: split worker processes (the
default), one both-roles worker, the in-process context thread, and
in-process with --no-overlap-syncs (syncs inline in the batch). Also
prints the heavy sessions' boundary stall vs their sync time, from /metrics.
A benchmark, not a test: it prints figures and asserts nothing.
Run: /usr/bin/python3 bench/overlap/overlap.py build/tconstd build/tconst"""
import os, sys, threading, time, urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "e2e"))
from harness import Env, Daemon  # noqa: E402

env = Env()
pb = env.pb
LIGHT, HEAVY = 16, int(os.environ.get("HEAVY", "4"))
HIST = int(os.environ.get("HIST", "65536"))
TOKENS = int(os.environ.get("TOKENS", "192"))


def metric(d, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}/metrics", timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def light_phase(stub):
    """16 concurrent generations of TOKENS tokens; returns tokens/s."""
    done = []

    def one(i):
        n = 0
        for r in stub.Generate(pb.GenerateRequest(token_ids=[1 + i, 2, 3],
                                                  sampling=env.sampling(max_tokens=TOKENS, ignore_eos=True))):
            n += len(r.token_ids)
        done.append(n)

    t0 = time.monotonic()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(LIGHT)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done) / (time.monotonic() - t0)


rows = []
def log(*a):
    print(*a, file=sys.stderr, flush=True)

# layouts side by side: worker processes (the default), the in-process
# context thread, and syncs inline in the batch (the no-overlap baseline)
LAYOUTS = [("split workers", ["--worker-mode", "split"]),
           ("both-roles worker", ["--worker-mode", "both"]),
           ("in-process threads", ["--worker-mode", "inprocess"]),
           ("in-process inline", ["--worker-mode", "inprocess", "--no-overlap-syncs"])]
only = os.environ.get("LAYOUTS")
for mode, flags in LAYOUTS:
    if only and mode.split()[0] not in only.split(","):
        continue
    with Daemon(env, *flags, "--max-batch", "64", *os.environ.get("DAEMON_ARGS", "").split()) as d:
        stub = d.stub()
        # heavy sessions: a long history each (its prefill is one sync)
        ids = [(i * 7919) % 500 + 2 for i in range(HIST)]
        heavy = []
        for k in range(HEAVY):
            # staggered lengths: their window boundaries fall on different steps
            s = stub.OpenSession(pb.OpenSessionRequest(token_ids=ids[: HIST - 8 * k - 1]))
            heavy.append(s.session_id)
        log(mode, "heavy sessions open"); r_alone = light_phase(stub); log("alone", r_alone)
        sync_n0, sync_s0 = metric(d, "tconst_sync_duration_seconds_count"), metric(d, "tconst_sync_duration_seconds_sum")
        stall_n0, stall_s0 = metric(d, "tconst_boundary_stall_seconds_count"), metric(d, "tconst_boundary_stall_seconds_sum")
        streams = [stub.GenerateInSession(pb.GenerateInSessionRequest(
            session_id=sid, sampling=env.sampling(max_tokens=1000000, ignore_eos=True))) for sid in heavy]
        readers = [threading.Thread(target=lambda it=it: [None for _ in it], daemon=True) for it in streams]
        for t in readers:
            t.start()
        log("heavy streams started"); r_sync = light_phase(stub); log("with syncs", r_sync)
        sync_n = metric(d, "tconst_sync_duration_seconds_count") - sync_n0
        sync_s = metric(d, "tconst_sync_duration_seconds_sum") - sync_s0
        stall_n = metric(d, "tconst_boundary_stall_seconds_count") - stall_n0
        stall_s = metric(d, "tconst_boundary_stall_seconds_sum") - stall_s0
        for it in streams:
            it.cancel()
        rows.append((mode, r_alone, r_sync, sync_n, sync_s / max(sync_n, 1), stall_s / max(stall_n, 1)))

print(f"\noverlap benchmark: {LIGHT} light sessions x {TOKENS} tokens; {HEAVY} heavy sessions with {HIST}-token "
      f"histories generating beside them (tiny model, {os.cpu_count()} CPUs)\n")
print(f"{'layout':22s} {'light tok/s alone':>18s} {'with heavy syncs':>17s} {'ratio':>7s} {'syncs':>6s} "
      f"{'mean sync s':>12s} {'mean stall s':>13s}")
for mode, a, b, n, ms, st in rows:
    print(f"{mode:22s} {a:18.1f} {b:17.1f} {b / a:7.2f} {n:6.0f} {ms:12.3f} {st:13.3f}")
print("\nratio = light sessions' token rate while heavy sessions sync / rate without them (DESIGN.md §5 target >= 0.95;"
      " the worker issue asks >= 0.90 on CPU workers). stall = time a heavy session waited at its boundary"
      " (inline mode: the sync runs inside a step, so the whole batch stalls instead).")
env.cleanup()
