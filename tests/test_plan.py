"""The rollout copy of the weights (`rollout.dtype`) and the hand memory estimate of `gasp_jax.plan`."""

import jax
import jax.numpy as jnp
import numpy as np

from gasp_jax import models
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
