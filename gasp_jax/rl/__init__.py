"""RL core: TRR++ / GRPO advantages, PPO-clip losses and one jitted, sharded update step.

    from gasp_jax import models, rl

    rl_config = rl.default_config()                       # the `rl` config section (AZR/GASP defaults)
    model = models.build_model(models.get_preset("tiny"), mesh=mesh)
    state = rl.create_train_state(model, rl_config, rng=jax.random.key(0))   # or params=...
    update = rl.make_update_step(model, rl_config, mesh)

    adv = rl.advantages.trr_plus_plus(rewards, groups=[(task, role), ...], lengths=completion_lengths)
    batch = rl.make_batch(prompt_ids, completion_ids, sampler_logprobs, adv.advantages,
                          batch_multiple=rl_config.micro_batches * data_parallel)
    # or both at once: batch, stats = rl.batch_from_rollouts(..., rewards, groups, rl_config.advantage)
    state, metrics = update(state, batch)                 # state is donated
    # PPO's schedule (rl.ppo_mini_batch_size, rl.ppo_epochs): shuffled mini-batch steps of the same update
    ppo = rl.make_ppo_update(model, rl_config, mesh)
    state, metrics, per_step = ppo(state, batch, np.random.default_rng(seed))

See docs/rl.md for the formulas and what every metric means.
"""

from gasp_jax.rl import advantages, losses
from gasp_jax.rl.batch import DEFAULT_LENGTH_BUCKETS, Batch, batch_from_rollouts, make_batch, unpad_samples, validate_batch
from gasp_jax.rl.config import default_config, validate_config
from gasp_jax.rl.logprobs import token_logprobs
from gasp_jax.rl.minibatches import PPOUpdate, make_ppo_update, minibatch_indices, take_rows
from gasp_jax.rl.losses import policy_loss
from gasp_jax.rl.train_state import (
    TrainState,
    create_role_states,
    create_train_state,
    make_optimizer,
    make_schedule,
    train_state_shardings,
)
from gasp_jax.rl.update import UpdateStep, accumulate_gradients, make_logprob_step, make_update_step, policy_loss_fn

__all__ = [
    "advantages", "losses", "Batch", "DEFAULT_LENGTH_BUCKETS", "batch_from_rollouts", "make_batch", "unpad_samples", "validate_batch",
    "default_config", "validate_config", "token_logprobs", "policy_loss", "TrainState",
    "create_role_states", "create_train_state", "make_optimizer", "make_schedule",
    "train_state_shardings", "UpdateStep", "accumulate_gradients", "make_logprob_step", "make_update_step",
    "policy_loss_fn", "PPOUpdate", "make_ppo_update", "minibatch_indices", "take_rows",
]
