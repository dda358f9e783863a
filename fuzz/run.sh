#!/usr/bin/env bash
# fuzz/run.sh SECONDS [TARGET...] — builds the libFuzzer targets with clang
# (ASan + UBSan) in build-fuzz and runs each for SECONDS, one after
# another, on its corpus (fuzz/corpus/<target>, read-only; new inputs go to
# build-fuzz/corpus/<target>). A crash leaves its input in
# build-fuzz/crash/<target>/; copy it to fuzz/regressions/<target>/ with
# the fix, so the replay test keeps it. Prints per target: seconds, runs.
# Env: FUZZ_JOBS (parallel targets, default 1), FUZZ_NICE (default 19).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors config bpe request worker openai)
B=build-fuzz
command -v clang >/dev/null || { echo "fuzz: clang not installed (scripts/deps.sh)"; exit 1; }
CC=clang cmake -S . -B $B -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTC_FUZZ=ON -DTC_WERROR=OFF >/dev/null
cmake --build $B -j "$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null
# gRPC and OpenBLAS internals are not linked here; leaks are ours
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
run_one() {
  local t=$1
  mkdir -p $B/corpus/$t $B/crash/$t
  local log=$B/fuzz_$t.log t0=$SECONDS rc=0
  nice -n "${FUZZ_NICE:-19}" $B/fuzz/fuzz_$t -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix=$B/crash/$t/ \
    $B/corpus/$t fuzz/corpus/$t >"$log" 2>&1 || rc=$?
  local runs
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  printf 'fuzz %-12s %5ds  %10s runs  %s\n' "$t" $((SECONDS - t0)) "$runs" \
    "$([ $rc -eq 0 ] && echo ok || echo "CRASH rc=$rc, see $log and $B/crash/$t/")"
  return $rc
}
fail=0
jobs=${FUZZ_JOBS:-1}
if [ "$jobs" -le 1 ]; then
  for t in "${targets[@]}"; do run_one "$t" || fail=1; done
else
  pids=()
  for t in "${targets[@]}"; do
    run_one "$t" & pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}" || fail=1; pids=("${pids[@]:1}"); fi
  done
  for p in "${pids[@]}"; do wait "$p" || fail=1; done
fi
exit $fail
