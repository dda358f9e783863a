#!/usr/bin/env python3
"""make_seeds.py — writes the small seed corpora under fuzz/corpus/<target>/.

Run once when a format changes (the output is checked in). No dependencies:
protobuf messages are encoded by hand (varint, fixed and length-delimited
fields), which is all the tconst.v1 and worker requests use; the worker's
state blobs follow model/state.c's layout."""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- safetensors ----
def st(tensors, meta=None, pad=0):
    hdr, data = {}, b""
    for name, dt, shape, payload in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    if meta:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr).encode() + b" " * pad
    return struct.pack("<Q", len(h)) + h + data


f32 = lambda *v: struct.pack("<%df" % len(v), *v)
put("safetensors", "one_f32", st([("w", "F32", [2, 2], f32(1, 2, 3, 4))]))
put("safetensors", "mixed", st([("a", "F16", [3], b"\x00\x3c" * 3), ("b", "BF16", [1, 2], b"\x80\x3f" * 2),
                                ("c", "F32", [], f32(7))], meta={"format": "pt"}, pad=5))
put("safetensors", "scalar_empty", st([("e", "F32", [0], b""), ("i", "I64", [1], b"\x01" * 8)]))
put("safetensors", "overlap", st([("a", "F32", [1], f32(1))])[:-4] + f32(1) + f32(2))
put("safetensors", "short", b"\x10\x00\x00\x00\x00\x00\x00\x00{}")

# ---- config.json ----
base = {"architecture": "tconstformer", "vocab_size": 512, "n_embd": 64, "n_head": 4, "n_block": 2,
        "block_inner_depth": 4, "ffn_hidden": 192, "history_window": 32, "generate_window": 32,
        "rope_base": 10000.0, "norm_eps": 1e-5, "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 1}
put("config", "tconst", json.dumps(base, indent=1))
put("config", "tlin", json.dumps(dict(base, architecture="tlinformer", history_window=16)))
tr = dict(base, architecture="transformer", n_block=8)
del tr["block_inner_depth"]
put("config", "transformer", json.dumps(tr))
put("config", "bad_types", json.dumps(dict(base, n_head="4", vocab_size=-1, norm_eps=None)))
put("config", "huge", json.dumps(dict(base, vocab_size=2**31 - 1, n_embd=2**30, n_head=3)))

# ---- BPE: vocab.json NUL merges.txt ----
def bs():
    bs_ = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs_[:], 0
    for b in range(256):
        if b not in bs_:
            bs_.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs_, cs)}


B = bs()
vocab = {B[b]: i for i, b in enumerate(range(256))}
merges = ["#version: 0.2"]
for a, b in [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e"), ("o", "r"), ("w", "or")]:
    vocab[a + b] = len(vocab)
    merges.append(a + " " + b)
put("bpe", "small", json.dumps(vocab, ensure_ascii=False) + "\0" + "\n".join(merges) + "\n")
put("bpe", "bytes_only", json.dumps({B[b]: b for b in range(256)}) + "\0#version: 0.2\n")
put("bpe", "bad_merge", json.dumps({"a": 0, "b": 1, "ab": 2}) + "\0a b\nab c\n")
put("bpe", "dup_ids", json.dumps({"a": 0, "b": 0}) + "\0")


# ---- requests: [method][flags][n frames] then [u16 len][bytes] frames ----
def varint(v):
    v &= (1 << 64) - 1
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def fv(n, v):
    return varint(n << 3) + varint(v)


def fs(n, s):
    s = s.encode() if isinstance(s, str) else s
    return varint(n << 3 | 2) + varint(len(s)) + s


def ff(n, x):
    return varint(n << 3 | 5) + struct.pack("<f", x)


def packed(n, ids):
    return fs(n, b"".join(varint(i) for i in ids))


M = ["Generate", "GenerateInSession", "OpenSession", "Append", "Stream", "GetSession", "CloseSession", "Abort",
     "Tokenize", "Detokenize", "ModelInfo", "ServerInfo", "HealthCheck", "HealthWatch", "Reflection", "Unknown",
     "SnapshotSession"]


def call(method, frames, flags=0):
    out = bytes([M.index(method), flags, len(frames)])
    for f in frames:
        out += struct.pack("<H", len(f)) + f
    return out


samp = ff(1, 0.7) + fv(2, 5) + ff(3, 0.9) + fv(4, 42) + fv(5, 8) + packed(6, [1]) + fs(7, "ab") + fv(8, 1)
put("request", "generate_ids", call("Generate", [packed(3, [5, 6, 7]) + fs(4, fv(5, 4))]))
put("request", "generate_text", call("Generate", [fs(2, "hello world") + fs(4, samp) + fs(1, "r1")]))
put("request", "generate_empty", call("Generate", [b""]))
put("request", "generate_bad_id", call("Generate", [packed(3, [99999, -1])]))
put("request", "open_append_gen_close",
    call("OpenSession", [fs(1, "s") + packed(3, [1, 2, 3])]) +
    call("Append", [fs(1, "s") + fs(2, "abc")]) +
    call("GenerateInSession", [fs(1, "s") + fs(4, fv(5, 6) + fv(8, 1))]) +
    call("CloseSession", [fs(1, "s")]))
put("request", "stream_multi", call("Stream", [packed(3, [4, 5]), fs(2, "xy") + fv(4, 1) + fs(5, fv(5, 3)),
                                               fv(4, 1) + fs(5, samp), fs(1, "other")]))
put("request", "stream_cancel", call("Stream", [fv(4, 1) + packed(3, [9]) + fs(5, fv(5, 50) + fv(8, 1))], flags=1))
put("request", "snapshot",
    call("OpenSession", [fs(1, "s") + packed(3, [1, 2, 3])]) +
    call("GenerateInSession", [fs(1, "s") + fs(4, fv(5, 4) + fv(8, 1))]) +
    call("SnapshotSession", [fs(1, "s") + fv(2, 2)]) + call("SnapshotSession", [fs(1, "s") + fv(2, 999999)]) +
    call("SnapshotSession", [fs(1, "nope")]))
put("request", "get_abort", call("GetSession", [fs(1, "nope")]) + call("Abort", [fs(1, "r1")]))
put("request", "tokenize", call("Tokenize", [fs(1, "the cat \xff")]) + call("Detokenize", [packed(1, [256, 300, 511, 600])]))
put("request", "info", call("ModelInfo", [b""]) + call("ServerInfo", [b""]) + call("Unknown", [b""]))
put("request", "health", call("HealthCheck", [fs(1, "tconst.v1.TConst")]) + call("HealthWatch", [fs(1, "")]))
put("request", "reflection", call("Reflection", [fs(7, b"") , fs(3, "tconst.proto"), fs(4, "tconst.v1.TConst"),
                                                 fs(5, "x")]))
put("request", "garbage", call("Generate", [b"\xff\xff\xff\xff\x0f"]) + call("Append", [b"\x0a\x80"]))


# ---- worker: [select] then calls [method][u16 len][message][u16 blob len][blob] ----
WM = ["Info", "Ping", "Connect", "Open", "Close", "Append", "Sync", "Import", "Step", "HealthCheck", "Unknown",
      "Foreign"]
ROLE = {"both": 0, "context": 1, "generation": 2}
ARCH = {"tconst": 0, "tlin": 1, "transformer": 2}
NO_MSG, NO_WAIT = 0x80, 0x40


def wsel(role, arch):
    return bytes([ROLE[role] + 3 * ARCH[arch]])


def wcall(method, msg=b"", blob=b"", flags=0):
    return bytes([WM.index(method) | flags]) + struct.pack("<H", len(msg)) + msg + struct.pack("<H", len(blob)) + blob


def fd(n, x):
    return varint(n << 3 | 1) + struct.pack("<d", x)


def fx64(n, v):
    return varint(n << 3 | 1) + struct.pack("<Q", v)


def sref(sid):
    return fv(1, sid)


def append(sid, tokens=(), extend=(), logits=False, send_seq=0):
    m = fv(1, sid) + (packed(2, extend) if extend else b"") + (packed(3, tokens) if tokens else b"")
    return m + (fv(4, 1) if logits else b"") + (fv(5, send_seq) if send_seq else b"")


def sync(sid, extend=(), send_seq=0):
    return fv(1, sid) + (packed(2, extend) if extend else b"") + (fv(3, send_seq) if send_seq else b"")


def imp(sid, seq, timeout=0.0):
    return fv(1, sid) + fv(2, seq) + (fd(3, timeout) if timeout else b"")


def sampler(t=0.7, k=5, p=0.9, rng=(1, 2, 3, 4)):
    return ff(1, t) + fv(2, k) + ff(3, p) + b"".join(fx64(4, r) for r in rng)


def step(sids, tokens, samplers=(), logits=False):
    return (packed(1, sids) + packed(2, tokens) + b"".join(fs(3, s) for s in samplers) +
            (fv(4, 1) if logits else b""))


# model/state.c's blob for the fuzzer's models (vocab 53, d 24, 2 blocks;
# depth 3, W_oh 8, W_og 8): header, tokens (full), zip, TLin history, window (full)
def state(arch, kind, n_tokens, win_start, win_len, zip_len, zip_pos, hist_len, syncs=0, tokens=None):
    d, nb, depth = 24, 2, 1 if arch == "transformer" else 3
    nl, zl = nb * depth, 0 if arch == "transformer" else nb * (depth - 1)
    b = struct.pack("<II6i7q", 0x54535431, kind, ARCH[arch], d, nl, nb, depth, 53, n_tokens, win_start, win_len,
                    zip_len, zip_pos, hist_len, syncs)
    if kind == 2:
        b += struct.pack("<%di" % n_tokens, *(tokens or [(7 * i + 3) % 53 for i in range(n_tokens)]))
    rows = zl * 2 * zip_len + nb * 2 * hist_len + (nl * 2 * win_len if kind == 2 else 0)
    return b + struct.pack("<%df" % (rows * d), *[((i * 37) % 19 - 9) * 0.01 for i in range(rows * d)])


T = lambda n, s=1: [(s + 5 * i) % 53 for i in range(n)]
put("worker", "info", wsel("both", "tconst") + wcall("Info") + wcall("Ping") + wcall("HealthCheck", fs(1, "")) +
    wcall("Unknown") + wcall("Foreign", flags=NO_MSG))
put("worker", "both_session", wsel("both", "tconst") + wcall("Open", sref(5)) +
    wcall("Append", append(5, T(10), logits=True)) +
    wcall("Step", step([5], [3], [sampler()], logits=True)) + wcall("Sync", sync(5, extend=T(5, 2))) +
    wcall("Step", step([5], [4])) + wcall("Info") + wcall("Close", sref(5)))
put("worker", "gen_ship_import", wsel("generation", "tconst") + wcall("Open", sref(1)) +
    wcall("Append", append(1, T(12), send_seq=1)) + wcall("Open", sref(2)) +
    wcall("Import", imp(2, 1, 5.0), blob=b"\x01") + wcall("Step", step([1, 2], [4, 4], [sampler(), sampler(0)])))
put("worker", "ctx_sync_ship", wsel("context", "tlin") + wcall("Connect", fs(1, "127.0.0.1:1")) +
    wcall("Open", sref(3)) + wcall("Sync", sync(3, extend=T(16), send_seq=2)) +
    wcall("Append", append(3, T(3), send_seq=3)) + wcall("Connect", fs(1, "!x")) +
    wcall("Step", step([3], [1])) + wcall("Import", imp(3, 2)))
put("worker", "gen_import_full", wsel("generation", "tconst") + wcall("Open", sref(9)) +
    wcall("Import", imp(9, 1), blob=state("tconst", 2, 3, 0, 3, 0, 0, 0)) +
    wcall("Step", step([9], [8], [sampler(1.0, 0, 1.0)])) + wcall("Append", append(9, T(6), logits=True)))
put("worker", "gen_import_sync_tlin", wsel("generation", "tlin") + wcall("Open", sref(4)) +
    wcall("Append", append(4, extend=T(16))) +
    wcall("Import", imp(4, 7), blob=state("tlin", 1, 16, 16, 0, 8, 8, 16, syncs=2)) +
    wcall("Step", step([4], [2])))
put("worker", "gen_import_sync_tconst", wsel("generation", "tconst") + wcall("Open", sref(6)) +
    wcall("Append", append(6, extend=T(8))) +
    wcall("Import", imp(6, 1), blob=state("tconst", 1, 8, 8, 0, 8, 0, 0, syncs=1)) +
    wcall("Step", step([6], [2], logits=True)))
put("worker", "transformer", wsel("both", "transformer") + wcall("Open", sref(1)) +
    wcall("Append", append(1, T(20), logits=True)) + wcall("Step", step([1], [5])) +
    wcall("Sync", sync(1)) + wcall("Append", append(1, T(2), extend=T(3))) + wcall("Close", sref(1)))
put("worker", "transformer_import", wsel("generation", "transformer") + wcall("Open", sref(2)) +
    wcall("Import", imp(2, 1), blob=state("transformer", 2, 2, 0, 2, 0, 0, 0)) +
    wcall("Step", step([2], [1], [sampler()])) + wcall("Append", append(2, T(4), send_seq=9)))
put("worker", "race", wsel("generation", "tconst") + wcall("Open", sref(7), flags=NO_WAIT) +
    wcall("Step", step([7], [1])) + wcall("Close", sref(7), flags=NO_WAIT) + wcall("Step", step([7], [2])) +
    wcall("Open", sref(7), flags=NO_WAIT) + wcall("Ping"))
put("worker", "refused", wsel("context", "tconst") + wcall("Import", imp(1, 1)) + wcall("Step", step([1], [1])) +
    wcall("Open", flags=NO_MSG) + wcall("Append", append(0, T(2), send_seq=1 << 62)) +
    wcall("Import", imp(0, 1), blob=b"\x01"))
put("worker", "bad", wsel("both", "tlin") + wcall("Open", sref(2)) + wcall("Append", append(2, [99], extend=[-1])) +
    wcall("Step", step([2, 2], [1, 1])) + wcall("Step", step([2], [1], [sampler(float("nan"), rng=(1, 2, 3))])) +
    wcall("Append", b"\x0a\x80") + wcall("Import", imp(2, 1), blob=b"TST1") + wcall("Connect", fs(1, "a:1")) +
    wcall("Sync", sync(2, extend=T(5))))

# ---- openai: completion request bodies (daemon/openai_parse.c) ----
put("openai", "greedy", '{"model": "fuzz-model", "prompt": "Hello", "max_tokens": 16, "temperature": 0}')
put("openai", "ids_stream", '{"prompt": [1, 2, 3], "stream": true, "stream_options": {"include_usage": true}, '
                            '"top_p": 0.9, "top_k": 40, "seed": 7, "stop": ["\\n", "User:"], "stop_token_ids": [0]}')
put("openai", "batch_of_one", '{"prompt": [[5, 6]], "ignore_eos": true, "session_id": "s1", "n": 1, "best_of": 1, '
                              '"echo": false, "logprobs": null, "presence_penalty": 0, "logit_bias": {}}')
put("openai", "refusals", '{"prompt": ["a", "b"], "n": 2, "max_tokens": -1, "temperature": "hot", "model": "other"}')
put("openai", "edges", '{"prompt": "a\\u00e9\\ud83d\\ude00", "max_tokens": 1e400, "seed": 9007199254740993, '
                       '"stop": "x", "suffix": "", "repetition_penalty": 1} ')
put("openai", "dup_nul", '{"prompt": "\\u0000", "prompt": [1]}')
put("openai", "not_object", '[{"prompt": [1]}] trailing')
