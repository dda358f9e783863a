#!/usr/bin/env bash
# run.sh BUILD — the README's run command: the built-in tiny model
# streaming a generation. (Until tconstd lands this drives the engine
# through `tconst generate`.)
set -euo pipefail
B=${1:-build}
echo "tconst: built-in tiny tconstformer, greedy, 64 tokens after the prompt 1 2 3:"
"$B/tconst" generate --tokens "1 2 3" -n 64 --ignore-eos
echo "tconst: the same prompt, sampled (temperature 0.8, top-p 0.95, seed 7):"
"$B/tconst" generate --tokens "1 2 3" -n 64 --temperature 0.8 --top-p 0.95 --seed 7 --ignore-eos
