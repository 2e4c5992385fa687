"""Command line: python -m dcic_jax compress IN.png OUT.dcic --checkpoint DIR [--seed S]
                 python -m dcic_jax decompress IN.dcic OUT.png [--checkpoint DIR]
                 python -m dcic_jax decompress IN.dcic OUT.png --kd 1 --kp 1 [--steps N ...]
                 python -m dcic_jax decompress IN.dcic --grid "0,0.5,1x0,0.5,1" --out-dir DIR
                 python -m dcic_jax report DIR [--original IN.png]
                 python -m dcic_jax TOOL ... (run, score, train-codec, train-prior, import-compressai,
                                              import-tcm, import-prior, calibrate, convert-metric-weights,
                                              prepare-dataset)

Without --kd/--kp/--grid, decompress writes the base reconstruction x̂_b. With them it runs the
DCIC decoder (a diffusion prior from --prior) at one (K_D, K_P) point, or at every point of the
grid "K_D values x K_P values" in one compiled call (one PNG per point, base.png and
settings.json); `report DIR` writes DIR/report.html, an explorer of that grid (report/explorer.py).

`dcic` (the installed command) is the same program. A TOOL hands its arguments to the module that
implements it (`dcic run ...` is `python -m dcic_jax.main ...`; `dcic TOOL --help` shows its own
flags), so every command of the project has one entry point and one error convention.

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
from dcic_jax.argtypes import Parser, number, seed_type
from dcic_jax.errors import UserError, exit_code, report


def find_checkpoint(header) -> pathlib.Path:
  """The shipped export whose fingerprint matches the file's header."""
  from dcic_jax import assets
  shipped = assets.shipped("checkpoints")
  want = header.fingerprint.hex()
  for info_path in sorted(shipped.glob("*/codec.json")):
    if json.loads(info_path.read_text()).get("fingerprint") == want:
      return info_path.parent
  raise UserError(f"no checkpoint in {shipped} matches this file (codec {header.codec_id!r}, "
                  f"fingerprint {want}); pass --checkpoint DIR")


def _compress(args) -> None:
  from dcic_jax.assets import resolve
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.data.images import load_rgb
  from dcic_jax.io import write_bytes
  image = load_rgb(args.input)
  codec = codec_lib.load(resolve(args.checkpoint))
  data = codec.compress(image, seed=args.seed)
  write_bytes(args.output, data)
  h, w = image.shape[:2]
  print(f"{args.output}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp ({w}x{h}, {codec.codec_id})")


def _decompress(args) -> None:
  from dcic_jax.assets import resolve
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.entropy import bitstream
  from dcic_jax.io import save_png, write_json
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
  if dcic:  # flags and the prior first: a bad factor, step count or prior is refused before
    # anything is decoded (the base decode of a large image through a large codec takes a while)
    from dcic_jax.dcic.sampler import check_factors, config_from
    from dcic_jax.diffusion.prior import load_prior, notes as prior_notes
    check_factors(config_from(vars(args)), [v for point in points for v in point])
    prior = load_prior(args.prior, args.prior_flags)
  data = bitstream.read_file(args.input)
  header, _ = bitstream.unpack(data)
  ckpt = resolve(args.checkpoint) if args.checkpoint else find_checkpoint(header)
  codec = codec_lib.load(ckpt)
  decoded = codec.decompress(data)
  if not dcic:
    save_png(args.output, decoded.image)
    print(f"{args.output}: {header.width}x{header.height} base reconstruction ({header.codec_id})")
    return
  from dcic_jax.dcic.calibrate import weights_or_calibrate
  from dcic_jax.dcic.decode import dcic_decode
  from dcic_jax.sweep import point_name
  info = json.loads((ckpt / "codec.json").read_text())
  (w_d, w_p), calibration_note = weights_or_calibrate(info, args.variant, args.mode, codec, [decoded],
                                                      str(ckpt))
  cfg = config_from(vars(args), w_d=w_d, w_p=w_p)
  notes = [calibration_note] if calibration_note else []
  for note in notes + list(prior_notes(prior, header.height, header.width, cfg.mode)):
    print(note, file=sys.stderr)
  images = dcic_decode(codec, prior, [decoded], cfg, [p[0] for p in points], [p[1] for p in points],
                       chunk=args.chunk, progress=True)[:, 0]
  if args.grid is None:
    save_png(args.output, images[0])
    print(f"{args.output}: {header.width}x{header.height} DCIC K_D={points[0][0]:g} "
          f"K_P={points[0][1]:g} ({header.codec_id}, prior {prior.name})")
    return
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  files = []
  for (k_d, k_p), image in zip(points, images):
    name = f"{point_name(k_d, k_p)}.png"
    save_png(out_dir / name, image)
    files.append({"k_d": k_d, "k_p": k_p, "file": name})
  save_png(out_dir / "base.png", decoded.image)
  settings = {"input": str(args.input), "bytes": len(data), "checkpoint": str(ckpt), "prior": prior.name,
              "seed": header.seed, "prng": header.prng_impl, "dcic": dataclasses.asdict(cfg),
              "points": files}
  write_json(out_dir / "settings.json", settings, indent=2)
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


def build_parser() -> argparse.ArgumentParser:
  from dcic_jax.dcic.sampler import MODES, X0_VARS, DCICConfig
  defaults = DCICConfig()
  p = Parser(prog="python -m dcic_jax", description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("compress", help="image -> .dcic file")
  c.add_argument("input")
  c.add_argument("output")
  c.add_argument("--checkpoint", required=True, help="codec export directory (e.g. checkpoints/bmshj2018-q3: a shipped one unless that path exists here)")
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
  g.add_argument("--prior", default=None, help="diffusion prior: train workdir, [PRESET:]diffusers/guided-diffusion "
                 "checkpoint (presets: README), or analytic:STD (default: the shipped prior)")
  g.add_argument("--prior-flags", default=None, help="the checkpoint's flags its weights do not record, as a JSON "
                 "object or file (over its preset and sidecar <weights>.json)")
  g.add_argument("--steps", dest="num_steps", type=number(int, 1), default=defaults.num_steps, help="reverse steps N")
  g.add_argument("--start-step", type=number(int, 0), default=defaults.start_step, help="late start at step k (0: from noise)")
  g.add_argument("--spacing-power", type=number(low=1.0), default=defaults.spacing_power,
                 help="steps at (T-1)*(i/(N-1))^P: 1 evenly spaced (default), 2 quadratic, denser at low noise")
  g.add_argument("--eta", type=number(low=0.0), default=defaults.eta, help="DDIM eta of the sampler step")
  g.add_argument("--mode", choices=MODES, default=defaults.mode,
                 help="project (default: K = fraction of the way to each constraint), or the penalty "
                 "forms schedule / dps")
  g.add_argument("--ball", type=number(low=0.0), default=defaults.ball,
                 help="project: distortion set |x - x_b|^2 <= BALL * D_q (0: x_b itself)")
  g.add_argument("--margin", type=number(low=0.0), default=defaults.margin,
                 help="project: how far inside its cell the final projection puts each latent")
  g.add_argument("--cg-iters", type=number(int, 1), default=defaults.cg_iters, help="project: CG iterations per step")
  g.add_argument("--idem-draw", action=argparse.BooleanOptionalAction, default=defaults.idem_draw,
                 help="project: draw the latents from their truncated normals (posterior sampling) instead "
                 "of their mean")
  g.add_argument("--x0-var", choices=X0_VARS, default=defaults.x0_var,
                 help="project: Var[x0 | x_t] for Gaussian data of std --data-std (default), or the prior's "
                 "own estimate from its eps")
  g.add_argument("--data-std", type=number(low=0.0), default=defaults.data_std,
                 help="project, --x0-var gaussian: the data's std in [-1, 1] units")
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
  r = sub.add_parser("report", help="explorer page (DIR/report.html) of a decompress --grid --out-dir DIR")
  r.add_argument("dir")
  r.add_argument("--original", default=None, help="the original image: measure every point against it")
  r.set_defaults(fn=_report, max_pixels=None)
  for name, (module, _, text) in TOOLS.items():   # listed in --help; main() hands them their argv
    sub.add_parser(name, help=f"{text} (python -m {module})", add_help=False)
  return p


# name: (module, its entry point taking argv, one-line help). Each keeps its own `python -m` form.
TOOLS = {
    "run": ("dcic_jax.main", "cli_main", "the study: train, encode, decode, evaluate, report "
            "(--config=configs/NAME.py --workdir=DIR [--dry_run])"),
    "score": ("dcic_jax.score", "main", "metrics of a folder of reconstructions against the originals"),
    "train-codec": ("dcic_jax.main", "train_codec_main", "train (or resume) one codec and export it "
                    "(--config=configs/train_codec.py:ID,Q --workdir=DIR)"),
    "train-prior": ("dcic_jax.diffusion.train", "main", "train a diffusion prior on a folder of images"),
    "import-compressai": ("dcic_jax.codecs.compressai_import", "main",
                          "a CompressAI hyperprior checkpoint as a codec export"),
    "import-tcm": ("dcic_jax.codecs.tcm_import", "main",
                   "an official TCM checkpoint (jmliu206/LIC_TCM .pth.tar) as a codec export"),
    "import-prior": ("dcic_jax.diffusion.prior", "import_main",
                     "a diffusers / guided-diffusion checkpoint as a dcic_jax prior folder"),
    "calibrate": ("dcic_jax.dcic.calibrate", "main", "store w_D, w_P of the penalty modes in a codec export"),
    "convert-metric-weights": ("dcic_jax.metrics.perceptual", "main",
                               "LPIPS / Inception weights from their PyTorch files"),
    "prepare-dataset": ("dcic_jax.data.tfds_builders", "main", "build a dataset's array_record files"),
}


def _tool(name: str, argv: list[str]) -> int:
  import importlib  # pylint: disable=g-import-not-at-top
  module, entry, _ = TOOLS[name]
  try:
    return getattr(importlib.import_module(module), entry)(argv) or 0
  except UserError as e:
    return report(e)


def _report(args) -> None:
  from dcic_jax.report.explorer import write_grid_report
  print(f"{write_grid_report(args.dir, args.original)}: open it in a browser")


def _limit(text: str) -> int:
  try:
    return limits.parse(text, "the pixel limit")
  except UserError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if argv and argv[0] in TOOLS:
    return _tool(argv[0], argv[1:])
  return exit_code(_run, argv)


def _run(argv) -> None:
  args = build_parser().parse_args(argv)
  limits.configure(args.max_pixels)
  args.fn(args)


if __name__ == "__main__":
  sys.exit(main())
