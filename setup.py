"""gasp_jax: Guided Asymmetric Self-Play for coding LLMs, in JAX."""

from setuptools import find_packages, setup

setup(
    name="gasp_jax",
    version="0.1.0",
    description="JAX/TPU-native Guided Asymmetric Self-Play (GASP) for coding LLMs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gasp_jax", "gasp_jax.*"]),
    # The data jobs and tests read (gasp_jax/data/files/SOURCES.md): installed with the package.
    package_data={
        "gasp_jax.data": ["files/SHA256SUMS", "files/*.md", "files/LICENSES/*", "files/*/*", "files/*/*/*"],
        # Compiled on the user's machine at first use (gasp_jax/kernels/library.py).
        "gasp_jax.kernels": ["*.cc", "*.h"],
    },
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.6.0",
        "flax>=0.10.4",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11.0",
        "transformers>=4.51.0",
        "datasets>=3.0.0",
        "ml-collections>=1.0.0",
        "tensorboardX>=2.6",
        # HF checkpoints are read slice by slice through its reader (bf16 with the numpy framework: >= 0.8).
        "safetensors>=0.8",
        "numpy>=1.26",
        "absl-py>=2.0",
    ],
    extras_require={
        # `tensorboard --logdir runs/` (the event files themselves are written by tensorboardX); the profile
        # plugin (xprof) shows `--config.profile.*` traces under the Profile tab (docs/profiling.md).
        "tensorboard": ["tensorboard>=2.16", "tensorboard-plugin-profile>=2.24"],
        # libtpu through jax's own extra: pip keeps an installed jax and adds the libtpu its version pins.
        # Runs on TPU VMs, and lets `python -m gasp_jax.plan --compile` compile for TPU topologies anywhere.
        "tpu": ["jax[tpu]"],
        "test": [
            "pytest>=8.0",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            # CPU wheel; an unpinned torch pulls several GB of CUDA packages.
            "torch==2.13.0",
        ],
    },
)
