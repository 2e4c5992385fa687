"""Score reconstructions against originals, folder against folder.

  python -m dcic_jax.score ORIGINALS_DIR RECONS_DIR [--lpips PATH] [--fid --inception PATH]
                           [--patch 64] [--shifted] [--seed 0] [--json OUT]

(`python -m dcic_jax.evaluate ...` runs the same.) Images are paired by file stem (a.png with
a.webp); a missing partner, a duplicate stem or a size mismatch is a one-line error (exit 2).

* Per image: PSNR on 8-bit RGB and MS-SSIM (metrics/image.py; MS-SSIM is nan when the smaller side
  is ≤ 160, too small for five scales) and, with --lpips, LPIPS (metrics/lpips.py).
* Per set: patch SWD (metrics/swd.py, Laplacian levels down to the smallest image's 16×16) and,
  with --inception, FID and KID over P×P patches of both sets (the patch protocol of
  metrics/perceptual.py; P = 64 as Xu et al. 2024 by default, --patch 0 for whole images).

SWD and KID draw random numbers from --seed (default 0, printed with the results).
"""

import dataclasses
import math
import pathlib
import sys

import jax
import numpy as np

from dcic_jax.argtypes import Parser, seed_type
from dcic_jax.errors import UserError, exit_code


@dataclasses.dataclass(frozen=True)
class Pair:
  stem: str
  original: pathlib.Path
  recon: pathlib.Path


def _by_stem(folder):
  from dcic_jax.data.images import list_images
  out = {}
  for path in list_images(folder):
    if path.stem in out:
      raise UserError(f"two images with the stem {path.stem!r} in {folder}: {out[path.stem].name}, "
                      f"{path.name}")
    out[path.stem] = path
  return out


def pair_images(originals_dir, recons_dir):
  """[Pair] sorted by stem; every original needs exactly one reconstruction and vice versa."""
  originals, recons = _by_stem(originals_dir), _by_stem(recons_dir)
  for stems, folder, other in ((set(originals) - set(recons), recons_dir, "reconstruction"),
                               (set(recons) - set(originals), originals_dir, "original")):
    if stems:
      raise UserError(f"no {other} of {', '.join(sorted(stems))} in {folder} (images are paired by "
                      "file stem)")
  return [Pair(s, originals[s], recons[s]) for s in sorted(originals)]


def _load_pairs(pairs):
  from dcic_jax.data.images import load_rgb
  originals, recons = [], []
  for p in pairs:
    a, b = load_rgb(p.original), load_rgb(p.recon)
    if a.shape != b.shape:
      raise UserError(f"{p.stem}: original {p.original.name} is {a.shape[1]}x{a.shape[0]} but "
                      f"reconstruction {p.recon.name} is {b.shape[1]}x{b.shape[0]}")
    originals.append(a)
    recons.append(b)
  return originals, recons


def _grouped_by_shape(images):
  """{shape: [indices]}: batched metrics need one image size per call."""
  groups = {}
  for i, im in enumerate(images):
    groups.setdefault(im.shape, []).append(i)
  return groups


def set_swd(key, originals, recons):
  """Patch SWD between the two sets; equals swd.swd(key, A, B) when all images share one size."""
  from dcic_jax.metrics import swd
  num_levels = min(swd.default_num_levels(*im.shape[:2]) for im in originals)
  key_a, key_b, key_proj = jax.random.split(key, 3)
  descriptors = []
  for images, key_set in ((originals, key_a), (recons, key_b)):
    per_level = None
    for g, indices in enumerate(_grouped_by_shape(images).values()):
      batch = np.stack([images[i] for i in indices])
      key_g = key_set if g == 0 else jax.random.fold_in(key_set, g)
      d = swd.pyramid_descriptors(key_g, batch, num_levels)
      per_level = d if per_level is None else [np.concatenate([p, q]) for p, q in zip(per_level, d)]
    descriptors.append(per_level)
  return swd.swd_from_descriptors(key_proj, *descriptors).mean


def _pool3(extractor, images):
  """pool3 features of a list of HWC images, one batched call per image size."""
  features = [extractor(np.stack([images[i] for i in indices]))
              for indices in _grouped_by_shape(images).values()]
  return np.concatenate(features)


def _nanmean(values):
  """Mean over the finite entries (MS-SSIM is nan for small images); nan if there are none."""
  values = [v for v in values if not math.isnan(v)]
  return float(np.mean(values)) if values else float("nan")


def score(originals, recons, *, seed, names=None, lpips=None, inception=None, patch_size=64,
          shifted=False, batch_size=16, kid_subsets=100, kid_subset_size=1000):
  """All metrics of two aligned lists of uint8 HWC images -> a JSON-ready dict.

  lpips: (net, variables) or None; inception: Inception variables or None.
  """
  from dcic_jax.metrics.image import quality
  from dcic_jax.metrics import perceptual
  names = names or [str(i) for i in range(len(originals))]
  rows = []
  for name, a, b in zip(names, originals, recons):
    p, m = quality(a, b)
    row = {"image": name, "psnr": p, "ms_ssim": m}
    if lpips is not None:
      row["lpips"] = float(perceptual.lpips_distance(*lpips, a[None], b[None])[0])
    rows.append(row)
  mean = {k: _nanmean([r[k] for r in rows]) for k in rows[0] if k != "image"}
  result = {"images": rows, "mean": mean, "set": {"n": len(rows), "seed": seed}}
  key = jax.random.PRNGKey(seed)
  if min(min(im.shape[:2]) for im in originals) >= 16:
    result["set"]["swd"] = float(set_swd(jax.random.fold_in(key, 0), originals, recons))
  if inception is not None:
    if patch_size:
      patches_a = perceptual.image_patches(originals, patch_size, shifted)
      patches_b = perceptual.image_patches(recons, patch_size, shifted)
    else:
      patches_a, patches_b = originals, recons
    if min(len(patches_a), len(patches_b)) < 2:
      raise UserError(f"FID/KID need at least 2 samples per set, got {len(patches_a)}; use more "
                      "images or a smaller --patch")
    extractor = perceptual.InceptionFeatures(inception, batch_size)
    f_a = _pool3(extractor, list(patches_a))
    f_b = _pool3(extractor, list(patches_b))
    k = perceptual.kid(f_a, f_b, seed=seed, num_subsets=kid_subsets, subset_size=kid_subset_size)
    result["set"].update(fid=perceptual.fid_from_features(f_a, f_b), kid=k.mean, kid_std=k.std,
                         kid_subset_size=k.subset_size, fid_samples=len(f_a),
                         patch_size=patch_size, shifted=shifted)
  return result


def _fmt(v, digits):
  return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_table(result):
  """Markdown table (per image + mean) and one line of set-level metrics."""
  digits = {"psnr": 2, "ms_ssim": 4, "lpips": 4}
  titles = {"psnr": "PSNR dB", "ms_ssim": "MS-SSIM", "lpips": "LPIPS"}
  metrics = list(result["mean"])
  lines = ["| image | " + " | ".join(titles[k] for k in metrics) + " |",
           "|---" * (len(metrics) + 1) + "|"]
  for row in result["images"] + [dict(result["mean"], image="mean")]:
    cells = [row["image"]] + [_fmt(row[k], digits[k]) for k in metrics]
    lines.append("| " + " | ".join(cells) + " |")
  s = result["set"]
  parts = [f"{s['n']} images, seed {s['seed']}"]
  if "swd" in s:
    parts.append(f"patch SWD {s['swd']:.4f}")
  if "fid" in s:
    what = f"{s['patch_size']}x{s['patch_size']} patches" if s["patch_size"] else "whole images"
    what += " + shifted grid" if s["shifted"] else ""
    parts.append(f"FID {s['fid']:.3f} and KID {s['kid']:.5f} ± {s['kid_std']:.5f} on "
                 f"{s['fid_samples']} {what} (KID subsets of {s['kid_subset_size']})")
  return "\n".join(lines) + "\nset: " + "; ".join(parts)


def _json_ready(x):
  """nan -> null (strict JSON)."""
  if isinstance(x, dict):
    return {k: _json_ready(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_json_ready(v) for v in x]
  return None if isinstance(x, float) and math.isnan(x) else x


def build_parser():
  p = Parser(prog="python -m dcic_jax.score",
                              description=__doc__.splitlines()[0])
  p.add_argument("originals", help="folder of original images")
  p.add_argument("recons", help="folder of reconstructions (same file stems)")
  p.add_argument("--lpips", metavar="PATH",
                 help="LPIPS weights (.npz from convert-lpips): per-image LPIPS")
  p.add_argument("--inception", metavar="PATH",
                 help="FID Inception weights (.pth or .npz): FID and KID")
  p.add_argument("--fid", action="store_true", help="FID and KID (needs --inception)")
  p.add_argument("--patch", type=int, default=64, help="FID/KID patch size P (0: whole images)")
  p.add_argument("--shifted", action="store_true", help="add the P/2-shifted patch grid (HiFiC)")
  p.add_argument("--seed", type=seed_type(32), default=0, help="seed of SWD and KID (default 0)")
  p.add_argument("--batch-size", type=int, default=16, help="Inception batch size")
  p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
  return p


def run(args):
  from dcic_jax.metrics import perceptual
  pairs = pair_images(args.originals, args.recons)
  originals, recons = _load_pairs(pairs)
  lpips = perceptual.load_lpips(args.lpips) if args.lpips is not None else None
  inception = None
  if args.fid or args.inception is not None:
    inception = perceptual.load_inception(args.inception or "")
  if args.patch < 0:
    raise UserError(f"--patch must be >= 0, got {args.patch}")
  if inception is not None and args.patch and not any(min(im.shape[:2]) >= args.patch
                                                      for im in originals):
    raise UserError(f"no {args.patch}x{args.patch} patch fits in any image; use a smaller --patch")
  result = score(originals, recons, seed=args.seed, names=[p.stem for p in pairs], lpips=lpips,
                 inception=inception, patch_size=args.patch, shifted=args.shifted,
                 batch_size=args.batch_size)
  print(format_table(result))
  if args.json:
    from dcic_jax.io import write_json
    write_json(args.json, _json_ready(result))
    print(f"wrote {args.json}")
  return result


def main(argv=None):
  return exit_code(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
  sys.exit(main())
