#!/usr/bin/env python3
"""make_seeds.py — writes the small seed corpora under fuzz/corpus/<target>/.

Run once when a format changes (the output is checked in). No dependencies:
protobuf messages are encoded by hand (varint and length-delimited fields),
which is all the tconst.v1 requests use."""
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
     "Tokenize", "Detokenize", "ModelInfo", "ServerInfo", "HealthCheck", "HealthWatch", "Reflection", "Unknown"]


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
put("request", "get_abort", call("GetSession", [fs(1, "nope")]) + call("Abort", [fs(1, "r1")]))
put("request", "tokenize", call("Tokenize", [fs(1, "the cat \xff")]) + call("Detokenize", [packed(1, [256, 300, 511, 600])]))
put("request", "info", call("ModelInfo", [b""]) + call("ServerInfo", [b""]) + call("Unknown", [b""]))
put("request", "health", call("HealthCheck", [fs(1, "tconst.v1.TConst")]) + call("HealthWatch", [fs(1, "")]))
put("request", "reflection", call("Reflection", [fs(7, b"") , fs(3, "tconst.proto"), fs(4, "tconst.v1.TConst"),
                                                 fs(5, "x")]))
put("request", "garbage", call("Generate", [b"\xff\xff\xff\xff\x0f"]) + call("Append", [b"\x0a\x80"]))
