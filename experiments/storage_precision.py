"""What the export's storage rounding costs: one trained codec coded at three kernel precisions.

  python experiments/storage_precision.py --from-npz runs/gpu/bmshj2018.npz --quality 4 --images 4

The .npz is what `train_ladder.py --params-npz` writes; the "float16" row is the float16 model only
for a file written before int8 storage (runs/gpu/*.npz), whose kernels are all float16. Each variant builds
its own coding tables and codes the first --images Kodak images for real:
  float16      every kernel float16 (the exports before int8 storage);
  int8 h_a/h_s the shipped storage (`checkpointing.storage_form`);
  int8 all     every kernel int8 with a per-output-channel scale.
"""
import argparse
import json
import pathlib
import sys

import flax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from dcic_jax import checkpointing  # noqa: E402
from dcic_jax.codecs import codec as codec_lib  # noqa: E402
from dcic_jax.data.images import list_images  # noqa: E402
from dcic_jax.evaluate import evaluate_codec, summarize  # noqa: E402

import train_ladder  # noqa: E402  (experiments/, beside this script)


def int8_everywhere(params) -> dict:
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({
      k: (checkpointing.from_storage({"w": checkpointing.int8_kernel(v)})["w"] if k[-1] == "kernel" else v)
      for k, v in flat.items()})


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--from-npz", required=True)
  ap.add_argument("--quality", type=int, default=4)
  ap.add_argument("--images", type=int, default=4)
  ap.add_argument("--kodak", default=str(REPO.parent / "shared" / "data" / "kodak"))
  args = ap.parse_args()
  data = np.load(args.from_npz)
  meta = json.loads(str(data["meta"]))["args"]
  params = checkpointing.from_storage(train_ladder.npz_params(data, args.quality))
  config = {"N": meta["N"], "M": meta["M"], "up_kernel": meta.get("up_kernel", 3)}
  paths = list_images(args.kodak)[:args.images]
  variants = {"float16": params,
              "int8 h_a/h_s": checkpointing.from_storage(checkpointing.storage_form(params)),
              "int8 all": int8_everywhere(params)}
  print(f"{meta['codec']} q{args.quality}, first {len(paths)} Kodak images\n")
  print("| kernels | bpp (file) | PSNR dB | MS-SSIM |\n|---|---|---|---|")
  base = None
  for name, p in variants.items():
    s = summarize(evaluate_codec(codec_lib.make_codec_from_params(meta["codec"], config, p), name, paths))
    base = base or s
    print(f"| {name} | {s['bpp']:.4f} ({100 * (s['bpp'] / base['bpp'] - 1):+.2f}%) | "
          f"{s['psnr']:.3f} ({s['psnr'] - base['psnr']:+.3f}) | {s['ms_ssim']:.4f} |", flush=True)


if __name__ == "__main__":
  main()
