#!/usr/bin/env node
// merge_fuzz.js OUTDIR [N] — N random small vocabularies (default 40) that
// stress the merge order: an alphabet of punctuation dense in commas, so that
// gpt-3-encoder's "a,b" rank keys alias pairs and tie ranks, merges whose
// results coincide, runs of one symbol (overlapping pairs). Writes, per
// vocabulary k, OUTDIR/v<k>/{encoder.json,vocab.bpe} and OUTDIR/v<k>.corpus
// (records as make_corpus.py writes them). merge_fuzz.sh runs node_encode.js
// and the C checker on each. Deterministic (seeded). Not a test by itself.
'use strict';
const fs = require('fs');
const path = require('path');

const [outDir, nArg] = process.argv.slice(2);
const N = Number(nArg || 40);
let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296);
const pick = (a) => a[Math.floor(rnd() * a.length)];

// GPT-2 bytes_to_unicode
const byteChar = [];
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    byteChar[b] = String.fromCharCode(printable ? b : 256 + n++);
  }
}
const ALPHA = [',', ',', ',', '"', "'", '!', '?', '.'];

for (let k = 0; k < N; k++) {
  const dir = path.join(outDir, 'v' + k);
  fs.mkdirSync(dir, { recursive: true });
  const vocab = {};
  let next = 0;
  for (let b = 0; b < 256; b++) vocab[byteChar[b]] = next++;
  const syms = ALPHA.slice(0, 3 + (k % 6)).concat(['Ġ']);
  const uniq = [...new Set(syms)];
  const have = new Set();
  const merges = [];
  const nm = 10 + Math.floor(rnd() * 60);
  for (let t = 0; t < nm * 4 && merges.length < nm; t++) {
    const a = pick(uniq), b = pick(uniq.filter((s) => s !== 'Ġ'));
    if (a.length + b.length > 6 || have.has(a + ' ' + b)) continue;
    have.add(a + ' ' + b);
    merges.push(a + ' ' + b);
    if (!(a + b in vocab)) { vocab[a + b] = next++; uniq.push(a + b); }
  }
  // Where a comma split of a key joins to no token, node would emit an
  // undefined id (the C side skips that alias, see bpe_load.c): close the
  // vocabulary under those joins so every id is defined.
  for (let grew = true; grew;) {
    grew = false;
    for (const m of merges) {
      const key = m.replace(' ', ',');
      for (let p = 1; p < key.length - 1; p++) {
        if (key[p] !== ',') continue;
        const x = key.slice(0, p), y = key.slice(p + 1);
        if (x in vocab && y in vocab && !(x + y in vocab)) { vocab[x + y] = next++; grew = true; }
      }
    }
  }
  fs.writeFileSync(path.join(dir, 'encoder.json'), JSON.stringify(vocab));
  fs.writeFileSync(path.join(dir, 'vocab.bpe'), '#version: 0.2\n' + merges.join('\n') + '\n');
  const recs = [];
  const chars = ALPHA.slice(0, 3 + (k % 6));
  for (let r = 0; r < 300; r++) {
    let s = rnd() < 0.3 ? ' ' : '';
    const len = 1 + Math.floor(rnd() * 14);
    for (let i = 0; i < len; i++) s += pick(chars);
    const b = Buffer.from(s, 'utf8');
    const h = Buffer.alloc(5);
    h.writeUInt32LE(b.length);
    h[4] = 4; // "punct"
    recs.push(h, b);
  }
  fs.writeFileSync(path.join(outDir, 'v' + k + '.corpus'), Buffer.concat(recs));
}
console.log(`merge_fuzz: ${N} vocabularies in ${outDir}`);
