"""Toy RL (configs/tiny_cpu.py) at two learning rates x two seeds: 4 runs, minutes each on a CPU.

    python -m gasp_jax.sweep launch configs/sweeps/tiny_cpu_lr.py --parallel=2
    python -m gasp_jax.sweep status runs/sweeps/tiny_cpu_lr
    tensorboard --logdir runs/sweeps/tiny_cpu_lr
"""

base = "configs/tiny_cpu.py"
grid = {"rl.optimizer.learning_rate": [1e-3, 3e-3], "seed": [1, 2]}
fixed = {"steps": 100}
short = {"rl.optimizer.learning_rate": "lr"}
