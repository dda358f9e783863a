#!/usr/bin/env bash
# check_classes.sh TOOL WORKDIR — every code point U+0000..U+10FFFF must be
# classed (space / letter / number / other) by the C pre-tokenizer exactly
# as by node's /u regex, which is what gpt-3-encoder splits with. Needs node
# only (no npm package). On failure, lists the first differing code points:
# regenerate tokenizer/unicode_extra.h (see its header) after a node or
# PCRE2 upgrade.
set -euo pipefail
tool=$1 work=$2
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null || { echo "check_classes: node not found (Debian package nodejs; scripts/deps.sh installs it)" >&2; exit 1; }
mkdir -p "$work"
node "$here/unicode_classes.js" dump "$work/classes.node.bin"
"$tool" pretok "$work/classes.c.bin"
if cmp -s "$work/classes.node.bin" "$work/classes.c.bin"; then
  echo "unicode classes: 1114112 code points agree with node $(node --version)"
  echo "1 passed, 0 failed"
  exit 0
fi
node -e '
const fs = require("fs");
const a = fs.readFileSync(process.argv[1]), b = fs.readFileSync(process.argv[2]);
const name = ["other", "letter", "number", "space"];
let n = 0;
for (let cp = 0; cp < a.length; cp++) if (a[cp] !== b[cp]) {
  if (n++ < 20) console.log("U+" + cp.toString(16).toUpperCase().padStart(4, "0") + ": node " + name[a[cp]] + ", C " + (name[b[cp]] || b[cp]));
}
console.log(n + " code points differ");
' "$work/classes.node.bin" "$work/classes.c.bin"
echo "0 passed, 1 failed"
exit 1
