#!/usr/bin/python3
"""test_stop_strings.py — `stop` strings end a generation where the text
first holds one (docs/api.md "Sampling"), in runs of --multi-step tokens
for a plain Generate (docs/workers.md; session 27: such a request used to
step one token a call, ~1/8 the rate of its batch).

A tiny tconstformer on the GPT-2 vocabulary (random weights, so random
text). Its greedy 64-token generation without a stop string is the
reference (ids and text). Then, in the default split layout and with
both-roles workers:

  * a stop string taken from the reference text (the text of tokens
    20-21): the stream's text is the reference text cut before the stop
    string's first occurrence, its ids a prefix of the reference's ending
    with the token that completed it, finish_reason STOP; its usage
    counts those ids. The run that met it went on past it on the worker:
    the tokens past it are never sent;
  * a stop string the text never holds: the reference's 64 ids and text,
    finish_reason LENGTH, in runs (fewer than 32 messages; one a token
    before the change);
  * the same in a named session (GenerateInSession): the same text and ids
    (its runs end after any token that can complete a stop string, so its
    history holds nothing past the stop), and a generation after it in the
    same session equals the reference's continuation from the stop (a fresh
    session fed the same tokens);
  * a named session's stop string never met: the reference's ids and text,
    in runs too (session 28; it used to step one token a call).

Needs the GPT-2 vocabulary (TC_GPT2_DIR, the tokenizer.fetch_gpt2 fixture).
"""

import subprocess

from harness import Daemon, run

N = 64


def stream(env, calls):
    """(ids, text, last message, number of messages) of a streaming call."""
    ids, text, last, n = [], "", None, 0
    for r in calls:
        ids += r.token_ids
        text += r.text
        last, n = r, n + 1
    return ids, text, last, n


def body(env, ck):
    pb = env.pb
    model = env.gpt2_model(9)
    prompt = "The stop strings of a streaming server:"
    for layout in ([], ["--worker-mode", "both"]):
        name = "both-roles" if layout else "split"
        with Daemon(env, *layout, "--multi-step-ms", "1000", model=model) as d:
            s = d.stub()

            def gen(stop=(), n=N, session_id=None):
                sp = env.sampling(max_tokens=n, ignore_eos=True)
                sp.stop.extend(stop)
                if session_id:
                    return stream(env, s.GenerateInSession(pb.GenerateInSessionRequest(
                        session_id=session_id, text=prompt, sampling=sp), timeout=120))
                return stream(env, s.Generate(pb.GenerateRequest(text=prompt, sampling=sp), timeout=120))

            ref_ids, ref_text, last, _ = gen()
            ck.equal((len(ref_ids), last.finish_reason), (N, pb.FINISH_REASON_LENGTH), f"{name}: the reference")
            # the stop string: the text of tokens 20-21 of the reference
            pre = s.Detokenize(pb.DetokenizeRequest(token_ids=ref_ids[:20]), timeout=30).text
            mid = s.Detokenize(pb.DetokenizeRequest(token_ids=ref_ids[:22]), timeout=30).text
            stop = mid[len(pre):] if mid.startswith(pre) else ""
            ck.check(stop.strip() != "", f"{name}: a stop string from the reference text", repr(stop))
            cut = ref_text.find(stop)
            ids, text, last, _ = gen([stop])
            ck.equal(text, ref_text[:cut], f"{name}: Generate's text is cut before the stop string {stop!r}")
            ck.check(0 < len(ids) <= 22 and ids == ref_ids[:len(ids)] and last.finish_reason == pb.FINISH_REASON_STOP,
                     f"{name}: its ids are a prefix of the reference's (up to the stop), finish_reason STOP",
                     f"{len(ids)} ids, finish {last.finish_reason}")
            whole = s.Detokenize(pb.DetokenizeRequest(token_ids=ids), timeout=30).text
            ck.check(stop in whole and stop not in s.Detokenize(pb.DetokenizeRequest(token_ids=ids[:-1]),
                                                                timeout=30).text,
                     f"{name}: the last id completes the stop string (nothing past it is sent)")
            ck.equal(last.usage.completion_tokens, len(ids), f"{name}: usage counts the ids sent")
            ids2, text2, last2, msgs = gen(["\u2603 never in this text \u2603"])
            ck.equal((ids2, text2, last2.finish_reason), (ref_ids, ref_text, pb.FINISH_REASON_LENGTH),
                     f"{name}: a stop string never met: the reference's ids and text")
            ck.check(msgs < N // 2, f"{name}: ... in runs of --multi-step tokens ({msgs} messages for {N} tokens)")
            # a named session: runs that end on the stop's candidate tokens
            s.OpenSession(pb.OpenSessionRequest(session_id="runs"), timeout=30)
            ids4, text4, last4, msgs4 = gen(["\u2603 never in this text \u2603"], session_id="runs")
            ck.equal((ids4, text4, last4.finish_reason), (ref_ids, ref_text, pb.FINISH_REASON_LENGTH),
                     f"{name}: a named session's stop string never met: the reference's ids and text")
            ck.check(msgs4 < N // 2, f"{name}: ... in runs of --multi-step tokens ({msgs4} messages for {N} tokens)")
            # a named session: the history ends at the stop
            s.OpenSession(pb.OpenSessionRequest(session_id="named"), timeout=30)
            rebuilt = d.metric("tconst_worker_rebuilds_total")
            ids3, text3, last3, _ = gen([stop], session_id="named")
            ck.equal((ids3, text3, last3.finish_reason), (ids, text, pb.FINISH_REASON_STOP),
                     f"{name}: GenerateInSession stops at the same place")
            ck.equal(last.usage.session_tokens, last3.usage.session_tokens,
                     f"{name}: usage.session_tokens of the Generate that ran past its stop == the single-stepped one's")
            after, _, _, _ = gen(n=12, session_id="named")
            ck.equal(d.metric("tconst_worker_rebuilds_total"), rebuilt,
                     f"{name}: no copy of the named session was rebuilt (its run never went past the stop)")
            s.OpenSession(pb.OpenSessionRequest(session_id="fresh"), timeout=30)
            s.Append(pb.AppendRequest(session_id="fresh", text=prompt), timeout=30)
            s.Append(pb.AppendRequest(session_id="fresh", token_ids=ids3), timeout=30)
            want, _, _, _ = stream(env, s.GenerateInSession(pb.GenerateInSessionRequest(
                session_id="fresh", text=prompt, sampling=env.sampling(max_tokens=12, ignore_eos=True)), timeout=120))
            ck.equal(after, want, f"{name}: the session holds nothing past the stop (its next generation equals "
                                  "a fresh session fed the same tokens)")
            if layout:
                continue
            # the CLI: `tconst client ... --stop S --stop-ids "ids"` sends them
            def cli(*args):
                r = subprocess.run([env.tconst, "client", "generate", "--server", d.grpc_addr, "-n", str(N),
                                    "--ignore-eos", "--timeout", "120", *args], capture_output=True, text=True,
                                   timeout=180)
                return r.returncode, r.stdout, r.stderr
            rc, out, err = cli("--text", prompt, "--stop", "\u2603 never \u2603", "--stop", stop)
            ck.check(rc == 0 and out.rstrip("\n") == ref_text[:cut],
                     "tconst client --stop: the text cut before the stop string", f"rc {rc} {out!r} {err!r}")
            # token_ids of the prompt: the CLI prints ids
            p_ids = list(s.Tokenize(pb.TokenizeRequest(text=prompt), timeout=30).token_ids)
            rc, out, err = cli("--tokens", " ".join(map(str, p_ids)), "--stop-ids", f"{ref_ids[30]} {ref_ids[40]}")
            first = min(ref_ids.index(ref_ids[30]), ref_ids.index(ref_ids[40]))
            ck.check(rc == 0 and out.split() == [str(t) for t in ref_ids[:first + 1]],
                     "tconst client --stop-ids: the ids up to the first stop id", f"rc {rc} {out!r} {err!r}")


if __name__ == "__main__":
    run("stop_strings", body)
