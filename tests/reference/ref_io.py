"""ref_io.py: file formats used by the PyTorch reference.

- safetensors: a small reader/writer (no `safetensors` package on this machine). Layout: 8-byte
  little-endian header length N, then N bytes of JSON `{name: {dtype, shape, data_offsets}, ...,
  "__metadata__": {str: str}}`, then the raw little-endian tensor bytes.
- challenge token shards: 256 x int32 LE header (magic 20240520, version 1, token count), then
  uint16 LE token ids (spec baseline-pr65-pr453.md §1.1).
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict, Optional, Tuple

import numpy as np
import torch

# safetensors dtype name -> (numpy dtype used for the raw bytes, torch dtype)
_ST_DTYPES = {
    "F64": (np.dtype("<f8"), torch.float64),
    "F32": (np.dtype("<f4"), torch.float32),
    "F16": (np.dtype("<f2"), torch.float16),
    "BF16": (np.dtype("<u2"), torch.bfloat16),  # raw bits, reinterpreted below
    "I64": (np.dtype("<i8"), torch.int64),
    "I32": (np.dtype("<i4"), torch.int32),
    "I16": (np.dtype("<i2"), torch.int16),
    "I8": (np.dtype("i1"), torch.int8),
    "U8": (np.dtype("u1"), torch.uint8),
    "BOOL": (np.dtype("u1"), torch.bool),
}
_TORCH_TO_ST = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

MAX_HEADER_BYTES = 100 * 1024 * 1024


def _tensor_from_bytes(raw: bytes, st_dtype: str, shape: Tuple[int, ...]) -> torch.Tensor:
    np_dtype, t_dtype = _ST_DTYPES[st_dtype]
    arr = np.frombuffer(raw, dtype=np_dtype).copy()
    if st_dtype == "BF16":
        t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    elif st_dtype == "BOOL":
        t = torch.from_numpy(arr).to(torch.bool)
    else:
        t = torch.from_numpy(arr.astype(np_dtype.newbyteorder("="), copy=False))
    return t.reshape(shape)


def load_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Read a safetensors file. Returns (tensors in file order, metadata)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ValueError(f"{path}: bad safetensors header length {n}")
        header = json.loads(f.read(n).decode("utf-8"))
        data = f.read()
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    out: Dict[str, torch.Tensor] = {}
    for name, info in entries:
        st_dtype = info["dtype"]
        if st_dtype not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {st_dtype}")
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(v) for v in info["data_offsets"])
        numel = 1
        for s in shape:
            numel *= s
        if not (0 <= begin <= end <= len(data)) or end - begin != numel * _ST_DTYPES[st_dtype][0].itemsize:
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {begin}..{end} for shape {shape}")
        out[name] = _tensor_from_bytes(data[begin:end], st_dtype, shape)
    return out, {str(k): str(v) for k, v in meta.items()}


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype == torch.bool:
        return t.to(torch.uint8).numpy().tobytes()
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def save_safetensors(path: str, tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write tensors (in the given order) to a safetensors file, atomically (temp name + rename)."""
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _TORCH_TO_ST:
            raise ValueError(f"tensor {name}: unsupported dtype {t.dtype}")
        b = _tensor_bytes(t)
        header[name] = {"dtype": _TORCH_TO_ST[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256


def load_shard(path: str) -> np.ndarray:
    """Read one challenge shard, checking magic, version and exact file size (spec §1.1)."""
    header_bytes = SHARD_HEADER_INTS * 4
    size = os.path.getsize(path)
    if size < header_bytes:
        raise ValueError(f"{path}: shorter than the 1024-byte shard header")
    header = np.fromfile(path, dtype="<i4", count=SHARD_HEADER_INTS)
    if int(header[0]) != SHARD_MAGIC or int(header[1]) != SHARD_VERSION:
        raise ValueError(f"{path}: bad shard header (magic {int(header[0])}, version {int(header[1])})")
    n = int(header[2])
    if n < 0 or size != header_bytes + 2 * n:
        raise ValueError(f"{path}: size {size} does not match header token count {n}")
    return np.fromfile(path, dtype="<u2", count=n, offset=header_bytes).astype(np.int64)


def write_shard(path: str, tokens: np.ndarray) -> None:
    header = np.zeros(SHARD_HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())
