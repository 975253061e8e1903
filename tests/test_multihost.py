"""gasp_jax.multihost: identity on one process; real collectives across 2 `jax.distributed` processes on CPU."""

import json
import os
import sys

import numpy as np
import pytest

from gasp_jax import multihost

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKER = r"""
import json, sys
import numpy as np
from gasp_jax import multihost
assert multihost.maybe_initialize("auto")
import jax
i, n = multihost.process_index(), multihost.process_count()
seq = list(range(7))
mine = multihost.shard_for_process(seq)
gathered = multihost.all_gather_objects([{"p": i, "x": v, "a": np.arange(v)} for v in mine])
bcast = multihost.broadcast_object({"from": i, "arr": np.full((i + 2,), i)})
mismatch = None
try:
    multihost.assert_same_across_processes(i, "process id")
except RuntimeError as e:
    mismatch = str(e)
multihost.assert_same_across_processes("same", "constant")
from gasp_jax import sharding
hybrid = sharding.make_mesh({"fsdp": -1}, dcn_shape={"data": 2})
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.experimental import multihost_utils
rows = sharding.global_batch({"x": np.arange(4 * i, 4 * i + 4).reshape(2, 2)}, NamedSharding(hybrid, P(("data", "fsdp"))))["x"]
global_rows = np.asarray(multihost_utils.process_allgather(rows, tiled=True)).tolist()
multihost.sync("end")
print("RESULT " + json.dumps({
    "hybrid_shape": dict(hybrid.shape), "global_shape": list(rows.shape), "global_rows": global_rows,
    "hybrid_processes": [[d.process_index for d in row.ravel()] for row in hybrid.devices],
    "index": i, "count": n, "is_main": multihost.is_main(), "mine": mine,
    "local_devices": jax.local_device_count(), "devices": jax.device_count(),
    "gathered": [[g["p"], g["x"], g["a"].tolist()] for g in gathered],
    "bcast": [bcast["from"], bcast["arr"].tolist()], "mismatch": mismatch,
}))
"""


def _results(outputs):
    res = []
    for rc, out in outputs:
        assert rc == 0, out[-3000:]
        line = [l for l in out.splitlines() if l.startswith("RESULT ")]
        assert line, out[-3000:]
        res.append(json.loads(line[-1][len("RESULT "):]))
    return res


def test_single_process_is_identity():
    assert multihost.process_count() == 1 and multihost.process_index() == 0 and multihost.is_main()
    seq = ["a", "b", "c"]
    assert multihost.shard_for_process(seq) == seq
    objs = [{"x": np.arange(3)}, "s"]
    assert multihost.all_gather_objects(objs) is not objs
    assert multihost.all_gather_objects(objs) == objs
    assert multihost.broadcast_object(objs) is objs
    multihost.assert_same_across_processes(1, "x")
    multihost.sync("noop")


@pytest.mark.parametrize("n,count", [(7, 2), (2, 3), (0, 2), (9, 4)])
def test_process_bounds_partition_in_order(n, count):
    bounds = [multihost.process_bounds(n, i, count) for i in range(count)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_maybe_initialize_is_off_without_a_multiprocess_environment(monkeypatch):
    for var in ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_NUM_SLICES"):
        monkeypatch.delenv(var, raising=False)
    assert multihost.maybe_initialize("auto") is False
    assert multihost.maybe_initialize(False) is False
    with pytest.raises(ValueError, match="runtime.distributed"):
        multihost.maybe_initialize("sometimes")


def test_two_processes_gather_and_broadcast():
    outputs = multihost.run_local_processes(
        [sys.executable, "-c", _WORKER], 2, devices_per_process=2, timeout=120, cwd=REPO
    )
    r0, r1 = _results(outputs)
    assert [r0["index"], r1["index"]] == [0, 1] and r0["count"] == r1["count"] == 2
    assert r0["is_main"] and not r1["is_main"]
    assert r0["local_devices"] == 2 and r0["devices"] == 4
    assert r0["mine"] == [0, 1, 2, 3] and r1["mine"] == [4, 5, 6]
    want = [[0, v, list(range(v))] for v in range(4)] + [[1, v, list(range(v))] for v in range(4, 7)]
    assert r0["gathered"] == r1["gathered"] == want
    assert r0["bcast"] == r1["bcast"] == [0, [0, 0]]
    assert r0["mismatch"] and "process id differs" in r0["mismatch"] and r1["mismatch"] == r0["mismatch"]
    # Multi-slice mesh (processes stand in for slices on CPU): data spans the slices, fsdp stays inside one.
    assert r0["hybrid_shape"] == {"data": 2, "fsdp": 2, "tensor": 1}
    assert r0["hybrid_processes"] == [[0, 0], [1, 1]]
    # A global batch from each process's own rows, in process order.
    assert r0["global_shape"] == [4, 2] and r0["global_rows"] == r1["global_rows"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
