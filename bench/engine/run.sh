#!/usr/bin/env bash
# bench/engine/run.sh — the engine benchmarks of docs/benchmarks.md, in the
# order they were recorded. Writes CSV under bench/engine/results/ and the
# printed tables to results/*.txt, then the plots (bench/engine/plot.sh).
# Usage: bench/engine/run.sh [path/to/tconst]   (default build/tconst)
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:-build/tconst}
R=bench/engine/results
mkdir -p "$R"
run() { local name=$1; shift; echo "== tconst bench $*" | tee "$R/$name.txt"; "$T" bench "$@" --csv "$R/$name.csv" | tee -a "$R/$name.txt"; }

run floor-paper   floor --preset paper-41m --ctx 64K --reps 3
run itl-tiny      itl --preset tiny  --ctx 1K,4K,16K,64K,256K,1M --reps 2 --budget 120
run itl-small     itl --preset small --ctx 1K,4K,16K,64K,256K,1M --reps 1 --budget 240
run itl-paper     itl --preset paper-41m --ctx 1K,4K,16K,64K --reps 1 --budget 120
run batch-paper   batch --preset paper-41m --arch tconstformer --batch 1,4,16,64 --reps 1
run batch-small   batch --preset small --arch both --batch 1,4,16,64 --reps 2
run state-tiny    state --preset tiny --ctx 1K,4K,16K,64K,256K,1M --budget 120
run prefill-tiny  prefill --preset tiny --ctx 1K,4K,16K,64K,256K,1M --budget 120
run flat-tiny     flat --preset tiny --ctx 1K,1M --reps 4
run flat-small    flat --preset small --ctx 1K,1M --reps 2
bash bench/engine/plot.sh
