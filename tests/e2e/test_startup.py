#!/usr/bin/python3
"""test_startup.py — readiness during start-up: with a long warm-up
(--warmup-tokens 150000: seconds), /healthz answers 200 while
/readyz says 503, grpc.health.v1 Check says NOT_SERVING and a Watch opened
then receives NOT_SERVING and later SERVING; afterwards /readyz is 200,
Check says SERVING, the ready line comes and Generate works.

The ready line comes only after warm-up, so this test picks the two ports
itself (bind port 0, close, pass them) and polls /healthz until it answers.
If the warm-up is over before the first probe could see it, or ends while
the probes run (a fast machine, or workers that took long to start), the
test starts again with a 4x longer warm-up: it waits for events, never
assumes a duration.
"""
import queue
import threading

import grpc

from harness import Daemon, free_port, run, wait_for

WARMUP = 150000


def start(env, warmup):
    """A daemon in warm-up, /healthz answering; None if it could not start."""
    for attempt in range(3):  # a port taken between our probe and the daemon's bind: retry
        d = Daemon(env, "--warmup-tokens", str(warmup), grpc_port=free_port(), http_port=free_port(),
                   wait_ready=False)
        d.start()

        def healthz():
            if d.proc.poll() is not None:
                return "exited"
            try:
                return d.http("/healthz", timeout=2)[0] == 200
            except OSError:
                return False

        up = wait_for(healthz, 60, "/healthz")
        if up == "exited":
            d.__exit__(None, None, None)
            print(f"     daemon exited before /healthz answered (port taken?); retry {attempt + 1}")
            continue
        return d, up
    return None, False


def body(env, ck):
    hpb = env.health_pb
    SERVING, NOT_SERVING = hpb.HealthCheckResponse.SERVING, hpb.HealthCheckResponse.NOT_SERVING
    warmup = WARMUP
    for attempt in range(4):
        d, up = start(env, warmup)
        if d is None:
            ck.check(False, "tconstd starts")
            return
        # reconnect fast: the gRPC port opens after the workers are up,
        # and the default backoff (1 s, growing) could miss the warm-up
        ch = d.channel(**{"grpc.initial_reconnect_backoff_ms": 50, "grpc.max_reconnect_backoff_ms": 200})
        grpc.channel_ready_future(ch).result(timeout=60)
        h = d.health(ch)
        events = queue.Queue()
        watch = h.Watch(hpb.HealthCheckRequest(), timeout=300)

        def reader():
            try:
                for m in watch:
                    events.put(m.status)
            except grpc.RpcError as e:
                events.put(e.code())

        threading.Thread(target=reader, daemon=True).start()
        first = events.get(timeout=60)
        if first == SERVING and attempt < 3:
            # the warm-up was over before we could look: not what this
            # test is about; again with a longer one (an event, not a timer)
            print(f"     warm-up of {warmup} tokens ended before the first probe; retrying with {warmup * 4}")
            watch.cancel()
            d.__exit__(None, None, None)
            warmup *= 4
            continue
        # the probes during warm-up; if the warm-up ended while they ran
        # (one saw the ready state), they did not test it: again, longer
        readyz = d.http("/readyz")[0]
        check_all = h.Check(hpb.HealthCheckRequest(), timeout=30).status
        check_svc = h.Check(hpb.HealthCheckRequest(service="tconst.v1.TConst"), timeout=30).status
        if first == NOT_SERVING and (readyz, check_all, check_svc) != (503, NOT_SERVING, NOT_SERVING) \
                and attempt < 3:
            print(f"     warm-up of {warmup} tokens ended during the probes; retrying with {warmup * 4}")
            watch.cancel()
            d.__exit__(None, None, None)
            warmup *= 4
            continue
        break
    with d:
        ck.check(up is True, "/healthz answers 200 during start-up")
        ck.equal(first, NOT_SERVING, "Health/Watch opened during warm-up first says NOT_SERVING")
        ck.equal(readyz, 503, "/readyz is 503 while the model warms up")
        ck.equal(check_all, NOT_SERVING, "Health/Check is NOT_SERVING during warm-up")
        ck.equal(check_svc, NOT_SERVING, "Health/Check(tconst.v1.TConst) is NOT_SERVING during warm-up")
        ck.rpc_error(lambda: h.Check(hpb.HealthCheckRequest(service="no.such.Service"), timeout=30),
                     grpc.StatusCode.NOT_FOUND, "Health/Check of an unknown service", "service")
        second = events.get(timeout=240)
        ck.equal(second, SERVING, "then the Watch receives SERVING once warm")
        line = d.wait_ready_line(60)
        ck.check(" ready: " in line, "the ready line is printed", line)
        ck.equal(d.http("/readyz")[0], 200, "/readyz is 200 once ready")
        ck.equal(h.Check(hpb.HealthCheckRequest(), timeout=30).status, SERVING, "Health/Check is SERVING")
        m = d.metrics()
        ck.equal(m.get(("tconst_ready", ())), 1.0, "tconst_ready gauge is 1")
        ids, _ = d.generate_ids(d.stub(ch), [3, 4, 5], env.sampling(max_tokens=10, ignore_eos=True))
        ck.equal(ids, env.generate(d.model_dir, [3, 4, 5], 10, ignore_eos=True), "Generate works once ready")
        watch.cancel()


if __name__ == "__main__":
    run("e2e startup", body)
