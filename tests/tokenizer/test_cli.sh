#!/usr/bin/env bash
# test_cli.sh CLI WORKDIR — `tokenize` / `detokenize` (cli/cmd_tokenize.c,
# through the tc_tokenizer_cli stand-in) on the real GPT-2 vocabulary in
# WORKDIR/gpt2: known ids, stdin and --file, exact round trip of ill-formed
# bytes, --stream, and the errors (no tokenizer, bad id, an id that is not
# digits only, standard output full, missing --model).
set -uo pipefail
cli=$1 work=$2
model=$work/gpt2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() { # name, then a command that must succeed
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name" >&2; fi
}

# known ids from gpt-3-encoder
out=$(printf 'Hello world' | "$cli" tokenize --model "$model")
check "tokenize stdin: Hello world -> 15496 995" [ "$out" = "15496 995" ]
printf "It's 2024 \xF0\x9F\x98\x80!" > "$tmp/in.txt"
out=$("$cli" tokenize --model "$model" --file "$tmp/in.txt")
check "tokenize --file: '$out'" [ "$out" = "1026 338 48609 30325 222 0" ]

# exact round trip, ill-formed bytes included
printf 'caf\xC3\xA9 \xFF\xFE bad \xE2\x82 tail\n\n  x' > "$tmp/raw.bin"
"$cli" tokenize --model "$model" --file "$tmp/raw.bin" > "$tmp/ids.txt"
"$cli" detokenize --model "$model" --file "$tmp/ids.txt" > "$tmp/back.bin"
check "detokenize(tokenize(x)) == x" cmp -s "$tmp/raw.bin" "$tmp/back.bin"

# --stream: valid UTF-8, U+FFFD per maximal subpart
"$cli" detokenize --model "$model" --stream --file "$tmp/ids.txt" > "$tmp/stream.bin"
printf 'caf\xC3\xA9 \xEF\xBF\xBD\xEF\xBF\xBD bad \xEF\xBF\xBD tail\n\n  x' > "$tmp/want.bin"
check "detokenize --stream" cmp -s "$tmp/want.bin" "$tmp/stream.bin"
out=$(echo '[15496, 995]' | "$cli" detokenize --model="$model")
check "detokenize JSON array" [ "$out" = "Hello world" ]

# errors: message on stderr, non-zero exit
mkdir -p "$tmp/empty"
err=$(echo hi | "$cli" tokenize --model "$tmp/empty" 2>&1 >/dev/null); rc=$?
check "no tokenizer: rc=$rc '$err'" grep -q "no tokenizer" <<<"$err"
check "no tokenizer exit code" [ $rc -eq 1 ]
err=$(echo "15496 x7 995" | "$cli" detokenize --model "$model" 2>&1 >/dev/null); rc=$?
check "bad id: '$err'" grep -q "'x7' at byte 6 is not a token id" <<<"$err"
err=$(echo "50257" | "$cli" detokenize --model "$model" 2>&1 >/dev/null); rc=$?
check "id out of range: '$err'" grep -q "token id 50257 (position 0) out of range \[0, 50257)" <<<"$err"
# an id is digits only: a NUL, sign or vertical tab is not skipped or cut at
err=$(printf '15496\0995' | "$cli" detokenize --model "$model" 2>&1 >/dev/null); rc=$?
check "NUL inside an id: rc=$rc '$err'" grep -q "'15496\\\\x00995' at byte 0 is not a token id" <<<"$err"
check "NUL inside an id exit code" [ $rc -eq 1 ]
for bad in +995 -0 $'\v995' 0x10 995abc; do
  err=$(printf '15496 %s' "$bad" | "$cli" detokenize --model "$model" 2>&1 >/dev/null); rc=$?
  check "id '$bad': rc=$rc '$err'" grep -q "at byte 6 is not a token id" <<<"$err"
done
out=$(printf '0015496 995' | "$cli" detokenize --model "$model")
check "leading zeros: '$out'" [ "$out" = "Hello world" ]
# standard output that cannot be written: an error, not exit 0
for i in $(seq 1 20000); do echo "15496 15496 15496 15496 15496"; done > "$tmp/many.txt"
for mode in "" --stream; do
  err=$("$cli" detokenize --model "$model" --file "$tmp/many.txt" $mode 2>&1 >/dev/full); rc=$?
  check "detokenize $mode >/dev/full: rc=$rc '$err'" \
    grep -q "writing standard output: No space left on device" <<<"$err"
  check "detokenize $mode >/dev/full exit code" [ $rc -eq 1 ]
done
err=$(printf 'Hello world' | "$cli" tokenize --model "$model" 2>&1 >/dev/full); rc=$?
check "tokenize >/dev/full: rc=$rc '$err'" grep -q "writing standard output: No space left on device" <<<"$err"
yes 'Hello world' | head -50000 > "$tmp/big.txt"
err=$("$cli" tokenize --model "$model" --file "$tmp/big.txt" 2>&1 >/dev/full); rc=$?
check "tokenize (large) >/dev/full: rc=$rc '$err'" grep -q "writing standard output: No space left on device" <<<"$err"
err=$("$cli" detokenize --model "$model" --file "$tmp" 2>&1 >/dev/null); rc=$?
check "--file DIR: rc=$rc '$err'" grep -q "read error: Is a directory" <<<"$err"
err=$(echo hi | "$cli" tokenize 2>&1 >/dev/null); rc=$?
check "missing --model: rc=$rc" [ $rc -eq 2 ]
check "--help" "$cli" tokenize --help >/dev/null

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
