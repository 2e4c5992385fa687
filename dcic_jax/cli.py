"""Command line: python -m dcic_jax compress IN.png OUT.dcic --checkpoint DIR [--seed S]
                 python -m dcic_jax decompress IN.dcic OUT.png [--checkpoint DIR]
                 python -m dcic_jax decompress IN.dcic OUT.png --kd 1 --kp 1 [--steps N ...]
                 python -m dcic_jax decompress IN.dcic --grid "0,0.5,1x0,0.5,1" --out-dir DIR

Without --kd/--kp/--grid, decompress writes the base reconstruction x̂_b. With them it runs the
DCIC decoder (a diffusion prior from --prior) at one (K_D, K_P) point, or at every point of the
grid "K_D values x K_P values" in one compiled call (one PNG per point plus settings.json).

User errors (bad files, wrong model, bad flags) print one line and exit with status 2; outputs
are written atomically, so a failed run never leaves a partial file. Images larger than the pixel
limit (--max-pixels, `limits.py`) are refused before they are decoded.
"""
import argparse
import dataclasses
import json
import math
import pathlib
import sys

from dcic_jax import limits
from dcic_jax.errors import UserError, exit_code

SHIPPED = pathlib.Path(__file__).resolve().parent.parent / "checkpoints"


def find_checkpoint(header) -> pathlib.Path:
  """The shipped export whose fingerprint matches the file's header."""
  want = header.fingerprint.hex()
  for info_path in sorted(SHIPPED.glob("*/codec.json")):
    if json.loads(info_path.read_text()).get("fingerprint") == want:
      return info_path.parent
  raise UserError(f"no checkpoint in {SHIPPED} matches this file (codec {header.codec_id!r}, "
                  f"fingerprint {want}); pass --checkpoint DIR")


def _compress(args) -> None:
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.data.images import load_rgb
  from dcic_jax.entropy.bitstream import write_atomic
  image = load_rgb(args.input)
  codec = codec_lib.load(args.checkpoint)
  data = codec.compress(image, seed=args.seed)
  write_atomic(args.output, data)
  h, w = image.shape[:2]
  print(f"{args.output}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp ({w}x{h}, {codec.codec_id})")


def _decompress(args) -> None:
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.data.images import save_png_atomic
  from dcic_jax.entropy import bitstream
  dcic = args.kd is not None or args.kp is not None or args.grid is not None
  if args.grid is not None:
    if args.out_dir is None or args.output is not None or args.kd is not None or args.kp is not None:
      raise UserError("--grid writes one PNG per point: give --out-dir DIR and no OUT.png, --kd or --kp")
  elif args.output is None:
    raise UserError("missing the output PNG path")
  elif args.out_dir is not None:
    raise UserError("--out-dir goes with --grid")
  if args.grid is not None:
    kd_values, kp_values = _grid(args.grid)
    points = [(a, b) for a in kd_values for b in kp_values]
  else:
    points = [(args.kd or 0.0, args.kp or 0.0)]
  if dcic:  # flags first: a bad factor or step count is refused before anything is decoded
    from dcic_jax.dcic.sampler import check_factors, config_from
    check_factors(config_from(vars(args)), [v for point in points for v in point])
  data = bitstream.read_file(args.input)
  header, _ = bitstream.unpack(data)
  ckpt = pathlib.Path(args.checkpoint) if args.checkpoint else find_checkpoint(header)
  codec = codec_lib.load(ckpt)
  decoded = codec.decompress(data)
  if not dcic:
    save_png_atomic(args.output, decoded.image)
    print(f"{args.output}: {header.width}x{header.height} base reconstruction ({header.codec_id})")
    return
  from dcic_jax.dcic.calibrate import weights
  from dcic_jax.dcic.decode import dcic_decode
  from dcic_jax.diffusion.prior import load_prior
  info = json.loads((ckpt / "codec.json").read_text())
  w_d, w_p = weights(info, args.variant)
  cfg = config_from(vars(args), w_d=w_d, w_p=w_p)
  prior = load_prior(args.prior)
  if "dcic" not in info and cfg.mode != "project":
    print(f"note: {ckpt} has no DCIC calibration (python -m dcic_jax.dcic.calibrate {ckpt}); "
          "using w_D = w_P = 1", file=sys.stderr)
  images = dcic_decode(codec, prior, [decoded], cfg, [p[0] for p in points], [p[1] for p in points],
                       chunk=args.chunk, progress=True)[:, 0]
  if args.grid is None:
    save_png_atomic(args.output, images[0])
    print(f"{args.output}: {header.width}x{header.height} DCIC K_D={points[0][0]:g} "
          f"K_P={points[0][1]:g} ({header.codec_id}, prior {prior.name})")
    return
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  files = []
  for (k_d, k_p), image in zip(points, images):
    name = f"kd{k_d:g}_kp{k_p:g}.png"
    save_png_atomic(out_dir / name, image)
    files.append({"k_d": k_d, "k_p": k_p, "file": name})
  settings = {"input": str(args.input), "checkpoint": str(ckpt), "prior": prior.name,
              "seed": header.seed, "prng": header.prng_impl, "dcic": dataclasses.asdict(cfg),
              "points": files}
  bitstream.write_atomic(out_dir / "settings.json", (json.dumps(settings, indent=2) + "\n").encode())
  print(f"{out_dir}: {len(points)} DCIC decodes + settings.json ({header.codec_id}, prior {prior.name})")


def _grid(text: str) -> tuple[list[float], list[float]]:
  """"0,0.5,1x0,1" -> ([0, 0.5, 1], [0, 1]): K_D values x K_P values."""
  parts = text.split("x")
  try:
    if len(parts) != 2:
      raise ValueError
    values = [[float(v) for v in part.split(",")] for part in parts]
  except ValueError:
    raise UserError(f"bad --grid {text!r}: expected K_D values x K_P values, e.g. 0,0.5,1x0,0.5,1") from None
  if any(not math.isfinite(v) or v < 0 for vs in values for v in vs):
    raise UserError(f"bad --grid {text!r}: weights must be finite and >= 0")
  return values[0], values[1]


def number(kind=float, low=None, high=None):
  """argparse type: a finite number of `kind` in [low, high] (None: unbounded)."""
  def parse(text: str):
    try:
      v = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
    if not math.isfinite(v) or (low is not None and v < low) or (high is not None and v > high):
      what = "an integer" if kind is int else "a finite number"
      bounds = [f"{op} {b:g}" for op, b in ((">=", low), ("<=", high)) if b is not None]
      raise argparse.ArgumentTypeError(f"must be {what} {' and '.join(bounds)}, got {text}")
    return v
  return parse


def seed_type(bits: int):
  """argparse type for a seed in [0, 2**bits) (decimal or 0x...)."""
  def parse(text: str) -> int:
    try:
      v = int(text, 0)
    except ValueError:
      raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= v < 2**bits:
      raise argparse.ArgumentTypeError(f"seed must be in [0, 2**{bits}), got {v}")
    return v
  return parse


class Parser(argparse.ArgumentParser):
  """argparse with its refusals as a UserError (one `error:` line, status 2), not a usage block;
  subparsers inherit it."""

  def error(self, message: str):
    raise UserError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
  from dcic_jax.dcic.sampler import MODES, DCICConfig
  defaults = DCICConfig()
  p = Parser(prog="python -m dcic_jax", description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("compress", help="image -> .dcic file")
  c.add_argument("input")
  c.add_argument("output")
  c.add_argument("--checkpoint", required=True, help="codec export directory (e.g. checkpoints/bmshj2018-q3)")
  c.add_argument("--seed", type=seed_type(64), default=0, help="decoder noise seed stored in the header (0..2**64-1)")
  c.add_argument("--max-pixels", type=_limit, default=None, help=f"pixel limit on the input image (default "
                 f"${limits.ENV_VAR} or {limits.DEFAULT_MAX_PIXELS})")
  c.set_defaults(fn=_compress)
  d = sub.add_parser("decompress", help=".dcic file -> PNG")
  d.add_argument("input")
  d.add_argument("output", nargs="?", default=None)
  d.add_argument("--checkpoint", default=None, help="codec export directory (default: the shipped one that matches)")
  d.add_argument("--max-pixels", type=_limit, default=None, help=f"largest image the file may declare (default "
                 f"${limits.ENV_VAR} or {limits.DEFAULT_MAX_PIXELS})")
  g = d.add_argument_group("DCIC decoder (any of --kd/--kp/--grid turns it on)")
  g.add_argument("--kd", type=number(low=0.0), default=None, help="distortion factor K_D: in [0, 1] in the project mode, "
                 "a weight >= 0 in schedule / dps (default 0)")
  g.add_argument("--kp", type=number(low=0.0), default=None, help="idempotence (perception) factor K_P: in [0, 1] in the project "
                 "mode, a weight >= 0 in schedule / dps (default 0)")
  g.add_argument("--grid", default=None, help='K_D values x K_P values, e.g. "0,0.5,1x0,0.5,1"')
  g.add_argument("--out-dir", default=None, help="folder for the grid's PNGs and settings.json")
  g.add_argument("--prior", default=None, help="diffusion prior: train workdir, diffusers/guided-diffusion "
                 "checkpoint, or analytic:STD (default: the shipped prior)")
  g.add_argument("--steps", dest="num_steps", type=number(int, 1), default=defaults.num_steps, help="reverse steps N")
  g.add_argument("--start-step", type=number(int, 0), default=defaults.start_step, help="late start at step k (0: from noise)")
  g.add_argument("--eta", type=number(low=0.0), default=defaults.eta, help="DDIM eta of the sampler step")
  g.add_argument("--mode", choices=MODES, default=defaults.mode,
                 help="project (default: K = fraction of the way to each constraint), or the penalty "
                 "forms schedule / dps")
  g.add_argument("--ball", type=number(low=0.0), default=defaults.ball,
                 help="project: distortion set |x - x_b|^2 <= BALL * D_q (0: x_b itself)")
  g.add_argument("--margin", type=number(low=0.0), default=defaults.margin,
                 help="project: how far inside its cell the final projection puts each latent")
  g.add_argument("--cg-iters", type=number(int, 1), default=defaults.cg_iters, help="project: CG iterations per step")
  g.add_argument("--grad", choices=("xt", "x0"), default=defaults.grad, help="schedule: gradient through")
  g.add_argument("--inner", dest="inner_steps", type=number(int, 0), default=defaults.inner_steps,
                 help="schedule: inner optimiser steps G")
  g.add_argument("--optimizer", choices=("sgd", "adam"), default=defaults.optimizer)
  g.add_argument("--step-size", type=number(low=0.0), default=defaults.step_size, help="eta_0 (schedule) or zeta (dps)")
  g.add_argument("--step-cap", action="store_true",
                 help="schedule: cap each inner step at the constraint's quadratic-model minimum")
  g.add_argument("--prox", type=number(low=0.0), default=defaults.prox, help="schedule: weight of |x - x0|^2 in the inner loss")
  g.add_argument("--variant", choices=("reconstruction", "latent"), default=defaults.variant,
                 help="schedule / dps: the idempotence residual")
  g.add_argument("--chunk", type=number(int, 1), default=1, help="grid points decoded together per device")
  d.set_defaults(fn=_decompress)
  return p


def _limit(text: str) -> int:
  try:
    return limits.parse(text, "the pixel limit")
  except UserError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None) -> int:
  return exit_code(_run, argv)


def _run(argv) -> None:
  args = build_parser().parse_args(argv)
  limits.configure(args.max_pixels)
  args.fn(args)


if __name__ == "__main__":
  sys.exit(main())
