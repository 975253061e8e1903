"""AZR self-play, tiny preset (configs/azr.py:tiny), three seeds: the run-to-run spread of the CPU recipe.

    python -m gasp_jax.sweep launch configs/sweeps/azr_tiny_seeds.py --parallel=1
    tensorboard --logdir runs/sweeps/azr_tiny_seeds
"""

base = "configs/azr.py:tiny"
runs = [{"seed": 0}, {"seed": 1}, {"seed": 2}]
