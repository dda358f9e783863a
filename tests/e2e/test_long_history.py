#!/usr/bin/python3
"""test_long_history.py — a session whose history is larger than one
control-plane message survives restarts of both its workers
(docs/workers.md "Fail-over").

The coordinator holds every session's whole history and sends it to a
worker when that worker's copy has to start over: a restarted context
worker is sent the history it lacks (an extend), a restarted generation
worker gets the history prefilled again. Before, each went out as one
message, so a session past a worker's --max-message-bytes (256 MiB by
default: 64M tokens) could not be rebuilt and was lost. Now the
coordinator learns each worker's limit from its Info and splits.

Workers at --max-message-bytes 16 KiB (about 3,000 tokens a message) and
a TConstFormer session of 10,000 tokens, appended 1,000 at a time:

  * an Append of 4,000 tokens (more than one message to these workers
    carries) is refused with RESOURCE_EXHAUSTED naming the flag, and the
    session keeps its length;
  * the context worker is restarted (SIGTERM, then a new process on the
    same address), and the next Append crosses a window boundary: the
    new context copy is sent the 9,000 tokens it lacks in pieces before
    the Append (one message of them is ~18 KB, over the limit);
  * the generation worker is restarted: the next generation rebuilds its
    copy from the 10,000-token history, prefilled in pieces;
  * the greedy generation then equals `tconst generate` over the whole
    history, and tconst_worker_rebuilds_total counted the rebuild.
"""
import grpc

from harness import Daemon, run, wait_for
from test_attach import Worker

LIMIT = 16384
CHUNK = 1000
N = 10_000


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=21)
    history = [(i * 37 + 11) % 509 + 2 for i in range(N)]
    more = [(i * 53 + 3) % 509 + 2 for i in range(CHUNK)]
    want = env.generate(model, history + more, 24, ignore_eos=True)
    ck.equal(len(want), 24, "tconst generate gave 24 ids")
    flags = ("--max-message-bytes", str(LIMIT))
    ws = [Worker(env, "context", model, *flags), Worker(env, "generation", model, *flags)]
    try:
        with Daemon(env, "--workers", f"{ws[0].addr},{ws[1].addr}", "--worker-timeout", "5", model=model) as d:
            s = d.stub()
            si = s.OpenSession(pb.OpenSessionRequest(token_ids=history[:CHUNK]), timeout=60)
            sid = si.session_id
            for i in range(CHUNK, N, CHUNK):
                s.Append(pb.AppendRequest(session_id=sid, token_ids=history[i:i + CHUNK]), timeout=60)

            def restart(k, role):
                addr = ws[k].addr
                ws[k].stop()
                down = wait_for(lambda: d.metric("tconst_workers_up") == 1.0, 60, f"the {role} worker marked down")
                ck.check(down, f"the stopped {role} worker is marked down")
                ws[k] = Worker(env, role, model, *flags, listen=addr)
                up = wait_for(lambda: d.metric("tconst_workers_up") == 2.0, 60, f"the {role} worker back up")
                ck.check(up, f"the restarted {role} worker is marked up")

            # a request's tokens go in one message: more than the workers
            # take (tconstd's own limit is higher) is refused, naming it,
            # and leaves the session as it was
            try:
                s.Append(pb.AppendRequest(session_id=sid, token_ids=more * 4), timeout=60)
                ck.check(False, f"an Append of {4 * CHUNK} tokens to workers at {LIMIT} bytes was refused")
            except grpc.RpcError as e:
                ck.check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-message-bytes" in e.details(),
                         f"an Append of {4 * CHUNK} tokens (over what one message to the workers carries): "
                         "RESOURCE_EXHAUSTED naming --max-message-bytes", f"{e.code().name}: {e.details()}")
            ck.equal(s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30).length, N,
                     "... and the session keeps its length")

            # a fresh context copy lacks the whole history: sent in pieces
            restart(0, "context")
            try:
                r = s.Append(pb.AppendRequest(session_id=sid, token_ids=more), timeout=120)
                ck.equal(r.session.length, N + CHUNK, f"after the context worker's restart an Append of {CHUNK} tokens "
                                              f"(its copy caught up on {N} tokens in pieces under {LIMIT} bytes)")
            except grpc.RpcError as e:
                ck.check(False, f"Append after the context worker's restart: {e.code().name}: {e.details()}")

            # a fresh generation copy: the history prefilled in pieces
            before = d.metric("tconst_worker_rebuilds_total") or 0.0
            restart(1, "generation")
            ids = []
            try:
                for r in s.GenerateInSession(pb.GenerateInSessionRequest(
                        session_id=sid, sampling=env.sampling(max_tokens=24, ignore_eos=True)), timeout=300):
                    ids += r.token_ids
            except grpc.RpcError as e:
                ids = f"{e.code().name}: {e.details()}"
            ck.equal(ids, want, f"after the generation worker's restart: greedy ids == tconst generate over the "
                                f"{N + CHUNK}-token history")
            ck.check((d.metric("tconst_worker_rebuilds_total") or 0.0) > before,
                     "tconst_worker_rebuilds_total counted the generation copy's rebuild")
    finally:
        for w in ws:
            w.stop()


if __name__ == "__main__":
    run("long_history", body)
