"""The DCIC study on CelebA-HQ: shipped codec ladder, a face prior, a (K_D, K_P) grid per rate.

  python -m dcic_jax.main --config=configs/celeba.py --workdir=runs/celeba \
      --config.eval.images_dir=/data \
      --config.dcic.prior=ddpm-ema-celebahq256:/weights/ddpm-ema-celebahq-256
  python -m dcic_jax.main --config=configs/celeba.py:runlocal --workdir=/tmp/celeba  # laptop

Needs the CelebA-HQ images under <images_dir>/celeba_hq/ (docs/datasets.md says which files) and a
face prior: the diffusers `google/ddpm-ema-celebahq-256` folder (config.json +
diffusion_pytorch_model.safetensors), imported on load by dcic_jax/diffusion/convert.py with the
`ddpm-ema-celebahq256` preset. The prior was trained at 256×256 and the paper evaluates there, so
the 1024×1024 CelebA-HQ images are resized to 256×256 before coding (Pillow bicubic; the crop is
then the whole image). The codecs are the shipped ones unless eval.checkpoints names others (e.g.
CompressAI imports: python -m dcic_jax.codecs.compressai_import).
"""
from configs import base


def get_config(arg: str = ""):
  config = base.get_config()
  config.train_codec.steps = 0                 # evaluate the exports in eval.checkpoints
  config.eval.dataset = "celeba_hq"
  config.eval.images_dir = "data/manual"       # root holding celeba_hq/
  config.eval.split = "validation"
  config.eval.max_images = 1000
  config.eval.resize_short = 256               # the prior's training resolution (1024² → 256²)
  config.eval.crop = 256
  config.eval.checkpoints = ",".join(f"checkpoints/mbt2018-mean-q{q}" for q in (1, 2, 3, 4))
  config.dcic.prior = "ddpm-ema-celebahq256:weights/ddpm-ema-celebahq-256"  # diffusers folder
  config.dcic.num_steps = 100
  config.dcic.kd = "0,0.25,0.5,0.75,1"
  config.dcic.kp = "0,0.25,0.5,0.75,1"
  config.metrics.fid_patch = 64
  if "runlocal" in arg:
    base.runlocal(config, max_images=4)
  return config
