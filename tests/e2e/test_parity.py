#!/usr/bin/python3
"""test_parity.py — streamed Generate over gRPC == `tconst generate` for the
same model, prompt and sampling parameters: greedy and seeded sampling (and
unseeded: the server draws a seed and reports it on the last message), on
tiny tconstformer, tlinformer and transformer models, 100 tokens (several
generate windows of 32) with ignore_eos; plus the default eos stop, the
finish reasons, usage, and the built-in model. Worker layouts step
--multi-step tokens per Step call (the worker's own loop): the ids are the
same, several arrive per message; a stop id ends the run on the worker.
"""
import os

from harness import Daemon, run

PROMPT = [5, 17, 42, 99, 3, 250, 511, 7, 64, 128, 300, 2]
N = 100
SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.9, seed=7)
# top-p alone: every row's draw needs the full vocabulary (a GPU worker
# draws it on the device with its sample op; TC_CPU_SAMPLE=1 makes the CPU
# backend do the same, which e2e_parity_sample_op runs)
NUCLEUS = dict(temperature=0.9, top_p=0.8, seed=3)
INPROCESS = "inprocess" in os.environ.get("TC_E2E_DAEMON_ARGS", "")
# (on a GPU the op is on unless TC_CUDA_SAMPLE says 0, or 2: the host
# then draws this test's lone rows)
SAMPLE_OP = os.environ.get("TC_CPU_SAMPLE") == "1" or (
    bool(os.environ.get("TC_E2E_DEVICE")) and os.environ.get("TC_CUDA_SAMPLE", "") in ("", "1"))


def body(env, ck):
    pb = env.pb
    for arch in ("tconstformer", "tlinformer", "transformer"):
        model = env.model(arch, seed=21)
        with Daemon(env, model=model) as d:
            stub = d.stub()
            for label, params in (("greedy", {}), ("sampled", SAMPLED), ("top-p", NUCLEUS)):
                want = env.generate(model, PROMPT, N, ignore_eos=True, **params)
                ck.equal(len(want), N, f"{arch} {label}: tconst generate gave {N} ids")
                got, last = d.generate_ids(stub, PROMPT, env.sampling(max_tokens=N, ignore_eos=True, **params))
                ck.equal(got, want, f"{arch} {label}: {N} streamed ids == tconst generate")
                ck.equal(last.finish_reason, pb.FINISH_REASON_LENGTH, f"{arch} {label}: finish_reason LENGTH")
                ck.equal((last.usage.prompt_tokens, last.usage.completion_tokens), (len(PROMPT), N),
                         f"{arch} {label}: usage prompt/completion tokens")
                ck.check(last.request_id != "", f"{arch} {label}: a request_id is assigned")
                # the first id comes from the prefill; the rest from steps
                if INPROCESS:
                    ck.check(max(d.msg_sizes) == 1, f"{arch} {label}: in-process, one id per message",
                             f"sizes {d.msg_sizes}")
                else:
                    ck.check(max(d.msg_sizes) > 1, f"{arch} {label}: worker multi-step, runs of ids per message",
                             f"sizes {d.msg_sizes}")
            if SAMPLE_OP:
                with open(d.log_path, "rb") as f:
                    log = f.read().decode(errors="replace")
                ck.check("sampling on the backend (its sample op)" in log,
                         f"{arch}: the worker drew the top-p tokens with its backend's sample op",
                         "no such line in the daemon's log")
            # a stop id ends the stream there (on the worker's step loop:
            # nothing past it is sent or fed) and the session goes on
            want = env.generate(model, PROMPT, N, ignore_eos=True, **SAMPLED)
            stop = want[N // 2]
            p = want.index(stop)
            sp = env.sampling(max_tokens=N, ignore_eos=True, **SAMPLED)
            sp.stop_token_ids.append(stop)
            sid = stub.OpenSession(pb.OpenSessionRequest(token_ids=PROMPT), timeout=30).session_id
            got, last = d.generate_ids(stub, [], sp, session_id=sid)
            ck.equal(got, want[:p + 1], f"{arch}: stop id {stop} ends the stream after {p + 1} ids")
            ck.equal(last.finish_reason, pb.FINISH_REASON_STOP, f"{arch}: stop id: finish_reason STOP")
            ck.equal(stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30).length, len(PROMPT) + p + 1,
                     f"{arch}: after the stop id the session holds prompt + {p + 1} ids")
            more, _ = d.generate_ids(stub, [], env.sampling(max_tokens=40, ignore_eos=True, **SAMPLED), session_id=sid)
            ck.equal(more, env.generate(model, PROMPT + got, 40, ignore_eos=True, **SAMPLED),
                     f"{arch}: the session goes on from the stop id exactly")
            stub.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=30)
            # the same request twice gives the same ids (seeded sampling is
            # a function of the seed, not of the server's history)
            again, last_again = d.generate_ids(stub, PROMPT, env.sampling(max_tokens=N, ignore_eos=True, **SAMPLED))
            ck.equal(again, env.generate(model, PROMPT, N, ignore_eos=True, **SAMPLED),
                     f"{arch}: a repeated seeded request gives the same ids")
            ck.equal(last_again.seed, SAMPLED["seed"], f"{arch}: the last message reports the request's seed")
            # no seed: the server draws one per request and reports it;
            # sending it back (here: tconst generate --seed) gives the same ids
            unseeded = dict(temperature=0.9, top_k=40)
            drawn = []
            for k in range(2):
                got, last = d.generate_ids(stub, PROMPT, env.sampling(max_tokens=N, ignore_eos=True, **unseeded))
                drawn.append(last.seed)
                ck.equal(got, env.generate(model, PROMPT, N, ignore_eos=True, seed=last.seed, **unseeded),
                         f"{arch}: unseeded request {k}: ids == tconst generate --seed {last.seed} (the reported seed)")
            ck.check(drawn[0] != drawn[1], f"{arch}: two unseeded requests drew two seeds", f"{drawn}")
            # without ignore_eos both stop at the eos id: find seeds whose
            # reference stops early (T=3 makes eos likely), compare those
            eos = d.stub().ModelInfo(pb.ModelInfoRequest(), timeout=30).eos_token_id
            found = 0
            for seed in range(1, 60):
                params = dict(temperature=3.0, seed=seed)
                want = env.generate(model, PROMPT, 200, **params)
                if len(want) == 200:
                    continue
                found += 1
                got, last = d.generate_ids(stub, PROMPT, env.sampling(max_tokens=200, **params))
                ck.equal(got, want, f"{arch} T=3 seed {seed}: eos-stopped ids == tconst generate ({len(want)})")
                ck.check(got and got[-1] == eos and last.finish_reason == pb.FINISH_REASON_EOS,
                         f"{arch} T=3 seed {seed}: ends with eos id {eos}, finish_reason EOS",
                         f"last id {got[-1:]} finish {last.finish_reason}")
                if found == 2:
                    break
            ck.check(found == 2, f"{arch}: found 2 seeds whose reference stops at eos")

    # the built-in model (no --model): same ids as tconst generate on it
    with Daemon(env) as d:
        ck.check("(tconstformer, ids only)" in d.ready_line,
                 "built-in model: the ready line names a tiny ids-only tconstformer", d.ready_line)
        info = d.stub().ModelInfo(pb.ModelInfoRequest(), timeout=30)
        ck.equal((info.architecture, info.vocab_size, info.generate_window), ("tconstformer", 512, 32),
                 "built-in model: ModelInfo architecture, vocab, W_og")
        want = env.generate(d.model_dir, PROMPT, N, ignore_eos=True, **SAMPLED)
        got, _ = d.generate_ids(d.stub(), PROMPT, env.sampling(max_tokens=N, ignore_eos=True, **SAMPLED))
        ck.equal(got, want, "built-in model: sampled ids == tconst generate")


if __name__ == "__main__":
    run("e2e parity", body)
