"""Minimal, strict safetensors reader/writer on NumPy (bf16 via ml_dtypes), memory-mapped.

We read the format ourselves rather than through `safetensors` so that every failure (truncated file,
bad header, out-of-range offsets) raises an error naming the file and tensor, tensors stay memory-mapped
until placed on devices, and bfloat16 works without torch.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterator, Mapping

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file is missing, truncated or malformed."""


class SafetensorsFile:
    """Lazy view of one `.safetensors` file: `keys()`, `shape(name)`, `get(name)` (mmap-backed)."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.isfile(path):
            raise SafetensorsError(f"{path}: file not found")
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise SafetensorsError(f"{path}: truncated (no header length)")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > _MAX_HEADER or 8 + header_len > size:
                raise SafetensorsError(f"{path}: truncated or corrupt header (length {header_len}, file {size} B)")
            try:
                header = json.loads(f.read(header_len))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise SafetensorsError(f"{path}: corrupt header: {err}") from None
        header.pop("__metadata__", None)
        self._data_start = 8 + header_len
        self._entries = header
        for name, entry in header.items():
            dtype = entry.get("dtype")
            if dtype not in _DTYPES:
                raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
            begin, end = entry["data_offsets"]
            expected = int(np.prod(entry["shape"], dtype=np.int64)) * _DTYPES[dtype].itemsize
            if end - begin != expected:
                raise SafetensorsError(f"{path}: tensor {name!r} byte range does not match its shape")
            if self._data_start + end > size:
                raise SafetensorsError(
                    f"{path}: truncated: tensor {name!r} ends at byte {self._data_start + end}, file has {size}"
                )
        self._mmap = np.memmap(path, dtype=np.uint8, mode="r") if size else None

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        if name not in self._entries:
            raise SafetensorsError(f"{self.path}: tensor {name!r} not found")
        entry = self._entries[name]
        begin, end = entry["data_offsets"]
        buf = self._mmap[self._data_start + begin : self._data_start + end]
        return buf.view(_DTYPES[entry["dtype"]]).reshape(entry["shape"])


def save_file(tensors: Mapping[str, np.ndarray], path: str, metadata: Mapping[str, str] | None = None) -> None:
    """Writes `tensors` (name -> array) in safetensors format, 8-byte aligned like the reference writer."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    arrays = {}
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _NAMES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {arr.dtype}")
        arrays[name] = arr
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays.values():
            f.write(arr.tobytes())
    os.replace(tmp, path)


class CheckpointDir:
    """All tensors of a HF checkpoint directory: one `model.safetensors` or a sharded index."""

    def __init__(self, path: str):
        self.path = path
        index_path = os.path.join(path, "model.safetensors.index.json")
        single = os.path.join(path, "model.safetensors")
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, str] = {}
        if os.path.isfile(index_path):
            with open(index_path) as f:
                weight_map = json.load(f).get("weight_map")
            if not isinstance(weight_map, dict):
                raise SafetensorsError(f"{index_path}: no 'weight_map'")
            for name, fname in weight_map.items():
                self._where[name] = os.path.join(path, fname)
        elif os.path.isfile(single):
            for name in self._open(single).keys():
                self._where[name] = single
        else:
            raise SafetensorsError(f"{path}: no model.safetensors or model.safetensors.index.json")

    def _open(self, fpath: str) -> SafetensorsFile:
        if fpath not in self._files:
            self._files[fpath] = SafetensorsFile(fpath)
        return self._files[fpath]

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def names(self) -> Iterator[str]:
        return iter(self._where)

    def get(self, name: str) -> np.ndarray:
        if name not in self._where:
            raise SafetensorsError(f"{self.path}: tensor {name!r} missing from the checkpoint")
        fpath = self._where[name]
        f = self._open(fpath)
        if name not in f.keys():
            raise SafetensorsError(f"{fpath}: tensor {name!r} listed in the index but absent from the file")
        return f.get(name)
