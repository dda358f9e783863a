#!/usr/bin/python3
"""test_client.py — `tconst client` (the C client on gRPC core) against a
live daemon: generate (greedy and seeded sampling, across windows) prints
the ids of `tconst generate`; a session opened, appended to and generated
in with it gives the ids of `tconst generate` over the concatenation, and
what Python's GetSession sees; health and info answer; an unknown session
is an error (nonzero exit, NOT_FOUND on stderr).
"""
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


if __name__ == "__main__":
    run("e2e client", body)
