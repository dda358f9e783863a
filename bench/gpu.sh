#!/usr/bin/env bash
# bench/gpu.sh — the GPU benchmarks of issue 7, run by scripts/gpu-check.sh
# after the GPU tests pass (or by hand on a GPU machine). Each figure is
# measured side by side with its floor in the same process (`bench floor`:
# device copy bandwidth and cuBLAS SGEMM), as on the CPU (docs/benchmarks.md).
#   floor   paper-41m: hit step at batch 1 vs weight bytes / bandwidth,
#           sync at N = 64K, 256K, 1M vs the cuBLAS SGEMM rate
#   flat    hit-step p50 at 1K and 1M, alternated
#   batch   aggregate tokens/s at B = 1, 16, 256, both architectures
#           (replayed graphs, the default); again with TC_CUDA_GRAPHS=0
#   (batch-nographs, floor-64k-nographs) and =1 (batch-graphs,
#   floor-64k-graphs); floor-64k-simt (TC_CUDA_ATT_MMA=0) and
#   floor-64k-nofuse (TC_CUDA_FUSE=0), batch-nopdl and floor-64k-nopdl
#   (TC_CUDA_PDL=0), batch-nopairs (TC_CUDA_PAIRS=0): the A/B of the
#   tensor-core attention, of the fused LayerNorm / SwiGLU, of programmatic
#   dependent launch and of the hit step's softmax pairs in two blocks
#   itl     per-token latency vs N, tconstformer and the baseline of equal
#           size (the baseline until --budget stops it)
# For a developer's own GPU box with the Debian build dependencies, like
# scripts/gpu-check.sh: NOT for this workplace's lent device machines (no
# Debian packages there, at most 8 files back from $OUT, 600 s a command,
# below BENCH_TIMEOUT); there the same benchmarks are stages of
# scripts/gpu-run-bundle.sh (docs/gpu.md).
# Output: LOGS/bench/<name>.txt and .csv, LOGS default ./gpu-logs; when OUT
# is set, one tarball $OUT/gpu-bench.tar.gz instead. Knobs: BUILD (default
# build-gpu), DEV (default cuda:0), BENCH_TIMEOUT (s per benchmark, default
# 900), ITL_BUDGET (itl's --budget, default 60 s: the baseline's O(N^2)
# prefill stops there), ONLY (names to run, e.g. ONLY="batch
# batch-graphs"). Exit status 0 when every benchmark ran.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    LOGS=$(mktemp -d)
    trap 'tar -C "$LOGS" -czf "$OUT/gpu-bench.tar.gz" .; rm -rf "$LOGS"' EXIT
else
    LOGS=${LOGS:-./gpu-logs}
fi
DEV=${DEV:-cuda:0}
T=$BUILD/tconst-cuda
R=$LOGS/bench
mkdir -p "$R"
if [ ! -x "$T" ]; then
    echo "bench/gpu.sh: $T not found: configure with -DTC_CUDA=ON (scripts/gpu-check.sh does)" >&2
    exit 1
fi
fail=0
run() { # run NAME SUB ARGS...
    local name=$1
    shift
    case " ${ONLY:-$name} " in *" $name "*) ;; *) return 0 ;; esac
    echo "== tconst-cuda bench $* --device $DEV" | tee "$R/$name.txt"
    timeout "${BENCH_TIMEOUT:-900}" "$T" bench "$@" --device "$DEV" --csv "$R/$name.csv" 2>&1 | tee -a "$R/$name.txt"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || { echo "FAILED ($rc): $name" | tee -a "$R/$name.txt"; fail=1; }
}
run floor-64k floor --preset paper-41m --ctx 64K --reps 3
run floor-256k floor --preset paper-41m --ctx 256K --reps 3
run floor-1m floor --preset paper-41m --ctx 1M --reps 3
run flat flat --preset paper-41m --ctx 1K,1M --reps 2
run batch batch --preset paper-41m --batch 1,16,256 --reps 2
# the A/B runs: each default against its alternative, separate processes
# run back to back (compare with the two above)
TC_CUDA_GRAPHS=0 run batch-nographs batch --preset paper-41m --batch 1,16,256 --reps 2
TC_CUDA_GRAPHS=0 run floor-64k-nographs floor --preset paper-41m --ctx 64K --reps 3
TC_CUDA_GRAPHS=1 run batch-graphs batch --preset paper-41m --batch 1,16,256 --reps 2
TC_CUDA_GRAPHS=1 run floor-64k-graphs floor --preset paper-41m --ctx 64K --reps 3
TC_CUDA_ATT_MMA=0 run floor-64k-simt floor --preset paper-41m --ctx 64K --reps 3
TC_CUDA_FUSE=0 run floor-64k-nofuse floor --preset paper-41m --ctx 64K --reps 3
TC_CUDA_PDL=0 run batch-nopdl batch --preset paper-41m --batch 1,16,256 --reps 2
TC_CUDA_PDL=0 run floor-64k-nopdl floor --preset paper-41m --ctx 64K --reps 3
TC_CUDA_PAIRS=0 run batch-nopairs batch --preset paper-41m --batch 1,16,256 --reps 2
run itl itl --preset paper-41m --arch both --ctx 1K,16K,64K,256K,1M --reps 1 --budget "${ITL_BUDGET:-60}"
exit $fail
