#!/usr/bin/python3
"""test_journal_full.py — the journal refuses a write (its disk is full):
the generation that could not be journaled ends with one last message,
finish_reason ERROR naming the journal (it used to get a second, empty
ERROR message after it), the call ends INTERNAL naming it, and the
daemon goes on serving what it does not journal. The full disk is tconstd's file
size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes past it fail with
EFBIG), so nothing outside the test is filled.
"""
import os
import resource
import signal

import grpc

from harness import Daemon, run

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


if __name__ == "__main__":
    run("e2e journal_full", body)
