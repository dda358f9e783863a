#!/usr/bin/python3
"""bench/openai/logprobs.py TCONSTD TCONST REPO — what asking for logprobs
costs: tokens/s at the client of gRPC Generate streams with sampling.logprobs
5 against the same without, alternated 5 times in one daemon (tiny
GPT-2-vocabulary model, greedy, 512 tokens), at batch 1 and batch 16 (16
streams at once, all with or all without). Needs TC_GPT2_DIR (ctest -R
tokenizer.fetch_gpt2 makes build/tokenizer/gpt2). Numbers:
docs/benchmarks.md. Not a test: no assertions."""
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(sys.argv[3], "tests/e2e"))
from harness import Daemon, run  # noqa: E402

N = 512


def body(env, ck):
    pb = env.pb
    model = env.gpt2_model(3)
    with Daemon(env, model=model) as d:
        s = d.stub()

        def one(lp, out, k):
            sp = env.sampling(temperature=0, max_tokens=N, ignore_eos=True)
            if lp is not None:
                sp.logprobs = lp
            n = 0
            for r in s.Generate(pb.GenerateRequest(token_ids=[464, 2068 + k], sampling=sp), timeout=600):
                n += len(r.token_ids)
            out[k] = n

        def batch(B, lp):
            out = [0] * B
            t = time.perf_counter()
            ths = [threading.Thread(target=one, args=(lp, out, k)) for k in range(B)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            return sum(out) / (time.perf_counter() - t)

        for B in (1, 16):
            res = {"without": [], "logprobs 5": []}
            for _ in range(5):
                res["without"].append(batch(B, None))
                res["logprobs 5"].append(batch(B, 5))
            med = {k: statistics.median(v) for k, v in res.items()}
            for k, v in res.items():
                print(f"batch {B:2d} {k:10s} median tok/s {med[k]:.0f}", ["%.0f" % x for x in v], flush=True)
            print(f"batch {B:2d} ratio logprobs/without {med['logprobs 5'] / med['without']:.2f}", flush=True)


run("logprobs bench", body)
