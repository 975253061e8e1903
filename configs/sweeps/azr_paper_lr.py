"""AZR at paper scale (Qwen2.5-Coder-7B), learning rate around AZR's 1e-6, one xpk workload per run:

    python -m gasp_jax.sweep launch configs/sweeps/azr_paper_lr.py --launcher=xpk \
        --launcher_args="--cluster=my-v5p --tpu_type=v5p-128 --docker_image=gcr.io/me/gasp_jax:latest" \
        --sweep_dir=/mnt/gcs/runs/sweeps/azr_paper_lr
Set the checkpoint path below (or override `model.hf_path` in `fixed`) before launching.
"""

base = "configs/azr.py:paper"
grid = {"rl.optimizer.learning_rate": [5e-7, 1e-6, 2e-6]}
fixed = {"model.hf_path": "/mnt/gcs/ckpt/Qwen2.5-Coder-7B"}
short = {"rl.optimizer.learning_rate": "lr"}
