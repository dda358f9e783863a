#!/usr/bin/env bash
# parity.sh TCONST CMP GOLDEN_DIR — engine vs the Python reference's goldens.
# GOLDEN_DIR holds args (init-model flags), tokens.txt, logits.f32, prompt.
# Rebuilds the model from its seed (init-model is deterministic), streams
# the tokens one at a time, then prefill(P)-then-stream, and compares both
# with the reference logits.
set -euo pipefail
TCONST=$1 CMP=$2 G=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2046
"$TCONST" init-model $(cat "$G/args") --out "$tmp/model" >/dev/null
V=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$tmp/model/config.json")
"$TCONST" logits --model "$tmp/model" --tokens "$G/tokens.txt" --out "$tmp/stream.f32"
echo "one token at a time:"
"$CMP" "$tmp/stream.f32" "$G/logits.f32" "$V" 0
P=$(cat "$G/prompt")
"$TCONST" logits --model "$tmp/model" --tokens "$G/tokens.txt" --prompt "$P" --out "$tmp/prefill.f32"
echo "prefill of $P tokens, then one at a time:"
"$CMP" "$tmp/prefill.f32" "$G/logits.f32" "$V" $((P - 1))
