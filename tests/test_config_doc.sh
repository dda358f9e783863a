#!/usr/bin/env bash
# test_config_doc.sh TCONSTD DOC [TCONST_WORKER] — docs/config.md must be
# what the knob tables print (`tconstd --config-markdown`, then a blank
# line and `tconst-worker --config-markdown`), after its 4-line header.
set -euo pipefail
gen() {
  "$1" --config-markdown
  if [ -n "${3:-}" ]; then echo; "$3" --config-markdown; fi
}
diff <(tail -n +5 "$2") <(gen "$@") && echo "docs/config.md matches the knob tables of tconstd and tconst-worker"
