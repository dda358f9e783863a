"""hardening.py — what the overload and slow-reader tests share: start
tconstd (built-in tiny model, free ports) and stop it checking it exits 0,
and the few tconst.v1 messages they use, encoded and decoded by hand (so
the tests need only python3-grpcio, no generated code)."""
import queue
import signal
import subprocess
import threading
import time

import grpc

SVC = "/tconst.v1.TConst/"


# ---- protobuf, by hand: varints and length-delimited fields ----
def _varint(v):
    v &= (1 << 64) - 1
    out = b""
    while True:
        b, v = v & 0x7F, v >> 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def f_int(n, v):
    return _varint(n << 3) + _varint(v)


def f_bytes(n, b):
    b = b.encode() if isinstance(b, str) else b
    return _varint(n << 3 | 2) + _varint(len(b)) + b


def f_ids(n, ids):
    return f_bytes(n, b"".join(_varint(i) for i in ids))


def sampling(max_tokens, ignore_eos=True):
    return f_int(5, max_tokens) + (f_int(8, 1) if ignore_eos else b"")


def decode(buf):
    """{field: [values]}: ints for varints, bytes for length-delimited."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        n, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(buf, i)
        elif wt == 2:
            ln, i = _read_varint(buf, i)
            v, i = buf[i:i + ln], i + ln
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.setdefault(n, []).append(v)
    return out


def _read_varint(b, i):
    v, s = 0, 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if not c & 0x80:
            return v, i


def ids_of(field_values):
    """packed repeated int32 -> list"""
    out = []
    for blob in field_values:
        i = 0
        while i < len(blob):
            v, i = _read_varint(blob, i)
            out.append(v)
    return out


def generation(msg):
    """GenerateResponse bytes -> (n ids, finish_reason)"""
    d = decode(msg)
    return len(ids_of(d.get(2, []))), d.get(4, [0])[0]


# ---- the daemon ----
class Daemon:
    def __init__(self, tconstd, *flags):
        self.p = subprocess.Popen([tconstd, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                   "--log-level", "warn", "--device", "cpu", *flags],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in self.p.stdout], daemon=True).start()
        end = time.monotonic() + 120
        self.addr = None
        while time.monotonic() < end and self.addr is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if " ready: grpc " in line:
                self.addr = line.split(" ready: grpc ")[1].split()[0]
        if self.addr is None:
            self.p.kill()
            raise RuntimeError("tconstd: no ready line within 120 s")
        self.ch = grpc.insecure_channel(self.addr)

    def channel(self):
        return grpc.insecure_channel(self.addr)

    def unary(self, method, req, timeout=60, ch=None):
        return (ch or self.ch).unary_unary(SVC + method, request_serializer=None,
                                           response_deserializer=None)(req, timeout=timeout)

    def stream(self, method, req, timeout=60, ch=None):
        return (ch or self.ch).unary_stream(SVC + method, request_serializer=None,
                                            response_deserializer=None)(req, timeout=timeout)

    def generate(self, ids, max_tokens, timeout=120, ch=None):
        """-> number of generated ids (raises grpc.RpcError)"""
        n = 0
        for m in self.stream("Generate", f_ids(3, ids) + f_bytes(4, sampling(max_tokens)), timeout, ch):
            n += generation(m)[0]
        return n

    def stop(self):
        self.ch.close()
        self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(120)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return -9


class Checker:
    def __init__(self, name):
        self.name, self.failed, self.n = name, 0, 0

    def check(self, ok, what):
        self.n += 1
        self.failed += not ok
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        return ok

    def done(self):
        print(f"{self.name}: {self.n - self.failed} of {self.n} checks passed", flush=True)
        return 1 if self.failed else 0


def code_of(fn):
    """runs fn; -> (grpc.StatusCode, seconds)"""
    t0 = time.monotonic()
    try:
        fn()
        return grpc.StatusCode.OK, time.monotonic() - t0
    except grpc.RpcError as e:
        return e.code(), time.monotonic() - t0


def wait_for(pred, timeout, interval=0.02):
    """Polls pred() until it returns a truthy value (returned) or timeout
    seconds pass (None: the caller checks it)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v or None
        time.sleep(interval)


def run(name, body, tconstd, *flags):
    """Starts tconstd with flags, runs body(daemon, checker), stops the
    daemon (it must exit 0 on SIGTERM); -> the process exit code."""
    ck = Checker(name)
    d = Daemon(tconstd, *flags)
    try:
        body(d, ck)
    finally:
        rc = d.stop()
    ck.check(rc == 0, f"tconstd exits 0 on SIGTERM (got {rc})")
    return ck.done()
