#!/usr/bin/python3
"""test_open_cancelled.py — an OpenSession cancelled after its workers
took the prompt (the client's cancel, or its deadline, arriving then)
does not leave its session behind: the client never hears of it, so it
would hold a --max-sessions slot until an idle expiry, its id taken (a
retry met ALREADY_EXISTS), and the journal would bring it back after a
restart. TC_FAULT_CANCEL_AFTER_PREFILL=N (test-only) cancels the first
N new sessions' jobs at exactly that point, before the journal has any of
them. One layout: the engine's
handling.
"""
import os

import grpc

from harness import Daemon, run, wait_for


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=5)
    short = [5, 17, 42, 99, 3]
    data = os.path.join(env.tmp, "data-open-cancelled")
    os.makedirs(data)
    # the first two session deletes fail as well: a session the journal
    # took before the cancel was seen could not be taken back, and would
    # come back after the restart below; none is written
    os.environ["TC_FAULT_CANCEL_AFTER_PREFILL"] = "2"
    os.environ["TC_FAULT_JOURNAL_DELETE_ERRORS"] = "2"
    try:
        d = Daemon(env, "--data-dir", data, "--max-sessions", "1", model=model)
        d.start()
    finally:
        del os.environ["TC_FAULT_CANCEL_AFTER_PREFILL"]
        del os.environ["TC_FAULT_JOURNAL_DELETE_ERRORS"]
    with d:
        s = d.stub()

        def open_code(**kw):
            try:
                r = s.OpenSession(pb.OpenSessionRequest(token_ids=short, **kw), timeout=60)
                return "OK", r
            except grpc.RpcError as e:
                return e.code().name, e.details()

        code, why = open_code(session_id="o1")
        ck.equal(code, "CANCELLED", f"an OpenSession cancelled after its prefill ends CANCELLED ({why})")
        code, why = open_code()
        ck.equal(code, "CANCELLED", f"... one without an id too ({why})")
        ck.check(wait_for(lambda: d.metric("tconst_sessions_active") == 0.0, 30, "the sessions closed"),
                 "neither session is left open", d.metric("tconst_sessions_active"))
        try:
            s.GetSession(pb.GetSessionRequest(session_id="o1"), timeout=30)
            got = "OK"
        except grpc.RpcError as e:
            got = e.code().name
        ck.equal(got, "NOT_FOUND", "GetSession o1: not found")
        # under --max-sessions 1, a session left behind would refuse this one
        code, r = open_code(session_id="o1")
        ck.equal(code, "OK", f"the same id opens again at once, under --max-sessions 1 ({r if code != 'OK' else ''})")
        if code == "OK":
            ck.equal(r.length, len(short), "with its prompt")
        ck.check(wait_for(lambda: (d.metric("tconst_requests_total", status="cancelled") or 0) >= 2, 30,
                          "the cancelled requests counted"), "both count as cancelled in requests_total")
        ck.check("not opened: its request was cancelled after its prefill" in open(d.log_path, errors="replace").read(),
                 "the log says why the session was not opened")
    with Daemon(env, "--data-dir", data, model=model) as d:
        ck.equal(d.metric("tconst_sessions_active"), 1.0, "after a restart only the session opened is back")
        info = d.stub().GetSession(pb.GetSessionRequest(session_id="o1"), timeout=30)
        ck.equal(info.length, len(short), "o1 with its prompt, not twice")


if __name__ == "__main__":
    run("e2e open_cancelled", body)
