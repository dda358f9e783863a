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

Runs in each worker layout (TC_E2E_DAEMON_ARGS).
"""
import http.client
import json
import threading

import grpc
from harness import Daemon, run

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


if __name__ == "__main__":
    run("e2e back_to_back", body)
