"""safetensors_io.py — a stdlib + numpy reader and writer for .safetensors.

What it is: the file format the reference model and the C engine share.
Layout: u64 little-endian header length n, n bytes of UTF-8 JSON
{"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
 "__metadata__": {"key": "string", ...}}, then the data section; offsets are
relative to the start of the data section.

What it is not: a general safetensors implementation. Only F32, F16 and BF16
tensors are read (always returned as np.float32); the `safetensors` pip
package is not needed.
"""

import json
import struct

import numpy as np

_DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2}
_MAX_HEADER = 100 << 20  # the upstream library's own limit


def f32_to_bf16_bits(a):
    """np.float32 array -> np.uint16 bf16 bit patterns, round to nearest even
    (NaN stays a quiet NaN)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = np.isnan(a)
    out = rounded.astype(np.uint16)
    if nan.any():
        out[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return out


def bf16_bits_to_f32(u16):
    """np.uint16 bf16 bit patterns -> np.float32 (exact: bits << 16)."""
    return (np.asarray(u16, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def read_header(path):
    """Returns (header dict without __metadata__, metadata dict, data offset)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        f.seek(0, 2)
        size = f.tell()
        if n > _MAX_HEADER or 8 + n > size:
            raise ValueError(f"{path}: header length {n} exceeds the file ({size} bytes)")
        f.seek(8)
        hdr_bytes = f.read(n)
    try:
        hdr = json.loads(hdr_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(hdr, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    meta = hdr.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: __metadata__ is not an object")
    data_size = size - 8 - n
    spans = []
    for name, info in hdr.items():
        if not isinstance(info, dict):
            raise ValueError(f"{path}: tensor '{name}': entry is not an object")
        dt, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"{path}: tensor '{name}': bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data_size):
            raise ValueError(f"{path}: tensor '{name}': bad data_offsets {offs!r} (data section {data_size} bytes)")
        if dt in _DTYPE_SIZE:
            want = int(np.prod(shape, dtype=np.int64)) * _DTYPE_SIZE[dt]
            if offs[1] - offs[0] != want:
                raise ValueError(f"{path}: tensor '{name}': {offs[1] - offs[0]} bytes for {dt}{shape} (want {want})")
        spans.append((offs[0], offs[1], name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ValueError(f"{path}: tensors '{n0}' and '{n1}' overlap")
    return hdr, meta, 8 + n


def load(path, names=None):
    """Reads a .safetensors file -> dict name -> np.float32 array (C order).

    names: optional iterable; read only those tensors. A tensor of a dtype
    other than F32/F16/BF16 raises ValueError naming it.
    """
    hdr, _, base = read_header(path)
    want = set(hdr) if names is None else set(names)
    missing = want - set(hdr)
    if missing:
        raise KeyError(f"{path}: no tensor {sorted(missing)[0]!r}")
    out = {}
    with open(path, "rb") as f:
        for name in sorted(want, key=lambda k: hdr[k]["data_offsets"][0]):
            info = hdr[name]
            dt = info["dtype"]
            if dt not in _DTYPE_SIZE:
                raise ValueError(f"{path}: tensor '{name}': unsupported dtype {dt} (F32, F16 or BF16)")
            b, e = info["data_offsets"]
            f.seek(base + b)
            buf = f.read(e - b)
            if dt == "F32":
                a = np.frombuffer(buf, dtype="<f4").astype(np.float32)
            elif dt == "F16":
                a = np.frombuffer(buf, dtype="<f2").astype(np.float32)
            else:
                a = bf16_bits_to_f32(np.frombuffer(buf, dtype="<u2"))
            out[name] = a.reshape(info["shape"])
    return out


def _encode(a, dtype):
    a = np.asarray(a)
    if dtype == "F32":
        return np.ascontiguousarray(a, dtype="<f4").tobytes()
    if dtype == "F16":
        return np.ascontiguousarray(a.astype(np.float32), dtype="<f4").astype("<f2").tobytes()
    if dtype == "BF16":
        return f32_to_bf16_bits(a.astype(np.float32)).astype("<u2").tobytes()
    raise ValueError(f"unsupported dtype {dtype!r} (F32, F16 or BF16)")


def save(path, tensors, dtype="F32", metadata=None):
    """Writes tensors (dict name -> array-like, written in dict order).

    dtype: "F32" | "F16" | "BF16" for every tensor, or a dict name -> dtype.
    metadata: optional dict of str -> str, stored as __metadata__.
    The header is padded with spaces so the data section starts 8-aligned.
    """
    hdr = {}
    blobs = []
    off = 0
    for name, a in tensors.items():
        dt = dtype[name] if isinstance(dtype, dict) else dtype
        blob = _encode(a, dt)
        hdr[name] = {"dtype": dt, "shape": [int(s) for s in np.shape(a)], "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    if metadata:
        hdr = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **hdr}
    h = json.dumps(hdr, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)
