#!/usr/bin/python3
"""golden.py — writes the reference logits of a token stream (the parity target).

What it is: for tokens t[0..N), row i of the output is the fp32 logits after
token i, i.e. model.forward_logits over t[0:i+1] recomputed from scratch.
Output: raw little-endian float32, N rows of vocab_size, no header.

What it is not: a sampler; the C engine's parity test compares its own
logits against this file (DESIGN.md §7: max |dlogit| <= 1e-3*max(1,max|logit|),
identical argmax).

  golden.py --model DIR --tokens FILE --out FILE.f32 [--mode recompute|window]
  golden.py --model DIR --random-tokens N --seed S --write-tokens FILE [--out FILE.f32]
  golden.py --vocab-size V --random-tokens N --seed S --write-tokens FILE
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def read_tokens(path, vocab):
    with open(path) as f:
        text = f.read()
    toks = []
    for i, w in enumerate(text.split()):
        try:
            t = int(w)
        except ValueError:
            raise ValueError(f"{path}: token {i} ({w[:20]!r}) is not an integer") from None
        if vocab is not None and not 0 <= t < vocab:
            raise ValueError(f"{path}: token {i} = {t} outside [0, {vocab})")
        toks.append(t)
    if not toks:
        raise ValueError(f"{path}: no tokens")
    return toks


def write_tokens(path, toks):
    with open(path, "w") as f:
        for i in range(0, len(toks), 20):
            f.write(" ".join(str(t) for t in toks[i:i + 20]) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[-1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (config.json + model.safetensors)")
    ap.add_argument("--tokens", help="file of whitespace-separated token ids")
    ap.add_argument("--out", help="output: little-endian float32 [N, vocab_size]")
    ap.add_argument("--mode", choices=["recompute", "window"], default="recompute",
                    help="recompute: one full forward per step (the definition, default); "
                         "window: one forward per generate window (same math, faster)")
    ap.add_argument("--random-tokens", type=int, metavar="N", help="generate N random ids in [0, vocab)")
    ap.add_argument("--seed", type=int, default=0, help="seed for --random-tokens")
    ap.add_argument("--write-tokens", metavar="FILE", help="write the --random-tokens ids here")
    ap.add_argument("--vocab-size", type=int, help="vocab for --random-tokens without --model")
    ap.add_argument("--argmax-out", metavar="FILE", help="also write the argmax id of every row, one per line")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args(argv)
    try:
        return run(a)
    except (ValueError, KeyError, OSError) as e:
        print(f"golden.py: error: {e}", file=sys.stderr)
        return 1


def run(a):
    if a.random_tokens is None and a.tokens is None:
        raise ValueError("give --tokens FILE or --random-tokens N")
    if a.random_tokens is not None and a.tokens is not None:
        raise ValueError("--tokens and --random-tokens are exclusive")
    if a.out and not a.model:
        raise ValueError("--out needs --model")
    cfg = weights = None
    vocab = a.vocab_size
    if a.model:
        import model as ref  # torch is imported only when a model is needed
        if a.threads:
            ref.torch.set_num_threads(a.threads)
        cfg, weights = ref.load_model(a.model)
        if vocab is not None and vocab != cfg.vocab_size:
            raise ValueError(f"--vocab-size {vocab} != the model's vocab_size {cfg.vocab_size}")
        vocab = cfg.vocab_size
    if a.random_tokens is not None:
        if a.random_tokens < 1:
            raise ValueError("--random-tokens must be >= 1")
        if vocab is None:
            raise ValueError("--random-tokens needs --model or --vocab-size")
        toks = np.random.default_rng(a.seed).integers(0, vocab, size=a.random_tokens).tolist()
        if a.write_tokens:
            write_tokens(a.write_tokens, toks)
        elif not a.out:
            raise ValueError("--random-tokens needs --write-tokens or --out")
    else:
        toks = read_tokens(a.tokens, vocab)
    if not a.out:
        return 0

    t0 = time.time()
    logits = ref.stream_logits(cfg, weights, toks, mode=a.mode).numpy().astype("<f4")
    dt = time.time() - t0
    if not np.isfinite(logits).all():
        raise ValueError("non-finite logits (broken weights?)")
    with open(a.out, "wb") as f:
        f.write(logits.tobytes())
    if a.argmax_out:
        with open(a.argmax_out, "w") as f:
            f.write("\n".join(str(int(i)) for i in logits.argmax(axis=1)) + "\n")
    print(json.dumps({"model": a.model, "architecture": cfg.architecture, "steps": len(toks),
                      "vocab_size": cfg.vocab_size, "mode": a.mode, "max_abs_logit": float(np.abs(logits).max()),
                      "seconds": round(dt, 3), "out": a.out}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
