#!/usr/bin/python3
"""tsan_report.py DIR — the ThreadSanitizer reports under DIR (log_path
files of `make test-tsan`) that concern tconst's own code, then exit 1 if
there are any.

Debian's gRPC, abseil and OpenBLAS are not built with -fsanitize=thread,
so TSan cannot see their atomics and reports thousands of races inside
them (and in daemon/rpc.c, our one module of grpc_* calls, on buffers
gRPC hands over through them). Those are left out: a report counts when
one of its two accesses has a frame of our sources other than rpc.c in
its top two frames (where the racing access is our code, not a library
memcpy called on our behalf), or it is a lock-order inversion, or a
thread leak of a thread our code created (the caller of pthread_create is
ours: gRPC's timer thread, started inside our first call, is gRPC's). What is left out is counted, not hidden."""
import collections
import glob
import os
import re
import sys

OUR_DIRS = "common|daemon|model|kernels|scheduler|tokenizer|worker|cli"
OURS = re.compile(r"/(" + OUR_DIRS + r")/[^/:]+\.(c|h)\b")
NOISE = re.compile(r"/daemon/rpc\.c|/worker/main\.c")  # gRPC's hand-offs; the worker's gRPC poll loop


def accesses(block):
    """The stacks of a report's access sections, each a list of (fn, location)."""
    out, cur = [], None
    for ln in block.split("\n"):
        if re.match(r"  (Previous )?([Aa]tomic )?([Ww]rite|[Rr]ead)", ln):
            cur = []
            out.append(cur)
            continue
        if cur is not None:
            if not ln.strip():
                cur = None
                continue
            m = re.match(r"\s+#\d+ (\S+) (\S+)", ln)
            if m:
                cur.append((m.group(1), m.group(2)))
    return out


def ours(frames):
    return [f"{fn} {loc}" for fn, loc in frames[:2] if OURS.search(loc) and not NOISE.search(loc)]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: tsan_report.py DIR")
    kept, skipped = collections.OrderedDict(), 0
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*"))):
        with open(path, errors="replace") as f:
            text = f.read()
        for block in text.split("==================")[1:]:
            m = re.search(r"WARNING: ThreadSanitizer: ([^\n(]+)", block)
            if not m:
                continue
            kind = m.group(1).strip()
            if kind == "data race":
                key = tuple(sorted({x for a in accesses(block)[:2] for x in ours(a)}))
            elif kind == "thread leak" and not re.search(r"\n\s+#1 \S+ \S*/(" + OUR_DIRS + r")/", block):
                # a library's own thread (gRPC's timer thread, started inside
                # our first call): #1, the caller of pthread_create, is not ours
                key = ()
            else:  # lock-order inversion, thread leak, unlock of an unlocked mutex, ...
                key = tuple(sorted({f"{fn} {loc}" for fn, loc in re.findall(r"#\d+ (\S+) (\S+)", block)
                                    if OURS.search(loc) and not NOISE.search(loc)}))[:4]
            if not key:
                skipped += 1
                continue
            kept.setdefault((kind,) + key, (path, block))
    print(f"tsan_report: {skipped} report(s) inside gRPC/abseil/BLAS or their hand-offs left out")
    for key, (path, block) in kept.items():
        print(f"--- {key[0]} in {', '.join(key[1:])} ({os.path.basename(path)})")
        print(block.strip()[:4000])
    if kept:
        print(f"tsan_report: {len(kept)} distinct report(s) in tconst's code")
        sys.exit(1)
    print("tsan_report: none in tconst's code")


if __name__ == "__main__":
    main()
