"""Old name of ``gasp_jax.sandbox.wire`` (the host <-> worker wire format), kept importable for
users; it is the same module object, so every name and exception class is shared."""

import sys

from gasp_jax.sandbox import wire

sys.modules[__name__] = wire
