#!/usr/bin/env bash
# bench/engine/compare.sh BEFORE AFTER — the same `tconst bench` runs with
# two binaries, alternated, so both see the same machine load. BEFORE is a
# build of an older tree with cli/cmd_bench.c copied in. Writes
# results/compare.txt only when every run succeeds (a failed run leaves the
# last one in place).
set -euo pipefail
[ $# = 2 ] || { echo "usage: bench/engine/compare.sh BEFORE/tconst AFTER/tconst" >&2; exit 2; }
cd "$(dirname "$0")/../.."
B=$1 A=$2 R=bench/engine/results
mkdir -p "$R"
tmp=$(mktemp "$R/.compare.XXXXXX")
trap 'rm -f "$tmp"' EXIT
for args in "itl --preset small --arch both --ctx 1K,16K --reps 1" \
            "batch --preset small --arch tconstformer --batch 1,16 --reps 2" \
            "floor --preset paper-41m --ctx 16K --reps 1"; do
  for which in before after; do
    bin=$B; [ $which = after ] && bin=$A
    echo "== $which: tconst bench $args"
    $bin bench $args
  done
done 2>&1 | tee "$tmp"
mv "$tmp" "$R/compare.txt"
