"""The two constraint sets of the `project` decoder, and the steps toward them.

`constraints.py` writes the constraints as losses (for the penalty modes); this module writes them
as sets, so that a factor K ∈ [0, 1] can mean "the fraction of the way to the set":

* Distortion set B = {u : ‖u − x̂_b‖² ≤ κ·D_q}: a ball around the base reconstruction whose radius
  is a fraction κ of the error the quantisation cells alone explain,
  D_q = E‖g_s(ŷ + n) − g_s(ŷ)‖², n ~ U(−½, ½) per latent (`quantisation_error`). κ = 0 is the
  point x̂_b itself. Projection onto a ball is closed form (`ball_projection`).
* Idempotence set I = {u : Q(g_a(u)) = ŷ}: re-encoding u gives the file's latents. It is the
  preimage under g_a of a box of quantisation cells (`cell_bounds`). Two steps toward it:
  - `conditional_mean`: E[u0 | u0 ∈ I] for u0 ~ N(u, var·I) with g_a linearised at u — the
    step a reverse-diffusion step takes, with `var` the uncertainty of its x̂0. Small var: a
    projection; large var: the cell centres.
  - `projection`: the nearest point of I (Gauss–Newton on the active latents), applied after the
    last step so that K_P = 1 is met exactly.

Both solve their least-norm pixel update with a few conjugate-gradient iterations in latent space
(J·Jᵀ, one JVP and one VJP of g_a each), so neither needs a step size. Everything is per image
([B, ...] in, reductions per image), so a batch never couples its images.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp

from dcic_jax.dcic.constraints import CodecFns, Target, from_codec, to_codec


def per_image_dot(a: jax.Array, b: jax.Array) -> jax.Array:
  """[B, 1, …, 1] ⟨a, b⟩ per image, shaped to broadcast against a."""
  return jnp.sum(a * b, axis=tuple(range(1, a.ndim)), keepdims=True)


def ball_projection(u: jax.Array, centre: jax.Array, radius_sq: jax.Array) -> jax.Array:
  """The nearest point of {v : ‖v − centre‖² ≤ radius_sq} (radius_sq per image, broadcastable)."""
  r = u - centre
  norm_sq = per_image_dot(r, r)
  outside = norm_sq > radius_sq
  scale = jnp.sqrt(radius_sq / jnp.where(outside, norm_sq, 1.0))
  return centre + jnp.where(outside, scale, 1.0) * r


def quantisation_error(codec: CodecFns, codec_params: Any, target: Target, key: jax.Array,
                       draws: int = 4) -> jax.Array:
  """[B, 1, 1, 1] D_q = E‖g_s(ŷ + n) − g_s(ŷ)‖² ([−1, 1] units), n ~ U(−½, ½), `draws` draws.

  The decoder's own estimate of how far the cells let an image lie from x̂_b: it needs no
  original, and it scales with the rate, the codec and the image size.
  """
  def one(k):
    n = jax.random.uniform(k, target.y_hat.shape, target.y_hat.dtype, -0.5, 0.5)
    d = from_codec(codec.g_s(codec_params, target.y_hat + n)) - target.x_s
    return per_image_dot(d, d)
  return jnp.mean(jax.vmap(one)(jax.random.split(key, draws)), axis=0)


def cell_bounds(target: Target, margin: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """(lo, hi): the box of y that the encoder rounds onto ŷ, shrunk by `margin` on each side.

  The encoder rounds y − (μ − r) to an integer k and writes ŷ = k + μ, so y re-encodes to ŷ
  exactly when |y − (ŷ − r)| < ½.
  """
  centre = target.y_hat - target.r
  half = 0.5 - margin
  return centre - half, centre + half


def conjugate_gradient(matvec: Callable[[jax.Array], jax.Array], b: jax.Array,
                       iters: int) -> jax.Array:
  """`iters` CG iterations on A·x = b from x = 0, per image (A symmetric positive semidefinite).

  A fixed count keeps the program shape-static and its bits independent of the batch; a zero
  curvature pᵀAp stops the update instead of dividing by zero.
  """
  def body(_, carry):
    x, r, p, rr = carry
    ap = matvec(p)
    pap = per_image_dot(p, ap)
    alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1.0), 0.0)
    x, r = x + alpha * p, r - alpha * ap
    rr_new = per_image_dot(r, r)
    beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
    return x, r, r + beta * p, rr_new
  return jax.lax.fori_loop(0, iters, body, (jnp.zeros_like(b), b, b, per_image_dot(b, b)))[0]


def _linearised_g_a(codec: CodecFns, codec_params: Any, u: jax.Array):
  """(y = g_a(u), v ↦ J·v, w ↦ Jᵀ·w) with u in [−1, 1] image units."""
  y, jvp = jax.linearize(lambda v: codec.g_a(codec_params, to_codec(v)), u)
  vjp = jax.linear_transpose(jvp, u)
  return y, jvp, lambda w: vjp(w)[0]


def latent_gain(codec: CodecFns, codec_params: Any, target: Target, key: jax.Array,
                probes: int = 8) -> jax.Array:
  """[B, 1, 1, M] per-channel mean of diag(J·Jᵀ), J = ∂g_a/∂u at x̂_b: the variance a latent of
  each channel gets from unit-variance pixel noise (Hutchinson: E[(J·z)²] over `probes` z)."""
  _, jvp, _ = _linearised_g_a(codec, codec_params, target.x_b)
  def one(k):
    jz = jvp(jax.random.normal(k, target.x_b.shape, target.x_b.dtype))
    return jnp.mean(jnp.square(jz), axis=(1, 2), keepdims=True)
  return jnp.mean(jax.vmap(one)(jax.random.split(key, probes)), axis=0)


def erfcx(x: jax.Array) -> jax.Array:
  """exp(x²)·erfc(x), accurate in float32 everywhere.

  `jax.scipy.special.erfcx` returns 0 or NaN for x in about [9.1, 10.5] in float32 (jax 0.10),
  which a truncated-normal mean meets whenever a cell lies ~13 standard deviations from the mean.
  From x = 8 on, six terms of the asymptotic series 1/(x√π)·Σ (−1)ⁿ(2n−1)!!/(2x²)ⁿ are exact to
  float32 (the next term is below 4e-9 relative there).
  """
  big = x >= 8.0
  xb = jnp.where(big, x, 8.0)
  inv = 1.0 / (xb * xb)
  series = (1.0 + inv * (-0.5 + inv * (0.75 + inv * (-1.875 + inv * (6.5625 + inv * -29.53125)))))
  return jnp.where(big, series / (xb * jnp.sqrt(jnp.pi)),
                   jax.scipy.special.erfcx(jnp.where(big, 0.0, x)))


def truncated_normal_mean(mean: jax.Array, std: jax.Array, lo: jax.Array,
                          hi: jax.Array) -> jax.Array:
  """E[v | lo ≤ v ≤ hi] for v ~ N(mean, std²), elementwise, in float32 from far inside to far out.

  In standard units a, b = (lo, hi − mean)/std, reflected so that a + b ≥ 0, the mean is
  (φ(a) − φ(b)) / (Φ(b) − Φ(a)) = √(2/π)·(1 − r) / (erfcx(a/√2) − r·erfcx(b/√2)),
  r = exp(−(b − a)(b + a)/2) ≤ 1: scaled by erfcx, neither tail underflows. A box much narrower
  than std (where that difference cancels) takes the first-order answer centre·(1 − h²/3); a std
  below 1e-6 of the box (0 included) gives the limit, the projection clip(mean, lo, hi).
  """
  sharp = std <= 1e-6 * (hi - lo)           # a point mass, to float32: the projection
  std = jnp.where(sharp, 1.0, std)
  a, b = (lo - mean) / std, (hi - mean) / std
  centre, half = 0.5 * (a + b), 0.5 * (b - a)
  flip = centre < 0
  a, b = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
  exponent = -0.5 * (b - a) * (b + a)
  e = (jnp.sqrt(2.0 / jnp.pi) * -jnp.expm1(exponent)
       / (erfcx(a / jnp.sqrt(2.0)) - jnp.exp(exponent) * erfcx(b / jnp.sqrt(2.0))))
  e = jnp.where(flip, -e, e)
  narrow = half * jnp.maximum(1.0, jnp.abs(centre)) < 1e-2
  e = jnp.where(narrow, centre * (1.0 - half**2 / 3.0), e)
  return jnp.clip(jnp.where(sharp, mean, mean + std * e), lo, hi)


def truncated_normal_sample(key: jax.Array, mean: jax.Array, std: jax.Array, lo: jax.Array,
                            hi: jax.Array) -> jax.Array:
  """A draw of v ~ N(mean, std²) given lo ≤ v ≤ hi, elementwise, by inverting the CDF in float32.

  In standard units a, b = (lo, hi − mean)/std, reflected so that a + b ≥ 0: a box that holds
  the mode inverts Φ, one right of it inverts the upper tail Φc (no cancellation), and one beyond
  5 standard deviations solves log Φc(x) = log Φc(a) + log(1 − w·(1 − Φc(b)/Φc(a))) by Newton
  from the exponential tail's answer (Φc underflows there). A box much narrower than std is
  sampled uniformly (its density is flat to first order).
  """
  w = jax.random.uniform(key, mean.shape, mean.dtype, 1e-7, 1.0 - 1e-7)
  safe_std = jnp.where(std > 0, std, 1.0)
  a, b = (lo - mean) / safe_std, (hi - mean) / safe_std
  flip = a + b < 0
  a, b = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
  ndtr, ndtri = jax.scipy.special.ndtr, jax.scipy.special.ndtri
  # The mode inside: invert Φ. Right of the mode, up to 5σ: invert Φc.
  pa, pb = ndtr(a), ndtr(b)
  x_mode = ndtri(pa + w * (pb - pa))
  qa, qb = ndtr(-a), ndtr(-b)
  x_tail = -ndtri(qa - w * (qa - qb))
  # Far right: log Φc(x) = L(x) − log 2 with L(x) = log erfcx(x/√2) − x²/2, L' = −√(2/π)/erfcx.
  a_far = jnp.maximum(a, 5.0)
  b_far = jnp.maximum(b, a_far)
  L = lambda x: jnp.log(erfcx(x / jnp.sqrt(2.0))) - 0.5 * x * x
  goal = L(a_far) + jnp.log1p(-w * -jnp.expm1(L(b_far) - L(a_far)))
  x_far = a_far - (goal - L(a_far)) / a_far
  for _ in range(2):
    x_far = x_far + (L(x_far) - goal) * erfcx(x_far / jnp.sqrt(2.0)) / jnp.sqrt(2.0 / jnp.pi)
  x = jnp.where(a <= 0, x_mode, jnp.where(a <= 5.0, x_tail, x_far))
  x = jnp.where(b - a < 1e-3, a + w * (b - a), x)
  x = jnp.where(flip, -x, x)
  return jnp.where(std > 0, jnp.clip(mean + std * x, lo, hi), jnp.clip(mean, lo, hi))


def conditional_mean(codec: CodecFns, codec_params: Any, u: jax.Array, target: Target,
                     var: jax.Array, gain: jax.Array, cg_iters: int = 4,
                     key: jax.Array | None = None) -> jax.Array:
  """E[u0 | Q(g_a(u0)) = ŷ] for u0 ~ N(u, var·I), with g_a linear around u; with `key`, a draw.

  y = g_a(u0) is then N(g_a(u), var·J·Jᵀ); with that covariance taken diagonal (var·`gain`), each
  latent's mean given its cell is a truncated-normal mean ȳ (with `key`: a draw from that
  truncated normal, which makes the step a posterior sample of a Gaussian x0), and the
  least-norm δ with J·δ = ȳ − y (CG on J·Jᵀ) carries u there.
  """
  lo, hi = cell_bounds(target)
  y, jvp, vjp = _linearised_g_a(codec, codec_params, u)
  std = jnp.sqrt(var * gain)
  y_bar = (truncated_normal_mean(y, std, lo, hi) if key is None
           else truncated_normal_sample(key, y, std, lo, hi))
  lam = conjugate_gradient(lambda w: jvp(vjp(w)), y_bar - y, cg_iters)
  return u + vjp(lam)


def projection(codec: CodecFns, codec_params: Any, u: jax.Array, target: Target,
               margin: float = 0.05, gn_steps: int = 2, cg_iters: int = 4) -> jax.Array:
  """An approximate nearest point of the idempotence set, with cells shrunk by `margin`.

  Each Gauss–Newton step linearises g_a at u and takes the least-norm δ with J_A·δ = −e_A, e the
  latents' excess over their (shrunk) cells and A the latents outside them. The margin keeps the
  8-bit rounding of the output from pushing a latent back across a boundary.
  """
  lo, hi = cell_bounds(target, margin)
  for _ in range(gn_steps):
    y, jvp, vjp = _linearised_g_a(codec, codec_params, u)
    e = y - jnp.clip(y, lo, hi)
    active = (e != 0).astype(y.dtype)
    lam = conjugate_gradient(lambda w: active * jvp(vjp(active * w)), e, cg_iters)
    u = u - vjp(active * lam)
  return u
