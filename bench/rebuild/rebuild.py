#!/usr/bin/env python3
"""rebuild.py TCONSTD TCONST [SRC] -- what a worker restart costs a long
session, and what a coordinator restart costs it (docs/workers.md
"Failures: nothing lost").

Two attached workers (context, generation) at --max-message-bytes LIMIT
(64 KiB: ~12,900 tokens a message), a TConstFormer session (PRESET:
tiny, small or paper-41m, random weights) of TOKENS tokens (200,000)
appended in messages that fit. Then:

  * the generation worker is restarted: the next one-token generation
    rebuilds its copy from the coordinator's history, in pieces (REPS
    times, the best kept);
  * the coordinator is restarted on its journal (--data-dir): the first
    one-token generation feeds the restored history to the workers, in
    pieces.

BASE_TCONSTD=<another build's tconstd> runs the same beside it (its
tconst-worker from that build's worker/ folder) and prints the ratios: a
change measured side by side. A benchmark, not a test: it prints figures
and asserts nothing. Run:
  /usr/bin/python3 bench/rebuild/rebuild.py build/tconstd build/tconst"""
import os, sys, tempfile, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "e2e"))
from harness import Env, Daemon, wait_for  # noqa: E402
from test_attach import Worker  # noqa: E402

import grpc  # noqa: E402

TOKENS = int(os.environ.get("TOKENS", "200000"))
LIMIT = int(os.environ.get("LIMIT", "65536"))
REPS = int(os.environ.get("REPS", "2"))
PRESET = os.environ.get("PRESET", "tiny")  # tiny, small or paper-41m: the sync's share grows with the model
CHUNK = 10_000

env = Env()
pb = env.pb
if PRESET == "tiny":
    model = env.model("tconstformer", seed=5)
else:
    import subprocess
    model = os.path.join(env.tmp, f"model-{PRESET}")
    subprocess.run([env.tconst, "init-model", "--arch", "tconstformer", "--preset", PRESET, "--seed", "5", "--out",
                    model], check=True, stdout=subprocess.DEVNULL)
history = [(i * 37 + 11) % 509 + 2 for i in range(TOKENS)]
if (LIMIT - 1024) // 5 < CHUNK:
    sys.exit(f"rebuild.py: LIMIT {LIMIT} carries fewer than {CHUNK} tokens a message; raise it")


def first_id(s, sid):
    """Seconds to a one-token generation, or the error."""
    t0 = time.perf_counter()
    try:
        for _ in s.GenerateInSession(pb.GenerateInSessionRequest(
                session_id=sid, sampling=env.sampling(max_tokens=1, ignore_eos=True)), timeout=1800):
            pass
    except grpc.RpcError as e:
        return f"{e.code().name}: {e.details()[:120]}"
    return time.perf_counter() - t0


def measure(tconstd):
    env.tconstd = tconstd  # Worker takes its tconst-worker from beside it
    flags = ("--max-message-bytes", str(LIMIT))
    ws = [Worker(env, "context", model, *flags), Worker(env, "generation", model, *flags)]
    data = tempfile.mkdtemp(dir=env.tmp)
    args = ("--workers", f"{ws[0].addr},{ws[1].addr}", "--worker-timeout", "30", "--data-dir", data)
    out = {}
    try:
        with Daemon(env, *args, model=model) as d:
            s = d.stub()
            sid = s.OpenSession(pb.OpenSessionRequest(token_ids=history[:CHUNK]), timeout=600).session_id
            for i in range(CHUNK, TOKENS, CHUNK):
                s.Append(pb.AppendRequest(session_id=sid, token_ids=history[i:i + CHUNK]), timeout=600)
            out["steady"] = first_id(s, sid)  # no rebuild: the copies are there
            best = None
            for _ in range(REPS):
                addr = ws[1].addr
                ws[1].stop()
                wait_for(lambda: d.metric("tconst_workers_up") == 1.0, 120, "the generation worker marked down")
                ws[1] = Worker(env, "generation", model, *flags, listen=addr)
                wait_for(lambda: d.metric("tconst_workers_up") == 2.0, 120, "the generation worker back up")
                t = first_id(s, sid)
                best = t if best is None or isinstance(t, str) or (not isinstance(best, str) and t < best) else best
            out["rebuild"] = best
        with Daemon(env, *args, model=model) as d:
            out["restore"] = first_id(d.stub(), sid)
    finally:
        for w in ws:
            w.stop()
    return out


builds = [("this build", env.tconstd)]
if os.environ.get("BASE_TCONSTD"):
    builds.append(("base", os.path.abspath(os.environ["BASE_TCONSTD"])))
print(f"rebuild.py: a {TOKENS:,}-token TConstFormer session ({PRESET} preset), workers at {LIMIT:,} bytes a message",
      flush=True)
res = {}
for name, tconstd in builds:
    res[name] = measure(tconstd)
    fmt = lambda v: f"{v:8.3f} s" if isinstance(v, float) else v  # noqa: E731
    print(f"  {name:10s} 1-token generation: copies in place {fmt(res[name]['steady'])}, after a generation "
          f"worker restart {fmt(res[name]['rebuild'])}, after a coordinator restart {fmt(res[name]['restore'])}",
          flush=True)
if len(res) == 2:
    for k in ("rebuild", "restore"):
        a, b = res["this build"][k], res["base"][k]
        if isinstance(a, float) and isinstance(b, float):
            print(f"  {k}: base / this build = {b / a:.2f}x")
        else:
            print(f"  {k}: not compared (one of them failed)")
env.cleanup()
