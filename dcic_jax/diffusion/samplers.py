"""Unconstrained reverse-diffusion samplers: DDPM ancestral and DDIM(η).

Ho et al. 2020 (DDPM): ancestral sampling from the Gaussian posterior q(x_s | x_t, x̂0) with mean
  μ̃ = √ᾱ_s·β/(1−ᾱ_t)·x̂0 + √(ᾱ_t/ᾱ_s)·(1−ᾱ_s)/(1−ᾱ_t)·x_t and variance β̃ = (1−ᾱ_s)/(1−ᾱ_t)·β.
Song et al. 2021 (DDIM): x_s = √ᾱ_s·x̂0 + √(1−ᾱ_s−σ²)·ε + σ·z,
  σ = η·√((1−ᾱ_s)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_s); η = 1 is the DDPM posterior, η = 0 is deterministic.
Nichol & Dhariwal 2021 / Dhariwal & Nichol 2021: sampling on a respaced subset of steps, x̂0
clipped to [−1, 1] with ε re-derived from the clipped x̂0 (so x_t = √ᾱ_t·x̂0 + √(1−ᾱ_t)·ε still
holds and η = 1 stays exactly the posterior).

Noise convention (DESIGN §2, shared with the DCIC decoder): with N steps and one key, the start
noise is N(0, I) from `fold_in(key, N+1)` and step i (i = N … 1, t = τ_i, s = τ_{i−1}) draws
z_i from `fold_in(key, i)`. Samplers are factories returning pure, jittable
`sample(params, key, shape) -> x0_BHWC` written as one `jax.lax.scan`.
"""
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from dcic_jax.diffusion.schedules import Schedule

# eps_fn(params, x_t_BHWC, t_B) -> eps_BHWC
EpsFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
SampleFn = Callable[[Any, jax.Array, tuple[int, ...]], jax.Array]


def predict_x0(x_t: jax.Array, eps: jax.Array, alpha_bar_t: jax.Array,
               clip: bool = True) -> jax.Array:
  """x̂0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t, clipped to the image range [−1, 1]."""
  x0 = (x_t - jnp.sqrt(1.0 - alpha_bar_t) * eps) / jnp.sqrt(alpha_bar_t)
  return jnp.clip(x0, -1.0, 1.0) if clip else x0


def eps_from_x0(x_t: jax.Array, x0: jax.Array, alpha_bar_t: jax.Array) -> jax.Array:
  """The ε that makes x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε hold (inverse of `predict_x0`)."""
  return (x_t - jnp.sqrt(alpha_bar_t) * x0) / jnp.sqrt(1.0 - alpha_bar_t)


def _alpha_bars(schedule: Schedule, i: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(ᾱ_{τ_i}, ᾱ_{τ_{i−1}}) as float32 for the 1-based step index i (may be traced)."""
  ac = jnp.asarray(schedule.alphas_cumprod, jnp.float32)
  ac_prev = jnp.asarray(schedule.alphas_cumprod_prev, jnp.float32)
  return ac[i - 1], ac_prev[i - 1]


def ddim_sigma(alpha_bar_t: jax.Array, alpha_bar_s: jax.Array, eta: jax.Array) -> jax.Array:
  """σ_i = η·√((1−ᾱ_s)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_s)."""
  return eta * jnp.sqrt((1.0 - alpha_bar_s) / (1.0 - alpha_bar_t)) * \
      jnp.sqrt(jnp.maximum(1.0 - alpha_bar_t / alpha_bar_s, 0.0))


def ddim_step(x_t: jax.Array, eps: jax.Array, i: jax.Array, z: jax.Array, schedule: Schedule,
              eta: float | jax.Array = 0.0, clip_x0: bool = True) -> tuple[jax.Array, jax.Array]:
  """One DDIM(η) step from t = τ_i to s = τ_{i−1}; returns (x_s, x̂0).

  `i` is the 1-based step index (traced is fine), `eps` = ε_θ(x_t, τ_i), `z` ~ N(0, I) the step
  noise (unused when σ_i = 0). With clipping, ε is re-derived from the clipped x̂0.
  """
  alpha_bar_t, alpha_bar_s = _alpha_bars(schedule, i)
  x0 = predict_x0(x_t, eps, alpha_bar_t, clip=clip_x0)
  if clip_x0:
    eps = eps_from_x0(x_t, x0, alpha_bar_t)
  sigma = ddim_sigma(alpha_bar_t, alpha_bar_s, eta)
  x_s = (jnp.sqrt(alpha_bar_s) * x0 + jnp.sqrt(jnp.maximum(1.0 - alpha_bar_s - sigma**2, 0.0)) * eps
         + sigma * z)
  return x_s, x0


def ddpm_step(x_t: jax.Array, eps: jax.Array, i: jax.Array, z: jax.Array, schedule: Schedule,
              variance: str = "small", clip_x0: bool = True) -> tuple[jax.Array, jax.Array]:
  """One ancestral step x_s ~ N(μ̃(x_t, x̂0), σ²) from t = τ_i to s = τ_{i−1}; returns (x_s, x̂0).

  variance="small": σ² = β̃ (the posterior's, = DDIM η=1); "large": σ² = β (DDPM's σ_t² = β_t).
  No noise is added on the last step (i = 1), where x_s = x̂0.
  """
  alpha_bar_t, alpha_bar_s = _alpha_bars(schedule, i)
  beta = 1.0 - alpha_bar_t / alpha_bar_s
  x0 = predict_x0(x_t, eps, alpha_bar_t, clip=clip_x0)
  mean = (jnp.sqrt(alpha_bar_s) * beta / (1.0 - alpha_bar_t) * x0
          + jnp.sqrt(1.0 - beta) * (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * x_t)
  if variance == "small":
    var = beta * (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t)
  elif variance == "large":
    var = jnp.where(i > 1, beta, 0.0)
  else:
    raise ValueError(f"unknown DDPM variance {variance!r}: expected 'small' or 'large'")
  return mean + jnp.sqrt(var) * z, x0


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
  table_T = jnp.asarray(full_schedule.alphas_cumprod, jnp.float32)

  def eps_fn(params, x_t, t_B):
    del params
    alpha_bar = table_T[t_B][:, None, None, None]
    return jnp.sqrt(1.0 - alpha_bar) * x_t / (alpha_bar * data_std**2 + 1.0 - alpha_bar)

  return eps_fn
