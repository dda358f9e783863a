#!/usr/bin/python3
"""test_attach.py — tconstd attached to workers started elsewhere
(--workers, as on Kubernetes):
  - a context and a generation worker started by the test serve a seeded
    generation equal to `tconst generate`;
  - a stopped (SIGSTOP) generation worker is detected: a request fails with
    UNAVAILABLE (tconstd cannot restart what it did not start) instead of
    hanging; after SIGCONT the worker answers again and requests succeed,
    token for token;
  - bad worker lists are start-up errors naming the problem: an address
    nobody answers on, an unpaired context worker, a worker serving another
    model.
"""
import os
import signal
import subprocess

import grpc

from harness import Daemon, run, wait_for


class Worker:
    def __init__(self, env, role, model):
        worker = os.path.join(os.path.dirname(env.tconstd), "worker", "tconst-worker")
        self.p = subprocess.Popen([worker, "--role", role, "--listen", "127.0.0.1:0", "--model", model,
                                   "--log-level", "warn"], stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if " ready: " not in line:
            raise RuntimeError(f"tconst-worker --role {role} did not start: {line!r}")
        self.addr = line.split(" control ")[1].split()[0]

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)
            self.p.terminate()
            self.p.wait(30)


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=8)
    other = env.model("tlinformer", seed=8)
    prompt = [(i * 13) % 500 + 2 for i in range(45)]
    samp = dict(temperature=0.7, top_k=20, seed=42)
    want = env.generate(model, prompt, 150, ignore_eos=True, **samp)
    ws = [Worker(env, "context", model), Worker(env, "generation", model)]
    try:
        with Daemon(env, "--workers", f"{ws[0].addr},{ws[1].addr}", "--worker-timeout", "1", model=model) as d:
            s = d.stub()

            def gen():
                ids = []
                for r in s.Generate(pb.GenerateRequest(token_ids=prompt, sampling=env.sampling(
                        max_tokens=150, ignore_eos=True, **samp)), timeout=120):
                    ids += r.token_ids
                return ids

            ck.equal(gen(), want, "attached workers: seeded generation == tconst generate")
            ck.equal(d.metric("tconst_workers_up"), 2.0, "tconst_workers_up is 2")
            os.kill(ws[1].p.pid, signal.SIGSTOP)
            ck.rpc_error(gen, grpc.StatusCode.UNAVAILABLE, "a stopped generation worker: the request",
                         needle="unavailable")
            up = wait_for(lambda: d.metric("tconst_workers_up") == 1.0, 30, "the worker marked down")
            ck.check(up, "tconst_workers_up drops to 1")
            os.kill(ws[1].p.pid, signal.SIGCONT)
            back = wait_for(lambda: d.metric("tconst_workers_up") == 2.0, 30, "the worker back")
            ck.check(back, "after SIGCONT the worker is up again")
            ck.equal(gen(), want, "after it came back: the same generation, token for token")
            ck.equal(d.metric("tconst_worker_restarts_total"), 0.0, "tconstd restarted nothing it did not start")
    finally:
        for w in ws:
            w.stop()

    # bad worker lists: clear start-up errors
    both_other = Worker(env, "both", other)
    ctx_only = Worker(env, "context", model)
    gen_ok = Worker(env, "generation", model)
    try:
        cases = [
            ("127.0.0.1:1", "does not answer"),
            (ctx_only.addr, "1 context and 0 generation"),
            (f"{ctx_only.addr},{gen_ok.addr},{both_other.addr}", "different model"),
        ]
        for workers, needle in cases:
            r = subprocess.run([env.tconstd, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                "--workers", workers, "--worker-start-timeout", "2"],
                               capture_output=True, text=True, timeout=60)
            err = [l for l in r.stderr.splitlines() if "error" in l]
            ck.check(r.returncode == 2 or (r.returncode != 0 and any(needle in l for l in err)),
                     f"--workers {workers}: exits nonzero naming '{needle}'", r.stderr[-400:])
            ck.check(any(needle in l for l in err), f"--workers {workers}: the message names '{needle}'",
                     err[-1] if err else r.stderr[-300:])
    finally:
        for w in (both_other, ctx_only, gen_ok):
            w.stop()


if __name__ == "__main__":
    run("attach", body)
