"""The former name of `gasp_jax.selfplay.phases` (the AZR rollout phases), kept so existing imports work:
this name and `phases` are one module object, so patching either patches both."""

import sys

from gasp_jax.selfplay import phases

sys.modules[__name__] = phases
