"""The constraint sets of the `project` decoder (`dcic/projections.py`), against closed forms.

On the toy codec with W = I every latent is one pixel over Δ (J = I/(2Δ) in image units), so the
idempotence set is a box of pixel intervals and both idempotence steps have exact answers:
the projection clips each pixel into its (shrunk) cell, the conditional mean is the truncated-
normal mean per pixel. On a learned codec the steps must re-encode to the file's latents.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from conftest import IMAGES, tiny_codec
from dcic_jax.codecs import toy
from dcic_jax.dcic import constraints, projections
from dcic_jax.diffusion import analytic

STEP = 0.25


def _toy(shape=(2, 8, 8, 3), seed=0):
  codec = toy.ToyCodec(analytic.gaussian(0.25), np.eye(3))
  params = codec.params(STEP)
  x = jnp.asarray(analytic.sample(codec.source, jax.random.key(seed), shape), jnp.float32)
  y_hat, mu = toy.encode(params, x)
  return codec, params, x, constraints.make_target(codec.fns, params, y_hat, mu)


def test_ball_projection_keeps_inside_points_and_lands_outside_ones_on_the_sphere():
  centre = jnp.zeros((2, 4, 4, 3))
  u = jnp.stack([jnp.full((4, 4, 3), 0.01), jnp.full((4, 4, 3), 1.0)])
  radius_sq = jnp.array([1.0, 4.0]).reshape(2, 1, 1, 1)
  out = np.asarray(projections.ball_projection(u, centre, radius_sq))
  np.testing.assert_array_equal(out[0], np.asarray(u[0]))          # inside: untouched
  np.testing.assert_allclose(np.sum(out[1] ** 2), 4.0, rtol=1e-6)  # outside: on the sphere,
  np.testing.assert_allclose(out[1] / out[1].max(), 1.0)           # along the same direction


def test_truncated_normal_mean_matches_scipy_from_far_inside_to_far_outside():
  """Latents inside their cell, on its edge, thousands of σ outside on either side; σ from far
  below to far above the cell width (the last steps and the first ones)."""
  rng = np.random.default_rng(0)
  mean = np.concatenate([rng.uniform(-3, 3, 300), [-40.0, 40.0, 0.3, 0.45, 0.5, -2e3, 2e3]])
  std = np.concatenate([10 ** rng.uniform(-3, 2, 300), [0.1, 0.01, 100.0, 1e-4, 0.2, 0.5, 1e-2]])
  lo, hi = -0.5, 0.5
  got = np.asarray(projections.truncated_normal_mean(*(jnp.asarray(v, jnp.float32) for v in (mean, std)),
                                                    jnp.float32(lo), jnp.float32(hi)))
  with np.errstate(invalid="ignore"):   # scipy's own skewness term, unused by the mean
    want = scipy.stats.truncnorm.mean((lo - mean) / std, (hi - mean) / std, loc=mean, scale=std)
  want = np.clip(want, lo, hi)   # scipy itself leaves the box by 1e-3 at 2e5 σ out
  assert np.all((got >= lo) & (got <= hi))
  np.testing.assert_allclose(got, want, atol=1e-4 * (hi - lo))


def test_erfcx_is_accurate_where_jax_s_own_returns_zero_or_nan():
  """jax's float32 erfcx fails on about [9.1, 10.5]; ours follows scipy's across the whole range."""
  x = np.linspace(-9.0, 60.0, 200_001).astype(np.float32)
  got = np.asarray(jax.jit(projections.erfcx)(jnp.asarray(x)))
  np.testing.assert_allclose(got, scipy.special.erfcx(x.astype(np.float64)), rtol=2e-5)


def test_truncated_normal_mean_of_a_box_every_distance_away():
  """A box 0 to 40 σ from the mean, densely: finite, inside, and scipy's value (the mean lies
  σ/a from the near edge far out)."""
  a = np.linspace(0.0, 40.0, 4001)
  mean, std, lo, hi = 0.0, 0.02, 0.02 * a, 0.02 * a + 1.0
  got = np.asarray(projections.truncated_normal_mean(jnp.float32(mean), jnp.float32(std),
                                                    jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)))
  want = scipy.stats.truncnorm.mean(a, (hi - mean) / std, loc=mean, scale=std)
  assert np.all(np.isfinite(got)) and np.all((got >= lo.astype(np.float32)) & (got <= hi))
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)


def test_truncated_normal_mean_of_a_point_mass_is_the_projection():
  """std = 0 (the prior's variance estimate clamps there) and std far below the box: the limit
  clip(mean, lo, hi), finite, where the standardised bounds would be ±inf or NaN."""
  mean = jnp.asarray([0.3, -2.0, 5.0, 0.3, 1.0 + 1e-8], jnp.float32)
  std = jnp.asarray([0.0, 0.0, 0.0, 1e-9, 1e-9], jnp.float32)
  got = np.asarray(projections.truncated_normal_mean(mean, std, jnp.float32(0.0), jnp.float32(1.0)))
  np.testing.assert_allclose(got, [0.3, 0.0, 1.0, 0.3, 1.0], atol=1e-7)


def test_truncated_normal_sample_has_scipy_s_law_from_inside_to_far_outside():
  """Boxes holding the mode, beside it, 3–40 σ out on either side, and far narrower than σ:
  every draw inside its box, and the draws' quantiles those of scipy's truncated normal."""
  cases = [(0.0, 1.0, -0.5, 0.5), (0.3, 0.2, -0.5, 0.5), (0.0, 0.1, 0.3, 0.7), (0.0, 0.1, -0.7, -0.3),
           (0.0, 0.02, 0.3, 1.3), (0.0, 0.01, -1.3, -0.4), (0.0, 100.0, -0.5, 0.5), (2.0, 0.05, -0.5, 0.5)]
  n = 20_000
  q = np.linspace(0.05, 0.95, 19)
  for j, (mean, std, lo, hi) in enumerate(cases):
    draws = np.asarray(projections.truncated_normal_sample(
        jax.random.key(j), jnp.full((n,), mean, jnp.float32), jnp.float32(std), jnp.float32(lo),
        jnp.float32(hi)), np.float64)
    assert np.all((draws >= lo) & (draws <= hi)), (mean, std, lo, hi)
    # The law's CDF at the draws' quantiles: q within 0.015 (sampling sd ≤ 0.0036 at n = 20,000).
    cdf = scipy.stats.truncnorm.cdf(np.quantile(draws, q), (lo - mean) / std, (hi - mean) / std,
                                    loc=mean, scale=std)
    np.testing.assert_allclose(cdf, q, atol=0.015, err_msg=str((mean, std, lo, hi)))
  # 1,500–2,500 σ out (Φc underflows): the exponential tail, mean σ/1500 from the near edge.
  far = projections.truncated_normal_sample(jax.random.key(9), jnp.full((1000,), 2.0), jnp.float32(1e-3),
                                            jnp.float32(-0.5), jnp.float32(0.5))
  np.testing.assert_allclose(np.mean(0.5 - np.asarray(far, np.float64)), 1e-3 / 1500, rtol=0.15)


def test_truncated_normal_sample_of_zero_std_is_the_clipped_mean():
  out = projections.truncated_normal_sample(jax.random.key(0), jnp.array([-2.0, 0.2, 3.0]),
                                            jnp.float32(0.0), jnp.float32(-0.5), jnp.float32(0.5))
  np.testing.assert_array_equal(np.asarray(out), np.array([-0.5, 0.2, 0.5], np.float32))


def test_conjugate_gradient_solves_each_image_alone():
  rng = np.random.default_rng(0)
  a = [rng.normal(size=(6, 6)) for _ in range(2)]
  spd = jnp.asarray(np.stack([m @ m.T + 0.5 * np.eye(6) for m in a]), jnp.float32)   # [2, 6, 6]
  b = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)
  x = projections.conjugate_gradient(lambda v: jnp.einsum("bij,bj->bi", spd, v), b, iters=6)
  want = np.linalg.solve(np.asarray(spd, np.float64), np.asarray(b, np.float64)[..., None])[..., 0]
  np.testing.assert_allclose(np.asarray(x), want, rtol=1e-3, atol=1e-4)
  alone = projections.conjugate_gradient(lambda v: jnp.einsum("bij,bj->bi", spd[1:], v), b[1:], iters=6)
  np.testing.assert_allclose(np.asarray(alone), np.asarray(x[1:]), rtol=1e-5, atol=1e-6)


def test_projection_clips_into_the_shrunk_cells_on_the_toy_codec():
  codec, params, x, target = _toy()
  u = x + 0.4 * STEP * jax.random.normal(jax.random.key(1), x.shape)     # many pixels leave their cell
  margin = 0.1
  out = np.asarray(projections.projection(codec.fns, params, u, target, margin=margin, gn_steps=1, cg_iters=1))
  centre = np.asarray(target.y_hat) * STEP
  want = np.clip(np.asarray(u), centre - (0.5 - margin) * STEP, centre + (0.5 - margin) * STEP)
  np.testing.assert_allclose(out, want, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(toy.encode(params, jnp.asarray(out))[0]), np.asarray(target.y_hat))


def test_conditional_mean_is_the_truncated_normal_mean_per_pixel_on_the_toy_codec():
  codec, params, x, target = _toy()
  u = x + 0.3 * STEP * jax.random.normal(jax.random.key(2), x.shape)
  var = jnp.float32(0.05**2)
  gain = jnp.full((x.shape[0], 1, 1, 3), (1.0 / STEP) ** 2, jnp.float32)    # exact diag(J·Jᵀ) here
  out = np.asarray(projections.conditional_mean(codec.fns, params, u, target, var, gain, cg_iters=1))
  lo = (np.asarray(target.y_hat) - 0.5) * STEP
  sd = 0.05
  want = scipy.stats.truncnorm.mean((lo - np.asarray(u)) / sd, (lo + STEP - np.asarray(u)) / sd,
                                    loc=np.asarray(u), scale=sd)
  np.testing.assert_allclose(out, want, atol=1e-4)


def test_latent_gain_and_quantisation_error_on_the_toy_codec():
  codec, params, _, target = _toy((1, 32, 32, 3))
  gain = np.asarray(projections.latent_gain(codec.fns, params, target, jax.random.key(3), probes=16))
  np.testing.assert_allclose(gain, 1.0 / STEP**2, rtol=0.05)               # J = I/Δ; 16 probes
  d_q = float(projections.quantisation_error(codec.fns, params, target, jax.random.key(4), draws=8)[0, 0, 0, 0])
  d_star = toy.cell_theory(codec.source, STEP).d_star
  # Interpolated centroids move ~ |n|·Δ: D_q ≈ Δ²/12 per pixel, which is D* for fine cells.
  np.testing.assert_allclose(d_q / target.x_b.size, d_star, rtol=0.1)


@pytest.fixture(scope="module")
def learned():
  """A tiny random mbt2018-mean codec and a 64×64 crop's decoded target."""
  from dcic_jax.data.images import load_rgb
  codec = tiny_codec("mbt2018-mean")
  decoded = codec.decompress(codec.compress(load_rgb(IMAGES / "kodim23_crop.png")[:64, :64], seed=3))
  fns = constraints.CodecFns.from_module(codec.module)
  target = constraints.make_target(fns, codec.params, *(jnp.asarray(a[None]) for a in
                                                         (decoded.y_hat, decoded.mu, decoded.r)))
  return fns, codec.params, target


def test_projection_makes_a_learned_codec_re_encode_to_the_file(learned):
  fns, params, target = learned
  u = target.x_b + 0.2 * jax.random.normal(jax.random.key(5), target.x_b.shape)
  before = float(constraints.reencode_error(fns, params, u, target)[0])
  out = projections.projection(fns, params, u, target, margin=0.05, gn_steps=3, cg_iters=8)
  after = float(constraints.reencode_error(fns, params, out, target)[0])
  assert before > 5 and after == 0.0, (before, after)
  assert float(jnp.sum((out - u) ** 2)) < float(jnp.sum((target.x_b - u) ** 2))   # a short move


def test_conditional_mean_moves_toward_the_cells_and_to_their_centres_when_unsure(learned):
  fns, params, target = learned
  u = target.x_b + 0.2 * jax.random.normal(jax.random.key(6), target.x_b.shape)
  gain = projections.latent_gain(fns, params, target, jax.random.key(7))
  lo, hi = projections.cell_bounds(target)
  excess = lambda v: float(jnp.sum(jnp.abs(fns.g_a(params, constraints.to_codec(v)) -
                                           jnp.clip(fns.g_a(params, constraints.to_codec(v)), lo, hi))))
  sure = projections.conditional_mean(fns, params, u, target, jnp.float32(1e-6), gain, cg_iters=8)
  assert excess(sure) < 0.2 * excess(u)
  unsure = projections.conditional_mean(fns, params, u, target, jnp.float32(1e4), gain, cg_iters=8)
  y = fns.g_a(params, constraints.to_codec(unsure))
  centre = target.y_hat - target.r
  assert float(jnp.mean(jnp.abs(y - centre))) < 0.5 * float(jnp.mean(jnp.abs(fns.g_a(params, constraints.to_codec(u)) - centre)))
