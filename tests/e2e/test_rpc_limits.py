#!/usr/bin/python3
"""test_rpc_limits.py — the gRPC server's defences (daemon/rpc.c):
- an unknown method is answered UNIMPLEMENTED at once, also to a client
  that waits for the server before it sends (it waited for its deadline);
- past --grpc-max-pending-calls calls that have not sent their first
  message, a new call gets RESOURCE_EXHAUSTED at once (each holds a
  stream's buffers: a flood of them was memory without bound), and calls
  go through again once those are gone;
- a client that vanishes without closing its connection (a frozen
  process: SIGSTOP) is found by the server's keepalive pings
  (--grpc-keepalive): its Stream ends and the session it opened closes
  (it stayed open for gRPC's default 2 hours, holding a --max-sessions
  slot).
Nothing is timed: the waits poll observable state with generous bounds.
"""
import os
import signal
import subprocess
import threading

import grpc

from harness import Daemon, run, wait_for


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=5)
    with Daemon(env, "--grpc-max-pending-calls", "3", "--grpc-keepalive", "1", "--grpc-keepalive-timeout", "5",
                model=model) as d:
        ch = d.channel()
        # 1. unknown method, server-first client: UNIMPLEMENTED before it sends anything
        release = threading.Event()

        def wait_then_nothing():
            release.wait(30)
            return
            yield
        try:
            list(ch.stream_stream("/foo.Bar/Baz")(wait_then_nothing(), timeout=20))
            code = "OK"
        except grpc.RpcError as e:
            code, details = e.code().name, e.details()
        release.set()
        ck.equal(code, "UNIMPLEMENTED", "an unknown method is answered before the client sends")

        # 2. calls that send nothing, past the cap
        gates = [threading.Event() for _ in range(3)]
        calls = []

        def silent(g):
            g.wait(60)
            return
            yield
        stream = d.stub(ch).Stream
        for g in gates:
            calls.append(stream(silent(g), timeout=60))
        # the server sees them once their headers arrived: a probe call that
        # itself sends nothing is refused once 3 are pending
        def probe():
            g = threading.Event()
            c = stream(silent(g), timeout=10)
            try:
                next(c)
                return "OK"
            except grpc.RpcError as e:
                return e.code().name
            finally:
                g.set()
        ck.check(wait_for(lambda: probe() == "RESOURCE_EXHAUSTED", 30, "the cap"),
                 "past 3 calls that sent nothing, a new one gets RESOURCE_EXHAUSTED at once")
        for g in gates:
            g.set()
        for c in calls:
            try:
                list(c)
            except grpc.RpcError:
                pass
        info = d.stub(ch).ServerInfo(pb.ServerInfoRequest(), timeout=30)
        ck.check(info is not None, "once they are gone, calls go through again")

        # 3. a frozen client: found by the keepalive pings, its session closed
        code = f"""
import sys, queue, grpc
sys.path.insert(0, {os.path.dirname(env.pb.__file__)!r})
import tconst_pb2 as pb, tconst_pb2_grpc as pbg
q = queue.Queue()
q.put(pb.StreamRequest(token_ids=[5, 6, 7, 8]))
it = pbg.TConstStub(grpc.insecure_channel({d.grpc_addr!r})).Stream(iter(q.get, None))
print(next(it).appended.session_id, flush=True)
q.get()  # never: the stream stays open
"""
        cl = subprocess.Popen(["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE, text=True)
        sid = cl.stdout.readline().strip()
        ck.check(sid != "", f"a client opened a Stream and its session ({sid})")
        ck.equal(d.metric("tconst_sessions_active"), 1.0, "its session is open")
        os.kill(cl.pid, signal.SIGSTOP)
        ck.check(wait_for(lambda: d.metric("tconst_sessions_active") == 0.0, 60, "the frozen client's session closing"),
                 "the frozen client is found by the server's pings: its Stream ends, its session closes",
                 d.metric("tconst_sessions_active"))
        cl.kill()
        cl.wait()


if __name__ == "__main__":
    run("e2e rpc_limits", body)
