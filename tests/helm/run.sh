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
exec /usr/bin/python3 "$here/test_chart.py" --renderer "$bin" --chart "$here/../../helm/tconst" \
  --tconstd "$tconstd" --worker "$worker" --values-all "$here/values-all.yaml" --repo "$here/../.."
