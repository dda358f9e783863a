#!/usr/bin/env bash
# test_config_doc.sh TCONSTD DOC — docs/config.md must be what the knob
# table prints (`tconstd --config-markdown`), after its 4-line header.
set -euo pipefail
diff <(tail -n +5 "$2") <("$1" --config-markdown) && echo "docs/config.md matches tconstd's knob table"
