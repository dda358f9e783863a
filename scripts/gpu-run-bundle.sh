#!/usr/bin/env bash
# gpu-run-bundle.sh — the GPU check from a bundle (scripts/gpu-bundle.sh),
# on a GPU machine without our Debian packages or a network: unpacks
# .gpu-bundle/bundle.tar.xz, finds cuBLAS/cuBLASLt/NCCL on the machine
# (ldconfig, /usr/local/cuda, the Python wheels' nvidia/*/lib), then runs
# the stages below in order, each under its own limit and all under one
# deadline (BUDGET seconds, default 420), so the whole call ends in time
# and what ran is logged. Logs (at most 6 files) go to $OUT (or ./gpu-logs):
#   env.txt summary.txt gpu.log bench.log e2e.log bench-csv.tar
# STAGES picks and orders stages (default: all, in the order below):
#   ops parity sanitize floor64k batch batch0 e2e flat batchg floor1m floor256k floor64kg e2eg itl
# (sanitize: the op tests under compute-sanitizer memcheck) and, only when
# named:
# batchbf16 floor64kbf16 (TC_CUDA_WEIGHTS=bf16), prof profbf16 (floor at
# 64K with TC_CUDA_PROFILE=1: device time by op, hit step and sync; prof2
# with TC_CUDA_PROFILE=2: device time alone, without the host's launches),
# batchr floor64kr flatr e2er (TC_CUDA_GRAPHS=2: replayed graphs, the
# default since session 16, named), e2e0 (TC_CUDA_GRAPHS=0: no graphs),
# floor64kx profx (TC_CUDA_ATT_MMA=0: attention on the CUDA cores, the A/B
# of the tensor-core path), floor64knf (TC_CUDA_FUSE=0: LayerNorm and
# SwiGLU as their own launches), batchnp floor64knp (TC_CUDA_PDL=0: no
# programmatic dependent launch, the A/B of PDL), batchnpr floor64knpr
# (TC_CUDA_PAIRS=0: a session's two hit-step softmaxes in one block),
# batchw2 batchw4 floor64kw4 (TC_CUDA_SKINNY_WARPS=2 / 4), batchf2
# floor64kf2 (TC_CUDA_FUSE=2: RoPE not fused into the QKV linear),
# batchi16 (TC_CUDA_BATCH_ITEMS=16: batched launches of 16 items, the
# A/B of the large parameter structs), batchtp batchtp1 (batch steps
# sampled top-p: TC_CUDA_SAMPLE=0 downloads the logits, 1 draws on the
# device), e2es (the e2e suite with TC_CUDA_SAMPLE=1), nsys (per-kernel device time of replayed hit
# steps at batch 1, where the machine has Nsight Systems), persist (the
# persistent hit-step probe, bench/persist: one kernel a phase against one
# co-resident kernel with grid barriers, same arithmetic, checked bitwise)
# A library that cannot be found stops the run at once (exit 3), before any
# device time is spent on tests. Exit status: 0 when every stage run passed.
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
PY=${PY:-python3}
OUTDIR=${OUT:-./gpu-logs}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
T0=$(date +%s)
BUDGET=${BUDGET:-420}
STAGES=${STAGES:-ops parity sanitize floor64k batch batch0 e2e flat batchg floor1m floor256k floor64kg e2eg itl}
DEV=${DEV:-cuda:0}
W=${W:-${TMPDIR:-/tmp}/tc-gpu-bundle}
B=$W/build-gpu
export W B SRC DEV PY
# the e2e suite (split and both layouts, workers on $DEV, 8 at a time); run
# as `$0 __e2e TAG` under run_stage's timeout, with W, B, SRC, DEV exported
if [ "${1:-}" = __e2e ]; then
    d=$W/e2e-$2
    mkdir -p "$d"
    export TC_E2E_STUBS=$W/stubs TC_E2E_DEVICE=$DEV PYTHONDONTWRITEBYTECODE=1
    {
        for t in parity session stream concurrency bad_input startup drain metrics reflection slow_reader client; do
            echo "split $t"
        done
        for t in parity session stream concurrency; do echo "both $t"; done
    } | xargs -P 8 -L 1 bash -c '
        args=""; [ "$0" = both ] && args="--worker-mode both --sync-inline-max 0"
        TC_E2E_DAEMON_ARGS="$args" timeout -k 5 240 env -u LD_LIBRARY_PATH "$PY" "$SRC/tests/e2e/test_$1.py" \
            "$W/wrap/tconstd" "$W/wrap/tconst" "$SRC" >"'"$d"'/$0_$1.log" 2>&1
        rc=$?; echo "e2e $0 $1: rc=$rc"; [ $rc = 0 ] || { tail -40 "'"$d"'/$0_$1.log"; exit 1; }'
    exit
fi
S=$OUTDIR/summary.txt
: >"$S"
left() { echo $((T0 + BUDGET - $(date +%s))); }

rm -rf "$W"
mkdir -p "$W/csv"
tar -C "$W" -xJf .gpu-bundle/bundle.tar.xz || { echo "no bundle: run scripts/gpu-bundle.sh first" | tee -a "$S"; exit 2; }
{
    echo "date: $(date -u +%FT%TZ)  bundle of $(cat "$W/commit")"
    echo "host: $(uname -a)"
    nvidia-smi 2>&1
    nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1
} >"$OUTDIR/env.txt"

# the big CUDA libraries stay on the machine: find them
libdirs=""
for lib in libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
    p=$(ldconfig -p 2>/dev/null | awk -v l="$lib" '$1 == l {print $NF; exit}')
    if [ -z "$p" ]; then
        p=$(find /usr/local/cuda/ /usr/local/cuda/lib64/ /usr/local/ /opt/ /usr/lib/ -name "$lib" 2>/dev/null | head -1)
    fi
    echo "$lib: ${p:-NOT FOUND}" >>"$OUTDIR/env.txt"
    [ -n "$p" ] && libdirs="$libdirs:$(dirname "$p")"
done
export LD_LIBRARY_PATH="$W/lib$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$OUTDIR/env.txt"
# Python (the e2e client) keeps the machine's own libraries: the daemon and
# CLI it starts go through wrappers that set the path for themselves
mkdir -p "$W/wrap"
for b in tconstd tconst; do
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$LD_LIBRARY_PATH" "$B/$b" >"$W/wrap/$b"
    chmod +x "$W/wrap/$b"
done
missing=$(for b in "$B"/tconst* "$B"/worker/tconst-worker "$B"/tests/gpu/* "$B"/bench/*; do ldd "$b" | grep 'not found' | sed "s|^|$(basename "$b"): |"; done)
if [ -n "$missing" ]; then
    echo "missing libraries:" | tee -a "$S"
    echo "$missing" | tee -a "$S"
    exit 3
fi

fail=0
run_stage() { # run_stage NAME LIMIT LOG CMD...
    local name=$1 lim=$2 log=$3
    shift 3
    local l
    l=$(left)
    if [ "$l" -lt 25 ]; then
        printf '%-10s skipped (deadline)\n' "$name" | tee -a "$S"
        return 0
    fi
    [ "$lim" -gt $((l - 10)) ] && lim=$((l - 10))
    echo "== $name: $* (limit ${lim}s)" >>"$log"
    local t=$(date +%s)
    timeout -k 5 "$lim" "$@" >>"$log" 2>&1
    local rc=$?
    printf '%-10s rc=%d %3ds%s\n' "$name" "$rc" $(($(date +%s) - t)) "$([ $rc = 124 ] && echo ' (timed out)')" | tee -a "$S"
    [ $rc = 0 ] || fail=1
}
bench() { # bench NAME LIMIT ARGS...
    local name=$1 lim=$2
    shift 2
    run_stage "$name" "$lim" "$OUTDIR/bench.log" "$B/tconst-cuda" bench "$@" --device "$DEV" --csv "$W/csv/$name.csv"
    tar -C "$W/csv" -cf "$OUTDIR/bench-csv.tar" .
}
for st in $STAGES; do
    case $st in
    ops) run_stage ops 90 "$OUTDIR/gpu.log" "$B/tests/gpu/test_backend_ops_gpu" ;;
    parity) run_stage parity 150 "$OUTDIR/gpu.log" "$B/tests/gpu/test_gpu_parity" ;;
    sanitize) # the op tests under compute-sanitizer's memcheck: the kernel and line of a bad access
        cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
        run_stage sanitize 150 "$OUTDIR/gpu.log" "$cs" --tool memcheck --error-exitcode 1 --print-limit 20 "$B/tests/gpu/test_backend_ops_gpu" ;;
    batchr) TC_CUDA_GRAPHS=2 bench batch-replay 60 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64kr) TC_CUDA_GRAPHS=2 bench floor-64k-replay 60 floor --preset paper-41m --ctx 64K --reps 3 ;;
    flatr) TC_CUDA_GRAPHS=2 bench flat-replay 90 flat --preset paper-41m --ctx 1K,1M --reps 2 ;;
    e2er) TC_CUDA_GRAPHS=2 run_stage e2e-replay 200 "$OUTDIR/e2e.log" bash "$SRC/scripts/gpu-run-bundle.sh" __e2e replay ;;
    prof) TC_CUDA_PROFILE=1 bench floor-64k-profile 60 floor --preset paper-41m --ctx 64K --reps 1 ;;
    profbf16) TC_CUDA_PROFILE=1 TC_CUDA_WEIGHTS=bf16 bench floor-64k-profile-bf16 60 floor --preset paper-41m --ctx 64K --reps 1 ;;
    batchbf16) TC_CUDA_WEIGHTS=bf16 bench batch-bf16 90 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64kbf16) TC_CUDA_WEIGHTS=bf16 bench floor-64k-bf16 60 floor --preset paper-41m --ctx 64K --reps 3 ;;
    floor64k) bench floor-64k 60 floor --preset paper-41m --ctx 64K --reps 3 ;;
    floor64knp) TC_CUDA_PDL=0 bench floor-64k-nopdl 60 floor --preset paper-41m --ctx 64K --reps 3 ;;
    batchi16) TC_CUDA_BATCH_ITEMS=16 bench batch-items16 90 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    batchf2) TC_CUDA_FUSE=2 bench batch-fuse2 90 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64kf2) TC_CUDA_FUSE=2 bench floor-64k-fuse2 60 floor --preset paper-41m --ctx 64K --reps 3 ;;
    batchw2) TC_CUDA_SKINNY_WARPS=2 bench batch-warps2 90 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    batchw4) TC_CUDA_SKINNY_WARPS=4 bench batch-warps4 90 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64kw4) TC_CUDA_SKINNY_WARPS=4 bench floor-64k-warps4 60 floor --preset paper-41m --ctx 64K --reps 3 ;;
    floor64knpr) TC_CUDA_PAIRS=0 bench floor-64k-nopairs 60 floor --preset paper-41m --ctx 64K --reps 3 ;;
    batchnpr) TC_CUDA_PAIRS=0 bench batch-nopairs 90 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    persist) run_stage persist 60 "$OUTDIR/bench.log" "$B/bench/bench_persist" --device "$DEV" ;;
    batchtp) TC_CUDA_SAMPLE=0 bench batch-topp-host 90 batch --preset paper-41m --batch 1,16,256 --reps 2 --sampling top-p ;;
    batchtp1) TC_CUDA_SAMPLE=1 bench batch-topp-device 90 batch --preset paper-41m --batch 1,16,256 --reps 2 --sampling top-p ;;
    e2es) TC_CUDA_SAMPLE=1 run_stage e2e-sample 200 "$OUTDIR/e2e.log" bash "$SRC/scripts/gpu-run-bundle.sh" __e2e sample ;;
    batchnp) TC_CUDA_PDL=0 bench batch-nopdl 90 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64knf) TC_CUDA_FUSE=0 bench floor-64k-nofuse 60 floor --preset paper-41m --ctx 64K --reps 3 ;;
    floor64kx) TC_CUDA_ATT_MMA=0 bench floor-64k-simt 60 floor --preset paper-41m --ctx 64K --reps 3 ;;
    prof2) TC_CUDA_PROFILE=2 bench floor-64k-profile-exact 60 floor --preset paper-41m --ctx 64K --reps 1 ;;
    profx) TC_CUDA_ATT_MMA=0 TC_CUDA_PROFILE=1 bench floor-64k-profile-simt 60 floor --preset paper-41m --ctx 64K --reps 1 ;;
    nsys) # kernel durations inside replayed hit-step graphs (Nsight Systems, where the machine has it)
        ns=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys 2>/dev/null | head -1)
        if [ -z "$ns" ]; then
            printf '%-10s skipped (no nsys on this machine)\n' nsys | tee -a "$S"
        else
            TC_CUDA_GRAPHS=2 run_stage nsys 90 "$OUTDIR/gpu.log" "$ns" profile -t cuda --cuda-graph-trace=node -f true \
                -o "$W/nsys" "$B/tconst-cuda" bench batch --preset paper-41m --batch 1 --reps 1 --device "$DEV"
            run_stage nsys-stats 60 "$OUTDIR/gpu.log" "$ns" stats -r cuda_gpu_kern_sum,cuda_api_sum -f column "$W/nsys.nsys-rep"
        fi ;;
    floor256k) bench floor-256k 60 floor --preset paper-41m --ctx 256K --reps 3 ;;
    floor1m) bench floor-1m 90 floor --preset paper-41m --ctx 1M --reps 3 ;;
    batch) bench batch 90 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    flat) bench flat 90 flat --preset paper-41m --ctx 1K,1M --reps 2 ;;
    batchg) TC_CUDA_GRAPHS=1 bench batch-graphs 60 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64kg) TC_CUDA_GRAPHS=1 bench floor-64k-graphs 60 floor --preset paper-41m --ctx 64K --reps 3 ;;
    itl) bench itl 120 itl --preset paper-41m --arch both --ctx 1K,16K,64K,256K,1M --reps 1 --budget 30 ;;
    e2e0) TC_CUDA_GRAPHS=0 run_stage e2e-nographs 200 "$OUTDIR/e2e.log" bash "$SRC/scripts/gpu-run-bundle.sh" __e2e nographs ;;
    batch0) TC_CUDA_GRAPHS=0 bench batch-nographs 90 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    e2e) run_stage e2e 200 "$OUTDIR/e2e.log" bash "$SRC/scripts/gpu-run-bundle.sh" __e2e plain ;;
    e2eg) TC_CUDA_GRAPHS=1 run_stage e2e-graphs 200 "$OUTDIR/e2e.log" bash "$SRC/scripts/gpu-run-bundle.sh" __e2e graphs ;;
    *) echo "unknown stage $st" | tee -a "$S"; fail=1 ;;
    esac
done
echo "verdict: $([ $fail = 0 ] && echo PASSED || echo FAILED) ($(($(date +%s) - T0)) s)" | tee -a "$S"
exit $fail
