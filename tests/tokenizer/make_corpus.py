#!/usr/bin/env python3
"""make_corpus.py OUT — writes the tokenizer parity corpus (>= 1 MB).

Deterministic for a given machine: a fixed seed, files read in sorted
order. Records are `u32 little-endian length, u8 kind, bytes`; kinds are
listed in KINDS (test_bpe_parity.c prints them back). Real text comes from
files every Debian machine of this project has (license texts, C headers,
the Python standard library); the rest is generated: many scripts, combining
marks, CJK, emoji sequences, digits of many systems, whitespace runs with
every ECMAScript space and the look-alikes that are not one, contractions,
the comma-heavy punctuation that exercises gpt-3-encoder's "a,b" rank
aliasing, a sweep of code points across all planes, and ill-formed UTF-8.
Not a test: run_parity.sh feeds it to node and to the C checker.
"""
import glob
import os
import random
import struct
import sys
import sysconfig

KINDS = ["prose", "code", "unicode", "whitespace", "punct", "invalid", "sweep"]
TARGET = 1_250_000  # bytes; the acceptance asks for >= 1 MB

rng = random.Random(20250401)
records = []


def add(kind, data):
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if data:
        records.append((KINDS.index(kind), data))


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def chunks(data, lo, hi, char_boundary=True):
    i = 0
    while i < len(data):
        j = min(len(data), i + rng.randint(lo, hi))
        if char_boundary:
            while j < len(data) and (data[j] & 0xC0) == 0x80:
                j += 1
        yield data[i:j]
        i = j


def total():
    return sum(len(d) for _, d in records)


# ---- real text --------------------------------------------------------------
prose_files = sorted(glob.glob("/usr/share/common-licenses/*"))
for p in prose_files:
    if os.path.isfile(p):
        for c in chunks(read(p), 300, 4000):
            add("prose", c)

code_files = sorted(glob.glob("/usr/include/*.h"))[:60]
stdlib = sysconfig.get_paths().get("stdlib", "")
for name in ["textwrap.py", "argparse.py", "difflib.py", "string.py", "heapq.py", "shlex.py",
             "fractions.py", "calendar.py", "json/decoder.py", "json/encoder.py", "csv.py",
             "html/parser.py", "base64.py", "pprint.py", "statistics.py", "unicodedata.py",
             "locale.py", "codecs.py"]:
    code_files.append(os.path.join(stdlib, name))
code_budget = 420_000
for p in code_files:
    data = read(p)
    if not data:
        continue
    for c in chunks(data[:40_000], 200, 3000):
        if code_budget <= 0:
            break
        add("code", c)
        code_budget -= len(c)

# ---- generated unicode ------------------------------------------------------
def rchar(ranges):
    a, b = rng.choice(ranges)
    return chr(rng.randint(a, b))


SCRIPTS = {
    "latin": [(0x61, 0x7A), (0x41, 0x5A), (0xC0, 0xFF), (0x100, 0x17F)],
    "greek": [(0x3B1, 0x3C9), (0x391, 0x3A9)],
    "cyrillic": [(0x430, 0x44F), (0x410, 0x42F)],
    "arabic": [(0x627, 0x64A)],
    "hebrew": [(0x5D0, 0x5EA)],
    "devanagari": [(0x915, 0x939)],
    "thai": [(0xE01, 0xE2E)],
    "hangul": [(0xAC00, 0xD7A3)],
    "cjk": [(0x4E00, 0x9FFF)],
    "cjk_ext_b": [(0x20000, 0x2A6DF)],
    "kana": [(0x3041, 0x3096), (0x30A1, 0x30FA)],
    "fullwidth": [(0xFF21, 0xFF3A), (0xFF41, 0xFF5A)],
    # letters newer than PCRE2 10.42's Unicode 14 (see tokenizer/unicode_extra.h)
    "new_letters": [(0x31350, 0x33479), (0x2EBF0, 0x2EE5D), (0x1E5D0, 0x1E5ED), (0x16D40, 0x16D6C),
                    (0x11380, 0x11389), (0xA7CB, 0xA7CF), (0x1C89, 0x1C8A), (0x105C0, 0x105F3)],
}
MARKS = {
    "latin": [(0x300, 0x36F)],
    "arabic": [(0x64B, 0x652)],
    "hebrew": [(0x5B0, 0x5BC)],
    "devanagari": [(0x93E, 0x94D), (0x901, 0x903)],
    "thai": [(0xE31, 0xE31), (0xE34, 0xE3A), (0xE47, 0xE4E)],
    "cyrillic": [(0x483, 0x487)],
}
DIGITS = [(0x30, 0x39), (0x660, 0x669), (0x966, 0x96F), (0xFF10, 0xFF19), (0xB2, 0xB3), (0xB9, 0xB9),
          (0xBC, 0xBE), (0x2160, 0x2188), (0x2460, 0x249B), (0x1D7CE, 0x1D7FF), (0x10D40, 0x10D49),
          (0x1E5F1, 0x1E5FA), (0x16D70, 0x16D79)]
EMOJI = [(0x1F600, 0x1F64F), (0x1F300, 0x1F5FF), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x2600, 0x26FF)]
SPACES = [" "] * 8 + ["\t", "\n", "\r\n", "\x0b", "\x0c", "\r", "\u00a0", "\u1680", "\u2000", "\u2005",
                      "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff"]
NOT_SPACES = ["\u0085", "\u180e", "\u200b", "\u2060", "\u200d", "\x1c", "\x1f"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ll", "\u2019s", "''", "'", "'x"]


def word(script):
    w = "".join(rchar(SCRIPTS[script]) for _ in range(rng.randint(1, 8)))
    if script in MARKS and rng.random() < 0.5:
        out = []
        for ch in w:
            out.append(ch)
            for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
                out.append(rchar(MARKS[script]))
        w = "".join(out)
    return w


def emoji():
    r = rng.random()
    if r < 0.35:
        return rchar(EMOJI)
    if r < 0.5:
        return rchar(EMOJI) + chr(rng.randint(0x1F3FB, 0x1F3FF))  # skin tone
    if r < 0.65:
        return "\u200d".join(rchar(EMOJI) for _ in range(rng.randint(2, 4)))  # ZWJ sequence
    if r < 0.8:
        return chr(0x1F1E6 + rng.randint(0, 25)) + chr(0x1F1E6 + rng.randint(0, 25))  # flag
    if r < 0.9:
        return rng.choice("0123456789#*") + "\ufe0f\u20e3"  # keycap
    return rchar(EMOJI) + "\ufe0f"


def number():
    r = rng.random()
    if r < 0.4:
        return str(rng.randint(0, 10 ** rng.randint(1, 15)))
    if r < 0.6:
        return "%d.%d" % (rng.randint(0, 9999), rng.randint(0, 999))
    if r < 0.7:
        return "{:,}".format(rng.randint(1000, 10 ** 9))
    return "".join(rchar(DIGITS) for _ in range(rng.randint(1, 6)))


def spaces():
    return "".join(rng.choice(SPACES) for _ in range(rng.choice([1, 1, 1, 2, 3, 5, 8, 17, 40])))


def unicode_text(n):
    parts = []
    size = 0
    while size < n:
        r = rng.random()
        if r < 0.55:
            s = word(rng.choice(list(SCRIPTS)))
            if rng.random() < 0.15:
                s += rng.choice(CONTRACTIONS)
        elif r < 0.65:
            s = emoji()
        elif r < 0.75:
            s = number()
        elif r < 0.85:
            s = rng.choice([".", ",", "!", "?", "...", "\u3002", "\u300c", "\u00bf", "\u2014", "--", "(", ")",
                            "\u00ab", "\u00bb", "\ue000", "\U0010fffd", "\ufffd", "\u0378", "\x00", "\x1b"])
        elif r < 0.9:
            s = rng.choice(NOT_SPACES)
        else:
            s = spaces()
        parts.append(s)
        if rng.random() < 0.6:
            parts.append(" " if rng.random() < 0.8 else spaces())
        size += len(s.encode("utf-8", "surrogatepass")) + 1
    return "".join(parts)


for _ in range(600):
    add("unicode", unicode_text(rng.randint(100, 700)))

# whitespace-heavy: runs before words, at ends, mixed line endings
for _ in range(350):
    parts = []
    for _ in range(rng.randint(5, 40)):
        parts.append(spaces() if rng.random() < 0.5 else rng.choice(["word", "x", "1", "!", "'s", "Zoë", "\u4e2d"]))
    add("whitespace", "".join(parts))

# punctuation with commas: JSON, tuples, CSV; pairs gpt-3-encoder aliases
PUNCT = ['","', '"],"', '"],["', '},"', '],"', '),"', "','", '",', '.","', ' ,"', ".,\"", "],[", "'),(", "',\"",
         ",,", ",,,", '""', "'''", "//", "/*", "*/", "->", "=>", "::", "#!", "<|endoftext|>", "<|", "|>"]
for _ in range(300):
    parts = []
    for _ in range(rng.randint(5, 60)):
        r = rng.random()
        if r < 0.4:
            parts.append(rng.choice(PUNCT))
        elif r < 0.6:
            parts.append('"%s"' % word("latin"))
        elif r < 0.7:
            parts.append(number())
        elif r < 0.8:
            parts.append(" ")
        else:
            parts.append(rng.choice(list("[]{}(),.:;'\"!?@#$%^&*-_=+\\|<>/`~")))
    add("punct", "".join(parts))

# ---- code point sweep: every 37th BMP and every 151st astral code point, in
# letter, number, space and punctuation context
sweep = [cp for cp in range(0x20, 0x10000, 37) if not 0xD800 <= cp < 0xE000]
sweep += list(range(0x10000, 0x110000, 151))
for i in range(0, len(sweep), 400):
    parts = []
    for cp in sweep[i:i + 400]:
        c = chr(cp)
        parts.append(rng.choice(["a%sb", "1%s2", " %s", "%s ", "!%s?", "'%s", "%s%s"]).replace("%s", c))
    add("sweep", "".join(parts))

# ---- ill-formed UTF-8 -------------------------------------------------------
BAD = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
       b"\xf0\x80\x80\xaf", b"\xf4\x90\x80\x80", b"\xf5", b"\xfe", b"\xff", b"\xe2\x82", b"\xf0\x9f\x98",
       b"\xf0\x9f", b"\xc3", b"\xe4\xb8", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc",
       b"\xed\x9f\xbf\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80"]
base = [d for k, d in records if KINDS[k] in ("prose", "unicode", "punct")]
for _ in range(700):
    src = bytearray(rng.choice(base)[: rng.randint(50, 1500)])
    for _ in range(rng.randint(1, 12)):
        pos = rng.randint(0, len(src))
        if rng.random() < 0.75:
            ins = rng.choice(BAD)
        else:
            ins = bytes(rng.randint(0x80, 0xFF) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.3:
            ins = rng.choice([b" ", b"\n", b"'", b""]) + ins
        src[pos:pos] = ins
    add("invalid", bytes(src))
for _ in range(60):  # raw bytes, cut at any byte
    add("invalid", bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 200))))
for d in [d for k, d in records if KINDS[k] == "unicode"][:100]:  # cut mid-character
    add("invalid", d[: rng.randint(1, len(d))])

# ---- top up with generated text until the target ------------------------
while total() < TARGET:
    add("unicode", unicode_text(rng.randint(500, 3000)))

rng.shuffle(records)
with open(sys.argv[1], "wb") as f:
    for kind, data in records:
        f.write(struct.pack("<IB", len(data), kind))
        f.write(data)
counts = {}
for k, d in records:
    counts[KINDS[k]] = counts.get(KINDS[k], 0) + len(d)
print("corpus: %d records, %d bytes (%s)" % (len(records), total(),
      ", ".join("%s %d" % (k, counts.get(k, 0)) for k in KINDS)))
