#!/usr/bin/python3
"""selftest.py — checks of the reference model that can fail.

What it is: the reference's own tests, run before trusting its golden logits.
  rope          interleaved pairs pinned by explicit values; q(p).k(s)
                depends only on p - s; the float32 angle convention
  safetensors   F32 / F16 / BF16 round trips, rounding, metadata, bad files
  naive         all three architectures against a second, independent
                implementation (numpy float64, per-row and per-head loops,
                complex-number RoPE), every step of streams crossing several
                windows, W_oh > W_og and W_oh < W_og, H = 0, 1, 2
  window-only   tconst/tlin at N <= W_og equal the window path alone (the
                block's layers run as plain causal layers), and differ from
                it once N > W_og (the context path is live)
  stream        per-step recompute == one forward per window
  export        random init is deterministic; an F16 model loads as the
                f16-rounded F32 weights

What it is not: the C engine's parity test (that lives in tests/).
Exit status 0 when every check passes, 1 otherwise.

  /usr/bin/python3 tools/reference/selftest.py [-v]
"""

import argparse
import contextlib
import io
import os
import struct
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
import model as ref  # noqa: E402
import safetensors_io as sti  # noqa: E402

torch = ref.torch
VERBOSE = False
FAILS = []


def check(name, ok, detail=""):
    tag = "PASS" if ok else "FAIL"
    if not ok:
        FAILS.append(name)
    if VERBOSE or not ok:
        print(f"  {tag} {name} {detail}")
    return ok


def make_cfg(arch, **kw):
    d = dict(architecture=arch, vocab_size=37, n_embd=16, n_head=2, n_block=2, block_inner_depth=4,
             ffn_hidden=24, history_window=6, generate_window=4, rope_base=10000.0, norm_eps=1e-5,
             tie_word_embeddings=True, bos_token_id=0, eos_token_id=1)
    d.update(kw)
    if arch == "transformer":
        d.pop("block_inner_depth")
    return ref.Config(d)


# ------------------------------------------------------------------ naive --
# A second implementation, written independently of model.py: numpy float64,
# one query row and one head at a time, RoPE as complex multiplication with
# float64 angles, LayerNorm and softmax by hand. Keys carry their absolute
# position; "causal" is a filter on the key list.

class Naive:
    def __init__(self, cfg, weights):
        self.c = cfg
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        hd = cfg.head_dim
        self.freq = cfg.rope_base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)

    def ln(self, x, pre):
        mu = x.mean()
        var = ((x - mu) ** 2).mean()
        return (x - mu) / np.sqrt(var + self.c.norm_eps) * self.w[pre + "weight"] + self.w[pre + "bias"]

    def rot(self, vec, pos):
        out = np.empty_like(vec)
        hd = self.c.head_dim
        for h in range(self.c.n_head):
            seg = vec[h * hd:(h + 1) * hd]
            z = (seg[0::2] + 1j * seg[1::2]) * np.exp(1j * pos * self.freq)
            out[h * hd:(h + 1) * hd:2] = z.real
            out[h * hd + 1:(h + 1) * hd:2] = z.imag
        return out

    def qkv(self, L, row, pos):
        """-> (rotated q, rotated k, v) of one row at absolute position pos."""
        h = self.w[L + "qkv_proj.weight"] @ self.ln(row, L + "norm1.") + self.w[L + "qkv_proj.bias"]
        d = self.c.n_embd
        return self.rot(h[:d], pos), self.rot(h[d:2 * d], pos), h[2 * d:]

    def attend(self, q, keys):
        """keys: list of (pos, rotated k, v); one softmax over them; [] -> 0."""
        d, hd = self.c.n_embd, self.c.head_dim
        out = np.zeros(d)
        if not keys:
            return out
        for h in range(self.c.n_head):
            sl = slice(h * hd, (h + 1) * hd)
            s = np.array([q[sl] @ k[sl] for _, k, _ in keys]) / np.sqrt(hd)
            p = np.exp(s - s.max())
            p /= p.sum()
            out[sl] = sum(pi * v[sl] for pi, (_, _, v) in zip(p, keys))
        return out

    def post(self, L, r, a):
        r = r + self.w[L + "out_proj.weight"] @ a + self.w[L + "out_proj.bias"]
        h = self.ln(r, L + "norm2.")
        g = self.w[L + "ffn.w1.weight"] @ h
        return r + self.w[L + "ffn.w2.weight"] @ (g / (1 + np.exp(-g)) * (self.w[L + "ffn.w3.weight"] @ h))

    def logits(self, row):
        return self.w["embedding.weight"] @ self.ln(row, "transformer.norm.")

    def causal_layer(self, L, rows, first_pos, extra_keys=()):
        """rows at first_pos..: causal self-attention (+ a second softmax over extra_keys)."""
        proj = [self.qkv(L, x, first_pos + i) for i, x in enumerate(rows)]
        keys = [(first_pos + i, k, v) for i, (_, k, v) in enumerate(proj)]
        out = []
        for i, x in enumerate(rows):
            a = self.attend(proj[i][0], [kk for kk in keys if kk[0] <= first_pos + i])
            if extra_keys:
                a = a + self.attend(proj[i][0], extra_keys)
            out.append(self.post(L, x, a))
        return out

    def transformer(self, tokens):
        rows = [self.w["embedding.weight"][t] for t in tokens]
        for i in range(self.c.n_block):
            rows = self.causal_layer(f"transformer.transformer_layers.{i}.", rows, 0)
        return self.logits(rows[-1])

    def tconst(self, tokens):
        c = self.c
        n = len(tokens)
        n_ctx = (n - 1) // c.generate_window * c.generate_window
        hs = max(0, n_ctx - c.history_window)
        E = self.w["embedding.weight"]
        ctx = [E[t] for t in tokens[:n_ctx]]  # positions 0..n_ctx-1
        win = [E[t] for t in tokens[n_ctx:]]  # positions n_ctx..n-1
        for b in range(c.n_block):
            pre = f"transformer.transformer_layers.{b}."
            Lc = pre + "compress_context_layer."
            cp = [self.qkv(Lc, x, p) for p, x in enumerate(ctx)]
            ckeys = [(p, k, v) for p, (_, k, v) in enumerate(cp)]
            zip_ = [self.post(Lc, ctx[p], self.attend(cp[p][0], ckeys)) for p in range(hs, n_ctx)]
            win = self.causal_layer(Lc, win, n_ctx, ckeys if c.architecture == "tlinformer" else ())
            for j in range(c.n_hidden):
                L = pre + f"hidden_layers.{j}."
                zp = [self.qkv(L, z, hs + i) for i, z in enumerate(zip_)]
                zkeys = [(hs + i, k, v) for i, (_, k, v) in enumerate(zp)]
                new_zip = [self.post(L, z, self.attend(zp[i][0], zkeys)) for i, z in enumerate(zip_)]
                win = self.causal_layer(L, win, n_ctx, zkeys)
                zip_ = new_zip
            Lr = pre + "restore_context_shape_layer."
            zkeys = [(hs + i, k, v) for i, (_, k, v) in enumerate(self.qkv(Lr, z, hs + i) for i, z in enumerate(zip_))]
            ctx = [self.post(Lr, ctx[p], self.attend(cp[p][0], zkeys)) for p in range(n_ctx)]
            win = self.causal_layer(Lr, win, n_ctx, zkeys)
        return self.logits(win[-1])

    def __call__(self, tokens):
        return self.transformer(tokens) if self.c.architecture == "transformer" else self.tconst(tokens)


# ----------------------------------------------------------------- checks --

def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def test_rope():
    print("rope")
    cfg = make_cfg("transformer", n_embd=16, n_head=2)  # hd = 8
    hd = cfg.head_dim
    theta = cfg.rope_base ** (-2.0 * np.arange(hd // 2) / hd)
    # Interleaved pairs: e_{2i} of head h at position p -> cos(p th_i) e_{2i} + sin(p th_i) e_{2i+1}.
    ok = True
    for h, i, p in [(0, 0, 1), (0, 1, 7), (1, 3, 11), (1, 2, 100)]:
        x = torch.zeros(1, cfg.n_embd)
        x[0, h * hd + 2 * i] = 1.0
        y = ref.rope(cfg, x, p)[0].numpy()
        want = np.zeros(cfg.n_embd)
        want[h * hd + 2 * i] = np.cos(p * theta[i])
        want[h * hd + 2 * i + 1] = np.sin(p * theta[i])
        ok &= np.abs(y - want).max() < 1e-5
        x = torch.zeros(1, cfg.n_embd)
        x[0, h * hd + 2 * i + 1] = 1.0  # the odd partner: -sin, cos
        y = ref.rope(cfg, x, p)[0].numpy()
        want = np.zeros(cfg.n_embd)
        want[h * hd + 2 * i] = -np.sin(p * theta[i])
        want[h * hd + 2 * i + 1] = np.cos(p * theta[i])
        ok &= np.abs(y - want).max() < 1e-5
    check("interleaved pairs (explicit values)", ok)
    check("position 0 is the identity", bool(torch.equal(ref.rope(cfg, torch.arange(32.).reshape(2, 16), 0)[:1],
                                                            torch.arange(16.).reshape(1, 16))))
    # q at p, k at s: the dot product depends only on p - s.
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(1, cfg.n_embd, generator=g), torch.randn(1, cfg.n_embd, generator=g)

    def dots(p, s):
        a, b = ref.rope(cfg, q, p)[0], ref.rope(cfg, k, s)[0]
        return np.array([float(a[h * hd:(h + 1) * hd] @ b[h * hd:(h + 1) * hd]) for h in range(cfg.n_head)])

    worst = 0.0
    for delta in (0, 1, 3, 17):
        base = dots(delta, 0)
        for shift in (1, 10, 250, 4000):
            worst = max(worst, np.abs(dots(delta + shift, shift) - base).max())
    check("q(p).k(s) depends only on p - s", worst < 2e-3, f"(max drift {worst:.2e})")
    check("... and does depend on p - s", np.abs(dots(5, 0) - dots(0, 0)).max() > 1e-2)
    # The fp32 angle convention: angle = float32(pos) * float32(theta), cos/sin in float32.
    x = torch.zeros(1, cfg.n_embd)
    x[0, 2] = 1.0  # pair i = 1 of head 0
    p = 123457
    th = np.float32(np.float64(np.float32(cfg.rope_base)) ** (-2.0 * 1 / hd))
    ang = np.float32(np.float32(p) * th)
    y = ref.rope(cfg, x, p)[0].numpy()
    check("angle = float32(pos) * float32(theta_i)",
          abs(y[2] - np.cos(np.float64(ang))) < 1e-6 and abs(y[3] - np.sin(np.float64(ang))) < 1e-6,
          f"(got {y[2]:.7f} {y[3]:.7f})")


def test_safetensors(tmp):
    print("safetensors")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    b = np.array([1.0, -2.5, 0.0, 65504.0, 1e-3, 3.14159], dtype=np.float32)
    c = np.array([1.0, 1.00390625, 1.01171875, -0.0, 3.0e38, 1e-40], dtype=np.float32)
    e = np.zeros((0, 4), dtype=np.float32)
    path = os.path.join(tmp, "rt.safetensors")
    sti.save(path, {"a": a, "b": b, "c": c, "e": e, "scalar": np.float32(7.0)},
             dtype={"a": "F32", "b": "F16", "c": "BF16", "e": "F32", "scalar": "F32"}, metadata={"k": "v"})
    hdr, meta, base = sti.read_header(path)
    check("header aligned, metadata kept", base % 8 == 0 and meta == {"k": "v"})
    check("dtypes recorded", [hdr[n]["dtype"] for n in "abc"] == ["F32", "F16", "BF16"])
    got = sti.load(path)
    check("F32 exact", got["a"].dtype == np.float32 and np.array_equal(got["a"], a))
    check("F16 = numpy's half rounding", np.array_equal(got["b"], b.astype(np.float16).astype(np.float32)))
    # ties go to even; 3e38 -> 226/128 * 2^127; the denormal 1e-40 -> 2^-133
    want_c = np.array([1.0, 1.0, 1.015625, -0.0, 226 / 128 * 2.0 ** 127, 2.0 ** -133], dtype=np.float32)
    check("BF16 round-to-nearest-even", np.array_equal(got["c"], want_c) and np.signbit(got["c"][3]),
          f"(got {got['c']})")
    check("BF16 exact for bf16 values",
          np.array_equal(sti.bf16_bits_to_f32(sti.f32_to_bf16_bits(got["c"])), got["c"]))
    check("empty and 0-d tensors", got["e"].shape == (0, 4) and got["scalar"].shape == () and got["scalar"] == 7.0)
    check("subset read", list(sti.load(path, ["b"])) == ["b"])
    # Bad files are rejected with a message.
    raw = open(path, "rb").read()
    bad = {
        "truncated": raw[:len(raw) - 4],
        "header past end": struct.pack("<Q", 10 ** 6) + raw[8:],
        "not json": raw[:8] + b"x" + raw[9:],
        "short": raw[:5],
    }
    for what, blob in bad.items():
        p = os.path.join(tmp, "bad.safetensors")
        open(p, "wb").write(blob)
        try:
            sti.load(p)
            ok = False
        except ValueError:
            ok = True
        check(f"rejects: {what}", ok)
    for what, entry in {"overlap": {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                    "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
                        "size mismatch": {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                        "unknown dtype": {"x": {"dtype": "I8", "shape": [8], "data_offsets": [0, 8]}}}.items():
        import json
        h = json.dumps(entry).encode()
        p = os.path.join(tmp, "bad.safetensors")
        open(p, "wb").write(struct.pack("<Q", len(h)) + h + bytes(8))
        try:
            sti.load(p)
            ok = False
        except ValueError:
            ok = True
        check(f"rejects: {what}", ok)


def random_model(cfg, seed):
    return ref.as_weights(export.random_weights(cfg, seed))


def test_naive():
    print("naive (independent float64 implementation, every step)")
    cases = [
        (make_cfg("transformer", n_block=3), 23),
        (make_cfg("tconstformer"), 23),  # W_og 4 < W_oh 6, H = 2
        (make_cfg("tlinformer"), 23),
        (make_cfg("tconstformer", n_block=3, block_inner_depth=3, generate_window=5, history_window=3), 23),
        (make_cfg("tlinformer", n_block=1, block_inner_depth=2, generate_window=3, history_window=7), 17),
    ]
    for cfg, n in cases:
        t0 = time.time()
        w = random_model(cfg, 11)
        naive = Naive(cfg, {k: v.numpy() for k, v in w.items()})
        toks = np.random.default_rng(2).integers(0, cfg.vocab_size, n).tolist()
        got = ref.stream_logits(cfg, w, toks).numpy()
        err = max(rel_err(got[i], naive(toks[:i + 1])) for i in range(n))
        label = (f"{cfg.architecture} n_block={cfg.n_block} depth={cfg.block_inner_depth} "
                 f"W_og={cfg.generate_window} W_oh={cfg.history_window} N=1..{n}")
        check(label, err < 1e-4, f"(max rel err {err:.1e}, {time.time() - t0:.1f}s)")


def flattened_window_only(cfg, w):
    """The tconst/tlin layers renamed as a plain transformer (the window path alone)."""
    d = cfg.to_dict()
    d.update(architecture="transformer", n_block=cfg.n_block * cfg.block_inner_depth)
    tcfg = ref.Config(d)
    tw = {k: v for k, v in w.items() if not k.startswith("transformer.transformer_layers.")}
    for i, pre in enumerate(ref.layer_prefixes(cfg)):
        for suf, _ in ref.LAYER_PARAMS:
            tw[f"transformer.transformer_layers.{i}.{suf}"] = w[pre + suf]
    return tcfg, tw


def test_window_only():
    print("window-only (N_ctx = 0)")
    for arch in ("tconstformer", "tlinformer"):
        cfg = make_cfg(arch, generate_window=6, history_window=5)
        w = random_model(cfg, 3)
        tcfg, tw = flattened_window_only(cfg, w)
        toks = np.random.default_rng(4).integers(0, cfg.vocab_size, 15).tolist()
        got = ref.stream_logits(cfg, w, toks).numpy()
        win = ref.stream_logits(tcfg, tw, toks).numpy()
        W = cfg.generate_window
        err_in = rel_err(got[:W], win[:W])
        check(f"{arch}: N <= W_og equals the window path", err_in < 1e-6, f"(rel err {err_in:.1e})")
        err_out = min(rel_err(got[i], win[i]) for i in range(W, len(toks)))
        check(f"{arch}: N > W_og differs from it (context path live)", err_out > 1e-3, f"(min rel diff {err_out:.1e})")


def test_stream_modes():
    print("stream modes")
    for arch in ("tconstformer", "tlinformer", "transformer"):
        cfg = make_cfg(arch)
        w = random_model(cfg, 8)
        toks = np.random.default_rng(9).integers(0, cfg.vocab_size, 30).tolist()
        a = ref.stream_logits(cfg, w, toks, mode="recompute").numpy()
        b = ref.stream_logits(cfg, w, toks, mode="window").numpy()
        err = rel_err(b, a)
        check(f"{arch}: recompute == window", err < 1e-5, f"(rel err {err:.1e})")
        check(f"{arch}: forward_logits == last row", bool(torch.equal(
            ref.forward_logits(cfg, w, toks), torch.from_numpy(a[-1]))))


def quiet_export(argv):
    """export.main with its progress and error lines swallowed."""
    with contextlib.redirect_stderr(io.StringIO()):
        return export.main(argv)


def test_export(tmp):
    print("export")
    rc = []
    for name, dt, seed in (("a", "f32", 5), ("b", "f32", 5), ("h", "f16", 5), ("c", "f32", 6)):
        rc.append(quiet_export(["random", "--out", os.path.join(tmp, name), "--arch", "tconstformer",
                               "--vocab-size", "29", "--n-embd", "8", "--n-head", "2", "--ffn-hidden", "12",
                               "--history-window", "4", "--generate-window", "3", "--dtype", dt,
                               "--seed", str(seed)]))
    check("export random exits 0", rc == [0, 0, 0, 0])
    rd = lambda n: open(os.path.join(tmp, n, "model.safetensors"), "rb").read()
    check("same seed, same bytes", rd("a") == rd("b"))
    check("other seed, other bytes", rd("a") != rd("c"))
    cfg, wa = ref.load_model(os.path.join(tmp, "a"))
    _, wh = ref.load_model(os.path.join(tmp, "h"))
    check("F16 model = f16-rounded F32 weights",
          all(torch.equal(wh[k], wa[k].half().float()) for k in wa))
    check("config round trip", cfg.to_dict() == ref.Config(cfg.to_dict()).to_dict() and cfg.generate_window == 3)
    # convert: a {'model_state_dict'} checkpoint with an extra rope buffer
    sd = {k: v.clone() for k, v in wa.items()}
    sd["transformer.transformer_layers.0.compress_context_layer.rope.inv_freq"] = torch.ones(2)
    torch.save({"model_state_dict": sd, "epoch": 3}, os.path.join(tmp, "ck.pt"))
    rc = quiet_export(["convert", "--checkpoint", os.path.join(tmp, "ck.pt"),
                      "--config", os.path.join(tmp, "a", "config.json"), "--out", os.path.join(tmp, "conv")])
    _, wc = ref.load_model(os.path.join(tmp, "conv"))
    names = set(sti.read_header(os.path.join(tmp, "conv", "model.safetensors"))[0])
    check("convert keeps names and values, drops inv_freq",
          rc == 0 and names == set(wa) and all(torch.equal(wc[k], wa[k]) for k in wa))
    del sd["embedding.weight"]
    torch.save(sd, os.path.join(tmp, "bad.pt"))
    rc = quiet_export(["convert", "--checkpoint", os.path.join(tmp, "bad.pt"),
                      "--config", os.path.join(tmp, "a", "config.json"), "--out", os.path.join(tmp, "conv2")])
    check("convert rejects a missing tensor", rc == 1)
    for bad, key in (({"architecture": "tconstformer"}, "vocab_size"),
                     ({**cfg.to_dict(), "n_head": 3}, "n_head"),
                     ({**cfg.to_dict(), "architecture": "rnn"}, "architecture")):
        try:
            ref.Config(bad)
            ok = False
        except ValueError as e:
            ok = key in str(e)
        check(f"config error names '{key}'", ok)


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description="tools/reference self-test")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every check")
    VERBOSE = ap.parse_args().verbose
    torch.manual_seed(0)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        test_rope()
        test_safetensors(tmp)
        test_naive()
        test_window_only()
        test_stream_modes()
        test_export(tmp)
    if FAILS:
        print(f"selftest: {len(FAILS)} FAILED: {', '.join(FAILS)}")
        return 1
    print(f"selftest: all checks passed ({time.time() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
