"""Embedded default: compress the shipped images with the shipped codecs and print the RD table.

  python -m dcic_jax.main --config=configs/demo.py --workdir=/tmp/dcic_demo

Runs on a fresh 2-core machine from the repository alone (no training, no downloads).
"""
from configs import base


def get_config():
  config = base.get_config()
  config.train_codec.steps = 0
  # One shipped checkpoint per rate point; see checkpoints/README.md for how they were made.
  config.eval.checkpoints = ",".join(
      f"checkpoints/{cid}-q{q}" for cid in ("bmshj2018", "mbt2018-mean") for q in (1, 2, 3, 4))
  return config
