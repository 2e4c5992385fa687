"""Does a codec code whole images as well as the crops it was trained on? (It should.)

  python experiments/crop_vs_full.py [--checkpoint checkpoints/bmshj2018-q3] [--image ../shared/data/kodak/kodim23.png]

Prints the eval forward pass's PSNR and estimated bpp on the whole image and averaged over
its 64×64 tiles. A large gap means the training crops were too small for the model's
receptive field (e.g. z, at stride 64, was 1×1 during training).
"""
import argparse
import pathlib
import sys

import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from dcic_jax.codecs import codec as codec_lib  # noqa: E402
from dcic_jax.data.images import load_rgb  # noqa: E402


def forward_psnr_bpp(codec, x_HW3):
  out = codec.module.apply({"params": codec.params}, jnp.asarray(x_HW3[None], jnp.float32) / 255.0)
  x_hat = np.clip(np.asarray(out["x_hat"][0]), 0, 1) * 255.0
  mse = np.mean((x_hat - x_HW3) ** 2)
  bits = sum(float(-jnp.log2(v).sum()) for v in out["likelihoods"].values())
  return 10 * np.log10(255.0**2 / mse), bits / (x_HW3.shape[0] * x_HW3.shape[1])


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "bmshj2018-q3"))
  ap.add_argument("--image", default=str(REPO.parent / "shared" / "data" / "kodak" / "kodim23.png"))
  ap.add_argument("--tile", type=int, default=64)
  args = ap.parse_args()
  codec = codec_lib.load(args.checkpoint)
  x = load_rgb(args.image)
  t = args.tile
  h, w = (x.shape[0] // t) * t, (x.shape[1] // t) * t
  tiles = [forward_psnr_bpp(codec, x[i:i + t, j:j + t]) for i in range(0, h, t) for j in range(0, w, t)]
  full = forward_psnr_bpp(codec, x[:h, :w])
  print(f"{pathlib.Path(args.checkpoint).name} on {pathlib.Path(args.image).name}:")
  print(f"  whole image     : PSNR {full[0]:.2f} dB at {full[1]:.3f} bpp (estimated)")
  print(f"  {len(tiles)} {t}x{t} tiles: PSNR {np.mean([p for p, _ in tiles]):.2f} dB at "
        f"{np.mean([b for _, b in tiles]):.3f} bpp (mean over tiles)")


if __name__ == "__main__":
  main()
