#!/usr/bin/env bash
# run.sh TCONSTD TCONST_WORKER CACHE_DIR — ctest helm.render: the Helm
# chart (helm/tconst) rendered by a text/template + sprig stand-in for helm
# (render/main.go, built once into CACHE_DIR and rebuilt when its source or
# the Go toolchain changes), then checked by test_chart.py against both
# binaries' --help. A missing binary fails the test: it does not skip.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 3 ] || { echo "usage: run.sh TCONSTD TCONST_WORKER CACHE_DIR" >&2; exit 2; }
tconstd=$1 worker=$2 cache=$3
for b in "$tconstd" "$worker"; do
  [ -x "$b" ] || { echo "FAIL: $b: not built (tconstd and tconst-worker are both needed)"; exit 1; }
done
command -v go >/dev/null || { echo "FAIL: go not found (Debian golang-go, scripts/deps.extra)"; exit 1; }
gopath=${TC_GOPATH:-/usr/share/gocode}
[ -d "$gopath/src/github.com/Masterminds/sprig" ] ||
  { echo "FAIL: sprig not in $gopath (Debian golang-github-masterminds-sprig-dev, scripts/deps.extra)"; exit 1; }

mkdir -p "$cache"
bin=$cache/helm-render
sum=$( { cat "$here/render/main.go"; go version; echo "$gopath"; } | sha256sum | cut -c1-64)
if [ ! -x "$bin" ] || [ "$(cat "$bin.sha256" 2>/dev/null)" != "$sum" ]; then
  echo "building $bin (Go, GOPATH mode, offline)"
  GO111MODULE=off GOPATH=$gopath GOCACHE=$cache/go-cache GOENV=off GOFLAGS= GOPROXY=off \
    go build -o "$bin.tmp" "$here/render/main.go"
  mv "$bin.tmp" "$bin"
  echo "$sum" >"$bin.sha256"
fi
# promtool (Prometheus' rule checker and alert unit tester): the machine's,
# else taken out of Debian's prometheus package once into CACHE_DIR (only
# the one binary: installing the package would start a Prometheus server)
promtool=$(command -v promtool || true)
if [ -z "$promtool" ]; then
  promtool=$cache/promtool
  if [ ! -x "$promtool" ]; then
    d=$(mktemp -d "$cache/prometheus.XXXXXX")
    if ! (cd "$d" && apt-get download prometheus >"$d/log" 2>&1 && dpkg-deb -x prometheus_*.deb x >>"$d/log" 2>&1 &&
          [ -x x/usr/bin/promtool ]); then
      echo "FAIL: promtool: not installed, and taking it from Debian's prometheus package failed:"
      tail -5 "$d/log"
      echo "(run apt-get update, or install promtool)"
      rm -rf "$d"
      exit 1
    fi
    mv "$d/x/usr/bin/promtool" "$promtool"
    rm -rf "$d"
  fi
fi
exec /usr/bin/python3 "$here/test_chart.py" --promtool "$promtool" --renderer "$bin" --chart "$here/../../helm/tconst" \
  --tconstd "$tconstd" --worker "$worker" --values-all "$here/values-all.yaml" --repo "$here/../.."
