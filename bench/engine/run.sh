#!/usr/bin/env bash
# bench/engine/run.sh — the engine benchmarks of docs/benchmarks.md, in the
# order they were recorded. Writes CSV under bench/engine/results/ and the
# printed tables to results/*.txt (each replaced only by a run that
# succeeds), then the plots (bench/engine/plot.sh).
# Usage: bench/engine/run.sh [path/to/tconst]   (default build/tconst)
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:-build/tconst}
R=bench/engine/results
mkdir -p "$R"
# run NAME ARGS...: into $R/NAME.txt and .csv through temporary files, moved
# into place only when the run succeeds (a failed one stops the script and
# leaves the last results as they were)
tmp=
trap 'rm -f "$tmp.txt" "$tmp.csv"' EXIT
run() {
  local name=$1; shift
  tmp=$R/.$name.tmp
  echo "== tconst bench $*" | tee "$tmp.txt"
  "$T" bench "$@" --csv "$tmp.csv" | tee -a "$tmp.txt" || { echo "run.sh: $name failed; $R/$name.* unchanged" >&2; exit 1; }
  mv "$tmp.txt" "$R/$name.txt"
  if [ -f "$tmp.csv" ]; then mv "$tmp.csv" "$R/$name.csv"; fi
}

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
