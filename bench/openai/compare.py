#!/usr/bin/python3
"""bench/openai/compare.py TCONSTD TCONST REPO — tokens/s at the client of the
OpenAI-compatible API (SSE and one JSON answer) against a gRPC Generate
stream, alternated 5 times in one daemon (tiny GPT-2-vocabulary model, greedy,
1024 tokens). Needs TC_GPT2_DIR (ctest -R tokenizer.fetch_gpt2 makes
build/tokenizer/gpt2). Numbers: docs/benchmarks.md. Not a test: no assertions."""
import sys, time, json, http.client, statistics, os
sys.path.insert(0, os.path.join(sys.argv[3], "tests/e2e"))
from harness import Daemon, run
N = 1024
def body(env, ck):
    pb = env.pb
    model = env.gpt2_model(3)
    with Daemon(env, "--openai-listen", "127.0.0.1:0", model=model) as d:
        w = d.ready_line.split(); port = int(w[w.index("openai") + 1].rsplit(":", 1)[1])
        s = d.stub()
        def grpc_run():
            t = time.perf_counter(); n = 0
            for r in s.Generate(pb.GenerateRequest(text="Hello", sampling=env.sampling(temperature=0, max_tokens=N, ignore_eos=True)), timeout=300):
                n += len(r.token_ids)
            return n / (time.perf_counter() - t)
        def sse_run(stream=True):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            t = time.perf_counter()
            c.request("POST", "/v1/completions", body=json.dumps({"prompt": "Hello", "max_tokens": N, "temperature": 0, "ignore_eos": True, "stream": stream}))
            r = c.getresponse(); n = 0
            if stream:
                for line in r:
                    if line.startswith(b"data: {"):
                        n += len(json.loads(line[6:])["choices"][0]["token_ids"])
            else:
                n = len(json.loads(r.read())["choices"][0]["token_ids"])
            c.close()
            return n / (time.perf_counter() - t)
        res = {"grpc": [], "sse": [], "json": []}
        for _ in range(5):
            res["grpc"].append(grpc_run()); res["sse"].append(sse_run(True)); res["json"].append(sse_run(False))
        for k, v in res.items(): print(k, "median tok/s %.0f" % statistics.median(v), ["%.0f" % x for x in v], flush=True)
run("oa bench", body)
