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

  * an Append of 10,000 tokens (~20 KB of ids: more than one message to
    these workers carries) goes to them in pieces: the session takes all
    of them;
  * the context worker is restarted (SIGTERM, then a new process on the
    same address), and the next Append crosses a window boundary: the
    new context copy is sent the 20,000 tokens it lacks in pieces before
    the Append (one message of them is ~28 KB, over the limit);
  * the generation worker is restarted: the next generation rebuilds its
    copy from the 21,000-token history, prefilled in pieces; its greedy
    ids equal `tconst generate` over the whole history, and
    tconst_worker_rebuilds_total counted the rebuild;
  * the coordinator is restarted on its journal (--data-dir): the
    restored history (21,024 tokens: the generation's are in it) and a
    fork of it (copy_from) each go to the workers as one feed, which is
    sent in pieces; both greedy generations equal `tconst generate` over
    that history.
"""
import os
import tempfile

import grpc

from harness import Daemon, run, wait_for
from test_attach import Worker

LIMIT = 16384
CHUNK = 1000
N = 10_000
TIMES = 10  # an Append of 10,000 tokens: ~20 KB of packed ids in one message


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=21)
    # ids the later tokens do not use: a sync that missed the early history
    # (a copy rebuilt from its last pieces only) gives other ids
    history = [(i * 37 + 11) % 47 + 2 for i in range(N)]
    more = [(i * 53 + 3) % 509 + 2 for i in range(CHUNK)]
    full = history + more * TIMES + more
    want = env.generate(model, full, 24, ignore_eos=True)
    ck.equal(len(want), 24, "tconst generate gave 24 ids")
    want2 = env.generate(model, full + want, 24, ignore_eos=True)
    ck.equal(len(want2), 24, "tconst generate gave 24 ids after them")
    flags = ("--max-message-bytes", str(LIMIT))
    data = tempfile.mkdtemp(dir=env.tmp)
    dflags = ("--workers", None, "--worker-timeout", "5", "--data-dir", data)
    ws = [Worker(env, "context", model, *flags), Worker(env, "generation", model, *flags)]

    def daemon():
        return Daemon(env, *[f"{ws[0].addr},{ws[1].addr}" if a is None else a for a in dflags], model=model)

    def generate(s, sid, what, n=24):
        ids = []
        try:
            for r in s.GenerateInSession(pb.GenerateInSessionRequest(
                    session_id=sid, sampling=env.sampling(max_tokens=n, ignore_eos=True)), timeout=300):
                ids += r.token_ids
        except grpc.RpcError as e:
            ids = f"{what}: {e.code().name}: {e.details()}"
        return ids

    try:
        with daemon() as d:
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

            # more tokens than one message to the workers carries
            # (tconstd's own limit is higher): sent in pieces
            try:
                r = s.Append(pb.AppendRequest(session_id=sid, token_ids=more * TIMES), timeout=120)
                ck.equal(r.session.length, N + TIMES * CHUNK, f"an Append of {TIMES * CHUNK} tokens to workers at {LIMIT} "
                                                          "bytes (over one message) is taken whole")
            except grpc.RpcError as e:
                ck.check(False, f"an Append of {TIMES * CHUNK} tokens to workers at {LIMIT} bytes: "
                                f"{e.code().name}: {e.details()}")

            # a fresh context copy lacks the whole history: sent in pieces
            restart(0, "context")
            try:
                r = s.Append(pb.AppendRequest(session_id=sid, token_ids=more), timeout=120)
                ck.equal(r.session.length, len(full), f"after the context worker's restart an Append of {CHUNK} "
                         f"tokens (its copy caught up on {N + TIMES * CHUNK} tokens in pieces under {LIMIT} bytes)")
            except grpc.RpcError as e:
                ck.check(False, f"Append after the context worker's restart: {e.code().name}: {e.details()}")

            # a fresh generation copy: the history prefilled in pieces
            before = d.metric("tconst_worker_rebuilds_total") or 0.0
            restart(1, "generation")
            ck.equal(generate(s, sid, "generation"), want, "after the generation worker's restart: greedy ids == "
                     f"tconst generate over the {len(full)}-token history")
            ck.check((d.metric("tconst_worker_rebuilds_total") or 0.0) > before,
                     "tconst_worker_rebuilds_total counted the generation copy's rebuild")

        # a new coordinator restores the session from its journal: its
        # history, and a fork's, reach the workers as one feed each
        with daemon() as d:
            s = d.stub()
            try:
                fk = s.OpenSession(pb.OpenSessionRequest(copy_from=sid), timeout=120).session_id
                ck.equal(generate(s, fk, "fork"), want2, "a fork of the restored session (copy_from): greedy ids == "
                         f"tconst generate over its {len(full) + 24}-token history")
            except grpc.RpcError as e:
                ck.check(False, f"OpenSession copy_from the restored session: {e.code().name}: {e.details()}")
            ck.equal(generate(s, sid, "restored"), want2, "the journal-restored session: greedy ids == tconst "
                     f"generate over its {len(full) + 24}-token history")
    finally:
        for w in ws:
            w.stop()

    # an append in pieces that fails part way (the context worker's reply
    # to its third Append with logits is malformed, a test fault: after
    # tconstd's warm-up and the OpenSession, the last piece's, once its
    # leading pieces went in) leaves the session
    # as it was; the same Append again is taken whole, and the generation
    # sees each token once
    want0 = env.generate(model, history, 24, ignore_eos=True)
    os.environ["TC_FAULT_APPEND_REPLY_AT"] = "3"
    try:
        ws = [Worker(env, "context", model, *flags)]
    finally:
        del os.environ["TC_FAULT_APPEND_REPLY_AT"]
    ws.append(Worker(env, "generation", model, *flags))
    try:
        with Daemon(env, "--workers", f"{ws[0].addr},{ws[1].addr}", "--worker-timeout", "5", model=model) as d:
            s = d.stub()
            sid = s.OpenSession(pb.OpenSessionRequest(token_ids=history[:CHUNK]), timeout=60).session_id
            ck.rpc_error(lambda: s.Append(pb.AppendRequest(session_id=sid, token_ids=history[CHUNK:]), timeout=120),
                         grpc.StatusCode.INTERNAL, f"an Append of {N - CHUNK} tokens whose last piece fails",
                         "append returned")
            ck.equal(s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30).length, CHUNK,
                     "... leaves the session at its length (its leading pieces taken back)")
            try:
                r = s.Append(pb.AppendRequest(session_id=sid, token_ids=history[CHUNK:]), timeout=120)
                ck.equal(r.session.length, N, "the same Append again is taken whole")
            except grpc.RpcError as e:
                ck.check(False, f"the same Append again: {e.code().name}: {e.details()}")
            ck.equal(generate(s, sid, "generation"), want0, "then greedy ids == tconst generate over the "
                     f"{N}-token history (no piece went to a copy twice)")
    finally:
        for w in ws:
            w.stop()

    # the rebuild in the other layouts: a --role both worker (a
    # TConstFormer: extends, then one Append) and a split pair serving the
    # baseline (its first piece through the context worker, the rest
    # prefilled on the generation worker); each worker restarted, then a
    # generation equal to `tconst generate`
    base = env.model("transformer", seed=21)
    for name, m, roles in [("both", model, ["both"]), ("baseline", base, ["context", "generation"])]:
        ws = [Worker(env, r, m, *flags) for r in roles]
        try:
            with Daemon(env, "--workers", ",".join(w.addr for w in ws), "--worker-timeout", "5", model=m) as d:
                s = d.stub()
                sid = s.OpenSession(pb.OpenSessionRequest(token_ids=history[:CHUNK]), timeout=60).session_id
                # one Append of 9,000 tokens: pieces of ~3,000 (the
                # coordinator counts 5 bytes a token), as extends (both)
                # or appends of their own (the baseline)
                try:
                    r = s.Append(pb.AppendRequest(session_id=sid, token_ids=history[CHUNK:]), timeout=120)
                    ck.equal(r.session.length, N, f"{name}: an Append of {N - CHUNK} tokens in pieces is taken whole")
                except grpc.RpcError as e:
                    ck.check(False, f"{name}: an Append of {N - CHUNK} tokens: {e.code().name}: {e.details()}")
                want_first = env.generate(m, history, 1, ignore_eos=True)
                ck.equal(generate(s, sid, name, 1), want_first, f"{name}: then its first generated id == "
                         "tconst generate's")
                want_ids = env.generate(m, history + want_first, 24, ignore_eos=True)
                before = d.metric("tconst_worker_rebuilds_total") or 0.0
                for k, role in enumerate(roles):
                    addr = ws[k].addr
                    ws[k].stop()
                    ck.check(wait_for(lambda: d.metric("tconst_workers_up") == len(roles) - 1.0, 60,
                                      f"{name}: the {role} worker marked down"),
                             f"{name}: the stopped {role} worker is marked down")
                    ws[k] = Worker(env, role, m, *flags, listen=addr)
                    ck.check(wait_for(lambda: d.metric("tconst_workers_up") == float(len(roles)), 60,
                                      f"{name}: the {role} worker back up"),
                             f"{name}: the restarted {role} worker is marked up")
                ck.equal(generate(s, sid, name), want_ids, f"{name}: after its workers' restarts, greedy ids == "
                         f"tconst generate over the {N + 1}-token history (rebuilt in pieces under {LIMIT} bytes)")
                ck.check((d.metric("tconst_worker_rebuilds_total") or 0.0) > before,
                         f"{name}: tconst_worker_rebuilds_total counted the rebuild")
        finally:
            for w in ws:
                w.stop()


if __name__ == "__main__":
    run("long_history", body)
