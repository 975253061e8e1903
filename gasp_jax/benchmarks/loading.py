"""Checkpoint loading at scale: peak host memory and wall time of `models.load_hf` onto a mesh.

    # a random-weight checkpoint with a preset's shapes (never downloaded), then a load in a fresh process
    python -m gasp_jax.benchmarks.loading make --preset=qwen2.5-coder-1.5b --out=/tmp/ckpt_1p5b
    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
        python -m gasp_jax.benchmarks.loading load --path=/tmp/ckpt_1p5b --mesh='{"fsdp": 8}'
    # two hosts' worth: 2 processes x 4 faked devices, each reading only its devices' slices
    python -m gasp_jax.multihost --processes=2 --devices_per_process=4 -- \
        python -m gasp_jax.benchmarks.loading load --path=/tmp/ckpt_1p5b --mesh='{"fsdp": 8}'

`load` prints one JSON line: seconds, peak anonymous host memory above the start (the arrays the loader
materialises; on CPU the "devices" live in host memory too, so the placed params are reported
separately and subtracted), peak file-backed resident memory (memory-mapped checkpoint pages) and
the bytes of params this process holds.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import jax
import ml_dtypes
import numpy as np

from gasp_jax import models, multihost, sharding
from gasp_jax.models import hf
from gasp_jax.models import safetensors_io as st


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Samples RssAnon / RssFile every few ms in a thread; `.peak_anon`, `.peak_file` in bytes."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s, self.peak_anon, self.peak_file = interval_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_anon = max(self.peak_anon, _status_kib("RssAnon") * 1024)
        self.peak_file = max(self.peak_file, _status_kib("RssFile") * 1024)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def make_checkpoint(preset: str, out: str, *, dtype: str = "bfloat16", max_shard_bytes: int = 2 << 30, seed: int = 0) -> int:
    """Writes a random-weight HF checkpoint with `preset`'s shapes, one tensor at a time; returns bytes."""
    config = models.get_preset(preset, dtype=dtype, param_dtype=dtype)
    np_dtype = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float32": np.dtype(np.float32)}[dtype]
    rng = np.random.default_rng(seed)
    names = []
    for m in hf._mappings(config):
        layers = range(config.num_layers) if m.per_layer else [None]
        names += [(m.hf_name.format(i=i) if i is not None else m.hf_name, m.hf_shape(config)) for i in layers]
    os.makedirs(out, exist_ok=True)
    shards, current, size = [], {}, 0
    for name, shape in names:
        nbytes = int(np.prod(shape)) * np_dtype.itemsize
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = shape
        size += nbytes
    shards.append(current)
    weight_map, total = {}, 0
    for j, shard in enumerate(shards):
        fname = f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: (rng.standard_normal(s, dtype=np.float32) * 0.02).astype(np_dtype) for n, s in shard.items()}
        st.save_file(tensors, os.path.join(out, fname), {"format": "pt"})
        weight_map.update({n: fname for n in shard})
        total += sum(t.nbytes for t in tensors.values())
        del tensors
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config.to_hf_dict(), f, indent=2)
    return total


def measure_load(path: str, mesh_shape: dict, dtype: str = "bfloat16") -> dict:
    mesh = sharding.make_mesh(mesh_shape)
    read = [0]
    original = st.SafetensorsFile.read

    def counting(self, name, index=()):
        out = original(self, name, index)
        read[0] += out.nbytes
        return out

    st.SafetensorsFile.read = counting
    base_anon = _status_kib("RssAnon") * 1024
    t0 = time.perf_counter()
    with PeakMemory() as peak:
        _, params = models.load_hf(path, dtype=dtype, mesh=mesh)
        jax.block_until_ready(params)
    seconds = time.perf_counter() - t0
    st.SafetensorsFile.read = original
    placed = sum(s.data.nbytes for x in jax.tree.leaves(params) for s in x.addressable_shards)
    return {
        "path": path,
        "mesh": dict(mesh.shape),
        "processes": jax.process_count(),
        "process": jax.process_index(),
        "bytes_read_gib": round(read[0] / 2**30, 3),
        "load_s": round(seconds, 2),
        "params_placed_gib": round(placed / 2**30, 3),
        "peak_anon_above_start_gib": round((peak.peak_anon - base_anon) / 2**30, 3),
        "peak_host_overhead_gib": round((peak.peak_anon - base_anon - placed) / 2**30, 3),
        "peak_file_backed_gib": round(peak.peak_file / 2**30, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    make = sub.add_parser("make")
    make.add_argument("--preset", default="qwen2.5-coder-1.5b")
    make.add_argument("--out", required=True)
    make.add_argument("--dtype", default="bfloat16")
    load = sub.add_parser("load")
    load.add_argument("--path", required=True)
    load.add_argument("--mesh", default='{"fsdp": -1}')
    load.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    if args.cmd == "make":
        print(json.dumps({"out": args.out, "bytes": make_checkpoint(args.preset, args.out, dtype=args.dtype)}))
    else:
        multihost.maybe_initialize()  # under `python -m gasp_jax.multihost`: one line per process
        print(json.dumps(measure_load(args.path, json.loads(args.mesh), args.dtype)))


if __name__ == "__main__":
    main()
