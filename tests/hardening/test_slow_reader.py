#!/usr/bin/python3
"""test_slow_reader.py TCONSTD — a client that stops reading never stalls
other streams (issue 9). --stream-queue 8: a Stream whose reader stops
after its first message asks for 20000 tokens and is left unread; its
generation must pause (the session's length stops growing, well short of
20000), while 6 other sessions, streaming and generating 300 tokens a
turn for 3 turns each, all complete in full. Then the slow reader reads
on and gets all its tokens, and cancelling it releases its session."""
import sys
import threading
import time

import grpc

from hardening import run, decode, f_bytes, f_ids, f_int, generation, sampling

SLOW_TOKENS = 20000


def body(d, ck):
    slow_ch = d.channel()
    reqs = iter([f_ids(3, [1, 2, 3]) + f_int(4, 1) + f_bytes(5, sampling(SLOW_TOKENS))])
    slow = slow_ch.stream_stream("/tconst.v1.TConst/Stream", request_serializer=None,
                                 response_deserializer=None)(reqs, timeout=900)
    first = decode(next(slow))  # the appended ack: the session's info
    sid = first[1][0] and decode(first[1][0])[1][0].decode()
    ck.check(bool(sid), f"the slow stream has its session {sid}")

    def length():
        return decode(d.unary("GetSession", f_bytes(1, sid)))[2][0]

    time.sleep(2)
    l1 = length()
    time.sleep(2)
    l2 = length()
    ck.check(l2 < SLOW_TOKENS / 2,
             f"the unread stream is held back to what the transport buffers (length {l1} -> {l2})")

    results = []

    def fast(i):
        ch = d.channel()
        turns = [f_ids(3, [i, 7]) + f_int(4, 1) + f_bytes(5, sampling(300)) for _ in range(3)]
        n = fin = 0
        try:
            for m in ch.stream_stream("/tconst.v1.TConst/Stream", request_serializer=None,
                                      response_deserializer=None)(iter(turns), timeout=600):
                e = decode(m)
                if 2 in e:
                    k, f = generation(e[2][0])
                    n += k
                    fin += f != 0
            results.append((n, fin))
        except grpc.RpcError as ex:
            results.append((ex.code().name, fin))
        ch.close()

    th = [threading.Thread(target=fast, args=(i,)) for i in range(6)]
    for t in th:
        t.start()
    for t in th:
        t.join(600)
    ck.check(results == [(900, 3)] * 6, f"6 other streams got all 3 x 300 tokens meanwhile: {results}")
    l3 = length()
    ck.check(l3 - l2 < SLOW_TOKENS / 2, f"the slow stream stayed paused meanwhile (length {l2} -> {l3})")

    # the slow reader reads on: everything arrives
    n = 0
    for m in slow:
        e = decode(m)
        if 2 in e:
            k, f = generation(e[2][0])
            n += k
            if f:
                break
    ck.check(n == SLOW_TOKENS, f"reading on, the slow stream gets all {SLOW_TOKENS} tokens (got {n})")
    slow.cancel()
    slow_ch.close()
    ok = False
    for _ in range(600):  # 60 s at least: the close follows the cancel, on a loaded machine too
        try:
            length()
        except grpc.RpcError as ex:
            ok = ex.code() == grpc.StatusCode.NOT_FOUND
            break
        time.sleep(0.1)
    ck.check(ok, "ending the stream closes its session")


def main(tconstd):
    return run("slow reader", body, tconstd, "--stream-queue", "8", "--max-batch", "8")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
