#!/usr/bin/python3
"""test_client.py — `tconst client` (the C client on gRPC core) against a
live daemon: generate (greedy and seeded sampling, across windows) prints
the ids of `tconst generate`; a session opened, appended to and generated
in with it gives the ids of `tconst generate` over the concatenation, and
what Python's GetSession sees; health and info answer; an unknown session
is an error (nonzero exit, NOT_FOUND on stderr). Sampled without --seed,
the drawn seed is printed on stderr and repeats the ids; without -n the
server's default max_tokens applies; a generation failing inside
`client stream` is said on stderr and makes the exit status 1.
"""
import json
import os
import re
import subprocess

from harness import Daemon, run

SAMPLED = ["--temperature", "0.8", "--top-k", "40", "--top-p", "0.9", "--seed", "7"]


def body(env, ck):
    pb = env.pb
    model = env.model("tlinformer", seed=101)
    with Daemon(env, model=model) as d:
        def client(*args, ok=True):
            r = subprocess.run([env.tconst, "client"] + list(args) + ["--server", d.grpc_addr],
                               capture_output=True, text=True, timeout=120)
            if ok and r.returncode != 0:
                print(f"     tconst client {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
            return r

        prompt = [7, 70, 700 % 512, 77]
        for label, extra, params in (("greedy", [], {}),
                                     ("sampled", SAMPLED, dict(temperature=0.8, top_k=40, top_p=0.9, seed=7))):
            r = client("generate", "--tokens", " ".join(map(str, prompt)), "-n", "100", "--ignore-eos", *extra)
            got = [int(x) for x in r.stdout.split()]
            ck.equal(got, env.generate(model, prompt, 100, ignore_eos=True, **params),
                     f"tconst client generate ({label}, 100 ids) == tconst generate")

        r = client("session", "open", "--tokens", "1 2 3 4 5")
        sid = r.stdout.strip()
        ck.check(r.returncode == 0 and sid, "tconst client session open prints an id", r.stdout + r.stderr)
        chunks = [[9] * 40, list(range(100, 137)), [3]]
        for c in chunks:
            client("session", "append", "--id", sid, "--tokens", " ".join(map(str, c)))
        history = [1, 2, 3, 4, 5] + [t for c in chunks for t in c]
        r = client("session", "generate", "--id", sid, "-n", "30", "--ignore-eos", *SAMPLED)
        got = [int(x) for x in r.stdout.split()]
        ck.equal(got, env.generate(model, history, 30, ignore_eos=True, temperature=0.8, top_k=40, top_p=0.9,
                                   seed=7), "session open + 3 appends + generate == tconst generate")
        history += got
        info = d.stub().GetSession(pb.GetSessionRequest(session_id=sid), timeout=30)
        ck.equal(info.length, len(history), "GetSession over Python sees the client's session length")
        r = client("session", "get", "--id", sid)
        ck.check(f"length {len(history)}" in r.stdout, "tconst client session get prints the length", r.stdout)
        client("session", "close", "--id", sid)
        r = client("session", "get", "--id", sid, ok=False)
        ck.check(r.returncode != 0 and "NOT_FOUND" in r.stderr, "after close: session get fails with NOT_FOUND",
                 f"exit {r.returncode}: {r.stderr.strip()}")
        r = client("health")
        ck.check(r.returncode == 0 and "SERVING" in r.stdout, "tconst client health says SERVING", r.stdout)
        r = client("info")
        ck.check(r.returncode == 0 and "tlinformer" in r.stdout, "tconst client info names the model", r.stdout)
        # sampled without --seed: the seed the server drew is on stderr, and
        # repeats the ids (tconst generate --seed N)
        unseeded = ["--temperature", "0.9", "--top-k", "40"]
        r = client("generate", "--tokens", " ".join(map(str, prompt)), "-n", "40", "--ignore-eos", *unseeded)
        m = re.search(r"\[seed (\d+)\]", r.stderr)
        ck.check(r.returncode == 0 and m, "a sampled generation without --seed prints the drawn seed on stderr",
                 r.stderr)
        if m:
            ck.equal([int(x) for x in r.stdout.split()],
                     env.generate(model, prompt, 40, ignore_eos=True, temperature=0.9, top_k=40, seed=int(m.group(1))),
                     "... and tconst generate with that seed gives its ids")
        r = client("generate", "--tokens", " ".join(map(str, prompt)), "-n", "5", *SAMPLED)
        ck.check("[seed" not in r.stderr, "with --seed nothing is printed about it", r.stderr)
        # --logprobs 3: a stderr line a token, its id and 3 most likely (greedy: itself first)
        r = client("generate", "--tokens", " ".join(map(str, prompt)), "-n", "12", "--ignore-eos", "--logprobs", "3")
        ids = [int(x) for x in r.stdout.split()]
        lines = [l.split() for l in r.stderr.splitlines() if l.startswith("logprob ")]
        ck.check(r.returncode == 0 and ids == env.generate(model, prompt, 12, ignore_eos=True) and
                 [int(l[1]) for l in lines] == ids and all(len(l) == 6 and l[3].split(":")[0] == l[1] and
                                                          float(l[2]) == float(l[3].split(":")[1]) <= 0 for l in lines),
                 "tconst client generate --logprobs 3: the ids, and on stderr a line a token: its logprob and the "
                 "3 most likely, itself first (greedy)", r.stderr[:300])
        r = client("generate", "--tokens", "1", "--logprobs", "21", ok=False)
        ck.check(r.returncode == 2 and "--logprobs" in r.stderr, "--logprobs 21: a usage error naming it",
                 f"exit {r.returncode}: {r.stderr.strip()}")

    # -n left out: the server's default (min(16, --max-tokens)), not a 16
    # the server may refuse
    with Daemon(env, "--max-tokens", "8", model=model) as d:
        r = subprocess.run([env.tconst, "client", "generate", "--tokens", "1 2 3", "--ignore-eos", "--server",
                            d.grpc_addr], capture_output=True, text=True, timeout=120)
        ck.check(r.returncode == 0 and len(r.stdout.split()) == 8,
                 "--max-tokens 8, no -n: tconst client generate gives the server's default of 8 ids",
                 f"exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")

    # a generation that fails inside a Stream (an injected inline-sync
    # fault: the stream itself goes on) is said on stderr, the next line
    # still runs, and the exit status is 1
    W = json.load(open(os.path.join(model, "config.json")))["generate_window"]
    os.environ["TC_FAULT_STEP_SYNC_AT"] = str(3 * W)
    try:
        d = Daemon(env, "--sync-inline-max", "1000000", model=model)
        d.start()
    finally:
        del os.environ["TC_FAULT_STEP_SYNC_AT"]
    with d:
        first = [(i * 13 + 5) % 500 + 2 for i in range(3 * W - 3)]
        lines = "ids: " + " ".join(map(str, first)) + "\nids: 5\n"
        r = subprocess.run([env.tconst, "client", "stream", "-n", "10", "--ignore-eos", "--server", d.grpc_addr],
                           input=lines, capture_output=True, text=True, timeout=120)
        out = r.stdout.splitlines()
        ck.check(r.returncode == 1 and "the generation failed" in r.stderr and "TC_FAULT_STEP_SYNC_AT" in r.stderr
                 and "1 generation failed" in r.stderr,
                 "tconst client stream: a failed generation is said on stderr and the exit status is 1",
                 f"exit {r.returncode}: {r.stderr.strip()}")
        ck.check(len(out) == 2 and 0 < len(out[0].split()) < 10 and len(out[1].split()) == 10,
                 "... after the tokens it had; the next line generates its 10", repr(out))


if __name__ == "__main__":
    run("e2e client", body)
