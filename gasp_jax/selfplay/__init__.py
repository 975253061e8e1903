"""Self-play trainer (AZR, and the backbone GASP / RLVR plug into): rollout sources -> episodes ->
per-group advantages -> one update per train state -> logs -> checkpoints.

    python -m gasp_jax.main --config=configs/azr.py:tiny --workdir=runs/azr_tiny

Sources implement `RolloutSource` (types.py) and reuse the AZR phases in `phases.py`; `sources.py` maps a
config's source and hook names to their classes (it imports every method's source, so it is not imported
here). See docs/selfplay.md for the loop, the config and the metrics.
"""

from gasp_jax.selfplay import phases
from gasp_jax.selfplay.buffers import KINDS, TaskBuffer, TaskBuffers, identity_records, task_key
from gasp_jax.selfplay.policy import (
    SamplerPolicy,
    ScriptedPolicy,
    reshard_for_rollout,
    rollout_model,
    rollout_rules,
    tensor_only_rules,
)
from gasp_jax.selfplay.types import (
    ROLE_MODEL,
    ROLES,
    Completion,
    Episode,
    Pending,
    Policy,
    RolloutContext,
    RolloutSource,
    SourceResult,
    Timers,
    state_name,
)

__all__ = [
    "phases", "KINDS", "TaskBuffer", "TaskBuffers", "identity_records", "task_key", "SamplerPolicy",
    "ScriptedPolicy", "reshard_for_rollout", "rollout_model", "rollout_rules", "tensor_only_rules",
    "ROLE_MODEL", "ROLES", "Completion", "Episode", "Pending", "Policy",
    "RolloutContext", "RolloutSource", "SourceResult", "Timers", "state_name",
]
