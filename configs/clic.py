"""The DCIC study on CLIC 2020 (professional + mobile test sets) at the prior's 256×256.

  python -m dcic_jax.main --config=configs/clic.py --workdir=runs/clic \
      --config.eval.images_dir=/data \
      --config.dcic.prior=adm-imagenet256:/weights/256x256_diffusion_uncond.pt
  python -m dcic_jax.main --config=configs/clic.py:runlocal --workdir=/tmp/clic  # laptop

Needs <images_dir>/clic2020/{professional,mobile}/test/ (docs/datasets.md) and a natural-image
prior: guided-diffusion's unconditional ImageNet 256 model (256x256_diffusion_uncond.pt, preset
`adm-imagenet256`). It was trained at 256×256, so images are resized (short side to 256, Pillow
bicubic) and centre-cropped to 256×256, the prior's resolution. The UNet is convolutional except
for attention and also runs on whole CLIC images (set eval.resize_short = eval.crop = 0; a note
says the prior is then out of its training distribution; the `project` decoder needs one UNet
forward of memory per step, the penalty form with `xt` gradients the UNet's remat,
docs/benchmarks.md).
"""
from configs import base


def get_config(arg: str = ""):
  config = base.get_config()
  config.train_codec.steps = 0                 # evaluate the exports in eval.checkpoints
  config.eval.dataset = "clic2020"
  config.eval.images_dir = "data/manual"       # root holding clic2020/
  config.eval.split = "test"
  config.eval.resize_short = 256               # the prior's training resolution
  config.eval.crop = 256
  config.eval.checkpoints = ",".join(f"checkpoints/mbt2018-mean-q{q}" for q in (1, 2, 3, 4))
  config.dcic.prior = "adm-imagenet256:weights/256x256_diffusion_uncond.pt"  # guided-diffusion ADM
  config.dcic.num_steps = 100
  config.metrics.fid_patch = 256                 # FID over 256×256 patches (HiFiC protocol)
  if "runlocal" in arg:
    base.runlocal(config, max_images=2)
  return config
