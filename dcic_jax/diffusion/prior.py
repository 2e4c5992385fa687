"""A diffusion prior as a value: ε_θ, its parameters and its full T-step schedule.

`load_prior(spec)` understands
  * a workdir of `python -m dcic_jax.diffusion.train` (its `prior/` folder, EMA weights), or a
    folder written by its `--export` (`prior_config.json` + `params/`, like `checkpoints/prior`),
  * a PyTorch checkpoint: a diffusers `UNet2DModel` folder / .safetensors / .bin, or a
    guided-diffusion `.pt` (converted on load by `diffusion/convert.py`; linear β, T = 1000),
  * `analytic:STD` — the exact ε of N(0, STD²·I) data (`samplers.gaussian_eps_fn`), a
    network-free prior for tests and the analytic rate–distortion–perception checks.
"""
import dataclasses
import os
from typing import Any

from dcic_jax.diffusion import samplers, schedules
from dcic_jax.errors import UserError

SHIPPED_PRIOR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "checkpoints", "prior")


@dataclasses.dataclass(frozen=True, eq=False)
class Prior:
  name: str
  eps_fn: samplers.EpsFn        # eps_fn(params, x_t_BHWC, t_B) -> eps_BHWC
  params: Any
  schedule: schedules.Schedule  # the full T-step schedule it was trained with
  size_multiple: int = 1        # image sides must be multiples of this (UNet down-sampling)


def load_prior(spec: str | None) -> Prior:
  """The prior named by `spec` (see the module docstring); None: the shipped one."""
  if spec is None:
    if not os.path.isdir(SHIPPED_PRIOR):
      raise UserError(f"no diffusion prior: none is shipped in {SHIPPED_PRIOR}; pass --prior "
                      "DIR (a `python -m dcic_jax.diffusion.train` workdir), a diffusers/"
                      "guided-diffusion checkpoint file, or analytic:STD")
    spec = SHIPPED_PRIOR
  if spec.startswith("analytic:"):
    try:
      std = float(spec.split(":", 1)[1])
    except ValueError:
      raise UserError(f"bad analytic prior {spec!r}: expected analytic:STD, e.g. analytic:0.5") from None
    if not std > 0:
      raise UserError(f"analytic prior needs STD > 0, got {std}")
    full = schedules.make_schedule("linear", 1000)
    return Prior(spec, samplers.gaussian_eps_fn(std, full), None, full)
  if not os.path.exists(spec):
    raise UserError(f"diffusion prior not found: {spec}")
  from dcic_jax.diffusion import unet
  from dcic_jax.diffusion import train
  if train.is_exported_prior(spec):
    cfg, params, full = train.load_exported_prior(spec)
  elif os.path.isdir(os.path.join(spec, "prior")):
    try:
      cfg, params, full = train.load_trained_prior(spec)
    except FileNotFoundError as e:
      raise UserError(str(e)) from None
  else:
    from dcic_jax.diffusion.convert import load_pytorch_prior
    try:
      cfg, params = load_pytorch_prior(spec)
    except (FileNotFoundError, KeyError, ValueError) as e:
      raise UserError(f"cannot load a diffusion prior from {spec}: {e}") from None
    full = schedules.make_schedule("linear", 1000)
  return Prior(spec, unet.make_eps_fn(unet.UNet(cfg)), params, full, cfg.size_multiple)
