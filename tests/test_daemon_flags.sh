#!/usr/bin/env bash
# test_daemon_flags.sh TCONSTD — flags tconstd must refuse before serving,
# each with an error naming the flag: a malformed --device, a GPU asked of
# the in-process worker (CPU only) or of attached workers (they choose
# their own), an unknown --worker-mode or --weight-dtype, an unknown flag,
# a listen address out of range. Label: unit.
set -uo pipefail
D=$1
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT # a failed check leaves no daemon behind
export TMPDIR=$tmp
fail() { echo "FAIL $*"; exit 1; }
refuse() { # refuse PATTERN ARGS...
    local pat=$1
    shift
    timeout 60 "$D" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "tconstd $*: exit $rc, want a refusal"
    grep -q -- "$pat" "$tmp/err" || fail "tconstd $*: stderr lacks '$pat': $(tail -3 "$tmp/err")"
    echo "ok   refused: $* ($pat)"
}
refuse "expected auto, cpu or cuda:N" --device gpu7
refuse "expected auto, cpu or cuda:N" --device cuda:
refuse "expected auto, cpu or cuda:N" --device cuda:1x
refuse "in-process worker runs on the CPU" --worker-mode inprocess --device cuda:0
refuse "choose their own device" --workers 127.0.0.1:1,127.0.0.1:2 --device cuda:0
refuse "expected split, both or inprocess" --worker-mode sideways
refuse "expected split, both or inprocess" --worker-mode sideways --workers 127.0.0.1:1,127.0.0.1:2
refuse "unknown" --no-such-flag 1
# listen addresses, checked before anything starts (gRPC wrapped 99999
# into a random port)
refuse '--listen: address "127.0.0.1:99999"' --listen 127.0.0.1:99999
refuse "is not a number in 0..65535" --listen "127.0.0.1:+80"
refuse "put an IPv6 address in brackets" --listen ::1:50051
refuse "--http-listen: address" --http-listen 127.0.0.1:65536
refuse "--http-listen: address \"unix:/tmp/x\"" --http-listen unix:/tmp/x
refuse "--context-device 'gpu1': expected cpu or cuda:N" --context-device gpu1
refuse "only spawned workers in --worker-mode split" --context-device cuda:1 --worker-mode both
refuse "--served-model-name: 256 bytes (at most 255)" --served-model-name "$(printf 'm%.0s' $(seq 256))"
refuse "--context-device 'auto': expected cpu or cuda:N" --context-device auto
refuse "--device 'gpu': expected auto, cpu or cuda:N" --device gpu
refuse "--grpc-memory-quota 1000000 is below 4 x --max-message-bytes" --grpc-memory-quota 1000000
refuse "--large-request-budget 20000 is below --max-message-bytes" --large-request-budget 20000

# --device auto (the default): the spawned workers' devices from the GPUs
# the worker binary counts (tconst-worker --count-devices). A stand-in
# worker answers the count and records how it was started.
W=$(dirname "$D")/worker/tconst-worker
[ -x "$W" ] || W=$(dirname "$D")/tconst-worker
grep -qx "cuda-devices [0-9]*" <<<"$("$W" --count-devices)" || fail "tconst-worker --count-devices: $("$W" --count-devices 2>&1)"
echo "ok   tconst-worker --count-devices: $("$W" --count-devices)"
cat >"$tmp/gpu-worker" <<'EOS'
#!/bin/sh
if [ "$1" = "--count-devices" ]; then echo "$FAKE_COUNT"; exit 0; fi
echo "$@" >>"$ARGS_FILE"
exit 1
EOS
chmod +x "$tmp/gpu-worker"
auto() { # auto COUNT_LINE WANT_LOG WANT_ARGS ARGS...
    local count=$1 want=$2 wargs=$3
    shift 3
    : >"$tmp/args"
    FAKE_COUNT=$count ARGS_FILE=$tmp/args timeout 60 "$D" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
        --worker-binary "$tmp/gpu-worker" "$@" >"$tmp/out" 2>"$tmp/err"
    grep -q -- "$want" "$tmp/err" || fail "--device auto, '$count' $*: the log lacks '$want': $(grep -m2 'auto\|error' "$tmp/err")"
    grep -q -- "$wargs" "$tmp/args" || fail "--device auto, '$count' $*: a worker started without '$wargs': $(cat "$tmp/args")"
    echo "ok   --device auto, '$count' $*: $want"
}
auto "cuda-devices 0" "0 GPU(s): generation worker on cpu, context worker on cpu" "--device cpu"
auto "cuda-devices 1" "1 GPU(s): generation worker on cuda:0, context worker on cuda:0" "--device cuda:0"
auto "cuda-devices 2" "2 GPU(s): generation worker on cuda:0, context worker on cuda:1" "--role context .*--device cuda:1"
auto "cuda-devices 8" "context worker on cuda:3" "--role context .*--device cuda:3" --context-device cuda:3
auto "cuda-devices 2" "2 GPU(s): both roles' workers on cuda:0" "--role both .*--device cuda:0" --worker-mode both
auto "no idea" "cannot count GPUs .*unexpected answer.*on the CPU" "--device cpu"
# --weight-dtype: checked, then handed to the spawned workers
refuse "--weight-dtype 'fp8': expected f32, bf16 or f16" --weight-dtype fp8
refuse "--weight-dtype bf16: only spawned workers take it" --weight-dtype bf16 --worker-mode inprocess
refuse "--weight-dtype bf16: only spawned workers take it" --weight-dtype bf16 --workers 127.0.0.1:1,127.0.0.1:2
auto "cuda-devices 1" "generation worker on cuda:0" "--device cuda:0 .*--weight-dtype bf16" --weight-dtype bf16
timeout 60 "$W" --weight-dtype half --device cpu >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 2 ] && grep -q -- "--weight-dtype 'half': expected f32, bf16 or f16" "$tmp/err" ||
    fail "tconst-worker --weight-dtype half: exit $rc: $(tail -2 "$tmp/err")"
echo "ok   tconst-worker --weight-dtype half: refused (exit 2)"
TC_CUDA_PREFILL_LANE=yes timeout 60 "$W" --device cpu >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 2 ] && grep -q -- "TC_CUDA_PREFILL_LANE 'yes': expected 0 or 1" "$tmp/err" ||
    fail "tconst-worker with TC_CUDA_PREFILL_LANE=yes: exit $rc: $(tail -2 "$tmp/err")"
echo "ok   tconst-worker with TC_CUDA_PREFILL_LANE=yes: refused (exit 2)"
# the logging variables every binary reads: a bad value is named, not ignored
TC_LOG_LEVEL=bogus refuse "TC_LOG_LEVEL 'bogus'"
TC_LOG_FORMAT=yaml refuse "TC_LOG_FORMAT 'yaml'"
refuse "--log-level 'loud'" --log-level loud
# the test-only fault knobs (docs/operations.md): a value that is not a
# count in range is named, not ignored (the engine's were printed "(null)")
TC_FAULT_RETIRE_DELAY_MS=abc refuse "TC_FAULT_RETIRE_DELAY_MS 'abc': expected a count 0..10000"
TC_FAULT_ENGINE_WEDGE=2 refuse "TC_FAULT_ENGINE_WEDGE '2': expected a count 0..1"

# SIGTERM during the start-up (a worker that never reports ready, a start
# budget of 10 minutes): taken at once, a clean exit, never "ready". The
# 60 s bound only catches a hang.
printf '#!/bin/sh\nexec sleep 1000\n' >"$tmp/slow-worker"
chmod +x "$tmp/slow-worker"
"$D" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --worker-binary "$tmp/slow-worker" --device cpu \
    --worker-start-timeout 600 >"$tmp/out" 2>"$tmp/err" &
pid=$!
# the signal must come during the start-up: wait (bounded: 60 s) for the
# line that says the workers are being started
for _ in $(seq 1 600); do
    grep -q "model .* on spawned workers" "$tmp/err" && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
grep -q "model .* on spawned workers" "$tmp/err" ||
    fail "SIGTERM during the start-up: no 'model ... on spawned workers' line within 60 s: $(tail -3 "$tmp/err")"
kill -TERM $pid
timeout 60 tail --pid=$pid -f /dev/null || fail "SIGTERM during the start-up: tconstd still runs after 60 s"
wait $pid
rc=$?
[ $rc -eq 0 ] || fail "SIGTERM during the start-up: exit $rc: $(tail -3 "$tmp/err")"
grep -q " ready: " "$tmp/out" && fail "SIGTERM during the start-up: it still became ready"
grep -q "during the start-up" "$tmp/err" || fail "no start-up stop in the log: $(tail -3 "$tmp/err")"
echo "ok   SIGTERM during the start-up: stops at once, exit 0, never ready"

# tconstd's own config file and request limit in the environment do not
# reach the spawned workers (TCONST_CONFIG's keys are not a worker's; a
# 1 KB API limit is not the data plane's): the split daemon comes up
echo '{"max_sessions": 8}' >"$tmp/c.json"
TCONST_CONFIG=$tmp/c.json TCONST_MAX_MESSAGE_BYTES=1024 "$D" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --worker-mode split >"$tmp/out" 2>"$tmp/err" &
pid=$!
# wait for the banner or the exit, whichever comes first (bounded)
for _ in $(seq 1 600); do
    grep -q " ready: " "$tmp/out" && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
kill -TERM $pid 2>/dev/null
wait $pid
grep -q " ready: " "$tmp/out" || fail "TCONST_CONFIG/TCONST_MAX_MESSAGE_BYTES: split daemon never ready: $(tail -3 "$tmp/err")"
echo "ok   tconstd's TCONST_CONFIG and TCONST_MAX_MESSAGE_BYTES stay out of spawned workers"
# a unix socket another process serves on is refused (gRPC would unlink it
# and take that server's clients); a stale socket file is replaced
sock=$tmp/api.sock
"$D" --listen "unix:$sock" --http-listen 127.0.0.1:0 >"$tmp/a.out" 2>"$tmp/a.err" &
apid=$!
for _ in $(seq 600); do grep -q " ready: " "$tmp/a.out" && break; kill -0 $apid 2>/dev/null || break; sleep 0.1; done
grep -q " ready: " "$tmp/a.out" || fail "the first daemon on unix:$sock never ready: $(tail -3 "$tmp/a.err")"
grep -q " ready: grpc unix:$sock http 127.0.0.1:[1-9][0-9]* " "$tmp/a.out" ||
    fail "the ready line does not name the socket and the HTTP port: $(cat "$tmp/a.out")"
refuse "another process is serving on this socket" --listen "unix:$sock"
refuse "another process is serving on this socket" --listen "unix://$sock"
kill -0 $apid 2>/dev/null || fail "the first daemon died when a second one tried its socket"
kill -TERM $apid
wait $apid
/usr/bin/python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' "$sock"
[ -S "$sock" ] || fail "no stale socket file made"
"$D" --listen "unix:$sock" --http-listen 127.0.0.1:0 >"$tmp/b.out" 2>"$tmp/b.err" &
bpid=$!
for _ in $(seq 600); do grep -q " ready: " "$tmp/b.out" && break; kill -0 $bpid 2>/dev/null || break; sleep 0.1; done
kill -TERM $bpid 2>/dev/null
wait $bpid
grep -q " ready: " "$tmp/b.out" || fail "a stale socket file kept tconstd from listening: $(tail -3 "$tmp/b.err")"
echo "ok   a live unix socket is refused, a stale one replaced"
# a socket directory a killed tconstd left (its owner file names a process
# that is gone) is removed by the next one; one of a live process stays
sleep 0 & deadpid=$!
wait $deadpid
mkdir -p "$tmp/tconstd-stale1" "$tmp/tconstd-alive1"
echo $deadpid >"$tmp/tconstd-stale1/owner"
: >"$tmp/tconstd-stale1/worker-0.sock"
echo $$ >"$tmp/tconstd-alive1/owner"
"$D" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 >"$tmp/c.out" 2>"$tmp/c.err" &
cpid=$!
for _ in $(seq 600); do grep -q " ready: " "$tmp/c.out" && break; kill -0 $cpid 2>/dev/null || break; sleep 0.1; done
grep -q " ready: " "$tmp/c.out" || fail "tconstd with a stale socket directory never ready: $(tail -3 "$tmp/c.err")"
[ ! -e "$tmp/tconstd-stale1" ] || fail "the stale socket directory of a dead tconstd is still there"
[ -d "$tmp/tconstd-alive1" ] || fail "a live tconstd's socket directory was removed"
own=$(ls -d "$tmp"/tconstd-?????? | grep -v -e stale1 -e alive1 | head -1)
[ -n "$own" ] && [ "$(cat "$own/owner")" = "$cpid" ] || fail "no socket directory with this tconstd's owner file"
kill -TERM $cpid
wait $cpid
[ ! -e "$own" ] || fail "tconstd left its socket directory $own at a clean exit"
echo "ok   a killed tconstd's socket directory is removed by the next one; live ones and its own at exit handled"

# spawned workers run in process groups of their own (a signal to
# tconstd's group, Ctrl-C in a terminal, reaches tconstd, which drains and
# then stops them), and whatever a --worker-binary wrapper started stops
# with them: here a wrapper that does not exec (the real worker is its child)
W=$(dirname "$D")/tconst-worker
[ -x "$W" ] || W=$(dirname "$D")/worker/tconst-worker # the build tree
printf '#!/bin/sh\n"%s" "$@"\n' "$W" >"$tmp/wrap-noexec"
chmod +x "$tmp/wrap-noexec"
"$D" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --worker-binary "$tmp/wrap-noexec" >"$tmp/w.out" 2>"$tmp/w.err" &
wpid=$!
for _ in $(seq 600); do grep -q " ready: " "$tmp/w.out" && break; kill -0 $wpid 2>/dev/null || break; sleep 0.1; done
grep -q " ready: " "$tmp/w.out" || fail "tconstd with a wrapper that does not exec never ready: $(tail -3 "$tmp/w.err")"
real=""
for k in $(pgrep -P $wpid); do
    pg=$(ps -o pgid= -p "$k" | tr -d ' ')
    [ "$pg" = "$k" ] || fail "spawned worker $k is in process group $pg, not one of its own"
    real="$real $(pgrep -P "$k")"
done
[ -n "${real// /}" ] || fail "no worker under the wrappers"
kill -TERM $wpid
wait $wpid
for r in $real; do
    for _ in $(seq 600); do kill -0 "$r" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$r" 2>/dev/null && { kill -KILL "$r"; fail "worker $r, started by a wrapper, outlived tconstd"; }
done
echo "ok   spawned workers have process groups of their own; a wrapper's children stop with tconstd"
# a wrapper that sends the worker's stdout elsewhere: the ready line can
# never come; a clear error at once, not a wait for the start budget
printf '#!/bin/sh\nexec "%s" "$@" >/dev/null\n' "$W" >"$tmp/wrap-redirect"
chmod +x "$tmp/wrap-redirect"
refuse "closed its stdout before its ready line" --worker-binary "$tmp/wrap-redirect" --worker-start-timeout 600
# SIGTERM while a worker restart is under way (the restarted worker never
# reports ready; a start budget of 10 minutes): tconstd abandons the
# restart and exits at once. The 60 s bound only catches a hang.
printf '#!/bin/sh\n[ -e "%s" ] && exec sleep 1001\nexec "%s" "$@"\n' "$tmp/hang" "$W" >"$tmp/wrap-hang"
chmod +x "$tmp/wrap-hang"
"$D" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --worker-binary "$tmp/wrap-hang" --worker-start-timeout 600 \
    --drain-timeout 1 >"$tmp/h.out" 2>"$tmp/h.err" &
hpid=$!
for _ in $(seq 600); do grep -q " ready: " "$tmp/h.out" && break; kill -0 $hpid 2>/dev/null || break; sleep 0.1; done
grep -q " ready: " "$tmp/h.out" || fail "tconstd with the hang wrapper never ready: $(tail -3 "$tmp/h.err")"
: >"$tmp/hang"
victim=$(pgrep -P $hpid | head -1)
kill -KILL "$victim"
for _ in $(seq 600); do grep -q "process exited" "$tmp/h.err" && break; sleep 0.1; done
grep -q "process exited" "$tmp/h.err" || fail "the killed worker was not noticed: $(tail -3 "$tmp/h.err")"
hung=""
for _ in $(seq 600); do hung=$(pgrep -P $hpid -f "sleep 1001"); [ -n "$hung" ] && break; sleep 0.1; done
[ -n "$hung" ] || fail "no restart under way: $(tail -3 "$tmp/h.err")"
kill -TERM $hpid
timeout 60 tail --pid=$hpid -f /dev/null || fail "SIGTERM during a worker restart: tconstd still runs after 60 s"
wait $hpid
rc=$?
[ $rc -eq 0 ] || fail "SIGTERM during a worker restart: exit $rc: $(tail -3 "$tmp/h.err")"
for _ in $(seq 600); do kill -0 "$hung" 2>/dev/null || break; sleep 0.1; done
kill -0 "$hung" 2>/dev/null && { kill -KILL "$hung"; fail "the abandoned restart's process outlived tconstd"; }
echo "ok   SIGTERM during a worker restart: the restart is abandoned, exit 0"
# the ready line names an abstract unix socket as it is (no port)
"$D" --listen "unix-abstract:tconst-flags-$$" --http-listen 127.0.0.1:0 >"$tmp/u.out" 2>"$tmp/u.err" &
upid=$!
for _ in $(seq 600); do grep -q " ready: " "$tmp/u.out" && break; kill -0 $upid 2>/dev/null || break; sleep 0.1; done
kill -TERM $upid 2>/dev/null
wait $upid
grep -q " ready: grpc unix-abstract:tconst-flags-$$ http 127.0.0.1:[1-9][0-9]* " "$tmp/u.out" ||
    fail "the ready line does not name the abstract socket: $(cat "$tmp/u.out") $(tail -2 "$tmp/u.err")"
echo "ok   the ready line names unix: and unix-abstract: sockets as given"
