"""Distortion–perception sweep: one .dcic file per image decoded over a (K_D, K_P) grid.

For every image crop: compress once with the codec (real file, real bpp), then decode the whole
grid in one call of the DCIC decoder, and score each grid point over the image set with PSNR
(distortion) and patch SWD against the originals (weight-free realism; lower is more realistic).
Prints the table with the two boundary curves (K_P = 0: DCIC_RD, K_D = 0: DCIC_RP), the interior
points (DCIC_RDP), the base codec, and — with --idempotence-steps — the Idempotence decoder
(`dps`, K_D = 0, K_P = 1, ζ = 0.6) with its network evaluations. `--steps` takes a list (e.g.
10,20,50): the grid is decoded once per N, and the last line names the fewest network evaluations
at which a DCIC point is at least as realistic (patch SWD) as the Idempotence decoder.

  python experiments/dp_sweep.py --prior WORKDIR_OR_CHECKPOINT [--images ../shared/data/kodak]
  python experiments/dp_sweep.py --prior analytic:0.5 --steps 10   # network-free smoke run

Crops (default 128×128 from the image centre) keep CPU runs short; all images are decoded as one
batch, so they must share a size (--crop 0 works for a set of equally sized whole images).
"""
import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dcic_jax.codecs import codec as codec_lib  # noqa: E402
from dcic_jax.data.images import list_images, load_rgb  # noqa: E402
from dcic_jax.dcic.calibrate import weights  # noqa: E402
from dcic_jax.dcic.decode import dcic_decode  # noqa: E402
from dcic_jax.dcic.sampler import DCICConfig  # noqa: E402
from dcic_jax.diffusion.prior import load_prior  # noqa: E402
from dcic_jax.metrics import swd  # noqa: E402


def _crop(image, size):
  if not size:
    return image
  h, w = image.shape[:2]
  top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
  return image[top:top + size, left:left + size]


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=(1, 2, 3))
  return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def _nfe_to_match(rows) -> str:
  """The fewest UNet evaluations at which a DCIC point (K_P > 0) is at least as realistic as the
  Idempotence decoder, as one line."""
  idem = next(r for r in rows if r["name"] == "Idempotence (dps)")
  ok = [r for r in rows if r["name"].startswith("DCIC_R") and r["k_p"] and r["swd"] <= idem["swd"]]
  if not ok:
    return (f"no DCIC point tried (K_P > 0) reaches the Idempotence decoder's patch SWD "
            f"{idem['swd']:.1f} at {idem['nfe']} UNet evals")
  best = min(ok, key=lambda r: (r["nfe"], r["swd"]))
  return (f"Idempotence (dps, N={idem['steps']}): SWD {idem['swd']:.1f}, {idem['psnr']:.2f} dB at "
          f"{idem['nfe']} UNet evals; DCIC ({best['name']}, K_D={best['k_d']:g}, K_P={best['k_p']:g}, "
          f"N={best['steps']}) reaches SWD {best['swd']:.1f}, {best['psnr']:.2f} dB at {best['nfe']}: "
          f"{idem['nfe'] / best['nfe']:.1f}x fewer")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--prior", required=True)
  p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "mbt2018-mean-q2"))
  p.add_argument("--images", default=str(REPO / "data" / "images"))
  p.add_argument("--crop", type=int, default=128)
  p.add_argument("--max-images", type=int, default=24)
  p.add_argument("--kd", default="0,0.5,1")
  p.add_argument("--kp", default="0,0.5,1")
  p.add_argument("--steps", default="50", help="N, or a comma-separated list of N to compare")
  p.add_argument("--mode", default="schedule")
  p.add_argument("--grad", default="xt", help="xt: constraint gradients through ε_θ; x0: codec only")
  p.add_argument("--start-step", type=int, default=0, help="late start from the noised x̂_b")
  p.add_argument("--step-size", type=float, default=DCICConfig.step_size, help="η₀ of the schedule mode")
  p.add_argument("--step-cap", action="store_true", help="cap inner steps at the quadratic model's minimum")
  p.add_argument("--idempotence-steps", type=int, default=0, help="also run dps K_P=1 with this many steps")
  p.add_argument("--chunk", type=int, default=1, help="decodes vmapped together (must divide points x images)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)

  codec = codec_lib.load(args.checkpoint)
  info = json.loads((pathlib.Path(args.checkpoint) / "codec.json").read_text())
  w_d, w_p = weights(info, "reconstruction")
  prior = load_prior(args.prior)
  images = [_crop(load_rgb(f), args.crop) for f in list_images(args.images)[:args.max_images]]
  files = [codec.compress(im, seed=args.seed + k) for k, im in enumerate(images)]
  decoded = [codec.decompress(f) for f in files]
  originals = np.stack(images)
  bpp = np.mean([8 * len(f) / (im.shape[0] * im.shape[1]) for f, im in zip(files, images)])
  kd_values = [float(v) for v in args.kd.split(",")]
  kp_values = [float(v) for v in args.kp.split(",")]
  points = [(a, b) for a in kd_values for b in kp_values]
  key = jax.random.key(args.seed)

  def realism(x):
    return swd.swd(key, originals, x).mean * 1e3

  rows = [dict(name="base codec", k_d=None, k_p=None, nfe=0, psnr=_psnr(np.stack([d.image for d in decoded]), originals),
               swd=realism(np.stack([d.image for d in decoded])))]
  seconds = {}
  for steps in [int(v) for v in args.steps.split(",")]:
    cfg = DCICConfig(num_steps=steps, mode=args.mode, grad=args.grad, step_size=args.step_size,
                     step_cap=args.step_cap, start_step=args.start_step, w_d=w_d, w_p=w_p)
    run_steps = args.start_step or steps
    # forward + G·(forward + backward ≈ 2 forwards) with xt gradients; one forward with x0.
    nfe = run_steps * (1 + 2 * cfg.inner_steps if args.grad == "xt" else 1)
    start = time.perf_counter()
    out = dcic_decode(codec, prior, decoded, cfg, [q[0] for q in points], [q[1] for q in points],
                      chunk=args.chunk, progress=True)                                   # [G, B, H, W, 3], one compile
    seconds[steps] = time.perf_counter() - start
    for (k_d, k_p), x in zip(points, out):
      name = "sampler" if k_d == k_p == 0 else "DCIC_RD" if k_p == 0 else "DCIC_RP" if k_d == 0 else "DCIC_RDP"
      rows.append(dict(name=name, k_d=k_d, k_p=k_p, steps=steps, nfe=nfe, psnr=_psnr(x, originals),
                       swd=realism(x)))
  if args.idempotence_steps:
    idem = DCICConfig(num_steps=args.idempotence_steps, mode="dps", step_size=0.6, w_d=w_d, w_p=1.0)
    x = dcic_decode(codec, prior, decoded, idem, [0.0], [1.0], chunk=args.chunk, progress=True)[0]
    rows.append(dict(name="Idempotence (dps)", k_d=0.0, k_p=1.0, steps=args.idempotence_steps,
                     nfe=3 * args.idempotence_steps, psnr=_psnr(x, originals), swd=realism(x)))

  print(f"{len(images)} images ({args.crop or 'full'} px) from {args.images}; codec {args.checkpoint} "
        f"at {bpp:.4f} bpp (file sizes); prior {prior.name}; N={args.steps}, mode {args.mode}, "
        f"grad {args.grad}, η₀ {args.step_size:g}{' capped' if args.step_cap else ''}, start step {args.start_step}; grid decode seconds per N: "
        + ", ".join(f"{n}: {t:.1f}" for n, t in seconds.items()))
  print("| point | K_D | K_P | N | UNet evals (fwd-equiv.) | PSNR dB | patch SWD x1e3 |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    kd = "" if r["k_d"] is None else f"{r['k_d']:g}"
    kp = "" if r["k_p"] is None else f"{r['k_p']:g}"
    print(f"| {r['name']} | {kd} | {kp} | {r.get('steps', '')} | {r['nfe']} | {r['psnr']:.2f} | "
          f"{r['swd']:.1f} |")
  if args.idempotence_steps:
    print(_nfe_to_match(rows))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(dict(bpp=bpp, rows=rows), indent=2) + "\n")


if __name__ == "__main__":
  main()
