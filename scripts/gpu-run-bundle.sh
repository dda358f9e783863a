#!/usr/bin/env bash
# gpu-run-bundle.sh — the GPU check from a bundle (scripts/gpu-bundle.sh),
# on a GPU machine without our Debian packages or a network: unpacks
# .gpu-bundle/bundle.tar.xz, finds cuBLAS/cuBLASLt/NCCL on the machine
# (ldconfig, /usr/local/cuda, the Python wheels' nvidia/*/lib), then runs
# the stages below in order, each under its own limit and all under one
# deadline (BUDGET seconds, default 420), so the whole call ends in time
# and what ran is logged. Each stage runs in a session of its own: when it
# ends (or times out), whatever it left running (daemons, workers, the e2e
# tests) is killed before the next one. Limits are ~3-5x the runtimes seen
# on the H200 (ops 2-5 s, parity 7-11 s, sanitize 3-5 s, benches 1-8 s, e2e
# 21-66 s), so one hang does not eat the budget. Each e2e test runs under
# E2E_LIMIT (default: its stage's limit - 15 s); after a stage timeout the
# tails of the tests that never finished go to e2e.log. The e2e list is
# TC_E2E_TESTS of tests/e2e/CMakeLists.txt (split layout), plus E2E_BOTH
# (default "parity session stream concurrency") with one both-roles worker.
# Logs (at most 6 files) go to $OUT (or ./gpu-logs):
#   env.txt summary.txt gpu.log bench.log e2e.log bench-csv.tar
# The bundled libraries reach only the bundled binaries (wrappers in
# $W/wrap): the script's tools and Python keep the machine's own; the
# machine's CUDA libraries come before the bundled cudart.
# STAGES picks and orders stages (default: all, in the order below):
#   ops parity sanitize floor64k batch batch0 e2e e2ex flat batchg floor1m floor256k floor64kg e2eg itl
# (e2ex: the split-only e2e tests, E2E_EXTRA, default "step_isolation
# weight_dtype attach poison faults log_json sync_backpressure liveness large_state failover connect_retry long_history"; each e2e stage under E2E_STAGE_LIMIT,
# default 120 s)
# (sanitize: the op tests under compute-sanitizer memcheck) and, only when
# named:
# batchbf16 floor64kbf16 (TC_CUDA_WEIGHTS=bf16), prof profbf16 (floor at
# 64K with TC_CUDA_PROFILE=1: device time by op, hit step and sync; prof2
# with TC_CUDA_PROFILE=2: device time alone, without the host's launches),
# batchr floor64kr flatr e2er (TC_CUDA_GRAPHS=2: replayed graphs, the
# default since session 16, named), e2e0 (TC_CUDA_GRAPHS=0: no graphs),
# e2egpt2 (the e2e tests that need the GPT-2 vocabulary the bundle
# carries, E2E_GPT2, default "stop_strings large_request openai logprobs"),
# e2epl e2explx (the e2e suite and the split-only tests with
# TC_CUDA_PREFILL_LANE=1: the workers' Appends on a third thread and lane),
# floor64kx profx (TC_CUDA_ATT_MMA=0: attention on the CUDA cores, the A/B
# of the tensor-core path), floor64knf (TC_CUDA_FUSE=0: LayerNorm and
# SwiGLU as their own launches), batchnp floor64knp (TC_CUDA_PDL=0: no
# programmatic dependent launch, the A/B of PDL), batchnpr floor64knpr
# (TC_CUDA_PAIRS=0: a session's two hit-step softmaxes in one block),
# batchw2 batchw4 floor64kw4 (TC_CUDA_SKINNY_WARPS=2 / 4),
# batchsrN batchsrNbf16 (TC_CUDA_SKINNY_ROWS=N, 1-32: batches SR_BATCH, default
# 1,2,3,4,6,8,9,16, with the skinny kernels taking up to N rows), e2esrN
# paritysrN (the e2e suite and gpu_parity with TC_CUDA_SKINNY_ROWS=N), batchf2
# floor64kf2 (TC_CUDA_FUSE=2: RoPE not fused into the QKV linear),
# batchi16 (TC_CUDA_BATCH_ITEMS=16: batched launches of 16 items, the
# A/B of the large parameter structs), batchtp batchtp1 (batch steps
# sampled top-p: TC_CUDA_SAMPLE=0 downloads the logits, 1 draws on the
# device), batchtpa (the same with TC_CUDA_SAMPLE=2: the device from batch 2),
# batchtpk0 batchtpk1 (the device's first and second walks: TC_CUDA_SAMPLE_KERNEL;
# the default is 2), racecheck (the sample and top-k op tests under
# compute-sanitizer's racecheck), e2es (the e2e suite with TC_CUDA_SAMPLE=1), nsys (per-kernel device time of replayed hit
# steps at batch 1, where the machine has Nsight Systems), persist (the
# persistent hit-step probe, bench/persist: one kernel a phase against one
# co-resident kernel with grid barriers, same arithmetic, checked bitwise),
# nccl (tests/gpu/test_nccl_init_timeout: an NCCL init whose peer never
# joins is aborted at its deadline; then test_nccl_transport, SKIPPED
# without two GPUs)
# BUNDLE picks another bundle of scripts/gpu-bundle.sh (default
# .gpu-bundle/bundle.tar.xz); give it its own W (e.g. /tmp/tc-gpu-sm80).
# A library that cannot be found stops the run at once (exit 3), before any
# device time is spent on tests. Exit status: 0 when every stage ran and
# passed; 1 when one failed; 4 when none failed but some were skipped
# (BUDGET ran out, or no nsys): `verdict: INCOMPLETE (n skipped)`.
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
PY=${PY:-python3}
OUTDIR=${OUT:-./gpu-logs}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
T0=$(date +%s)
BUDGET=${BUDGET:-420}
STAGES=${STAGES:-ops parity sanitize floor64k batch batch0 e2e e2ex flat batchg floor1m floor256k floor64kg e2eg itl}
DEV=${DEV:-cuda:0}
W=${W:-${TMPDIR:-/tmp}/tc-gpu-bundle}
B=$W/build-gpu
export W B SRC DEV PY
# the e2e tests: TC_E2E_TESTS of tests/e2e/CMakeLists.txt (the list ctest runs)
e2e_tests() {
    awk '/^set\(TC_E2E_TESTS/ {on = 1; sub(/^set\(TC_E2E_TESTS/, "")}
         on {e = sub(/\).*/, ""); print; if (e) exit}' "$SRC/tests/e2e/CMakeLists.txt"
}
# the e2e suite (split and both layouts, workers on $DEV, 8 at a time); run
# as `$0 __e2e TAG` under run_stage's timeout, with W, B, SRC, DEV and
# STAGE_LIMIT exported; each test under E2E_LIMIT, its rc in $d/LAYOUT_TEST.rc
if [ "${1:-}" = __e2e ]; then
    d=$W/e2e-$2
    mkdir -p "$d"
    lim=${E2E_LIMIT:-$((${STAGE_LIMIT:-120} - 15))}
    [ "$lim" -ge 10 ] || lim=10
    export TC_E2E_STUBS=$W/stubs TC_E2E_DEVICE=$DEV PYTHONDONTWRITEBYTECODE=1 E2E_DIR=$d E2E_LIMIT=$lim TC_GPT2_DIR=$W/gpt2
    tests=$(e2e_tests)
    [ -n "$tests" ] || { echo "no TC_E2E_TESTS in $SRC/tests/e2e/CMakeLists.txt"; exit 1; }
    # E2E_SKIP: cancel_prefill needs prefills that outlast a cancel (seconds
    # on 2 CPU cores; a fraction of a second on a GPU, where its "stopped
    # part way" checks could not hold); prefill_overlap needs the same, and
    # a GPU prefill of its 300K tokens is too quick for its checks either
    # way (with TC_CUDA_PREFILL_LANE=1 too; docs/workers.md)
    tests=$(for t in $tests; do case " ${E2E_SKIP-cancel_prefill prefill_overlap} " in *" $t "*) ;; *) echo "$t" ;; esac; done)
    {
        if [ "$2" = gpt2 ]; then
            # the tests that need text: the GPT-2 vocabulary the bundle carries
            for t in ${E2E_GPT2:-stop_strings large_request openai logprobs}; do echo "split $t"; done
        elif [ "${2#extra}" != "$2" ]; then
            # the split-only tests (their own layouts or daemons)
            for t in ${E2E_EXTRA:-step_isolation weight_dtype attach poison faults log_json sync_backpressure liveness large_state failover connect_retry long_history}; do echo "split $t"; done
        else
            for t in $tests; do echo "split $t"; done
            for t in ${E2E_BOTH:-parity session stream concurrency}; do echo "both $t"; done
        fi
    } | xargs -P 8 -L 1 bash -c '
        args=""; [ "$0" = both ] && args="--worker-mode both --sync-inline-max 0"
        log=$E2E_DIR/$0_$1.log
        TC_E2E_DAEMON_ARGS="$args" timeout -k 5 "$E2E_LIMIT" "$PY" "$SRC/tests/e2e/test_$1.py" \
            "$W/wrap/tconstd" "$W/wrap/tconst" "$SRC" >"$log" 2>&1
        rc=$?; echo $rc >"$E2E_DIR/$0_$1.rc"
        echo "e2e $0 $1: rc=$rc$(case $rc in 124|137) echo " (timed out after ${E2E_LIMIT}s)" ;; esac)"
        [ $rc = 0 ] || { tail -40 "$log"; exit 1; }'
    exit
fi
S=$OUTDIR/summary.txt
: >"$S"
left() { echo $((T0 + BUDGET - $(date +%s))); }

rm -rf "$W"
mkdir -p "$W/csv"
tar -C "$W" -xJf "${BUNDLE:-.gpu-bundle/bundle.tar.xz}" || { echo "no bundle: run scripts/gpu-bundle.sh first" | tee -a "$S"; exit 2; }
echo "bundle: $(cat "$W/commit")" | tee -a "$S"
{
    echo "date: $(date -u +%FT%TZ)  bundle of $(cat "$W/commit")"
    echo "host: $(uname -a)"
    timeout 20 nvidia-smi 2>&1
    timeout 20 nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1
} >"$OUTDIR/env.txt"

# the big CUDA libraries stay on the machine: find them, and the machine's
# cudart (ahead of the bundle's, $W/cudart, which is only the fallback)
libdirs=""
for lib in libcublas.so.13 libcublasLt.so.13 libnccl.so.2 $(cd "$W/cudart" 2>/dev/null && ls); do
    p=$(ldconfig -p 2>/dev/null | awk -v l="$lib" '$1 == l {print $NF; exit}')
    if [ -z "$p" ]; then
        p=$(find /usr/local/cuda/ /usr/local/cuda/lib64/ /usr/local/ /opt/ /usr/lib/ -name "$lib" 2>/dev/null | head -1)
    fi
    echo "$lib: ${p:-NOT FOUND}" >>"$OUTDIR/env.txt"
    [ -n "$p" ] || continue
    case ":$libdirs:" in *":$(dirname "$p"):"*) ;; *) libdirs="$libdirs:$(dirname "$p")" ;; esac
done
# not exported: only the bundled binaries get it (the wrappers below, or
# `env LD_LIBRARY_PATH=` for the tools that run them: compute-sanitizer, nsys)
LIBPATH="$W/lib$libdirs:$W/cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH of the bundled binaries: $LIBPATH" >>"$OUTDIR/env.txt"
mkdir -p "$W/wrap"
for b in tconstd tconst tconst-cuda tests/gpu/test_backend_ops_gpu tests/gpu/test_gpu_parity bench/bench_persist \
    worker/test_nccl_init_timeout worker/test_nccl_transport; do
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$LIBPATH" "$B/$b" >"$W/wrap/${b##*/}"
    chmod +x "$W/wrap/${b##*/}"
done
# beside tconstd's wrapper, as in the build tree: e2e_attach starts workers itself
mkdir -p "$W/wrap/worker"
printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$LIBPATH" "$B/worker/tconst-worker" >"$W/wrap/worker/tconst-worker"
chmod +x "$W/wrap/worker/tconst-worker"
missing=$(for b in "$B"/tconst* "$B"/worker/tconst-worker "$B"/tests/gpu/* "$B"/bench/*; do
    LD_LIBRARY_PATH=$LIBPATH ldd "$b" | grep 'not found' | sed "s|^|$(basename "$b"): |"; done)
if [ -n "$missing" ]; then
    echo "missing libraries:" | tee -a "$S"
    echo "$missing" | tee -a "$S"
    exit 3
fi

fail=0 skipped=0 last_rc=0
# sess_kill SID: SIGKILL whatever is left of session SID (from /proc: the
# machine may have no ps); a stage's inner timeouts, daemons and workers
# are in other process groups, but never leave its session
sess_kill() {
    local p
    for p in $(cat /proc/[0-9]*/stat 2>/dev/null | awk -v s="$1" '{p = $1; sub(/.*\) /, ""); if ($4 == s) print p}'); do
        kill -KILL "$p" 2>/dev/null
    done
}
run_stage() { # run_stage NAME LIMIT LOG CMD...
    local name=$1 lim=$2 log=$3
    shift 3
    local l
    l=$(left)
    last_rc=0
    if [ "$l" -lt 25 ]; then
        printf '%-10s skipped (deadline)\n' "$name" | tee -a "$S"
        skipped=$((skipped + 1))
        return 0
    fi
    [ "$lim" -gt $((l - 10)) ] && lim=$((l - 10))
    echo "== $name: $* (limit ${lim}s)" >>"$log"
    local t=$(date +%s)
    # a session of its own (a background job is no group leader: setsid
    # does not fork, so its pid is the session's id)
    STAGE_LIMIT=$lim setsid timeout -k 5 "$lim" "$@" >>"$log" 2>&1 &
    local sid=$!
    wait $sid
    local rc=$?
    sess_kill $sid
    printf '%-10s rc=%d %3ds%s\n' "$name" "$rc" $(($(date +%s) - t)) \
        "$(case $rc in 124|137) echo ' (timed out)' ;; 77) echo ' (SKIPPED: not on this machine)' ;; esac)" | tee -a "$S"
    if [ $rc = 77 ]; then skipped=$((skipped + 1)); else [ $rc = 0 ] || fail=1; fi
    last_rc=$rc
}
bench() { # bench NAME LIMIT ARGS...
    local name=$1 lim=$2
    shift 2
    run_stage "$name" "$lim" "$OUTDIR/bench.log" "$W/wrap/tconst-cuda" bench "$@" --device "$DEV" --csv "$W/csv/$name.csv"
    tar -C "$W/csv" -cf "$OUTDIR/bench-csv.tar" .
}
e2e_stage() { # e2e_stage NAME TAG: the suite; then the tail of each test that never finished
    local f n
    run_stage "$1" "${E2E_STAGE_LIMIT:-120}" "$OUTDIR/e2e.log" bash "$SRC/scripts/gpu-run-bundle.sh" __e2e "$2"
    [ $last_rc = 0 ] && return
    for f in "$W/e2e-$2"/*.log; do
        [ -f "$f" ] && [ ! -f "${f%.log}.rc" ] || continue
        n=$(basename "${f%.log}")
        { echo "e2e ${n/_/ }: no rc, killed with its stage ($1, rc=$last_rc); its last 40 lines:"
          tail -40 "$f"; } >>"$OUTDIR/e2e.log"
    done
}
for st in $STAGES; do
    case $st in
    ops) run_stage ops 30 "$OUTDIR/gpu.log" "$W/wrap/test_backend_ops_gpu" ;;
    parity) run_stage parity 45 "$OUTDIR/gpu.log" "$W/wrap/test_gpu_parity" ;;
    sanitize) # the op tests under compute-sanitizer's memcheck: the kernel and line of a bad access
        cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
        run_stage sanitize 60 "$OUTDIR/gpu.log" env LD_LIBRARY_PATH="$LIBPATH" "$cs" --tool memcheck --error-exitcode 1 --print-limit 20 "$B/tests/gpu/test_backend_ops_gpu" ;;
    racecheck) # the sample and top-k ops under compute-sanitizer's racecheck: shared-memory hazards
        cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
        run_stage racecheck 90 "$OUTDIR/gpu.log" env LD_LIBRARY_PATH="$LIBPATH" TC_GPU_OPS_ONLY=sample "$cs" --tool racecheck --error-exitcode 1 --print-limit 20 "$B/tests/gpu/test_backend_ops_gpu" ;;
    batchtpk0) TC_CUDA_SAMPLE=1 TC_CUDA_SAMPLE_KERNEL=0 bench batch-topp-walk0 45 batch --preset paper-41m --batch 1,2,4,16,256 --reps 2 --sampling top-p ;;
    batchtpk1) TC_CUDA_SAMPLE=1 TC_CUDA_SAMPLE_KERNEL=1 bench batch-topp-walk1 45 batch --preset paper-41m --batch 1,2,4,16,256 --reps 2 --sampling top-p ;;
    batchr) TC_CUDA_GRAPHS=2 bench batch-replay 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64kr) TC_CUDA_GRAPHS=2 bench floor-64k-replay 30 floor --preset paper-41m --ctx 64K --reps 3 ;;
    flatr) TC_CUDA_GRAPHS=2 bench flat-replay 30 flat --preset paper-41m --ctx 1K,1M --reps 2 ;;
    e2er) TC_CUDA_GRAPHS=2 e2e_stage e2e-replay replay ;;
    e2epl) TC_CUDA_PREFILL_LANE=1 e2e_stage e2e-prefill-lane prefilllane ;;
    e2egpt2) e2e_stage e2e-gpt2 gpt2 ;;
    e2explx) TC_CUDA_PREFILL_LANE=1 e2e_stage e2e-prefill-lane-extra extrapl ;;
    prof) TC_CUDA_PROFILE=1 bench floor-64k-profile 30 floor --preset paper-41m --ctx 64K --reps 1 ;;
    profbf16) TC_CUDA_PROFILE=1 TC_CUDA_WEIGHTS=bf16 bench floor-64k-profile-bf16 30 floor --preset paper-41m --ctx 64K --reps 1 ;;
    batchbf16) TC_CUDA_WEIGHTS=bf16 bench batch-bf16 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    batchsr[0-9]*bf16) r=${st#batchsr}; r=${r%bf16} # the skinny kernels' row limit (TC_CUDA_SKINNY_ROWS), bf16 weights
        TC_CUDA_WEIGHTS=bf16 TC_CUDA_SKINNY_ROWS=$r bench "batch-rows$r-bf16" 45 batch --preset paper-41m --batch ${SR_BATCH:-1,2,3,4,6,8,9,16} --reps 2 ;;
    batchsr[0-9]*) # the skinny kernels' row limit (TC_CUDA_SKINNY_ROWS), batches around it (SR_BATCH)
        TC_CUDA_SKINNY_ROWS=${st#batchsr} bench "batch-rows${st#batchsr}" 45 batch --preset paper-41m --batch ${SR_BATCH:-1,2,3,4,6,8,9,16} --reps 2 ;;
    e2esr[0-9]*) TC_CUDA_SKINNY_ROWS=${st#e2esr} e2e_stage "e2e-rows${st#e2esr}" "rows${st#e2esr}" ;;
    paritysr[0-9]*) TC_CUDA_SKINNY_ROWS=${st#paritysr} run_stage "parity-rows${st#paritysr}" 45 "$OUTDIR/gpu.log" "$W/wrap/test_gpu_parity" ;;
    floor64kbf16) TC_CUDA_WEIGHTS=bf16 bench floor-64k-bf16 30 floor --preset paper-41m --ctx 64K --reps 3 ;;
    floor64k) bench floor-64k 30 floor --preset paper-41m --ctx 64K --reps 3 ;;
    floor64knp) TC_CUDA_PDL=0 bench floor-64k-nopdl 30 floor --preset paper-41m --ctx 64K --reps 3 ;;
    batchi16) TC_CUDA_BATCH_ITEMS=16 bench batch-items16 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    batchf2) TC_CUDA_FUSE=2 bench batch-fuse2 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64kf2) TC_CUDA_FUSE=2 bench floor-64k-fuse2 30 floor --preset paper-41m --ctx 64K --reps 3 ;;
    batchw2) TC_CUDA_SKINNY_WARPS=2 bench batch-warps2 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    batchw4) TC_CUDA_SKINNY_WARPS=4 bench batch-warps4 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64kw4) TC_CUDA_SKINNY_WARPS=4 bench floor-64k-warps4 30 floor --preset paper-41m --ctx 64K --reps 3 ;;
    floor64knpr) TC_CUDA_PAIRS=0 bench floor-64k-nopairs 30 floor --preset paper-41m --ctx 64K --reps 3 ;;
    batchnpr) TC_CUDA_PAIRS=0 bench batch-nopairs 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    persist) run_stage persist 45 "$OUTDIR/bench.log" "$W/wrap/bench_persist" --device "$DEV" ;;
    nccl) # NCCL: an init whose peer never joins gives up at its deadline (one GPU); the two-rank transport (two GPUs, else SKIPPED)
        run_stage nccl-init-timeout 30 "$OUTDIR/gpu.log" "$W/wrap/test_nccl_init_timeout"
        run_stage nccl-transport 60 "$OUTDIR/gpu.log" "$W/wrap/test_nccl_transport" ;;
    batchtp) TC_CUDA_SAMPLE=0 bench batch-topp-host 45 batch --preset paper-41m --batch 1,2,4,16,256 --reps 2 --sampling top-p ;;
    batchtp1) TC_CUDA_SAMPLE=1 bench batch-topp-device 45 batch --preset paper-41m --batch 1,2,4,16,256 --reps 2 --sampling top-p ;;
    batchtpa) TC_CUDA_SAMPLE=2 bench batch-topp-auto 45 batch --preset paper-41m --batch 1,2,4,16,256 --reps 2 --sampling top-p ;;
    e2es) TC_CUDA_SAMPLE=1 e2e_stage e2e-sample sample ;;
    batchnp) TC_CUDA_PDL=0 bench batch-nopdl 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64knf) TC_CUDA_FUSE=0 bench floor-64k-nofuse 30 floor --preset paper-41m --ctx 64K --reps 3 ;;
    floor64kx) TC_CUDA_ATT_MMA=0 bench floor-64k-simt 30 floor --preset paper-41m --ctx 64K --reps 3 ;;
    prof2) TC_CUDA_PROFILE=2 bench floor-64k-profile-exact 30 floor --preset paper-41m --ctx 64K --reps 1 ;;
    profx) TC_CUDA_ATT_MMA=0 TC_CUDA_PROFILE=1 bench floor-64k-profile-simt 30 floor --preset paper-41m --ctx 64K --reps 1 ;;
    nsys) # kernel durations inside replayed hit-step graphs (Nsight Systems, where the machine has it)
        ns=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys 2>/dev/null | head -1)
        if [ -z "$ns" ]; then
            printf '%-10s skipped (no nsys on this machine)\n' nsys | tee -a "$S"
            skipped=$((skipped + 1))
        else
            TC_CUDA_GRAPHS=2 run_stage nsys 60 "$OUTDIR/gpu.log" env LD_LIBRARY_PATH="$LIBPATH" "$ns" profile -t cuda --cuda-graph-trace=node -f true \
                -o "$W/nsys" "$B/tconst-cuda" bench batch --preset paper-41m --batch 1 --reps 1 --device "$DEV"
            run_stage nsys-stats 30 "$OUTDIR/gpu.log" "$ns" stats -r cuda_gpu_kern_sum,cuda_api_sum -f column "$W/nsys.nsys-rep"
        fi ;;
    floor256k) bench floor-256k 30 floor --preset paper-41m --ctx 256K --reps 3 ;;
    floor1m) bench floor-1m 30 floor --preset paper-41m --ctx 1M --reps 3 ;;
    batch) bench batch 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    flat) bench flat 30 flat --preset paper-41m --ctx 1K,1M --reps 2 ;;
    batchg) TC_CUDA_GRAPHS=1 bench batch-graphs 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    floor64kg) TC_CUDA_GRAPHS=1 bench floor-64k-graphs 30 floor --preset paper-41m --ctx 64K --reps 3 ;;
    itl) bench itl 60 itl --preset paper-41m --arch both --ctx 1K,16K,64K,256K,1M --reps 1 --budget 30 ;;
    e2e0) TC_CUDA_GRAPHS=0 e2e_stage e2e-nographs nographs ;;
    batch0) TC_CUDA_GRAPHS=0 bench batch-nographs 45 batch --preset paper-41m --batch 1,16,256 --reps 2 ;;
    e2e) e2e_stage e2e plain ;;
    e2ex) e2e_stage e2e-extra extra ;;
    e2eg) TC_CUDA_GRAPHS=1 e2e_stage e2e-graphs graphs ;;
    *) echo "unknown stage $st" | tee -a "$S"; fail=1 ;;
    esac
done
if [ $fail != 0 ]; then
    verdict=FAILED rc=1
    [ $skipped = 0 ] || verdict="FAILED ($skipped skipped)"
elif [ $skipped != 0 ]; then
    verdict="INCOMPLETE ($skipped skipped)" rc=4
else
    verdict=PASSED rc=0
fi
echo "verdict: $verdict ($(($(date +%s) - T0)) s)" | tee -a "$S"
exit $rc
