"""The rollout copy of the weights (`rollout.dtype`) and the hand memory estimate of `gasp_jax.plan`."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gasp_jax import aot, models, plan
from gasp_jax import sharding as shd
from gasp_jax.selfplay.policy import reshard_for_rollout, rollout_in_place, rollout_model, tensor_only_rules


def _trainer_model():
    mesh = shd.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    return models.build_model(models.get_preset("tiny"), mesh=mesh)


def test_bf16_rollout_copy_is_cast_and_laid_out_for_the_sampler():
    trainer = _trainer_model()
    params = models.init_params(trainer, jax.random.key(0))
    sampler = rollout_model(trainer, tensor_only_rules(trainer.rules))
    copy = reshard_for_rollout(params, sampler, "bfloat16")
    targets = jax.tree.leaves(models.param_shardings(sampler))
    for x, y, t in zip(jax.tree.leaves(params), jax.tree.leaves(copy), targets):
        assert y.dtype == jnp.bfloat16 and y.sharding.is_equivalent_to(t, y.ndim)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x.astype(jnp.bfloat16)))
    assert rollout_in_place(copy, sampler, "bfloat16")
    assert reshard_for_rollout(copy, sampler, "bfloat16") is copy  # already the rollout copy: no program runs


def test_same_layout_and_dtype_reads_the_trainers_arrays():
    trainer = _trainer_model()
    params = models.init_params(trainer, jax.random.key(0))
    same = rollout_model(trainer, trainer.rules)
    assert reshard_for_rollout(params, same) is params
    assert not rollout_in_place(params, same, "bfloat16")  # a dtype change needs the copy


def test_compile_without_libtpu_is_one_line_naming_the_extra(monkeypatch):
    real = aot.importlib.util.find_spec
    monkeypatch.setattr(aot.importlib.util, "find_spec", lambda name, *a: None if name == "libtpu" else real(name, *a))
    with pytest.raises(aot.AotError) as info:
        aot.topology_devices(aot.parse_accelerator("v5p-8"))
    assert "pip install -e .[tpu]" in str(info.value) and "\n" not in str(info.value)


def test_a_program_xla_refuses_is_named_with_xlas_message_and_exit_2(monkeypatch, capsys):
    # A program that cannot be lowered (mismatched contraction): the error names the program.
    bad = jax.jit(lambda x: x @ x)
    with pytest.raises(aot.CompileError) as info:
        aot._compile("update", bad, jax.ShapeDtypeStruct((2, 3), jnp.float32))
    assert info.value.program == "update" and "dot_general" in info.value.message
    # The command line turns it into one line and exit status 2.
    monkeypatch.setattr(plan, "compile_report", lambda *a, **k: (_ for _ in ()).throw(info.value))
    holder = lambda v: types.SimpleNamespace(value=v)
    cli = plan.Flags(config=holder(object()), accelerator=holder("v5p-8"), num_devices=holder(0),
                     device_memory_gb=holder(0.0), num_slices=holder(1), compile=holder(True), report=holder(""))
    with pytest.raises(SystemExit) as exit_info:
        plan.main([], cli)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("plan: XLA could not compile update: ") and "dot_general" in err[-1]
