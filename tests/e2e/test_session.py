#!/usr/bin/python3
"""test_session.py — sessions: OpenSession, Appends in uneven chunks and
generations across >= 10 syncs give the same ids as one `tconst generate`
over the concatenation (generated ids included: they become part of the
session); GetSession's length / windows / syncs are consistent; a session
is usable again as soon as a call on it has returned; SnapshotSession
gives the history in chunks and a session opened from it generates as
the original, as does one opened with copy_from (busy sessions refused); CloseSession, then the session is
NOT_FOUND. With --idle-timeout, idle sessions expire, but not those of
open Streams.
"""
import queue
import random

import grpc

from harness import Daemon, run, wait_for

SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.9, seed=7)
SIZES1 = [1, 7, 33, 64, 5, 100, 31, 32, 2, 45, 17, 3]  # 340 tokens
SIZES2 = [50, 13, 77]


def body(env, ck):
    pb = env.pb
    for arch in ("tconstformer", "tlinformer", "transformer"):
        model = env.model(arch, seed=31)
        rng = random.Random(arch)
        with Daemon(env, model=model) as d:
            s = d.stub()
            W = s.ModelInfo(pb.ModelInfoRequest(), timeout=30).generate_window
            chunks = [[rng.randrange(2, 512) for _ in range(n)] for n in SIZES1]
            si = s.OpenSession(pb.OpenSessionRequest(token_ids=chunks[0]), timeout=30)
            sid = si.session_id
            ck.check(sid != "" and si.length == len(chunks[0]), f"{arch}: OpenSession assigns an id, length 1",
                     str(si))
            history = list(chunks[0])
            lengths_ok = True
            for c in chunks[1:]:
                r = s.Append(pb.AppendRequest(session_id=sid, token_ids=c), timeout=30)
                history += c
                lengths_ok &= r.appended_tokens == len(c) and r.session.length == len(history)
            ck.check(lengths_ok, f"{arch}: each AppendResponse counts its chunk and the session's length")

            # generation 1 (seeded sampling) after 12 uneven appends
            ids = []
            for r in s.GenerateInSession(pb.GenerateInSessionRequest(
                    session_id=sid, sampling=env.sampling(max_tokens=60, ignore_eos=True, **SAMPLED)), timeout=60):
                ids += r.token_ids
                last = r
            want = env.generate(model, history, 60, ignore_eos=True, **SAMPLED)
            ck.equal(ids, want, f"{arch}: GenerateInSession (sampled) == tconst generate over the {len(history)} "
                                f"appended tokens")
            history += ids
            info = s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30)
            ck.equal((last.usage.session_tokens, info.length), (len(history), len(history)),
                     f"{arch}: usage.session_tokens and GetSession.length count the generated ids")

            # more appends, then a Generate inside the session with a prompt
            for c in ([rng.randrange(2, 512) for _ in range(n)] for n in SIZES2):
                s.Append(pb.AppendRequest(session_id=sid, token_ids=c), timeout=30)
                history += c
            tail = [rng.randrange(2, 512) for _ in range(9)]
            ids = []
            for r in s.Generate(pb.GenerateRequest(session_id=sid, token_ids=tail,
                                                   sampling=env.sampling(max_tokens=40, ignore_eos=True)),
                                timeout=60):
                ids += r.token_ids
            history += tail
            want = env.generate(model, history, 40, ignore_eos=True)
            ck.equal(ids, want, f"{arch}: Generate(session_id, prompt) (greedy) == tconst generate over "
                                f"chunks + generated + chunks ({len(history)} tokens)")
            history += ids

            # back to back: a call on the session may follow the previous
            # one at once (the session is free when a call has returned)
            busy = 0
            for i in range(40):
                try:
                    s.Append(pb.AppendRequest(session_id=sid, token_ids=[2 + i]), timeout=30)
                    history.append(2 + i)
                    if i % 4 == 3:
                        g = list(s.GenerateInSession(pb.GenerateInSessionRequest(
                            session_id=sid, sampling=env.sampling(max_tokens=1, ignore_eos=True)), timeout=30))
                        history += [t for r in g for t in r.token_ids]
                except grpc.RpcError as e:
                    busy += 1
                    print(f"     call {i}: {e.code().name} {e.details()}")
            ck.equal(busy, 0, f"{arch}: 40 back-to-back Appends / 10 one-token generations, none refused")
            ids = []
            for r in s.GenerateInSession(pb.GenerateInSessionRequest(
                    session_id=sid, sampling=env.sampling(max_tokens=30, ignore_eos=True, **SAMPLED)), timeout=60):
                ids += r.token_ids
            want = env.generate(model, history, 30, ignore_eos=True, **SAMPLED)
            ck.equal(ids, want, f"{arch}: after them, generation == tconst generate over all "
                                f"{len(history)} tokens")
            history += ids

            info = s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30)
            ck.equal(info.length, len(history), f"{arch}: GetSession.length == tokens appended + generated")
            ck.check(not info.busy and info.state_bytes > 0 and info.created_unix_ms <= info.last_used_unix_ms,
                     f"{arch}: GetSession not busy, state_bytes > 0, created <= last_used", str(info))
            if arch == "transformer":
                ck.equal((info.windows, info.syncs), (0, 0), f"{arch}: no windows, no syncs")
            else:
                ck.equal(info.windows, info.length // W, f"{arch}: windows == length // W_og ({W})")
                # a multi-window append syncs once; each boundary crossed
                # while generating or appending a short chunk syncs once
                ck.check(10 <= info.syncs <= info.windows, f"{arch}: 10 <= syncs <= windows",
                         f"syncs {info.syncs} windows {info.windows}")

            # SnapshotSession: the history in chunks (the last generated id,
            # sampled and not yet fed, included); a session opened from it
            # generates what the original does
            snap = list(s.SnapshotSession(pb.SnapshotSessionRequest(session_id=sid, chunk_tokens=100), timeout=30))
            got = [t for m in snap for t in m.token_ids]
            offs_ok = all(m.offset == 100 * k and len(m.token_ids) == min(100, len(history) - m.offset)
                          for k, m in enumerate(snap))
            ck.check(got == history and offs_ok and snap[0].session.length == len(history) and
                     not any(m.HasField("session") for m in snap[1:]),
                     f"{arch}: SnapshotSession == the {len(history)}-token history, 100 a message, offsets in order",
                     f"{len(got)} ids, {len(snap)} messages")
            fork = s.OpenSession(pb.OpenSessionRequest(token_ids=got), timeout=60).session_id
            # and a fork on the server: copy_from, then the request's own ids
            fork2 = s.OpenSession(pb.OpenSessionRequest(copy_from=sid, token_ids=[7, 8]), timeout=60)
            ck.equal(fork2.length, len(history) + 2, f"{arch}: OpenSession(copy_from) holds the history and its 2 ids")
            want2 = env.generate(model, history + [7, 8], 20, ignore_eos=True, **SAMPLED)
            got2 = [t for r in s.GenerateInSession(pb.GenerateInSessionRequest(
                session_id=fork2.session_id, sampling=env.sampling(max_tokens=20, ignore_eos=True, **SAMPLED)),
                timeout=60) for t in r.token_ids]
            ck.equal(got2, want2, f"{arch}: the copy generates == tconst generate over history + [7, 8]")
            s.CloseSession(pb.CloseSessionRequest(session_id=fork2.session_id), timeout=30)
            want = env.generate(model, history, 20, ignore_eos=True, **SAMPLED)
            outs = []
            for x in (sid, fork):
                outs.append([t for r in s.GenerateInSession(pb.GenerateInSessionRequest(
                    session_id=x, sampling=env.sampling(max_tokens=20, ignore_eos=True, **SAMPLED)), timeout=60)
                    for t in r.token_ids])
            ck.check(outs[0] == want and outs[1] == want,
                     f"{arch}: a session opened from the snapshot generates as the original (== tconst generate)")
            history += outs[0]
            held = s.GenerateInSession(pb.GenerateInSessionRequest(session_id=fork, request_id=f"hold-{arch}",
                sampling=env.sampling(max_tokens=1000000, ignore_eos=True)), timeout=60)
            next(held)
            ck.rpc_error(lambda: list(s.SnapshotSession(pb.SnapshotSessionRequest(session_id=fork), timeout=30)),
                         grpc.StatusCode.FAILED_PRECONDITION, f"{arch}: SnapshotSession of a busy session", "busy")
            ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(copy_from=fork), timeout=30),
                         grpc.StatusCode.FAILED_PRECONDITION, f"{arch}: OpenSession copying a busy session", "busy")
            ck.check(s.Abort(pb.AbortRequest(request_id=f"hold-{arch}"), timeout=30).found, f"{arch}: Abort ends it")
            held.cancel()
            ck.rpc_error(lambda: list(s.SnapshotSession(pb.SnapshotSessionRequest(session_id=sid, chunk_tokens=262145),
                                                        timeout=30)),
                         grpc.StatusCode.INVALID_ARGUMENT, f"{arch}: chunk_tokens 262145", "chunk_tokens")
            ck.rpc_error(lambda: list(s.SnapshotSession(pb.SnapshotSessionRequest(session_id="nope"), timeout=30)),
                         grpc.StatusCode.NOT_FOUND, f"{arch}: SnapshotSession of no session", "session_id")
            ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(copy_from="nope"), timeout=30),
                         grpc.StatusCode.NOT_FOUND, f"{arch}: OpenSession copying no session", "copy_from")
            s.CloseSession(pb.CloseSessionRequest(session_id=fork), timeout=30)

            closed = s.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=30)
            ck.equal((closed.session_id, closed.length), (sid, len(history)),
                     f"{arch}: CloseSession returns the session's last info")
            ck.rpc_error(lambda: s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30),
                         grpc.StatusCode.NOT_FOUND, f"{arch}: GetSession after close", "session_id")
            ck.rpc_error(lambda: s.Append(pb.AppendRequest(session_id=sid, token_ids=[3]), timeout=30),
                         grpc.StatusCode.NOT_FOUND, f"{arch}: Append after close", "session_id")
            ck.rpc_error(lambda: s.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=30),
                         grpc.StatusCode.NOT_FOUND, f"{arch}: CloseSession twice", "session_id")

            # a client-chosen id: usable, and unique
            named = s.OpenSession(pb.OpenSessionRequest(session_id="user-42", token_ids=[5, 6]), timeout=30)
            ck.equal(named.session_id, "user-42", f"{arch}: OpenSession keeps a client-chosen id")
            ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(session_id="user-42", token_ids=[5]),
                                               timeout=30),
                         grpc.StatusCode.ALREADY_EXISTS, f"{arch}: OpenSession with an id in use", "session_id")
            ids = [t for r in s.GenerateInSession(pb.GenerateInSessionRequest(
                session_id="user-42", sampling=env.sampling(max_tokens=8, ignore_eos=True)), timeout=30)
                   for t in r.token_ids]
            ck.equal(ids, env.generate(model, [5, 6], 8, ignore_eos=True), f"{arch}: generation in the named session")
            # closed while it generates (a stream held open, unread): the id is
            # free at once -- the OK of CloseSession means closed
            held = s.GenerateInSession(pb.GenerateInSessionRequest(session_id="user-42", sampling=env.sampling(
                max_tokens=1000000, ignore_eos=True)), timeout=60)
            next(held)
            s.CloseSession(pb.CloseSessionRequest(session_id="user-42"), timeout=30)
            again = s.OpenSession(pb.OpenSessionRequest(session_id="user-42", token_ids=[9, 10, 11]), timeout=30)
            ck.equal((again.session_id, again.length), ("user-42", 3),
                     f"{arch}: a session closed while it generates: its id opens again at once (not ALREADY_EXISTS)")
            held.cancel()
            ids = [t for r in s.GenerateInSession(pb.GenerateInSessionRequest(
                session_id="user-42", sampling=env.sampling(max_tokens=8, ignore_eos=True)), timeout=30)
                   for t in r.token_ids]
            ck.equal(ids, env.generate(model, [9, 10, 11], 8, ignore_eos=True),
                     f"{arch}: ... the new session is its own (== tconst generate over its 3 tokens)")
            s.CloseSession(pb.CloseSessionRequest(session_id="user-42"), timeout=30)

    idle_expiry(env, ck)


def idle_expiry(env, ck):
    """--idle-timeout 8: an idle session closes; one a Stream opened or
    attached to stays while the stream is open, however long it is idle
    (checked by state: a session opened after it expires meanwhile), and
    expires once the stream ended."""
    pb = env.pb
    # 8 s, not less: several steps below (open "attached", then attach a
    # second Stream to it; re-open "reused", then attach stream B; re-open
    # owned, then GetSession) must land within the idle timeout of the
    # session's last use, on a loaded machine under ASan too; expiry itself
    # is awaited (gone: up to 60 s), so a longer timeout only costs time
    with Daemon(env, "--idle-timeout", "8", model=env.model("tconstformer", seed=31)) as d:
        s = d.stub()
        gone = lambda sid: wait_for(lambda: not_found(s, pb, sid), 60, f"{sid} expired")
        att = s.OpenSession(pb.OpenSessionRequest(session_id="attached", token_ids=[3]), timeout=30).session_id
        streams = []
        for first in (pb.StreamRequest(token_ids=[1, 2]), pb.StreamRequest(session_id=att, token_ids=[4])):
            q = queue.Queue()
            q.put(first)
            call = s.Stream(iter(q.get, None), timeout=120)
            ev = next(call)
            streams.append((q, call, ev.appended.session_id))
        own, att_sid = streams[0][2], streams[1][2]
        ck.equal(att_sid, att, "a Stream attached to an open session")
        other = s.OpenSession(pb.OpenSessionRequest(token_ids=[5]), timeout=30).session_id
        ck.check(gone(other), "--idle-timeout 8: an idle session (opened after the streams' ones) expires")
        alive = [not not_found(s, pb, x) for x in (own, att)]
        ck.equal(alive, [True, True], "the sessions of open Streams stay, as idle as they are")
        q, call, _ = streams[0]
        q.put(pb.StreamRequest(token_ids=[6]))
        ck.equal(next(call).appended.length, 3, "... and the stream goes on in its session")
        for q, call, _ in streams:
            q.put(None)  # half-close: the stream ends
            for _ in call:
                pass
        ck.check(gone(att), "once its Stream ended, the attached session expires idle again")
        # the server closes a Stream's own session after it sent the status
        ck.check(wait_for(lambda: not_found(s, pb, own), 30, f"{own} closed"),
                 "the session a Stream opened closes with it")
        # a Stream's pin belongs to the session it pinned, not to its id:
        # stream A on "reused", the session closed and opened again under
        # the same id, stream B on the new one; A ending must not unpin B's
        s.OpenSession(pb.OpenSessionRequest(session_id="reused", token_ids=[7]), timeout=30)
        open_streams = []
        for label in ("A", "B"):
            if label == "B":
                s.CloseSession(pb.CloseSessionRequest(session_id="reused"), timeout=30)
                s.OpenSession(pb.OpenSessionRequest(session_id="reused", token_ids=[8, 9]), timeout=30)
            q = queue.Queue()
            q.put(pb.StreamRequest(session_id="reused", token_ids=[10]))
            call = s.Stream(iter(q.get, None), timeout=120)
            ev = next(call)
            ck.equal(ev.appended.session_id, "reused", f"stream {label} attached to 'reused'")
            open_streams.append((q, call))
        q, call = open_streams[0]
        q.put(None)  # A ends
        try:
            for _ in call:
                pass
        except grpc.RpcError:
            pass
        other2 = s.OpenSession(pb.OpenSessionRequest(token_ids=[5]), timeout=30).session_id
        ck.check(gone(other2), "an idle session opened after stream A ended expires")
        ck.check(not not_found(s, pb, "reused"),
                 "the re-opened 'reused' stays while stream B is open (A's end did not unpin it)")
        q, call = open_streams[1]
        q.put(None)
        for _ in call:
            pass
        ck.check(gone("reused"), "once stream B ended, 'reused' expires idle")
        # the session a Stream opened closes with it -- not another session
        # opened under its id after the first was closed
        q = queue.Queue()
        q.put(pb.StreamRequest(token_ids=[1]))
        call = s.Stream(iter(q.get, None), timeout=120)
        owned = next(call).appended.session_id
        s.CloseSession(pb.CloseSessionRequest(session_id=owned), timeout=30)
        s.OpenSession(pb.OpenSessionRequest(session_id=owned, token_ids=[2, 3]), timeout=30)
        q.put(pb.StreamRequest(token_ids=[4]))  # the stream's session is gone: not appended to the new one
        err = None
        try:
            for _ in call:
                pass
        except grpc.RpcError as e:
            err = e
        ck.check(err is not None and err.code() == grpc.StatusCode.NOT_FOUND and "was closed" in err.details(),
                 "a Stream whose session was closed (and another opened under its id) gets NOT_FOUND", repr(err))
        q.put(None)
        ck.equal(s.GetSession(pb.GetSessionRequest(session_id=owned), timeout=30).length, 2,
                 "the session re-opened under that id is untouched, and outlives the Stream")


def not_found(s, pb, sid):
    try:
        s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30)
        return False
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return True


if __name__ == "__main__":
    run("e2e session", body)
