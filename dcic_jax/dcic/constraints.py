"""The two DCIC constraints, ℓ_D (distortion) and ℓ_P (idempotence), against the codec contract.

Images are in the diffusion range [−1, 1] (NHWC); the codec sees (u + 1)/2 in [0, 1]. Every loss
is reduced per image ([B] out), so a batch never couples its images; sums (not means) over pixels
make the per-pixel gradient independent of the image size.

* ℓ_D(u) = ‖u − x̂_b‖²  or the hinge  max(0, ‖u − x̂_b‖² − δ·numel)  (δ: per-pixel MSE allowed).
* ℓ_P(u), `reconstruction`:  ‖g_s(Q(g_a(u))) − g_s(ŷ)‖²  — re-encoding and decoding u gives x̂_b back;
          `latent`:          ‖Q(g_a(u) − μ) + μ − ŷ‖²     — re-encoding u gives the same latents.
  Q is rounding with a straight-through gradient, around the decoded hyper-latent means μ (0 for the
  scale-only codec), exactly as the coder quantises. The `reconstruction` target is g_s(ŷ) before
  clipping to [0, 1], so that u = x̂_b is (up to re-quantisation) a fixed point.

`dps` mode uses the unsquared norms of the same residuals (Chung et al. 2023).
"""
import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

from dcic_jax.entropy.quantization import round_ste

VARIANTS = ("reconstruction", "latent")


@dataclasses.dataclass(frozen=True)
class CodecFns:
  """The part of the codec contract the constraints need, as pure functions of the params."""
  g_a: Callable[[Any, jax.Array], jax.Array]  # (params, x01_BHW3) -> y_BhwM
  g_s: Callable[[Any, jax.Array], jax.Array]  # (params, y_hat_BhwM) -> x01_BHW3 (unclipped)

  @classmethod
  def from_module(cls, module) -> "CodecFns":
    """Any registered codec module (see `codecs/registry.py`)."""
    return cls(g_a=lambda p, x: module.apply({"params": p}, x, method="g_a"),
               g_s=lambda p, y: module.apply({"params": p}, y, method="g_s"))


class Target(flax.struct.PyTreeNode):
  """What the decoded file fixes, for one image or a batch (leading axes are vmapped)."""
  x_b: jax.Array      # [..., H, W, 3] base reconstruction x̂_b in [−1, 1] (clipped), the ℓ_D target
  x_s: jax.Array      # [..., H, W, 3] g_s(ŷ) in [−1, 1] before clipping, the ℓ_P reconstruction target
  y_hat: jax.Array    # [..., h, w, M] decoded latents
  mu: jax.Array       # [..., h, w, M] decoded means (0 for bmshj2018), LRP term included
  r: jax.Array        # [..., h, w, M] LRP term inside mu (0 without LRP): the encoder rounds around mu − r


def to_codec(u: jax.Array) -> jax.Array:
  return (u + 1.0) * 0.5


def from_codec(x01: jax.Array) -> jax.Array:
  return x01 * 2.0 - 1.0


def make_target(codec: CodecFns, codec_params: Any, y_hat: jax.Array, mu: jax.Array,
                r: jax.Array | None = None) -> Target:
  """Target from the decoded latents alone ([B, h, w, M] each; `r` from `Decoded.r`, zeros if
  None): x̂_b = clip(g_s(ŷ))."""
  x_s = from_codec(codec.g_s(codec_params, y_hat))
  r = jnp.zeros_like(y_hat) if r is None else r
  return Target(x_b=jnp.clip(x_s, -1.0, 1.0), x_s=x_s, y_hat=y_hat, mu=mu, r=r)


def requantize(y: jax.Array, target: Target, rounding=None) -> jax.Array:
  """Q(y): y rounded as the encoder rounds it, onto the file's grid ŷ = integer + μ.

  The encoder of a channel-wise model with LRP rounds y − (μ − r) and then adds μ; rounding
  y − μ instead would be off by one wherever r moves y − μ across a half-integer.
  """
  rounding = round_ste if rounding is None else rounding
  return rounding(y - target.mu + target.r) + target.mu


def _per_image_sum(r: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(r), axis=tuple(range(1, r.ndim)))


def safe_norm(r: jax.Array) -> jax.Array:
  """Per-image ‖r‖ with a zero (not NaN) gradient at r = 0."""
  sq = _per_image_sum(r)
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def distortion_residual(u: jax.Array, target: Target) -> jax.Array:
  return u - target.x_b


def idempotence_residual(codec: CodecFns, codec_params: Any, u: jax.Array, target: Target,
                         variant: str = "reconstruction") -> jax.Array:
  """The residual whose squared norm is ℓ_P (same shape as u for `reconstruction`, as ŷ for `latent`)."""
  y_q = requantize(codec.g_a(codec_params, to_codec(u)), target)
  if variant == "reconstruction":
    return from_codec(codec.g_s(codec_params, y_q)) - target.x_s
  if variant == "latent":
    return y_q - target.y_hat
  raise ValueError(f"unknown idempotence variant {variant!r}; expected one of {VARIANTS}")


def distortion_loss(u: jax.Array, target: Target, hinge: float | None = None) -> jax.Array:
  """[B] ℓ_D, squared; with `hinge` = δ only the excess over a per-pixel MSE of δ counts."""
  d = _per_image_sum(distortion_residual(u, target))
  if hinge is None:
    return d
  return jnp.maximum(d - hinge * (u.size // u.shape[0]), 0.0)


def idempotence_loss(codec: CodecFns, codec_params: Any, u: jax.Array, target: Target,
                     variant: str = "reconstruction") -> jax.Array:
  """[B] ℓ_P, squared."""
  return _per_image_sum(idempotence_residual(codec, codec_params, u, target, variant))


def reencode_error(codec: CodecFns, codec_params: Any, u: jax.Array, target: Target) -> jax.Array:
  """[B] ‖Q(g_a(u) − μ) + μ − ŷ‖ with hard rounding: how far re-encoding u lands from the file."""
  err = requantize(codec.g_a(codec_params, to_codec(u)), target, jnp.round) - target.y_hat
  return jnp.sqrt(_per_image_sum(err))
