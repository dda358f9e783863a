#!/usr/bin/env bash
# bench/load/rss_workers.sh [SAMPLES] [EVERY_S] — prints the RSS (kB) of
# the newest tconstd and of each of its tconst-worker children, every
# EVERY_S seconds (default 12 samples, 30 s). Run it beside
# bench/load/run.sh: tconst-load samples only tconstd's own RSS.
set -euo pipefail
n=${1:-12}
every=${2:-30}
sleep 5
d=$(pgrep -n -x tconstd) || { echo "no tconstd running"; exit 1; }
for i in $(seq "$n"); do
  line="t=$(((i - 1) * every))s tconstd=$(awk '/VmRSS/{print $2}' /proc/$d/status 2>/dev/null)"
  for c in $(pgrep -P "$d" || true); do
    role=$(tr '\0' ' ' </proc/$c/cmdline | grep -o -- '--role [a-z]*' | cut -d' ' -f2)
    line="$line $role=$(awk '/VmRSS/{print $2}' /proc/$c/status)"
  done
  echo "$line"
  sleep "$every"
done
