"""Building blocks of the learned transforms (Ballé et al. 2017/2018, Minnen et al. 2018).

Conventions: NHWC tensors; convolutions use PyTorch-style symmetric padding (k // 2) so that
CompressAI weights import unchanged; upsampling is a sub-pixel convolution (conv to 4·C
channels + depth-to-space), which is exactly as expressive as CompressAI's 5×5 stride-2
transposed convolution (see `codecs/compressai_import.py`) and 4–7× faster than
`nn.ConvTranspose` on CPU. When a kernel holds such a transposed conv (imported weights), its
zero taps can be skipped at apply time (`transposed_taps`, `phase_conv`).
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


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


def conv(features: int, kernel: int = 5, stride: int = 2, name: str | None = None, conv_fn=None) -> nn.Conv:
  """Conv with PyTorch padding (k // 2 on every side): ceil(H / stride) outputs for odd k.

  `conv_fn` replaces `lax.conv_general_dilated` (same arguments), e.g. `phase_conv`.
  """
  p = same_padding(kernel)
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=(p, p),
                 kernel_init=kernel_init, name=name, conv_general_dilated=conv_fn)


def depth_to_space(x_BHWC: jax.Array, r: int = 2) -> jax.Array:
  """[B, H, W, r*r*C] -> [B, r*H, r*W, C]; channel index (a*r + b)*C + c lands at (r*h+a, r*w+b)."""
  b, h, w, rrc = x_BHWC.shape
  c = rrc // (r * r)
  x = x_BHWC.reshape(b, h, w, r, r, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * r, w * r, c)


FEW_OUTPUTS = 8  # output channels per phase up to which `phase_conv` sums tap products, not convs


def transposed_taps(kernel) -> bool:
  """Whether a 3×3 sub-pixel kernel [3, 3, in, 4·out] holds a 5×5 stride-2 transposed conv.

  Such a kernel (CompressAI's upsampling, `compressai_import.deconv_kernel`) is exactly 0 on the
  first row of taps for the odd output rows and on the first column for the odd output columns:
  11 of the 36 taps per pixel, which `phase_conv` skips.
  """
  k = np.asarray(kernel)
  if k.ndim != 4 or k.shape[:2] != (3, 3) or k.shape[3] % 4:
    return False
  k = k.reshape(3, 3, k.shape[2], 2, 2, k.shape[3] // 4)  # [dh, dw, in, a, b, out]
  return not k[0, :, :, 1].any() and not k[:, 0, :, :, 1].any()


def phase_kernels(kernel) -> list:
  """[((a, b), kernel_ab)] of a 3×3 sub-pixel kernel with `transposed_taps`: per output phase
  (a, b), in the channel order `depth_to_space` reads, the slice of its nonzero taps (dh ≥ a,
  dw ≥ b; tap d reads input offset d - 1) and of its output channels. NumPy or jax arrays."""
  c = kernel.shape[-1] // 4
  return [((a, b), kernel[a:, b:, :, (2 * a + b) * c:(2 * a + b + 1) * c]) for a in (0, 1) for b in (0, 1)]


def phase_conv(lhs, rhs, window_strides, padding, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated` (NHWC, HWIO) of a stride-1 3×3 sub-pixel kernel with `transposed_taps`.

  Each output phase (a, b) uses only its nonzero taps (3×3, 3×2, 2×3, 2×2: 25 of the 36
  multiply-adds per pixel, as the transposed conv itself); the phases come out concatenated in the
  channel order `depth_to_space` reads. Tap d reads input offset d - 1.
  """
  assert rhs.shape[:2] == (3, 3) and tuple(window_strides) == (1, 1) and tuple(map(tuple, padding)) == ((1, 1),) * 2
  by_phase = phase_kernels(rhs)
  if rhs.shape[-1] // 4 > FEW_OUTPUTS:
    return jnp.concatenate([jax.lax.conv_general_dilated(lhs, k, (1, 1), ((1 - a, 1), (1 - b, 1)), **kwargs)
                            for (a, b), k in by_phase], axis=-1)
  # Few outputs (g_s's last layer: RGB), where XLA's conv kernels are slow: one matrix product of
  # every pixel with the weights of all 25 (tap, phase) pairs, then per phase the sum of its taps'
  # shifted slices of that product.
  t = jnp.einsum("bhwi,tic->bhwtc", lhs, jnp.concatenate([k.reshape(-1, *k.shape[2:]) for _, k in by_phase]))
  t = jnp.pad(t, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0)))  # tap (dh, dw) of output (h, w): t[h + dh, w + dw]
  h, w = lhs.shape[1:3]
  outs, n = [], 0
  for (a, b), _ in by_phase:
    taps = [(dh, dw) for dh in range(a, 3) for dw in range(b, 3)]
    outs.append(sum(t[:, dh:dh + h, dw:dw + w, n + i] for i, (dh, dw) in enumerate(taps)))
    n += len(taps)
  return jnp.concatenate(outs, axis=-1)


class Upsample(nn.Module):
  """2× upsampling by a k×k conv to 4·C channels followed by depth-to-space.

  k = 3 holds CompressAI's 5×5 stride-2 transposed conv exactly (their weights map onto it);
  k = 2 is the 4×4 transposed conv, with 16/36 of the weights: small models for a size budget.
  `transposed=True` (only for a kernel with `transposed_taps`) computes the same output with
  `phase_conv`, from 25 of the 36 multiply-adds per pixel.
  """
  features: int
  kernel: int = 3
  transposed: bool = False

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    up = conv(4 * self.features, self.kernel, 1, name="conv", conv_fn=phase_conv if self.transposed else None)
    return depth_to_space(up(x_BHWC), 2)


def activation(name: str) -> Any:
  return {"relu": nn.relu, "leaky_relu": lambda x: nn.leaky_relu(x, 0.01), "none": lambda x: x}[name]


def space_to_depth(x_BHWC: jax.Array, r: int = 2) -> jax.Array:
  """[B, r*H, r*W, C] -> [B, H, W, r*r*C]; the inverse of `depth_to_space`."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // r, r, w // r, r, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // r, w // r, r * r * c)
