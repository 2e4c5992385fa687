"""The ε-prediction training loss of the diffusion prior.

Ho et al. 2020 (DDPM), "L_simple": t ~ Uniform{0, …, T−1}, ε ~ N(0, I),
x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε, loss = E‖ε − ε_θ(x_t, t)‖² (mean over pixels). Nichol & Dhariwal
2021 add a variational term for a learned σ; our samplers only use ε (fixed σ), so a learned-σ
network trained here just ignores its σ half.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# apply_fn(params, x_t_BHWC, t_B, dropout_key) -> eps_BHWC
ApplyFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]


def q_sample(x0_BHWC: jax.Array, t_B: jax.Array, eps_BHWC: jax.Array,
             alphas_cumprod_T: jax.Array) -> jax.Array:
  """Draw x_t ~ q(x_t | x0) = N(√ᾱ_t·x0, (1−ᾱ_t)·I) with the given noise."""
  alpha_bar = alphas_cumprod_T[t_B][:, None, None, None]
  return jnp.sqrt(alpha_bar) * x0_BHWC + jnp.sqrt(1.0 - alpha_bar) * eps_BHWC


def eps_loss(apply_fn: ApplyFn, params: Any, x0_BHWC: jax.Array, key: jax.Array,
             alphas_cumprod_T: np.ndarray | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_simple on a batch of images in [−1, 1]; returns (loss, metrics)."""
  alphas_cumprod_T = jnp.asarray(alphas_cumprod_T, jnp.float32)
  t_key, eps_key, dropout_key = jax.random.split(key, 3)
  b = x0_BHWC.shape[0]
  t_B = jax.random.randint(t_key, (b,), 0, alphas_cumprod_T.shape[0])
  # Flat draw, reshaped: the same numbers as a shaped draw, compiled much faster on CPU.
  eps_BHWC = jax.random.normal(eps_key, (x0_BHWC.size,), jnp.float32).reshape(x0_BHWC.shape)
  x_t = q_sample(x0_BHWC, t_B, eps_BHWC, alphas_cumprod_T)
  eps_pred = apply_fn(params, x_t, t_B, dropout_key)
  loss_B = jnp.mean(jnp.square(eps_pred - eps_BHWC), axis=(1, 2, 3))
  return jnp.mean(loss_B), {"loss": jnp.mean(loss_B)}
