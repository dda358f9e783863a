#!/usr/bin/env bash
# bench/load/rss_workers.sh [SAMPLES] [EVERY_S] [PID] — prints the RSS (kB)
# of tconstd PID and of each of its tconst-worker children, every EVERY_S
# seconds (default 12 samples, 30 s); t= is the time since this script
# started. Without PID (or TCONSTD_PID) it waits up to 30 s for a tconstd
# of this user and takes it when there is exactly one. Run it beside
# bench/load/run.sh (tconst-load samples only tconstd's own RSS), or let
# bench/load/with_daemon.sh start it with the daemon's pid:
# RSS_WORKERS="SAMPLES EVERY_S" bash bench/load/run.sh build ...
# Exit status 1 (and why) when the daemon is gone before the last sample.
set -euo pipefail
n=${1:-12}
every=${2:-30}
d=${3:-${TCONSTD_PID:-}}
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || true; }
if [ -z "$d" ]; then
  for _ in $(seq 300); do
    pids=$(pgrep -x -u "$(id -u)" tconstd || true)
    [ -n "$pids" ] && break
    sleep 0.1
  done
  case $(echo "$pids" | wc -w) in
  0) echo "rss_workers.sh: no tconstd of this user within 30 s" >&2; exit 1 ;;
  1) d=$pids ;;
  *) echo "rss_workers.sh: several tconstd running ($(echo $pids)): pass the PID (3rd argument)" >&2; exit 1 ;;
  esac
fi
[ -d "/proc/$d" ] || { echo "rss_workers.sh: no process $d" >&2; exit 1; }
echo "# rss_workers.sh: tconstd $d, $n samples every $every s"
for i in $(seq "$n"); do
  # the schedule: sample i at (i - 1) * every after the start
  while [ "$SECONDS" -lt $(((i - 1) * every)) ]; do sleep 1; done
  r=$(rss "$d")
  if [ -z "$r" ]; then
    echo "rss_workers.sh: tconstd $d is gone at t=${SECONDS}s, after $((i - 1)) of $n samples" >&2
    exit 1
  fi
  line="t=${SECONDS}s tconstd=$r"
  for c in $(pgrep -P "$d" || true); do
    role=$(tr '\0' ' ' <"/proc/$c/cmdline" 2>/dev/null | grep -o -- '--role [a-z]*' | cut -d' ' -f2 || true)
    line="$line ${role:-child}=$(rss "$c")"
  done
  echo "$line"
done
