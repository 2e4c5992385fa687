"""Quantisation proxies used in training and the exact rounding used at coding time."""
import jax
import jax.numpy as jnp


def round_ste(x: jax.Array) -> jax.Array:
  """Rounding with a straight-through (identity) gradient."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def add_uniform_noise(x: jax.Array, rng: jax.Array) -> jax.Array:
  """x + U(-0.5, 0.5): the differentiable proxy of rounding for rate estimation (Ballé 2017)."""
  return x + jax.random.uniform(rng, x.shape, x.dtype, -0.5, 0.5)


def quantize(x: jax.Array, mode: str, rng: jax.Array | None = None, offset: jax.Array | float = 0.0) -> jax.Array:
  """Quantise x around `offset` (a mean or a median): `noise`, `ste` or hard `round`."""
  if mode == "noise":
    return add_uniform_noise(x, rng)
  if mode == "ste":
    return round_ste(x - offset) + offset
  if mode == "round":
    return jnp.round(x - offset) + offset
  raise ValueError(f"unknown quantisation mode {mode!r} (expected noise, ste or round)")
