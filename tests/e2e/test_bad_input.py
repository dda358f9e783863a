#!/usr/bin/python3
"""test_bad_input.py — bad input gets the right status code and a message
naming the field, and the daemon keeps serving after each (a correct
Generate follows every case): unknown session (NOT_FOUND), empty prompt,
token ids outside the vocabulary, negative / too large max_tokens, top_p
outside (0, 1], other sampling fields, text on an ids-only model
(INVALID_ARGUMENT), an oversized message (RESOURCE_EXHAUSTED), malformed
protobuf bytes (INVALID_ARGUMENT), unknown methods (UNIMPLEMENTED), a
second generation in a busy session (FAILED_PRECONDITION), more sessions
than --max-sessions (RESOURCE_EXHAUSTED at once; opening works again once
some are closed), stop_token_ids out of the vocabulary or over 1024,
Detokenize past the model's vocabulary; a --max-tokens below the default
16 caps a request that leaves max_tokens out; --max-batch: a slot held by
a generation that reads makes new generations wait (OpenSession and
Append do not), one whose client stopped reading gives it up and resumes
when read again; --max-session-tokens refuses prompts that do not fit and
ends generations at the limit with LENGTH.
"""
import os
import re
import threading

import grpc

from harness import Daemon, run, wait_for

MAX_MSG = 65536
MAX_SESSIONS = 6
IA = grpc.StatusCode.INVALID_ARGUMENT


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=61)
    ref = env.generate(model, [9, 8, 7], 12, ignore_eos=True)
    with Daemon(env, "--max-message-bytes", str(MAX_MSG), "--max-sessions", str(MAX_SESSIONS),
                "--max-tokens", "100000", model=model) as d:
        ch = d.channel()
        s = d.stub(ch)
        n_alive = [0, 0]

        def serves():
            """A correct Generate right after a bad request."""
            ids, _ = d.generate_ids(s, [9, 8, 7], env.sampling(max_tokens=12, ignore_eos=True), timeout=30)
            n_alive[0] += 1
            n_alive[1] += ids == ref

        def gen(tokens=None, text="", session_id="", request_id="", **sp):
            def f():
                return s.Generate(pb.GenerateRequest(token_ids=tokens or [], text=text, session_id=session_id,
                                                     request_id=request_id, sampling=env.sampling(**sp)), timeout=30)
            return f

        # unknown session
        NF = grpc.StatusCode.NOT_FOUND
        ck.rpc_error(gen([5], session_id="no-such-session"), NF, "Generate in an unknown session", "session_id")
        ck.rpc_error(lambda: s.GenerateInSession(pb.GenerateInSessionRequest(session_id="nope"), timeout=30), NF,
                     "GenerateInSession in an unknown session", "session_id")
        ck.rpc_error(lambda: s.Append(pb.AppendRequest(session_id="nope", token_ids=[1]), timeout=30), NF,
                     "Append to an unknown session", "session_id")
        ck.rpc_error(lambda: s.GetSession(pb.GetSessionRequest(session_id="nope"), timeout=30), NF,
                     "GetSession of an unknown session", "session_id")
        ck.rpc_error(lambda: s.CloseSession(pb.CloseSessionRequest(session_id="nope"), timeout=30), NF,
                     "CloseSession of an unknown session", "session_id")
        serves()

        # prompts
        ck.rpc_error(gen(), IA, "Generate with an empty prompt", "prompt")
        ck.rpc_error(gen([5, 512]), IA, "token id 512 >= vocab 512", "token_ids")
        ck.rpc_error(gen([5, 1 << 30]), IA, "token id 2^30", "token_ids")
        ck.rpc_error(gen([-1]), IA, "token id -1", "token_ids")
        ck.rpc_error(gen(text="hello"), IA, "text prompt on an ids-only model", "text")
        ck.rpc_error(gen([5], text="hello"), IA, "both text and token_ids", "prompt")
        ck.rpc_error(lambda: s.Append(pb.AppendRequest(session_id="x"), timeout=30), IA, "empty Append", "append")
        ck.rpc_error(lambda: s.GenerateInSession(pb.GenerateInSessionRequest(), timeout=30), IA,
                     "GenerateInSession without a session_id", "session_id")
        ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(session_id="x" * 100), timeout=30), IA,
                     "a 100-byte session_id", "session_id")
        ck.rpc_error(lambda: s.Tokenize(pb.TokenizeRequest(text="hi"), timeout=30),
                     grpc.StatusCode.FAILED_PRECONDITION, "Tokenize on an ids-only model", "text")
        ck.rpc_error(lambda: s.Abort(pb.AbortRequest(), timeout=30), IA, "Abort without a request_id", "request_id")
        ck.rpc_error(lambda: s.Generate(pb.GenerateRequest(token_ids=[5], request_id="r" * 64,
                                                           sampling=env.sampling()), timeout=30),
                     IA, "a 64-byte request_id (journaled whole, or it could never resume)", "request_id")
        # a request_id names one live request: a second one under it is
        # refused (Abort by id would cancel both); Abort ends the first
        first = s.Generate(pb.GenerateRequest(token_ids=[5, 6], request_id="dup", sampling=env.sampling(
            max_tokens=100000, ignore_eos=True)), timeout=120)
        next(first)
        ck.rpc_error(lambda: list(s.Generate(pb.GenerateRequest(token_ids=[7], request_id="dup",
                                                                sampling=env.sampling(max_tokens=3)), timeout=30)),
                     grpc.StatusCode.ALREADY_EXISTS, "a second request under a running request_id", "request_id")
        ck.check(s.Abort(pb.AbortRequest(request_id="dup"), timeout=30).found, "Abort finds the running request")
        ends = None
        try:
            for _ in first:
                pass
        except grpc.RpcError as e:
            ends = e.code()
        ck.equal(ends, grpc.StatusCode.CANCELLED, "the aborted request ends CANCELLED")
        ids, _ = d.generate_ids(s, [9, 8, 7], env.sampling(max_tokens=12, ignore_eos=True), request_id="dup")
        ck.equal(ids, ref, "its request_id is free again once it ended")
        # ids the server assigns: distinct, and not guessable from a counter
        # (Abort takes any id: "r-3" must not reach another client's request)
        rids = [m.request_id for m in (list(s.Generate(pb.GenerateRequest(token_ids=[5], sampling=env.sampling(
            max_tokens=1)), timeout=30))[0] for _ in range(2))]
        ck.check(len(set(rids)) == 2 and all(re.fullmatch(r"r-[0-9]+-[0-9a-f]{12}", r) for r in rids),
                 "assigned request_ids are distinct, r-N-<48 random bits>", str(rids))
        # a NUL inside a string would be cut there by protobuf-c: refused, naming the field (nested too)
        ck.rpc_error(lambda: s.Tokenize(pb.TokenizeRequest(text="a\x00b"), timeout=30), IA, "Tokenize text with a NUL",
                     "text: a NUL character")
        ck.rpc_error(gen(text="hi\x00there"), IA, "a text prompt with a NUL", "text: a NUL character")
        nul_stop = env.sampling()
        nul_stop.stop.extend(["fine", "ab\x00"])
        ck.rpc_error(lambda: s.Generate(pb.GenerateRequest(token_ids=[5], sampling=nul_stop), timeout=30), IA,
                     "a stop string with a NUL (its path and index)", "sampling.stop[1]: a NUL character")
        ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(session_id="x\x00y"), timeout=30), IA,
                     "a session_id with a NUL", "session_id: a NUL character")
        ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(session_id="x\n2026-01-01T00:00:00Z error forged"),
                                           timeout=30), IA, "a session_id with a newline", "session_id: a control")
        ck.rpc_error(gen([5], request_id="r\tid"), IA, "a request_id with a tab", "request_id: a control")
        ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(session_id="a\u0085b"), timeout=30), IA,
                     "a session_id with U+0085 (a C1 control)", "session_id: a control character (U+0085)")

        # ill-formed UTF-8 in a string field (a client that does not check
        # what it sends; Python's own protobuf would refuse to encode it):
        # refused naming the field, never echoed back
        def raw(method, msg, old, new):
            wire = msg.SerializeToString()
            assert old in wire
            call = d.channel().unary_stream if method == "Generate" else d.channel().unary_unary
            rpc = call(f"/tconst.v1.TConst/{method}", request_serializer=lambda b: b,
                       response_deserializer=lambda b: b)
            return lambda: list(rpc(wire.replace(old, new), timeout=30)) if method == "Generate" else \
                rpc(wire.replace(old, new), timeout=30)
        ck.rpc_error(raw("OpenSession", pb.OpenSessionRequest(session_id="badX"), b"badX", b"bad\xff"), IA,
                     "a session_id that is not UTF-8", "session_id: not valid UTF-8 (at byte 3)")
        ck.rpc_error(raw("Generate", pb.GenerateRequest(token_ids=[5], request_id="rXY"), b"rXY", b"r\xc0\xaf"), IA,
                     "a request_id with an overlong encoding", "request_id: not valid UTF-8 (at byte 1)")
        ck.rpc_error(raw("Tokenize", pb.TokenizeRequest(text="okXYZ"), b"XYZ", b"\xed\xa0\x80"), IA,
                     "Tokenize text with a surrogate", "text: not valid UTF-8 (at byte 2)")
        stop_msg = pb.GenerateRequest(token_ids=[5], sampling=env.sampling())
        stop_msg.sampling.stop.append("stXY")
        ck.rpc_error(raw("Generate", stop_msg, b"stXY", b"st\xe2\x82"), IA, "a stop string cut inside a character",
                     "sampling.stop[0]: not valid UTF-8 (at byte 2)")
        serves()

        # sampling
        ck.rpc_error(gen([5], max_tokens=-1), IA, "max_tokens -1", "sampling.max_tokens")
        ck.rpc_error(gen([5], max_tokens=100001), IA, "max_tokens above --max-tokens", "sampling.max_tokens")
        for tp in (0.0, 1.5, -0.1, float("nan")):
            ck.rpc_error(gen([5], top_p=tp), IA, f"top_p {tp}", "top_p")
        ck.rpc_error(gen([5], temperature=-0.5), IA, "temperature -0.5", "temperature")
        ck.rpc_error(gen([5], top_k=-3), IA, "top_k -3", "top_k")
        ck.rpc_error(lambda: s.Generate(pb.GenerateRequest(token_ids=[5], sampling=pb.SamplingParams(stop=["x"])),
                                        timeout=30), IA, "stop strings on an ids-only model", "sampling.stop")
        vocab = s.ModelInfo(pb.ModelInfoRequest(), timeout=30).vocab_size
        for bad in (-5, vocab):
            ck.rpc_error(gen([5], stop_token_ids=[3, bad]), IA, f"stop_token_ids with {bad}",
                         "sampling.stop_token_ids[1]")
        ck.rpc_error(gen([5], stop_token_ids=[3] * 1025), IA, "1025 stop_token_ids", "sampling.stop_token_ids")
        ids, _ = d.generate_ids(s, [9, 8, 7], env.sampling(max_tokens=12, ignore_eos=True, stop_token_ids=[3] * 1024))
        ck.equal(ids[:ids.index(3) + 1] if 3 in ids else ids, ref[:ref.index(3) + 1] if 3 in ref else ref,
                 "1024 stop_token_ids are taken")
        ids, last = d.generate_ids(s, [9, 8, 7], env.sampling(max_tokens=0))
        ck.check(ids == [] and last.finish_reason == pb.FINISH_REASON_LENGTH, "max_tokens 0 is valid: no ids, LENGTH")
        ids, _ = d.generate_ids(s, [9, 8, 7], env.sampling(top_p=1.0, max_tokens=12, ignore_eos=True))
        ck.equal(ids, ref, "top_p 1 is valid (and greedy)")
        serves()

        # an oversized message
        big = [300] * (MAX_MSG // 2 + 100)  # 2 bytes a packed id
        ck.rpc_error(gen(big), grpc.StatusCode.RESOURCE_EXHAUSTED, f"a message over --max-message-bytes {MAX_MSG}")
        ck.rpc_error(lambda: s.Append(pb.AppendRequest(session_id="x", token_ids=big), timeout=30),
                     grpc.StatusCode.RESOURCE_EXHAUSTED, "an oversized Append")
        serves()
        ids, _ = d.generate_ids(s, [300] * (MAX_MSG // 4), env.sampling(max_tokens=3), timeout=60)
        ck.equal(len(ids), 3, "a large message under the limit is served")

        # malformed protobuf bytes through raw (unserialized) calls
        raw_gen = ch.unary_stream("/tconst.v1.TConst/Generate", request_serializer=None,
                                  response_deserializer=None)
        raw_app = ch.unary_unary("/tconst.v1.TConst/Append", request_serializer=None, response_deserializer=None)
        garbage = [b"\xff\xff\xff\xff", b"\x1a\x05\x01\x02", b"\x0a\xff\x01abc", b"\x08"]
        for i, g in enumerate(garbage):
            ck.rpc_error(lambda: raw_gen(g, timeout=30), IA, f"Generate with garbage bytes #{i} {g!r}",
                         "GenerateRequest")
        ck.rpc_error(lambda: raw_app(b"\xff\xff", timeout=30), IA, "Append with garbage bytes", "AppendRequest")
        good = pb.GenerateRequest(token_ids=[9, 8, 7], sampling=env.sampling(max_tokens=12, ignore_eos=True))
        raw_ids = [t for m in raw_gen(good.SerializeToString(), timeout=30)
                   for t in pb.GenerateResponse.FromString(m).token_ids]
        ck.equal(raw_ids, ref, "the raw channel serves well-formed bytes")
        serves()

        # unknown methods
        for m in ("/tconst.v1.TConst/NoSuchMethod", "/tconst.v2.TConst/Generate", "/foo.Bar/Baz"):
            ck.rpc_error(lambda: ch.unary_unary(m, request_serializer=None, response_deserializer=None)(
                b"", timeout=30), grpc.StatusCode.UNIMPLEMENTED, f"unknown method {m}")
        serves()

        # a busy session: a second generation (or an append) is refused
        sid = s.OpenSession(pb.OpenSessionRequest(token_ids=[5, 6, 7]), timeout=30).session_id
        long_call = s.GenerateInSession(pb.GenerateInSessionRequest(
            session_id=sid, sampling=env.sampling(max_tokens=100000, ignore_eos=True)), timeout=120)
        next(long_call)  # it runs
        FP = grpc.StatusCode.FAILED_PRECONDITION
        ck.rpc_error(lambda: s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sid), timeout=30), FP,
                     "a second GenerateInSession in a busy session", "busy")
        ck.rpc_error(gen([5], session_id=sid), FP, "a Generate in a busy session", "busy")
        ck.rpc_error(lambda: s.Append(pb.AppendRequest(session_id=sid, token_ids=[3]), timeout=30), FP,
                     "an Append to a busy session", "busy")
        ck.check(s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30).busy, "GetSession says busy")
        long_call.cancel()
        ck.check(wait_for(lambda: not s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30).busy, 30,
                          "the session to be idle"), "the cancelled generation releases the session")
        ids = [t for r in s.GenerateInSession(pb.GenerateInSessionRequest(
            session_id=sid, sampling=env.sampling(max_tokens=4)), timeout=30) for t in r.token_ids]
        ck.equal(len(ids), 4, "then the session generates again")
        s.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=30)
        serves()

        # more sessions than --max-sessions
        RE = grpc.StatusCode.RESOURCE_EXHAUSTED
        sids = [s.OpenSession(pb.OpenSessionRequest(token_ids=[i + 2]), timeout=30).session_id
                for i in range(MAX_SESSIONS)]
        ck.equal(len(set(sids)), MAX_SESSIONS, f"{MAX_SESSIONS} sessions open")
        ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(token_ids=[2]), timeout=10), RE,
                     f"session {MAX_SESSIONS + 1} (within a 10 s deadline)", "max_sessions")
        ck.rpc_error(gen([9, 8, 7], max_tokens=3), RE, "a one-shot Generate (needs a session) while full",
                     "max_sessions")
        ck.rpc_error(lambda: list(s.Stream(iter([pb.StreamRequest(token_ids=[3])]), timeout=10)), RE,
                     "a Stream while full", "max_sessions")
        for x in sids[:2]:
            s.CloseSession(pb.CloseSessionRequest(session_id=x), timeout=30)
        more = s.OpenSession(pb.OpenSessionRequest(token_ids=[2]), timeout=30)
        ck.check(more.session_id != "", "after closing two, OpenSession works again")
        ids, _ = d.generate_ids(s, [9, 8, 7], env.sampling(max_tokens=12, ignore_eos=True))
        ck.equal(ids, ref, "and a one-shot Generate too")
        for x in sids[2:] + [more.session_id]:
            s.CloseSession(pb.CloseSessionRequest(session_id=x), timeout=30)

        serves()
        ck.equal(n_alive, [n_alive[0], n_alive[0]], f"the daemon served a correct Generate after each group "
                                                    f"({n_alive[0]} times)")
        ck.check(d.proc.poll() is None, "the daemon is still running")

    # a head wider than its tokenizer (vocab_size 512, 256 byte tokens): the
    # ids past the tokenizer stream as U+FFFD in the text, never dropped
    import json, shutil
    padded = os.path.join(env.tmp, "model-padded")
    shutil.copytree(model, padded)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs, n = {}, 0
    for b in range(256):  # GPT-2's byte -> printable character map
        cs[b] = chr(b) if b in bs else chr(256 + n)
        n += b not in bs
    with open(os.path.join(padded, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({cs[b]: b for b in range(256)}, f, ensure_ascii=False)
    with open(os.path.join(padded, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    with Daemon(env, model=padded) as d:
        ids, text = [], ""
        for r in d.stub().Generate(pb.GenerateRequest(token_ids=[9, 8, 7], sampling=env.sampling(
                max_tokens=200, ignore_eos=True, temperature=1.0, seed=3)), timeout=60):
            ids += r.token_ids
            text += r.text
        past = sum(t >= 256 for t in ids)
        ck.check(past > 0 and text.count("\ufffd") >= past,
                 f"ids past a 256-token tokenizer stream as U+FFFD ({past} of {len(ids)} ids, "
                 f"{text.count(chr(0xfffd))} U+FFFD)")
        s = d.stub()
        ck.equal(s.Detokenize(pb.DetokenizeRequest(token_ids=ids), timeout=30).text, text,
                 "Detokenize of those ids gives the streamed text (U+FFFD past the tokenizer)")
        for bad in (-1, 512):
            ck.rpc_error(lambda: s.Detokenize(pb.DetokenizeRequest(token_ids=[65, bad]), timeout=30), IA,
                         f"Detokenize of {bad} (outside the model's 512 ids)", "token_ids[1]")

    # --max-tokens below the default of 16: a request that leaves
    # max_tokens out gets the limit, not a refusal of a value it never sent
    with Daemon(env, "--max-tokens", "8", model=model) as d:
        s = d.stub()
        ids, last = d.generate_ids(s, [9, 8, 7], env.sampling(ignore_eos=True))
        ck.check(ids == ref[:8] and last.finish_reason == pb.FINISH_REASON_LENGTH,
                 "max_tokens left out with --max-tokens 8: 8 ids, LENGTH", f"{len(ids)} ids")
        ck.rpc_error(lambda: list(s.Generate(pb.GenerateRequest(token_ids=[5], sampling=env.sampling(max_tokens=9)),
                                             timeout=30)), IA, "max_tokens 9 with --max-tokens 8",
                     "sampling.max_tokens")

    # --max-batch 1 held by a generation that does not end (its client
    # reads): a new generation waits for the slot (here past its
    # deadline), but an OpenSession and an Append, which take no slot, do
    # not wait
    with Daemon(env, "--max-batch", "1", "--stream-queue", "4", model=model) as d:
        s = d.stub()
        hold = s.Generate(pb.GenerateRequest(token_ids=[9, 8, 7], request_id="hold", sampling=env.sampling(
            max_tokens=1000000, ignore_eos=True)), timeout=120)
        next(hold)

        def read_hold():
            try:
                for _ in hold:
                    pass
            except grpc.RpcError:
                pass
        th = threading.Thread(target=read_hold)
        th.start()
        sid = s.OpenSession(pb.OpenSessionRequest(token_ids=[1, 2, 3]), timeout=30).session_id
        ck.equal(s.Append(pb.AppendRequest(session_id=sid, token_ids=[4, 5]), timeout=30).session.length, 5,
                 "with the one batch slot held: OpenSession and Append still run")
        ck.rpc_error(lambda: list(s.GenerateInSession(pb.GenerateInSessionRequest(
            session_id=sid, sampling=env.sampling(max_tokens=2)), timeout=1.5)), grpc.StatusCode.DEADLINE_EXCEEDED,
            "... while a second generation waits for the slot")
        ck.check(s.Abort(pb.AbortRequest(request_id="hold"), timeout=30).found, "Abort frees the slot")
        th.join(60)
        ids, _ = d.generate_ids(s, [9, 8, 7], env.sampling(max_tokens=12, ignore_eos=True))
        ck.equal(ids, ref, "then a generation runs")

        # a generation whose client stopped reading gives the slot up
        # (paused over a second): a new generation runs meanwhile, and the
        # paused one goes on once its client reads again (its own channel:
        # a 4 KB stream window that never grows, long messages, so its ids
        # cannot all wait in the buffers)
        pch = d.channel(**{"grpc.http2.lookahead_bytes": 4096, "grpc.http2.bdp_probe": 0})
        rid = "paused-" + "x" * 40
        paused = d.stub(pch).Generate(pb.GenerateRequest(token_ids=[1, 2, 3], request_id=rid, sampling=env.sampling(
            max_tokens=1000000, ignore_eos=True)), timeout=120)
        next(paused)
        ck.check(wait_for(lambda: d.metric("tconst_requests_paused") == 1, 60, "the paused generation"),
                 "a generation whose client stopped reading is paused and gives up its slot (tconst_requests_paused)")
        try:
            ids, _ = d.generate_ids(s, [9, 8, 7], env.sampling(max_tokens=12, ignore_eos=True), timeout=30)
        except grpc.RpcError as e:
            ids = f"{e.code().name}: {e.details()}"
        ck.equal(ids, ref, "meanwhile a new generation takes the slot and runs")
        # the gauge is scraped while the client reads (past the ids that
        # waited in the buffers): once it stops reading, the generation
        # refills its queue and is paused again a second later
        n, paused_reading = 0, None
        for r in paused:
            n += len(r.token_ids)
            if paused_reading is None and n >= 2000:
                paused_reading = d.metric("tconst_requests_paused")
            if n >= 3000:
                break
        ck.check(n >= 3000, "read again, the paused generation goes on", f"{n} ids")
        ck.equal(paused_reading, 0.0, "... holding a slot again (tconst_requests_paused 0 while its client reads)")
        ck.check(s.Abort(pb.AbortRequest(request_id=rid), timeout=30).found, "Abort ends it")

    # paused generations can outnumber --max-batch + --max-queued-requests
    # (they hold no slot): a shutdown that cancels them all ends each one
    # and exits 0 (the engine's list of jobs to end was sized by those
    # limits: an overflow under ASan)
    with Daemon(env, "--max-batch", "1", "--max-queued-requests", "1", "--stream-queue", "4", "--drain-timeout", "1",
                model=model) as d:
        streams = []
        for k in range(5):
            ch = d.channel(**{"grpc.http2.lookahead_bytes": 4096, "grpc.http2.bdp_probe": 0})
            g = d.stub(ch).Generate(pb.GenerateRequest(token_ids=[1, 2, 3 + k], request_id=f"p{k}-" + "x" * 40,
                                                       sampling=env.sampling(max_tokens=1000000, ignore_eos=True)),
                                    timeout=120)
            next(g)
            streams.append(g)
            ck.check(wait_for(lambda: d.metric("tconst_requests_paused") == k + 1, 60, f"{k + 1} paused"),
                     f"paused generation {k + 1} of 5 gave up its slot for the next", str(d.metric("tconst_requests_paused")))
        d.signal()
        ck.equal(d.wait_exit(), 0, "SIGTERM with 5 paused generations (--max-batch 1, --max-queued-requests 1): exit 0")
        ends = []
        for g in streams:
            try:
                for _ in g:
                    pass
                ends.append("OK")
            except grpc.RpcError as e:
                ends.append(e.code().name)
        ck.check(all(e in ("OK", "UNAVAILABLE") for e in ends), "each paused stream ends (cut by the shutdown)",
                 str(ends))

    # --max-state-bytes 1: once a session holds state, new work is
    # refused (RESOURCE_EXHAUSTED naming the flag) until sessions close
    with Daemon(env, "--max-state-bytes", "1", model=model) as d:
        s = d.stub()
        ck.equal(s.ServerInfo(pb.ServerInfoRequest(), timeout=30).limits.max_state_bytes, 1,
                 "ServerInfo reports max_state_bytes")
        a = s.OpenSession(pb.OpenSessionRequest(token_ids=[1, 2, 3]), timeout=30).session_id
        held = d.metric("tconst_state_bytes")
        ck.check(held > 0, "the first session opens and holds state", str(held))
        ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(token_ids=[4]), timeout=30),
                     grpc.StatusCode.RESOURCE_EXHAUSTED, "a second session past --max-state-bytes", "--max-state-bytes 1")
        ck.rpc_error(lambda: list(s.Generate(pb.GenerateRequest(token_ids=[4], sampling=env.sampling(max_tokens=2)),
                                             timeout=30)),
                     grpc.StatusCode.RESOURCE_EXHAUSTED, "a Generate past it", "--max-state-bytes")
        s.CloseSession(pb.CloseSessionRequest(session_id=a), timeout=30)
        ids, _ = d.generate_ids(s, [9, 8, 7], env.sampling(max_tokens=12, ignore_eos=True), timeout=30)
        ck.equal(ids, ref, "its session closed, new work runs again")

    # --max-session-tokens 40: prompts that would not fit are refused
    # naming the limit, a generation ends with LENGTH where its session
    # reaches it, a full session takes no more tokens
    p30 = [(i * 7) % 500 + 2 for i in range(30)]
    ref30 = env.generate(model, p30, 10, ignore_eos=True)
    with Daemon(env, "--max-session-tokens", "40", model=model) as d:
        s = d.stub()
        ck.equal(s.ServerInfo(pb.ServerInfoRequest(), timeout=30).limits.max_session_tokens, 40,
                 "ServerInfo reports max_session_tokens")
        ck.rpc_error(lambda: list(s.Generate(pb.GenerateRequest(token_ids=list(range(2, 43)), sampling=env.sampling(
            max_tokens=1)), timeout=30)), IA, "a 41-token prompt with --max-session-tokens 40", "max-session-tokens")
        ck.rpc_error(lambda: list(s.Generate(pb.GenerateRequest(token_ids=list(range(2, 42)), sampling=env.sampling(
            max_tokens=1)), timeout=30)), IA, "a 40-token prompt that leaves no room to generate (no session named)",
            "prompt: 40 tokens leaves no room to generate under --max-session-tokens 40")
        sid = s.OpenSession(pb.OpenSessionRequest(token_ids=p30), timeout=30).session_id
        ids, last = [], None
        for r in s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sid, sampling=env.sampling(
                max_tokens=50, ignore_eos=True)), timeout=60):
            ids += r.token_ids
            last = r
        ck.check(ids == ref30 and last.finish_reason == pb.FINISH_REASON_LENGTH,
                 "max_tokens 50 from 30 tokens: 10 ids (== tconst generate), then LENGTH at the limit",
                 f"{len(ids)} ids, {last.finish_reason if last else None}")
        ck.equal(s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30).length, 40, "the session holds 40")
        ck.rpc_error(lambda: s.OpenSession(pb.OpenSessionRequest(copy_from=sid, token_ids=[3]), timeout=30), IA,
                     "a fork of the full session with one more token", "prompt: 41 tokens (40 of them copied from copy_from)")
        ck.rpc_error(lambda: s.Append(pb.AppendRequest(session_id=sid, token_ids=[4]), timeout=30), IA,
                     "an Append to the full session", "max-session-tokens")
        ck.rpc_error(lambda: list(s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sid, sampling=env.sampling(
            max_tokens=1)), timeout=30)), IA, "a generation in the full session", "no room")
        z = list(s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sid, sampling=env.sampling(
            max_tokens=0)), timeout=30))
        ck.check(z and not any(m.token_ids for m in z) and z[-1].finish_reason == pb.FINISH_REASON_LENGTH,
                 "max_tokens 0 in the full session: no ids, LENGTH (it needs no room)")
        ck.equal(s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30).length, 40,
                 "the refusals left the session as it was")

if __name__ == "__main__":
    run("e2e bad input", body)
