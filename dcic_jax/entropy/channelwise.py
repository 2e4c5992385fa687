"""Channel-wise autoregressive entropy model (Minnen & Singh 2020, "ChARM") with an exact coding path.

y is split along channels into S slices y_0 .. y_{S-1}. The Gaussian of slice i is predicted from
the hyper features and every already-decoded slice:

    mu_i    = f_mean_i (mean_feat  ‖ y_hat_0 .. y_hat_{i-1})
    sigma_i = f_scale_i(scale_feat ‖ y_hat_0 .. y_hat_{i-1})
    y_hat_i = round(y_i - mu_i) + mu_i + r_i,
    r_i     = 0.5 · softsign(f_lrp_i(mean_feat ‖ y_hat_0 .. y_hat_i))      (latent residual prediction)

`mean_feat`, `scale_feat` are the two halves of the hyper-synthesis output (h_s), f_* are small
stride-1 conv stacks. LRP is bounded by 0.5·x/(1+|x|) rather than Minnen & Singh's 0.5·tanh(x):
same role and range, and it has an exact integer form (one integer division), which tanh has not.

Coding: every number that picks a CDF table, a rounding offset or a later slice's input is
computed by the integer twin of the f_* (on the fine grids of `codecs/fixed_point.py`, all dot
products exact in float64, as for h_s), from the integer y_hat the decoder itself reconstructs.
What the coder sees, mu_i, sigma_i and r_i, is rounded to its 2**-A_FRAC grid, so y_hat_i =
symbol + mu_i + r_i is on that grid too (exactly representable, and y_hat − mu is the symbol); the
hyper features and the activations stay on the fine grid. The encoder runs the same loop on the
same integers, so the decoder's tables and offsets are identical on any platform. The slices are
coded one after the other (after z, in one range-coded string), so the decoder finishes slice i
before it needs slice i+1's tables.

The effective mean mu_i + r_i is what the rest of the project calls `mu`: y_hat − mu is the integer
symbol, exactly as for the hyperprior codecs, which is what the DCIC `latent` ℓ_P variant needs
(Q(g_a(u) − mu) + mu reproduces y_hat at re-encoding).
"""
import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.codecs.fixed_point import (A_FRAC, GRIDS, Grids, _act, _conv_same, _rescale, quantize_layer,
                                         to_coder_grid)
from dcic_jax.codecs.layers import conv
from dcic_jax.entropy import quantization
from dcic_jax.entropy.models import gaussian_likelihood

MAX_SLICES = 15   # files before 2026-11-26 held a string per slice + z (bitstream.MAX_STRINGS = 16)
_KINDS = ("mean", "scale", "lrp")


@dataclasses.dataclass(frozen=True)
class SliceSpec:
  """Shape of the slice networks; read by the float module and by the integer twin."""
  slices: int       # S
  channels: int     # M, channels of y (divisible by S)
  features: int     # channels of each hyper-feature group (mean_feat, scale_feat)
  hidden: int       # width of the hidden layers of every f_*
  lrp: bool         # latent residual prediction on/off
  depth: int = 3    # conv layers per f_* (3x3, leaky ReLU between them)

  def __post_init__(self):
    if not 1 <= self.slices <= MAX_SLICES or self.channels % self.slices:
      raise ValueError(f"slices={self.slices} must be in 1..{MAX_SLICES} and divide M={self.channels}")

  @property
  def slice_channels(self) -> int:
    return self.channels // self.slices

  def slice_range(self, i: int) -> slice:
    c = self.slice_channels
    return slice(i * c, (i + 1) * c)

  def kinds(self) -> tuple[str, ...]:
    return _KINDS if self.lrp else _KINDS[:2]

  def layer_features(self) -> tuple[int, ...]:
    return (self.hidden,) * (self.depth - 1) + (self.slice_channels,)


def _softsign_half(x):
  return 0.5 * x / (1.0 + jnp.abs(x))


class SliceNet(nn.Module):
  """f_*: stride-1 3x3 convs, leaky ReLU between layers, linear output."""
  features: tuple[int, ...]

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    for j, f in enumerate(self.features):
      h = conv(f, 3, 1, name=f"layer{j}")(h)
      if j < len(self.features) - 1:
        h = nn.leaky_relu(h, 0.01)
    return h


class ChannelwiseContext(nn.Module):
  """Float (training / evaluation) side of the slice model."""
  spec: SliceSpec

  @nn.compact
  def __call__(self, y: jax.Array, mean_feat: jax.Array, scale_feat: jax.Array, rng: jax.Array | None,
               train: bool, quantizer: str = "noise") -> dict:
    """y [B, h, w, M] -> y_hat, effective mu (mu + r), sigma and the likelihoods of y.

    train: the likelihood sees y + U(-.5, .5); the y_hat passed on (to later slices and g_s) is the
    noisy y (quantizer="noise") or the straight-through rounded y ("ste"). Otherwise hard rounding.
    """
    spec = self.spec
    net = lambda name, h: SliceNet(spec.layer_features(), name=name)(h)
    keys = jax.random.split(rng, spec.slices) if train else [None] * spec.slices
    done, mus, sigmas, liks = [], [], [], []
    for i in range(spec.slices):
      y_i = y[..., spec.slice_range(i)]
      mu_i = net(f"mean_{i}", jnp.concatenate([mean_feat] + done, -1))
      sigma_i = net(f"scale_{i}", jnp.concatenate([scale_feat] + done, -1))
      if train:
        y_noisy = quantization.add_uniform_noise(y_i, keys[i])
        liks.append(gaussian_likelihood(y_noisy, mu_i, sigma_i))
        y_hat_i = y_noisy if quantizer == "noise" else quantization.quantize(y_i, "ste", offset=mu_i)
      else:
        y_hat_i = quantization.quantize(y_i, "round", offset=mu_i)
        liks.append(gaussian_likelihood(y_hat_i, mu_i, sigma_i))
      if spec.lrp:
        r_i = _softsign_half(net(f"lrp_{i}", jnp.concatenate([mean_feat] + done + [y_hat_i], -1)))
        y_hat_i, mu_i = y_hat_i + r_i, mu_i + r_i
      done.append(y_hat_i)
      mus.append(mu_i)
      sigmas.append(sigma_i)
    cat = lambda xs: jnp.concatenate(xs, -1)
    return dict(y_hat=cat(done), mu=cat(mus), sigma=cat(sigmas), likelihood=cat(liks))


# ---- exact integer twin (coding) ----
def quantize_slice_params(context_params: dict, spec: SliceSpec, grids: Grids = GRIDS) -> dict:
  """Float params of `ChannelwiseContext` -> {net name: [(integer kernel, integer bias)] per layer}."""
  return {f"{k}_{i}": [quantize_layer(context_params[f"{k}_{i}"][f"layer{j}"], grids) for j in range(spec.depth)]
          for i in range(spec.slices) for k in spec.kinds()}


def _net_int(layers, a_HWC: np.ndarray, grids: Grids) -> np.ndarray:
  for j, (w, b) in enumerate(layers):
    a_HWC = _rescale(_conv_same(a_HWC, w, b), grids)
    if j < len(layers) - 1:
      a_HWC = _act(a_HWC, "leaky_relu", grids)
  return a_HWC


def softsign_half_int(x_int: np.ndarray, grids: Grids = GRIDS) -> np.ndarray:
  """2**A · 0.5·x/(1+|x|) for x = x_int · 2**-grids.activations, on the coder's grid 2**-A: rounded
  halves up, as every value handed to the coder (`LEGACY`: floored), in exact int64 arithmetic."""
  x = x_int.astype(np.int64)
  d = (1 << grids.activations) + np.abs(x)
  half = d if grids.activations > A_FRAC else 0
  return np.floor_divide((x << A_FRAC) + half, 2 * d).astype(np.float64)


def code_slices(qparams: dict, spec: SliceSpec, mean_feat_int: np.ndarray, scale_feat_int: np.ndarray,
                scale_bounds: np.ndarray, symbols: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
                grids: Grids = GRIDS):
  """The slice loop shared by encoder and decoder, in integers: the hyper features (h_s output) and
  the networks on 2**-grids.activations, what the coder sees on its 2**-A_FRAC grid.

  `symbols(i, mu_i, index_i)` returns slice i's integer symbols [h, w, M/S]: the encoder rounds
  y_i − mu_i, the decoder reads them from the string. Returns (y_hat_int, mu_int (effective),
  table index, symbols, LRP term r), each [h, w, M] on the coder's grid (r = 0 without LRP;
  effective mu = mu_i + r).
  """
  up = 2.0**(grids.activations - A_FRAC)  # coder's grid -> the networks' (exact)
  net = lambda name, *parts: _net_int(qparams[name], np.concatenate(parts, -1), grids)
  done, mus, indexes, syms, lrps = [], [], [], [], []
  for i in range(spec.slices):
    prev = [d * up for d in done]
    mu_int = to_coder_grid(net(f"mean_{i}", mean_feat_int, *prev), grids)
    sigma_int = to_coder_grid(net(f"scale_{i}", scale_feat_int, *prev), grids)
    index = np.searchsorted(scale_bounds, sigma_int, side="left")
    sym = np.asarray(symbols(i, mu_int, index), np.int64)
    y_hat_int = sym.astype(np.float64) * 2.0**A_FRAC + mu_int
    r = np.zeros_like(y_hat_int)
    if spec.lrp:
      r = softsign_half_int(net(f"lrp_{i}", mean_feat_int, *prev, y_hat_int * up), grids)
      y_hat_int, mu_int = y_hat_int + r, mu_int + r
    lrps.append(r)
    done.append(y_hat_int)
    mus.append(mu_int)
    indexes.append(index)
    syms.append(sym)
  cat = lambda xs: np.concatenate(xs, -1)
  return cat(done), cat(mus), cat(indexes), cat(syms), cat(lrps)
