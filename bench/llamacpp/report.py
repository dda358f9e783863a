#!/usr/bin/env python3
"""Side-by-side tables (Markdown) from one run.sh run: tconst's
`bench itl --arch both` CSV(s) and llama_bench's CSV.

usage: report.py --tconst itl-P.csv [--tconst ...] --llama llama.csv [--md out.md]

Ratios are llama.cpp / tconst (> 1: tconst is faster / smaller). Where
llama.cpp ran in several configurations (flash attention on/off, threads),
the ratio uses the best llama.cpp figure at that N (the one most favourable
to llama.cpp).
"""
import argparse
import csv
import math
import re
import sys

GIB = float(1 << 30)


def num(s):
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def kfmt(n):
    n = int(n)
    if n % (1 << 20) == 0:
        return "%dM" % (n >> 20)
    if n % 1024 == 0:
        return "%dK" % (n >> 10)
    return str(n)


def f(v, unit="", digits=3):
    if v is None:
        return "—"
    if abs(v) >= 100:
        return "%.0f%s" % (v, unit)
    if abs(v) >= 10:
        return "%.1f%s" % (v, unit)
    return ("%." + str(digits) + "g%s") % (v, unit)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return "%.2f×" % (a / b) if a / b < 100 else "%.0f×" % (a / b)


def sessions(b):
    return None if not b else GIB / b


def main():
    ap = argparse.ArgumentParser(description="tables from run.sh CSVs")
    ap.add_argument("--tconst", action="append", default=[], help="tconst bench itl CSV (repeatable)")
    ap.add_argument("--llama", required=True, help="llama_bench CSV")
    ap.add_argument("--md", help="also write the tables to this file")
    a = ap.parse_args()

    ours = {}  # ((preset, threads), arch, N) -> row; threads from the file name (run.sh: tconst-P-tT.csv)
    for path in a.tconst:
        m = re.search(r"-t(\d+)\.csv$", path)
        thr = m.group(1) if m else "?"
        with open(path) as fh:
            for r in csv.DictReader(fh):
                ours[((r["preset"], thr), r["arch"], int(r["n_ctx"]))] = r
    lc = {}  # (preset, N) -> list of rows
    configs = []
    with open(a.llama) as fh:
        for r in csv.DictReader(fh):
            cfg = "fa %s, %s KV" % (r["flash"], r["kv_type"])
            r["cfg"] = cfg
            if cfg not in configs:
                configs.append(cfg)
            lc.setdefault(((r["label"], r["threads"]), int(r["n_ctx"])), []).append(r)

    presets = []
    for (p, _arch, _n) in ours:
        if p not in presets:
            presets.append(p)
    for (p, _n) in lc:
        if p not in presets:
            presets.append(p)

    out = []
    for p in presets:
        ns = sorted({n for (pp, _a, n) in ours if pp == p} | {n for (pp, n) in lc if pp == p})

        def o(arch, n, key):
            r = ours.get((p, arch, n))
            return num(r[key]) if r else None

        def l(n, cfg, key):
            for r in lc.get((p, n), []):
                if r["cfg"] == cfg:
                    return num(r[key])
            return None

        def lbest(n, key):
            vals = [num(r[key]) for r in lc.get((p, n), [])]
            vals = [v for v in vals if v is not None]
            return min(vals) if vals else None

        out.append("### %s, threads: %s\n" % p)
        # TTFT
        hdr = ["N", "tconstformer", "transformer (tconst)"] + ["llama.cpp (%s)" % c for c in configs] + \
              ["llama.cpp ÷ tconstformer", "llama.cpp ÷ transformer (tconst)"]
        out.append("TTFT (prefill of an N-token prompt + first token), seconds:\n")
        out.append("| " + " | ".join(hdr) + " |")
        out.append("| " + " | ".join(["---:"] * len(hdr)) + " |")
        for n in ns:
            tc, tr, lb = o("tconstformer", n, "prefill_s"), o("transformer", n, "prefill_s"), lbest(n, "prefill_s")
            row = [kfmt(n), f(tc), f(tr)] + [f(l(n, c, "prefill_s")) for c in configs] + [ratio(lb, tc), ratio(lb, tr)]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        # per-token
        hdr = ["N", "tconstformer hit p50", "tconstformer amortized", "transformer (tconst) p50"] + \
              ["llama.cpp p50 (%s)" % c for c in configs] + \
              ["llama.cpp ÷ tconstformer amortized", "llama.cpp ÷ transformer (tconst)"]
        out.append("Per-token decode at context N, ms (tconstformer amortized = hit steps + the sync every W_og tokens):\n")
        out.append("| " + " | ".join(hdr) + " |")
        out.append("| " + " | ".join(["---:"] * len(hdr)) + " |")
        for n in ns:
            th, ta, tr = o("tconstformer", n, "hit_p50_ms"), o("tconstformer", n, "amort_ms"), o("transformer", n, "hit_p50_ms")
            lb = lbest(n, "step_p50_ms")
            row = [kfmt(n), f(th), f(ta), f(tr)] + [f(l(n, c, "step_p50_ms")) for c in configs] + \
                  [ratio(lb, ta), ratio(lb, tr)]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        # memory
        kvcfg = sorted({r["kv_type"] for rows in lc.values() for r in rows})
        hdr = ["N", "tconstformer state", "transformer (tconst) KV, fp32, allocated"] + \
              ["llama.cpp KV %s at N" % k for k in kvcfg] + \
              ["sessions/GiB tconstformer", "sessions/GiB transformer (tconst)"] + \
              ["sessions/GiB llama.cpp %s" % k for k in kvcfg] + ["llama.cpp ÷ tconstformer bytes"]
        out.append("Per-session state bytes at context N (tconst: `tc_session_state_bytes`, history ids excluded; "
                   "llama.cpp: N × layers × 2 × n_embd × KV element size) and sessions per GiB of it:\n")
        out.append("| " + " | ".join(hdr) + " |")
        out.append("| " + " | ".join(["---:"] * len(hdr)) + " |")
        for n in ns:
            ts, trs = o("tconstformer", n, "state_bytes"), o("transformer", n, "state_bytes")
            lk = {}
            for k in kvcfg:
                for r in lc.get((p, n), []):
                    if r["kv_type"] == k:
                        lk[k] = num(r["kv_at_n_bytes"])
            row = [kfmt(n), f(ts), f(trs)] + [f(lk.get(k)) for k in kvcfg] + \
                  [f(sessions(ts)), f(sessions(trs))] + [f(sessions(lk.get(k))) for k in kvcfg] + \
                  [ratio(min([v for v in lk.values() if v] or [None]) if lk else None, ts)]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        notes = sorted({r["note"] for (pp, _a, _n), r in ours.items() if pp == p and r.get("note")})
        if notes:
            out.append("tconst notes: " + "; ".join(notes) + "\n")

    text = "\n".join(out)
    print(text)
    if a.md:
        with open(a.md, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
