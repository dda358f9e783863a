#!/usr/bin/env bash
# bench/load/with_daemon.sh BUILD PROGRAM [ARGS...] — starts BUILD/tconstd
# with the built-in tiny model on free ports, runs PROGRAM --addr HOST:PORT
# --pid DAEMON_PID ARGS... (with TCONSTD_HTTP=HOST:PORT of /metrics in
# its environment), then stops the daemon with SIGTERM and checks it
# exits 0. TCONSTD_ARGS adds daemon flags. Used by bench/load/run.sh and
# bench/soak/run.sh.
set -euo pipefail
B=${1:?usage: bench/load/with_daemon.sh BUILD PROGRAM [ARGS...]}
prog=${2:?usage: bench/load/with_daemon.sh BUILD PROGRAM [ARGS...]}
shift 2
out=$(mktemp)
"$B/tconstd" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --log-level warn ${TCONSTD_ARGS:-} >"$out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 300); do grep -q ' ready: ' "$out" && break; sleep 0.1; done
addr=$(grep -o 'ready: grpc [^ ]*' "$out" | awk '{print $3}')
[ -n "$addr" ] || { echo "tconstd did not start:"; cat "$out"; exit 1; }
# the ops endpoint, for programs that read /metrics
TCONSTD_HTTP=$(grep -o ' http [^ ]*' "$out" | head -1 | awk '{print $2}')
export TCONSTD_HTTP
echo "# $(head -1 "$out")"
rc=0
"$prog" --addr "$addr" --pid "$pid" "$@" || rc=$?
kill -TERM $pid
wait $pid || { echo "tconstd exited $?"; rc=1; }
trap - EXIT
rm -f "$out"
exit $rc
