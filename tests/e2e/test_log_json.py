#!/usr/bin/python3
"""test_log_json.py — --log-format json gives one JSON object a line, even
with spawned workers writing to the same stderr (STYLE.md: TC_LOG_FORMAT
json for Kubernetes log pipelines).

tconstd and the workers it spawns share one stderr. Each record must
reach it whole, in one write: a record written in pieces interleaves with
another process's (seen: `"msg":"role context device cpu model
/tmp/tcon{"ts":...`). The test runs the split layout at --log-level trace
(records from three processes at once, above all at start-up), with four
generations at a time, stops the daemon, three times over, and parses
every line of their stderr (test_log checks the one-write rule itself,
with 9000 records from three processes on one pipe): each must be
a JSON object with ts, level, subsys, src and msg; records from the
workers and from tconstd are both there.
"""
import json
import threading

from harness import Daemon, run


def one_run(env, ck, model, lines):
    d = Daemon(env, "--log-format", "json", "--log-level", "trace", "--sync-inline-max", "0", model=model)
    d.start()
    with d:
        s = d.stub()
        errs = []

        def gen(i):
            try:
                ids, _ = d.generate_ids(s, [(i * 7 + j) % 300 + 2 for j in range(20 + i)],
                                        env.sampling(max_tokens=60, ignore_eos=True))
                if len(ids) != 60:
                    errs.append(f"request {i}: {len(ids)} ids")
            except Exception as e:  # noqa: BLE001 -- reported as a failed check
                errs.append(f"request {i}: {e}")
        ths = [threading.Thread(target=gen, args=(i,)) for i in range(4)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(120)
        ck.check(not errs, "four concurrent generations complete", "; ".join(errs))
    d.log.flush()
    lines += open(d.log_path, "rb").read().decode(errors="replace").splitlines()


def body(env, ck):
    model = env.model("tconstformer", seed=3)
    lines = []
    for _ in range(3):  # the start-up, when the three processes log at once, three times
        one_run(env, ck, model, lines)
    bad, subsys = [], set()
    for ln in lines:
        if not ln.strip():
            continue
        try:
            r = json.loads(ln)
            if not isinstance(r, dict) or not {"ts", "level", "subsys", "src", "msg"} <= r.keys():
                bad.append(ln)
            else:
                subsys.add(r["subsys"])
        except ValueError:
            bad.append(ln)
    ck.check(len(lines) > 60, "the logs have records", f"{len(lines)} lines")
    ck.check(not bad, f"every one of {len(lines)} lines is one JSON record", f"{len(bad)} not: {bad[:3]}")
    ck.check("worker" in subsys and "main" in subsys, "records of the workers and of tconstd are there",
             str(sorted(subsys)))


if __name__ == "__main__":
    run("log_json", body)
