#!/usr/bin/env bash
# deps.sh — installs the Debian packages the build and the tests need, only
# those missing. Called by `make run` and `make test`; safe to rerun.
set -euo pipefail
PKGS=(build-essential cmake pkg-config libopenblas-dev libcjson-dev python3 time)
[ -f "$(dirname "$0")/deps.extra" ] && mapfile -t -O "${#PKGS[@]}" PKGS < <(grep -v '^#' "$(dirname "$0")/deps.extra" | tr ' ' '\n' | grep .)
missing=()
for p in "${PKGS[@]}"; do
  grep -q "install ok installed" <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
