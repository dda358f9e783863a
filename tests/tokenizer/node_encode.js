#!/usr/bin/env node
// node_encode.js PKG_DIR CORPUS OUT — runs the npm gpt-3-encoder over every
// corpus record and writes what it produced for test_bpe_parity.c.
//
// Well-formed records go through the package as published (`require`),
// as a JS string. Ill-formed ones cannot be a JS string byte for byte, so
// two runs are recorded:
//  - "raw": every byte that starts no well-formed sequence is carried as a
//    lone surrogate U+DC80..U+DCFF (Python's surrogateescape), which the
//    package's own regex treats as one "other" character, and the package's
//    Encoder.js is evaluated unmodified except that its TextEncoder writes
//    such a surrogate back as the byte. So node does the split and the
//    merges of the raw bytes; only the string->bytes step is swapped.
//  - "replaced": Buffer.toString() (U+FFFD per maximal subpart, WHATWG)
//    through the published package, plus those UTF-8 bytes.
// Also written: the package's decode() of the raw ids, as UTF-8 bytes.
//
// With TC_VOCAB_DIR set, Encoder.js runs (unmodified, both ways) on that
// directory's encoder.json + vocab.bpe instead of its own (merge_fuzz.sh).
//
// OUT, per record: u32 n, i32 ids[n] (raw; -1 where node gave undefined),
// u32 len, decode bytes, u8 ill_formed, and when ill_formed: u32 n2,
// i32 ids2[n2], u32 len2, replaced bytes. Little-endian.
'use strict';
const fs = require('fs');
const path = require('path');

const [pkgDir, corpusPath, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error('usage: node_encode.js PKG_DIR CORPUS OUT');
  process.exit(2);
}
const pkg = path.resolve(pkgDir);
const vocabDir = process.env.TC_VOCAB_DIR ? path.resolve(process.env.TC_VOCAB_DIR) : null;

// Table 3-7: length of the well-formed sequence at buf[i], 0 if none.
function seqLen(buf, i) {
  const b = buf[i];
  if (b < 0x80) return 1;
  let need, lo = 0x80, hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) need = 1;
  else if (b === 0xe0) { need = 2; lo = 0xa0; }
  else if (b === 0xed) { need = 2; hi = 0x9f; }
  else if (b >= 0xe1 && b <= 0xef) need = 2;
  else if (b === 0xf0) { need = 3; lo = 0x90; }
  else if (b >= 0xf1 && b <= 0xf3) need = 3;
  else if (b === 0xf4) { need = 3; hi = 0x8f; }
  else return 0;
  for (let k = 1; k <= need; k++) {
    if (i + k >= buf.length) return 0;
    const c = buf[i + k];
    if (c < lo || c > hi) return 0;
    lo = 0x80; hi = 0xbf;
  }
  return need + 1;
}

function escapeBytes(buf) {
  let s = '', bad = false;
  for (let i = 0; i < buf.length;) {
    const n = seqLen(buf, i);
    if (n === 0) { s += String.fromCharCode(0xdc00 + buf[i]); bad = true; i++; }
    else { s += buf.toString('utf8', i, i + n); i += n; }
  }
  return { s, bad };
}

class EscapingTextEncoder {
  constructor() { this.real = new TextEncoder(); }
  encode(str) {
    const out = [];
    for (const ch of str) {
      const u = ch.charCodeAt(0);
      if (ch.length === 1 && u >= 0xdc80 && u <= 0xdcff) out.push(u - 0xdc00);
      else for (const b of this.real.encode(ch)) out.push(b);
    }
    return Uint8Array.from(out);
  }
}

// Encoder.js evaluated as node would load it, with TextEncoder swapped and
// optionally its directory.
const src = fs.readFileSync(path.join(pkg, 'Encoder.js'), 'utf8');
function load(TE, dir) {
  const mod = { exports: {} };
  new Function('require', 'module', 'exports', '__dirname', '__filename', 'TextEncoder', src)(
    require, mod, mod.exports, dir, path.join(dir, 'Encoder.js'), TE);
  return mod.exports;
}
const enc = vocabDir ? load(TextEncoder, vocabDir) : require(pkg);
const encEsc = load(EscapingTextEncoder, vocabDir || pkg);

const corpus = fs.readFileSync(corpusPath);
const chunks = [];
const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
const ids32 = (ids) => {
  const b = Buffer.alloc(4 * ids.length);
  ids.forEach((v, i) => b.writeInt32LE(Number.isInteger(v) ? v : -1, 4 * i));
  return b;
};
let nrec = 0, nbytes = 0, nids = 0, t = 0;
for (let off = 0; off < corpus.length;) {
  const len = corpus.readUInt32LE(off);
  const rec = corpus.subarray(off + 5, off + 5 + len);
  off += 5 + len;
  const { s, bad } = escapeBytes(rec);
  const t0 = process.hrtime.bigint();
  const ids = bad ? encEsc.encode(s) : enc.encode(s);
  t += Number(process.hrtime.bigint() - t0);
  const dec = Buffer.from(enc.decode(ids), 'utf8');
  chunks.push(u32(ids.length), ids32(ids), u32(dec.length), dec, Buffer.from([bad ? 1 : 0]));
  if (bad) {
    const repl = rec.toString('utf8');
    const ids2 = enc.encode(repl);
    const rb = Buffer.from(repl, 'utf8');
    chunks.push(u32(ids2.length), ids32(ids2), u32(rb.length), rb);
  }
  nrec++; nbytes += len; nids += ids.length;
}
fs.writeFileSync(outPath, Buffer.concat(chunks));
console.log(`node ${process.version} gpt-3-encoder ${require(path.join(pkg, 'package.json')).version}: ` +
  `${nrec} records, ${nbytes} bytes -> ${nids} ids in ${(t / 1e9).toFixed(2)} s`);
