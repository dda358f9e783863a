#!/usr/bin/env bash
# make_goldens.sh TCONST OUTDIR — regenerates the parity goldens listed in
# goldens.list with the fp32 Python reference (needs python3-torch).
set -euo pipefail
TCONST=$(readlink -f "$1") OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
grep -v '^#' "$HERE/goldens.list" | while IFS='|' read -r name args n prompt; do
  name=$(echo $name); n=$(echo $n); prompt=$(echo $prompt)
  [ -n "$name" ] || continue
  d="$OUT/$name"
  mkdir -p "$d"
  echo "$args" | sed 's/^ *//; s/ *$//' > "$d/args"
  echo "$prompt" > "$d/prompt"
  # shellcheck disable=SC2046
  "$TCONST" init-model $(cat "$d/args") --out "$tmp/$name" >/dev/null
  seed=$(sed -n 's/.*--seed \([0-9]*\).*/\1/p' "$d/args")
  /usr/bin/python3 "$HERE/golden.py" --model "$tmp/$name" --random-tokens "$n" --seed "$seed" --write-tokens "$d/tokens.txt"
  /usr/bin/python3 "$HERE/golden.py" --model "$tmp/$name" --tokens "$d/tokens.txt" --out "$d/logits.f32"
  echo "golden $name: $n tokens"
done
