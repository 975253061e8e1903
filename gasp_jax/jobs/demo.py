"""Demo job: build a model on the mesh, run a forward pass, checkpoint and restore it, log to TensorBoard.

It exercises the foundation end to end (config -> mesh -> sharded params -> jitted forward -> metrics ->
orbax checkpoint) in seconds on a CPU.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gasp_jax import runtime
from gasp_jax.checkpoint import Checkpointer
from gasp_jax.metrics import MetricWriter
from gasp_jax.tokenizer import build_byte_tokenizer

log = logging.getLogger(__name__)

PROMPTS = (
    "def f(x):\n    return x * 2\n",
    "Write a function that reverses a list.",
    "print(sum(range(10)))",
)


def run(config, workdir: str) -> dict:
    mesh = runtime.mesh_from_config(config)
    rules = runtime.rules_from_config(config)
    rng = jax.random.key(config.seed)
    model, params = runtime.model_from_config(config.model, mesh, rules, rng)
    tokenizer = build_byte_tokenizer()
    writer = MetricWriter(os.path.join(workdir, "tb"))

    batch = tokenizer(list(PROMPTS), padding="max_length", max_length=64, truncation=True, return_tensors="np")
    tokens = jnp.asarray(batch["input_ids"], jnp.int32)
    mask = jnp.asarray(batch["attention_mask"], bool)
    forward = jax.jit(lambda p, t, m: model.apply({"params": p}, t, kv_mask=m))

    t0 = time.perf_counter()
    logits = jax.block_until_ready(forward(params, tokens, mask))
    compile_and_run_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits = jax.block_until_ready(forward(params, tokens, mask))
    run_s = time.perf_counter() - t0

    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    target_logp = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    valid = mask[:, 1:] & mask[:, :-1]
    nll = float(-(target_logp * valid).sum() / valid.sum())
    writer.write(0, {"demo/prompt_nll": nll, "demo/forward_s": run_s, "demo/compile_s": compile_and_run_s})

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    ckpt.save(0, {"params": params}, {"note": "demo"}, force=True)
    ckpt.wait()
    restored, _, step = ckpt.restore({"params": params})
    same = all(
        bool(np.array_equal(np.asarray(a), np.asarray(b)))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(restored["params"]))
    )
    if not same:
        raise RuntimeError("restored params differ from the saved ones")
    ckpt.close()
    writer.close()
    log.info("prompt NLL %.3f nats/token (random init: about ln(vocab)=%.2f)", nll, np.log(model.config.vocab_size))
    return {"prompt_nll": nll, "forward_s": run_s, "checkpoint_step": step, "workdir": workdir}
