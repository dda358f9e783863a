#!/usr/bin/python3
"""test_cli.py TCONST — the `tconst` command line on its edges: a
value-taking flag given last, standard output that cannot be written, ids
that are not digits only, `init-model --vocab` with a vocabulary that is not
GPT-2's (its size, bos/eos, the file pair the tokenizer reads, no half
model directory left after a failure), `generate --text` on a model larger
than its tokenizer, `logits --tokens DIR`, `bench --ctx` past int64, and
`client` against a stand-in gRPC server (Python's grpcio, raw bytes): a
stream line over 64 KiB, a malformed or cut-short reply, an unknown session
command. Needs no GPT-2 files and no daemon; no sleeps, nothing timed.
Label: unit."""
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile

import grpc

TCONST = os.path.abspath(sys.argv[1])
tmp = tempfile.mkdtemp(prefix="tc_cli_")
ENV = dict(os.environ, TMPDIR=tmp)  # the built-in model goes under it
n_ok, failed = 0, []


def check(cond, what, detail=""):
    global n_ok
    if cond:
        n_ok += 1
        print(f"ok   {what}", flush=True)
    else:
        failed.append(what)
        print(f"FAIL {what}" + (f": {detail}" if detail else ""), flush=True)


def tc(*args, stdin=b"", stdout=subprocess.PIPE):
    """Runs tconst; returns (exit code, stdout bytes, stderr text)."""
    r = subprocess.run([TCONST, *args], input=stdin, stdout=stdout, stderr=subprocess.PIPE, env=ENV, timeout=240)
    return r.returncode, r.stdout or b"", r.stderr.decode(errors="replace").strip()


def expect(args, rc, needle, what, stdin=b"", stdout=subprocess.PIPE):
    code, out, err = tc(*args, stdin=stdin, stdout=stdout)
    check(code == rc and needle in err, what, f"exit {code}, stderr {err!r}, want exit {rc} and {needle!r}")
    return out


# ---- a small GPT-2-style vocabulary (not GPT-2's) -------------------------
def byte_chars():
    """GPT-2's bytes_to_unicode: byte -> the character that stands for it."""
    pr = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    out, n = {}, 0
    for b in range(256):
        if b in pr:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


BC = byte_chars()


def write_vocab(d, names, extra, merges):
    """Byte tokens at ids 0..255 (id = byte), then `extra` from 256."""
    os.makedirs(d, exist_ok=True)
    v = {BC[b]: b for b in range(256)}
    for i, t in enumerate(extra):
        v[t] = 256 + i
    with open(os.path.join(d, names[0]), "w", encoding="utf-8") as f:
        json.dump(v, f, ensure_ascii=False)
    with open(os.path.join(d, names[1]), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))


HF, OPENAI = ("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")
SP = BC[ord(" ")]  # 'Ġ'
voc = os.path.join(tmp, "voc")  # both pairs, different: the tokenizer reads vocab.json + merges.txt
write_vocab(voc, HF, ["ab", SP + "a"], ["a b", SP + " a"])
write_vocab(voc, OPENAI, ["<|endoftext|>"], [])
eot = os.path.join(tmp, "eot")  # encoder.json + vocab.bpe only, with <|endoftext|>
write_vocab(eot, OPENAI, ["ab", "<|endoftext|>"], ["a b"])


def config(d):
    with open(os.path.join(d, "config.json")) as f:
        return json.load(f)


# ---- init-model --vocab DIR: its size, bos/eos, the pair the loader reads ----
m1 = os.path.join(tmp, "m1")
code, _, err = tc("init-model", "--preset", "tiny", "--vocab", voc, "--out", m1)
check(code == 0, "init-model --vocab (vocab.json + merges.txt beside encoder.json + vocab.bpe)", err)
c = config(m1) if code == 0 else {}
check(c.get("vocab_size") == 258, "vocab_size is the tokenizer's 258 tokens, not GPT-2's 50257", str(c.get("vocab_size")))
check((c.get("bos_token_id"), c.get("eos_token_id")) == (0, 1), "no <|endoftext|>: bos 0, eos 1 (the presets' defaults)",
      f"{c.get('bos_token_id')}, {c.get('eos_token_id')}")
check(sorted(f for f in os.listdir(m1) if f not in ("config.json", "model.safetensors")) == ["merges.txt", "vocab.json"],
      "init-model copies the pair the tokenizer reads (vocab.json + merges.txt)", str(os.listdir(m1)))
code, out, err = tc("generate", "--model", m1, "--text", "ab a", "-n", "8", "--temperature", "1", "--seed", "2",
                    "--ignore-eos")
check(code == 0 and out.endswith(b"\n"), "generate --text on the 258-token model", f"exit {code}: {err}")
m2 = os.path.join(tmp, "m2")
code, _, err = tc("init-model", "--preset", "tiny", "--vocab", eot, "--out", m2)
c = config(m2) if code == 0 else {}
check(code == 0 and (c.get("vocab_size"), c.get("bos_token_id"), c.get("eos_token_id")) == (258, 257, 257),
      "encoder.json with <|endoftext|> at 257: vocab_size 258, bos = eos = 257", f"exit {code} {err} {c}")
expect(["init-model", "--preset", "tiny", "--vocab", voc, "--vocab-size", "512", "--out", os.path.join(tmp, "m3")], 2,
       "--vocab " + voc + " gives 258 tokens but --vocab-size is 512", "--vocab-size unlike the vocabulary: usage error")

# a failure leaves no half model directory, and removes only what it created
bad = os.path.join(tmp, "badvoc")
write_vocab(bad, HF, ["ab"], ["a b", "x y"])  # "x y": no "xy" token
m4 = os.path.join(tmp, "m4")
expect(["init-model", "--preset", "tiny", "--vocab", bad, "--out", m4], 1, "merge result of", "init-model --vocab BAD")
check(not os.path.exists(m4), "init-model --vocab BAD: no --out directory left", str(os.path.exists(m4)))
m5 = os.path.join(tmp, "m5")
os.makedirs(os.path.join(m5, "vocab.json"))  # the copy cannot write there
open(os.path.join(m5, "keep.txt"), "w").write("mine\n")
expect(["init-model", "--preset", "tiny", "--vocab", voc, "--out", m5], 1, "vocab.json", "init-model: the copy fails")
check(sorted(os.listdir(m5)) == ["keep.txt", "vocab.json"],
      "after a failed copy: what init-model wrote is gone, what was there is kept", str(sorted(os.listdir(m5))))
m6 = os.path.join(tmp, "m6")
write_vocab(m6, HF, [], [])  # stale files the loader would read before a copied encoder.json
expect(["init-model", "--preset", "tiny", "--vocab", eot, "--out", m6], 1,
       "vocab.json exists and the tokenizer would read it instead", "init-model: a stale vocab.json in --out")
check(sorted(os.listdir(m6)) == ["merges.txt", "vocab.json"], "a refused init-model writes nothing",
      str(sorted(os.listdir(m6))))

# generate --text on a model whose vocab_size (512) is larger than its tokenizer (258)
m7 = os.path.join(tmp, "m7")
tc("init-model", "--preset", "tiny", "--seed", "3", "--out", m7)
write_vocab(m7, HF, ["ab", SP + "a"], ["a b", SP + " a"])
expect(["generate", "--model", m7, "--text", "ab", "-n", "64", "--temperature", "1", "--seed", "1", "--ignore-eos"], 1,
       "has no text: the tokenizer of " + m7 + " has 258 tokens, the model's vocab_size is 512",
       "generate --text: a sampled id the tokenizer lacks is an error, not skipped")

# ---- a value-taking flag given last -----------------------------------------
m8 = os.path.join(tmp, "m8")
for args in (["info", "--model"], ["init-model", "--out", m8, "--vocab"], ["init-model", "--out", m8, "--seed"],
             ["init-model", "--out", m8, "--n-embd"], ["logits", "--tokens", "x", "--out"],
             ["generate", "--tokens", "1 2", "-n"], ["generate", "--tokens", "1 2", "--temperature"],
             ["generate", "--tokens"], ["sync-bench", "--model"]):
    expect(args, 2, args[-1] + " needs a value", "tconst " + " ".join(args) + ": usage error")
check(not os.path.exists(m8), "init-model --vocab (no value) writes no model", m8)

# ---- standard output that cannot be written ---------------------------------
W = "writing standard output: No space left on device"
for args in (["generate", "--tokens", "1 2", "-n", "50"], ["generate", "--tokens", "1 2", "-n", "2"], ["info"],
             ["generate", "--model", m1, "--text", "ab", "-n", "4", "--ignore-eos"],
             ["init-model", "--preset", "tiny", "--out", os.path.join(tmp, "m9")]):
    with open("/dev/full", "wb") as f:
        code, _, err = tc(*args, stdout=f)
    check(code == 1 and W in err, f"tconst {' '.join(args)} >/dev/full: exit 1", f"exit {code}: {err!r}")
many = b"97 98\n" * 100000
for mode in ([], ["--stream"]):
    with open("/dev/full", "wb") as f:
        code, _, err = tc("detokenize", "--model", m1, *mode, stdin=many, stdout=f)
    check(code == 1 and W in err, f"detokenize {' '.join(mode)} (1 MB) >/dev/full: exit 1", f"exit {code}: {err!r}")

# ---- ids: digits only --------------------------------------------------------
code, out, _ = tc("detokenize", "--model", m1, stdin=b"97 0098,256")
check(code == 0 and out == b"abab", "detokenize 97 0098,256 -> abab", repr(out))
for raw in (b"97\x00 98", b"97\x0098", b"+97", b"-0", b"\x0b97", b"97 -98"):
    expect(["detokenize", "--model", m1], 1, "is not a token id", f"detokenize {raw!r}: error", stdin=raw)
for toks in ("1 +2", "1 -0", "1 \v2"):
    expect(["generate", "--tokens", toks, "-n", "1"], 2, "is not a non-negative 32-bit integer",
           f"generate --tokens {toks!r}: error")
for val, needle in ((" 5", "is not an integer"), ("+5", "is not an integer"),
                    ("99999999999999999999", "out of range")):
    expect(["generate", "--tokens", "1", "-n", val], 2, "-n: " + (f"'{val}' " if "integer" in needle else val + " ") +
           needle, f"generate -n {val!r}: error")
# --seed takes every seed the API takes (uint64), nothing else
code, out, err = tc("generate", "--tokens", "1 2", "-n", "3", "--temperature", "1", "--seed", "18446744073709551615")
check(code == 0 and len(out.split()) == 3, "generate --seed 2^64-1 (the API's largest seed)", f"exit {code}: {err!r}")
for val, needle in (("18446744073709551616", "out of range"), ("-1", "is not an integer"), ("+1", "is not an integer")):
    expect(["generate", "--tokens", "1", "--seed", val], 2, "--seed: " + ("" if "range" in needle else f"'{val}' ")
           + (val + " " if "range" in needle else "") + needle, f"generate --seed {val}: error")
expect(["generate", "--tokens", "1", "--temperature", "1e-400"], 2, "--temperature: 1e-400 out of range",
       "generate --temperature 1e-400: out of range, not 'not a number'")

# a bad command line exits 2 in every command (unknown flag, missing or bad
# value); 1 is for work that failed
for args in (["init-model", "--arch", "foo", "--out", os.path.join(tmp, "m-x")],
             ["init-model", "--preset", "huge", "--out", os.path.join(tmp, "m-x")],
             ["init-model", "--dtype", "f8", "--out", os.path.join(tmp, "m-x")],
             ["init-model", "--seed", "x", "--out", os.path.join(tmp, "m-x")],
             ["generate", "--tokens", "1", "--top-p", "2"],
             ["generate", "--tokens", "1", "--bogus"],
             ["bench", "batch", "--preset", "tiny", "--reps", "0"]):
    expect(args, 2, "error", f"tconst {' '.join(args[:3])}: a usage error, exit 2")
check(not os.path.exists(os.path.join(tmp, "m-x")), "a refused init-model writes nothing")

# ---- logits --tokens DIR ------------------------------------------------------
expect(["logits", "--tokens", tmp, "--out", os.path.join(tmp, "x.f32")], 1, tmp + ": is a directory",
       "logits --tokens DIR: names the directory, not 'holds no token ids'")

# ---- bench --ctx / --batch past int64 ----------------------------------------
for flag, val in (("--ctx", "18014398509481984K"), ("--ctx", "99999999999999999999"), ("--ctx", "1048577M"),
                  ("--batch", "9223372036854775807")):
    expect(["bench", "state" if flag == "--ctx" else "batch", "--preset", "tiny", flag, val], 2,
           f"{flag}: '{val}' in '{val}' is out of range", f"bench {flag} {val}: error")
expect(["bench", "state", "--preset", "tiny", "--ctx", "+5"], 2, "not a list of positive counts", "bench --ctx +5")
expect(["bench", "state", "--preset", "tiny", "--ctx", "1K,"], 2, "unexpected ',' in '1K,'", "bench --ctx 1K, (a trailing comma)")
expect(["tokenize", "--model="], 2, "--model: empty value", "tokenize --model= (empty)")

# ---- client: against a stand-in server (raw protobuf bytes) ------------------
def varint(b, i):
    x = s = 0
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return x, i


def stream_request_ids(b):
    """token_ids (field 3) of a StreamRequest, packed or not."""
    ids, i = [], 0
    while i < len(b):
        key, i = varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
            if f == 3:
                ids.append(v)
        elif wt == 2:
            n, i = varint(b, i)
            if f == 3:
                j = i
                while j < i + n:
                    v, j = varint(b, j)
                    ids.append(v)
            i += n
        else:
            raise ValueError(f"wire type {wt}")
    return ids


APPENDED = b"\x0a\x00"  # StreamResponse{appended: SessionInfo{}}
got = []
mode = ["ack"]


def stream(requests, context):
    for r in requests:
        got.append(stream_request_ids(r))
        if mode[0] == "ack":
            yield APPENDED
        elif mode[0] == "garbage":
            yield b"\xff\xff\xff"  # not a StreamResponse
            return
        else:  # "cut": the stream ends, status OK, with no reply to the line
            return


def append(request, context):
    return b""  # an AppendResponse with no session in it, status OK


server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "tconst.v1.TConst", {"Stream": grpc.stream_stream_rpc_method_handler(stream),
                         "Append": grpc.unary_unary_rpc_method_handler(append)}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
addr = f"127.0.0.1:{port}"
long_ids = [5] * 8000
long_line = ("ids: " + " ".join(["00000005"] * len(long_ids)) + "\n").encode()  # 72 KB
code, out, err = tc("client", "stream", "-n", "0", "--timeout", "120", "--server", addr,
                    stdin=long_line + b"ids: 1 2\n")
check(code == 0 and got == [long_ids, [1, 2]] and out == b"\n\n",
      "client stream: a 72 KB line is one request (8000 ids), the next line another",
      f"exit {code} {err!r}; requests of {[len(g) for g in got]} ids; stdout {out[:40]!r}")
# a line that cannot be sent is said and skipped, the rest still go, and
# the exit status says something was skipped
got.clear()
code, out, err = tc("client", "stream", "-n", "0", "--timeout", "120", "--server", addr,
                    stdin=b"ids: 1\nids: x\nids: 5\n")
check(code == 1 and got == [[1], [5]] and "ids: token 0 'x'" in err and "ids::" not in err
      and "1 line of standard input could not be sent" in err,
      "client stream: a bad ids: line is said, skipped, the next one still sent, exit 1",
      f"exit {code} {err!r}; requests {got}")
for m, needle in (("garbage", "malformed response"), ("cut", "stream ended before the reply")):
    mode[0] = m
    got.clear()
    expect(["client", "stream", "-n", "0", "--timeout", "120", "--server", addr], 1, needle,
           f"client stream, a {m} reply with status OK: exit 1", stdin=b"ids: 1 2\nids: 3\n")
expect(["client", "session", "append", "--id", "s", "--tokens", "1", "--server", addr], 1,
       "malformed response: an AppendResponse without its session", "client session append: a reply without its session")
server.stop(None)
expect(["client", "session", "foo", "--server", addr], 2, "unknown session command 'foo'",
       "client session foo: unknown command (not '--id is required')")

print(f"test_cli: {n_ok} passed, {len(failed)} failed", flush=True)
subprocess.run(["rm", "-rf", tmp])
sys.exit(1 if failed else 0)
