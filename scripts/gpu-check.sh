#!/usr/bin/env bash
# gpu-check.sh — the whole GPU check in one command, for a developer's own
# box with an NVIDIA GPU, the CUDA toolkit and the Debian build
# dependencies (scripts/deps.sh): configure with the CUDA backend required
# (TC_CUDA=ON), build, run the gpu-labelled tests (which must PASS, not
# skip: a skip on a machine with a GPU is a failure here), then the unit
# and parity suites of the same build.
# NOT for this workplace's lent device machines: they have none of our
# Debian packages (the configure fails), bring back at most 8 files from
# $OUT, and stop a command at 600 s, below CTEST_TIMEOUT and bench/gpu.sh's
# BENCH_TIMEOUT. There: scripts/gpu-bundle.sh here, then
# scripts/gpu-run-bundle.sh on the device (docs/gpu.md).
# Logs go to ./gpu-logs, or, when OUT is set, into one tarball
# $OUT/gpu-check-logs.tar.gz (summary.txt also beside it); the logs:
#   env.txt       nvidia-smi, nvcc, cmake, compiler, commit
#   configure.log build.log
#   gpu.log       ctest -L gpu (per-op NMSE table, greedy parity)
#   cpu.log       ctest -L 'unit|parity'
#   e2e.log       ctest -L e2e with spawned workers on the GPU (TC_E2E_DEVICE)
#   bench.log     bench/gpu.sh (paper-41m floors, flatness, batch, itl);
#                 tables and CSVs in bench/
#   summary.txt   one line per stage, and the verdict
# Exit status: 0 when every stage passed.
#
# Knobs (environment): BUILD (build dir, default build-gpu), DEV (default
# cuda:0), E2E_GRAPHS=1 adds an e2e run with TC_CUDA_GRAPHS=1 (e2e-graphs.log),
# E2E=0 / BENCH=0 skip those stages, JOBS (default nproc), CUDA_ARCH
# (default "80;90"; e.g. "90" to halve compile time on an H100),
# CTEST_TIMEOUT (default 1800 s per test).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    OUTDIR=$(mktemp -d)
    trap 'cp "$OUTDIR/summary.txt" "$OUT/"; tar -C "$OUTDIR" -czf "$OUT/gpu-check-logs.tar.gz" .; rm -rf "$OUTDIR"' EXIT
else
    OUTDIR=./gpu-logs
fi
BUILD=${BUILD:-build-gpu}
JOBS=${JOBS:-$(nproc)}
CUDA_ARCH=${CUDA_ARCH:-80;90}
CTEST_TIMEOUT=${CTEST_TIMEOUT:-1800}
mkdir -p "$OUTDIR"
SUMMARY="$OUTDIR/summary.txt"
: >"$SUMMARY"
fail=0
stage() { # stage NAME STATUS
    printf '%-10s %s\n' "$1" "$2" | tee -a "$SUMMARY"
    [ "$2" = ok ] || fail=1
}

# CMake finds nvcc on PATH or in /usr/local/cuda; make the usual place visible
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
fi

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) dirty paths"
    echo "host: $(uname -a)"
    echo "cpus: $(nproc)"
    echo "--- nvidia-smi"
    timeout 20 nvidia-smi 2>&1 || echo "(nvidia-smi unavailable)"
    timeout 20 nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv 2>&1 || true
    echo "--- nvcc"
    nvcc --version 2>&1 || echo "(nvcc not found)"
    echo "--- cmake"
    cmake --version 2>&1 | head -1
    echo "--- cc"
    cc --version 2>&1 | head -1
} >"$OUTDIR/env.txt" 2>&1
have_gpu=0
if grep -q '^GPU ' <<<"$(timeout 20 nvidia-smi -L 2>/dev/null)"; then have_gpu=1; fi
stage gpu "$([ $have_gpu = 1 ] && echo ok || echo 'none visible (nvidia-smi -L)')"

if cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTC_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH" \
    >"$OUTDIR/configure.log" 2>&1; then
    stage configure ok
else
    stage configure "FAILED (configure.log; missing Debian packages? scripts/deps.sh)"
    echo "verdict: FAILED" | tee -a "$SUMMARY"
    exit 1
fi

if nice -n 5 cmake --build "$BUILD" -j "$JOBS" >"$OUTDIR/build.log" 2>&1; then
    stage build ok
else
    stage build "FAILED (build.log)"
    echo "verdict: FAILED" | tee -a "$SUMMARY"
    exit 1
fi

# GPU tests: with a GPU present, SKIPPED counts as failure
(cd "$BUILD" && ctest -L gpu --output-on-failure -V --timeout "$CTEST_TIMEOUT") >"$OUTDIR/gpu.log" 2>&1
rc=$?
n_skip=$(grep -c 'SKIPPED: no CUDA device' "$OUTDIR/gpu.log" || true)
n_tests=$(grep -cE 'Test +#[0-9]+: gpu_' "$OUTDIR/gpu.log" || true)
if [ "$n_tests" = 0 ]; then
    stage gpu-tests "FAILED (no gpu tests registered: was the CUDA backend built?)"
elif [ $rc -ne 0 ]; then
    stage gpu-tests "FAILED (gpu.log)"
elif [ "$n_skip" != 0 ]; then
    stage gpu-tests "FAILED ($n_skip skipped: the tests saw no CUDA device; nvidia-smi saw one: $([ $have_gpu = 1 ] && echo yes || echo no))"
else
    stage gpu-tests ok
fi
# a skip for another reason (the NCCL test on a one-GPU machine) is not a
# failure, but the summary says so
grep -h 'SKIPPED:' "$OUTDIR/gpu.log" | grep -v 'no CUDA device' | sed 's/^[0-9]*: /  note: /' | sort -u | tee -a "$SUMMARY"

(cd "$BUILD" && ctest -L 'unit|parity' --output-on-failure -j "$JOBS" --timeout "$CTEST_TIMEOUT") \
    >"$OUTDIR/cpu.log" 2>&1
stage unit+parity "$([ $? = 0 ] && echo ok || echo 'FAILED (cpu.log)')"

# the e2e suite with tconstd's spawned workers on the GPU (--device); the
# in-process layout and attached-worker tests stay on the CPU (harness.py)
if [ "${E2E:-1}" != 0 ]; then
    (cd "$BUILD" && TC_E2E_DEVICE="${DEV:-cuda:0}" ctest -L e2e --output-on-failure -j 4 --timeout "$CTEST_TIMEOUT") \
        >"$OUTDIR/e2e.log" 2>&1
    stage e2e-cuda "$([ $? = 0 ] && echo ok || echo 'FAILED (e2e.log)')"
else
    printf '%-10s %s\n' e2e-cuda "skipped (E2E=0)" | tee -a "$SUMMARY"
fi
# E2E_GRAPHS=1: the e2e suite again with the workers' hit steps captured as
# CUDA graphs (TC_CUDA_GRAPHS=1, inherited by the spawned workers)
if [ "${E2E_GRAPHS:-0}" = 1 ]; then
    (cd "$BUILD" && TC_CUDA_GRAPHS=1 TC_E2E_DEVICE="${DEV:-cuda:0}" ctest -L e2e --output-on-failure -j 4 \
        --timeout "$CTEST_TIMEOUT") >"$OUTDIR/e2e-graphs.log" 2>&1
    stage e2e-graphs "$([ $? = 0 ] && echo ok || echo 'FAILED (e2e-graphs.log)')"
fi

if [ "${BENCH:-1}" = 0 ]; then
    printf '%-10s %s\n' bench "skipped (BENCH=0)" | tee -a "$SUMMARY"
elif [ -x bench/gpu.sh ] || [ -f bench/gpu.sh ]; then
    BUILD="$BUILD" OUT= LOGS="$OUTDIR" DEV="${DEV:-cuda:0}" bash bench/gpu.sh >"$OUTDIR/bench.log" 2>&1
    stage bench "$([ $? = 0 ] && echo ok || echo 'FAILED (bench.log)')"
else
    echo "no GPU benchmarks yet (bench/gpu.sh; issue 7)" >"$OUTDIR/bench.log"
    printf '%-10s %s\n' bench "not present (issue 7)" | tee -a "$SUMMARY"
fi

echo "verdict: $([ $fail = 0 ] && echo PASSED || echo FAILED)" | tee -a "$SUMMARY"
exit $fail
