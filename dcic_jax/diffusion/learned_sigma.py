"""Learned σ (Nichol & Dhariwal 2021, Improved DDPM): the ancestral step with the prior's variance.

A learned-σ network outputs v ∈ [−1, 1] beside ε, and the step's variance is
log σ² = f·log β + (1−f)·log β̃ with f = (v+1)/2 (the "learned range"), per pixel. The mean is
the usual posterior mean given x̂0. The ADM, DPS and RePaint checkpoints are trained this way,
and the Idempotence decoder samples with it.
"""
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.diffusion.samplers import EpsFn, predict_x0, step_coefs
from dcic_jax.diffusion.schedules import Schedule


def learned_variance_fn(eps_fn: EpsFn) -> Callable[..., tuple[jax.Array, jax.Array]] | None:
  """`(params, x_t, t) -> (ε, v)` of a learned-σ prior (`unet.make_eps_fn`), else None."""
  return getattr(eps_fn, "eps_and_v", None)


def learned_log_variance_table(schedule: Schedule) -> np.ndarray:
  """[N, 2] float32 (log β̃_i clipped, log β_i) of the respaced chain, in float64 maths.

  Improved DDPM's learned range: log σ² = f·log β + (1−f)·log β̃ with f = (v+1)/2. β̃ is 0 at
  the last step (no noise is added there), so its log is taken from the step before, as ADM does.
  """
  ab, ab_s = schedule.alphas_cumprod, schedule.alphas_cumprod_prev
  beta = 1.0 - ab / ab_s
  tilde = beta * (1.0 - ab_s) / (1.0 - ab)
  if len(tilde) > 1:
    tilde = np.concatenate([tilde[1:2], tilde[1:]])
  else:
    tilde = beta.copy()  # a one-step chain adds no noise; any finite value will do
  return np.stack([np.log(tilde), np.log(beta)], axis=1).astype(np.float32)


def ddpm_learned_step(x_t: jax.Array, eps: jax.Array, v: jax.Array, i: jax.Array, z: jax.Array,
                      schedule: Schedule, clip_x0: bool = True) -> tuple[jax.Array, jax.Array]:
  """The ancestral step with the prior's own variance (learned σ); returns (x_s, x̂0).

  Same mean as `ddpm_step` (the posterior mean given x̂0); σ² interpolated per pixel between β̃
  and β by the network's v output. No noise on the last step (i = 1).
  """
  c = step_coefs(schedule, i)
  x0 = predict_x0(x_t, eps, c, clip=clip_x0)
  lo, hi = jnp.asarray(learned_log_variance_table(schedule))[i - 1]
  frac = (v.astype(jnp.float32) + 1.0) / 2.0
  std = jnp.where(i > 1, jnp.exp(0.5 * (frac * hi + (1.0 - frac) * lo)), 0.0)
  return c.ddpm_c_x0 * x0 + c.ddpm_c_xt * x_t + std * z, x0
