"""A diffusion prior as a value: ε_θ, its parameters and its full T-step schedule.

`load_prior(spec)` understands
  * a workdir of `python -m dcic_jax.diffusion.train` (its `prior/` folder, EMA weights), or a
    folder written by its `--export` (`prior_config.json` + `params/`, like `checkpoints/prior`),
  * a PyTorch checkpoint, `[PRESET:]PATH`: a diffusers `UNet2DModel` folder / .safetensors /
    .bin, or a guided-diffusion `.pt` (converted on load by `diffusion/convert.py`), with the
    flags its state dict does not record from a preset, a sidecar or `flags`
    (`diffusion/presets.py`; missing ones are refused, not guessed),
  * `analytic:STD` — the exact ε of N(0, STD²·I) data (`samplers.gaussian_eps_fn`), a
    network-free prior for tests and the analytic rate–distortion–perception checks.
"""
import dataclasses
import os
from typing import Any

from dcic_jax.diffusion import learned_sigma, samplers, schedules
from dcic_jax.errors import UserError

def shipped_prior() -> str:
  """The shipped prior's export folder (checkpoints/prior; `assets.py` finds it)."""
  from dcic_jax import assets  # pylint: disable=g-import-not-at-top
  return str(assets.shipped("checkpoints/prior"))


@dataclasses.dataclass(frozen=True, eq=False)
class Prior:
  name: str
  eps_fn: samplers.EpsFn        # eps_fn(params, x_t_BHWC, t_B) -> eps_BHWC
  params: Any
  schedule: schedules.Schedule  # the full T-step schedule it was trained with
  size_multiple: int = 1        # image sides must be multiples of this (UNet down-sampling)
  resolution: int | None = None  # the training resolution, where known (a size check warns)

  @property
  def learned_variance(self) -> bool:
    """Whether ε_θ also predicts its variance (learned σ, `learned_sigma.learned_variance_fn`)."""
    return learned_sigma.learned_variance_fn(self.eps_fn) is not None


_SCHEDULE_NAMES = {"linear": "linear", "cosine": "cosine", "squaredcos_cap_v2": "cosine"}


def _schedule_of(flags: dict, where: str) -> tuple[str, int]:
  """(kind, T) of the training schedule named by a checkpoint's flags; refused when not recorded."""
  missing = [k for k in ("noise_schedule", "diffusion_steps") if k not in flags]
  if missing:
    raise UserError(f"{where}: {' and '.join(missing)} not known (a state dict does not record "
                    "its noise schedule): name a preset (PRESET:PATH), write them to a sidecar "
                    "<weights>.json, or pass --prior-flags '{\"noise_schedule\": \"linear\", "
                    "\"diffusion_steps\": 1000}'")
  kind = _SCHEDULE_NAMES.get(str(flags["noise_schedule"]))
  if kind is None:
    raise UserError(f"{where}: noise_schedule {flags['noise_schedule']!r} is not supported "
                    f"(expected one of {', '.join(_SCHEDULE_NAMES)})")
  return kind, int(flags["diffusion_steps"])


def load_prior(spec: str | None, flags: Any = None) -> Prior:
  """The prior named by `spec` (see the module docstring); None: the shipped one.

  `flags`: the checkpoint's flags (`--prior-flags` / `config.dcic.prior_flags`; a dict, JSON
  text or a JSON file), over its preset and sidecar.
  """
  if spec is None:
    spec = shipped_prior()
    if not os.path.isdir(spec):
      raise UserError(f"no diffusion prior: none is shipped in {spec}; pass --prior "
                      "DIR (a `python -m dcic_jax.diffusion.train` workdir), a diffusers/"
                      "guided-diffusion checkpoint file, or analytic:STD")
  if spec.startswith("analytic:"):
    try:
      std = float(spec.split(":", 1)[1])
    except ValueError:
      raise UserError(f"bad analytic prior {spec!r}: expected analytic:STD, e.g. analytic:0.5") from None
    if not std > 0:
      raise UserError(f"analytic prior needs STD > 0, got {std}")
    full = schedules.make_schedule("linear", 1000)
    return Prior(spec, samplers.gaussian_eps_fn(std, full), None, full)
  from dcic_jax.diffusion import presets
  resolved = presets.resolve(spec, flags)
  if not os.path.exists(resolved.path):
    what = f" (preset {resolved.preset}: {presets.PRESETS[resolved.preset].weights})" \
        if resolved.preset else ""
    raise UserError(f"diffusion prior not found: {resolved.path}{what}")
  from dcic_jax.diffusion import unet
  from dcic_jax.diffusion import prior_files
  resolution = None
  if resolved.preset or resolved.flags:
    if prior_files.is_exported_prior(spec) or os.path.isdir(os.path.join(spec, "prior")):
      raise UserError(f"{spec} is a dcic_jax prior: it records its own configuration (drop the "
                      "preset / prior flags)")
  if prior_files.is_exported_prior(spec):
    cfg, params, full, resolution = prior_files.load_exported_prior(spec)
  elif os.path.isdir(os.path.join(spec, "prior")):
    try:
      cfg, params, full = prior_files.load_trained_prior(spec)
    except FileNotFoundError as e:
      raise UserError(str(e)) from None
  else:
    cfg, params, meta = _load_pytorch(resolved)
    full, resolution = schedules.make_schedule(meta["schedule"], meta["num_timesteps"]), meta["resolution"]
  return Prior(spec, unet.make_eps_fn(unet.UNet(cfg)), params, full, cfg.size_multiple,
               resolution)


def _load_pytorch(resolved) -> tuple[Any, Any, dict]:
  """(UNetConfig, params, {"schedule", "num_timesteps", "resolution", "source"}) of a PyTorch
  checkpoint resolved by `presets.resolve`."""
  from dcic_jax.diffusion.convert import load_pytorch_prior
  try:
    cfg, params, used = load_pytorch_prior(resolved.path, resolved)
  except (FileNotFoundError, KeyError, ValueError) as e:
    raise UserError(f"cannot load a diffusion prior from {resolved.path}: {e}") from None
  kind, steps = _schedule_of(used, resolved.path)
  size = used.get("image_size", used.get("sample_size"))
  return cfg, params, dict(schedule=kind, num_timesteps=steps,
                           resolution=int(size) if isinstance(size, (int, float)) else None,
                           source=(f"{resolved.preset}:" if resolved.preset else "")
                           + os.path.basename(os.path.normpath(resolved.path)))


def import_prior(spec: str, out_dir: str, flags: Any = None) -> str:
  """Convert a PyTorch prior checkpoint (`[PRESET:]PATH` + `flags`, as `load_prior` takes it) once
  into a dcic_jax prior folder (`prior_files.write_prior`): loading that needs neither torch nor
  the flags, and is faster. Returns the folder."""
  from dcic_jax.diffusion import presets, prior_files
  resolved = presets.resolve(spec, flags)
  if not os.path.exists(resolved.path):
    raise UserError(f"diffusion prior not found: {resolved.path}")
  if prior_files.is_exported_prior(resolved.path) or os.path.isdir(os.path.join(resolved.path, "prior")):
    raise UserError(f"{resolved.path} is already a dcic_jax prior (use it as it is)")
  cfg, params, meta = _load_pytorch(resolved)
  return prior_files.write_prior(out_dir, cfg, params, meta)


def import_main(argv=None) -> int:
  """`dcic import-prior [PRESET:]PATH --out DIR [--prior-flags JSON]`."""
  from dcic_jax.argtypes import Parser
  from dcic_jax.errors import exit_code
  p = Parser(prog="dcic import-prior", description="convert a diffusers / guided-diffusion "
             "checkpoint into a dcic_jax prior folder (then --prior DIR needs no torch or flags)")
  p.add_argument("checkpoint", help="[PRESET:]PATH, as --prior takes it (presets: README)")
  p.add_argument("--out", required=True, help="the prior folder to write")
  p.add_argument("--prior-flags", default=None, help="flags the weights do not record (JSON object or file)")

  def run(args):
    out = import_prior(args.checkpoint, args.out, args.prior_flags)
    print(f"wrote {out}: use it with --prior {out}")
  return exit_code(lambda: run(p.parse_args(argv)))


def check_image_size(prior: Prior, height: int, width: int) -> str | None:
  """A one-line note when images differ from the prior's training resolution, else None.

  A convolutional prior runs at any size, but away from its training resolution it is out of
  distribution (and a larger image costs more per step): the paper's protocol matches them.
  """
  if prior.resolution is None or (height, width) == (prior.resolution, prior.resolution):
    return None
  return (f"note: images are {height}x{width}, the prior {prior.name} was trained on "
          f"{prior.resolution}x{prior.resolution}: resize/crop to it (eval.resize_short, "
          "eval.crop) for the paper's protocol")


def variance_note(prior: Prior, mode: str) -> str | None:
  """A one-line note when the decoder's steps cannot use the prior's learned variance."""
  if not prior.learned_variance or mode == "dps":
    return None
  return (f"note: the prior has a learned variance; the {mode} mode's DDIM(eta) steps use the "
          "fixed one (the dps mode's ancestral steps use the learned one)")


def notes(prior: Prior, height: int, width: int, mode: str) -> list[str]:
  """The one-line notes a decode with this prior deserves (image size, learned variance)."""
  return [n for n in (check_image_size(prior, height, width), variance_note(prior, mode)) if n]
