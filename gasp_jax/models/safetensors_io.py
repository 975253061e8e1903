"""Safetensors I/O on NumPy (bf16 via ml_dtypes): sliced reads through the `safetensors` library.

Reading goes through `safetensors.safe_open(..., framework="numpy")` (memory-mapped; bf16 supported
since 0.8), and `read(name, index)` copies only the requested slice, so a process materialises just
the pieces its own devices hold. Every failure is re-raised as `SafetensorsError` naming the file and,
where there is one, the tensor. `save_file` writes the format directly (8-byte aligned header).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterator, Mapping

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

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

Index = tuple[slice, ...]


class SafetensorsError(ValueError):
    """A safetensors file is missing, truncated or malformed."""


def _library_error(path: str, err: Exception, name: str | None = None) -> SafetensorsError:
    text = str(err)
    if "incomplete metadata" in text or "not fully covered" in text or "HeaderTooSmall" in text:
        text = f"truncated or corrupt ({text})"
    where = f"{path}: tensor {name!r}" if name else path
    return SafetensorsError(f"{where}: {text}")


class SafetensorsFile:
    """Lazy view of one `.safetensors` file: `keys()`, `shape(name)`, `get(name)`, `read(name, index)`."""

    def __init__(self, path: str):
        self.path = path
        self._error = SafetensorError
        if not os.path.isfile(path):
            raise SafetensorsError(f"{path}: file not found")
        try:
            self._file = safe_open(path, framework="numpy")
        except (SafetensorError, OSError, ValueError) as err:
            raise _library_error(path, err) from None
        self._keys = list(self._file.keys())

    def keys(self) -> list[str]:
        return list(self._keys)

    def _slice(self, name: str):
        if name not in self._keys:
            raise SafetensorsError(f"{self.path}: tensor {name!r} not found")
        try:
            return self._file.get_slice(name)
        except self._error as err:
            raise _library_error(self.path, err, name) from None

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._slice(name).get_shape())

    def read(self, name: str, index: Index = ()) -> np.ndarray:
        """The slice `index` (one `slice` per leading dimension) of tensor `name`, copied to host memory."""
        view = self._slice(name)
        try:
            return np.asarray(view[index] if index else view[:])
        except (self._error, ValueError, TypeError) as err:
            raise _library_error(self.path, err, name) from None

    def get(self, name: str) -> np.ndarray:
        return self.read(name)


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

    def where(self, name: str) -> str:
        """The file holding `name` (for error messages)."""
        return self._where.get(name, self.path)

    def _file_of(self, name: str) -> SafetensorsFile:
        if name not in self._where:
            raise SafetensorsError(f"{self.path}: tensor {name!r} missing from the checkpoint")
        fpath = self._where[name]
        f = self._open(fpath)
        if name not in f.keys():
            raise SafetensorsError(f"{fpath}: tensor {name!r} listed in the index but absent from the file")
        return f

    def shape(self, name: str) -> tuple[int, ...]:
        return self._file_of(name).shape(name)

    def read(self, name: str, index: Index = ()) -> np.ndarray:
        return self._file_of(name).read(name, index)

    def get(self, name: str) -> np.ndarray:
        return self.read(name)
