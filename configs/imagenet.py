"""The DCIC study on ImageNet-1K validation images (centre crops of 256×256).

  python -m dcic_jax.main --config=configs/imagenet.py --workdir=runs/imagenet \
      --config.eval.images_dir=/data \
      --config.dcic.prior=adm-imagenet256:/weights/256x256_diffusion_uncond.pt
  python -m dcic_jax.main --config=configs/imagenet.py:runlocal --workdir=/tmp/imagenet  # laptop

Needs <images_dir>/imagenet/ILSVRC2012_img_val.tar (or its extracted val/ JPEGs; docs/datasets.md)
and guided-diffusion's unconditional ImageNet 256 prior (256x256_diffusion_uncond.pt, preset
`adm-imagenet256`). Images are brought to the prior's 256×256 as ADM's preprocessing does: short
side to 256 (Pillow bicubic), then the centre crop.
"""
from configs import base


def get_config(arg: str = ""):
  config = base.get_config()
  config.train_codec.steps = 0                 # evaluate the exports in eval.checkpoints
  config.eval.dataset = "imagenet"
  config.eval.images_dir = "data/manual"       # root holding imagenet/
  config.eval.split = "validation"
  config.eval.max_images = 1000
  config.eval.resize_short = 256              # ADM's preprocessing: short side to 256, then the centre crop
  config.eval.crop = 256
  config.eval.checkpoints = ",".join(f"checkpoints/mbt2018-mean-q{q}" for q in (1, 2, 3, 4))
  config.dcic.prior = "adm-imagenet256:weights/256x256_diffusion_uncond.pt"  # guided-diffusion ADM
  config.dcic.num_steps = 100
  config.metrics.fid_patch = 64
  if "runlocal" in arg:
    base.runlocal(config, max_images=4)
  return config
