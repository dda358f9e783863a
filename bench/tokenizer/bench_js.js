#!/usr/bin/env node
// bench_js.js PKG_DIR CORPUS [REPEAT] — encode throughput of the npm
// gpt-3-encoder on the records bench_encode.c times, well-formed or not
// (each record decoded by Buffer.toString, as a JS caller would). A cold
// pass (fresh word cache) and the best of REPEAT warm ones. Not a test.
'use strict';
const fs = require('fs');
const path = require('path');
const [pkgDir, corpusPath, rep] = process.argv.slice(2);
const repeat = Number(rep || 3);
const t0 = process.hrtime.bigint();
const enc = require(path.resolve(pkgDir));
const tLoad = Number(process.hrtime.bigint() - t0) / 1e6;
const buf = fs.readFileSync(corpusPath);
const recs = [];
let bytes = 0;
for (let off = 0; off + 5 <= buf.length;) {
  const len = buf.readUInt32LE(off);
  recs.push([buf[off + 4], buf.toString('utf8', off + 5, off + 5 + len), len]);
  bytes += len;
  off += 5 + len;
}
const kinds = ['prose', 'code', 'unicode', 'whitespace', 'punct', 'invalid', 'sweep'];
const kt = kinds.map(() => 0), kb = kinds.map(() => 0);
let best = Infinity, cold = 0, ids = 0;
for (let r = 0; r <= repeat; r++) {
  ids = 0;
  const t = process.hrtime.bigint();
  for (const [k, s, len] of recs) {
    const tk = process.hrtime.bigint();
    ids += enc.encode(s).length;
    if (r > 0) { kt[k] += Number(process.hrtime.bigint() - tk) / 1e9; kb[k] += len; }
  }
  const dt = Number(process.hrtime.bigint() - t) / 1e9;
  if (r === 0) cold = dt; else best = Math.min(best, dt);
}
console.log(`JS   gpt-3-encoder (node ${process.version}): load ${tLoad.toFixed(0)} ms; ${bytes} bytes -> ${ids} ids; ` +
  `cold ${(bytes / cold / 1e6).toFixed(2)} MB/s, warm ${(bytes / best / 1e6).toFixed(2)} MB/s (best of ${repeat})`);
console.log('JS   warm MB/s by kind:' + kinds.map((k, i) => kb[i] ? ` ${k} ${(kb[i] / kt[i] / 1e6).toFixed(1)}` : '').join(''));
