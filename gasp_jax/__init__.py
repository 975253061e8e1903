"""gasp_jax: Guided Asymmetric Self-Play (GASP) for coding LLMs, in JAX.

Subpackages: `models` (Flax decoder + HF weights), `sharding` (mesh + logical rules), `sampling`
(jitted KV-cache sampler), `sandbox` (isolated code execution), `rl` (advantages, losses, the jitted
update), `data` / `evaluation` (LiveCodeBench). Entry point: `python -m gasp_jax.main`. Importing the
package itself imports nothing heavy.
"""

__version__ = "0.1.0"
