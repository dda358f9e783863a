#!/usr/bin/python3
"""test_openai.py — the OpenAI-compatible HTTP API (tconstd --openai-listen,
docs/api.md "OpenAI-compatible HTTP API") against the gRPC API of the same
daemon, on a tiny tconstformer with the GPT-2 vocabulary:

  * GET /v1/models names the model (the directory's name, or
    --served-model-name); /health is 200 while ready;
  * a greedy completion (JSON) gives the ids and text of the same gRPC
    Generate, its usage counts the same prompt; streamed (server-sent
    events) the chunks add up to the same ids and text, the last chunk has
    finish_reason "length", the usage chunk (stream_options.include_usage)
    the same usage, and the stream ends with "data: [DONE]";
  * a seeded temperature/top-p/top-k completion equals the gRPC one with
    the same seed; a stop string cuts the text as gRPC does
    (finish_reason "stop");
  * session_id generates within a named session (its length grows by the
    prompt and the completion);
  * bad requests get an OpenAI error object with the right HTTP status
    naming the field (and count as rejected in tconst_requests_total);
    a body over --max-message-bytes is 413;
  * a client that hangs up in the middle of a stream cancels its
    generation (tconst_requests_total{status="cancelled"} + 1, nothing
    left running);
  * a model without a tokenizer takes token ids and says so for text;
  * a session's end as the client hears it is settled (each generation's
    thread held 300 ms after its last message, TC_FAULT_RETIRE_DELAY_MS):
    GetSession right after an OpenAI response, [DONE], a Generate's or a
    Stream's last message counts all of it; the next Generate, a fork
    (copy_from) and a SnapshotSession sent at once are not refused busy.

Needs the GPT-2 vocabulary (TC_GPT2_DIR, the tokenizer.fetch_gpt2 fixture).
"""
import http.client
import json
import os
import queue
import threading

import grpc
from harness import Daemon, run, wait_for


def oai_port(d):
    w = d.ready_line.split()
    return int(w[w.index("openai") + 1].rsplit(":", 1)[1])


def call(port, method, path, body=None, raw=None, headers=None):
    """(status, parsed JSON or text, headers) of one request on a fresh connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        c.request(method, path, body=data, headers=dict({"Content-Type": "application/json"}, **(headers or {})))
        r = c.getresponse()
        text = r.read().decode()
        try:
            return r.status, json.loads(text), dict(r.getheaders())
        except ValueError:
            return r.status, text, dict(r.getheaders())
    finally:
        c.close()


def sse(port, body):
    """the events of a streamed completion: [parsed JSON or "[DONE]"]"""
    st, text, _ = call(port, "POST", "/v1/completions", body)
    assert st == 200, (st, text)
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def grpc_gen(env, stub, prompt, sp, **kw):
    ids, text, last = [], "", None
    for r in stub.Generate(env.pb.GenerateRequest(text=prompt, sampling=sp, **kw), timeout=120):
        ids += r.token_ids
        text += r.text
        last = r
    return ids, text, last


def body(env, ck):
    pb = env.pb
    model = env.gpt2_model(21)
    prompt = "An OpenAI client streams from tconst:"
    N = 24
    with Daemon(env, "--openai-listen", "127.0.0.1:0", "--max-message-bytes", str(64 << 10), model=model) as d:
        port = oai_port(d)
        s = d.stub()
        name = os.path.basename(model.rstrip("/"))
        st, m, _ = call(port, "GET", "/v1/models")
        ck.equal((st, [x["id"] for x in m["data"]]), (200, [name]), "GET /v1/models names the model directory")
        ck.equal(call(port, "GET", "/health")[0], 200, "/health 200 while ready")

        # greedy: JSON and stream against gRPC
        want_ids, want_text, want_last = grpc_gen(env, s, prompt, env.sampling(temperature=0, max_tokens=N, ignore_eos=True))
        req = {"model": name, "prompt": prompt, "max_tokens": N, "temperature": 0, "ignore_eos": True}
        st, r, hdr = call(port, "POST", "/v1/completions", req)
        ck.check(st == 200, "a greedy completion: 200", r)
        if st == 200:
            c0 = r["choices"][0]
            ck.equal((c0["token_ids"], c0["text"], c0["finish_reason"]), (want_ids, want_text, "length"),
                     "a greedy completion: the gRPC Generate's ids and text, finish_reason length")
            ck.equal(r["usage"], {"prompt_tokens": want_last.usage.prompt_tokens, "completion_tokens": N,
                                  "total_tokens": want_last.usage.prompt_tokens + N}, "its usage")
            ck.check(r["object"] == "text_completion" and r["id"].startswith("cmpl-") and r["model"] == name,
                     "object text_completion, id cmpl-..., model", r)
        ev = sse(port, dict(req, stream=True, stream_options={"include_usage": True}))
        chunks = [e for e in ev if isinstance(e, dict) and e["choices"]]
        ck.equal(ev[-1], "[DONE]", "a stream ends with data: [DONE]")
        ck.equal(("".join(c["choices"][0]["text"] for c in chunks), sum((c["choices"][0]["token_ids"] for c in chunks), [])),
                 (want_text, want_ids), f"the stream's {len(chunks)} chunks add up to the same text and ids")
        ck.equal([c["choices"][0]["finish_reason"] for c in chunks][-2:], [None, "length"] if len(chunks) > 1 else ["length"],
                 "finish_reason null until the last chunk, then length")
        usage = [e for e in ev if isinstance(e, dict) and not e["choices"]]
        ck.equal([u.get("usage", {}).get("completion_tokens") for u in usage], [N],
                 "include_usage: one chunk without choices carrying the usage")

        # seeded sampling and a stop string, against gRPC
        sp = env.sampling(temperature=0.9, top_p=0.95, top_k=40, seed=1234, max_tokens=N, ignore_eos=True)
        g_ids, g_text, _ = grpc_gen(env, s, prompt, sp)
        st, r, _ = call(port, "POST", "/v1/completions", dict(req, temperature=0.9, top_p=0.95, top_k=40, seed=1234))
        ck.equal((st, r["choices"][0]["token_ids"] if st == 200 else r), (200, g_ids),
                 "seed 1234, temperature 0.9, top_p 0.95, top_k 40: the gRPC ids")
        stop = want_text[len(want_text) // 2:len(want_text) // 2 + 3]
        sp = env.sampling(temperature=0, max_tokens=N, ignore_eos=True)
        sp.stop.append(stop)
        g_ids, g_text, g_last = grpc_gen(env, s, prompt, sp)
        st, r, _ = call(port, "POST", "/v1/completions", dict(req, stop=[stop]))
        ck.equal((r["choices"][0]["text"], r["choices"][0]["finish_reason"]) if st == 200 else r,
                 (g_text, "stop"), f"stop {stop!r}: the gRPC text, cut before it; finish_reason stop")
        ck.check(stop not in g_text and want_text.startswith(g_text), "(the gRPC text is the greedy text cut at the stop)")

        # n choices: choice i samples with seed + i (a request of its own
        # with that seed gives its ids), in JSON and in a stream whose
        # chunks carry their choice's index; usage counts the prompt once
        SEED, NCH = 77, 3
        sampled = dict(req, temperature=0.9, top_k=40)
        singles = []
        for i in range(NCH):
            st, r, _ = call(port, "POST", "/v1/completions", dict(sampled, seed=SEED + i))
            singles.append((r["choices"][0]["token_ids"], r["choices"][0]["text"]) if st == 200 else (st, r))
        ck.check(len({tuple(x[0]) for x in singles}) == NCH, f"seeds {SEED}..{SEED + NCH - 1} sample {NCH} different "
                 "completions (else the check below proves little)", singles)
        st, r, _ = call(port, "POST", "/v1/completions", dict(sampled, seed=SEED, n=NCH, best_of=NCH))
        ok = st == 200 and len(r["choices"]) == NCH
        ck.check(ok, f"n {NCH}, best_of {NCH}: 200 with {NCH} choices", f"{st} {str(r)[:300]}")
        if ok:
            ck.equal([c["index"] for c in r["choices"]], list(range(NCH)), "choices indexed 0..n-1 in order")
            ck.equal([(c["token_ids"], c["text"]) for c in r["choices"]], singles,
                     f"choice i == a request of its own with seed {SEED} + i")
            ck.equal(r["usage"], {"prompt_tokens": want_last.usage.prompt_tokens, "completion_tokens": NCH * N,
                                  "total_tokens": want_last.usage.prompt_tokens + NCH * N},
                     "usage: the prompt once, every choice's completion tokens")
        ev = sse(port, dict(sampled, seed=SEED, n=NCH, stream=True, stream_options={"include_usage": True}))
        chunks = [e for e in ev if isinstance(e, dict) and e["choices"]]
        per = {i: ([], "", []) for i in range(NCH)}
        for c in chunks:
            ck.check(len(c["choices"]) == 1, "a stream chunk carries one choice", c)
            c0 = c["choices"][0]
            ids_i, text_i, fin_i = per[c0["index"]]
            per[c0["index"]] = (ids_i + c0["token_ids"], text_i + c0["text"], fin_i + [c0["finish_reason"]])
        ck.equal([(per[i][0], per[i][1]) for i in range(NCH)], singles,
                 f"n {NCH} streamed: each index's chunks add up to that choice's ids and text")
        ck.equal([[f for f in per[i][2] if f] for i in range(NCH)], [["length"]] * NCH,
                 "each choice's last chunk (only) says finish_reason length")
        usage = [e for e in ev if isinstance(e, dict) and not e["choices"]]
        ck.equal(([u["usage"]["completion_tokens"] for u in usage], ev.count("[DONE]"), ev[-1]),
                 ([NCH * N], 1, "[DONE]"), "one usage chunk for all choices, then one [DONE], last")

        # a named session
        sid = s.OpenSession(pb.OpenSessionRequest(text="Once upon a time"), timeout=60).session_id
        n0 = s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60).length
        st, r, _ = call(port, "POST", "/v1/completions", dict(req, prompt=" there", max_tokens=5, session_id=sid))
        n1 = s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60).length
        ck.equal((st, n1 - n0), (200, r["usage"]["prompt_tokens"] + 5 if st == 200 else None),
                 "session_id: the session grows by the prompt and the 5 tokens")

        # bad requests: status, error object naming the field, counted as rejected
        rej0 = d.metric("tconst_requests_total", status="rejected")
        bad = [
            ({"prompt": prompt, "n": 0}, 400, "n"),
            ({"prompt": prompt, "n": 17}, 400, "n"),
            ({"prompt": prompt, "n": 1.5}, 400, "n"),
            ({"prompt": prompt, "n": 2, "session_id": "s"}, 400, "n"),
            ({"prompt": prompt, "n": 2, "best_of": 3}, 400, "best_of"),
            ({"prompt": prompt, "max_tokens": -1}, 400, "max_tokens"),
            ({"prompt": prompt, "max_tokens": 10 ** 9}, 400, "max_tokens"),
            ({"prompt": prompt, "temperature": "hot"}, 400, "temperature"),
            ({"prompt": prompt, "top_p": 0}, 400, "top_p"),
            ({"prompt": prompt, "logprobs": 21}, 400, "logprobs"),
            ({"prompt": prompt, "logprobs": True}, 400, "logprobs"),
            ({"prompt": prompt, "echo": True}, 400, "echo"),
            ({"prompt": prompt, "presence_penalty": 0.5}, 400, "presence_penalty"),
            ({"prompt": [prompt, prompt]}, 400, "prompt"),
            ({"prompt": [1, -2]}, 400, "prompt"),
            ({"prompt": [10 ** 6]}, 400, "prompt"),
            ({"max_tokens": 3}, 400, "prompt"),
            ({"prompt": prompt, "stop": [1]}, 400, "stop"),
            ({"prompt": prompt, "model": "gpt-4"}, 404, "model"),
            ({"prompt": prompt, "session_id": "no-such-session"}, 404, "session_id"),
        ]
        for rq, want_st, field in bad:
            st, r, _ = call(port, "POST", "/v1/completions", rq)
            err = r.get("error", {}) if isinstance(r, dict) else {}
            ck.check(st == want_st and err.get("param") == field and err.get("message", "").startswith(field)
                     if field != "model" else st == want_st and err.get("code") == "model_not_found",
                     f"{json.dumps(rq)[:70]}: HTTP {want_st}, error naming {field}", f"{st} {r}")
        raws = [(b'{"prompt": "x"', "not valid JSON"),
                (b'{"prompt": [1], "max_tokens": 1} {"prompt": [2]}', "more than one JSON value"),
                (b'{"prompt": [1], "max_tokens": 1, "max_tokens": "x"}', "max_tokens: given twice"),
                (b'{"prompt": "a\\u0000b"}', "NUL character"),
                (b'{"prompt": "a", "model": "\xff\xfe"}', "not valid UTF-8"),
                (b'{"prompt": "a", "stream_options": {"include_usage": true}}', "only with"),
                (b'[1, 2]', "must be a JSON object")]
        for raw, why in raws:
            st, r, _ = call(port, "POST", "/v1/completions", raw=raw)
            ck.check(st == 400 and why in r["error"]["message"], f"a body {raw[:40]!r}: 400, {why}", f"{st} {r}")
        st, r, _ = call(port, "POST", "/v1/completions", raw=json.dumps({"prompt": "a" * (80 << 10)}).encode())
        ck.check(st == 413 and "--max-message-bytes" in r["error"]["message"], "a body over --max-message-bytes: 413",
                 f"{st} {r}")
        ck.equal(d.metric("tconst_requests_total", status="rejected") - rej0, float(len(bad) + len(raws) + 1),
                 "each refused completion counts once as rejected")
        ck.equal(call(port, "GET", "/v1/completions")[0], 405, "GET /v1/completions: 405")
        ck.equal(call(port, "POST", "/v1/chat/completions", {"messages": []})[0], 404, "/v1/chat/completions: 404 (no chat template)")
        ck.equal(call(port, "GET", "/nope")[0], 404, "an unknown path: 404")

        # a stream that fails before its first token is an HTTP error, not
        # 200 and an error event: a session with no tokens and no prompt
        empty = s.OpenSession(pb.OpenSessionRequest(), timeout=60).session_id
        st, r, _ = call(port, "POST", "/v1/completions", dict(req, prompt=[], session_id=empty, stream=True))
        ck.check(st == 400 and isinstance(r, dict) and r["error"]["param"] == "prompt",
                 "a stream that fails before its first token: HTTP 400 naming prompt", f"{st} {r}")
        # X-Request-Id names the request: gRPC Abort ends it, finish_reason abort
        out = {}
        def aborted():
            out["r"] = call(port, "POST", "/v1/completions", dict(req, max_tokens=100000),
                            headers={"X-Request-Id": "oa-abort-1"})
        th = threading.Thread(target=aborted)
        th.start()
        ck.check(wait_for(lambda: d.metric("tconst_requests_running") == 1, 60, "running"), "a long JSON completion runs")
        ck.check(s.Abort(pb.AbortRequest(request_id="oa-abort-1"), timeout=30).found, "gRPC Abort finds it by X-Request-Id")
        th.join(120)
        st, r, hdr = out.get("r", (None, None, {}))
        ck.check(st == 200 and r["id"] == "cmpl-oa-abort-1" and r["choices"][0]["finish_reason"] == "abort" and
                 hdr.get("X-Request-Id") == "oa-abort-1", "... and it answers 200, id cmpl-oa-abort-1, finish_reason abort",
                 f"{st} {str(r)[:200]}")

        # ... all n choices of one: they share its id
        def aborted2():
            out["r2"] = call(port, "POST", "/v1/completions", dict(req, max_tokens=100000, n=2),
                             headers={"X-Request-Id": "oa-abort-2"})
        th = threading.Thread(target=aborted2)
        th.start()
        ck.check(wait_for(lambda: d.metric("tconst_requests_running") == 2, 60, "running"),
                 "a long JSON completion with n 2 runs as two requests")
        ck.check(s.Abort(pb.AbortRequest(request_id="oa-abort-2"), timeout=30).found, "gRPC Abort finds them")
        th.join(120)
        st, r, hdr = out.get("r2", (None, None, {}))
        ck.check(st == 200 and r["id"] == "cmpl-oa-abort-2" and [c["finish_reason"] for c in r["choices"]] ==
                 ["abort", "abort"], "... and both choices end finish_reason abort", f"{st} {str(r)[:200]}")

        # an X-Request-Id that is not UTF-8 (it would come back in the JSON
        # body, which a client could then not decode): 400 naming it
        st, r, _ = call(port, "POST", "/v1/completions", req, headers={"X-Request-Id": "caf\xe9"})
        ck.check(st == 400 and isinstance(r, dict) and "UTF-8" in r["error"]["message"],
                 "an X-Request-Id that is not UTF-8: 400, a JSON error naming it", f"{st} {str(r)[:200]}")

        # a client that hangs up cancels its generation: a stream (after
        # its first event), and a whole (JSON) completion, to which nothing
        # is written before the end, so its socket is what tells
        can0 = d.metric("tconst_requests_total", status="cancelled")
        for k, stream in enumerate((True, False)):
            what = "a stream" if stream else "a JSON completion"
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            c.request("POST", "/v1/completions", body=json.dumps(dict(req, max_tokens=100000, stream=stream)),
                      headers={"Content-Type": "application/json"})
            if stream:
                first = c.getresponse().fp.readline()
                ck.check(first.startswith(b"data: ") or first.strip().isalnum(), "a long stream starts", first[:80])
            ck.check(wait_for(lambda: d.metric("tconst_requests_running") == 1, 60, "running"), f"{what} runs")
            c.sock.close()
            c.close()
            ck.check(wait_for(lambda: d.metric("tconst_requests_total", status="cancelled") == can0 + k + 1, 60,
                              "cancelled"), f"{what}: its client hung up, it is cancelled (requests_total cancelled + 1)")
            ck.check(wait_for(lambda: d.metric("tconst_requests_running") == 0, 60, "none running"), "nothing left running")

    # --served-model-name; a model without a tokenizer
    tiny = env.model()
    with Daemon(env, "--openai-listen", "127.0.0.1:0", "--served-model-name", "my/tiny", model=tiny) as d:
        port = oai_port(d)
        st, m, _ = call(port, "GET", "/v1/models")
        ck.equal([x["id"] for x in m["data"]], ["my/tiny"], "--served-model-name names the model")
        want = env.generate(tiny, [5, 6, 7], 6, ignore_eos=True)
        st, r, _ = call(port, "POST", "/v1/completions",
                        {"model": "my/tiny", "prompt": [5, 6, 7], "max_tokens": 6, "temperature": 0, "ignore_eos": True})
        ck.equal(r["choices"][0]["token_ids"] if st == 200 else r, want, "token ids in: `tconst generate`'s ids out")
        st, r, _ = call(port, "POST", "/v1/completions", {"prompt": "text"})
        ck.check(st == 400 and r["error"]["param"] == "prompt" and "no tokenizer" in r["error"]["message"],
                 "text to a model without a tokenizer: 400 naming prompt", f"{st} {r}")

    # the length a generation's end leaves is there when its client hears
    # the end: the job's retirement held back 300 ms after its last message
    # (test-only TC_FAULT_RETIRE_DELAY_MS), GetSession asked at once
    with Daemon(env, "--openai-listen", "127.0.0.1:0", model=tiny, env_vars={"TC_FAULT_RETIRE_DELAY_MS": "300"}) as d:
        port, s = oai_port(d), d.stub()
        sid = s.OpenSession(pb.OpenSessionRequest(token_ids=[5, 6, 7]), timeout=60).session_id
        st, r, _ = call(port, "POST", "/v1/completions", {"prompt": [8], "max_tokens": 5, "temperature": 0,
                                                           "ignore_eos": True, "session_id": sid})
        a = r["choices"][0]["token_ids"] if st == 200 else (st, r)
        n1 = s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60).length
        ck.equal((a, n1), (env.generate(tiny, [5, 6, 7, 8], 5, ignore_eos=True), 3 + 1 + 5),
                 "OpenAI completion in a session: `tconst generate`'s ids; GetSession right after its response "
                 "counts the prompt and all 5 tokens")
        b = [t for m in s.Generate(pb.GenerateRequest(token_ids=[9], session_id=sid,
                                                      sampling=env.sampling(temperature=0, max_tokens=4,
                                                                            ignore_eos=True)), timeout=60)
             for t in m.token_ids]
        n2 = s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60).length
        ck.equal((b, n2), (env.generate(tiny, [5, 6, 7, 8] + a + [9], 4, ignore_eos=True), n1 + 1 + 4),
                 "gRPC Generate next in the session: continues from the whole history; GetSession right after "
                 "its last message counts it")
        # a gRPC client that leaves its read loop at finish_reason (before the
        # call's status) and sends the session's next request at once
        sp2 = env.sampling(temperature=0, max_tokens=2, ignore_eos=True)
        c1 = []
        for m in s.Generate(pb.GenerateRequest(token_ids=[12], session_id=sid, sampling=sp2), timeout=60):
            c1 += m.token_ids
            if m.finish_reason:
                break
        g1 = s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60)
        ck.equal((g1.busy, g1.length), (False, n2 + 1 + len(c1)),
                 "GetSession right after a Generate's finish_reason (before its status): not busy, all of it counted")
        try:
            c2 = [t for m in s.Generate(pb.GenerateRequest(token_ids=[13], session_id=sid, sampling=sp2), timeout=60)
                  for t in m.token_ids]
        except grpc.RpcError as ex:
            c2 = f"{ex.code()}: {ex.details()}"
        h2 = [5, 6, 7, 8] + a + [9] + b + [12]
        ck.equal((c1, c2), (env.generate(tiny, h2, 2, ignore_eos=True),
                            env.generate(tiny, h2 + c1 + [13], 2, ignore_eos=True)),
                 "the session's next Generate sent as soon as the last one's finish_reason came (before its status): "
                 "it waits for the session (not FAILED_PRECONDITION busy) and continues from the whole history")
        # the same for a fork of the session and a snapshot of the fork
        def gen_to_finish(session, tok):
            ids = []
            for m in s.Generate(pb.GenerateRequest(token_ids=[tok], session_id=session, sampling=sp2), timeout=60):
                ids += m.token_ids
                if m.finish_reason:
                    return ids
            return ids
        h2 = h2 + c1 + [13] + c2
        c3 = gen_to_finish(sid, 14)
        try:
            fork = s.OpenSession(pb.OpenSessionRequest(copy_from=sid), timeout=60)
            fork = (fork.session_id, fork.length)
        except grpc.RpcError as ex:
            fork = (None, f"{ex.code()}: {ex.details()}")
        ck.equal(fork[1], len(h2) + 1 + len(c3),
                 "a fork (OpenSession copy_from) sent as soon as the source's Generate said finish_reason: not busy, "
                 "the whole history")
        if fork[0]:
            c4 = gen_to_finish(fork[0], 15)
            try:
                snap = [t for m in s.SnapshotSession(pb.SnapshotSessionRequest(session_id=fork[0]), timeout=60)
                        for t in m.token_ids]
            except grpc.RpcError as ex:
                snap = f"{ex.code()}: {ex.details()}"
            ck.equal(snap, h2 + [14] + c3 + [15] + c4,
                     "SnapshotSession sent as soon as the fork's Generate said finish_reason: not busy, every token")
        n2 = s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60).length
        b = b + [12] + c1 + [13] + c2 + [14] + c3
        # streamed: read up to [DONE], then GetSession (the connection still open)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("POST", "/v1/completions", json.dumps({"prompt": [10], "max_tokens": 3, "temperature": 0,
                                                         "ignore_eos": True, "session_id": sid, "stream": True}),
                  {"Content-Type": "application/json"})
        resp, ids3, done = c.getresponse(), [], False
        while not done:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            done = line == b"data: [DONE]"
            if line.startswith(b"data: {"):
                ids3 += json.loads(line[6:])["choices"][0]["token_ids"]
        n3 = s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60).length
        c.close()
        h3 = [5, 6, 7, 8] + a + [9] + b + [10]
        ck.equal((done, ids3, n3), (True, env.generate(tiny, h3, 3, ignore_eos=True), n2 + 1 + 3),
                 "streamed completion in the session: GetSession right after [DONE] counts all of it")
        # a Stream's generation: GetSession right after its last message, the stream still open
        q = queue.Queue()
        replies = s.Stream(iter(q.get, None), timeout=60)
        q.put(pb.StreamRequest(session_id=sid, token_ids=[11], generate=True,
                               sampling=env.sampling(temperature=0, max_tokens=2, ignore_eos=True)))
        ids4 = []
        for m in replies:
            if m.HasField("generation"):
                ids4 += m.generation.token_ids
                if m.generation.finish_reason:
                    break
        n4 = s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=60).length
        q.put(None)
        for m in replies:
            pass
        ck.equal((ids4, n4), (env.generate(tiny, h3 + ids3 + [11], 2, ignore_eos=True), n3 + 1 + 2),
                 "a Stream's generation: GetSession right after its last message (the stream open) counts all of it")


if __name__ == "__main__":
    run("e2e OpenAI-compatible API", body)
