"""dcic_jax: Dual-Constrained Diffusion Image Compression in JAX/Flax."""
import pathlib
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
ASSETS = ("checkpoints", "configs", "data/images")   # dcic_jax/assets.py finds them here in a wheel


class BuildWithAssets(build_py):
  """Copies the shipped exports, prior, demo images and configs into the wheel's
  dcic_jax/_assets, so that a non-editable install has the CLI's defaults and the demo."""

  def run(self):
    super().run()
    if self.editable_mode:   # an editable install reads them from the source folder
      return
    for sub in ASSETS:
      dst = pathlib.Path(self.build_lib) / "dcic_jax" / "_assets" / sub
      shutil.rmtree(dst, ignore_errors=True)
      shutil.copytree(HERE / sub, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

setup(
    name="dcic_jax",
    version="0.1.0",
    description="DCIC: dual-constrained diffusion image compression (JAX/Flax).",
    packages=find_packages(include=["dcic_jax", "dcic_jax.*"]),
    package_data={"dcic_jax.report": ["explorer.js", "explorer.css"]},  # inlined into report.html
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
        "dev": ["pytest", "pytest-xdist", "hypothesis", "chex", "imagecodecs", "matplotlib"],
        # Parity fixtures and PyTorch checkpoint import (CPU build from local disk here).
        "torch": ["torch==2.13.0", "compressai==1.2.8", "safetensors"],
    },
    entry_points={"console_scripts": ["dcic=dcic_jax.cli:main"]},
    cmdclass={"build_py": BuildWithAssets},
)
