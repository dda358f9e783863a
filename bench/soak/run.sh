#!/usr/bin/env bash
# bench/soak/run.sh BUILD [tconst-soak args...] — the soak of
# docs/benchmarks.md: one session to 1,000,000 tokens through tconstd with
# the built-in tiny model (Append in chunks, GenerateInSession at 1K, 10K,
# 100K, 1M), state bytes, RSS and ITL at each, and the acceptance checks.
set -euo pipefail
B=${1:?usage: bench/soak/run.sh BUILD [tconst-soak args...]}
shift
exec "$(dirname "$0")/../load/with_daemon.sh" "$B" "$B/bench/soak/tconst-soak" "$@"
