"""Per-token log-probs and entropies of a sequence under the policy, without `[B, T, vocab]` fp32 logits.

The trunk runs once and returns final-norm hidden states `[B, T, E]`; the LM head, log-softmax and
entropy are then applied chunk by chunk over the sequence inside a `lax.scan` whose body is under
`jax.checkpoint`. Only one `[B, C, vocab]` fp32 logits chunk is live at a time, in the forward pass and
(recomputed) in the backward pass. At a 152k vocab, T = 4096 and B = 8 the full fp32 logits would be
20 GB; a 256-token chunk is 1.2 GB.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gasp_jax import sharding as shd


def token_logprobs(
    model,
    params,
    tokens: jax.Array,
    *,
    positions: jax.Array | None = None,
    attention_mask: jax.Array | None = None,
    chunk_size: int = 256,
    temperature: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Log-probs and entropies aligned with `tokens`, under `softmax(logits / temperature)`.

    `temperature` is None (T = 1) or fp32 `[B]`, one per row: the temperature the row was sampled at,
    so that these log-probs are the quantity the sampler reported and a PPO ratio is exact.

    Returns fp32 `(logp, entropy)`, both `[B, T]`:
      logp[b, t]    = log pi_T(tokens[b, t] | tokens[b, :t]),
      entropy[b, t] = entropy of that next-token distribution pi(. | tokens[b, :t]),
    for t >= 1; column 0 (no prediction for the first token) is 0. `attention_mask` marks real tokens
    (key padding); padded positions produce values that the completion mask must exclude.
    """
    b, t = tokens.shape
    hidden = model.apply({"params": params}, tokens, positions, kv_mask=attention_mask, return_hidden=True)
    # hidden[:, i] predicts tokens[:, i + 1]; the last position's target wraps around and is dropped.
    targets = jnp.roll(tokens, -1, axis=1)
    chunk = max(1, min(int(chunk_size), t))
    num_chunks = -(-t // chunk)
    pad = num_chunks * chunk - t
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    # [B, n*C, ...] -> [n, B, C, ...]: scan over chunks, batch stays the sharded leading dim of a chunk.
    hidden = hidden.reshape(b, num_chunks, chunk, -1).swapaxes(0, 1)
    targets = targets.reshape(b, num_chunks, chunk).swapaxes(0, 1)
    inv_t = None if temperature is None else (1.0 / temperature.astype(jnp.float32))[:, None, None]

    @jax.checkpoint  # save only the chunk inputs; recompute the logits chunk in the backward pass
    def chunk_fn(h, y):
        logits = model.apply({"params": params}, h, method="unembed")  # fp32 [B, C, V]
        if inv_t is not None:
            logits = logits * inv_t
        logits = shd.constrain(logits, ("act_batch", "act_length", "act_vocab"), model.mesh, model.rules)
        lse = jax.nn.logsumexp(logits, axis=-1)
        target_logit = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
        probs = jnp.exp(logits - lse[..., None])
        entropy = lse - jnp.sum(probs * logits, axis=-1)
        return target_logit - lse, entropy

    _, (lp, ent) = jax.lax.scan(lambda carry, xs: (carry, chunk_fn(*xs)), None, (hidden, targets))
    lp = lp.swapaxes(0, 1).reshape(b, -1)[:, : t - 1]
    ent = ent.swapaxes(0, 1).reshape(b, -1)[:, : t - 1]
    zero = jnp.zeros((b, 1), jnp.float32)
    return jnp.concatenate([zero, lp], axis=1), jnp.concatenate([zero, ent], axis=1)


def reference_token_logprobs(model, params, tokens, *, positions=None, attention_mask=None, temperature=None):
    """Unchunked reference (materialises `[B, T, vocab]` fp32): for tests and small models only."""
    logits = model.apply({"params": params}, tokens, positions, kv_mask=attention_mask)
    if temperature is not None:
        logits = logits / jnp.asarray(temperature, jnp.float32)[:, None, None]
    logz = jax.nn.log_softmax(logits, axis=-1)
    lp = jnp.take_along_axis(logz[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
    ent = -jnp.sum(jnp.exp(logz) * logz, axis=-1)[:, :-1]
    zero = jnp.zeros((tokens.shape[0], 1), jnp.float32)
    return jnp.concatenate([zero, lp], axis=1), jnp.concatenate([zero, ent], axis=1)
