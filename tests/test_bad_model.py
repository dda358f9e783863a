#!/usr/bin/env python3
"""test_bad_model.py TCONST — every kind of broken model directory gets a
one-line error naming the problem, exit code 1, and no crash (no signal).
Builds a good tiny model with `tconst init-model`, then breaks a copy of it
per case. Standard library only. Label: unit."""
import json, os, shutil, struct, subprocess, sys, tempfile

TCONST = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="tc_bad_")
good = os.path.join(tmp, "good")
subprocess.run([TCONST, "init-model", "--arch", "tconstformer", "--preset", "tiny", "--vocab-size", "61",
                "--n-embd", "16", "--n-head", "2", "--ffn-hidden", "24", "--out", good], check=True,
               stdout=subprocess.DEVNULL)
tokens = os.path.join(tmp, "tokens.txt")
open(tokens, "w").write("1 2 3 4 5\n")

def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]

def write_st(path, hdr, data, hlen=None):
    h = json.dumps(hdr).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h) if hlen is None else hlen))
        f.write(h)
        f.write(data)

def case(name):
    d = os.path.join(tmp, name)
    shutil.copytree(good, d)
    return d

def edit_config(d, fn):
    p = os.path.join(d, "config.json")
    c = json.load(open(p))
    fn(c)
    json.dump(c, open(p, "w"))

def edit_st(d, fn, hlen=None):
    p = os.path.join(d, "model.safetensors")
    hdr, data = read_st(p)
    data = fn(hdr, data) or data
    write_st(p, hdr, data, hlen)

L0 = "transformer.transformer_layers.0.compress_context_layer."
cases = []
def add(name, expect, setup):
    cases.append((name, expect, setup))

add("missing directory", "no such file", lambda d: shutil.rmtree(d))
add("missing config.json", "config.json", lambda d: os.remove(os.path.join(d, "config.json")))
add("missing model.safetensors", "model.safetensors", lambda d: os.remove(os.path.join(d, "model.safetensors")))
add("config not json", "not a valid json", lambda d: open(os.path.join(d, "config.json"), "w").write("{oops"))
add("missing config key", "'n_embd'", lambda d: edit_config(d, lambda c: c.pop("n_embd")))
add("config key wrong type", "'vocab_size'", lambda d: edit_config(d, lambda c: c.update(vocab_size="many")))
add("inconsistent n_head", "n_head", lambda d: edit_config(d, lambda c: c.update(n_head=3)))
add("window out of range", "history_window", lambda d: edit_config(d, lambda c: c.update(history_window=0)))
add("unknown architecture", "unknown architecture", lambda d: edit_config(d, lambda c: c.update(architecture="mamba")))
add("missing block_inner_depth", "'block_inner_depth'", lambda d: edit_config(d, lambda c: c.pop("block_inner_depth")))
add("missing eos_token_id", "missing key 'eos_token_id'", lambda d: edit_config(d, lambda c: c.pop("eos_token_id")))
add("missing bos_token_id", "missing key 'bos_token_id'", lambda d: edit_config(d, lambda c: c.pop("bos_token_id")))
add("eos_token_id not an integer", "'eos_token_id' must be an integer", lambda d: edit_config(d, lambda c: c.update(eos_token_id="2")))
add("vocab mismatch", "vocab mismatch", lambda d: edit_config(d, lambda c: c.update(vocab_size=60)))
def drop(h, data): h.pop(L0 + "qkv_proj.bias")
add("missing tensor", "missing tensor '" + L0 + "qkv_proj.bias'", lambda d: edit_st(d, drop))
def reshape(h, data):
    t = h[L0 + "out_proj.weight"]; t["shape"] = [t["shape"][1] // 2, t["shape"][0] * 2]
add("wrong shape", "has shape [8, 32], expected [16, 16]", lambda d: edit_st(d, reshape))
def i32(h, data): h[L0 + "norm1.bias"]["dtype"] = "I32"
add("wrong dtype", "dtype i32", lambda d: edit_st(d, i32))
def unk(h, data): h[L0 + "norm1.bias"]["dtype"] = "Q4_K"
add("unknown dtype", "unknown dtype", lambda d: edit_st(d, unk))
def trunc(h, data): return data[: len(data) - 100]
add("truncated file", "truncated", lambda d: edit_st(d, trunc))
add("header length past end of file", "past end of file", lambda d: edit_st(d, lambda h, x: None, hlen=1 << 40))
def overlap(h, data):
    a = h[L0 + "norm1.weight"]["data_offsets"]; b = h[L0 + "norm1.bias"]
    b["data_offsets"] = [a[0] + 4, a[1] + 4]
add("overlapping offsets", "overlap", lambda d: edit_st(d, overlap))
def bad_sz(h, data):
    o = h[L0 + "norm1.bias"]["data_offsets"]; o[1] -= 4
add("size mismatch", "data_offsets give", lambda d: edit_st(d, bad_sz))
add("header not json", "not valid json", lambda d: open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", 5) + b"{abc}" + b"\0" * 64))
add("empty file", "shorter than the 8-byte", lambda d: open(os.path.join(d, "model.safetensors"), "wb").close())
def neg(h, data): h[L0 + "norm1.bias"]["data_offsets"] = [-4, 60]
add("negative offset", "data_offsets", lambda d: edit_st(d, neg))
def tie(h, data): h["transformer.lm_head.weight"] = {"dtype": "F32", "shape": [61, 8], "data_offsets": [0, 61 * 8 * 4]}
add("lm_head wrong shape", "transformer.lm_head.weight", lambda d: edit_st(d, tie))

# a config that describes a smaller model than the file: refused, not
# loaded truncated
add("fewer blocks in config", "larger model than the config", lambda d: edit_config(d, lambda c: c.update(n_block=1)))
add("shallower blocks in config", "deeper model than the config",
    lambda d: edit_config(d, lambda c: c.update(block_inner_depth=c["block_inner_depth"] - 1)))
def raw_header(d, text):
    p = os.path.join(d, "model.safetensors")
    hdr, data = read_st(p)
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)
def dup_name(d):
    hdr, _ = read_st(os.path.join(d, "model.safetensors"))
    # the same name twice: the first would win in cJSON, the last in Python
    k = L0 + "norm1.weight"
    raw_header(d, (json.dumps({k: hdr[k]})[:-1] + ", " + json.dumps(hdr)[1:]).encode())
add("duplicate tensor name", "appears twice", dup_name)
def nul_name(d):
    hdr, _ = read_st(os.path.join(d, "model.safetensors"))
    k = L0 + "norm1.weight"
    hdr[k + "\u0000x"] = hdr.pop(k)
    raw_header(d, json.dumps(hdr).replace("\\\\u0000", "\\u0000").encode())
add("NUL in a tensor name", "u0000", nul_name)
def header_garbage(d):
    hdr, _ = read_st(os.path.join(d, "model.safetensors"))
    raw_header(d, json.dumps(hdr).encode() + b" garbage")
add("bytes after the header", "after its json object", header_garbage)
add("bytes after the last tensor", "trailing bytes", lambda d: edit_st(d, lambda h, x: x + b"\0" * 8))
def hidden_overlap(h, data):
    # weight [a, a+64), an empty tensor at a+8, bias [a+16, a+80): the
    # empty one sits between the two that overlap
    a = h[L0 + "norm1.weight"]["data_offsets"][0]
    h["extra.empty"] = {"dtype": "F32", "shape": [0], "data_offsets": [a + 8, a + 8]}
    h[L0 + "norm1.bias"]["data_offsets"] = [a + 16, a + 80]
add("overlap behind an empty tensor", "overlap", lambda d: edit_st(d, hidden_overlap))
def nan_weight(h, data):
    o = h[L0 + "norm1.weight"]["data_offsets"][0]
    return data[:o] + struct.pack("<f", float("nan")) + data[o + 4:]
add("NaN weight", "non-finite", lambda d: edit_st(d, nan_weight))
def head_differs(h, data):
    e = h["embedding.weight"]
    h["transformer.lm_head.weight"] = {"dtype": e["dtype"], "shape": e["shape"],
                                       "data_offsets": [len(data), len(data) + e["data_offsets"][1] - e["data_offsets"][0]]}
    return data + b"\0" * (e["data_offsets"][1] - e["data_offsets"][0])
add("untied lm_head", "lm_head.weight differs", lambda d: edit_st(d, head_differs))
add("config text after the object", "text follows", lambda d: open(os.path.join(d, "config.json"), "a").write(" garbage {"))
def dup_key(d):
    p = os.path.join(d, "config.json")
    text = open(p).read().strip()
    open(p, "w").write('{"n_block": 1, ' + text[1:])
add("config key twice", "'n_block' appears twice", dup_key)
def fifo(name):
    def f(d):
        p = os.path.join(d, name)
        os.remove(p)
        os.mkfifo(p)
    return f
add("config.json a FIFO", "not a regular file", fifo("config.json"))
add("model.safetensors a FIFO", "not a regular file", fifo("model.safetensors"))

# a tied head equal to the embedding is fine (the control of "untied lm_head")
ctl = case("tied_head_equal")
def head_equal(h, data):
    e = h["embedding.weight"]
    b0, b1 = e["data_offsets"]
    h["transformer.lm_head.weight"] = {"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [len(data), len(data) + b1 - b0]}
    return data + data[b0:b1]
edit_st(ctl, head_equal)
r = subprocess.run([TCONST, "info", "--model", ctl], capture_output=True, text=True, timeout=60)
ctl_ok = r.returncode == 0
print(("ok   " if ctl_ok else "FAIL ") + f"{'tied lm_head equal (loads)':32s} rc={r.returncode} {r.stderr.strip()[:200]}")
# a model without an EOS says so explicitly: null (Hugging Face style) loads as none
ctl2 = case("eos_null")
edit_config(ctl2, lambda c: c.update(eos_token_id=None))
r = subprocess.run([TCONST, "info", "--model", ctl2], capture_output=True, text=True, timeout=60)
null_ok = r.returncode == 0 and "eos_token_id: -1 (none" in r.stdout
print(("ok   " if null_ok else "FAIL ") + f"{'eos_token_id null (loads, none)':32s} rc={r.returncode} {r.stderr.strip()[:200]}")
ctl_ok = ctl_ok and null_ok

# the built-in model under TMPDIR: made once, then used only while this
# user owns it and nobody else can write to it (a shared /tmp lets another
# user create the name first and plant a model there)
def builtin(tmpdir):
    env = dict(os.environ, TMPDIR=tmpdir)
    r = subprocess.run([TCONST, "info"], capture_output=True, text=True, timeout=120, env=env)
    return r.returncode, r.stderr.strip()
bdir = os.path.join(tmp, "bt")
os.mkdir(bdir)
rc1, _ = builtin(bdir)
rc2, _ = builtin(bdir)
bpath = os.path.join(bdir, f"tconst-builtin-tiny-v1-{os.getuid()}")
os.chmod(bpath, 0o777)
rc3, err3 = builtin(bdir)
os.chmod(bpath, 0o755)
os.chmod(os.path.join(bpath, "model.safetensors"), 0o666)
rc4, err4 = builtin(bdir)
os.chmod(os.path.join(bpath, "model.safetensors"), 0o644)
ldir = os.path.join(tmp, "bt2")
os.mkdir(ldir)
os.symlink(bpath, os.path.join(ldir, f"tconst-builtin-tiny-v1-{os.getuid()}"))
rc5, err5 = builtin(ldir)
# made under umask 000: its own modes, so it is trusted on the next run too
udir = os.path.join(tmp, "bt3")
os.mkdir(udir)
def umask0_info():
    r = subprocess.run([TCONST, "info"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TMPDIR=udir), preexec_fn=lambda: os.umask(0))
    return r.returncode, r.stderr.strip()
rc6a, _ = umask0_info()
rc6, err6 = umask0_info()
bt = [(rc1 == 0 and rc2 == 0, "built-in model made, then reused", ""),
      (rc3 == 1 and "not trusted" in err3, "a world-writable built-in model directory is refused", err3),
      (rc4 == 1 and "not trusted" in err4, "a world-writable built-in model file is refused", err4),
      (rc5 == 1 and "not a directory" in err5, "a symlink in the built-in model's place is refused", err5),
      (rc6a == 0 and rc6 == 0, "a built-in model made under umask 000 is used again", err6)]
for ok, what, detail in bt:
    print(("ok   " if ok else "FAIL ") + f"{what:52s} {detail[:160]}")

fails = (0 if ctl_ok else 1) + sum(not ok for ok, _, _ in bt)
for name, expect, setup in cases:
    d = case(name.replace(" ", "_"))
    setup(d)
    for cmd in (["info", "--model", d], ["logits", "--model", d, "--tokens", tokens, "--out", os.path.join(tmp, "o.f32")]):
        r = subprocess.run([TCONST] + cmd, capture_output=True, text=True, timeout=60)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        ok = r.returncode == 1 and len(lines) == 1 and expect.lower() in lines[0].lower()
        print(("ok   " if ok else "FAIL ") + f"{name:32s} rc={r.returncode} {lines[0] if lines else '(no message)'}")
        if not ok:
            fails += 1
            if len(lines) != 1: print("     stderr:", r.stderr)
shutil.rmtree(tmp)
print(f"{len(cases) * 2 - fails}/{len(cases) * 2} bad-model checks passed")
sys.exit(1 if fails else 0)
