#!/usr/bin/python3
"""test_weight_dtype.py — tconstd --weight-dtype reaches the spawned
workers (docs/gpu.md "16-bit weights", docs/config.md).

On the CPU (the default here): a worker started with --weight-dtype bf16
warns that the CPU keeps its weights in fp32, and its ids stay exactly
`tconst generate`'s: the knob changes nothing on a CPU.

On a GPU (TC_E2E_DEVICE=cuda:N, scripts/gpu-run-bundle.sh): for f32, bf16
and f16 the worker's device line names that format; greedy requests cross
several syncs and give max_tokens ids, the same ids twice in one daemon
(so a 16-bit worker is deterministic and one request's state does not leak
into the next); f32's ids equal `tconst generate`'s. A 16-bit model's ids
are not compared with the CPU's: rounded weights may pick other argmaxes
(gpu_parity bounds its error op by op against a 16-bit reference).

In both cases --weight-dtype with a value it does not know stops tconstd
with an error naming the flag (the attached and in-process refusals are
daemon_flags's).
"""
import json
import os
import subprocess

from harness import Daemon, run

DEVICE = os.environ.get("TC_E2E_DEVICE") or "cpu"
CUDA = DEVICE.startswith("cuda")


def body(env, ck):
    model = env.model("tconstformer", seed=5)
    W = json.load(open(os.path.join(model, "config.json")))["generate_window"]
    prompt = [(i * 17 + 3) % 400 + 2 for i in range(W + 7)]
    n = 3 * W + 5  # three more syncs
    want = env.generate(model, prompt, n, ignore_eos=True)
    ck.equal(len(want), n, f"tconst generate gave {n} ids")
    for dt in (("f32", "bf16", "f16") if CUDA else ("bf16",)):
        # split layout: the flag is for spawned workers (TC_E2E_DAEMON_ARGS
        # of another layout still spawns them)
        with Daemon(env, "--weight-dtype", dt, model=model) as d:
            s = d.stub()
            sp = env.sampling(max_tokens=n, ignore_eos=True)
            got1, _ = d.generate_ids(s, prompt, sp)
            got2, _ = d.generate_ids(s, prompt, sp)
            log = open(d.log_path, "rb").read().decode(errors="replace")
            ck.equal(len(got1), n, f"{dt}: {n} ids")
            ck.equal(got2, got1, f"{dt}: the same ids for the same request twice")
            if CUDA:
                ck.check(f"weights {dt}" in log, f"{dt}: the worker's device line names weights {dt}",
                         "no such line in the daemon's log")
                if dt == "f32":
                    ck.equal(got1, want, "f32: the ids equal tconst generate's")
            else:
                ck.check("the CPU keeps its weights in fp32" in log, f"{dt} on the CPU: the worker says it keeps fp32",
                         "no such line in the daemon's log")
                ck.equal(got1, want, f"{dt} on the CPU: the ids equal tconst generate's")
    # a value it does not know: an error naming the flag, no daemon
    r = subprocess.run([env.tconstd, "--model", model, "--listen", "127.0.0.1:0", "--weight-dtype", "fp8"],
                       capture_output=True, text=True, timeout=60)
    ck.check(r.returncode != 0, "--weight-dtype fp8: tconstd refuses to start", f"rc {r.returncode}")
    ck.check("weight-dtype" in r.stderr and "fp8" in r.stderr, "--weight-dtype fp8: the error names the flag and value",
             r.stderr[-300:])


if __name__ == "__main__":
    run("weight_dtype", body)
