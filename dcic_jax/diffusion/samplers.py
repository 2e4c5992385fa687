"""Unconstrained reverse-diffusion samplers: DDPM ancestral and DDIM(η).

Ho et al. 2020 (DDPM): ancestral sampling from the Gaussian posterior q(x_s | x_t, x̂0) with mean
  μ̃ = √ᾱ_s·β/(1−ᾱ_t)·x̂0 + √(ᾱ_t/ᾱ_s)·(1−ᾱ_s)/(1−ᾱ_t)·x_t and variance β̃ = (1−ᾱ_s)/(1−ᾱ_t)·β.
Song et al. 2021 (DDIM): x_s = √ᾱ_s·x̂0 + √(1−ᾱ_s−σ²)·ε + σ·z,
  σ = η·√((1−ᾱ_s)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_s); η = 1 is the DDPM posterior, η = 0 is deterministic.
Nichol & Dhariwal 2021 / Dhariwal & Nichol 2021: sampling on a respaced subset of steps, x̂0
clipped to [−1, 1] with ε re-derived from the clipped x̂0 (so x_t = √ᾱ_t·x̂0 + √(1−ᾱ_t)·ε still
holds and η = 1 stays exactly the posterior).

Every per-step scalar (√ᾱ, 1/√ᾱ, σ, …) comes from a float64 host table and arrays are only
multiplied by them: computed on the device, XLA rewrites 1/√ᾱ into an approximate rsqrt in an
unsharded program but not in a sharded one (1-ulp differences, measured), and a decode must give
the same bits on 1 and on many devices.

Noise convention (docs/design.md §2, shared with the DCIC decoder): with N steps and one key, the start
noise is N(0, I) from `fold_in(key, N+1)` and step i (i = N … 1, t = τ_i, s = τ_{i−1}) draws
z_i from `fold_in(key, i)`. Samplers are factories returning pure, jittable
`sample(params, key, shape) -> x0_BHWC` written as one `jax.lax.scan`.
"""
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.diffusion.schedules import Schedule

# eps_fn(params, x_t_BHWC, t_B) -> eps_BHWC
EpsFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
SampleFn = Callable[[Any, jax.Array, tuple[int, ...]], jax.Array]


class StepCoefs(NamedTuple):
  """The float32 scalars of step i (t = τ_i, s = τ_{i−1}), computed in float64 on the host."""
  sqrt_ab_t: jax.Array         # √ᾱ_t
  sqrt_1m_ab_t: jax.Array      # √(1−ᾱ_t)
  inv_sqrt_ab_t: jax.Array     # 1/√ᾱ_t
  inv_sqrt_1m_ab_t: jax.Array  # 1/√(1−ᾱ_t)
  ab_s: jax.Array              # ᾱ_s
  sqrt_ab_s: jax.Array         # √ᾱ_s
  sigma_ddim1: jax.Array       # σ_i of DDIM at η = 1: √((1−ᾱ_s)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_s)
  ddpm_c_x0: jax.Array         # posterior mean = c_x0·x̂0 + c_xt·x_t
  ddpm_c_xt: jax.Array
  ddpm_std_small: jax.Array    # √β̃ (posterior variance)
  ddpm_std_large: jax.Array    # √β, 0 on the last step


def _sigma_ddim1(schedule: Schedule) -> np.ndarray:
  """[N] float64 σ_i of DDIM at η = 1: √((1−ᾱ_s)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_s)."""
  ab, ab_s = schedule.alphas_cumprod, schedule.alphas_cumprod_prev
  return np.sqrt((1.0 - ab_s) / (1.0 - ab)) * np.sqrt(np.maximum(1.0 - ab / ab_s, 0.0))


def coefficient_table(schedule: Schedule) -> np.ndarray:
  """[N, len(StepCoefs)] float32: row i−1 holds step i's coefficients (float64 maths)."""
  ab, ab_s = schedule.alphas_cumprod, schedule.alphas_cumprod_prev
  beta = 1.0 - ab / ab_s
  large = np.where(np.arange(len(ab)) > 0, beta, 0.0)
  cols = (np.sqrt(ab), np.sqrt(1.0 - ab), 1.0 / np.sqrt(ab), 1.0 / np.sqrt(1.0 - ab), ab_s,
          np.sqrt(ab_s), _sigma_ddim1(schedule),
          np.sqrt(ab_s) * beta / (1.0 - ab), np.sqrt(1.0 - beta) * (1.0 - ab_s) / (1.0 - ab),
          np.sqrt(beta * (1.0 - ab_s) / (1.0 - ab)), np.sqrt(large))
  return np.stack(cols, axis=1).astype(np.float32)


def step_coefs(schedule: Schedule, i: jax.Array) -> StepCoefs:
  """Step i's coefficients (1-based i, may be traced): one row gathered from the host table."""
  return StepCoefs(*jnp.asarray(coefficient_table(schedule))[i - 1])


def predict_x0(x_t: jax.Array, eps: jax.Array, c: StepCoefs, clip: bool = True) -> jax.Array:
  """x̂0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t, clipped to the image range [−1, 1]."""
  x0 = (x_t - c.sqrt_1m_ab_t * eps) * c.inv_sqrt_ab_t
  return jnp.clip(x0, -1.0, 1.0) if clip else x0


def eps_from_x0(x_t: jax.Array, x0: jax.Array, c: StepCoefs) -> jax.Array:
  """The ε that makes x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε hold (inverse of `predict_x0`)."""
  return (x_t - c.sqrt_ab_t * x0) * c.inv_sqrt_1m_ab_t


def _ddim_noise_coefs(schedule: Schedule, i: jax.Array, c: StepCoefs,
                     eta: float | jax.Array) -> tuple[jax.Array, jax.Array]:
  """(σ_i, √(1−ᾱ_s−σ_i²)): from the float64 table for a Python η, on the device for a traced one."""
  if isinstance(eta, (int, float)):
    sigma = eta * _sigma_ddim1(schedule)
    c_eps = np.sqrt(np.maximum(1.0 - schedule.alphas_cumprod_prev - sigma**2, 0.0))
    table = jnp.asarray(np.stack([sigma, c_eps], axis=1).astype(np.float32))[i - 1]
    return table[0], table[1]
  sigma = eta * c.sigma_ddim1
  return sigma, jnp.sqrt(jnp.maximum(1.0 - c.ab_s - sigma**2, 0.0))


def _ddim_combine(x0: jax.Array, eps: jax.Array, c: StepCoefs, noise_coefs, z: jax.Array) -> jax.Array:
  sigma, c_eps = noise_coefs
  return c.sqrt_ab_s * x0 + c_eps * eps + sigma * z


def ddim_step(x_t: jax.Array, eps: jax.Array, i: jax.Array, z: jax.Array, schedule: Schedule,
              eta: float | jax.Array = 0.0, clip_x0: bool = True) -> tuple[jax.Array, jax.Array]:
  """One DDIM(η) step from t = τ_i to s = τ_{i−1}; returns (x_s, x̂0).

  `i` is the 1-based step index (traced is fine), `eps` = ε_θ(x_t, τ_i), `z` ~ N(0, I) the step
  noise (unused when σ_i = 0). With clipping, ε is re-derived from the clipped x̂0.
  """
  c = step_coefs(schedule, i)
  x0 = predict_x0(x_t, eps, c, clip=clip_x0)
  if clip_x0:
    eps = eps_from_x0(x_t, x0, c)
  return _ddim_combine(x0, eps, c, _ddim_noise_coefs(schedule, i, c, eta), z), x0


def ddim_step_from_x0(x_t: jax.Array, x0: jax.Array, i: jax.Array, z: jax.Array,
                      schedule: Schedule, eta: float | jax.Array = 0.0) -> jax.Array:
  """The DDIM(η) step for a given x̂0 (ε re-derived from it): what `ddim_step` does after clipping."""
  c = step_coefs(schedule, i)
  return _ddim_combine(x0, eps_from_x0(x_t, x0, c), c, _ddim_noise_coefs(schedule, i, c, eta), z)


def ddpm_step(x_t: jax.Array, eps: jax.Array, i: jax.Array, z: jax.Array, schedule: Schedule,
              variance: str = "small", clip_x0: bool = True) -> tuple[jax.Array, jax.Array]:
  """One ancestral step x_s ~ N(μ̃(x_t, x̂0), σ²) from t = τ_i to s = τ_{i−1}; returns (x_s, x̂0).

  variance="small": σ² = β̃ (the posterior's, = DDIM η=1); "large": σ² = β (DDPM's σ_t² = β_t).
  No noise is added on the last step (i = 1), where x_s = x̂0.
  """
  if variance not in ("small", "large"):
    raise ValueError(f"unknown DDPM variance {variance!r}: expected 'small' or 'large'")
  c = step_coefs(schedule, i)
  x0 = predict_x0(x_t, eps, c, clip=clip_x0)
  std = c.ddpm_std_small if variance == "small" else c.ddpm_std_large
  return c.ddpm_c_x0 * x0 + c.ddpm_c_xt * x_t + std * z, x0


def step_noise(key: jax.Array, i: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """z_i: the standard normal noise of step i (i = N+1 is the start noise x_T).

  Drawn flat and reshaped: bit-identical to a shaped draw, and much faster to compile on CPU.
  """
  z = jax.random.normal(jax.random.fold_in(key, i), (math.prod(shape),), jnp.float32)
  return z.reshape(shape)


def _make_sampler(eps_fn: EpsFn, schedule: Schedule,
                  step_fn: Callable[..., tuple[jax.Array, jax.Array]]) -> SampleFn:
  n = schedule.num_steps
  timesteps = jnp.asarray(schedule.timesteps, jnp.int32)

  def sample(params: Any, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    x_T = step_noise(key, n + 1, shape)

    def body(x_t, i):
      t_B = jnp.full((shape[0],), timesteps[i - 1], jnp.int32)
      eps = eps_fn(params, x_t, t_B)
      x_s, _ = step_fn(x_t, eps, i, step_noise(key, i, shape))
      return x_s, None

    x_0, _ = jax.lax.scan(body, x_T, jnp.arange(n, 0, -1, dtype=jnp.int32))
    return x_0  # at i = 1, ᾱ_s = 1 so x_0 is x̂0 of the last step

  return sample


def make_ddim_sampler(eps_fn: EpsFn, schedule: Schedule, eta: float = 0.0,
                      clip_x0: bool = True) -> SampleFn:
  """DDIM(η) over the schedule's N steps: `sample(params, key, shape[B,H,W,C]) -> x0`."""
  return _make_sampler(eps_fn, schedule,
                       lambda x_t, eps, i, z: ddim_step(x_t, eps, i, z, schedule, eta, clip_x0))


def make_ddpm_sampler(eps_fn: EpsFn, schedule: Schedule, variance: str = "small",
                      clip_x0: bool = True) -> SampleFn:
  """DDPM ancestral sampling over the schedule's N steps (N = T, or respaced as ADM)."""
  if variance not in ("small", "large"):
    raise ValueError(f"unknown DDPM variance {variance!r}: expected 'small' or 'large'")
  return _make_sampler(eps_fn, schedule,
                       lambda x_t, eps, i, z: ddpm_step(x_t, eps, i, z, schedule, variance,
                                                        clip_x0))


def gaussian_eps_fn(data_std: float, full_schedule: Schedule) -> EpsFn:
  """Exact ε*(x_t, t) = E[ε | x_t] when the data are N(0, data_std²·I): an analytic prior.

  x_t = √ᾱ·x0 + √(1−ᾱ)·ε is then Gaussian and ε* = √(1−ᾱ)·x_t/(ᾱ·std² + 1 − ᾱ). Used by the
  tests and the analytic-prior checks; `params` is ignored. `full_schedule` is the T-step
  schedule (`make_schedule`) in which the sampler's timesteps t are looked up.
  """
  ab = full_schedule.alphas_cumprod
  coef_T = jnp.asarray(np.sqrt(1.0 - ab) / (ab * data_std**2 + 1.0 - ab), jnp.float32)

  def eps_fn(params, x_t, t_B):
    del params
    return coef_T[t_B][:, None, None, None] * x_t

  return eps_fn
