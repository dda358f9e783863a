#!/usr/bin/python3
"""export.py — writes model directories (config.json + model.safetensors).

What it is: the Python twin of `tconst init-model` plus a checkpoint converter.
  random   a seeded random-init model of any architecture / size
  convert  a PyTorch checkpoint (.pt: {'model_state_dict': ...} or a bare
           state dict) + a config json -> a model directory, names kept

What it is not: a trainer or a tokenizer exporter.

Run with Debian's python (torch + numpy): /usr/bin/python3 export.py --help
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from model import LAYER_PARAMS, Config, expected_shapes, layer_prefixes  # noqa: E402

DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


def random_weights(cfg, seed, scale=1.0):
    """Seeded random init, in execution order, as np.float32 arrays.

    Scaled so that activations stay O(1) and attention / logits are far
    from uniform (a parity test on a near-uniform model proves little):
      embedding ~ N(0, 1); linear weights ~ N(0, scale/sqrt(fan_in));
      biases ~ N(0, 0.1*scale); LayerNorm weight ~ 1 + N(0, 0.1), bias ~ N(0, 0.1).
    """
    rng = np.random.default_rng(seed)
    d, f = cfg.n_embd, cfg.ffn_hidden
    normal = lambda shape, std: (rng.standard_normal(shape) * std).astype(np.float32)
    w = {"embedding.weight": normal((cfg.vocab_size, d), 1.0)}
    for pre in layer_prefixes(cfg):
        for suf, shp in LAYER_PARAMS:
            shape = shp(d, f)
            if suf.startswith("norm") and suf.endswith(".weight"):
                a = 1.0 + normal(shape, 0.1)
            elif suf.startswith("norm"):
                a = normal(shape, 0.1)
            elif suf.endswith(".bias"):
                a = normal(shape, 0.1 * scale)
            else:
                a = normal(shape, scale / np.sqrt(shape[1]))
            w[pre + suf] = a.astype(np.float32)
    w["transformer.norm.weight"] = (1.0 + normal((d,), 0.1)).astype(np.float32)
    w["transformer.norm.bias"] = normal((d,), 0.1)
    return w


def write_model_dir(out_dir, cfg, tensors, dtype, metadata):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=2)
        f.write("\n")
    safetensors_io.save(os.path.join(out_dir, "model.safetensors"), tensors, dtype=dtype, metadata=metadata)


def cmd_random(a):
    arch = a.arch
    n_block = a.n_block if a.n_block is not None else (8 if arch == "transformer" else 2)
    d = {"architecture": arch, "vocab_size": a.vocab_size, "n_embd": a.n_embd, "n_head": a.n_head,
         "n_block": n_block, "ffn_hidden": a.ffn_hidden, "rope_base": a.rope_base, "norm_eps": a.norm_eps,
         "tie_word_embeddings": True, "bos_token_id": a.bos_token_id, "eos_token_id": a.eos_token_id}
    if arch != "transformer":
        d.update(block_inner_depth=a.block_inner_depth, history_window=a.history_window,
                 generate_window=a.generate_window)
    cfg = Config(d)
    if not -1 <= cfg.bos_token_id < cfg.vocab_size or not -1 <= cfg.eos_token_id < cfg.vocab_size:
        raise ValueError("bos_token_id / eos_token_id must be in [-1, vocab_size)")
    w = random_weights(cfg, a.seed, a.init_scale)
    meta = {"format": "pt", "generator": "tools/reference/export.py random", "seed": a.seed,
            "init_scale": a.init_scale}
    write_model_dir(a.out, cfg, w, DTYPES[a.dtype], meta)
    n = sum(x.size for x in w.values())
    print(f"wrote {a.out}: {arch}, {n} parameters, {DTYPES[a.dtype]}, seed {a.seed}", file=sys.stderr)


def _strip_prefix(name):
    for p in ("module.", "_orig_mod."):
        while name.startswith(p):
            name = name[len(p):]
    return name


def cmd_convert(a):
    import torch

    with open(a.config) as f:
        cfg = Config(json.load(f))
    ck = torch.load(a.checkpoint, map_location="cpu")
    if isinstance(ck, dict) and "model_state_dict" in ck:
        sd = ck["model_state_dict"]
    elif isinstance(ck, dict) and "state_dict" in ck and isinstance(ck["state_dict"], dict):
        sd = ck["state_dict"]
    else:
        sd = ck
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{a.checkpoint}: no state dict (expected {{'model_state_dict': ...}} or a bare state dict)")
    sd = {_strip_prefix(k): v for k, v in sd.items()}
    shapes = expected_shapes(cfg)
    out, dtypes, dropped = {}, {}, []
    for name, shape in shapes.items():
        if name not in sd:
            raise ValueError(f"{a.checkpoint}: missing tensor '{name}'")
        t = sd[name]
        if tuple(t.shape) != shape:
            raise ValueError(f"{a.checkpoint}: tensor '{name}' has shape {list(t.shape)}, config wants {list(shape)}")
        if a.dtype == "keep":
            src = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}.get(t.dtype)
            if src is None:
                raise ValueError(f"{a.checkpoint}: tensor '{name}' has dtype {t.dtype}; pass --dtype f32|f16|bf16")
            dtypes[name] = src
        else:
            dtypes[name] = DTYPES[a.dtype]
        out[name] = t.detach().to(torch.float32).contiguous().numpy()
    for name in sorted(set(sd) - set(shapes)):
        if name == "transformer.lm_head.weight":
            if not torch.equal(sd[name].float(), sd["embedding.weight"].float()):
                raise ValueError(f"{a.checkpoint}: '{name}' differs from embedding.weight; untied heads are not supported")
        dropped.append(name)
    meta = {"format": "pt", "generator": "tools/reference/export.py convert",
            "source": os.path.basename(a.checkpoint)}
    write_model_dir(a.out, cfg, out, dtypes, meta)
    print(f"wrote {a.out}: {cfg.architecture}, {len(out)} tensors", file=sys.stderr)
    for name in dropped:
        print(f"  dropped {name}", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("random", help="write a seeded random-init model directory")
    r.add_argument("--out", required=True, help="model directory to create")
    r.add_argument("--arch", required=True, choices=["tconstformer", "tlinformer", "transformer"])
    r.add_argument("--vocab-size", type=int, default=512)
    r.add_argument("--n-embd", type=int, default=64)
    r.add_argument("--n-head", type=int, default=4)
    r.add_argument("--n-block", type=int, default=None,
                   help="blocks (tconst/tlin, default 2) or layers (transformer, default 8)")
    r.add_argument("--block-inner-depth", type=int, default=4, help="H + 2 layers per block (not for transformer)")
    r.add_argument("--ffn-hidden", type=int, default=192)
    r.add_argument("--history-window", type=int, default=32, help="W_oh")
    r.add_argument("--generate-window", type=int, default=32, help="W_og")
    r.add_argument("--rope-base", type=float, default=10000.0)
    r.add_argument("--norm-eps", type=float, default=1e-5)
    r.add_argument("--bos-token-id", type=int, default=0)
    r.add_argument("--eos-token-id", type=int, default=1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--init-scale", type=float, default=1.0, help="multiplies linear-weight and bias stds")
    r.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    r.set_defaults(fn=cmd_random)

    c = sub.add_parser("convert", help="PyTorch checkpoint + config json -> model directory")
    c.add_argument("--checkpoint", required=True, help=".pt file: {'model_state_dict': ...} or a bare state dict")
    c.add_argument("--config", required=True, help="config.json for the checkpoint (DESIGN.md §3 keys)")
    c.add_argument("--out", required=True, help="model directory to create")
    c.add_argument("--dtype", choices=sorted(DTYPES) + ["keep"], default="keep",
                   help="tensor dtype in the output (default: keep the checkpoint's)")
    c.set_defaults(fn=cmd_convert)

    a = ap.parse_args(argv)
    try:
        a.fn(a)
    except (ValueError, KeyError, OSError) as e:
        print(f"export.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
