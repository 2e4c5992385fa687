"""How good is a diffusion prior? Its training curve, and patch SWD of its samples against
held-out photo crops, beside reference sets that give the number a scale.

Sets, each scored by patch SWD (dcic_jax/metrics/swd.py; lower = closer to held-out crops):
  * real crops of the *training* photos (the floor: real vs real, different photos),
  * DDIM-N samples of the prior (η = 0 and η = 1),
  * the training-photo crops blurred with a Gaussian of σ = 1 and 2 pixels (the floor plus the
    realism lost to blur),
  * pure noise: N(0, 0.5²) clipped to [−1, 1] (the ceiling).

  python experiments/prior_quality.py                      # the shipped prior, checkpoints/prior
  python experiments/prior_quality.py --prior runs/shipped-prior --num 64 --size 64

The held-out crops come from the photos that experiments/train_shipped_prior.sh leaves out of
training (045-049 of ../shared/data/photos).
"""
import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dcic_jax.data.images import list_images, load_rgb  # noqa: E402
from dcic_jax.data.input_pipeline import random_crops  # noqa: E402
from dcic_jax.diffusion import samplers, schedules  # noqa: E402
from dcic_jax.diffusion.prior import load_prior, shipped_prior  # noqa: E402
from dcic_jax.metrics import swd  # noqa: E402

HELD_OUT = ("045", "046", "047", "048", "049")  # file stems: .png originals or half-size .webp


def crops(paths, size, num, seed):
  images = [load_rgb(p) for p in paths]
  return next(random_crops(images, size, num, seed))


def gaussian_blur(images_BHW3: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur (reflect padding), uint8 in and out."""
  r = int(np.ceil(3 * sigma))
  g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  g /= g.sum()
  x = images_BHW3.astype(np.float64)
  for axis in (1, 2):
    pad = [(0, 0)] * 4
    pad[axis] = (r, r)
    xp = np.pad(x, pad, mode="reflect")
    x = sum(w * np.take(xp, np.arange(k, k + x.shape[axis]), axis=axis) for k, w in enumerate(g))
  return np.round(np.clip(x, 0, 255)).astype(np.uint8)


def to_uint8(x):
  return np.round(np.clip((np.asarray(x) + 1) * 127.5, 0, 255)).astype(np.uint8)


def curve(prior_dir: pathlib.Path, every: int) -> list[tuple[int, float]]:
  """(step, mean loss over the window) from metrics.jsonl (logged every 100 steps)."""
  path = prior_dir / "metrics.jsonl"
  if not path.is_file():
    path = prior_dir / "prior" / "metrics.jsonl"
  if not path.is_file():
    return []
  rows = {}
  for line in path.read_text().splitlines():
    r = json.loads(line)
    rows[r["step"]] = r["loss"]  # the last entry of a step wins (a resumed run re-logs)
  steps = sorted(rows)
  out = []
  for start in range(0, steps[-1], every):
    window = [rows[s] for s in steps if start < s <= start + every]
    if window:
      out.append((start + every, float(np.mean(window))))
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--prior", default=shipped_prior())
  p.add_argument("--photos", default=str(REPO.parent / "shared" / "data" / "photos"))
  p.add_argument("--size", type=int, default=64, help="crop / sample side")
  p.add_argument("--num", type=int, default=48, help="images per set")
  p.add_argument("--steps", type=int, default=50, help="DDIM steps")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--curve-every", type=int, default=500)
  args = p.parse_args(argv)

  photos = pathlib.Path(args.photos)
  if not photos.is_dir():
    sys.exit(f"error: no photos at {photos} (the project's shared data/photos)")
  all_photos = list_images(photos)
  held = [q for q in all_photos if q.stem in HELD_OUT]
  train = [q for q in all_photos if q.stem not in HELD_OUT]
  if not held or not train:
    sys.exit(f"error: {photos} needs the held-out photos {', '.join(HELD_OUT)} and training photos")
  reference = crops(held, args.size, args.num, args.seed)

  print("Training curve (mean ε-MSE per window of steps):")
  for step, loss in curve(pathlib.Path(args.prior), args.curve_every):
    print(f"  step {step:6d}  loss {loss:.4f}")

  prior = load_prior(args.prior)
  sets = {"real crops, training photos": crops(train, args.size, args.num, args.seed + 1)}
  shape = (args.num, args.size, args.size, 3)
  for eta in (0.0, 1.0):
    sample = jax.jit(samplers.make_ddim_sampler(
        prior.eps_fn, schedules.respace(prior.schedule, args.steps), eta=eta), static_argnums=2)
    key = jax.random.key(args.seed)
    jax.block_until_ready(sample(prior.params, key, (1, args.size, args.size, 3)))
    t0 = time.perf_counter()
    x = jax.block_until_ready(sample(prior.params, key, shape))
    per_image = (time.perf_counter() - t0) / args.num
    sets[f"prior DDIM-{args.steps} η={eta:g} ({per_image:.2f} s/image)"] = to_uint8(x)
  real = sets["real crops, training photos"]
  for sigma in (1.0, 2.0):
    sets[f"real crops, training photos, blurred σ={sigma:g}"] = gaussian_blur(real, sigma)
  noise = np.random.default_rng(args.seed).normal(0, 0.5, shape)
  sets["noise N(0, 0.5²)"] = to_uint8(np.clip(noise, -1, 1))

  key = jax.random.key(args.seed + 7)
  print(f"\nPatch SWD against {args.num} held-out {args.size}×{args.size} crops "
        f"({', '.join(q.name for q in held)}); lower is closer:")
  print("| set | patch SWD |\n|---|---|")
  for name, images in sets.items():
    print(f"| {name} | {float(swd.swd(key, reference, jnp.asarray(images)).mean):.4f} |")
  out = pathlib.Path(args.prior)
  if (out / "prior_config.json").is_file():
    from PIL import Image
    sample_name = next(n for n in sets if n.startswith("prior") and "η=1" in n)
    grid = sets[sample_name][:16]
    rows = [np.concatenate(list(grid[r * 4:(r + 1) * 4]), axis=1) for r in range(4)]
    path = pathlib.Path("runs") / "prior_samples.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    print(f"\n16 samples ({sample_name}): {path}")


if __name__ == "__main__":
  main()
