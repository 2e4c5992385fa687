"""Classical-codec RD baselines on Kodak, every rate from the real encoded bytes.

  python experiments/baselines_kodak.py [--kodak ../shared/data/kodak] [--limit N]
      [--bpps 0.125,0.25,0.5,1.0] [--codecs jpeg,webp,...] [--out runs/baselines_kodak]

Each available codec is driven per image to the real bpp closest to each target (quality search
in `dcic_jax.baselines.classical.at_bpp`). Per codec × rate point it prints mean bpp, PSNR,
MS-SSIM and patch SWD (whole decoded set vs originals, fixed key), then BD-rate vs JPEG, and
writes the same as Markdown + JSON to --out. Unavailable codecs are listed as skipped.
"""
import argparse
import concurrent.futures
import json
import multiprocessing
import pathlib
import sys
import time
import warnings

import jax
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from dcic_jax.baselines import classical  # noqa: E402
from dcic_jax.data.images import list_images, load_rgb  # noqa: E402
from dcic_jax.io import write_bytes  # noqa: E402
from dcic_jax.metrics.bd import bd_rate  # noqa: E402
from dcic_jax.metrics.image import ms_ssim, psnr  # noqa: E402
from dcic_jax.metrics.swd import swd  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
ANCHOR = "jpeg"


def landscape(image):
  """Kodak mixes 512×768 and 768×512; SWD needs one shape per set, so portraits are rotated."""
  return np.rot90(image) if image.shape[0] > image.shape[1] else image


def score(originals, decoded, key):
  """Mean PSNR, mean MS-SSIM and set-level SWD of `decoded` vs `originals` (uint8 HW3 lists)."""
  p = [float(psnr(a[None], b[None])[0]) for a, b in zip(originals, decoded)]
  m = [float(ms_ssim(a[None], b[None])[0]) if min(a.shape[:2]) > 160 else float("nan")
       for a, b in zip(originals, decoded)]
  a_set = np.stack([landscape(x) for x in originals])
  b_set = np.stack([landscape(x) for x in decoded])
  s = swd(key, b_set, a_set).mean
  return dict(psnr=float(np.mean(p)), ms_ssim=float(np.mean(m)), swd=float(s), psnr_per_image=p,
              ms_ssim_per_image=m)


def bd_or_reason(anchor, other, metric):
  """(BD-rate %, note): the note carries bd_rate's error or low-overlap warning, if any."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      value = float(bd_rate(anchor["bpp"], anchor[metric], other["bpp"], other[metric],
                            method="pchip"))
    except ValueError as e:  # curves that do not overlap enough or are not monotone
      return None, str(e).splitlines()[0]
  return value, "; ".join(str(w.message).split(";")[0] for w in caught)


def encode_all(images, codec, targets, workers):
  """[image][target] -> (bpp, decoded, quality); a spawn pool since the parent has JAX loaded."""
  jobs = [(codec.name, image, targets) for image in images]
  bar = dict(total=len(images), desc=f"{codec.name:>10s}", leave=False)
  if workers <= 1:
    return [classical.sweep(*job) for job in tqdm(jobs, **bar)]
  ctx = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
    return list(tqdm(pool.map(classical.sweep, *zip(*jobs)), **bar))


def run(images, codecs, targets, seed=0, workers=1):
  """All measurements as a JSON-able dict; `images` are uint8 HW3 arrays."""
  key = jax.random.PRNGKey(seed)
  results, score_times = {}, []
  for codec in codecs:
    swept = encode_all(images, codec, targets, workers)
    per_target = {t: dict(bpp=[s[i][0] for s in swept], decoded=[s[i][1] for s in swept],
                          quality=[float(s[i][2]) for s in swept])
                  for i, t in enumerate(targets)}
    points = []
    for t in targets:
      start = time.perf_counter()
      s = score(images, per_target[t]["decoded"], key)
      score_times.append(time.perf_counter() - start)
      points.append(dict(target_bpp=t, bpp=float(np.mean(per_target[t]["bpp"])),
                         bpp_per_image=per_target[t]["bpp"],
                         quality_per_image=per_target[t]["quality"], **s))
    results[codec.name] = points
  return results, score_times


def curves(points):
  return dict(bpp=[p["bpp"] for p in points], psnr=[p["psnr"] for p in points],
              ms_ssim=[p["ms_ssim"] for p in points])


def report(results, skipped, score_times, num_images):
  lines = [f"# Classical baselines on Kodak ({num_images} images, rates from real bytes)", ""]
  lines += ["| codec | target bpp | bpp | PSNR (dB) | MS-SSIM | SWD (×10³) |",
            "|---|---|---|---|---|---|"]
  for name, points in results.items():
    for p in points:
      lines.append(f"| {name} | {p['target_bpp']:g} | {p['bpp']:.4f} | {p['psnr']:.3f} | "
                   f"{p['ms_ssim']:.4f} | {1e3 * p['swd']:.2f} |")
  bd = {}
  if ANCHOR in results:
    lines += ["", f"BD-rate vs {ANCHOR} (pchip; negative = fewer bits at equal quality):", "",
              "| codec | BD-rate PSNR (%) | BD-rate MS-SSIM (%) |", "|---|---|---|"]
    anchor = curves(results[ANCHOR])
    for name, points in results.items():
      if name == ANCHOR:
        continue
      bd[name] = {}
      cells = []
      for metric in ("psnr", "ms_ssim"):
        value, why = bd_or_reason(anchor, curves(points), metric)
        bd[name][metric] = dict(percent=value, note=why)
        if value is None:
          cells.append(f"n/a ({why})")
        else:
          cells.append(f"{value:+.2f}" + (f" ({why})" if why else ""))
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if skipped:
    lines += ["", "Skipped:"] + [f"- {c.name}: {c.note}" for c in skipped]
  if score_times:
    rest = score_times[1:] or score_times
    lines += ["", f"Scoring {num_images} images once with PSNR + MS-SSIM + SWD: "
              f"{score_times[0]:.2f} s first call (incl. JIT), {float(np.median(rest)):.2f} s "
              f"steady (median of {len(rest)})."]
  return "\n".join(lines) + "\n", bd


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--kodak", default=str(REPO.parent / "shared" / "data" / "kodak"))
  ap.add_argument("--limit", type=int, default=0, help="only the first N images (smoke runs)")
  ap.add_argument("--bpps", default="0.125,0.25,0.5,1.0")
  ap.add_argument("--codecs", default="", help="comma-separated subset (default: all)")
  ap.add_argument("--out", default=str(REPO / "runs" / "baselines_kodak"))
  ap.add_argument("--workers", type=int, default=2, help="encoder processes (CPU is shared)")
  ap.add_argument("--seed", type=int, default=0, help="PRNG key for SWD patches/directions")
  args = ap.parse_args(argv)

  paths = list_images(args.kodak)
  if args.limit:
    paths = paths[:args.limit]
  if not paths:
    raise SystemExit(f"No images in {args.kodak}.")
  images = [load_rgb(p) for p in paths]
  targets = [float(t) for t in args.bpps.split(",") if t.strip()]
  wanted = [classical.get(n.strip()) for n in args.codecs.split(",") if n.strip()] or \
      list(classical.REGISTRY.values())
  codecs = [c for c in wanted if c.available]
  skipped = [c for c in wanted if not c.available]
  for c in skipped:
    print(f"skipped {c.name}: {c.note}", file=sys.stderr)

  results, score_times = run(images, codecs, targets, args.seed, args.workers)
  text, bd = report(results, skipped, score_times, len(images))
  print(text)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  write_bytes(out / "baselines_kodak.md", text.encode())
  payload = dict(images=[p.name for p in paths], targets=targets, seed=args.seed,
                 results=results, bd_rate_vs_jpeg=bd, score_seconds=score_times,
                 skipped={c.name: c.note for c in skipped})
  write_bytes(out / "baselines_kodak.json", json.dumps(payload, indent=1).encode())
  return results


if __name__ == "__main__":
  main()
