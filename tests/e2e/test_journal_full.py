#!/usr/bin/python3
"""test_journal_full.py — the journal refuses a write (its disk is full):
the generation that could not be journaled ends with one last message,
finish_reason ERROR naming the journal (it used to get a second, empty
ERROR message after it), the call ends INTERNAL naming it, and the
daemon goes on serving what it does not journal. A CloseSession the
journal cannot record fails INTERNAL and leaves the session open. The full disk is tconstd's file
size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes past it fail with
EFBIG), so nothing outside the test is filled.
"""
import os
import queue
import resource
import signal

import grpc

from harness import Daemon, run, wait_for

LIMITS = [200_000 + 7919 * k for k in range(6)]  # bytes a file of the daemon may reach


def limit_files(limit):
    def f():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return f


def fill(env, d, pb, samp, want):
    """Rounds of open, generate, close until the journal refuses a write:
    ("tokens", status, finals, ids) when it refused a generation's tokens,
    ("other", what) when another write came first (an open, the
    generation's own record: nothing streamed), None if it never filled."""
    s = d.stub()
    for _ in range(2000):
        try:
            sid = s.OpenSession(pb.OpenSessionRequest(token_ids=[1, 2, 3]), timeout=30).session_id
        except grpc.RpcError as e:
            return ("other", f"OpenSession {e.code().name}: {e.details()}")
        ids, finals = [], []
        try:
            for m in s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sid, token_ids=[4], sampling=samp),
                                         timeout=60):
                ids += m.token_ids
                if m.finish_reason:
                    finals.append((m.finish_reason, m.error))
            status = "OK"
        except grpc.RpcError as e:
            status = f"{e.code().name}: {e.details()}"
        if finals == [(pb.FINISH_REASON_LENGTH, "")] and ids == want:
            s.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=30)
            continue
        if not finals and not ids:
            return ("other", f"generation {status}")
        return ("tokens", status, finals, ids)
    return None


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=13)
    # one token a worker call: a journal write a token, so the write the
    # journal refuses first is most likely a generation's tokens
    samp = env.sampling(max_tokens=40, ignore_eos=True)
    want = env.generate(model, [1, 2, 3, 4], 40, ignore_eos=True)
    outcome = None
    for k, limit in enumerate(LIMITS):
        data = os.path.join(env.tmp, f"data-full-{k}")
        os.makedirs(data)
        with Daemon(env, "--data-dir", data, "--multi-step", "1", model=model, preexec=limit_files(limit)) as d:
            outcome = fill(env, d, pb, samp, want)
            print(f"     (file size limit {limit}: {outcome and outcome[:2]})")
            if outcome and outcome[0] == "other":
                ck.check("journal" in outcome[1], "a request the journal refuses names it", outcome[1])
            if outcome and outcome[0] == "tokens":
                _, status, finals, ids = outcome
                ck.check(len(finals) == 1 and finals[0][0] == pb.FINISH_REASON_ERROR and "journal" in finals[0][1],
                         "the generation whose tokens the journal refused ends with one last message, ERROR "
                         "naming the journal", str(finals))
                ck.check(status.startswith("INTERNAL") and "journal" in status,
                         "... and the call ends INTERNAL naming the journal", status)
                ck.equal(ids, want[:len(ids)], "the ids it did stream are right")
                # the daemon still serves (a one-shot Generate is not journaled)
                ids, _ = d.generate_ids(d.stub(), [1, 2, 3, 4], samp)
                ck.equal(ids, want, "a one-shot Generate after it")
                break
    ck.check(outcome is not None and outcome[0] == "tokens",
             f"the journal refused a generation's tokens (in {len(LIMITS)} tries with other size limits)",
             str(outcome))

    # CloseSession while the journal cannot drop the session: INTERNAL
    # naming the journal, and the session stays open, live and at the next
    # start alike (session 29: it answered OK and the session came back at
    # the next start); once the disk has room, it closes for good
    closed = None
    for k, limit in enumerate(LIMITS):
        data = os.path.join(env.tmp, f"data-close-{k}")
        os.makedirs(data)
        with Daemon(env, "--data-dir", data, "--multi-step", "1", model=model, preexec=limit_files(limit)) as d:
            s = d.stub()
            s.OpenSession(pb.OpenSessionRequest(session_id="victim", token_ids=[7, 8, 9]), timeout=30)
            fill(env, d, pb, samp, want)
            try:
                s.CloseSession(pb.CloseSessionRequest(session_id="victim"), timeout=30)
                closed = "OK"
            except grpc.RpcError as e:
                closed = f"{e.code().name}: {e.details()}"
            print(f"     (file size limit {limit}: CloseSession {closed[:90]})")
            if closed == "OK":  # the journal found room for the delete: not the case under test
                continue
            ck.check(closed.startswith("INTERNAL") and "journal" in closed and "not closed" in closed,
                     "CloseSession the journal cannot record: INTERNAL naming the journal, not closed", closed)
            ck.equal(s.GetSession(pb.GetSessionRequest(session_id="victim"), timeout=30).length, 3,
                     "... and the session is still open")
        with Daemon(env, "--data-dir", data, model=model) as d:
            s = d.stub()
            ck.equal(s.GetSession(pb.GetSessionRequest(session_id="victim"), timeout=30).length, 3,
                     "after a restart with room on the disk: the session is there, as its client was told")
            s.CloseSession(pb.CloseSessionRequest(session_id="victim"), timeout=30)
        with Daemon(env, "--data-dir", data, model=model) as d:
            try:
                d.stub().GetSession(pb.GetSessionRequest(session_id="victim"), timeout=30)
                gone = "still there"
            except grpc.RpcError as e:
                gone = e.code().name
            ck.equal(gone, "NOT_FOUND", "closed with room on the disk: gone after the next restart")
        break
    ck.check(closed is not None and closed != "OK",
             f"a CloseSession met a full journal (in {len(LIMITS)} tries with other size limits)", str(closed))

    # a Stream's own session whose close the journal refuses at the
    # stream's end (TC_FAULT_JOURNAL_DELETE_ERRORS=1: the first session
    # delete fails): nobody else can close it, so the daemon does, as soon
    # as the journal lets it (it used to stay open until a restart with
    # --idle-timeout 0, and come back after it)
    for when in ("idle", "busy"):  # the stream ends after its generation, or cancelled in the middle of one
        data = os.path.join(env.tmp, f"data-stream-close-{when}")
        os.makedirs(data)
        os.environ["TC_FAULT_JOURNAL_DELETE_ERRORS"] = "1"
        try:
            d = Daemon(env, "--data-dir", data, "--idle-timeout", "0", model=model)
            d.start()
        finally:
            del os.environ["TC_FAULT_JOURNAL_DELETE_ERRORS"]
        with d:
            s = d.stub()
            ids = []
            if when == "idle":
                for m in s.Stream(iter([pb.StreamRequest(token_ids=[1, 2, 3, 4], generate=True, sampling=samp)]),
                                  timeout=60):
                    if m.HasField("generation"):
                        ids += m.generation.token_ids
                ck.equal(ids, want, "stream: its generation == tconst generate")
            else:
                q = queue.Queue()
                q.put(pb.StreamRequest(token_ids=[1, 2, 3, 4], generate=True,
                                       sampling=env.sampling(max_tokens=1000000, ignore_eos=True)))
                call = s.Stream(iter(q.get, None), timeout=60)
                for m in call:
                    if m.HasField("generation") and m.generation.token_ids:
                        break
                call.cancel()  # in the middle of its generation
            log = lambda: open(d.log_path, errors="replace").read()
            ck.check(wait_for(lambda: "at the end of its stream" in log() and "injected fault" in log(), 30,
                              "the refused close"),
                     f"stream ({when} at its end): closing its own session was refused (injected)")
            ck.check(wait_for(lambda: d.metric("tconst_sessions_active") == 0.0, 30, "the session closed"),
                     f"stream ({when} at its end): its session is closed once the journal lets it",
                     d.metric("tconst_sessions_active"))
            ck.check("its stream ended earlier, closed" in log(),
                     f"stream ({when} at its end): the log says it was closed later")
        with Daemon(env, "--data-dir", data, model=model) as d:
            ck.equal(d.metric("tconst_sessions_active"), 0.0,
                     f"stream ({when} at its end): after a restart it does not come back")

    # an Append, or a generation's prompt, whose journal write is refused
    # (TC_FAULT_JOURNAL_WRITE_FAIL_AT=K: the K-th prompt write, once) ends
    # INTERNAL and takes its tokens back from the workers; the session
    # then generates without a prompt as if the request never came (it was
    # refused "prompt: empty" with 5 tokens in it: the logits went with
    # the tokens taken back, and no token was left to feed again)
    base = [1, 2, 3, 4, 5]
    want8 = env.generate(model, base, 8, ignore_eos=True)
    for what, k in (("Append", 2), ("GenerateInSession's prompt", 2)):
        data = os.path.join(env.tmp, f"data-write-fail-{k}-{what[:3]}")
        os.makedirs(data)
        os.environ["TC_FAULT_JOURNAL_WRITE_FAIL_AT"] = str(k)
        try:
            d = Daemon(env, "--data-dir", data, model=model)
            d.start()
        finally:
            del os.environ["TC_FAULT_JOURNAL_WRITE_FAIL_AT"]
        with d:
            s = d.stub()
            s.OpenSession(pb.OpenSessionRequest(session_id="u", token_ids=base), timeout=60)  # write 1
            try:
                if what == "Append":
                    s.Append(pb.AppendRequest(session_id="u", token_ids=[6, 7]), timeout=60)
                else:
                    list(s.GenerateInSession(pb.GenerateInSessionRequest(
                        session_id="u", token_ids=[6, 7], sampling=env.sampling(max_tokens=3)), timeout=60))
                code = "OK"
            except grpc.RpcError as e:
                code = f"{e.code().name}: {e.details()}"
            ck.check(code.startswith("INTERNAL") and "injected fault" in code, f"{what} refused by the journal: {code}")
            info = s.GetSession(pb.GetSessionRequest(session_id="u"), timeout=30)
            ck.equal(info.length, len(base), f"{what} refused: the session holds what it held")
            ids = []
            try:
                for m in s.GenerateInSession(pb.GenerateInSessionRequest(
                        session_id="u", sampling=env.sampling(max_tokens=8, ignore_eos=True)), timeout=60):
                    ids += m.token_ids
                code = "OK"
            except grpc.RpcError as e:
                code = f"{e.code().name}: {e.details()}"
            ck.equal((code, ids), ("OK", want8),
                     f"{what} refused: a generation without a prompt goes on from the kept history")

if __name__ == "__main__":
    run("e2e journal_full", body)
