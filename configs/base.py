"""Defaults shared by every experiment; each experiment file imports this and overrides a few fields.

Run any config with: python -m dcic_jax.main --config=configs/<name>.py --workdir=<dir>
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0                         # root seed of every PRNG key in training (no hidden default seeds)

  # ---- base codec (codecs/registry.py) ----
  config.codec = ml_collections.ConfigDict()
  config.codec.id = "bmshj2018"           # registry id: "bmshj2018" or "mbt2018-mean"
  config.codec.N = 48                     # transform channels (CompressAI zoo: 128 for q1-5, 192 for q6-8)
  config.codec.M = 64                     # latent channels of y (zoo: 192 / 320)
  config.codec.quantizer = "noise"        # training proxy for rounding y: "noise" (Ballé) or "ste"
  config.codec.up_kernel = 3              # kernel of the sub-pixel (conv + depth-to-space) upsampling

  # ---- codec training (train.py) ----
  config.train_codec = ml_collections.ConfigDict()
  config.train_codec.steps = 2000         # optimiser steps; 0 skips training (evaluate eval.checkpoints instead)
  config.train_codec.lmbda = 0.0067       # rate-distortion weight: loss = lmbda * 255^2 * MSE + bpp
  config.train_codec.batch_size = 8       # global batch, split over all devices
  config.train_codec.crop_size = 256      # random square crops; >= 256 so z (stride 64) has spatial extent
  config.train_codec.lr = 5e-4            # peak Adam learning rate
  config.train_codec.warmup_steps = 100   # linear warm-up steps before the cosine decay
  config.train_codec.final_lr_frac = 0.1  # cosine decay ends at lr * final_lr_frac
  config.train_codec.grad_clip = 1.0      # global-norm gradient clipping
  config.train_codec.aux_weight = 1.0     # weight of the quantile (coding-range) auxiliary loss
  config.train_codec.aux_lr = 1e-3        # Adam rate of the quantiles (own optimiser, no clipping)
  config.train_codec.init_from = ""       # warm start: a codec export directory; matching parameters are copied
  config.train_codec.log_every = 50       # steps between TensorBoard scalars / progress-bar updates
  config.train_codec.ckpt_every = 250     # steps between orbax checkpoints (resume point)
  config.train_codec.data_dir = "data/photos"  # folder of training photos (random crops)

  config.export_dir = ""                  # after training, export the codec (params + coding tables) here

  # ---- evaluation / demo ----
  config.eval = ml_collections.ConfigDict()
  config.eval.images_dir = "data/images"  # images compressed and measured by the demo
  config.eval.checkpoints = ""           # comma-separated codec export dirs to evaluate (empty: the one just trained)
  config.eval.seed = 0                    # header seed written into every .dcic file (the decoder's common randomness)

  # ---- perceptual metrics (metrics/perceptual.py; their weights cannot be downloaded here) ----
  config.metrics = ml_collections.ConfigDict()
  config.metrics.inception_path = ""      # FID/KID Inception: pytorch-fid's pt_inception-2015-12-05-6726825d.pth or its .npz ("" = not available)
  config.metrics.lpips_path = ""          # LPIPS: .npz from `python -m dcic_jax.metrics.perceptual convert-lpips` (lpips v0.1 heads + torchvision trunk; "" = not available)
  return config
