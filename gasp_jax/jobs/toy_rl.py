"""Toy RL job: a random-init model learns a verifiable task through the full RL pipeline.

Task: the prompt is `[BOS, d_1 .. d_n, SEP]` with digits drawn from `num_symbols` digit tokens; the
correct completion is the digits reversed (completions have exactly that many tokens). A Python
checker scores each sample: the fraction of positions right. Each step:

    prompts -> sampler (num_samples per prompt) -> checker rewards -> TRR++/GRPO advantages (host)
            -> one jitted, sharded update step -> TensorBoard metrics -> orbax checkpoint

It is the same path the GASP trainer takes with the sandbox as the checker, small enough to watch a
learning curve rise on a laptop CPU in about a minute. Runs resume from the latest checkpoint in
`workdir`, and the per-step randomness is derived from (seed, step), so a resumed run continues exactly.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import numpy as np

from gasp_jax import models, profiling, rl, runtime, sampling
from gasp_jax.checkpoint import Checkpointer
from gasp_jax.metrics import CompileTimer, MetricWriter
from gasp_jax.selfplay.types import Timers

log = logging.getLogger(__name__)

PAD, BOS, SEP, DIGIT0 = 0, 1, 2, 3


class ReverseDigitsTask:
    """Prompts and the Python checker for 'emit the prompt's digits reversed'."""

    def __init__(self, num_digits: int, num_symbols: int):
        self.num_digits = num_digits
        self.num_symbols = num_symbols
        self.vocab_needed = DIGIT0 + num_symbols

    def sample_prompts(self, rng: np.random.Generator, n: int) -> list[list[int]]:
        digits = rng.integers(0, self.num_symbols, size=(n, self.num_digits))
        return [[BOS, *(DIGIT0 + row).tolist(), SEP] for row in digits]

    def all_prompts(self) -> list[list[int]]:
        grid = np.indices((self.num_symbols,) * self.num_digits).reshape(self.num_digits, -1).T
        return [[BOS, *(DIGIT0 + row).tolist(), SEP] for row in grid]

    def reward(self, prompt: list[int], completion: np.ndarray) -> float:
        """Fraction of answer positions equal to the prompt's digits reversed."""
        target = prompt[1:-1][::-1]
        return sum(int(a) == t for a, t in zip(completion, target)) / self.num_digits

    def solved(self, prompt: list[int], completion: np.ndarray) -> bool:
        return self.reward(prompt, completion) == 1.0


def _model(config, mesh, rules, task: ReverseDigitsTask):
    mc = config.model
    vocab = int(mc.get("vocab_size") or 0) or task.vocab_needed
    if vocab < task.vocab_needed:
        raise ValueError(f"model.vocab_size={vocab} < {task.vocab_needed} tokens the task needs")
    cfg = models.get_preset(
        mc.preset, vocab_size=vocab, dtype=mc.dtype, param_dtype=mc.get("param_dtype") or mc.dtype,
        remat_policy=mc.get("remat_policy", "none"), max_position_embeddings=64,
    )
    return models.build_model(cfg, mesh=mesh, rules=rules)


def run(config, workdir: str) -> dict:
    task = ReverseDigitsTask(int(config.task.num_digits), int(config.task.num_symbols))
    mesh = runtime.mesh_from_config(config)
    rules = runtime.rules_from_config(config)
    model = _model(config, mesh, rules, task)
    rl_config = config.rl.copy_and_resolve_references()
    if not rl_config.optimizer.total_steps:
        rl_config.optimizer.total_steps = int(config.steps)
    update = rl.make_update_step(model, rl_config, mesh)
    state = rl.create_train_state(model, rl_config, rng=jax.random.key(config.seed))

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=int(config.checkpoint.keep),
                        save_every=int(config.checkpoint.every))
    start = 0
    restored = ckpt.restore({"state": state})
    if restored is not None:
        state, start = restored[0]["state"], restored[2]
        log.info("resuming at step %d", start)
    writer = MetricWriter(os.path.join(workdir, "tb"))

    steps, n_prompts, n_samples = int(config.steps), int(config.prompts_per_step), int(config.samples_per_prompt)
    batch_multiple = int(rl_config.micro_batches) * update.batch_divisor
    prompt_len = task.num_digits + 2
    sample_args = dict(
        max_new_tokens=task.num_digits, mesh=mesh,
        prompt_buckets=(prompt_len,), max_cache_length=prompt_len + task.num_digits,
    )
    base_key = jax.random.key(config.seed + 1)
    eval_prompts = task.all_prompts()
    summary: dict = {"start_step": start}
    timers, compile_timer = Timers(), CompileTimer()
    observer = profiling.StepObserver(config.get("profile"), logdir=os.path.join(workdir, "tb"), first_step=start,
                                      last_step=steps, name="toy_rl")
    t_iteration = time.perf_counter()  # an iteration runs to the end of its checkpoint
    for step in range(start, steps):
        observer.begin(step + 1)
        host_rng = np.random.default_rng([config.seed, step])
        prompts = task.sample_prompts(host_rng, n_prompts)
        with timers.phase("policy_generate"):
            out = sampling.generate(model, state.params, prompts, temperature=float(config.temperature),
                                    num_samples=n_samples, rng=jax.random.fold_in(base_key, step), **sample_args)

        rows = [p for p in prompts for _ in range(n_samples)]  # prompt-major, as the sampler returns
        completions, sampler_logprobs = rl.unpad_samples(out.tokens, out.logprobs, out.lengths)
        rewards = np.array([task.reward(p, c) for p, c in zip(rows, completions)], np.float32)
        # TRR++ whitens per (task, role) group; the GRPO family per prompt.
        groups = [("reverse", "student") if rl_config.advantage.estimator == "trr++" else i // n_samples
                  for i in range(len(rows))]
        batch, adv_stats = rl.batch_from_rollouts(
            rows, completions, sampler_logprobs, rewards, groups, rl_config.advantage,
            length_buckets=(prompt_len + task.num_digits,), batch_multiple=batch_multiple,
        )

        with timers.phase("update"):
            state, metrics = update(state, batch)
            metrics = jax.device_get(metrics)

        scalars = {f"rl/{k}": v for k, v in metrics.items()}
        scalars.update({
            "reward/mean": rewards.mean(),
            "reward/solved_frac": np.mean([task.solved(p, c) for p, c in zip(rows, completions)]),
            **{f"advantage/{k}": v for k, v in adv_stats.items()},
        })
        last = step + 1 == steps
        if (step + 1) % int(config.eval_every) == 0 or last:
            with timers.phase("eval"):
                greedy = sampling.generate(model, state.params, eval_prompts, temperature=0.0,
                                           rng=jax.random.key(0), **sample_args)
            done, _ = rl.unpad_samples(greedy.tokens, greedy.logprobs, greedy.lengths)
            scalars["eval/greedy_solved_frac"] = np.mean([task.solved(p, c) for p, c in zip(eval_prompts, done)])
            summary["eval_greedy_solved_frac"] = float(scalars["eval/greedy_solved_frac"])
        with timers.phase("checkpoint"):
            ckpt.save(step + 1, {"state": state}, {"step": step + 1}, force=last)
        seconds, compiled = time.perf_counter() - t_iteration, compile_timer.take()
        exclusive, phases = dict(timers.exclusive), timers.reset()
        scalars.update({f"time/{k}_s": v for k, v in phases.items()})
        scalars.update({"time/iteration_s": seconds, "time/compile_s": compiled,
                        **profiling.goodput(exclusive, seconds, compiled), **observer.scalars(step + 1)})
        scalars.update(profiling.update_perf(model.config, [len(r) + len(c) for r, c in zip(rows, completions)],
                                             scalars["time/goodput/update_s"]))
        generate_s = scalars["time/goodput/generate_s"]
        if generate_s > 0:
            scalars["perf/generate_tokens_per_s_per_device"] = float(np.sum(out.lengths)) / generate_s / jax.device_count()
        writer.write(step + 1, scalars, echo=(step + 1) % int(config.log_every) == 0 or last)
        observer.end(step + 1)
        t_iteration = time.perf_counter()
        summary["final_reward_mean"] = float(rewards.mean())

    observer.close()
    ckpt.close()
    writer.close()
    summary.update(steps=steps, workdir=workdir)
    return summary
