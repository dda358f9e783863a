#!/usr/bin/env bash
# test_bench.sh TCONST [TCONST_CUDA] — `tconst bench` on the tiny preset: the CSVs are
# complete and consistent (not timed: no assertion on speed), the state
# figures show the design's promise (tconstformer's state bytes the same at
# every N, the baseline's KV cache linear in N), and bad flags get clear
# errors. Label: unit.
set -euo pipefail
T=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export TMPDIR=$tmp
fail() { echo "FAIL $*"; exit 1; }

"$T" bench state --preset tiny --ctx 1K,4K,16K --csv "$tmp/state.csv" >/dev/null
[ "$(wc -l <"$tmp/state.csv")" -eq 7 ] || fail "state.csv: $(cat "$tmp/state.csv")"
awk -F, 'NR > 1 && $2 == "tconstformer" { s[$3] = $4 } END {
    if (s[1024] <= 0 || s[1024] != s[4096] || s[4096] != s[16384]) { print "tconstformer state not flat:", s[1024], s[4096], s[16384]; exit 1 } }' \
    "$tmp/state.csv" || fail "state flatness"
awk -F, 'NR > 1 && $2 == "transformer" { s[$3] = $4 } END {
    if (s[1024] <= 0 || s[4096] != 4 * s[1024] || s[16384] != 16 * s[1024]) { print "baseline KV not linear:", s[1024], s[4096], s[16384]; exit 1 } }' \
    "$tmp/state.csv" || fail "baseline state"
echo "ok   state: tconstformer bytes equal at 1K/4K/16K, baseline KV cache linear in N"

"$T" bench batch --preset tiny --batch 1,2,4 --reps 1 --csv "$tmp/batch.csv" >"$tmp/batch.txt"
[ "$(wc -l <"$tmp/batch.csv")" -eq 7 ] || fail "batch.csv: $(cat "$tmp/batch.csv")"
awk -F, 'NR > 1 {
    n++
    if ($5 <= 0) { print "step_ms <= 0:", $0; exit 1 }
    tps = $3 / ($5 / 1e3)
    if (tps / $6 < 0.999 || tps / $6 > 1.001) { print "tokens_s != B / step:", $0; exit 1 }
    if ($3 == 1) base = $6
    if ($6 / base / $7 < 0.999 || $6 / base / $7 > 1.001) { print "speedup != tokens_s / tokens_s at B=1:", $0; exit 1 } }
    END { if (n != 6) { print "rows:", n; exit 1 } }' "$tmp/batch.csv" || fail "batch.csv inconsistent"
grep -q "tconstformer *1 .* 1.00$" "$tmp/batch.txt" || fail "no B=1 row: $(cat "$tmp/batch.txt")"
echo "ok   batch: 2 archs x 3 sizes, tokens_s = B / step, speedup relative to B=1"

"$T" bench flat --preset tiny --ctx 1K,4K --reps 1 --csv "$tmp/flat.csv" >/dev/null
awk -F, 'NR == 2 { if ($2 != 1024 || $3 != 4096 || $4 <= 0 || $5 <= 0 || $8 <= 0 || $9 < 1) { print; exit 1 }; ok = 1 }
    END { if (!ok) exit 1 }' "$tmp/flat.csv" || fail "flat.csv: $(cat "$tmp/flat.csv")"
echo "ok   flat: both contexts timed"

expect_err() { # expect_err PATTERN ARGS...: exit 1 or 2 and PATTERN on stderr
    local pat=$1
    shift
    local rc=0
    "$T" bench "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ] || fail "bench $*: exit $rc, want an error"
    grep -q -- "$pat" "$tmp/err" || fail "bench $*: stderr '$(cat "$tmp/err")' lacks '$pat'"
}
expect_err "not a list of positive counts" batch --preset tiny --batch 0
expect_err "at most 4096" batch --preset tiny --batch 1,4000,100
expect_err "unexpected 'x'" batch --preset tiny --batch 4x
expect_err "unknown preset" state --preset huge --ctx 1K
expect_err "unknown sub-benchmark" nosuch
expect_err "expected cpu or cuda:N" batch --preset tiny --device gpu0
expect_err "expected cpu or cuda:N" batch --preset tiny --device cuda:-1
expect_err "no CUDA backend; use tconst-cuda" floor --preset tiny --device cuda:0
expect_err "cannot write" state --preset tiny --ctx 1K --csv "$tmp/no/such/dir/x.csv"
echo "ok   bad flags: clear errors"

# --sampling top-p: the host sampler on the rows, or the backend's sample op
"$T" bench batch --preset tiny --arch tconstformer --batch 1,3 --reps 1 --sampling top-p >"$tmp/topp.txt"
grep -q "on the host, from the downloaded logits" "$tmp/topp.txt" || fail "top-p batch: $(cat "$tmp/topp.txt")"
TC_CPU_SAMPLE=1 "$T" bench batch --preset tiny --arch tconstformer --batch 1,3 --reps 1 --sampling top-p >"$tmp/topp1.txt"
grep -q "drawn by the backend's sample op" "$tmp/topp1.txt" || fail "top-p batch, sample op: $(cat "$tmp/topp1.txt")"
[ "$(grep -c "tconstformer *[13] " "$tmp/topp1.txt")" -eq 2 ] || fail "top-p rows: $(cat "$tmp/topp1.txt")"
expect_err "expected greedy or top-p" batch --preset tiny --sampling nucleus
TC_CPU_SAMPLE=yes expect_err "TC_CPU_SAMPLE 'yes': expected 0 or 1" batch --preset tiny
echo "ok   batch --sampling top-p: on the host, and through the sample op (TC_CPU_SAMPLE=1)"

# tconst-cuda (built with the CUDA backend): a device that is not there is
# a clear error, with or without a GPU on this machine
if [ -n "${2:-}" ]; then
    T=$2
    expect_err "cuda" batch --preset tiny --batch 1 --device cuda:255
    echo "ok   tconst-cuda: --device cuda:255 refused"
    # the CUDA knobs are checked before the device is looked for
    TC_CUDA_WEIGHTS=bf8 expect_err "TC_CUDA_WEIGHTS 'bf8': expected f32, bf16 or f16" batch --preset tiny --device cuda:0
    TC_CUDA_GRAPHS=yes expect_err "TC_CUDA_GRAPHS 'yes': expected 0, 1 or 2" batch --preset tiny --device cuda:0
    TC_CUDA_PROFILE=on expect_err "TC_CUDA_PROFILE 'on': expected 0, 1 or 2" batch --preset tiny --device cuda:0
    TC_CUDA_ATT_MMA=yes expect_err "TC_CUDA_ATT_MMA 'yes': expected 0 or 1" batch --preset tiny --device cuda:0
    TC_CUDA_FUSE=3 expect_err "TC_CUDA_FUSE '3': expected 0, 1 or 2" batch --preset tiny --device cuda:0
    TC_CUDA_PDL=x expect_err "TC_CUDA_PDL 'x': expected 0 or 1" batch --preset tiny --device cuda:0
    TC_CUDA_PAIRS=no expect_err "TC_CUDA_PAIRS 'no': expected 0 or 1" batch --preset tiny --device cuda:0
    TC_CUDA_BATCH_ITEMS=0 expect_err "TC_CUDA_BATCH_ITEMS '0': expected 1 to 256" batch --preset tiny --device cuda:0
    TC_CUDA_BATCH_ITEMS=12x expect_err "TC_CUDA_BATCH_ITEMS '12x': expected 1 to 256" batch --preset tiny --device cuda:0
    TC_CUDA_SKINNY_WARPS=3 expect_err "TC_CUDA_SKINNY_WARPS '3': expected 2, 4 or 8" batch --preset tiny --device cuda:0
    TC_CUDA_SAMPLE=on expect_err "TC_CUDA_SAMPLE 'on': expected 0, 1 or 2" batch --preset tiny --device cuda:0
    TC_CUDA_SAMPLE_KERNEL=3 expect_err "TC_CUDA_SAMPLE_KERNEL '3': expected 0, 1 or 2" batch --preset tiny --device cuda:0
    TC_CUDA_SAMPLE_KERNEL=12 expect_err "TC_CUDA_SAMPLE_KERNEL '12': expected 0, 1 or 2" batch --preset tiny --device cuda:0
    echo "ok   tconst-cuda: bad TC_CUDA_WEIGHTS / GRAPHS / PROFILE / ATT_MMA / FUSE / PDL / PAIRS / SKINNY_WARPS / BATCH_ITEMS / SAMPLE / SAMPLE_KERNEL refused"
fi
