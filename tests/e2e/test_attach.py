#!/usr/bin/python3
"""test_attach.py — tconstd attached to workers started elsewhere
(--workers, as on Kubernetes):
  - a context and a generation worker started by the test serve a seeded
    generation equal to `tconst generate`;
  - a start waiting for a killed worker to come back stops when its
    request's deadline passes (not after the recovery budget);
  - two pairs: sessions are spread over them (least-loaded placement) and
    six concurrent seeded streams are exact;
  - a stopped (SIGSTOP) generation worker is detected: a request fails with
    UNAVAILABLE (tconstd cannot restart what it did not start) instead of
    hanging, and with no live pair /readyz is 503 and Health NOT_SERVING;
    a new request then waits for a pair to be back (until its deadline,
    or UNAVAILABLE past the recovery budget), and one waiting when the
    worker is SIGCONTed is served, token for token; after SIGCONT the
    worker answers again, the daemon is ready again and requests succeed,
    token for token;
  - two pairs sync at the same time: with one pair's context worker
    stopped (SIGSTOP) in the middle of a sync, a session on the other pair
    goes on syncing and finishes its generation, exact, while the first
    waits; after SIGCONT the first finishes too, exact;
  - two pairs step apart: with one pair's generation worker stopped under
    a running generation, a session on the other pair streams its whole
    generation, exact, while the first waits; after SIGCONT the first
    finishes, exact;
  - a generation worker replaced on the same address (kill -9, a new
    process): the session's copy is rebuilt and its generation is exact;
    replaced by one serving other weights of the same architecture, it is
    not taken back (down, the log names the weights) until the right model
    is back on the address, and then the session is exact;
  - one coordinator per worker: a second live coordinator is refused
    ("is not free"); one killed with -9 leaves session copies behind, which
    the next coordinator drops when it takes over (after --orphan-timeout
    of silence); a clean exit releases the workers at once;
  - bad worker lists are start-up errors naming the problem: an address
    nobody answers on, an unpaired context worker, a worker serving another
    model, or other weights of the same architecture.
"""
import os
import signal
import subprocess
import threading

import grpc

from harness import Daemon, run, wait_for


class Worker:
    def __init__(self, env, role, model, *extra, listen="127.0.0.1:0"):
        worker = os.path.join(os.path.dirname(env.tconstd), "worker", "tconst-worker")
        dev = ["--device", os.environ["TC_E2E_DEVICE"]] if os.environ.get("TC_E2E_DEVICE") else []
        self.p = subprocess.Popen([worker, "--role", role, "--listen", listen, "--model", model] + dev + [
                                   "--log-level", "warn", *extra], stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if " ready: " not in line:
            raise RuntimeError(f"tconst-worker --role {role} did not start: {line!r}")
        self.addr = line.split(" control ")[1].split()[0]

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)
            self.p.terminate()
            self.p.wait(30)


def stream_ids(pb, stub, sid, sampling, timeout):
    """A GenerateInSession's ids, or its error as 'CODE: details'."""
    ids = []
    try:
        for r in stub.GenerateInSession(pb.GenerateInSessionRequest(session_id=sid, sampling=sampling),
                                        timeout=timeout):
            ids += r.token_ids
    except grpc.RpcError as e:
        return f"{e.code().name}: {e.details()}"
    return ids


def body(env, ck):
    pb = env.pb
    model = env.model("tconstformer", seed=8)
    other = env.model("tlinformer", seed=8)
    reseeded = env.model("tconstformer", seed=9)  # the same config.json, other weights
    prompt = [(i * 13) % 500 + 2 for i in range(45)]
    samp = dict(temperature=0.7, top_k=20, seed=42)
    want = env.generate(model, prompt, 150, ignore_eos=True, **samp)
    ws = [Worker(env, "context", model), Worker(env, "generation", model)]
    try:
        with Daemon(env, "--workers", f"{ws[0].addr},{ws[1].addr}", "--worker-timeout", "5", model=model) as d:
            s = d.stub()

            def gen():
                ids = []
                for r in s.Generate(pb.GenerateRequest(token_ids=prompt, sampling=env.sampling(
                        max_tokens=150, ignore_eos=True, **samp)), timeout=120):
                    ids += r.token_ids
                return ids

            ck.equal(gen(), want, "attached workers: seeded generation == tconst generate")
            ck.equal(d.metric("tconst_workers_up"), 2.0, "tconst_workers_up is 2")
            os.kill(ws[1].p.pid, signal.SIGSTOP)
            ck.rpc_error(gen, grpc.StatusCode.UNAVAILABLE, "a stopped generation worker: the request",
                         needle="unavailable")
            up = wait_for(lambda: d.metric("tconst_workers_up") == 1.0, 30, "the worker marked down")
            ck.check(up, "tconst_workers_up drops to 1")
            # no pair can serve: not ready (/readyz, Health, tconst_ready)
            # until one is back, so a load balancer sends work elsewhere
            hp = env.health_pb
            health = lambda: d.health().Check(hp.HealthCheckRequest(service=""), timeout=10).status
            ck.check(wait_for(lambda: d.http("/readyz")[0] == 503, 30, "/readyz 503"),
                     "no live worker pair: /readyz is 503")
            ck.equal(health(), hp.HealthCheckResponse.NOT_SERVING, "no live worker pair: Health is NOT_SERVING")
            ck.equal(d.metric("tconst_ready"), 0.0, "no live worker pair: tconst_ready is 0")
            info = lambda: sorted((w.role, w.address, w.ready) for w in s.ServerInfo(pb.ServerInfoRequest(),
                                                                                         timeout=30).workers)
            ck.equal(info(), sorted([("context", ws[0].addr, True), ("generation", ws[1].addr, False)]),
                     "ServerInfo lists both workers, the stopped one not ready")
            ck.equal(list(s.ServerInfo(pb.ServerInfoRequest(), timeout=30).backends), ["cpu"] if not
                     os.environ.get("TC_E2E_DEVICE", "").startswith("cuda") else ["cuda"], "ServerInfo's backends")
            # a new session waits for a pair to be back (as a placed one
            # waits for its own): until its deadline, or past the recovery
            # budget (2 x --worker-timeout) UNAVAILABLE naming the placement
            ck.rpc_error(lambda: list(s.Generate(pb.GenerateRequest(token_ids=prompt, sampling=env.sampling(
                max_tokens=5)), timeout=2)), grpc.StatusCode.DEADLINE_EXCEEDED,
                "no live worker pair: a new request with a 2 s deadline waits for a pair, until its deadline")
            ck.rpc_error(gen, grpc.StatusCode.UNAVAILABLE, "no live worker pair: a new request, past the recovery "
                         "budget (not INTERNAL 'out of memory')", needle="no worker to place")
            # sent now and the pair back meanwhile: served, exact
            waits = lambda: open(d.log_path, "rb").read().decode(errors="replace").count("a new session waits for one")
            n_waits, late = waits(), {}

            def late_gen():
                try:
                    late["ids"] = gen()
                except grpc.RpcError as ex:
                    late["ids"] = f"{ex.code().name}: {ex.details()}"
            th = threading.Thread(target=late_gen)
            th.start()
            ck.check(wait_for(lambda: waits() > n_waits, 30, "the request waiting"),
                     "no live worker pair: a new request waits for one (tconstd's log says so)")
            os.kill(ws[1].p.pid, signal.SIGCONT)
            th.join(120)
            ck.equal(late.get("ids"), want, "a new request sent while no pair was live, the pair back meanwhile: "
                                            "served, == tconst generate")
            back = wait_for(lambda: d.metric("tconst_workers_up") == 2.0, 30, "the worker back")
            ck.check(back, "after SIGCONT the worker is up again")
            ck.check(wait_for(lambda: d.http("/readyz")[0] == 200, 30, "/readyz 200"),
                     "the pair back: /readyz is 200 again")
            ck.equal(health(), hp.HealthCheckResponse.SERVING, "the pair back: Health is SERVING")
            ck.equal([r for _, _, r in info()], [True, True], "ServerInfo: both workers ready again")
            ck.equal(gen(), want, "after it came back: the same generation, token for token")
            ck.equal(d.metric("tconst_worker_restarts_total"), 0.0, "tconstd restarted nothing it did not start")
            # the generation worker replaced on the same address (a pod
            # restarted by its orchestrator): gRPC reconnects before a ping
            # sees the new boot id; the session's copy must be rebuilt, not
            # reported lost (the worker answers NOT_FOUND for it)
            for trial in range(3):
                sid = s.OpenSession(pb.OpenSessionRequest(token_ids=prompt), timeout=30).session_id
                ws[1].p.kill()
                ws[1].p.wait(30)
                ws[1] = Worker(env, "generation", model, listen=ws[1].addr)
                ids = stream_ids(pb, s, sid, env.sampling(max_tokens=150, ignore_eos=True, **samp), 120)
                ck.equal(ids, want, f"generation worker replaced on its address ({trial + 1}/3): the session is "
                                    "rebuilt, its generation == tconst generate")
                s.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=30)
            # replaced by a worker serving other weights of the same
            # architecture (a botched rolling upgrade): not taken back --
            # the sessions rebuilt on it would go on with another model,
            # without an error -- until the right model is back
            sid = s.OpenSession(pb.OpenSessionRequest(token_ids=prompt), timeout=30).session_id
            ws[1].p.kill()
            ws[1].p.wait(30)
            ws[1] = Worker(env, "generation", reseeded, listen=ws[1].addr)
            refused = wait_for(lambda: "not taken back" in open(d.log_path, "rb").read().decode(errors="replace"),
                               30, "the refusal in tconstd's log")
            log = open(d.log_path, "rb").read().decode(errors="replace")
            ck.check(refused and "different weights" in log, "a worker back with other weights: not taken back, "
                     "the log names the weights", [l for l in log.splitlines() if "not taken back" in l][-1:])
            ck.check(wait_for(lambda: d.metric("tconst_workers_up") == 1.0, 30, "the worker down"),
                     "a worker back with other weights: it counts as down")
            ck.equal(info(), sorted([("context", ws[0].addr, True), ("generation", ws[1].addr, False)]),
                     "a worker back with other weights: ServerInfo shows it not ready")
            ck.rpc_error(gen, grpc.StatusCode.UNAVAILABLE, "a worker back with other weights: a new request",
                         needle="no worker to place")
            ws[1].p.kill()
            ws[1].p.wait(30)
            ws[1] = Worker(env, "generation", model, listen=ws[1].addr)
            ck.check(wait_for(lambda: d.metric("tconst_workers_up") == 2.0, 30, "the right worker back"),
                     "the right model back on the address: the worker is up again")
            ids = stream_ids(pb, s, sid, env.sampling(max_tokens=150, ignore_eos=True, **samp), 120)
            ck.equal(ids, want, "the right model back: the session opened before is rebuilt, its generation == "
                                "tconst generate")
    finally:
        for w in ws:
            w.stop()

    # an Append that fails (both workers gone) leaves nothing in the
    # journal: after a coordinator restart the session holds only what was
    # acknowledged (it used to come back with the failed tokens too)
    import tempfile
    data = tempfile.mkdtemp(dir=env.tmp)
    jargs = ["--worker-timeout", "3", "--worker-start-timeout", "30", "--data-dir", data]
    ws = [Worker(env, "context", model), Worker(env, "generation", model)]
    try:
        with Daemon(env, "--workers", f"{ws[0].addr},{ws[1].addr}", *jargs, model=model) as d:
            s = d.stub()
            s.OpenSession(pb.OpenSessionRequest(session_id="j", token_ids=prompt), timeout=30)
            for w in ws:
                w.p.kill()
                w.p.wait(30)
            ck.rpc_error(lambda: s.Append(pb.AppendRequest(session_id="j", token_ids=[7, 8, 9, 10, 11]), timeout=100),
                         grpc.StatusCode.UNAVAILABLE, "an Append with both workers gone", "unavailable")
            d.proc.kill()
            d.proc.wait(30)
        ws = [Worker(env, "context", model), Worker(env, "generation", model)]
        with Daemon(env, "--workers", f"{ws[0].addr},{ws[1].addr}", *jargs, model=model) as d:
            n = d.stub().GetSession(pb.GetSessionRequest(session_id="j"), timeout=30).length
            ck.equal(n, len(prompt), "after a coordinator restart the session holds what was acknowledged, "
                                     "not the failed Append")
    finally:
        for w in ws:
            w.stop()

    # a start waiting for a dead worker to come back ends with its
    # request: an Append whose deadline passes while the coordinator waits
    # for the killed generation worker (up to 2 x --worker-timeout = 60 s)
    # leaves at once, its session free again, instead of waiting that out
    ws = [Worker(env, "context", model), Worker(env, "generation", model)]
    try:
        with Daemon(env, "--workers", f"{ws[0].addr},{ws[1].addr}", "--worker-timeout", "30", model=model) as d:
            s = d.stub()
            sid = s.OpenSession(pb.OpenSessionRequest(token_ids=prompt[:20]), timeout=30).session_id
            ws[1].p.kill()
            ws[1].p.wait(30)
            ck.rpc_error(lambda: s.Append(pb.AppendRequest(session_id=sid, token_ids=[4, 5]), timeout=2),
                         grpc.StatusCode.DEADLINE_EXCEEDED, "an Append while the generation worker is dead")
            ck.check(wait_for(lambda: d.metric("tconst_requests_running") == 0 and not
                              s.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10).busy, 20,
                              "the cancelled Append ends"),
                     "the Append past its deadline stops waiting for the worker (not after the 60 s budget)")
    finally:
        for w in ws:
            w.stop()

    # two pairs: sessions spread over both generation workers, every stream exact
    pairs = [Worker(env, r, model) for r in ("context", "generation", "context", "generation")]
    try:
        with Daemon(env, "--workers", ",".join(w.addr for w in pairs), model=model) as d:
            s = d.stub()
            prompts = [[(i * 17 + k) % 500 + 2 for i in range(20 + 9 * k)] for k in range(6)]
            wants = [env.generate(model, p, 120, ignore_eos=True, temperature=0.8, seed=k) for k, p in enumerate(prompts)]
            got = [None] * len(prompts)
            sids = []
            for k, p in enumerate(prompts):
                sids.append(s.OpenSession(pb.OpenSessionRequest(token_ids=p), timeout=30).session_id)

            def one(k):
                ids = []
                for r in s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sids[k], sampling=env.sampling(
                        max_tokens=120, ignore_eos=True, temperature=0.8, seed=k)), timeout=120):
                    ids += r.token_ids
                got[k] = ids

            th = [threading.Thread(target=one, args=(k,)) for k in range(len(prompts))]
            for t in th:
                t.start()
            for t in th:
                t.join(180)
            ck.equal(got, wants, "two worker pairs: 6 concurrent seeded sessions == tconst generate each")
            import worker_pb2, worker_pb2_grpc  # generated by the harness from proto/worker.proto
            counts = []
            for w in pairs[1::2]:
                with grpc.insecure_channel(w.addr) as ch:
                    counts.append(worker_pb2_grpc.WorkerStub(ch).Info(worker_pb2.InfoRequest(), timeout=10).sessions)
            ck.equal(sorted(counts), [3, 3], "sessions are placed on both pairs, 3 and 3 (least loaded first)")
    finally:
        for w in pairs:
            w.stop()

    # two pairs sync at the same time: pair 0's context worker stopped in
    # the middle of session A's sync does not hold up session B's syncs on
    # pair 1 (the coordinator gives each pair its own sync thread)
    import worker_pb2, worker_pb2_grpc  # generated by the harness from proto/worker.proto
    pairs = [Worker(env, r, model) for r in ("context", "generation", "context", "generation")]

    def gen_sessions():
        out = []
        for w in pairs[1::2]:
            with grpc.insecure_channel(w.addr) as ch:
                out.append(worker_pb2_grpc.WorkerStub(ch).Info(worker_pb2.InfoRequest(), timeout=10).sessions)
        return out
    try:
        with Daemon(env, "--workers", ",".join(w.addr for w in pairs), "--worker-timeout", "120", model=model) as d:
            s = d.stub()
            W = 32
            # A's next fed token completes a window: it syncs (1056 tokens,
            # over --sync-inline-max: on its context worker) after 2 ids;
            # B's first boundary is 31 steps away
            pa = [(i * 29) % 500 + 2 for i in range(33 * W - 1)]
            pb_ = [(i * 31) % 500 + 2 for i in range(30 * W + 1)]
            sa = s.OpenSession(pb.OpenSessionRequest(token_ids=pa), timeout=60).session_id
            ck.equal(gen_sessions(), [1, 0], "session A is on pair 0 (least loaded, lowest index)")
            sb = s.OpenSession(pb.OpenSessionRequest(token_ids=pb_), timeout=60).session_id
            ck.equal(gen_sessions(), [1, 1], "session B is on pair 1")
            samp2 = dict(temperature=0.8, top_k=30, seed=5)
            want_a = env.generate(model, pa, 40, ignore_eos=True, **samp2)
            want_b = env.generate(model, pb_, 100, ignore_eos=True, **samp2)
            os.kill(pairs[0].p.pid, signal.SIGSTOP)
            got_a, a_two, a_done = [], threading.Event(), threading.Event()

            def run_a():
                try:
                    for r in s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sa, sampling=env.sampling(
                            max_tokens=40, ignore_eos=True, **samp2)), timeout=300):
                        got_a.extend(r.token_ids)
                        if len(got_a) >= 2:
                            a_two.set()
                finally:
                    a_two.set()
                    a_done.set()
            ta = threading.Thread(target=run_a)
            ta.start()
            ck.check(a_two.wait(60) and len(got_a) == 2, "session A streams 2 ids, then waits at its boundary",
                     f"{len(got_a)} ids")
            got_b = []
            for r in s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sb, sampling=env.sampling(
                    max_tokens=100, ignore_eos=True, **samp2)), timeout=300):
                got_b += r.token_ids
            ck.check(not a_done.is_set(), "session B finished while A still waits on the stopped context worker")
            ck.equal(got_b, want_b, "session B (pair 1, 3 syncs on its own context worker) == tconst generate")
            # a start stuck on the stopped worker (session C, placed on pair
            # 0) does not hold up a start placed on the live pair (D): the
            # engine has a start thread per pair
            c_res = {}

            def open_c():
                try:
                    c_res["id"] = s.OpenSession(pb.OpenSessionRequest(token_ids=pa[:100]), timeout=300).session_id
                except grpc.RpcError as e:
                    c_res["err"] = f"{e.code().name}: {e.details()}"
            tc_thread = threading.Thread(target=open_c)
            tc_thread.start()
            ck.check(wait_for(lambda: (d.metric("tconst_requests_running") or 0) >= 2, 60, "C's start"),
                     "session C's start runs (on the stopped pair)")
            try:
                sd = s.OpenSession(pb.OpenSessionRequest(token_ids=pb_[:100]), timeout=30).session_id
            except grpc.RpcError as e:
                sd = None
                print(f"     D: {e.code().name}: {e.details()}")
            ck.check(sd is not None and tc_thread.is_alive(),
                     "session D (pair 1) opens while C's start still waits on the stopped worker")
            ck.equal(gen_sessions()[1], 2, "D is on pair 1")
            os.kill(pairs[0].p.pid, signal.SIGCONT)
            tc_thread.join(120)
            ck.check("id" in c_res and s.GetSession(pb.GetSessionRequest(session_id=c_res["id"]), timeout=30).length
                     == 100, "after SIGCONT session C opens with its 100 tokens", str(c_res))
            ta.join(120)
            ck.equal(got_a, want_a, "after SIGCONT session A finishes == tconst generate")
    finally:
        for w in pairs:
            w.stop()

    # two pairs step apart: pair 0's generation worker stopped (SIGSTOP)
    # under session A's running generation does not hold up session B's
    # tokens on pair 1 (a generation thread a pair); with one thread B's
    # tokens waited in A's batch for the stopped worker's whole timeout
    pairs = [Worker(env, r, model) for r in ("context", "generation", "context", "generation")]
    try:
        with Daemon(env, "--workers", ",".join(w.addr for w in pairs), "--worker-timeout", "120", model=model) as d:
            s = d.stub()
            pa = [(i * 7) % 500 + 2 for i in range(60)]
            pb_ = [(i * 11) % 500 + 2 for i in range(70)]
            sa = s.OpenSession(pb.OpenSessionRequest(token_ids=pa), timeout=60).session_id
            sb = s.OpenSession(pb.OpenSessionRequest(token_ids=pb_), timeout=60).session_id
            ck.equal(gen_sessions(), [1, 1], "sessions A and B are on pairs 0 and 1")
            samp3 = dict(temperature=0.9, top_k=40, seed=11)
            NA = 3000
            want_a = env.generate(model, pa, NA, ignore_eos=True, **samp3)
            want_b = env.generate(model, pb_, 200, ignore_eos=True, **samp3)
            got_a, a_two, a_done, a_err = [], threading.Event(), threading.Event(), []

            def run_a2():
                try:
                    for r in s.GenerateInSession(pb.GenerateInSessionRequest(session_id=sa, sampling=env.sampling(
                            max_tokens=NA, ignore_eos=True, **samp3)), timeout=300):
                        got_a.extend(r.token_ids)
                        if len(got_a) >= 2 and not a_two.is_set():
                            os.kill(pairs[1].p.pid, signal.SIGSTOP)  # A is in the batch: its worker stops
                            a_two.set()
                except grpc.RpcError as e:
                    a_err.append(f"{e.code().name}: {e.details()}")
                finally:
                    a_two.set()
                    a_done.set()
            ta = threading.Thread(target=run_a2)
            ta.start()
            ck.check(a_two.wait(60) and not a_done.is_set(), "session A generates, then its generation worker stops",
                     f"{len(got_a)} ids, done {a_done.is_set()}, {a_err}")
            n_stopped = len(got_a)
            got_b = stream_ids(pb, s, sb, env.sampling(max_tokens=200, ignore_eos=True, **samp3), 60)
            ck.equal(got_b, want_b, "session B (pair 1) generates its 200 tokens while pair 0's generation "
                     "worker is stopped, == tconst generate")
            ck.check(not a_done.is_set() and len(got_a) < NA, "session A still waits on its stopped worker",
                     f"{len(got_a)} of {NA} ids ({n_stopped} at the stop), done {a_done.is_set()}")
            os.kill(pairs[1].p.pid, signal.SIGCONT)
            ta.join(240)
            ck.check(not a_err and got_a == want_a, "after SIGCONT session A finishes == tconst generate",
                     f"{len(got_a)} ids, {a_err}")
    finally:
        for w in pairs:
            w.stop()

    # a session closed while its request is stuck on a stopped worker is
    # gone for clients at once: under --max-sessions its id opens again
    # right away (it counted against the limit until the stuck request
    # stopped: RESOURCE_EXHAUSTED), while the limit still holds for others
    pairs = [Worker(env, r, model) for r in ("context", "generation", "context", "generation")]
    try:
        with Daemon(env, "--workers", ",".join(w.addr for w in pairs), "--worker-timeout", "120",
                    "--max-sessions", "2", model=model) as d:
            s = d.stub()
            s.OpenSession(pb.OpenSessionRequest(session_id="ca", token_ids=prompt[:40]), timeout=60)
            s.OpenSession(pb.OpenSessionRequest(session_id="cb", token_ids=prompt[:50]), timeout=60)
            ck.equal(gen_sessions(), [1, 1], "sessions ca and cb are on pairs 0 and 1")
            two, done, errs = threading.Event(), threading.Event(), []

            def run_ca():
                n = 0
                try:
                    for r in s.GenerateInSession(pb.GenerateInSessionRequest(session_id="ca", sampling=env.sampling(
                            max_tokens=5000, ignore_eos=True)), timeout=300):
                        n += len(r.token_ids)
                        if n >= 2 and not two.is_set():
                            os.kill(pairs[1].p.pid, signal.SIGSTOP)  # ca's step is stuck on it
                            two.set()
                except grpc.RpcError as e:
                    errs.append(e.code().name)
                finally:
                    two.set()
                    done.set()
            t = threading.Thread(target=run_ca)
            t.start()
            ck.check(two.wait(60) and not done.is_set(), "ca generates, then its generation worker stops")
            s.CloseSession(pb.CloseSessionRequest(session_id="ca"), timeout=30)

            def open_code(sid):
                try:
                    s.OpenSession(pb.OpenSessionRequest(session_id=sid), timeout=30)
                    return "OK"
                except grpc.RpcError as e:
                    return e.code().name
            ck.equal(open_code("ca"), "OK", "closed while its request is stuck: its id opens again at once under "
                                            "--max-sessions 2")
            ck.equal(open_code("cc"), "RESOURCE_EXHAUSTED", "... and a third session is still refused")
            os.kill(pairs[1].p.pid, signal.SIGCONT)
            t.join(240)
            ck.equal(errs, ["CANCELLED"], "the closed session's generation ends CANCELLED once its worker runs")
            ck.check(wait_for(lambda: d.metric("tconst_sessions_active") == 2.0, 30, "the closed one removed"),
                     "then two sessions: cb and the new ca", d.metric("tconst_sessions_active"))
            ck.equal(open_code("cc"), "RESOURCE_EXHAUSTED", "the limit holds after it")
    finally:
        for w in pairs:
            try:
                os.kill(w.p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            w.stop()

    # one coordinator per worker; orphans of a dead one are dropped
    pairs = [Worker(env, r, model, "--orphan-timeout", "2") for r in ("context", "generation")]

    def info(w):
        with grpc.insecure_channel(w.addr) as ch:
            return worker_pb2_grpc.WorkerStub(ch).Info(worker_pb2.InfoRequest(), timeout=10)
    try:
        wl = ",".join(w.addr for w in pairs)
        d1 = Daemon(env, "--workers", wl, model=model)
        with d1:
            s = d1.stub()
            for k in range(3):
                s.OpenSession(pb.OpenSessionRequest(token_ids=prompt[: 10 + k]), timeout=30)
            ck.equal(info(pairs[1]).sessions, 3, "coordinator 1: 3 session copies on the generation worker")
            owner1 = info(pairs[1]).coordinator
            ck.check(owner1 != 0, "the worker names its coordinator", str(owner1))
            r = subprocess.run([env.tconstd, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                "--workers", wl, "--worker-start-timeout", "1"], capture_output=True, text=True,
                               timeout=60)
            ck.check(r.returncode != 0 and "is not free" in r.stderr and "serves coordinator" in r.stderr,
                     "a second coordinator while the first lives: start-up error 'is not free'", r.stderr[-300:])
            ck.equal(info(pairs[1]).sessions, 3, "the refused coordinator dropped nothing")
            d1.proc.kill()  # kill -9: no release
            d1.proc.wait()
            d1.proc.returncode = 0  # expected; keep the log quiet
        ck.equal(info(pairs[1]).sessions, 3, "after kill -9 the copies are still there (orphans)")
        with Daemon(env, "--workers", wl, model=model) as d2:
            ck.equal(info(pairs[1]).sessions, 0, "the next coordinator took over: the orphans are dropped")
            ck.check(info(pairs[1]).coordinator not in (0, owner1), "the worker now names the new coordinator")
            got, _ = d2.generate_ids(d2.stub(), prompt, env.sampling(max_tokens=150, ignore_eos=True, **samp))
            ck.equal(got, want, "the new coordinator: seeded generation == tconst generate")
            d2.stub().OpenSession(pb.OpenSessionRequest(token_ids=prompt), timeout=30)
            ck.equal(info(pairs[1]).sessions, 1, "its own session is on the worker")
        i = info(pairs[1])
        ck.equal((i.coordinator, i.sessions), (0, 0), "a clean exit (SIGTERM) released the worker and its copies")
    finally:
        for w in pairs:
            w.stop()

    # bad worker lists: clear start-up errors
    both_other = Worker(env, "both", other)
    both_reseeded = Worker(env, "both", reseeded)
    ctx_only = Worker(env, "context", model)
    gen_ok = Worker(env, "generation", model)
    try:
        cases = [
            ("127.0.0.1:1", "does not answer"),
            (ctx_only.addr, "1 context and 0 generation"),
            (f"{ctx_only.addr},{gen_ok.addr},{both_other.addr}", "different model"),
            # the same architecture, another checkpoint: the weights' fingerprint
            (f"{ctx_only.addr},{gen_ok.addr},{both_reseeded.addr}", "different weights"),
            # one process named twice: as given, and spelled another way
            (f"{ctx_only.addr},{gen_ok.addr},{ctx_only.addr},{gen_ok.addr}", "are the same worker process"),
            (f"{gen_ok.addr},{ctx_only.addr},localhost:{gen_ok.addr.rsplit(':', 1)[1]},{ctx_only.addr}",
             "are the same worker process"),
        ]
        for workers, needle in cases:
            r = subprocess.run([env.tconstd, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                "--workers", workers, "--worker-start-timeout", "2"],
                               capture_output=True, text=True, timeout=60)
            err = [l for l in r.stderr.splitlines() if "error" in l]
            ck.check(r.returncode == 2 or (r.returncode != 0 and any(needle in l for l in err)),
                     f"--workers {workers}: exits nonzero naming '{needle}'", r.stderr[-400:])
            ck.check(any(needle in l for l in err), f"--workers {workers}: the message names '{needle}'",
                     err[-1] if err else r.stderr[-300:])
    finally:
        for w in (both_other, both_reseeded, ctx_only, gen_ok):
            w.stop()


if __name__ == "__main__":
    run("attach", body)
