"""The analytic rate–distortion–perception check on a small scale (`experiments/analytic_rdp.py`).

The bound's ingredients (D*, W2(p_X, p_X*), D(P)) against brute-force Monte Carlo and quadrature;
the analytic ε against the autodiff score of the noised mixture; and the real DCIC decoder on the
toy codec: K = 0 reproduces the source law, D falls monotonically with K_D to within 5 % of the
base codec's, K_P walks the samples monotonically into their quantisation cells, and K_P = 1 lands
near the bound's P = 0 end.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcic_jax.codecs import toy
from dcic_jax.dcic import constraints, grid, sampler
from dcic_jax.diffusion import analytic, samplers, schedules
from dcic_jax.metrics.swd import w2_1d

FULL = schedules.make_schedule("linear", 1000)
GAUSS = analytic.gaussian(0.25)
GMM = analytic.mixture_1d([0.3, 0.7], [-0.45, 0.2], [0.1, 0.15])
VEC_COV = 0.25**2 * np.array([[1.0, 0.8, 0.6], [0.8, 1.0, 0.8], [0.6, 0.8, 1.0]])


def _mc_cells(source, step, n, key):
  """Brute force: draws, their cells, empirical centroids and D*."""
  x = analytic.sample(source, key, (n,))
  k = np.round(x / step).astype(np.int64)
  uniq, inv = np.unique(k, return_inverse=True)
  centroid = np.bincount(inv, weights=x) / np.bincount(inv)
  return x, k, centroid[inv], uniq


@pytest.mark.parametrize("source", [GAUSS, GMM], ids=["gauss", "gmm"])
@pytest.mark.parametrize("step", [0.1, 0.4])
def test_cell_theory_and_w2_star_against_brute_force(source, step):
  th = toy.cell_theory(source, step)
  x, _, x_star, _ = _mc_cells(source, step, 200_000, jax.random.key(1))
  d_mc = np.mean((x - x_star) ** 2)
  np.testing.assert_allclose(th.d_star, d_mc, rtol=0.02)
  np.testing.assert_allclose(th.mass.sum(), 1.0, atol=1e-12)
  w2_sq = analytic.w2_sq_to_atoms(source, th.centroid, th.mass)
  # Quadrature of ∫(Q_X(u) − Q_X*(u))² du on a fine u grid (independent of the partial moments).
  u = (np.arange(50_000) + 0.5) / 50_000
  q_star = th.centroid[np.searchsorted(np.cumsum(th.mass), u)]
  w2_quad = np.mean((analytic.quantile(source, u) - q_star) ** 2)
  np.testing.assert_allclose(w2_sq, w2_quad, rtol=5e-3)
  np.testing.assert_allclose(w2_sq, w2_1d(x, x_star, squared=True), rtol=0.03)
  # Interval cells: the monotone coupling maps each centroid onto its own cell, so W2² = D*.
  np.testing.assert_allclose(w2_sq, th.d_star, rtol=1e-9)


def test_w2_to_samples_is_small_for_exact_draws_and_detects_a_wrong_law():
  x = analytic.sample(GMM, jax.random.key(2), (50_000,))
  own = analytic.w2_sq_to_atoms(GMM, x)
  other = analytic.w2_sq_to_atoms(GAUSS, x)
  assert own < 2e-4 * float(GMM.cov[0, 0]) and other > 100 * own, (own, other)


def _posterior_draws(source, step, k, key):
  """Exact draws from p(X | cell k) by inverse CDF within each cell."""
  a, b = analytic.cdf(source, (k - 0.5) * step), analytic.cdf(source, (k + 0.5) * step)
  u = np.asarray(jax.random.uniform(key, k.shape), np.float64)
  return analytic.quantile(source, a + u * (b - a))


@pytest.mark.parametrize("source", [GAUSS, GMM], ids=["gauss", "gmm"])
def test_bound_is_attained_by_the_interpolation_and_beaten_by_nothing(source):
  """D(P) against brute force: the optimal family X̂_α = (1−α)X* + α·X̃ (X̃ ~ p(X|Ŷ)) lies on it,
  other estimators (noisy, shrunk, midpoint, tilted) lie above it."""
  step = 0.3
  th = toy.cell_theory(source, step)
  x, k, x_star, _ = _mc_cells(source, step, 60_000, jax.random.key(3))
  x_tilde = _posterior_draws(source, step, k, jax.random.key(4))
  w2_star = np.sqrt(th.d_star)

  def measure(x_hat):
    return np.mean((x - x_hat) ** 2), analytic.w2_sq_to_atoms(source, x_hat)

  for alpha in (0.0, 0.3, 0.6):
    d, p = measure((1 - alpha) * x_star + alpha * x_tilde)
    np.testing.assert_allclose(d, toy.dp_bound(p, th.d_star, w2_star), rtol=0.03)
  d, p = measure(x_tilde)                            # the P = 0 end: the posterior sample, D = 2D*
  np.testing.assert_allclose(d, 2 * th.d_star, rtol=0.03)
  assert p < 0.01 * th.d_star
  noise = np.asarray(jax.random.normal(jax.random.key(5), x.shape), np.float64)
  others = {"noisy": x_star + 0.5 * w2_star * noise, "shrunk": 0.9 * x_star, "midpoint": k * step,
            "prior": analytic.sample(source, jax.random.key(6), x.shape),
            "tilted": 0.5 * (x_tilde + x_star) + 0.1 * w2_star * noise}
  for name, x_hat in others.items():
    d, p = measure(x_hat)
    # Nothing beats the bound (MC tolerance); the plainly suboptimal ones are well above it.
    assert d > (1.1 if name in ("prior", "midpoint") else 0.98) * toy.dp_bound(p, th.d_star, w2_star), name


def _mixture_log_density(mix, ab, x):
  """log p_t(x_t) of the noised mixture, written out directly (for the autodiff score)."""
  lp = []
  for w, m, s in zip(mix.weights, mix.means, mix.covs):
    cov = ab * s + (1 - ab) * jnp.eye(mix.dim)
    d = x - jnp.sqrt(ab) * m
    lp.append(np.log(w) - 0.5 * jnp.linalg.slogdet(cov)[1] - 0.5 * d @ jnp.linalg.solve(cov, d))
  return jax.nn.logsumexp(jnp.stack(lp))


@pytest.mark.parametrize("mix", [GMM, analytic.Mixture(np.array([0.4, 0.6]), np.array([[0.3, 0.0, -0.2], [-0.2, 0.1, 0.1]]),
                                                  np.stack([0.02 * np.eye(3), VEC_COV]))],
                         ids=["gmm-1d", "gmm-3d"])
def test_eps_is_minus_the_scaled_score(mix):
  eps = analytic.eps_fn(mix, FULL)
  x = jax.random.normal(jax.random.key(7), (2, 3, 2, 3)) * 0.5
  t_B = jnp.array([30, 700])
  got = np.asarray(eps(None, x, t_B))
  score_fn = jax.jit(jax.vmap(jax.grad(lambda v, ab: _mixture_log_density(mix, ab, v)), (0, None)))
  for b, t in enumerate(np.asarray(t_B)):
    ab = float(FULL.alphas_cumprod[t])
    pts = np.asarray(x[b]).reshape(-1, mix.dim)
    score = score_fn(jnp.asarray(pts, jnp.float32), ab)
    want = -np.sqrt(1 - ab) * np.asarray(score)
    np.testing.assert_allclose(got[b].reshape(want.shape), want, atol=2e-4, rtol=1e-3)


def test_gaussian_eps_matches_the_samplers_gaussian_eps_fn():
  x = jax.random.normal(jax.random.key(8), (2, 4, 4, 3))
  t_B = jnp.array([0, 999])
  np.testing.assert_allclose(analytic.eps_fn(analytic.gaussian(0.5), FULL)(None, x, t_B),
                             samplers.gaussian_eps_fn(0.5, FULL)(None, x, t_B), atol=1e-5)


def test_toy_codec_contract_and_mmse_base_reconstruction():
  _, klt = np.linalg.eigh(VEC_COV)
  codec = toy.ToyCodec(analytic.correlated_gaussian(VEC_COV), klt)
  step = 0.2
  params = codec.params(step)
  x = analytic.sample(codec.source, jax.random.key(9), (2, 32, 32, 3))
  y_hat, mu = toy.encode(params, jnp.asarray(x, jnp.float32))
  target = constraints.make_target(codec.fns, params, y_hat, mu)
  # Re-encoding x̂_b gives ŷ back, and both ℓ_P variants vanish there: x̂_b is idempotent.
  np.testing.assert_array_equal(toy.encode(params, target.x_b)[0], y_hat)
  for variant in constraints.VARIANTS:
    np.testing.assert_allclose(constraints.idempotence_loss(codec.fns, params, target.x_b, target, variant),
                               0.0, atol=1e-8)
  # The centroid decoder is the MMSE decoder: its distortion is D* (per dimension).
  d_star = np.mean([c.d_star for c in codec.theory(step)])
  np.testing.assert_allclose(np.mean((np.asarray(target.x_b) - x) ** 2), d_star, rtol=0.05)
  mid = toy.ToyCodec(codec.source, klt, decoder="midpoint").params(step)
  x_mid = constraints.make_target(codec.fns, mid, y_hat, mu).x_b
  assert np.mean((np.asarray(x_mid) - x) ** 2) > 1.05 * d_star
  with pytest.raises(ValueError, match="orthonormal"):
    toy.ToyCodec(codec.source, klt * 2)


# ---- the real DCIC decoder on the toy codec ------------------------------------------------------

N_STEPS = 100
SHAPE = (1, 32, 32, 3)
STEP = 0.4
AXIS = (0.0, 0.25, 0.5, 0.75, 1.0)
K_D = AXIS + (0.0,) * 4            # the K_D axis at K_P = 0, then the K_P axis at K_D = 0
K_P = (0.0,) * 5 + AXIS[1:]


@functools.lru_cache(maxsize=None)
def _setup(name: str):
  source = {"gauss": GAUSS, "gmm": GMM}[name]
  codec = toy.ToyCodec(source, np.eye(3))
  params = codec.params(STEP)
  x = analytic.sample(source, jax.random.key(10), SHAPE)
  y_hat, mu = toy.encode(params, jnp.asarray(x, jnp.float32))
  target = constraints.make_target(codec.fns, params, y_hat, mu)
  dec = grid.GridDecoder(analytic.eps_fn(source, FULL), codec.fns, schedules.respace(FULL, N_STEPS),
                         sampler.DCICConfig(num_steps=N_STEPS, eta=1.0))
  keys = sampler.header_key((1 << 40) + 3)[None]
  out = np.asarray(dec(None, params, target, keys, np.array(K_D), np.array(K_P)))[:, 0]
  return source, codec, x, target, out


def _d(out, x):
  return np.mean((out - x) ** 2, axis=tuple(range(1, out.ndim)))


@pytest.mark.parametrize("name", ["gauss", "gmm"])
def test_zero_weights_reproduce_the_source_law(name):
  source, _, _, _, out = _setup(name)
  var = float(source.cov[0, 0])
  own = analytic.w2_sq_to_atoms(source, out[0])
  other = analytic.w2_sq_to_atoms(GMM if name == "gauss" else GAUSS, out[0])
  assert own < 0.01 * var and other > 5 * own, (own, other)


@pytest.mark.parametrize("name", ["gauss", "gmm"])
def test_k_d_walks_d_down_to_the_base_codec(name):
  """D falls monotonically with K_D; K_D = 1 (the distortion ball, κ·D_q) costs ≤ 5 % over x̂_b."""
  _, _, x, target, out = _setup(name)
  d = _d(out[:5], x)
  d_base = np.mean((np.asarray(target.x_b[0]) - x) ** 2)
  assert np.all(np.diff(d) < 0), d
  assert d_base <= d[-1] <= 1.05 * d_base, (d[-1], d_base)


@pytest.mark.parametrize("name", ["gauss", "gmm"])
def test_k_p_walks_the_samples_into_their_cells(name):
  """The share of values that re-encode to another cell falls with K_P, to none at K_P = 1."""
  _, _, _, target, out = _setup(name)
  outside = [np.mean(np.round(o / STEP) != np.asarray(target.y_hat[0])) for o in out[[0, 5, 6, 7, 8]]]
  assert np.all(np.diff(outside) <= 0) and outside[0] > 0.5, outside
  assert outside[-1] == 0.0, outside


@pytest.mark.parametrize("name", ["gauss", "gmm"])
def test_idempotence_lands_near_the_posterior_end_of_the_bound(name):
  source, codec, x, target, out = _setup(name)
  x_hat = out[8]                                     # DCIC_RP: (0, 1)
  d_star = codec.theory(STEP)[0].d_star
  d = np.mean((x_hat - x) ** 2)
  p = analytic.w2_sq_to_atoms(source, x_hat)
  print(f"DCIC_RP: D/D* = {d / d_star:.3f}, P/D* = {p / d_star:.4f}")
  # Between the MMSE point (D*, D*) and the posterior sample (2D*, 0), near the bound.
  assert 1.2 < d / d_star < 2.3 and p < 0.25 * d_star, (d / d_star, p / d_star)
  # The conditional-mean step takes x0 | x_t to be Gaussian: exact for the Gaussian source, a
  # bias for the mixture's coarse cells (docs/dcic.md), where the ratio to the bound is larger.
  slack = {"gauss": 1.2, "gmm": 1.6}[name]
  assert d < slack * toy.dp_bound(p, d_star, np.sqrt(d_star)), (d / d_star, p / d_star)
  prior_d = np.mean((out[0] - x) ** 2)               # K = 0: an independent prior draw
  assert prior_d > 2 * d


@pytest.mark.parametrize("x0_var", ["gaussian", "eps"])
def test_drawing_the_latents_makes_dcic_rp_the_gaussian_source_s_posterior_sample(x0_var):
  """With `idem_draw` each step's x̂0 is a draw of x0 | x_t, cells (exact for a Gaussian x0 and
  the toy codec), so DCIC_RP is the bound's P = 0 end, the posterior sample at (2D*, 0), where
  the conditional mean stops short of it (the test above); with the data's variance assumed
  (σ = 0.5, twice the source's) or the prior's own estimate from ε̂."""
  source, codec, x, target, out = _setup("gauss")
  dec = grid.GridDecoder(analytic.eps_fn(source, FULL), codec.fns, schedules.respace(FULL, N_STEPS),
                         sampler.DCICConfig(num_steps=N_STEPS, eta=1.0, idem_draw=True, x0_var=x0_var))
  keys = sampler.header_key((1 << 40) + 3)[None]
  x_hat = np.asarray(dec(None, codec.params(STEP), target, keys, np.zeros(1), np.ones(1)))[0, 0]
  d_star = codec.theory(STEP)[0].d_star
  d, p = np.mean((x_hat - x) ** 2) / d_star, analytic.w2_sq_to_atoms(source, x_hat) / d_star
  mean_d, mean_p = np.mean((out[8] - x) ** 2) / d_star, analytic.w2_sq_to_atoms(source, out[8]) / d_star
  print(f"DCIC_RP drawn: D/D* = {d:.3f}, P/D* = {p:.4f}; mean: {mean_d:.3f}, {mean_p:.4f}")
  assert 1.85 < d < 2.15 and p < 0.05 and p < mean_p, (d, p, mean_d, mean_p)
  assert np.all(np.round(x_hat / STEP) == np.asarray(target.y_hat[0]))
