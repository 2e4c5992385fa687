"""The DCIC study on CLIC 2020 (professional + mobile test sets), full resolution.

  python -m dcic_jax.main --config=configs/clic.py --workdir=runs/clic \
      --config.eval.images_dir=/data --config.dcic.prior=/weights/256x256_diffusion_uncond.pt
  python -m dcic_jax.main --config=configs/clic.py:runlocal --workdir=/tmp/clic  # laptop

Needs <images_dir>/clic2020/{professional,mobile}/test/ (docs/datasets.md) and a natural-image
prior: guided-diffusion's unconditional ImageNet 256 model (256x256_diffusion_uncond.pt), which
is fully convolutional except attention, so it runs on whole CLIC images (the default `project`
decoder takes no gradient through the UNet, so a step's memory is one UNet forward; the penalty
form with `xt` gradients needs the UNet's remat, docs/benchmarks.md).
"""
from configs import base


def get_config(arg: str = ""):
  config = base.get_config()
  config.train_codec.steps = 0                 # evaluate the exports in eval.checkpoints
  config.eval.dataset = "clic2020"
  config.eval.images_dir = "data/manual"       # root holding clic2020/
  config.eval.split = "test"
  config.eval.checkpoints = ",".join(f"checkpoints/mbt2018-mean-q{q}" for q in (1, 2, 3, 4))
  config.dcic.prior = "weights/256x256_diffusion_uncond.pt"  # guided-diffusion ADM
  config.dcic.num_steps = 100
  config.dcic.batch = 1                          # CLIC images differ in size
  config.metrics.fid_patch = 256                 # FID over 256×256 patches (HiFiC protocol)
  if "runlocal" in arg:
    base.runlocal(config, max_images=2)
  return config
