#!/usr/bin/env bash
# bench/load/with_daemon.sh BUILD PROGRAM [ARGS...] — starts BUILD/tconstd
# with the built-in tiny model on free ports, runs PROGRAM --addr HOST:PORT
# --pid DAEMON_PID ARGS... (with TCONSTD_HTTP=HOST:PORT of /metrics in
# its environment), then stops the daemon with SIGTERM and checks it
# exits 0. TCONSTD_ARGS adds daemon flags; RSS_WORKERS="SAMPLES EVERY_S"
# runs bench/load/rss_workers.sh beside PROGRAM on this daemon's pid. When
# the daemon does not start, it says why with the tail of its output.
# Used by bench/load/run.sh and bench/soak/run.sh.
set -euo pipefail
B=${1:?usage: bench/load/with_daemon.sh BUILD PROGRAM [ARGS...]}
prog=${2:?usage: bench/load/with_daemon.sh BUILD PROGRAM [ARGS...]}
shift 2
out=$(mktemp)
"$B/tconstd" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --log-level warn ${TCONSTD_ARGS:-} >"$out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
# wait for the ready line, 30 s at most, and not for a daemon that died
for _ in $(seq 300); do
    grep -q ' ready: ' "$out" && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
addr=$(grep -o 'ready: grpc [^ ]*' "$out" | awk '{print $3}' || true)
if [ -z "$addr" ]; then
    if kill -0 $pid 2>/dev/null; then
        why="no ready line within 30 s"
    else
        st=0; wait $pid || st=$?
        why="it exited with status $st"
    fi
    echo "bench/load/with_daemon.sh: tconstd did not start ($why): $B/tconstd --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --log-level warn ${TCONSTD_ARGS:-}" >&2
    echo "--- the last 30 lines of its output:" >&2
    tail -30 "$out" >&2
    exit 1
fi
# the ops endpoint, for programs that read /metrics
TCONSTD_HTTP=$(grep -o ' http [^ ]*' "$out" | head -1 | awk '{print $2}' || true)
export TCONSTD_HTTP
echo "# $(head -1 "$out")"
rsw=
if [ -n "${RSS_WORKERS:-}" ]; then
    # shellcheck disable=SC2086
    bash "$(dirname "$0")/rss_workers.sh" $RSS_WORKERS "$pid" &
    rsw=$!
fi
rc=0
"$prog" --addr "$addr" --pid "$pid" "$@" || rc=$?
[ -z "$rsw" ] || { kill $rsw 2>/dev/null || true; wait $rsw 2>/dev/null || true; }
kill -TERM $pid
wait $pid || { echo "tconstd exited $?"; rc=1; }
trap - EXIT
rm -f "$out"
exit $rc
