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

LIMIT = 200_000  # bytes a file of the daemon may reach: a few hundred short generations


def limit_files():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=13)
    data = os.path.join(env.tmp, "data-full")
    os.makedirs(data)
    samp = env.sampling(max_tokens=40, ignore_eos=True)
    want = env.generate(model, [1, 2, 3, 4], 40, ignore_eos=True)
    with Daemon(env, "--data-dir", data, model=model, preexec=limit_files) as d:
        s = d.stub()
        outcome, rounds = None, 0
        for rounds in range(1, 2001):
            try:
                sid = s.OpenSession(pb.OpenSessionRequest(token_ids=[1, 2, 3]), timeout=30).session_id
            except grpc.RpcError as e:
                outcome = ("open", e.code().name, e.details())
                break
            ids, finals = [], []
            try:
                for m in s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sid, token_ids=[4],
                                                                         sampling=samp), timeout=60):
                    ids += m.token_ids
                    if m.finish_reason:
                        finals.append((m.finish_reason, m.error))
                status = "OK"
            except grpc.RpcError as e:
                status = f"{e.code().name}: {e.details()}"
            if finals != [(pb.FINISH_REASON_LENGTH, "")] or ids != want:
                outcome = ("generate", status, finals, ids)
                break
            s.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=30)
        print(f"     (the journal refused a write in round {rounds}: {outcome and outcome[:3]})")
        ck.check(outcome is not None, "the journal fills up within 2000 rounds")
        if outcome and outcome[0] == "generate":
            _, status, finals, ids = outcome
            ck.check(len(finals) == 1 and finals[0][0] == pb.FINISH_REASON_ERROR and "journal" in finals[0][1],
                     "the generation the journal refused ends with one last message, ERROR naming the journal",
                     str(finals))
            ck.check(status.startswith("INTERNAL") and "journal" in status,
                     "... and the call ends INTERNAL naming the journal", status)
            ck.equal(ids, want[:len(ids)], "the ids it did stream are right")
        elif outcome:
            ck.check("journal" in outcome[2], "an OpenSession the journal refuses names it", outcome[2])
        # the daemon still serves (a one-shot Generate is not journaled)
        ids, _ = d.generate_ids(s, [1, 2, 3, 4], samp)
        ck.equal(ids, want, "a one-shot Generate after it")


if __name__ == "__main__":
    run("e2e journal_full", body)
