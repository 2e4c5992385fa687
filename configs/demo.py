"""Embedded default: the whole study on the shipped images, codecs and prior, on a 2-core CPU.

  python -m dcic_jax.main --config=configs/demo.py --workdir=/tmp/dcic_demo

Runs from the repository alone (no training, no downloads): encodes centre crops of the three
shipped Kodak crops (data/images) with the eight shipped codecs (real .dcic files), decodes a 3×3
(K_D, K_P) grid of the DCIC decoder for three rates of mbt2018-mean with the shipped prior
(checkpoints/prior), measures PSNR, MS-SSIM and patch SWD, and writes report.md / report.html
with the RD curves, the D–P plane and an image grid. The crops and the short late-start schedule
keep it to minutes on a CPU; the dataset configs (celeba.py, clic.py, imagenet.py) run the full
protocol.
"""
from configs import base


def get_config():
  config = base.get_config()
  config.train_codec.steps = 0
  # One shipped checkpoint per rate point; see checkpoints/README.md for how they were made.
  config.eval.checkpoints = ",".join(
      f"checkpoints/{cid}-q{q}" for cid in ("bmshj2018", "mbt2018-mean") for q in (1, 2, 3, 4))
  config.eval.crop = 128
  config.dcic.rates = "mbt2018-mean-q1,mbt2018-mean-q2,mbt2018-mean-q3"
  config.dcic.prior = "shipped"
  config.dcic.num_steps = 20
  config.dcic.start_step = 10            # late start: 10 reverse steps from the noised x_b
  config.report.crop = 96
  return config
