#!/usr/bin/env bash
# test_daemon_flags.sh TCONSTD — flags tconstd must refuse before serving,
# each with an error naming the flag: a malformed --device, a GPU asked of
# the in-process worker (CPU only) or of attached workers (they choose
# their own), an unknown --worker-mode, an unknown flag. Label: unit.
set -uo pipefail
D=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
refuse "expected cpu or cuda:N" --device gpu7
refuse "expected cpu or cuda:N" --device cuda:
refuse "expected cpu or cuda:N" --device cuda:1x
refuse "in-process worker runs on the CPU" --worker-mode inprocess --device cuda:0
refuse "choose their own device" --workers 127.0.0.1:1,127.0.0.1:2 --device cuda:0
refuse "expected split, both or inprocess" --worker-mode sideways
refuse "unknown" --no-such-flag 1
