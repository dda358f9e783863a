#!/usr/bin/env bash
# tconst vs llama.cpp on this machine, side by side (DESIGN.md §8): TTFT of
# long prompts, per-token decode at context N, per-session state bytes.
# Not part of the test suite. See README.md in this folder.
#
# usage: bench/llamacpp/run.sh [options]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
NLC_VERSION=3.22.1              # node-llama-cpp / @node-llama-cpp/linux-x64 (llama.cpp release v0.5.0)

PRESETS="tiny,paper-41m"
CTX=""                           # default per preset, below
STEPS=64
THREADS="2"
FLASH="auto,off"
BUDGET=120
CACHE="${LLAMACPP_CACHE:-${TMPDIR:-/tmp}/tconst-llamacpp}"
OUT=""
TCONST="$ROOT/build/tconst"
REPS=1
SKIP_TCONST=0

usage() {
    cat <<EOF
usage: bench/llamacpp/run.sh [options]
  --presets LIST   tconst presets to compare (tiny,small,paper-41m; default $PRESETS)
  --ctx LIST       contexts for every preset (default: tiny 1K,4K,16K,64K; small and
                   paper-41m 1K,4K,16K)
  --steps N        llama.cpp timed decode steps per context (default $STEPS; tconst times
                   W_og x --reps steps)
  --reps R         tconst bench itl --reps (default $REPS)
  --threads LIST   threads for both engines, each value a full pass (default $THREADS)
  --flash LIST     llama.cpp flash attention settings, each a pass: auto,on,off (default $FLASH)
  --budget S       both engines skip a context whose predicted prefill exceeds S s (default $BUDGET)
  --cache DIR      npm install, llama.cpp headers, driver, GGUFs (default $CACHE)
  --out DIR        results (default bench/llamacpp/results/<date>)
  --tconst PATH    tconst binary (default build/tconst)
  --skip-tconst    llama.cpp only
  -h, --help
Needs: node >= 20 + npm (registry reachable on the first run), gcc, git, python3.
EOF
}

die() { echo "run.sh: $*" >&2; exit 2; }
is_list() { [[ "$1" =~ ^[A-Za-z0-9.-]+(,[A-Za-z0-9.-]+)*$ ]]; }
is_ctx_list() { [[ "$1" =~ ^[0-9]+[KkMm]?(,[0-9]+[KkMm]?)*$ ]]; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]] && (( $1 >= 1 )); }

while (( $# )); do
    opt="$1"
    case "$opt" in
        -h|--help) usage; exit 0 ;;
        --skip-tconst) SKIP_TCONST=1; shift; continue ;;
        --presets|--ctx|--steps|--reps|--threads|--flash|--budget|--cache|--out|--tconst)
            (( $# >= 2 )) || die "$opt needs a value (see --help)"
            val="$2"; shift 2 ;;
        *) die "unknown option '$opt' (see --help)" ;;
    esac
    case "$opt" in
        --presets) is_list "$val" || die "--presets: bad list '$val'"
                   for p in ${val//,/ }; do
                       [[ "$p" =~ ^(tiny|small|paper-41m)$ ]] || die "--presets: unknown preset '$p' (tiny, small, paper-41m)"
                   done; PRESETS="$val" ;;
        --ctx) is_ctx_list "$val" || die "--ctx: expected e.g. 1K,16K,64K, got '$val'"; CTX="$val" ;;
        --steps) is_uint "$val" || die "--steps: expected a positive integer, got '$val'"; STEPS="$val" ;;
        --reps) is_uint "$val" || die "--reps: expected a positive integer, got '$val'"; REPS="$val" ;;
        --threads) [[ "$val" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--threads: expected e.g. 2 or 1,2, got '$val'"; THREADS="$val" ;;
        --flash) [[ "$val" =~ ^(auto|on|off)(,(auto|on|off))*$ ]] || die "--flash: expected a list of auto, on, off, got '$val'"; FLASH="$val" ;;
        --budget) [[ "$val" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--budget: expected seconds, got '$val'"; BUDGET="$val" ;;
        --cache) CACHE="$val" ;;
        --out) OUT="$val" ;;
        --tconst) TCONST="$val" ;;
    esac
done

for t in node npm gcc git python3; do command -v "$t" >/dev/null || die "'$t' not found (see README.md)"; done
if (( ! SKIP_TCONST )); then
    [[ -x "$TCONST" ]] || die "tconst binary '$TCONST' not found: build it (cmake --build build) or pass --tconst"
fi
[[ -n "$OUT" ]] || OUT="$HERE/results/$(date +%Y-%m-%d-%H%M)"
mkdir -p "$CACHE" "$OUT"
CACHE="$(cd "$CACHE" && pwd)"; OUT="$(cd "$OUT" && pwd)"

# 1. llama.cpp from npm: prebuilt binaries of node-llama-cpp (MIT)
NM="$CACHE/npm/node_modules"
BINS="$NM/@node-llama-cpp/linux-x64/bins/linux-x64"
if [[ ! -f "$BINS/llama-addon.node" || ! -f "$NM/node-llama-cpp/package.json" ]]; then
    echo "== npm install node-llama-cpp@$NLC_VERSION @node-llama-cpp/linux-x64@$NLC_VERSION into $CACHE/npm"
    mkdir -p "$CACHE/npm"
    (cd "$CACHE/npm" && npm install --no-save --no-package-lock --no-audit --no-fund --ignore-scripts \
        --omit=optional "node-llama-cpp@$NLC_VERSION" "@node-llama-cpp/linux-x64@$NLC_VERSION" >&2) \
        || die "npm install failed (is the npm registry reachable?)"
fi
LIBLLAMA="$(cd "$BINS" && ls libllama.v*.so 2>/dev/null | head -1)"
LIBGGML="$(cd "$BINS" && ls libggml.v*.so 2>/dev/null | head -1)"
[[ -n "$LIBLLAMA" && -n "$LIBGGML" && -f "$BINS/libggml-base.so" ]] || die "$BINS: no libllama/libggml in the package"

# 2. the exact llama.h of that release: node-llama-cpp ships its source as a git bundle
SRC="$CACHE/llama.cpp-src"
if [[ ! -f "$SRC/include/llama.h" ]]; then
    echo "== llama.cpp headers from $NM/node-llama-cpp/llama/gitRelease.bundle"
    rm -rf "$SRC"
    git clone -q "$NM/node-llama-cpp/llama/gitRelease.bundle" "$SRC" 2>/dev/null || die "cannot clone the llama.cpp bundle"
fi

# 3. the C driver
DRIVER="$CACHE/llama_bench"
if [[ ! -x "$DRIVER" || "$HERE/llama_bench.c" -nt "$DRIVER" ]]; then
    echo "== gcc llama_bench.c"
    gcc -O2 -Wall -Wextra -I"$SRC/include" -I"$SRC/ggml/include" "$HERE/llama_bench.c" -o "$DRIVER" \
        -L"$BINS" -l:"$LIBLLAMA" -l:"$LIBGGML" -l:libggml-base.so -Wl,-rpath,"$BINS" -lm
fi
export LLAMA_BACKENDS_DIR="$BINS"

# 4. versions and machine
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)" \
         "(family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs)," \
         "model $(grep -m1 '^model' /proc/cpuinfo | cut -d: -f2 | xargs))"
    echo "memory: $(free -g | awk '/Mem:/{print $2}') GiB"
    echo "node-llama-cpp: $NLC_VERSION; llama.cpp release: $(cat "$NM/node-llama-cpp/llama/binariesGithubRelease.json" | tr -d ' \n')"
    python3 - "$BINS/libllama-common.so" <<'EOF' || true
import ctypes, sys
try:
    l = ctypes.CDLL(sys.argv[1])
    c = l._Z12llama_commitv; c.restype = ctypes.c_char_p
    print("llama.cpp commit (libllama-common):", c().decode())
except Exception as e:
    print("llama.cpp commit: unknown (%s)" % e)
EOF
    "$DRIVER" --info | sed 's/^/llama.cpp /'
    if (( ! SKIP_TCONST )); then echo "tconst: $TCONST ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"; fi
} | tee "$OUT/versions.txt"

# 5. GGUFs and the JS-API smoke check (loads + generates through node-llama-cpp)
cp "$HERE/smoke.mjs" "$CACHE/npm/smoke.mjs"
for p in ${PRESETS//,/ }; do
    g="$CACHE/$p.gguf"
    if [[ ! -f "$g" || "$HERE/make_gguf.py" -nt "$g" ]]; then python3 "$HERE/make_gguf.py" --preset "$p" --out "$g"; fi
    (cd "$CACHE/npm" && timeout 300 node smoke.mjs "$g" 2) | tee -a "$OUT/smoke.txt" \
        || die "node-llama-cpp could not load or run $g"
done

# 6. both engines, preset by preset, in the same time window
LL_CSV="$OUT/llama.csv"; rm -f "$LL_CSV"
TC_ARGS=()
for p in ${PRESETS//,/ }; do
    ctx="$CTX"
    [[ -n "$ctx" ]] || { [[ "$p" == tiny ]] && ctx=1K,4K,16K,64K || ctx=1K,4K,16K; }
    for t in ${THREADS//,/ }; do
        echo "== $p, threads $t, contexts $ctx (load: $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/load.txt"
        if (( ! SKIP_TCONST )); then
            c="$OUT/tconst-$p-t$t.csv"; rm -f "$c"
            OPENBLAS_NUM_THREADS="$t" "$TCONST" bench itl --preset "$p" --arch both --ctx "$ctx" --reps "$REPS" \
                --threads "$t" --budget "$BUDGET" --csv "$c" | tee "$OUT/tconst-$p-t$t.txt"
            TC_ARGS+=(--tconst "$c")
        fi
        for fa in ${FLASH//,/ }; do
            "$DRIVER" --model "$CACHE/$p.gguf" --label "$p" --ctx "$ctx" --steps "$STEPS" --threads "$t" \
                --flash "$fa" --budget "$BUDGET" --csv "$LL_CSV" | tee -a "$OUT/llama-$p.txt"
        done
        echo "   done (load: $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/load.txt"
    done
done

# 7. tables
echo
python3 "$HERE/report.py" "${TC_ARGS[@]}" --llama "$LL_CSV" --md "$OUT/report.md"
echo
echo "results: $OUT"
