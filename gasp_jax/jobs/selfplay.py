"""Job "selfplay": the self-play trainer (AZR, GASP, RLVR and their mixes are rollout sources).

    python -m gasp_jax.main --config=configs/azr.py:tiny --workdir=runs/azr_tiny

A bad config (unknown preset or key, bad value, a workdir holding another model's checkpoint) stops
with one line naming the problem, before anything compiles.
"""

from __future__ import annotations

from gasp_jax.selfplay import trainer


def run(config, workdir: str) -> dict:
    try:
        return trainer.train(config, workdir)
    except trainer.ConfigError as e:
        raise SystemExit(f"error: {e}") from None
