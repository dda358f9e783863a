"""harness.py — the e2e harness for tconstd: a real gRPC client (Debian's
python3-grpcio) against a real daemon. Stdlib + grpc + protobuf only; no
pytest. Not a test itself.

Each test script is run as
    /usr/bin/python3 test_x.py TCONSTD TCONST SOURCE_DIR
(CMake passes the three; environment TCONSTD, TCONST, TC_SOURCE_DIR work
too). `Env` generates the Python stubs from proto/*.proto into a private
temp directory (never checked in), makes model directories with
`tconst init-model` and runs `tconst generate` for expected outputs.
`Daemon` starts tconstd on port 0, waits for its ready line (with a
timeout, never a sleep), and stops it. `Checker` prints each check and
makes the script exit nonzero if any failed.

Synchronization is always "wait for an event, with a timeout": the ready
line, a stream message, a metric value (`wait_for` polls a predicate).
No check asserts on time.
"""
import http.client
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import grpc

START_TIMEOUT = 60.0   # daemon start-up (load + warm-up)
STOP_TIMEOUT = 60.0    # daemon exit after SIGTERM
RPC_TIMEOUT = 60.0     # default deadline of a unary call


class Checker:
    """Records named checks; exits nonzero at the end if one failed."""

    def __init__(self, name):
        self.name = name
        self.n_ok = 0
        self.failures = []
        self.t0 = time.monotonic()

    def check(self, cond, what, detail=""):
        if cond:
            self.n_ok += 1
            print(f"ok   {what}", flush=True)
        else:
            self.failures.append(what)
            print(f"FAIL {what}" + (f": {detail}" if detail else ""), flush=True)
        return bool(cond)

    def equal(self, got, want, what):
        return self.check(got == want, what, f"got {short(got)}, want {short(want)}")

    def rpc_error(self, fn, code, what, needle=None):
        """fn() must raise grpc.RpcError with `code` (and `needle` in its
        message). Returns the error (or None)."""
        try:
            r = fn()
            if hasattr(r, "__iter__") and not isinstance(r, (bytes, str)) and not hasattr(r, "ListFields"):
                for _ in r:  # a stream: the error comes while reading
                    pass
        except grpc.RpcError as e:
            msg = e.details() or ""
            ok = e.code() == code and (needle is None or needle in msg)
            self.check(ok, f"{what} -> {code.name}" + (f" naming '{needle}'" if needle else ""),
                       f"got {e.code().name}: {msg!r}")
            return e
        self.check(False, f"{what} -> {code.name}", "no error")
        return None

    def finish(self):
        dt = time.monotonic() - self.t0
        if self.failures:
            print(f"{self.name}: {len(self.failures)} FAILED of {self.n_ok + len(self.failures)} checks "
                  f"({dt:.1f} s):", flush=True)
            for f in self.failures:
                print(f"  - {f}", flush=True)
            return 1
        print(f"{self.name}: all {self.n_ok} checks passed ({dt:.1f} s)", flush=True)
        return 0


def short(v, n=200):
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."


def wait_for(pred, timeout, what, interval=0.02):
    """Polls pred() until it returns a truthy value or timeout expires.
    Returns the value, or None on timeout (the caller checks it)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            print(f"     (timed out after {timeout:.0f} s waiting for {what})", flush=True)
            return None
        time.sleep(interval)


def free_port():
    """A port that was free a moment ago (only for the start-up test, which
    cannot read the ports from the ready line)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Env:
    """Paths, generated stubs, models and the CLI reference."""

    def __init__(self, argv=None):
        argv = sys.argv[1:] if argv is None else argv
        self.tconstd = os.path.abspath(argv[0] if len(argv) > 0 else os.environ["TCONSTD"])
        self.tconst = os.path.abspath(argv[1] if len(argv) > 1 else os.environ["TCONST"])
        src = argv[2] if len(argv) > 2 else os.environ.get("TC_SOURCE_DIR")
        if not src:
            src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
        self.src = os.path.abspath(src)
        self.tmp = tempfile.mkdtemp(prefix="tconst-e2e-")
        self.models = {}
        self._gen_stubs()

    def _gen_stubs(self):
        # TC_E2E_STUBS: a folder of stubs generated beforehand (a GPU machine
        # with grpcio but no protoc: scripts/gpu-bundle.sh)
        out = os.environ.get("TC_E2E_STUBS")
        if not out:
            out = os.path.join(self.tmp, "stubs")
            os.makedirs(out)
            proto = os.path.join(self.src, "proto")
            files = sorted(os.path.join(proto, f) for f in os.listdir(proto) if f.endswith(".proto"))
            subprocess.run(["protoc", f"--python_out={out}", f"--grpc_python_out={out}",
                            "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin", "-I", proto] + files,
                           check=True)
        sys.path.insert(0, out)
        import tconst_pb2, tconst_pb2_grpc, health_pb2, health_pb2_grpc, reflection_pb2, reflection_pb2_grpc
        self.pb, self.pb_grpc = tconst_pb2, tconst_pb2_grpc
        self.health_pb, self.health_grpc = health_pb2, health_pb2_grpc
        self.refl_pb, self.refl_grpc = reflection_pb2, reflection_pb2_grpc

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def model(self, arch="tconstformer", seed=11, wide_zip=False):
        """A tiny model directory of `arch` (made once per Env). wide_zip:
        a 2048-token zip (W_og 32), so a sync's attentions cost 64x more
        per history token while its memory (O(N d)) stays small: long
        prefills and syncs of seconds, for the tests that cancel or
        overlap them."""
        key = (arch, seed, wide_zip)
        if key not in self.models:
            d = os.path.join(self.tmp, f"model-{arch}-{seed}{'-wide-zip' if wide_zip else ''}")
            wide = ["--history-window", "2048", "--generate-window", "32"] if wide_zip else []
            subprocess.run([self.tconst, "init-model", "--arch", arch, "--preset", "tiny", "--seed", str(seed),
                            *wide, "--out", d], check=True, stdout=subprocess.DEVNULL)
            self.models[key] = d
        return self.models[key]

    def gpt2_model(self, seed):
        """A tiny tconstformer on the GPT-2 vocabulary (text in and out):
        TC_GPT2_DIR names the vocabulary (the tokenizer.fetch_gpt2
        fixture); the test stops with an error without it."""
        gpt2 = os.environ.get("TC_GPT2_DIR", "")
        if not os.path.isfile(os.path.join(gpt2, "encoder.json")):
            raise SystemExit(f"TC_GPT2_DIR={gpt2!r}: no GPT-2 vocabulary (tokenizer.fetch_gpt2 makes it)")
        d = os.path.join(self.tmp, f"model-gpt2-{seed}")
        if not os.path.isdir(d):
            subprocess.run([self.tconst, "init-model", "--arch", "tconstformer", "--preset", "tiny", "--seed", str(seed),
                            "--vocab", gpt2, "--out", d], check=True, stdout=subprocess.DEVNULL)
        return d

    def generate(self, model, tokens, n, temperature=None, top_k=None, top_p=None, seed=None, ignore_eos=False):
        """`tconst generate`: the reference ids."""
        cmd = [self.tconst, "generate", "--model", model, "--tokens", " ".join(map(str, tokens)), "-n", str(n)]
        if temperature is not None:
            cmd += ["--temperature", repr(float(temperature))]
        if top_k is not None:
            cmd += ["--top-k", str(top_k)]
        if top_p is not None:
            cmd += ["--top-p", repr(float(top_p))]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        if ignore_eos:
            cmd.append("--ignore-eos")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout
        return [int(x) for x in out.split()]

    def sampling(self, temperature=None, top_k=None, top_p=None, seed=None, max_tokens=None, ignore_eos=False,
                 stop_token_ids=()):
        sp = self.pb.SamplingParams(ignore_eos=ignore_eos, stop_token_ids=list(stop_token_ids))
        if temperature is not None:
            sp.temperature = temperature
        if top_k is not None:
            sp.top_k = top_k
        if top_p is not None:
            sp.top_p = top_p
        if seed is not None:
            sp.seed = seed
        if max_tokens is not None:
            sp.max_tokens = max_tokens
        return sp


class Streams:
    """Generate calls on `stub`, one thread each (`reqs`: GenerateRequests).
    With pause_at, each stream stops reading after that many tokens until
    resume() (wait_paused() tells when all got there; a stream that ends
    before counts as there). got[k]: the token ids; errors[k]: the
    exception a stream ended with, or None."""

    def __init__(self, stub, reqs, pause_at=None, timeout=240):
        self.got = [[] for _ in reqs]
        self.errors = [None] * len(reqs)
        self.paused = [threading.Event() for _ in reqs]
        self.go = threading.Event()
        if pause_at is None:
            self.go.set()

        def reader(k):
            try:
                for r in stub.Generate(reqs[k], timeout=timeout):
                    self.got[k] += r.token_ids
                    if len(self.got[k]) >= (pause_at or 0) and not self.go.is_set():
                        self.paused[k].set()
                        self.go.wait(120)
            except Exception as e:  # grpc.RpcError: the caller checks errors
                self.errors[k] = e
            self.paused[k].set()

        self.threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(len(reqs))]
        for t in self.threads:
            t.start()

    def wait_paused(self, timeout=120):
        return all(p.wait(timeout) for p in self.paused)

    def resume(self):
        self.go.set()

    def join(self, timeout=300):
        """True when every stream ended."""
        for t in self.threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self.threads)


class Daemon:
    """tconstd as a context manager. By default listens on port 0 and reads
    the ports from its ready line. `wait_ready=False` returns right after
    spawning (the caller finds the ports itself)."""

    READY = "tconstd "

    def __init__(self, env, *args, model=None, grpc_port=0, http_port=0, wait_ready=True, preexec=None,
                 env_vars=None):
        self.env = env
        self.env_vars = dict(env_vars or {})  # set in tconstd's environment (test-only TC_FAULT_* knobs)
        self.preexec = preexec  # run in the child before exec (resource limits)
        self.args = list(args)
        if model:
            self.args += ["--model", model]
        self.grpc_port, self.http_port = grpc_port, http_port
        self.wait_ready = wait_ready
        self.proc = None
        self.lines = queue.Queue()
        self.ready_line = None
        self.channels = []
        self.log_path = None

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, et, ev, tb):
        for ch in self.channels:
            ch.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print("daemon did not exit after SIGTERM; killing it", flush=True)
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else 0
        if et is not None or rc != 0:
            if rc != 0:
                print(f"tconstd exited with status {rc}", flush=True)
            self.dump_log()
        return False

    def start(self):
        self.log_path = os.path.join(self.env.tmp, f"tconstd-{time.monotonic_ns()}.log")
        self.log = open(self.log_path, "wb")
        # TC_E2E_DAEMON_ARGS: the same test against another worker layout
        # (ctest registers e2e_both_* with --worker-mode both, ...)
        extra = shlex.split(os.environ.get("TC_E2E_DAEMON_ARGS", ""))
        # TC_E2E_DEVICE=cuda:0: spawned workers on that GPU (scripts/gpu-check.sh);
        # else the CPU (tconstd's default, auto, would take a GPU the host
        # has); the in-process layout and attached workers (--workers) stay
        # as they are
        if "inprocess" not in extra + self.args and "--workers" not in extra + self.args:
            extra += ["--device", os.environ.get("TC_E2E_DEVICE") or "cpu"]
        cmd = [self.env.tconstd, "--listen", f"127.0.0.1:{self.grpc_port}",
               "--http-listen", f"127.0.0.1:{self.http_port}"] + extra + self.args
        envv = dict(os.environ, TMPDIR=self.env.tmp, **self.env_vars)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=envv, preexec_fn=self.preexec)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        if self.wait_ready:
            self.wait_ready_line(START_TIMEOUT)

    def _read_stdout(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_ready_line(self, timeout):
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                self.dump_log()
                raise RuntimeError(f"tconstd: no ready line within {timeout:.0f} s")
            if line is None:
                self.proc.wait()
                self.dump_log()
                raise RuntimeError(f"tconstd exited ({self.proc.returncode}) before its ready line")
            if line.startswith(self.READY) and " ready: " in line:
                # tconstd 0.1.0 ready: grpc 127.0.0.1:PORT http 127.0.0.1:PORT model ...
                w = line.split()
                self.grpc_port = int(w[w.index("grpc") + 1].rsplit(":", 1)[1])
                self.http_port = int(w[w.index("http") + 1].rsplit(":", 1)[1])
                self.model_dir = w[w.index("model") + 1]
                self.ready_line = line
                return line

    def dump_log(self, n=40):
        try:
            self.log.flush()
            with open(self.log_path, "rb") as f:
                tail = f.read().decode(errors="replace").splitlines()[-n:]
            print("---- tconstd log (tail) ----\n" + "\n".join(tail) + "\n----", flush=True)
        except Exception:
            pass

    # ---- lifecycle ----
    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # ---- clients ----
    @property
    def grpc_addr(self):
        return f"127.0.0.1:{self.grpc_port}"

    def channel(self, **opts):
        ch = grpc.insecure_channel(self.grpc_addr, options=list(opts.items()))
        self.channels.append(ch)
        return ch

    def stub(self, ch=None):
        return self.env.pb_grpc.TConstStub(ch or self.channel())

    def health(self, ch=None):
        return self.env.health_grpc.HealthStub(ch or self.channel())

    def http(self, path, timeout=10.0, headers=False):
        """(status, body text[, headers]) of GET path on the ops port."""
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            res = (r.status, r.read().decode(errors="replace"))
            return res + (dict(r.getheaders()),) if headers else res
        finally:
            c.close()

    def metrics(self):
        """/metrics parsed by prometheus_client: {(sample, labels): value}."""
        from prometheus_client.parser import text_string_to_metric_families
        st, body = self.http("/metrics")
        if st != 200:
            raise RuntimeError(f"/metrics: HTTP {st}")
        vals = {}
        for fam in text_string_to_metric_families(body):
            for s in fam.samples:
                vals[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return vals

    def metric(self, name, **labels):
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def openai_port(self):
        """The port of --openai-listen, from the ready line."""
        w = self.ready_line.split()
        return int(w[w.index("openai") + 1].rsplit(":", 1)[1])

    # ---- convenience ----
    def generate_ids(self, stub, tokens, sampling, timeout=RPC_TIMEOUT, **kw):
        """Streams one Generate; returns (ids, last response). The ids per
        message stay in self.msg_sizes."""
        ids, last, self.msg_sizes = [], None, []
        for r in stub.Generate(self.env.pb.GenerateRequest(token_ids=tokens, sampling=sampling, **kw),
                               timeout=timeout):
            ids.extend(r.token_ids)
            self.msg_sizes.append(len(r.token_ids))
            last = r
        return ids, last


def run(name, body):
    """Runs body(env, checker) and exits with its verdict; cleans up."""
    env = None
    ck = Checker(name)
    try:
        env = Env()
        body(env, ck)
    except Exception:
        traceback.print_exc()
        ck.failures.append("unexpected exception (above)")
    finally:
        if env:
            env.cleanup()
    sys.exit(ck.finish())
