"""Sliced checkpoint loading: every layout equals the unsharded load; a process reads only its devices' slices."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from gasp_jax import models, multihost, sharding
from gasp_jax.models import safetensors_io as st
from tests.hf_utils import make_hf_checkpoint

REPO = Path(__file__).resolve().parents[1]

# Unusual rules too: the layer axis and head_dim sharded, so every slice translation is exercised.
ODD_RULES = tuple(dict(sharding.DEFAULT_RULES, layers="fsdp", head_dim="tensor", embed=None).items())


def _flat(params):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.mark.parametrize(
    "family,mesh_shape,rules",
    [
        ("qwen2", {"fsdp": 2, "tensor": 4}, sharding.DEFAULT_RULES),  # kv heads (2) replicated on tensor=4
        ("qwen3", {"fsdp": 4, "tensor": 2}, sharding.DEFAULT_RULES),
        ("qwen2", {"fsdp": 2, "tensor": 2, "data": 2}, ODD_RULES),
    ],
)
def test_sliced_load_equals_unsharded(tmp_path, family, mesh_shape, rules):
    make_hf_checkpoint(str(tmp_path), family, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
    _, ref = models.load_hf(str(tmp_path))
    model, params = models.load_hf(str(tmp_path), mesh=sharding.make_mesh(mesh_shape), rules=rules)
    want, got = _flat(ref), _flat(params)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    expected = models.param_shardings(model)
    jax.tree.map(lambda p, s: p.sharding.is_equivalent_to(s, p.ndim) or pytest.fail(str(s)), params, expected)


def test_bf16_checkpoint_read_through_the_library(tmp_path):
    import torch

    make_hf_checkpoint(str(tmp_path), "qwen2", dtype=torch.bfloat16)
    _, params = models.load_hf(str(tmp_path), dtype="bfloat16", mesh=sharding.make_mesh({"fsdp": 2, "tensor": 4}))
    assert all(x.dtype == jax.numpy.bfloat16 for x in jax.tree.leaves(params))
    f = st.CheckpointDir(str(tmp_path))
    emb = f.read("model.embed_tokens.weight")
    np.testing.assert_array_equal(f.read("model.embed_tokens.weight", (slice(3, 7), slice(0, 5))), emb[3:7, :5])
    np.testing.assert_array_equal(np.asarray(params["embedding"]), emb)


def test_library_errors_name_file_and_tensor(tmp_path):
    make_hf_checkpoint(str(tmp_path), "qwen2")
    path = tmp_path / "model.safetensors"
    f = st.SafetensorsFile(str(path))
    with pytest.raises(st.SafetensorsError, match=r"model\.safetensors: tensor 'nope' not found"):
        f.read("nope")
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(st.SafetensorsError, match=r"model\.safetensors: .*header"):
        st.SafetensorsFile(str(path))


_WORKER = r"""
import json, sys
from gasp_jax import multihost
multihost.maybe_initialize()
import jax, numpy as np
from gasp_jax import models, sharding
from gasp_jax.models import safetensors_io as st
read_bytes = []
original = st.SafetensorsFile.read
def counting(self, name, index=()):
    out = original(self, name, index)
    read_bytes.append(out.nbytes)
    return out
st.SafetensorsFile.read = counting
mesh = sharding.make_mesh({"fsdp": 4})
_, params = models.load_hf(sys.argv[1], mesh=mesh)
shards = {}
for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    shards[jax.tree_util.keystr(path)] = [
        [[[s.start, s.stop] for s in jax.tree.map(lambda s, n: slice(*s.indices(n)[:2]), tuple(sh.index), x.shape)],
         np.asarray(sh.data, np.float64).ravel().tolist()]
        for sh in x.addressable_shards
    ]
print("RESULT " + json.dumps({"read": int(sum(read_bytes)), "shards": shards}))
"""


def test_two_processes_read_only_their_slices(tmp_path):
    make_hf_checkpoint(str(tmp_path), "qwen2", num_hidden_layers=2, hidden_size=64, intermediate_size=128)
    _, ref = models.load_hf(str(tmp_path))
    want = _flat(ref)
    total = sum(v.nbytes for v in want.values())
    outputs = multihost.run_local_processes(
        [sys.executable, "-c", _WORKER, str(tmp_path)], 2, devices_per_process=2, timeout=120, cwd=str(REPO)
    )
    results = []
    for rc, out in outputs:
        assert rc == 0, out[-3000:]
        results.append(json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][-1][7:]))
    for res in results:
        for name, pieces in res["shards"].items():
            for bounds, values in pieces:
                expected = want[name][tuple(slice(a, b) for a, b in bounds)]
                np.testing.assert_array_equal(np.asarray(values), expected.ravel().astype(np.float64), err_msg=name)
        # fsdp=4 splits the embed axis over both processes; only norms (tiny) are read whole by both.
        assert res["read"] < 0.6 * total, (res["read"], total)
