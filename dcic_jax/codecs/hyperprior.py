"""CNN hyperprior codecs: Ballé et al. 2018 (scale) and Minnen et al. 2018 (mean-scale).

    x ─g_a─► y ─h_a─► z ─Q─► z_hat ─h_s─► (mu, sigma) ;  y_hat = Q(y - mu) + mu ─g_s─► x_hat

Images enter in [0, 1] (CompressAI's convention); the DCIC decoder maps its [-1, 1] samples.
`h_s` is a `HyperSynthesis` stack whose layer list is also read by
`codecs/fixed_point.py`, which evaluates it in exact integer arithmetic at coding time.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from dcic_jax.codecs.layers import GDN, Upsample, activation, conv
from dcic_jax.entropy import quantization
from dcic_jax.entropy.models import EntropyBottleneck, gaussian_likelihood


@dataclasses.dataclass(frozen=True)
class HyperpriorConfig:
  N: int = 128                  # channels of the transforms (and of z)
  M: int = 192                  # channels of y
  quantizer: str = "noise"      # training proxy for rounding y: "noise" or "ste" (rate still uses noise)
  up_kernel: int = 3            # kernel of the sub-pixel upsampling convs


@dataclasses.dataclass(frozen=True)
class HyperSpec:
  """Layer list of h_s: (features, upsample?) per layer, one activation between/after layers."""
  layers: tuple[tuple[int, bool], ...]
  act: str
  final_act: bool
  split_mean: bool              # output is [scales | means] (mean-scale) or scales only


class HyperSynthesis(nn.Module):
  spec: HyperSpec
  up_kernel: int = 3
  transposed_up: bool = False   # see `Hyperprior.transposed_up`

  @nn.compact
  def __call__(self, z_hat: jax.Array) -> jax.Array:
    act = activation(self.spec.act)
    h = z_hat
    n = len(self.spec.layers)
    for i, (features, up) in enumerate(self.spec.layers):
      if up:
        h = Upsample(features, self.up_kernel, self.transposed_up, name=f"layer{i}")(h)
      else:
        h = conv(features, 3, 1, name=f"layer{i}")(h)
      if i < n - 1 or self.spec.final_act:
        h = act(h)
    return h


def split_hyper_output(out: jax.Array, spec: HyperSpec):
  """(mu, sigma) from h_s output; the scale-only model has mu = 0."""
  if spec.split_mean:
    sigma, mu = jnp.split(out, 2, axis=-1)  # CompressAI order: scales first
    return mu, sigma
  return jnp.zeros_like(out), out


class HyperpriorParts:
  """The part of the codec contract every hyperprior codec shares; the module provides
  `h_s_net`, `entropy_bottleneck` and `hyper_spec()`."""

  def h_s(self, z_hat: jax.Array):
    """Float hyper-synthesis -> `split_hyper_output` of it; coding uses its exact fixed-point
    twin."""
    return split_hyper_output(self.h_s_net(z_hat), self.hyper_spec())

  def medians(self) -> jax.Array:
    return self.entropy_bottleneck.medians

  def aux_loss(self) -> jax.Array:
    return self.entropy_bottleneck.aux_loss()

  def quantize_z(self, z: jax.Array, rng: jax.Array | None, train: bool):
    """(z_hat, its likelihood, the rng left for y): uniform noise when training, else rounding
    around the medians as the coder does."""
    if train:
      rz, ry = jax.random.split(rng)
      z_hat = quantization.add_uniform_noise(z, rz)
    else:
      ry = None
      z_hat = quantization.quantize(z, "round", offset=self.medians())
    return z_hat, self.entropy_bottleneck(z_hat), ry

  def quantize_y(self, y: jax.Array, mu: jax.Array, sigma: jax.Array, ry: jax.Array | None,
                 train: bool):
    """(y_hat, its Gaussian-conditional likelihood): training feeds g_s noisy y (quantizer
    "noise") or straight-through rounded y ("ste"); otherwise y is rounded around mu."""
    if train:
      y_noisy = quantization.add_uniform_noise(y, ry)
      y_lik = gaussian_likelihood(y_noisy, mu, sigma)
      y_hat = y_noisy if self.cfg.quantizer == "noise" else quantization.quantize(y, "ste", offset=mu)
    else:
      y_hat = quantization.quantize(y, "round", offset=mu)
      y_lik = gaussian_likelihood(y_hat, mu, sigma)
    return y_hat, y_lik


class Hyperprior(HyperpriorParts, nn.Module):
  """bmshj2018 (mean_scale=False) and mbt2018-mean (mean_scale=True): same g_a/g_s, different hyper."""
  cfg: HyperpriorConfig

  mean_scale: bool = False
  # Every upsampling kernel holds a 5×5 transposed conv (imported CompressAI weights, see
  # `layers.transposed_taps`): skip their zero taps. Same outputs; set by `Codec`, not a config field.
  transposed_up: bool = False

  def hyper_spec(self) -> HyperSpec:
    n, m = self.cfg.N, self.cfg.M
    if self.mean_scale:
      return HyperSpec(((m, True), (m * 3 // 2, True), (2 * m, False)), "leaky_relu", False, True)
    return HyperSpec(((n, True), (n, True), (m, False)), "relu", True, False)

  def setup(self):
    n, m = self.cfg.N, self.cfg.M
    self.g_a_layers = [conv(n), GDN(), conv(n), GDN(), conv(n), GDN(), conv(m)]
    k, t = self.cfg.up_kernel, self.transposed_up
    self.g_s_layers = [Upsample(n, k, t), GDN(inverse=True), Upsample(n, k, t), GDN(inverse=True),
                       Upsample(n, k, t), GDN(inverse=True), Upsample(3, k, t)]
    self.h_a_layers = [conv(n, 3, 1), conv(n), conv(n)]
    self.h_s_net = HyperSynthesis(self.hyper_spec(), k, t)
    self.entropy_bottleneck = EntropyBottleneck(n)

  # --- the four transforms (the codec contract used by the DCIC constraints) ---
  def g_a(self, x_BHW3: jax.Array) -> jax.Array:
    h = x_BHW3
    for layer in self.g_a_layers:
      h = layer(h)
    return h

  def g_s(self, y_hat: jax.Array) -> jax.Array:
    h = y_hat
    for layer in self.g_s_layers:
      h = layer(h)
    return h

  def h_a(self, y: jax.Array) -> jax.Array:
    act = activation("leaky_relu" if self.mean_scale else "relu")
    h = y if self.mean_scale else jnp.abs(y)
    for i, layer in enumerate(self.h_a_layers):
      h = layer(h)
      if i < len(self.h_a_layers) - 1:
        h = act(h)
    return h

  def __call__(self, x_BHW3: jax.Array, rng: jax.Array | None = None, train: bool = False) -> dict:
    """Training/evaluation forward: reconstructions and likelihoods (bits = -log2 likelihoods).

    train=True: z and y get additive uniform noise for the rate; g_s sees noisy y
    (quantizer="noise") or straight-through rounded y (quantizer="ste").
    train=False: hard rounding around the medians / means, as the coder does.
    """
    y = self.g_a(x_BHW3)
    z = self.h_a(y)
    z_hat, z_lik, ry = self.quantize_z(z, rng, train)
    mu, sigma = self.h_s(z_hat)
    y_hat, y_lik = self.quantize_y(y, mu, sigma, ry, train)
    x_hat = self.g_s(y_hat)
    return dict(x_hat=x_hat, y=y, z=z, y_hat=y_hat, z_hat=z_hat, mu=mu, sigma=sigma,
                likelihoods=dict(y=y_lik, z=z_lik))
