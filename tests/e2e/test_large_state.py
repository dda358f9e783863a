#!/usr/bin/python3
"""test_large_state.py — session states larger than --max-message-bytes
cross the data plane (docs/workers.md "Data plane").

A baseline session's state is its whole K/V cache (2 x layers x d x 4
bytes a token: 4 KiB on the tiny model, 27.6 KB at paper-41m) and a
TLinFormer's sync state carries its compress-layer history (1 KiB a token
here, 6.9 KB at paper size): both outgrow any fixed message limit. The
data plane's limit is the largest state a session of --max-session-tokens
tokens can have, at least --max-message-bytes (a worker's log line says
it), so with workers started at --max-message-bytes 1 MiB:

  * a baseline prompt of 400 tokens (a 1.6 MB state) and a TLinFormer
    prompt of 1100 tokens (1.1 MB of history, then a sync state past 1 MiB
    at every boundary) generate exactly `tconst generate`'s ids; before the
    fix both failed ("exceeds --max-message-bytes");
  * workers told --max-session-tokens 200 refuse the 400-token state with
    an error naming the flag, and the request ends with it (no hang, no
    crash), while a 100-token session on the same workers still streams.

Attached workers (--workers): tconstd passes its own --max-session-tokens
to workers it spawns (checked in the spawned layout by the first case: it
runs once more without --workers).
"""
import grpc

from harness import Daemon, run
from test_attach import Worker

MIB = 1 << 20


def generate(env, stub, prompt, n):
    ids = []
    for r in stub.Generate(env.pb.GenerateRequest(token_ids=prompt, sampling=env.sampling(max_tokens=n, ignore_eos=True)),
                           timeout=300):
        ids += r.token_ids
    return ids


def body(env, ck):
    cases = (("transformer", 400, 24), ("tlinformer", 1100, 70))
    for arch, p, n in cases:
        model = env.model(arch, seed=3)
        prompt = [(i * 29 + 5) % 480 + 2 for i in range(p)]
        want = env.generate(model, prompt, n, ignore_eos=True)
        ck.equal(len(want), n, f"{arch}: tconst generate gave {n} ids")
        ws = [Worker(env, "context", model, "--max-message-bytes", str(MIB)),
              Worker(env, "generation", model, "--max-message-bytes", str(MIB))]
        try:
            with Daemon(env, "--workers", f"{ws[0].addr},{ws[1].addr}", model=model) as d:
                got = generate(env, d.stub(), prompt, n)
                ck.equal(got, want, f"{arch}: a {p}-token prompt (state over 1 MiB) through workers at "
                                    f"--max-message-bytes 1 MiB generates tconst generate's ids")
        finally:
            for w in ws:
                w.stop()
        # spawned workers: tconstd's defaults (256 MiB) hold these anyway;
        # this checks the flag tconstd adds is one the worker takes
        with Daemon(env, "--max-session-tokens", str(p + n + 10), model=model) as d:
            ck.equal(generate(env, d.stub(), prompt, n), want,
                     f"{arch}: spawned workers told --max-session-tokens {p + n + 10} generate the same ids")

    # workers whose session limit is below the state: a clear error
    model = env.model("transformer", seed=3)
    ws = [Worker(env, "context", model, "--max-message-bytes", str(MIB), "--max-session-tokens", "200"),
          Worker(env, "generation", model, "--max-message-bytes", str(MIB), "--max-session-tokens", "200")]
    try:
        with Daemon(env, "--workers", f"{ws[0].addr},{ws[1].addr}", model=model) as d:
            stub = d.stub()
            prompt = [(i * 29 + 5) % 480 + 2 for i in range(400)]
            err = None
            try:
                generate(env, stub, prompt, 4)
            except grpc.RpcError as e:
                err = e
            ck.check(err is not None and "--max-session-tokens" in (err.details() or ""),
                     "a 1.6 MB state to workers of --max-session-tokens 200 (1 MiB): the request fails naming the flag",
                     f"{err.code().name}: {err.details()}" if err else "it succeeded")
            short = [(i * 7 + 3) % 480 + 2 for i in range(100)]
            want = env.generate(model, short, 8, ignore_eos=True)
            ck.equal(generate(env, stub, short, 8), want, "a 100-token session on the same workers still streams")
    finally:
        for w in ws:
            w.stop()


if __name__ == "__main__":
    run("large_state", body)
