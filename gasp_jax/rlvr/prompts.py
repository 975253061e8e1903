"""The LCB prompt chooser for a live policy under its earlier name; it lives in `gasp_jax.evaluation.periodic`."""

from gasp_jax.evaluation.periodic import PROMPT_STYLES as STYLES
from gasp_jax.evaluation.periodic import policy_prompt_fn as lcb_prompt_fn

__all__ = ["STYLES", "lcb_prompt_fn"]
