#!/usr/bin/env bash
# bench/load/run.sh BUILD [tconst-load args...] — the load run of
# docs/benchmarks.md: 256 concurrent sessions for 300 s against tconstd with
# the built-in tiny model (defaults; args replace them).
set -euo pipefail
B=${1:?usage: bench/load/run.sh BUILD [tconst-load args...]}
shift
[ $# -gt 0 ] || set -- --sessions 256 --duration 300 --ramp 10 --warmup 60 --rss-every 30
exec "$(dirname "$0")/with_daemon.sh" "$B" "$B/bench/load/tconst-load" "$@"
