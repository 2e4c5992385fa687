"""The `config.prior` block: architecture, schedule and training recipe of the prior the job trains.

Its own module so that configs/base.py can embed it without importing the trainer.
"""
import dataclasses

import ml_collections

from dcic_jax.diffusion.unet import UNetConfig


def default_prior_config() -> ml_collections.ConfigDict:
  """The `config.prior` block that `train_prior` reads (configs/base.py can embed it)."""
  c = ml_collections.ConfigDict()
  c.unet = dataclasses.asdict(UNetConfig(  # UNetConfig fields (dcic_jax/diffusion/unet.py)
      base_channels=64, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(2,),
      num_heads=4, dropout=0.1, use_scale_shift_norm=True))
  c.schedule = "linear"          # β schedule: "linear" (DDPM) or "cosine" (Improved DDPM)
  c.num_timesteps = 1000         # T of the training chain
  c.train = ml_collections.ConfigDict()
  c.train.seed = 0               # PRNG seed of init, t and ε draws (never a default seed)
  c.train.batch_size = 64        # global batch (sharded over all devices)
  c.train.crop_size = 64         # random-crop size of the folder iterator
  c.train.num_steps = 200_000    # optimiser steps
  c.train.learning_rate = 2e-4   # AdamW peak learning rate (DDPM: 2e-4)
  c.train.warmup_steps = 5_000   # linear warm-up from 0 (DDPM: 5000)
  c.train.grad_clip = 1.0        # global-norm clipping (DDPM: 1.0)
  c.train.weight_decay = 0.0     # AdamW decoupled weight decay
  c.train.adam_b1 = 0.9          # Adam β1
  c.train.adam_b2 = 0.999        # Adam β2
  c.train.ema_decay = 0.9999     # EMA of the weights used for sampling (DDPM: 0.9999)
  c.train.log_every = 100        # TensorBoard / progress-bar scalars every k steps
  c.train.checkpoint_every = 5_000  # orbax checkpoint every k steps (and at the end)
  c.train.max_to_keep = 3        # checkpoints kept
  c.train.progress_bar = True    # tqdm bar on process 0
  return c
