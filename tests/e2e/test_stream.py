#!/usr/bin/python3
"""test_stream.py — the bidirectional Stream: a sequence of requests
(appends, append + generate, generate alone) on one stream gives the same
appended acks (length, windows, syncs) and the same generated ids as the
equivalent OpenSession / Append / GenerateInSession calls, and as
`tconst generate` over the history. The stream's own session lives as long
as the stream; a stream can also attach to an open session; a bad request
ends the stream with INVALID_ARGUMENT; a request aborted while it waits
in the queue ends alone, and the stream goes on.
"""
import queue
import random

import grpc

from harness import Daemon, Streams, run, wait_for

SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.9, seed=7)


class BidiStream:
    """One Stream call driven request by request."""

    def __init__(self, stub, timeout=60):
        self.q = queue.Queue()
        self.it = stub.Stream(iter(self.q.get, None), timeout=timeout)

    def send(self, req):
        self.q.put(req)

    def close(self):
        self.q.put(None)

    def next(self):
        return next(self.it)

    def rest(self):
        return list(self.it)

    def request(self, req, appended, generate):
        """Sends req and reads its events: (appended SessionInfo or None,
        generated ids, last GenerateResponse or None)."""
        self.send(req)
        ack, ids, last = None, [], None
        if appended:
            ev = self.next()
            assert ev.WhichOneof("event") == "appended", ev
            ack = ev.appended
        if generate:
            while True:
                ev = self.next()
                assert ev.WhichOneof("event") == "generation", ev
                ids += ev.generation.token_ids
                if ev.generation.finish_reason:
                    last = ev.generation
                    break
        return ack, ids, last


def body(env, ck):
    pb = env.pb
    rng = random.Random(3)
    for arch in ("tconstformer", "tlinformer"):
        model = env.model(arch, seed=41)
        c = [[rng.randrange(2, 512) for _ in range(n)] for n in (40, 3, 70, 21, 5)]
        # (token_ids, generate, sampling)
        plan = [(c[0], False, None),
                (c[1], False, None),
                (c[2], True, env.sampling(max_tokens=50, ignore_eos=True, **SAMPLED)),
                ([], True, env.sampling(max_tokens=40, ignore_eos=True)),
                (c[3], False, None),
                (c[4], True, env.sampling(max_tokens=30, ignore_eos=True, **SAMPLED))]
        with Daemon(env, model=model) as d:
            s = d.stub()
            # the reference: the same plan through session calls
            ref = []
            sid = None
            for toks, gen, sp in plan:
                ack, ids = None, []
                if sid is None:
                    info = s.OpenSession(pb.OpenSessionRequest(token_ids=toks), timeout=30)
                    sid, ack = info.session_id, info
                elif toks and not gen:
                    ack = s.Append(pb.AppendRequest(session_id=sid, token_ids=toks), timeout=30).session
                if gen:
                    for r in s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sid, token_ids=toks,
                                                                              sampling=sp), timeout=60):
                        ids += r.token_ids
                    if toks:  # the ack of the stream is the state after the append: ask for it
                        ack = None
                ref.append((ack, ids))
            s.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=30)

            # the stream
            st = BidiStream(s)
            history, stream_sid = [], None
            for i, ((toks, gen, sp), (rack, rids)) in enumerate(zip(plan, ref)):
                req = pb.StreamRequest(token_ids=toks, generate=gen)
                if sp is not None:
                    req.sampling.CopyFrom(sp)
                ack, ids, last = st.request(req, appended=bool(toks) or not gen, generate=gen)
                history += toks
                if ack is not None:
                    stream_sid = stream_sid or ack.session_id
                    ck.check(ack.length == len(history) and ack.session_id == stream_sid,
                             f"{arch} request {i}: appended ack length {len(history)}, same session",
                             str(ack))
                    if rack is not None:
                        ck.equal((ack.length, ack.windows, ack.syncs), (rack.length, rack.windows, rack.syncs),
                                 f"{arch} request {i}: ack == the session call's SessionInfo (length, windows, syncs)")
                if gen:
                    ck.equal(ids, rids, f"{arch} request {i}: {len(ids)} generated ids == GenerateInSession's")
                    want = env.generate(model, history, len(rids), ignore_eos=True,
                                        **({k: getattr(sp, k) for k in SAMPLED} if sp.HasField("seed") else {}))
                    ck.equal(ids, want, f"{arch} request {i}: == tconst generate over the stream's history")
                    ck.equal(last.finish_reason, pb.FINISH_REASON_LENGTH, f"{arch} request {i}: finish LENGTH")
                    history += ids
                    ck.equal(last.usage.session_tokens, len(history), f"{arch} request {i}: usage.session_tokens")
            info = s.GetSession(pb.GetSessionRequest(session_id=stream_sid), timeout=30)
            ck.equal(info.length, len(history), f"{arch}: GetSession sees the stream's session while it is open")
            st.close()
            ck.equal(st.rest(), [], f"{arch}: half-close ends the stream with OK and no more events")
            # the server closes the stream's session after it sent the status:
            # wait for that, then check how GetSession answers
            wait_for(lambda: _closed(s, pb, stream_sid), 30, f"session {stream_sid} closed")
            ck.rpc_error(lambda: s.GetSession(pb.GetSessionRequest(session_id=stream_sid), timeout=30),
                         grpc.StatusCode.NOT_FOUND, f"{arch}: the stream's session is closed with the stream",
                         "session_id")

            # attach to an open session
            s.OpenSession(pb.OpenSessionRequest(session_id="shared", token_ids=c[0]), timeout=30)
            st = BidiStream(s)
            ack, _, _ = st.request(pb.StreamRequest(session_id="shared", token_ids=c[1]), True, False)
            ck.equal((ack.session_id, ack.length), ("shared", len(c[0]) + len(c[1])),
                     f"{arch}: a stream attaches to an open session")
            sp = env.sampling(max_tokens=20, ignore_eos=True)
            _, ids, _ = st.request(pb.StreamRequest(generate=True, sampling=sp), False, True)
            ck.equal(ids, env.generate(model, c[0] + c[1], 20, ignore_eos=True), f"{arch}: generation in it")
            st.close()
            st.rest()
            info = s.GetSession(pb.GetSessionRequest(session_id="shared"), timeout=30)
            ck.equal(info.length, len(c[0]) + len(c[1]) + 20,
                     f"{arch}: an attached session outlives the stream, with its history")

            # a request of a stream named by its request_id: the id comes
            # back on its generation, Abort ends that generation alone and
            # the stream (and its session) go on
            st = BidiStream(s)
            ack, _, _ = st.request(pb.StreamRequest(token_ids=c[0]), True, False)
            st.send(pb.StreamRequest(generate=True, request_id=f"stream-{arch}",
                                     sampling=env.sampling(max_tokens=100000, ignore_eos=True)))
            ev = st.next()
            ck.equal((ev.WhichOneof("event"), ev.generation.request_id), ("generation", f"stream-{arch}"),
                     f"{arch}: a Stream request's request_id comes back on its generation")
            ck.check(s.Abort(pb.AbortRequest(request_id=f"stream-{arch}"), timeout=30).found,
                     f"{arch}: Abort finds the Stream's generation by its request_id")
            while not ev.generation.finish_reason:
                ev = st.next()
            ck.equal(ev.generation.finish_reason, pb.FINISH_REASON_CANCELLED, f"{arch}: ... and ends it (CANCELLED)")
            ack2, _, _ = st.request(pb.StreamRequest(token_ids=c[1]), True, False)
            ck.equal(ack2.session_id, ack.session_id, f"{arch}: the stream goes on in its session after the Abort")
            st.close()
            ck.equal(st.rest(), [], f"{arch}: ... and ends with OK")

            # a bad request ends the stream with INVALID_ARGUMENT
            st = BidiStream(s)
            st.request(pb.StreamRequest(token_ids=[4, 5]), True, False)
            st.send(pb.StreamRequest(token_ids=[4, 9999]))
            ck.rpc_error(st.rest, grpc.StatusCode.INVALID_ARGUMENT, f"{arch}: a stream request with id 9999",
                         "token_ids")

            # cancels with requests in flight: the daemon stays up and
            # closes every cancelled stream's session (the server's close
            # and a receive queued behind it may come in either order; the
            # order that once read a freed context is pinned by
            # fuzz/regressions/request/*_receive_after_close)
            sids = []
            for k in range(40):
                st = BidiStream(s)
                ack, _, _ = st.request(pb.StreamRequest(token_ids=c[k % 5]), True, False)
                sids.append(ack.session_id)
                st.send(pb.StreamRequest(token_ids=c[(k + 1) % 5], generate=True,
                                         sampling=env.sampling(max_tokens=200, ignore_eos=True)))
                if k % 2:
                    st.send(pb.StreamRequest(token_ids=c[(k + 2) % 5]))
                st.it.cancel()
            gone = sum(1 for sk in sids if wait_for(lambda: _closed(s, pb, sk), 30, f"session {sk} closed"))
            ck.equal(gone, len(sids), f"{arch}: 40 streams cancelled with requests in flight: every session closed")
            ck.check(s.ServerInfo(pb.ServerInfoRequest(), timeout=30) is not None,
                     f"{arch}: the daemon answers after the cancels")
    queued_abort(env, ck)


def queued_abort(env, ck):
    """--max-batch 1 and --max-queued-requests 1, the slot held by another
    generation: a second stream's request is refused at admission and ends
    alone (an ERROR event naming RESOURCE_EXHAUSTED); a Stream request
    aborted while it waits in the queue ends alone (a CANCELLED generation
    event with its request_id), not the stream; the stream's own session
    stays, the next request generates from it exactly, and the aborted one
    counts as cancelled, not ok (it used to end the whole stream and close
    its session)."""
    pb = env.pb
    model = env.model("tconstformer", seed=41)
    with Daemon(env, "--max-batch", "1", "--max-queued-requests", "1", model=model) as d:
        s = d.stub()
        # the slot's holder is read as it comes (a paused one gives its slot up)
        holder = Streams(s, [pb.GenerateRequest(token_ids=[5, 6, 7], request_id="holder",
                                                sampling=env.sampling(max_tokens=1000000, ignore_eos=True))])
        ck.check(wait_for(lambda: len(holder.got[0]) > 0, 60, "the holder runs"), "queued abort: a generation holds the slot")
        st = BidiStream(s)
        first = [(i * 7) % 500 + 2 for i in range(20)]
        ack, _, _ = st.request(pb.StreamRequest(token_ids=first), True, False)
        st2 = BidiStream(s)  # a second stream in its session before the queue fills
        st2.request(pb.StreamRequest(token_ids=first), True, False)
        cancelled0 = d.metric("tconst_requests_total", status="cancelled") or 0
        ok0 = d.metric("tconst_requests_total", status="ok") or 0
        st.send(pb.StreamRequest(generate=True, request_id="sq", sampling=env.sampling(max_tokens=10, ignore_eos=True)))
        ck.check(wait_for(lambda: d.metric("tconst_requests_queued") == 1.0, 30, "sq queued"),
                 "queued abort: the stream's generation waits in the queue")
        # the queue is full (--max-queued-requests 1): another stream's request
        # is refused at admission, alone -- an ERROR event naming the limit
        st2.send(pb.StreamRequest(generate=True, request_id="over",
                                  sampling=env.sampling(max_tokens=10, ignore_eos=True)))
        ev = st2.next()
        ck.check(ev.WhichOneof("event") == "generation" and ev.generation.request_id == "over" and
                 ev.generation.finish_reason == pb.FINISH_REASON_ERROR and
                 "RESOURCE_EXHAUSTED" in ev.generation.error, "queue full: a stream's request refused at admission "
                 "gets an ERROR event naming the limit, its request_id", str(ev))
        ck.check(s.Abort(pb.AbortRequest(request_id="sq"), timeout=30).found, "queued abort: Abort finds it")
        ev = st.next()
        ck.equal((ev.WhichOneof("event"), ev.generation.request_id, ev.generation.finish_reason, list(ev.generation.token_ids)),
                 ("generation", "sq", pb.FINISH_REASON_CANCELLED, []),
                 "queued abort: one CANCELLED generation event with its request_id, no ids")
        ck.check(s.Abort(pb.AbortRequest(request_id="holder"), timeout=30).found, "queued abort: the holder aborted")
        holder.join(60)
        _, ids, last = st.request(pb.StreamRequest(generate=True, sampling=env.sampling(max_tokens=10, ignore_eos=True)),
                                  False, True)
        ck.equal(ids, env.generate(model, first, 10, ignore_eos=True),
                 "queued abort: the stream goes on in its session (the next generation == tconst generate)")
        ck.equal(s.GetSession(pb.GetSessionRequest(session_id=ack.session_id), timeout=30).length, len(first) + 10,
                 "queued abort: the session holds its whole history")
        ck.equal((d.metric("tconst_requests_total", status="cancelled") - cancelled0 >= 1,
                  d.metric("tconst_requests_total", status="ok") - ok0),
                 (True, 1.0), "queued abort: it counts as cancelled; only the next generation as ok")
        st.close()
        ck.equal(st.rest(), [], "queued abort: the stream ends with OK")
        _, ids, _ = st2.request(pb.StreamRequest(generate=True, sampling=env.sampling(max_tokens=10, ignore_eos=True)),
                                False, True)
        ck.equal(ids, env.generate(model, first, 10, ignore_eos=True),
                 "queue full: that stream goes on in its session (its next request generates exactly)")
        st2.close()
        ck.equal(st2.rest(), [], "queue full: ... and ends with OK")
        # a request refused when it starts (not at admission) counts by its
        # status too: INVALID_ARGUMENT is "rejected", not "ok"
        empty = s.OpenSession(pb.OpenSessionRequest(), timeout=30).session_id
        ok0, rej0 = (d.metric("tconst_requests_total", status=k) or 0 for k in ("ok", "rejected"))
        ck.rpc_error(lambda: list(s.GenerateInSession(pb.GenerateInSessionRequest(
            session_id=empty, sampling=env.sampling(max_tokens=5)), timeout=30)),
                     grpc.StatusCode.INVALID_ARGUMENT, "a generation in an empty session", "prompt")
        ck.equal((d.metric("tconst_requests_total", status="ok") - ok0,
                  d.metric("tconst_requests_total", status="rejected") - rej0), (0.0, 1.0),
                 "... counts as rejected, not ok")


def _closed(s, pb, sid):
    try:
        s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30)
        return False
    except grpc.RpcError as e:
        return e.code() == grpc.StatusCode.NOT_FOUND


if __name__ == "__main__":
    run("e2e stream", body)
