#!/usr/bin/env bash
# run.sh BUILD — the README's run command: starts tconstd (which spawns its
# context and generation workers) with its built-in
# tiny model, streams a generation through `tconst client`, then drains the
# daemon with SIGTERM.
set -euo pipefail
B=${1:-build}
log=$(mktemp)
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
"$B/tconstd" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --log-level warn >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do # up to 60 s for the ready line
  grep -q ' ready: ' "$log" && break
  kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
grep ' ready: ' "$log" || { echo "tconstd did not become ready"; cat "$log"; exit 1; }
addr=$(sed -n 's/.* ready: grpc \([^ ]*\) http.*/\1/p' "$log")
http=$(sed -n 's/.* http \([^ ]*\) model.*/\1/p' "$log")
echo
echo "== tconst client info"
"$B/tconst" client info --server "$addr"
echo
echo "== streaming 64 tokens (greedy) after the prompt 1 2 3:"
TCONST_CLIENT_VERBOSE=1 "$B/tconst" client generate --server "$addr" --tokens "1 2 3" -n 64 --ignore-eos
echo
echo "== the same prompt, sampled (temperature 0.8, top-p 0.95, seed 7):"
"$B/tconst" client generate --server "$addr" --tokens "1 2 3" -n 64 --temperature 0.8 --top-p 0.95 --seed 7 --ignore-eos
echo
echo "== a few metrics from http://$http/metrics"
/usr/bin/python3 - "$http" <<'PY'
import sys, urllib.request
for line in urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode().splitlines():
    if line.startswith(("tconst_generated_tokens_total", "tconst_syncs_total", "tconst_time_to_first_token_seconds_count", "tconst_sessions_active", "tconst_workers_up")):
        print("  " + line)
PY
kill -TERM $pid
wait $pid && echo "tconstd drained and exited 0"
