"""dcic_jax: Dual-Constrained Diffusion Image Compression in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="dcic_jax",
    version="0.1.0",
    description="DCIC: dual-constrained diffusion image compression (JAX/Flax).",
    packages=find_packages(include=["dcic_jax", "dcic_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7",
        "flax>=0.10",
        "optax",
        "orbax-checkpoint",
        "tensorflow-datasets",
        "ml-collections",
        "numpy",
        "constriction>=0.4",
        "pillow",
        "tqdm",
        "tensorboardX",
        "absl-py",
        "scipy",
    ],
    extras_require={
        # Tests, fuzzing, baselines and plots.
        "dev": ["pytest", "hypothesis", "chex", "imagecodecs", "matplotlib"],
        # Parity fixtures and PyTorch checkpoint import (CPU build from local disk here).
        "torch": ["torch==2.13.0", "compressai==1.2.8", "safetensors"],
    },
    entry_points={"console_scripts": ["dcic=dcic_jax.cli:main"]},
)
