"""Torch-free safetensors reading (memory-mapped, bfloat16 included) and atomic writing."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from neuroal_jax.errors import UsageError
from neuroal_jax.outputs.files import atomic_file

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}


class SafetensorsError(UsageError):
    """A safetensors file that cannot be read (a user's file: one line on the command line)."""


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """(header without __metadata__, byte offset of the data section)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise SafetensorsError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise SafetensorsError(f"{path}: corrupt safetensors file (header length {n} exceeds file size {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + n + end > size:
        raise SafetensorsError(f"{path}: truncated safetensors file (data needs {8 + n + end} bytes, file has {size})")
    return header, 8 + n


def load_file(path: str | os.PathLike, names=None) -> dict[str, np.ndarray]:
    """Tensors of one .safetensors file as read-only memory-mapped numpy arrays."""
    header, start = read_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if names is not None and name not in names:
            continue
        if info["dtype"] not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        a, b = info["data_offsets"]
        out[name] = data[start + a:start + b].view(DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def save_file(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a safetensors file atomically (temporary file, then rename)."""
    header, offset = {}, 0
    arrays = {k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in tensors.items()}
    for name, arr in arrays.items():
        header[name] = {"dtype": CODES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    header["__metadata__"] = metadata or {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with atomic_file(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays.values():
            f.write(arr.reshape(-1).view(np.uint8).data)  # no extra copy of the tensor
