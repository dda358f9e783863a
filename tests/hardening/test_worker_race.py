#!/usr/bin/python3
"""test_worker_race.py TCONST_WORKER — two calls on one session at once
must not corrupt it or kill the worker.

A both-roles worker runs Steps on its generation thread and Appends /
re-Opens on its context thread. The coordinator never sends both for one
session at once, but a stale queued call (a worker stopped and resumed) or
any other client of the control port can. Both threads then wrote the same
session's window rows, and the model's position check aborted the process
(SIGABRT within seconds, every run). Now one thread at a time computes on a
session: a Step that finds it busy is refused (ABORTED), a context-thread
call waits for it.

Two threads hammer session 1 for a fixed number of calls each (Step with a
multi-step sampler; Append of 37 tokens with a 3-token extend, every fifth
call a re-Open), then the worker must still be alive, every call must have
ended OK or with one of the refusals named below, and the session must
still compute: a fresh Open + Append + Step answers OK. Two bad Step
fields are refused on the way. SIGTERM must end it with status 0."""
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading

import grpc

from hardening import Checker, f_bytes, f_ids, f_int

SVC = "/tconst.worker.v1.Worker/"
CALLS = 400  # per thread; the unfixed worker died within ~100


def sampler():
    rng = b"".join(struct.pack("<Q", v) for v in (1, 2, 3, 4))
    # top_p 1 (field 3, fixed32), the RNG (4, packed fixed64), max_steps 8 (5)
    return bytes([3 << 3 | 5]) + struct.pack("<f", 1.0) + f_bytes(4, rng) + f_int(5, 8)


def main():
    worker = sys.argv[1]
    ck = Checker("worker_race")
    # stderr to a file, not a pipe nobody reads while the worker runs (a
    # full pipe would block its logging); its tail is printed on a failure
    errf = tempfile.NamedTemporaryFile(prefix="worker_race_", suffix=".err")
    p = subprocess.Popen([worker, "--role", "both", "--listen", "127.0.0.1:0", "--log-level", "warn"],
                         stdout=subprocess.PIPE, stderr=errf, text=True)

    def err_tail():
        with open(errf.name, errors="replace") as f:
            return f.read()[-2000:]
    try:
        line = p.stdout.readline()
        m = re.search(r"control (\S+) data", line)
        if not m:
            ck.check(False, f"worker ready line (got {line!r}; {err_tail()})")
            return ck.done()
        ch = grpc.insecure_channel(m.group(1))

        def call(method, req):
            try:
                ch.unary_unary(SVC + method, request_serializer=None, response_deserializer=None)(req, timeout=120)
                return "OK"
            except grpc.RpcError as e:
                return e.code().name

        ck.check(call("Open", f_int(1, 1)) == "OK", "Open session 1")
        ck.check(call("Append", f_int(1, 1) + f_ids(3, [3] * 5)) == "OK", "Append 5 tokens")
        step = f_ids(1, [1]) + f_ids(2, [4]) + f_bytes(3, sampler())
        res = {"step": {}, "ctx": {}}

        def stepper():
            for _ in range(CALLS):
                if p.poll() is not None:
                    return
                r = call("Step", step)
                res["step"][r] = res["step"].get(r, 0) + 1

        def appender():
            for n in range(1, CALLS + 1):
                if p.poll() is not None:
                    return
                if n % 5 == 0:
                    r = call("Open", f_int(1, 1))
                else:
                    r = call("Append", f_int(1, 1) + f_ids(2, [9] * 3) + f_ids(3, [7] * 37))
                res["ctx"][r] = res["ctx"].get(r, 0) + 1

        ts = [threading.Thread(target=stepper), threading.Thread(target=appender)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        print("calls:", res)
        ck.check(p.poll() is None, f"the worker is alive after {CALLS} Steps against {CALLS} Appends/Opens "
                 f"on one session (rc {p.poll()})")
        # ABORTED: a Step refused while the context thread held the
        # session; NOT_FOUND: a Step between a re-Open's removal and its
        # insert; INVALID_ARGUMENT: a Step on a copy whose window rows an
        # extend left to recompute (the model's own refusal)
        ok_step = {"OK", "ABORTED", "NOT_FOUND", "INVALID_ARGUMENT"}
        ck.check(set(res["step"]) <= ok_step, f"Steps end OK or refused ({res['step']})")
        ck.check(set(res["ctx"]) <= {"OK"}, f"Appends and Opens all succeed ({res['ctx']})")
        ck.check(sum(res["step"].values()) == CALLS and sum(res["ctx"].values()) == CALLS, "every call answered")
        # bad Step fields named, not taken: max_seconds NaN (field 5, double)
        # read as "no time left", an all-zero RNG state drew zeros forever
        nan = bytes([5 << 3 | 1]) + struct.pack("<d", float("nan"))
        ck.check(call("Step", step + nan) == "INVALID_ARGUMENT", "a Step with max_seconds NaN is refused")
        zero = bytes([3 << 3 | 5]) + struct.pack("<f", 1.0) + f_bytes(4, bytes(32)) + f_int(5, 8)
        ck.check(call("Step", f_ids(1, [1]) + f_ids(2, [4]) + f_bytes(3, zero)) == "INVALID_ARGUMENT",
                 "a Step with an all-zero RNG state is refused")
        # a coordinator's Cancel ids die with its ownership: A cancels its
        # id 7 and leaves, B's own call 7 must run (the ring outlived A)
        ck.check(call("Ping", f_int(1, 0xA)) == "OK" and call("Cancel", f_int(1, 7)) == "OK" and
                 call("Ping", f_int(1, 0xA) + f_int(2, 1)) == "OK", "coordinator A: Cancel 7, then release")
        b = [call("Info", f_int(1, 0xB)), call("Open", f_int(1, 3)),
             call("Append", f_int(1, 3) + f_ids(3, [3] * 40) + f_int(6, 7))]
        ck.check(b == ["OK"] * 3, f"coordinator B's Append with cancel_id 7 runs (Info, Open, Append: {b})")
        fresh = [call("Open", f_int(1, 2)), call("Append", f_int(1, 2) + f_ids(3, [3] * 5)),
                 call("Step", f_ids(1, [2]) + f_ids(2, [4]) + f_bytes(3, sampler()))]
        ck.check(fresh == ["OK"] * 3, f"a fresh session computes afterwards (Open, Append, Step: {fresh})")
        ch.close()
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = "hung"
            ck.check(rc == 0, f"the worker exits 0 on SIGTERM (got {rc})")
        else:
            print(err_tail())
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
