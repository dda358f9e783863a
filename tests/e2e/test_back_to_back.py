#!/usr/bin/python3
"""test_back_to_back.py — sessions driven turn after turn with no pause,
several at once, as chat clients do: each turn is sent the moment the last
one's finish_reason arrives (a gRPC Generate left at that message, before
its status; or an OpenAI completion's response), sampled with stop token
ids so that turns end at a stop id (the worker ends its multi-step run
there) or at max_tokens. Each generation's thread is
held 50 ms after its last message (test-only TC_FAULT_RETIRE_DELAY_MS), so
the next turn lands in the moment before its session is let go of.

  * no turn is refused (FAILED_PRECONDITION busy) or fails;
  * each session's history as the clients saw it (its prompts and every
    id each turn returned) is what the server holds: GetSession's length,
    SnapshotSession's ids, and a greedy generation after it equal to
    `tconst generate` over that history.

Then with each generation's thread held 3 s after its last message (well
past the 1 s a request used to wait on the gRPC thread), a turn sent at once
queues behind the last one (next_job) instead of holding the RPC thread:
  * GetSession answers while it waits, busy; a third request is refused busy;
  * it runs once the last one lets go: == `tconst generate`;
  * CloseSession while one waits: it fails NOT_FOUND naming the close, and
    the session is gone; Abort of one that waits: CANCELLED, the session
    goes on with the history its client saw; an OpenAI completion that
    waits, aborted by its X-Request-Id: 200, finish_reason abort, no text;
  * a fork (copy_from) sent at once copies the whole history once the last
    one let go, before the session's next turn sent after it; one whose
    source closes while it waits fails NOT_FOUND and leaves no session;
  * a SnapshotSession sent at once gets the whole history once the last
    one let go.

Runs in each worker layout (TC_E2E_DAEMON_ARGS).
"""
import http.client
import json
import threading

import grpc
from harness import Daemon, run, wait_for

SESSIONS, TURNS, MAX_TOK = 4, 6, 12
STOP = list(range(7, 512, 11))  # 46 of the tiny model's 512 ids: about 1 sampled token in 11 ends a run


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=23)
    with Daemon(env, "--openai-listen", "127.0.0.1:0", model=model,
                env_vars={"TC_FAULT_RETIRE_DELAY_MS": "50"}) as d:
        s, port = d.stub(), d.openai_port()
        prompts = [[(k * 29 + i * 5) % 500 + 3 for i in range(10 + 9 * k)] for k in range(SESSIONS)]
        sids = [s.OpenSession(pb.OpenSessionRequest(token_ids=p), timeout=60).session_id for p in prompts]
        hist = [list(p) for p in prompts]
        errors = [[] for _ in range(SESSIONS)]
        ends = [[] for _ in range(SESSIONS)]

        def turn_grpc(k, t, tok):
            sp = env.sampling(temperature=1.0, seed=1000 * k + t, max_tokens=MAX_TOK, stop_token_ids=STOP,
                              ignore_eos=True)
            ids, fin = [], None
            for m in s.Generate(pb.GenerateRequest(token_ids=[tok], session_id=sids[k], sampling=sp), timeout=120):
                ids += m.token_ids
                if m.finish_reason:
                    fin = pb.FinishReason.Name(m.finish_reason)
                    break  # the next turn goes now, before this call's status
            return ids, fin

        def turn_openai(k, t, tok):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                c.request("POST", "/v1/completions", json.dumps(
                    {"prompt": [tok], "session_id": sids[k], "max_tokens": MAX_TOK, "temperature": 1.0,
                     "seed": 1000 * k + t, "stop_token_ids": STOP, "ignore_eos": True}),
                    {"Content-Type": "application/json"})
                r = c.getresponse()
                body = json.loads(r.read())
            finally:
                c.close()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {body}")
            ch = body["choices"][0]
            return ch["token_ids"], ch["finish_reason"]

        def drive(k):
            for t in range(TURNS):
                tok = (k * 7 + t * 3) % 500 + 2
                try:
                    ids, fin = (turn_grpc if (k + t) % 2 == 0 else turn_openai)(k, t, tok)
                except (grpc.RpcError, RuntimeError, OSError, ValueError) as ex:
                    errors[k].append(f"turn {t}: {ex.code() if isinstance(ex, grpc.RpcError) else ''} {ex}"[:300])
                    return
                hist[k] += [tok] + ids
                ends[k].append(fin)

        threads = [threading.Thread(target=drive, args=(k,)) for k in range(SESSIONS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(600)
        ck.equal(errors, [[]] * SESSIONS, f"{SESSIONS} sessions x {TURNS} turns back to back (gRPC and OpenAI "
                                          "alternating): none refused busy, none failed")
        flat = [f for e in ends for f in e]
        ck.check(any(f in ("STOP", "FINISH_REASON_STOP", "stop") for f in flat) and
                 any(f in ("LENGTH", "FINISH_REASON_LENGTH", "length") for f in flat),
                 "the turns ended both at a stop id and at max_tokens", flat)
        for k in range(SESSIONS):
            info = s.GetSession(pb.GetSessionRequest(session_id=sids[k]), timeout=60)
            snap = [t for m in s.SnapshotSession(pb.SnapshotSessionRequest(session_id=sids[k]), timeout=60)
                    for t in m.token_ids]
            ck.equal((info.length, snap == hist[k]), (len(hist[k]), True),
                     f"session {k}: GetSession's length and SnapshotSession's ids are the history its client saw "
                     f"({len(hist[k])} tokens)")
            got, _ = d.generate_ids(s, [1], env.sampling(max_tokens=4, ignore_eos=True), session_id=sids[k])
            ck.equal(got, env.generate(model, hist[k] + [1], 4, ignore_eos=True),
                     f"session {k}: a greedy generation after it == tconst generate over that history")

    queued(env, ck, model)


def busy_if_open(s, pb, sid):
    try:
        return s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60).busy
    except grpc.RpcError as ex:
        if ex.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False


def queued(env, ck, model):
    pb = env.pb
    with Daemon(env, "--openai-listen", "127.0.0.1:0", model=model,
                env_vars={"TC_FAULT_RETIRE_DELAY_MS": "3000"}) as d:
        s, port = d.stub(), d.openai_port()
        greedy = env.sampling(max_tokens=5, ignore_eos=True)
        hist = [5, 9, 14, 3, 7, 11, 2]
        sid = s.OpenSession(pb.OpenSessionRequest(token_ids=hist), timeout=60).session_id
        other = s.OpenSession(pb.OpenSessionRequest(token_ids=[4, 4]), timeout=60).session_id

        def left_at_finish(tok):  # a turn whose client leaves at finish_reason, before the call's status
            ids = []
            for m in s.Generate(pb.GenerateRequest(token_ids=[tok], session_id=sid, sampling=greedy), timeout=120):
                ids += m.token_ids
                if m.finish_reason:
                    break
            hist.extend([tok] + ids)

        def start_next(tok, out, **kw):
            def go():
                try:
                    out["ids"] = d.generate_ids(s, [tok], greedy, session_id=sid, timeout=120, **kw)[0]
                except grpc.RpcError as ex:
                    out["err"] = (ex.code(), ex.details() or "")
            th = threading.Thread(target=go)
            th.start()
            return th

        def fork_in_thread(name, tok):  # OpenSession(copy_from=sid) named `name`, on a thread of its own
            fout = {}

            def go():
                try:
                    fout["info"] = s.OpenSession(pb.OpenSessionRequest(session_id=name, copy_from=sid, token_ids=[tok]),
                                                 timeout=120)
                except grpc.RpcError as ex:
                    fout["err"] = (ex.code(), ex.details() or "")
            th = threading.Thread(target=go)
            th.start()
            return th, fout

        def busy():
            return s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60).busy

        left_at_finish(21)
        out = {}
        th = start_next(33, out)
        ck.check(wait_for(busy, 60, "the next turn to queue"),
                 "the next turn, sent at once, queues behind the last one: GetSession answers, busy")
        ck.equal(s.GetSession(pb.GetSessionRequest(session_id=other), timeout=60).busy, False,
                 "another session's GetSession answers while it waits (the RPC thread is not held)")
        ck.rpc_error(lambda: s.Generate(pb.GenerateRequest(token_ids=[1], session_id=sid, sampling=greedy),
                                        timeout=60),
                     grpc.StatusCode.FAILED_PRECONDITION, "a third request while one waits", "busy")
        th.join(300)
        ck.equal(out.get("ids", out.get("err")), env.generate(model, hist + [33], 5, ignore_eos=True),
                 "the queued turn ran once the last one let go (no busy): == tconst generate")
        hist += [33] + out.get("ids", [])

        left_at_finish(40)
        out = {}
        th = start_next(41, out, request_id="queued-abort")
        wait_for(busy, 60, "the next turn to queue")
        ck.equal(s.Abort(pb.AbortRequest(request_id="queued-abort"), timeout=60).found, True,
                 "Abort finds the request that waits")
        th.join(300)
        ck.equal(out.get("err", (None,))[0], grpc.StatusCode.CANCELLED, "the aborted one that waited: CANCELLED")
        got, _ = d.generate_ids(s, [42], greedy, session_id=sid, timeout=120)
        ck.equal(got, env.generate(model, hist + [42], 5, ignore_eos=True),
                 "the session goes on with the history its client saw (the aborted one took nothing)")
        hist += [42] + got

        # an OpenAI completion that waits, aborted by its X-Request-Id before its first token:
        # an end (200, finish_reason abort, no text), not a server error
        left_at_finish(70)
        oout = {}

        def oa_queued():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                c.request("POST", "/v1/completions", json.dumps({"prompt": [71], "session_id": sid, "max_tokens": 5}),
                          {"Content-Type": "application/json", "X-Request-Id": "oa-queued"})
                r = c.getresponse()
                oout["r"] = (r.status, json.loads(r.read()))
            finally:
                c.close()
        th = threading.Thread(target=oa_queued)
        th.start()
        wait_for(busy, 60, "the completion to queue")
        ck.equal(s.Abort(pb.AbortRequest(request_id="oa-queued"), timeout=60).found, True,
                 "Abort finds the OpenAI completion that waits (X-Request-Id)")
        th.join(300)
        st, body = oout.get("r", (None, {}))
        ch = (body.get("choices") or [{}])[0]
        ck.equal((st, ch.get("finish_reason"), ch.get("text"), ch.get("token_ids"), body.get("usage")),
                 (200, "abort", "", [], {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}),
                 "... it answers 200, finish_reason abort, no text, usage its prompt (aborted before its first token)")
        got, _ = d.generate_ids(s, [72], greedy, session_id=sid, timeout=120)
        ck.equal(got, env.generate(model, hist + [72], 5, ignore_eos=True),
                 "the session goes on with the history its client saw (the aborted completion took nothing)")
        hist += [72] + got

        # a fork sent at once queues too: it copies the history once the last one let go
        left_at_finish(43)
        f = s.OpenSession(pb.OpenSessionRequest(copy_from=sid, token_ids=[44]), timeout=120)
        fsnap = [t for m in s.SnapshotSession(pb.SnapshotSessionRequest(session_id=f.session_id), timeout=60)
                 for t in m.token_ids]
        ck.equal((f.length, fsnap), (len(hist) + 1, hist + [44]),
                 "a fork sent at once (copy_from) copies the whole history once the last one let go")
        # a fork that waits, then the session's next turn sent before the fork's reply (it queues
        # behind too): the fork copies first, the turn runs after -- neither refused busy
        left_at_finish(60)
        fth, fout = fork_in_thread("fork-r", 61)
        wait_for(lambda: busy_if_open(s, pb, "fork-r"), 60, "the fork to queue")
        out = {}
        th = start_next(62, out)
        fth.join(300)
        th.join(300)
        forked = hist + [61]
        fsnap = [t for m in s.SnapshotSession(pb.SnapshotSessionRequest(session_id="fork-r"), timeout=60)
                 for t in m.token_ids] if "info" in fout else fout.get("err")
        ck.equal(fsnap, forked, "a fork, then the source's next turn before the fork's reply: the fork copies the "
                                "history as it was")
        ck.equal(out.get("ids", out.get("err")), env.generate(model, hist + [62], 5, ignore_eos=True),
                 "... and the turn runs after it (no busy): == tconst generate")
        hist += [62] + out.get("ids", [])
        ck.check(d.metric("tconst_queued_behind_total") >= 4, "tconst_queued_behind_total counts the requests and "
                 "forks that waited", d.metric("tconst_queued_behind_total"))

        # a SnapshotSession sent at once waits too, holding no thread
        left_at_finish(48)
        out = {}
        qb0 = d.metric("tconst_queued_behind_total")

        def snap_at_once():
            try:
                out["ids"] = [t for m in s.SnapshotSession(pb.SnapshotSessionRequest(session_id=sid, chunk_tokens=7),
                                                           timeout=120) for t in m.token_ids]
            except grpc.RpcError as ex:
                out["err"] = (ex.code(), ex.details() or "")
        th = threading.Thread(target=snap_at_once)
        th.start()
        ck.check(wait_for(lambda: d.metric("tconst_queued_behind_total") > qb0, 60, "the snapshot to wait"),
                 "the snapshot waits (tconst_queued_behind_total grew) ...")
        ck.equal(s.GetSession(pb.GetSessionRequest(session_id=other), timeout=60).busy, False,
                 "... and another session's GetSession answers meanwhile (no thread held)")
        th.join(300)
        ck.equal(out.get("ids", out.get("err")), hist, "a SnapshotSession sent at once: the whole history, once the "
                                                       "last one let go (no busy)")

        # ... and fails NOT_FOUND when its source closes first
        left_at_finish(45)
        fth, fout = fork_in_thread("fork-q", 46)
        ck.check(wait_for(lambda: busy_if_open(s, pb, "fork-q"), 60, "the fork to queue"), "the fork waits, busy")
        closed = s.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=60)
        fth.join(300)
        err = fout.get("err", (None, ""))
        ck.check(err[0] == grpc.StatusCode.NOT_FOUND and "closed before the copy" in err[1],
                 "its source closed while the fork waited: it fails NOT_FOUND naming the close", fout)
        ck.rpc_error(lambda: s.GetSession(pb.GetSessionRequest(session_id="fork-q"), timeout=60),
                     grpc.StatusCode.NOT_FOUND, "the fork that failed is not left open")
        # the session again (under a new id) for the last case
        ck.equal(closed.length, len(hist), "CloseSession's length: the history its client saw")
        hist = [6, 8, 10, 12]
        sid = s.OpenSession(pb.OpenSessionRequest(token_ids=hist), timeout=60).session_id

        left_at_finish(50)
        out = {}
        th = start_next(51, out)
        wait_for(busy, 60, "the next turn to queue")
        s.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=60)
        th.join(300)
        err = out.get("err", (None, ""))
        ck.check(err[0] == grpc.StatusCode.NOT_FOUND and "closed before this request started" in err[1],
                 "CloseSession while a turn waits: it fails NOT_FOUND naming the close", out)
        ck.rpc_error(lambda: s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60),
                     grpc.StatusCode.NOT_FOUND, "the closed session")


if __name__ == "__main__":
    run("e2e back_to_back", body)
