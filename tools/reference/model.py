"""model.py — the fp32 ground-truth reference for TConstFormer, TLinFormer and
the baseline Transformer (the contract: DESIGN.md §1, §2, §7).

What it is: a plain FULL RECOMPUTE of the model from scratch over all N
tokens, written to be read next to DESIGN.md §1: one function per layer
kind, the contract's formula quoted above the line that computes it. The C
engine's caches (window K/V, zip K/V, syncs) must reproduce exactly these
logits for every step of a stream.

What it is not: fast, cached, batched over sessions, or trainable. Pure fp32
(torch float32 on the CPU); no autograd.

Conventions (the C engine matches these bit-for-bit where it can):
  * RoPE, interleaved pairs (x[2i], x[2i+1]) within each head of hd = d/nh:
      theta_i = float32( float64(base) ** (-2*i/hd) )     (pow in float64)
      angle   = float32(pos) * theta_i                     (float32 multiply)
      cos/sin of the float32 angle, in float32
      x0' = x0*cos - x1*sin ;  x1' = x0*sin + x1*cos
    base is first rounded to float32, as the C config stores it.
  * Att(Q@p, K,V@s): per head softmax(RoPE(Q,p) RoPE(K,s)^T / sqrt(hd)) V.
    An attention over zero keys contributes 0 (the N_ctx = 0 case).
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from safetensors_io import load as st_load

ARCHS = ("tconstformer", "tlinformer", "transformer")
LAYER_PARAMS = (
    # (suffix, shape as a function of d, F)
    ("norm1.weight", lambda d, f: (d,)),
    ("norm1.bias", lambda d, f: (d,)),
    ("qkv_proj.weight", lambda d, f: (3 * d, d)),
    ("qkv_proj.bias", lambda d, f: (3 * d,)),
    ("out_proj.weight", lambda d, f: (d, d)),
    ("out_proj.bias", lambda d, f: (d,)),
    ("norm2.weight", lambda d, f: (d,)),
    ("norm2.bias", lambda d, f: (d,)),
    ("ffn.w1.weight", lambda d, f: (f, d)),
    ("ffn.w3.weight", lambda d, f: (f, d)),
    ("ffn.w2.weight", lambda d, f: (d, f)),
)


# ---------------------------------------------------------------- config --

class Config:
    """config.json (DESIGN §3). Unknown keys are ignored; a missing or
    inconsistent key is a ValueError naming it."""

    def __init__(self, d):
        def req_int(k, lo=1):
            if k not in d:
                raise ValueError(f"config: missing key '{k}'")
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
                raise ValueError(f"config: key '{k}' must be an integer")
            if v < lo:
                raise ValueError(f"config: key '{k}' = {v} must be >= {lo}")
            return int(v)

        arch = d.get("architecture")
        if arch is None:
            raise ValueError("config: missing key 'architecture'")
        if arch not in ARCHS:
            raise ValueError(f"config: key 'architecture': unknown '{arch}' (expected {', '.join(ARCHS)})")
        self.architecture = arch
        self.vocab_size = req_int("vocab_size", 2)
        self.n_embd = req_int("n_embd", 2)
        self.n_head = req_int("n_head")
        self.n_block = req_int("n_block")
        self.ffn_hidden = req_int("ffn_hidden")
        if arch == "transformer":
            self.block_inner_depth = 1
            self.history_window = int(d.get("history_window") or 0)
            self.generate_window = int(d.get("generate_window") or 0)
        else:
            self.block_inner_depth = req_int("block_inner_depth", 2)
            self.history_window = req_int("history_window")
            self.generate_window = req_int("generate_window")
        # As written in config.json; the math uses them rounded to float32,
        # as the C engine stores them (rope_base_f32, norm_eps_f32).
        def num(k, default):
            v = d.get(k, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"config: key '{k}' must be a finite number")
            return float(v)

        self.rope_base = num("rope_base", 10000.0)
        self.norm_eps = num("norm_eps", 1e-5)
        self.tie_word_embeddings = d.get("tie_word_embeddings", True)
        self.bos_token_id = int(d.get("bos_token_id", -1))
        self.eos_token_id = int(d.get("eos_token_id", -1))
        if self.n_embd % self.n_head:
            raise ValueError(f"config: n_head {self.n_head} must divide n_embd {self.n_embd}")
        self.head_dim = self.n_embd // self.n_head
        if self.head_dim % 2:
            raise ValueError(f"config: head dim n_embd/n_head = {self.head_dim} must be even for interleaved RoPE")
        if not self.rope_base > 1.0:
            raise ValueError(f"config: key 'rope_base' = {self.rope_base} must be > 1")
        if not self.norm_eps > 0.0:
            raise ValueError(f"config: key 'norm_eps' = {self.norm_eps} must be > 0")
        if self.tie_word_embeddings is not True:
            raise ValueError("config: key 'tie_word_embeddings' must be true (lm_head is tied to embedding)")

    @property
    def rope_base_f32(self):
        return float(np.float32(self.rope_base))

    @property
    def norm_eps_f32(self):
        return float(np.float32(self.norm_eps))

    @property
    def n_hidden(self):
        """H = block_inner_depth - 2 hidden layers per block."""
        return self.block_inner_depth - 2

    def to_dict(self):
        d = {"architecture": self.architecture, "vocab_size": self.vocab_size, "n_embd": self.n_embd,
             "n_head": self.n_head, "n_block": self.n_block}
        if self.architecture != "transformer":
            d["block_inner_depth"] = self.block_inner_depth
        d["ffn_hidden"] = self.ffn_hidden
        if self.architecture != "transformer":
            d["history_window"] = self.history_window
            d["generate_window"] = self.generate_window
        d.update(rope_base=self.rope_base, norm_eps=self.norm_eps, tie_word_embeddings=True,
                 bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id)
        return d


def layer_prefixes(cfg):
    """State-dict prefixes of every layer, in execution order."""
    if cfg.architecture == "transformer":
        return [f"transformer.transformer_layers.{i}." for i in range(cfg.n_block)]
    out = []
    for b in range(cfg.n_block):
        p = f"transformer.transformer_layers.{b}."
        out.append(p + "compress_context_layer.")
        out += [p + f"hidden_layers.{j}." for j in range(cfg.n_hidden)]
        out.append(p + "restore_context_shape_layer.")
    return out


def expected_shapes(cfg):
    """name -> shape of every tensor the model needs (lm_head is tied)."""
    d, f = cfg.n_embd, cfg.ffn_hidden
    shapes = {"embedding.weight": (cfg.vocab_size, d)}
    for pre in layer_prefixes(cfg):
        for suf, shp in LAYER_PARAMS:
            shapes[pre + suf] = shp(d, f)
    shapes["transformer.norm.weight"] = (d,)
    shapes["transformer.norm.bias"] = (d,)
    return shapes


def check_weights(cfg, weights):
    """Raises ValueError on a missing tensor or a wrong shape."""
    for name, shp in expected_shapes(cfg).items():
        if name not in weights:
            raise ValueError(f"weights: missing tensor '{name}'")
        if tuple(weights[name].shape) != tuple(shp):
            raise ValueError(f"weights: tensor '{name}' has shape {list(weights[name].shape)}, want {list(shp)}")


def load_model(model_dir):
    """Model directory (config.json + model.safetensors) -> (cfg, weights).
    weights: name -> torch.float32 tensor; extra tensors are ignored."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = Config(json.load(f))
    names = expected_shapes(cfg).keys()
    arrays = st_load(os.path.join(model_dir, "model.safetensors"), names)
    weights = {k: torch.from_numpy(v) for k, v in arrays.items()}
    check_weights(cfg, weights)
    return cfg, weights


class Layer:
    """The weights of one layer (every layer kind has the same ones)."""

    def __init__(self, weights, prefix):
        w = lambda s: weights[prefix + s].float()
        self.norm1_w, self.norm1_b = w("norm1.weight"), w("norm1.bias")
        self.qkv_w, self.qkv_b = w("qkv_proj.weight"), w("qkv_proj.bias")  # [3d, d], [3d]
        self.out_w, self.out_b = w("out_proj.weight"), w("out_proj.bias")  # [d, d], [d]
        self.norm2_w, self.norm2_b = w("norm2.weight"), w("norm2.bias")
        self.w1, self.w3, self.w2 = w("ffn.w1.weight"), w("ffn.w3.weight"), w("ffn.w2.weight")


# ------------------------------------------------------------ primitives --

def layer_norm(x, w, b, eps):
    """LayerNorm over the last dim, biased variance, affine."""
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def rope_thetas(cfg):
    """theta_i = float32(base ** (-2i/hd)), the power taken in float64.  [hd/2]"""
    hd = cfg.head_dim
    i = np.arange(hd // 2, dtype=np.float64)
    return torch.from_numpy(np.power(np.float64(cfg.rope_base_f32), -2.0 * i / hd).astype(np.float32))


def rope(cfg, x, pos0):
    """RoPE, interleaved pairs, rows at absolute positions pos0, pos0+1, ...
    x: [n, d] (heads side by side) -> [n, d]."""
    n, d = x.shape
    hd = cfg.head_dim
    pos = torch.arange(pos0, pos0 + n, dtype=torch.float64).to(torch.float32)  # exact below 2^24
    angle = pos[:, None] * rope_thetas(cfg)[None, :]  # float32 * float32   [n, hd/2]
    cos, sin = torch.cos(angle)[:, None, :], torch.sin(angle)[:, None, :]  # [n, 1, hd/2]
    xp = x.reshape(n, cfg.n_head, hd // 2, 2)
    x0, x1 = xp[..., 0], xp[..., 1]  # [n, nh, hd/2]
    # x0' = x0*cos - x1*sin ;  x1' = x0*sin + x1*cos
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.reshape(n, d)


def proj(cfg, L, Y):
    """proj(Y) = norm1(Y) . qkv_proj^T + b, split into Q | K | V (unrotated)."""
    h = layer_norm(Y, L.norm1_w, L.norm1_b, cfg.norm_eps_f32) @ L.qkv_w.T + L.qkv_b  # [n, 3d]
    d = cfg.n_embd
    return h[:, :d], h[:, d:2 * d], h[:, 2 * d:]


def att(cfg, Q, p, K, V, s, causal=False):
    """Att(Q@p, K,V@s) = per head softmax(RoPE(Q,p) . RoPE(K,s)^T / sqrt(hd)) . V,
    heads concatenated. Causal: a query at position a sees keys at positions <= a.
    Q: [nq, d], K, V: [nk, d] unrotated -> [nq, d]. Zero keys -> zeros."""
    nq, d = Q.shape
    nk = K.shape[0]
    if nq == 0 or nk == 0:
        return torch.zeros(nq, d, dtype=torch.float32)
    nh, hd = cfg.n_head, cfg.head_dim
    q = rope(cfg, Q, p).reshape(nq, nh, hd).transpose(0, 1)  # [nh, nq, hd]
    k = rope(cfg, K, s).reshape(nk, nh, hd).transpose(0, 1)  # [nh, nk, hd]
    v = V.reshape(nk, nh, hd).transpose(0, 1)  # [nh, nk, hd]
    scores = (q @ k.transpose(1, 2)) / math.sqrt(hd)  # [nh, nq, nk]
    if causal:
        qpos = torch.arange(p, p + nq)[:, None]
        kpos = torch.arange(s, s + nk)[None, :]
        visible = kpos <= qpos  # [nq, nk]
        assert bool(visible.any(dim=1).all()), "causal attention: a query sees no key"
        scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return (probs @ v).transpose(0, 1).reshape(nq, d)


def post(cfg, L, R, A):
    """Post(R, A): R' = R + A . out_proj^T + b_o;
    return R' + w2( silu(w1 . norm2(R')) (*) w3 . norm2(R') )."""
    R1 = R + A @ L.out_w.T + L.out_b
    h = layer_norm(R1, L.norm2_w, L.norm2_b, cfg.norm_eps_f32)
    return R1 + (F.silu(h @ L.w1.T) * (h @ L.w3.T)) @ L.w2.T


def output_logits(cfg, weights, x):
    """logits = LN_f(x) . E^T (transformer.norm; lm_head tied to E).  x: [n, d] -> [n, V]"""
    h = layer_norm(x, weights["transformer.norm.weight"], weights["transformer.norm.bias"], cfg.norm_eps_f32)
    return h @ weights["embedding.weight"].T


def embed(weights, tokens):
    return weights["embedding.weight"][torch.as_tensor(list(tokens), dtype=torch.long)].float()


# ---------------------------------------------------------- architectures --

def windows(cfg, N):
    """r = ((N-1) mod W_og) + 1, N_ctx = N - r, hs = max(0, N_ctx - W_oh),
    Wz = N_ctx - hs. Returns (r, n_ctx, hs)."""
    r = ((N - 1) % cfg.generate_window) + 1
    n_ctx = N - r
    hs = max(0, n_ctx - cfg.history_window)
    return r, n_ctx, hs


def transformer_hidden(cfg, weights, tokens):
    """Baseline: per layer X <- Post(X, Att_causal(proj(X)@0)).  -> X [N, d]"""
    X = embed(weights, tokens)
    for pre in layer_prefixes(cfg):
        L = Layer(weights, pre)
        Q, K, V = proj(cfg, L, X)
        X = post(cfg, L, X, att(cfg, Q, 0, K, V, 0, causal=True))
    return X


def compress_layer(cfg, L, C, X, n_ctx, hs, tlin):
    """(Qc,Kc,Vc) = proj(C);
    Z = Post(C[hs:], Att(Qc[hs:]@hs, Kc,Vc@0))          (focused attention)
    X <- Post(X, Att_causal(proj(X)@N_ctx))
    TLin: X <- Post(X, Att_causal(self) + Att(Qx@N_ctx, Kc,Vc@0)).
    Returns (Z, X, Qc); Qc is reused by the restore layer."""
    Qc, Kc, Vc = proj(cfg, L, C)
    Z = post(cfg, L, C[hs:], att(cfg, Qc[hs:], hs, Kc, Vc, 0))
    Qx, Kx, Vx = proj(cfg, L, X)
    A = att(cfg, Qx, n_ctx, Kx, Vx, n_ctx, causal=True)
    if tlin:
        A = A + att(cfg, Qx, n_ctx, Kc, Vc, 0)  # a second, separate softmax
    return Z, post(cfg, L, X, A), Qc


def hidden_layer(cfg, L, Z, X, n_ctx, hs):
    """(Qz,Kz,Vz) = proj(Z), (Qx,Kx,Vx) = proj(X);
    Z <- Post(Z, Att(Qz@hs, Kz,Vz@hs));
    X <- Post(X, Att_causal(Qx,Kx,Vx@N_ctx) + Att(Qx@N_ctx, Kz,Vz@hs)).
    The window reads the zip K/V of this layer's INPUT Z."""
    Qz, Kz, Vz = proj(cfg, L, Z)
    Qx, Kx, Vx = proj(cfg, L, X)
    Z_new = post(cfg, L, Z, att(cfg, Qz, hs, Kz, Vz, hs))
    A = att(cfg, Qx, n_ctx, Kx, Vx, n_ctx, causal=True) + att(cfg, Qx, n_ctx, Kz, Vz, hs)
    return Z_new, post(cfg, L, X, A)


def restore_layer(cfg, L, C, Qc, Z, X, n_ctx, hs, need_c):
    """(.,Kz,Vz) = proj(Z);
    C' = Post(C, Att(Qc@0, Kz,Vz@hs))   (Qc: the compress layer's, residual: block input C)
    X' = Post(X, Att_causal(self) + Att(Qx@N_ctx, Kz,Vz@hs)).
    The last block's C' is never used (need_c False): skipped."""
    _, Kz, Vz = proj(cfg, L, Z)
    Qx, Kx, Vx = proj(cfg, L, X)
    C_new = post(cfg, L, C, att(cfg, Qc, 0, Kz, Vz, hs)) if need_c else None
    A = att(cfg, Qx, n_ctx, Kx, Vx, n_ctx, causal=True) + att(cfg, Qx, n_ctx, Kz, Vz, hs)
    return C_new, post(cfg, L, X, A)


def tconst_hidden(cfg, weights, tokens):
    """TConstFormer / TLinFormer over N = len(tokens) tokens -> the window's X [r, d]
    (rows at positions N_ctx .. N-1)."""
    N = len(tokens)
    r, n_ctx, hs = windows(cfg, N)
    tlin = cfg.architecture == "tlinformer"
    C = embed(weights, tokens[:n_ctx])  # [N_ctx, d]   block 1: E[tokens[0:N_ctx]]
    X = embed(weights, tokens[n_ctx:])  # [r, d]       block 1: E[tokens[N_ctx:N]]
    for b in range(cfg.n_block):
        pre = f"transformer.transformer_layers.{b}."
        Z, X, Qc = compress_layer(cfg, Layer(weights, pre + "compress_context_layer."), C, X, n_ctx, hs, tlin)
        for j in range(cfg.n_hidden):
            Z, X = hidden_layer(cfg, Layer(weights, pre + f"hidden_layers.{j}."), Z, X, n_ctx, hs)
        C, X = restore_layer(cfg, Layer(weights, pre + "restore_context_shape_layer."), C, Qc, Z, X, n_ctx, hs,
                             need_c=b + 1 < cfg.n_block)
    return X


# ------------------------------------------------------------ entry points --

def as_weights(weights):
    """Accepts numpy or torch values -> dict of torch.float32 tensors."""
    return {k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v, dtype=np.float32))).float()
            for k, v in weights.items()}


def final_rows(cfg, weights, tokens):
    """The last hidden rows the forward over `tokens` produces: the window rows
    (positions N_ctx..N-1) for tconst/tlin, all N rows for the transformer."""
    tokens = list(tokens)
    if not tokens:
        raise ValueError("forward: no tokens")
    if cfg.architecture == "transformer":
        return transformer_hidden(cfg, weights, tokens)
    return tconst_hidden(cfg, weights, tokens)


@torch.no_grad()
def forward_window_logits(cfg, weights, tokens):
    """Logits of every row of final_rows.  [rows, V]"""
    return output_logits(cfg, weights, final_rows(cfg, weights, tokens))


@torch.no_grad()
def forward_logits(cfg, weights, tokens):
    """Full recompute over all N tokens -> logits of the LAST token, [V] float32."""
    return output_logits(cfg, weights, final_rows(cfg, weights, tokens)[-1:])[0]


@torch.no_grad()
def stream_logits(cfg, weights, tokens, mode="recompute"):
    """Logits for every step of a stream: row i = logits after token i.  [N, V]

    mode "recompute": literally forward_logits(tokens[0:i+1]) for each i.
    mode "window": one forward per window (tconst/tlin: N = end of each
      W_og window; transformer: one forward over everything) and every row
      of it. Same math — a row depends only on N_ctx and the rows before it —
      but GEMM shapes differ, so results can differ in the last bits.
    """
    tokens = list(tokens)
    N = len(tokens)
    rows = []
    if mode == "recompute":
        for i in range(N):
            rows.append(forward_logits(cfg, weights, tokens[:i + 1])[None, :])
    elif mode == "window":
        if cfg.architecture == "transformer":
            rows.append(forward_window_logits(cfg, weights, tokens))
        else:
            W = cfg.generate_window
            for start in range(0, N, W):
                rows.append(forward_window_logits(cfg, weights, tokens[:min(start + W, N)]))
    else:
        raise ValueError(f"unknown mode {mode!r} (recompute or window)")
    out = torch.cat(rows, dim=0)
    assert out.shape == (N, cfg.vocab_size)
    return out
