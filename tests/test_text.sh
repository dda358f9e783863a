#!/usr/bin/env bash
# test_text.sh TCONST TCONSTD GPT2_DIR — text in, text out, end to end:
# init-model --vocab attaches the GPT-2 files; `generate --text` equals
# tokenize -> generate --tokens -> detokenize; tconstd streams the same
# text over gRPC (`tconst client generate --text`); the eos that ends a
# generation is left out of the text. Label: e2e.
set -euo pipefail
T=$1 D=$2 V=$3
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
fail() { echo "FAIL $*"; exit 1; }
"$T" init-model --arch tconstformer --preset tiny --seed 5 --vocab "$V" --out "$tmp/m" >/dev/null
grep -q '"vocab_size":\s*50257' "$tmp/m/config.json" || fail "vocab_size not 50257"
prompt='Hello, wörld — 東京 🚀 123'
text=$("$T" generate --model "$tmp/m" --text "$prompt" -n 24 --temperature 0.9 --seed 4 --ignore-eos)
ids=$(printf '%s' "$prompt" | "$T" tokenize --model "$tmp/m")
[ -n "$ids" ] || fail "tokenize printed nothing"
gen=$("$T" generate --model "$tmp/m" --tokens "$ids" -n 24 --temperature 0.9 --seed 4 --ignore-eos)
want=$(echo "$gen" | "$T" detokenize --model "$tmp/m" --stream)
[ "$text" = "$want" ] || fail "generate --text '$text' != detokenize(generate --tokens) '$want'"
echo "ok   generate --text == tokenize | generate --tokens | detokenize (${#text} chars)"
"$D" --model "$tmp/m" --device cpu --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --log-level warn >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q ' ready: ' "$tmp/log" && break; kill -0 $pid || fail "tconstd died: $(cat "$tmp/log")"; sleep 0.1; done
addr=$(sed -n 's/.* ready: grpc \([^ ]*\) http.*/\1/p' "$tmp/log")
[ -n "$addr" ] || fail "no ready line"
over=$("$T" client generate --server "$addr" --text "$prompt" -n 24 --temperature 0.9 --seed 4 --ignore-eos)
[ "$over" = "$text" ] || fail "gRPC text '$over' != CLI text '$text'"
echo "ok   tconstd streams the same text over gRPC"
# the eos that ends a generation is not text (token_ids keep it): the
# model's eos_token_id pointed at the first id a seeded generation makes
# at index >= 2 that it did not make before; the text stops before it,
# here and over gRPC
S="--temperature 0.9 --seed 4"
# shellcheck disable=SC2086
g=$("$T" generate --model "$tmp/m" --tokens "$ids" -n 12 $S --ignore-eos)
read -r k eos < <(echo "$g" | awk '{for (i = 3; i <= NF; i++) {u = 1; for (j = 1; j < i; j++) if ($j == $i) u = 0; if (u) {print i, $i; exit}}}')
[ -n "$eos" ] || fail "no fresh id at index >= 2 in '$g'"
cp -r "$tmp/m" "$tmp/me"
sed -i "s/\"eos_token_id\":[[:space:]]*[0-9]*/\"eos_token_id\": $eos/" "$tmp/me/config.json"
grep -q "\"eos_token_id\": $eos\b" "$tmp/me/config.json" || fail "eos_token_id not rewritten"
# shellcheck disable=SC2086
ge=$("$T" generate --model "$tmp/me" --tokens "$ids" -n 12 $S)
[ "$ge" = "$(echo "$g" | cut -d' ' -f1-"$k")" ] || fail "ids up to and with the eos: '$ge' vs '$g' (eos $eos at $k)"
# shellcheck disable=SC2086
te=$("$T" generate --model "$tmp/me" --text "$prompt" -n 12 $S)
we=$(echo "$g" | cut -d' ' -f1-$((k - 1)) | "$T" detokenize --model "$tmp/me" --stream)
[ "$te" = "$we" ] && [ -n "$te" ] || fail "generate --text ending at eos: '$te', want the text before it '$we'"
"$D" --model "$tmp/me" --device cpu --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --log-level warn >"$tmp/log2" 2>&1 &
pid2=$!
for _ in $(seq 1 600); do grep -q ' ready: ' "$tmp/log2" && break; kill -0 $pid2 || fail "tconstd died: $(cat "$tmp/log2")"; sleep 0.1; done
addr2=$(sed -n 's/.* ready: grpc \([^ ]*\) http.*/\1/p' "$tmp/log2")
# shellcheck disable=SC2086
oe=$("$T" client generate --server "$addr2" --text "$prompt" -n 12 $S)
kill $pid2; wait $pid2 || true
[ "$oe" = "$te" ] || fail "gRPC text ending at eos '$oe' != CLI's '$te'"
echo "ok   the eos that ends a generation is not text (id $eos after $((k - 1)) tokens): CLI and gRPC"
r=$("$T" generate --model "$tmp/m" --text "" -n 3 2>&1) && fail "empty --text accepted"
grep -q "empty prompt" <<<"$r" || fail "empty --text: $r"
echo "ok   empty --text: $r"

# init-model over a model directory that holds a GPT-2 tokenizer, without
# --vocab: refused (the tokenizer would not match the new vocabulary), the
# directory left as it was; with --vocab it is replaced
cp -r "$tmp/m" "$tmp/m2"
r=$("$T" init-model --arch transformer --preset tiny --seed 6 --out "$tmp/m2" 2>&1) && fail "init-model over a tokenizer: accepted"
grep -q "holds a tokenizer (its 50257 tokens) and the new model's vocab_size is 512" <<<"$r" || fail "init-model: $r"
cmp -s "$tmp/m/config.json" "$tmp/m2/config.json" || fail "the refused init-model changed config.json"
"$T" init-model --arch transformer --preset tiny --seed 6 --vocab "$V" --out "$tmp/m2" >/dev/null
grep -q '"architecture":\s*"transformer"' "$tmp/m2/config.json" || fail "init-model --vocab over a model: not replaced"
echo "ok   init-model over another model's tokenizer: refused without --vocab ($r), replaced with it"
"$T" init-model --arch transformer --preset tiny --seed 6 --out "$tmp/m3" >/dev/null
# a tokenizer larger than the model's vocabulary (copied in by hand) is refused where text is used
cp "$V/encoder.json" "$V/vocab.bpe" "$tmp/m3/"
r=$("$T" generate --model "$tmp/m3" --text "hi" -n 2 2>&1) && fail "generate --text with a 50257-token tokenizer on vocab 512"
grep -q "the tokenizer has 50257 tokens, more than config.json's vocab_size 512" <<<"$r" || fail "generate: $r"
echo "ok   generate --text refuses a tokenizer larger than the model's vocabulary"
r=$(timeout 120 "$D" --model "$tmp/m3" --device cpu --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 2>&1) &&
    fail "tconstd started with a 50257-token tokenizer on vocab 512"
grep -q "the tokenizer has 50257 tokens, more than config.json's vocab_size 512" <<<"$r" || fail "tconstd: $r"
echo "ok   tconstd refuses it too"
