"""Building blocks of the learned transforms (Ballé et al. 2017/2018, Minnen et al. 2018).

Conventions: NHWC tensors; convolutions use PyTorch-style symmetric padding (k // 2) so that
CompressAI weights import unchanged; upsampling is a sub-pixel convolution (conv to 4·C
channels + depth-to-space), which is exactly as expressive as CompressAI's 5×5 stride-2
transposed convolution (see `codecs/compressai_import.py`) and 4–7× faster than
`nn.ConvTranspose` on CPU.
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def lower_bound(x: jax.Array, bound: float) -> jax.Array:
  """max(x, bound) whose gradient still pushes x up from below the bound.

  Plain `max` would zero the gradient below the bound and freeze the parameter there.
  """
  return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
  return jnp.maximum(x, bound), (x, bound)


def _lower_bound_bwd(res, g):
  x, bound = res
  pass_through = (x >= bound) | (g < 0)
  return (jnp.where(pass_through, g, 0.0).astype(x.dtype), None)


lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)

# Non-negative reparametrisation of GDN parameters (Ballé 2018): value = max(p, b)^2 - pedestal.
_PEDESTAL = 2.0**-36


def nonneg_param(p: jax.Array, minimum: float = 0.0) -> jax.Array:
  bound = (minimum + _PEDESTAL) ** 0.5
  return lower_bound(p, bound) ** 2 - _PEDESTAL


def nonneg_init(value: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.maximum(value + _PEDESTAL, _PEDESTAL))


class GDN(nn.Module):
  """Generalized divisive normalisation: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2).

  `inverse=True` gives IGDN (multiply instead of divide), used in the synthesis transform.
  """
  inverse: bool = False
  beta_min: float = 1e-6
  gamma_init: float = 0.1

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    c = x_BHWC.shape[-1]
    beta_p = self.param("beta", lambda _, s: nonneg_init(jnp.ones(s)), (c,))
    gamma_p = self.param("gamma", lambda _, s: nonneg_init(self.gamma_init * jnp.eye(s[0])), (c, c))
    beta = nonneg_param(beta_p, self.beta_min)
    gamma = nonneg_param(gamma_p)  # [C_out, C_in]
    norm = jnp.einsum("...j,ij->...i", x_BHWC**2, gamma) + beta
    return x_BHWC * jnp.sqrt(norm) if self.inverse else x_BHWC * jax.lax.rsqrt(norm)


def kernel_init(key, shape, dtype=jnp.float32):
  """Flax's default LeCun-normal conv init, drawn as a 2-D [fan_in, out] array and reshaped.

  Same distribution; XLA on CPU compiles 4-D threefry draws several times slower.
  """
  fan_in = math.prod(shape[:-1])
  return nn.initializers.lecun_normal()(key, (fan_in, shape[-1]), dtype).reshape(shape)


def same_padding(kernel: int) -> tuple[int, int]:
  """(before, after) padding of a stride-1 'same' conv: k // 2 on both sides for odd k (PyTorch's
  padding), one more after than before for even k (a 2×2 sub-pixel kernel: (0, 1))."""
  return (kernel - 1) // 2, kernel // 2


def conv(features: int, kernel: int = 5, stride: int = 2, name: str | None = None) -> nn.Conv:
  """Conv with PyTorch padding (k // 2 on every side): ceil(H / stride) outputs for odd k."""
  p = same_padding(kernel)
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=(p, p),
                 kernel_init=kernel_init, name=name)


def depth_to_space(x_BHWC: jax.Array, r: int = 2) -> jax.Array:
  """[B, H, W, r*r*C] -> [B, r*H, r*W, C]; channel index (a*r + b)*C + c lands at (r*h+a, r*w+b)."""
  b, h, w, rrc = x_BHWC.shape
  c = rrc // (r * r)
  x = x_BHWC.reshape(b, h, w, r, r, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * r, w * r, c)


class Upsample(nn.Module):
  """2× upsampling by a k×k conv to 4·C channels followed by depth-to-space.

  k = 3 holds CompressAI's 5×5 stride-2 transposed conv exactly (their weights map onto it);
  k = 2 is the 4×4 transposed conv, with 16/36 of the weights: small models for a size budget.
  """
  features: int
  kernel: int = 3

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return depth_to_space(conv(4 * self.features, self.kernel, 1, name="conv")(x_BHWC), 2)


def activation(name: str) -> Any:
  return {"relu": nn.relu, "leaky_relu": lambda x: nn.leaky_relu(x, 0.01), "none": lambda x: x}[name]


def space_to_depth(x_BHWC: jax.Array, r: int = 2) -> jax.Array:
  """[B, r*H, r*W, C] -> [B, H, W, r*r*C]; the inverse of `depth_to_space`."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // r, r, w // r, r, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // r, w // r, r * r * c)
