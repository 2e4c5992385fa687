"""Defaults shared by every experiment; each experiment file imports this and overrides a few fields.

Run any config with: python -m dcic_jax.main --config=configs/<name>.py --workdir=<dir>
"""
import ml_collections

from dcic_jax.diffusion.prior_config import default_prior_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0                         # root seed of every PRNG key in training (no hidden default seeds)
  config.max_pixels = 0                   # largest image decoded (image files, .dcic files); 0 = $DCIC_MAX_PIXELS or
                                          # dcic_jax/limits.py's default 2**26 (docs/reliability.md)

  # ---- base codec (codecs/registry.py) ----
  config.codec = ml_collections.ConfigDict()
  config.codec.id = "bmshj2018"           # registry id: "bmshj2018", "mbt2018-mean", "swint-charm" or "tcm"
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

  # ---- evaluation: the rate points and the images of the study (pipeline.py) ----
  config.eval = ml_collections.ConfigDict()
  config.eval.dataset = "folder"          # data/datasets.py: "folder", "celeba_hq", "clic2020" or "imagenet"
  config.eval.images_dir = "data/images"  # folder of images ("folder") or the root of the dataset's manual files
  config.eval.split = ""                  # dataset split ("" = the dataset's evaluation default; docs/datasets.md)
  config.eval.max_images = 0              # first k images of the (sorted) set; 0 = all
  config.eval.resize_short = 0            # resize the short side to this (Pillow bicubic) before the crop; 0 = no resize
  config.eval.crop = 0                    # centre crop side in pixels before coding; 0 = full images
  config.eval.checkpoints = ""           # comma-separated codec export dirs, one per rate point (plus the one trained here)
  config.eval.seed = 0                    # header seeds of the .dcic files: image k gets a distinct seed derived from it

  # ---- DCIC decoding of the (K_D, K_P) grid (dcic/, docs/design.md §2) ----
  config.dcic = ml_collections.ConfigDict()
  config.dcic.enabled = True              # False: base codec only (no prior needed)
  config.dcic.prior = "shipped"           # "shipped" (checkpoints/prior), "train" (the prior block below), a prior
                                          # workdir / export / [PRESET:]diffusers or guided-diffusion file (presets: README),
                                          # or analytic:STD
  config.dcic.prior_flags = ""            # flags the prior's weights do not record (JSON object or file), over its preset
                                          # and sidecar <weights>.json (dcic_jax/diffusion/presets.py)
  config.dcic.rates = ""                  # comma-separated rate names (export folder names) that get the grid; "" = all
  config.dcic.kd = "0,0.5,1"              # K_D values of the grid: the fraction of the way to the distortion set
  config.dcic.kp = "0,0.5,1"              # K_P values: the fraction of the way to the idempotence set; the grid is their product
  config.dcic.num_steps = 50              # respaced reverse steps N
  config.dcic.start_step = 0              # 0: start from noise; k: start at step k from the noised x_b (late start)
  config.dcic.spacing_power = 1.0         # p: steps at (T-1)*(i/(N-1))^p; 1 evenly spaced, 2 quadratic (denser at low noise)
  config.dcic.eta = 1.0                   # DDIM eta of the sampler step (1: DDPM variance, 0: deterministic)
  config.dcic.mode = "project"            # "project" (K = fraction of the way to each constraint, docs/dcic.md),
                                          # "schedule" (penalty, inner optax steps) or "dps" (Idempotence-style step)
  # project mode:
  config.dcic.ball = 0.02                 # kappa: distortion set |u - x_b|^2 <= kappa * D_q (D_q: the error the cells explain)
  config.dcic.margin = 0.05               # the final idempotence projection aims this far inside each quantisation cell
  config.dcic.cg_iters = 4                # conjugate-gradient iterations of each idempotence step
  config.dcic.x0_var = "gaussian"         # variance of x0 given x_t in the idempotence step: "gaussian" (N(0, data_std^2) data) or "eps" (the prior's own estimate per image, from its eps and x0)
  config.dcic.data_std = 0.5              # std of the data in [-1, 1] units, for x0_var = "gaussian"
  config.dcic.idem_draw = False           # idempotence step draws the latents from their truncated normals (posterior sampling) instead of taking their mean
  # schedule and dps modes (the penalty form, calibrated weights w_D, w_P from codec.json):
  config.dcic.grad = "xt"                 # "xt": gradient through eps_theta; "x0": through the codec only (cheaper)
  config.dcic.inner_steps = 1             # G: inner optimiser steps per reverse step
  config.dcic.optimizer = "sgd"           # inner optimiser: "sgd" or "adam"
  config.dcic.step_size = 0.5             # eta_0 (schedule mode; scaled by sqrt(alpha_bar_t)) or zeta (dps)
  config.dcic.step_cap = False            # schedule mode: cap each inner step at the minimum of the
                                          # constraint term's quadratic model (no overshoot; one more HVP)
  config.dcic.prox = 1.0                  # lambda of |x - x0|^2 that keeps G > 1 inner steps near the sampler
  config.dcic.variant = "reconstruction"  # l_P variant: "reconstruction" or "latent"
  config.dcic.batch = 8                   # images per compiled call (all grid points together)
  config.dcic.chunk = 1                   # (grid point, image) pairs vmapped together per device (memory vs speed)

  # ---- diffusion prior trained by the job when dcic.prior == "train" (diffusion/train.py) ----
  config.prior = default_prior_config()   # every field is commented in dcic_jax/diffusion/prior_config.py
  config.prior.train.data_dir = "data/photos"  # folder of training photos (random crops)

  # ---- report (report/) ----
  config.report = ml_collections.ConfigDict()
  config.report.crop = 96                 # side of the centre crops in the (K_D, K_P) image grid
  config.report.baselines = ""            # comma-separated RD(P) curves in CompressAI's results JSON layout, drawn and
                                          # BD-compared beside DCIC's (report/baselines.py)

  # ---- perceptual metrics (metrics/perceptual.py; their weights cannot be downloaded here) ----
  config.metrics = ml_collections.ConfigDict()
  config.metrics.inception_path = ""      # FID/KID Inception: pytorch-fid's pt_inception-2015-12-05-6726825d.pth or its .npz ("" = not available)
  config.metrics.fid_patch = 64           # FID/KID over patches of this side (Xu et al. 2024 protocol); 0 = whole images
  config.metrics.lpips_path = ""          # LPIPS: .npz from `python -m dcic_jax.metrics.perceptual convert-lpips` (lpips v0.1 heads + torchvision trunk; "" = not available)
  return config


def runlocal(config: ml_collections.ConfigDict, max_images: int = 4) -> ml_collections.ConfigDict:
  """The `:runlocal` override of the dataset configs: minutes on a laptop CPU.

  A few 128×128 centre crops, two shipped rates, a 2×2 (K_D, K_P) grid, 10 steps and the shipped
  prior; the same stages and report as the full run.
  """
  config.eval.max_images = max_images
  config.eval.crop = 128
  config.eval.resize_short = 0
  config.eval.checkpoints = "checkpoints/mbt2018-mean-q1,checkpoints/mbt2018-mean-q3"
  config.dcic.prior = "shipped"
  config.dcic.num_steps = 10
  config.dcic.kd = "0,1"
  config.dcic.kp = "0,1"
  config.metrics.fid_patch = 64
  return config
