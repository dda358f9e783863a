#!/usr/bin/env python3
"""Write a random-weight GGUF (v3, f32) for llama.cpp's "llama" architecture
with the sizes of tconst's baseline Transformer preset (`--arch transformer`).

Python 3 standard library only (no numpy, no gguf-py): the GGUF writer is
the ~60 lines below.

Mapping of tconst's baseline layer (model/weights.c) to llama.cpp tensors:
  norm1 (LayerNorm w+b)    -> blk.N.attn_norm.weight        (RMSNorm: no bias)
  qkv_proj.weight / .bias  -> blk.N.attn_qkv.weight / .bias (fused, as ours)
  out_proj.weight / .bias  -> blk.N.attn_output.weight / .bias
  norm2 (LayerNorm w+b)    -> blk.N.ffn_norm.weight         (RMSNorm: no bias)
  ffn.w1 / w3 / w2         -> blk.N.ffn_gate / ffn_up / ffn_down (SwiGLU)
  transformer.norm         -> output_norm.weight            (RMSNorm)
  tied embedding / head    -> token_embd.weight, no output.weight (llama.cpp
                              then uses token_embd as the head)
RoPE: llama's "normal" RoPE rotates consecutive pairs, as tconst's
interleaved RoPE does; base 10000 over the whole head.
The parameter count is tconst's minus the 2*n_layer+1 LayerNorm biases.

Weights are seeded random (not tconst's init stream): only speed is compared.
Random float32 values are made from random bits without numpy: random sign
and mantissa, a fixed exponent per tensor (|w| within 2x of s = 1/sqrt(fan_in),
2/sqrt(d) for the embedding, 0.02 for biases); norm gains in [1, 1.0625). No NaN, inf or denormals.
"""
import argparse
import struct
import sys

import math
import random

# tconst presets (model/config.c tc_config_preset); the baseline Transformer of
# equal size has n_block * inner_depth layers (2 * 4 = 8 for every preset).
PRESETS = {
    "tiny": dict(vocab=512, n_embd=64, n_head=4, ffn=192, n_layer=8),
    "small": dict(vocab=8192, n_embd=256, n_head=8, ffn=768, n_layer=8),
    "paper-41m": dict(vocab=50257, n_embd=432, n_head=12, ffn=1280, n_layer=8),
}

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGN = 32
# gguf value types
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9
GGML_TYPE_F32 = 0


def _str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _kv(key, vtype, value):
    out = _str(key) + struct.pack("<I", vtype)
    if vtype == T_UINT32:
        out += struct.pack("<I", value)
    elif vtype == T_INT32:
        out += struct.pack("<i", value)
    elif vtype == T_FLOAT32:
        out += struct.pack("<f", value)
    elif vtype == T_BOOL:
        out += struct.pack("<B", 1 if value else 0)
    elif vtype == T_STRING:
        out += _str(value)
    elif vtype == T_ARRAY:
        etype, items = value
        out += struct.pack("<IQ", etype, len(items))
        if etype == T_STRING:
            out += b"".join(_str(s) for s in items)
        elif etype == T_INT32:
            out += struct.pack("<%di" % len(items), *items)
        elif etype == T_FLOAT32:
            out += struct.pack("<%df" % len(items), *items)
        else:
            raise ValueError("unsupported array type %d" % etype)
    else:
        raise ValueError("unsupported type %d" % vtype)
    return out


def write_gguf(path, kvs, tensors):
    """kvs: list of (key, type, value); tensors: list of (name, shape, gen) where
    shape is (rows, cols) or (n,) as in PyTorch (ggml ne is it reversed) and
    gen(f) writes the rows*cols float32 little-endian values to f."""
    head = bytearray()
    head += GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(kvs))
    for k, t, v in kvs:
        head += _kv(k, t, v)
    off = 0
    offsets = []
    for name, shape, _ in tensors:
        ne = list(reversed(shape))
        head += _str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        head += struct.pack("<IQ", GGML_TYPE_F32, off)
        offsets.append(off)
        off += 4 * math.prod(shape)
        off += (-off) % ALIGN
    head += b"\0" * ((-len(head)) % ALIGN)
    with open(path, "wb") as f:
        f.write(head)
        base = f.tell()
        for (name, shape, gen), o in zip(tensors, offsets):
            pad = base + o - f.tell()
            assert pad >= 0
            f.write(b"\0" * pad)
            gen(f)
            assert f.tell() == base + o + 4 * math.prod(shape), name
    return base + off


def build(cfg, seed, ctx_train):
    V, d, H, F, L = cfg["vocab"], cfg["n_embd"], cfg["n_head"], cfg["ffn"], cfg["n_layer"]
    if d % H:
        raise SystemExit("n_embd %d not a multiple of n_head %d" % (d, H))
    hd = d // H
    rng = random.Random(seed)
    CHUNK = 1 << 20  # floats per write

    def rand_bits(shape, mask, bits):
        """float32 values (random_u32 & mask) | bits, written chunk by chunk
        (big-int bitwise ops over the whole chunk: fast in pure Python)."""
        n = math.prod(shape)

        def gen(f):
            left = n
            while left:
                k = min(left, CHUNK)
                raw = int.from_bytes(rng.randbytes(4 * k), "little")
                m = int.from_bytes(struct.pack("<I", mask) * k, "little")
                o = int.from_bytes(struct.pack("<I", bits) * k, "little")
                f.write(((raw & m) | o).to_bytes(4 * k, "little"))
                left -= k
        return gen

    def signed(shape, scale):  # random sign, |w| in [2^(c-1), 2^c), 2^c >= scale > 2^(c-1)
        e = min(max(127 + math.ceil(math.log2(scale)) - 1, 1), 254)
        return (shape, rand_bits(shape, 0x807FFFFF, e << 23))

    def gain(n):  # [1, 1.0625)
        return ((n,), rand_bits((n,), 0x0007FFFF, 0x3F800000))

    def lin(rows, cols, mult=1.0):  # (out, in)
        return signed((rows, cols), mult / math.sqrt(cols))

    tensors = [("token_embd.weight",) + signed((V, d), 2 / math.sqrt(d)),
               ("output_norm.weight",) + gain(d)]
    for i in range(L):
        p = "blk.%d." % i
        tensors += [
            (p + "attn_norm.weight",) + gain(d),
            (p + "attn_qkv.weight",) + lin(3 * d, d, 2.0),
            (p + "attn_qkv.bias",) + signed((3 * d,), 0.02),
            (p + "attn_output.weight",) + lin(d, d),
            (p + "attn_output.bias",) + signed((d,), 0.02),
            (p + "ffn_norm.weight",) + gain(d),
            (p + "ffn_gate.weight",) + lin(F, d),
            (p + "ffn_up.weight",) + lin(F, d),
            (p + "ffn_down.weight",) + lin(d, F),
        ]

    # SPM ("llama") vocabulary of dummy tokens: <unk> <s> </s>, 256 byte tokens,
    # fillers. Ids are fed directly; the text is never tokenized.
    if V < 3 + 256:
        raise SystemExit("vocab %d too small for the dummy SPM vocabulary (>= 259)" % V)
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    toks += ["tok%d" % i for i in range(V - len(toks))]
    ttype = [2, 3, 3] + [6] * 256 + [1] * (V - 259)
    kvs = [
        ("general.architecture", T_STRING, "llama"),
        ("general.name", T_STRING, "tconst-baseline-random"),
        ("general.alignment", T_UINT32, ALIGN),
        ("general.file_type", T_UINT32, 0),  # ALL_F32
        ("llama.vocab_size", T_UINT32, V),
        ("llama.context_length", T_UINT32, ctx_train),
        ("llama.embedding_length", T_UINT32, d),
        ("llama.block_count", T_UINT32, L),
        ("llama.feed_forward_length", T_UINT32, F),
        ("llama.attention.head_count", T_UINT32, H),
        ("llama.attention.head_count_kv", T_UINT32, H),
        ("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, 1e-5),
        ("llama.rope.dimension_count", T_UINT32, hd),
        ("llama.rope.freq_base", T_FLOAT32, 10000.0),
        ("tokenizer.ggml.model", T_STRING, "llama"),
        ("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, toks)),
        ("tokenizer.ggml.scores", T_ARRAY, (T_FLOAT32, [0.0] * V)),
        ("tokenizer.ggml.token_type", T_ARRAY, (T_INT32, ttype)),
        ("tokenizer.ggml.bos_token_id", T_UINT32, 1),
        ("tokenizer.ggml.eos_token_id", T_UINT32, 2),
        ("tokenizer.ggml.unknown_token_id", T_UINT32, 0),
        ("tokenizer.ggml.add_bos_token", T_BOOL, False),
    ]
    return kvs, tensors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", required=True, help="output .gguf path")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-head", type=int, help="override the preset's head count (same parameters and FLOPs, "
                    "another head size: a sensitivity check of llama.cpp's kernels)")
    ap.add_argument("--ctx-train", type=int, default=1 << 20,
                    help="llama.context_length written (default 1M: no n_ctx warning)")
    a = ap.parse_args()
    cfg = dict(PRESETS[a.preset])
    if a.n_head is not None:
        if a.n_head < 1 or cfg["n_embd"] % a.n_head:
            ap.error("--n-head %d does not divide n_embd %d" % (a.n_head, cfg["n_embd"]))
        cfg["n_head"] = a.n_head
    kvs, tensors = build(cfg, a.seed, a.ctx_train)
    size = write_gguf(a.out, kvs, tensors)
    n = sum(math.prod(shape) for _, shape, _ in tensors)
    print("%s: %s, %d tensors, %d parameters, %d bytes" % (a.out, a.preset, len(tensors), n, size))


if __name__ == "__main__":
    sys.exit(main())
