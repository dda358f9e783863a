#!/usr/bin/python3
"""test_logprobs.py — sampling.logprobs (gRPC) and "logprobs" (OpenAI
completions): each generated token's log-probability and the N most likely
tokens' at its step, against the definition computed from `tconst logits`
(the model's logits for the same history, fed one token at a time): the
log-softmax of the raw logits, before temperature / top-k / top-p.

On a tiny GPT-2-vocabulary tconstformer with an 8-token generation window
(a sync every 8 tokens, most of them mid-generation):
  * greedy and sampled generations with logprobs: one record per token id
    in every message; the sampled token's logprob and each listed top
    token's equal the reference; the top list is the reference's N most
    likely, most likely first; greedy: the token is the top one; the ids
    equal `tconst generate` (asking for logprobs changes no draw);
  * logprobs 0: the token's own, no top list; unset: none at all;
  * generations with and without logprobs at once (one batch): each
    equals `tconst generate`, those asking have the reference's logprobs;
  * sampling.logprobs out of 0..20: INVALID_ARGUMENT naming it;
  * OpenAI /v1/completions, JSON and streamed: logprobs.tokens (each
    token's text), token_logprobs equal to gRPC's for the same seed,
    top_logprobs (the N most likely and the sampled token), text_offset
    (0, then each token's text length on); "logprobs": 21 is a 400
    naming it;
  * a sampled generation with logprobs cut by kill -9 of tconstd (with
    --data-dir) and resumed under its request_id: its journaled tokens are
    re-sent first without logprobs, every later message has one record
    per id, equal to the reference, and the ids are the uninterrupted
    run's.

Runs in every worker layout (TC_E2E_DAEMON_ARGS) and with TC_CPU_SAMPLE=1
(the workers' sample op, as a GPU draws: a step asking for logprobs takes
the full rows to the host instead).
"""
import array
import http.client
import json
import math
import os
import socket
import subprocess
import threading

import grpc
from harness import Daemon, run
from test_openai import call, sse

N_TOK = 30
TOL = 2e-4


def body(env, ck):
    pb = env.pb
    gpt2 = os.environ.get("TC_GPT2_DIR", "")
    if not os.path.isfile(os.path.join(gpt2, "encoder.json")):
        raise SystemExit(f"TC_GPT2_DIR={gpt2!r}: no GPT-2 vocabulary (tokenizer.fetch_gpt2 makes it)")
    model = os.path.join(env.tmp, "model-logprobs")
    subprocess.run([env.tconst, "init-model", "--arch", "tconstformer", "--preset", "tiny", "--seed", "17",
                    "--vocab", gpt2, "--history-window", "16", "--generate-window", "8", "--out", model],
                   check=True, stdout=subprocess.DEVNULL)
    refs = {}

    def reference(prompt, ids):
        """log-softmax rows (float64) for each generated position: row i is
        the distribution ids[i] was drawn from"""
        key = (tuple(prompt), tuple(ids))
        if key not in refs:
            tok = os.path.join(env.tmp, "lp-tokens.txt")
            out = os.path.join(env.tmp, "lp-logits.f32")
            with open(tok, "w") as f:
                f.write(" ".join(map(str, prompt + ids[:-1])))
            subprocess.run([env.tconst, "logits", "--model", model, "--tokens", tok, "--prompt", str(len(prompt)),
                            "--out", out], check=True, capture_output=True, timeout=300)
            x = array.array("f")
            with open(out, "rb") as f:
                x.frombytes(f.read())
            V = len(x) // len(ids)
            rows = []
            for i in range(len(ids)):
                r = x[i * V:(i + 1) * V]
                m = max(r)
                lse = m + math.log(math.fsum(math.exp(v - m) for v in r))
                rows.append([v - lse for v in r])
            refs[key] = rows
        return refs[key]

    def agrees(prompt, ids, recs, top, what):
        """recs: [(logprob, [top ids], [top logprobs])] per id"""
        if not ck.equal(len(recs), len(ids), f"{what}: one logprobs record per token id"):
            return
        ref = reference(prompt, ids)
        worst, bad = 0.0, []
        for i, (lp, tids, tlps) in enumerate(recs):
            r = ref[i]
            worst = max(worst, abs(lp - r[ids[i]]))
            if len(tids) != top or len(tlps) != top:
                bad.append(f"token {i}: {len(tids)} top ids, {len(tlps)} top logprobs, want {top}")
                continue
            if top:
                kth = sorted(r, reverse=True)[:top]
                for k in range(top):
                    worst = max(worst, abs(tlps[k] - r[tids[k]]), abs(tlps[k] - kth[k]))
                if any(tlps[k] < tlps[k + 1] for k in range(top - 1)) or len(set(tids)) != top:
                    bad.append(f"token {i}: top list not most likely first / repeated ids: {tids}")
        ck.check(not bad and worst <= TOL, f"{what}: {len(ids)} tokens' logprobs (and top {top}) == the log-softmax of "
                                           f"`tconst logits` (worst |diff| {worst:.2e})", "; ".join(bad[:3]))

    with Daemon(env, "--openai-listen", "127.0.0.1:0", model=model) as d:
        s = d.stub()
        port = d.openai_port()

        def gen(prompt, sp, **kw):
            """(ids, [(logprob, top ids, top logprobs)], messages whose logprobs count != their ids')"""
            ids, recs, odd = [], [], 0
            for m in s.Generate(pb.GenerateRequest(token_ids=prompt, sampling=sp, **kw), timeout=120):
                ids += m.token_ids
                odd += len(m.logprobs) not in (len(m.token_ids),)
                recs += [(x.logprob, list(x.top_token_ids), list(x.top_logprobs)) for x in m.logprobs]
            return ids, recs, odd

        def sampling(lp=None, **kw):
            sp = env.sampling(max_tokens=N_TOK, ignore_eos=True, **kw)
            if lp is not None:
                sp.logprobs = lp
            return sp

        prompt = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]
        ids, recs, odd = gen(prompt, sampling(5))
        ck.equal(ids, env.generate(model, prompt, N_TOK, ignore_eos=True), "greedy with logprobs == tconst generate")
        ck.equal(odd, 0, "greedy: every message has one logprobs record per token id")
        agrees(prompt, ids, recs, 5, "greedy, logprobs 5")
        ck.check(all(r[1] and r[1][0] == t and abs(r[0] - r[2][0]) <= 1e-6 for t, r in zip(ids, recs)),
                 "greedy: each token is its step's most likely one, with that logprob")

        samp = dict(temperature=1.0, top_p=0.9, seed=123)
        ids, recs, odd = gen(prompt, sampling(3, **samp))
        ck.equal(ids, env.generate(model, prompt, N_TOK, ignore_eos=True, **samp),
                 "sampled (T 1, top_p 0.9, seed 123) with logprobs == tconst generate: asking changes no draw")
        ck.equal(odd, 0, "sampled: every message has one logprobs record per token id")
        agrees(prompt, ids, recs, 3, "sampled, logprobs 3")
        grpc_sampled = (ids, recs)

        ids, recs, _ = gen(prompt, sampling(0, temperature=0.7, top_k=40, seed=9))
        ck.equal(ids, env.generate(model, prompt, N_TOK, ignore_eos=True, temperature=0.7, top_k=40, seed=9),
                 "top-k sampled with logprobs 0 == tconst generate")
        agrees(prompt, ids, recs, 0, "top-k sampled, logprobs 0 (the token's own only)")
        ids, recs, _ = gen(prompt, sampling(None))
        ck.equal(len(recs), 0, "logprobs unset: no logprobs in any message")

        # one batch: with and without logprobs at once
        prompts = [[(k * 97 + i * 31) % 50000 + 10 for i in range(5 + 3 * k)] for k in range(4)]
        res = [None] * 4

        def one(k):
            try:
                res[k] = gen(prompts[k], sampling(2 if k % 2 else None, temperature=0.9, seed=50 + k))
            except grpc.RpcError as ex:
                res[k] = ex
        ths = [threading.Thread(target=one, args=(k,)) for k in range(4)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(300)
        for k in range(4):
            if not ck.check(isinstance(res[k], tuple), f"concurrent {k}: ran", res[k]):
                continue
            ids, recs, _ = res[k]
            ck.equal(ids, env.generate(model, prompts[k], N_TOK, ignore_eos=True, temperature=0.9, seed=50 + k),
                     f"concurrent {k} ({'with' if k % 2 else 'without'} logprobs) == tconst generate")
            if k % 2:
                agrees(prompts[k], ids, recs, 2, f"concurrent {k}, logprobs 2")
            else:
                ck.equal(len(recs), 0, f"concurrent {k}: none asked, none sent")

        for bad in (21, -1):
            ck.rpc_error(lambda: list(s.Generate(pb.GenerateRequest(token_ids=prompt, sampling=sampling(bad)),
                                                 timeout=60)),
                         grpc.StatusCode.INVALID_ARGUMENT, f"sampling.logprobs {bad}", "sampling.logprobs")

        # OpenAI: the same seed, the same tokens and logprobs as gRPC
        req = {"model": os.path.basename(model), "prompt": prompt, "max_tokens": N_TOK, "ignore_eos": True,
               "temperature": 1.0, "top_p": 0.9, "seed": 123, "logprobs": 3}
        st, o, _ = call(port, "POST", "/v1/completions", req)
        if ck.equal(st, 200, "OpenAI completion with logprobs 3: 200"):
            c = o["choices"][0]
            lp = c.get("logprobs") or {}
            ck.equal(c["token_ids"], grpc_sampled[0], "OpenAI: the tokens of gRPC's generation with the same seed")
            ok = lp and len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == \
                len(lp["text_offset"]) == len(c["token_ids"])
            ck.check(ok, "OpenAI: logprobs.tokens, token_logprobs, top_logprobs, text_offset: one per token",
                     json.dumps(lp)[:300])
            if ok:
                worst = max(abs(a - b[0]) for a, b in zip(lp["token_logprobs"], grpc_sampled[1]))
                ck.check(worst <= TOL, f"OpenAI: token_logprobs == gRPC's (worst {worst:.2e})")
                offs = [0]
                for t in lp["tokens"][:-1]:
                    offs.append(offs[-1] + len(t))
                ck.equal(lp["text_offset"], offs, "OpenAI: text_offset: 0, then each token's text length on")
                # (two tokens of one text -- both partial characters, U+FFFD -- keep the more likely one's)
                good = all(t in top and top[t] >= v - 1e-6 and len(top) <= 4
                           for t, v, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]))
                ck.check(good, "OpenAI: each top_logprobs holds the sampled token (its logprob) and at most 3 more")
                joined = "".join(lp["tokens"])
                if "\ufffd" not in joined:  # no partial character: the texts add up exactly
                    ck.equal(joined, c["text"], "OpenAI: the tokens' texts make the completion's text")
                events = sse(port, dict(req, stream=True))
                toks, tlps = [], []
                for e in events:
                    if e == "[DONE]" or not e.get("choices"):
                        continue
                    ch = e["choices"][0]
                    toks += (ch.get("logprobs") or {}).get("tokens", [])
                    tlps += (ch.get("logprobs") or {}).get("token_logprobs", [])
                ck.check(toks == lp["tokens"] and len(tlps) == len(lp["token_logprobs"]) and
                         all(abs(a - b) <= TOL for a, b in zip(tlps, lp["token_logprobs"])),
                         "OpenAI streamed: the chunks' logprobs together == the JSON completion's",
                         f"{len(toks)} tokens, {len(tlps)} logprobs")
        st, o, _ = call(port, "POST", "/v1/completions", dict(req, logprobs=21))
        ck.equal((st, (o.get("error") or {}).get("param") if isinstance(o, dict) else o), (400, "logprobs"),
                 "OpenAI logprobs 21: 400 naming logprobs")
        st, o, _ = call(port, "POST", "/v1/completions", dict(req, logprobs=None))
        ck.equal((st, o["choices"][0]["logprobs"] if st == 200 else o), (200, None), "OpenAI logprobs null: none")

    # a generation with logprobs cut by a crash of tconstd (kill -9, with
    # --data-dir) and resumed under its request_id: the journaled tokens
    # are re-sent without logprobs, the rest have theirs, and the ids are
    # the uninterrupted run's
    data = os.path.join(env.tmp, "lp-journal")
    n_cut = 400  # long enough that what a client's buffers take (it stops reading) cannot hold it all
    prompt = [464, 2068, 7586, 21831]
    sp = env.sampling(max_tokens=n_cut, ignore_eos=True, temperature=1.0, seed=77)
    sp.logprobs = 2
    req = pb.GenerateInSessionRequest(session_id="cut", request_id="lp-cut", sampling=sp)
    with Daemon(env, "--data-dir", data, "--stream-queue", "4", model=model) as d:
        # a channel that does not buffer ahead (a 4 KB window that never
        # grows): the generation pauses soon after the client stops reading
        s = d.stub(d.channel(**{"grpc.http2.lookahead_bytes": 4096, "grpc.http2.bdp_probe": 0}))
        s.OpenSession(pb.OpenSessionRequest(session_id="cut", token_ids=prompt), timeout=60)
        seen = []
        for m in s.GenerateInSession(req, timeout=120):
            seen += m.token_ids
            if len(seen) >= 10:
                break  # stop reading: the generation stops at --stream-queue unread messages
        d.proc.kill()
        d.proc.wait()
    with Daemon(env, "--data-dir", data, model=model) as d:
        s = d.stub()
        ids, recs, resent, late = [], [], 0, 0
        for m in s.GenerateInSession(req, timeout=120):
            if not m.logprobs and not recs:
                resent += len(m.token_ids)
            elif len(m.logprobs) != len(m.token_ids):
                late += 1
            ids += m.token_ids
            recs += [(x.logprob, list(x.top_token_ids), list(x.top_logprobs)) for x in m.logprobs]
        ck.equal(ids, env.generate(model, prompt, n_cut, ignore_eos=True, temperature=1.0, seed=77),
                 "resumed after kill -9: the ids == the uninterrupted run")
        ck.check(len(seen) <= resent < n_cut and late == 0,
                 f"resumed: the journaled tokens re-sent first without logprobs ({resent}; at least the {len(seen)} "
                 f"read before the kill), every later message one record per id", f"{late} odd")
        agrees(prompt + ids[:resent], ids[resent:resent + 40], recs[:40], 2,
               "resumed: the first 40 tokens after the re-sent ones")

    # the same through OpenAI (a completion in a session, its X-Request-Id
    # the request id): the re-sent tokens have null logprobs, one entry
    # per token all the same
    oreq = {"model": os.path.basename(model), "prompt": [11, 12], "max_tokens": 1500, "ignore_eos": True,
            "temperature": 1.0, "seed": 78, "logprobs": 2, "session_id": "cut2"}
    with Daemon(env, "--data-dir", data, "--stream-queue", "4", "--openai-listen", "127.0.0.1:0", model=model) as d:
        d.stub().OpenSession(pb.OpenSessionRequest(session_id="cut2", token_ids=prompt), timeout=60)
        c = http.client.HTTPConnection("127.0.0.1", d.openai_port(), timeout=120)
        c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window, as above
        c.sock.settimeout(120)
        c.sock.connect(("127.0.0.1", d.openai_port()))
        c.request("POST", "/v1/completions", body=json.dumps(dict(oreq, stream=True)),
                  headers={"Content-Type": "application/json", "X-Request-Id": "lp-cut2"})
        r = c.getresponse()
        got = 0
        while got < 10:  # then stop reading: the generation pauses at --stream-queue unread events
            line = r.readline()
            if not line:
                break
            if line.startswith(b"data: {"):
                got += len(json.loads(line[6:])["choices"][0]["token_ids"])
        d.proc.kill()
        d.proc.wait()
        c.close()
    with Daemon(env, "--data-dir", data, "--openai-listen", "127.0.0.1:0", model=model) as d:
        st, o, _ = call(d.openai_port(), "POST", "/v1/completions", oreq, headers={"X-Request-Id": "lp-cut2"})
        ch = o["choices"][0] if st == 200 else {}
        lp = ch.get("logprobs") or {}
        tl = lp.get("token_logprobs", [])
        k = next((i for i, v in enumerate(tl) if v is not None), len(tl))
        ck.equal(ch.get("token_ids"), env.generate(model, prompt + [11, 12], 1500, ignore_eos=True, temperature=1.0,
                                                   seed=78), "OpenAI resumed after kill -9: the ids == the uninterrupted run")
        ck.check(len(lp.get("tokens", [])) == len(tl) == len(lp.get("top_logprobs", [])) == len(lp.get("text_offset", []))
                 == len(ch.get("token_ids", [])) and got <= k < len(tl) and all(v is not None for v in tl[k:]) and
                 all(t is None for t in lp["top_logprobs"][:k]),
                 f"OpenAI resumed: one logprobs entry per token, null for the re-sent ones ({k} of {len(tl)}; at least "
                 f"the {got} read before the kill), numbers after")


if __name__ == "__main__":
    run("e2e logprobs", body)
