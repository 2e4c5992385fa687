"""The DCIC decoder on a tiny random codec and the analytic Gaussian prior.

The analytic prior (exact ε of N(0, 0.5²) data) keeps every decode to a few seconds and makes
the boundary behaviour checkable: K = 0 is the plain sampler, K_D → 1 lands on x̂_b (in the
distortion ball of the project mode), K_P lowers the re-encoding error (to zero in the project
mode, monotonically in K_P), and `dps` is the Idempotence decoder's update (an independent oracle).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import IMAGES, tiny_codec
from dcic_jax.dcic import calibrate, constraints, grid, projections, sampler
from dcic_jax.diffusion import samplers, schedules
from dcic_jax.entropy.quantization import round_ste
from dcic_jax.errors import BitstreamError, UserError

FULL = schedules.make_schedule("linear", 1000)
N = 4
SCHEDULE = schedules.respace(FULL, N)
EPS_FN = samplers.gaussian_eps_fn(0.5, FULL)
# One grid per mode covers every test: K = 0, a K_D ladder, and K_P alone.
K_D = (0.0, 0.5, 1.0, 0.0)
K_P = (0.0, 0.0, 0.0, 1.0)
MODES = {"project": dict(mode="project", ball=0.0),
         "schedule-xt": dict(mode="schedule", grad="xt"),
         "schedule-x0": dict(mode="schedule", grad="x0"),
         "schedule-x0-cap": dict(mode="schedule", grad="x0", step_cap=True),
         "dps": dict(mode="dps", step_size=8.0)}   # few steps: a larger ζ than the 1000-step 0.6


@functools.lru_cache(maxsize=None)
def setup(num_images: int = 1):
  """(codec, CodecFns, stacked targets, keys, calibrated w_P) for 64×64 crops of kodim23."""
  from dcic_jax.data.images import load_rgb
  codec = tiny_codec("mbt2018-mean")
  photo = load_rgb(IMAGES / "kodim23_crop.png")
  decoded = [codec.decompress(codec.compress(photo[:64, 64 * k:64 * k + 64], seed=11 + k))
             for k in range(num_images)]
  fns = constraints.CodecFns.from_module(codec.module)
  target = constraints.make_target(fns, codec.params, jnp.asarray(np.stack([d.y_hat for d in decoded])),
                                   jnp.asarray(np.stack([d.mu for d in decoded])),
                                   jnp.asarray(np.stack([d.r for d in decoded])))
  keys = jnp.stack([sampler.header_key(d.header.seed) for d in decoded])
  w_p = float(np.median(calibrate.gradient_ratio(fns, codec.params, target, jax.random.key(0),
                                                 "reconstruction")))
  return codec, fns, target, keys, w_p


@functools.lru_cache(maxsize=None)
def decoder(mode: str) -> grid.GridDecoder:
  _, fns, _, _, w_p = setup()
  return grid.GridDecoder(EPS_FN, fns, SCHEDULE, sampler.DCICConfig(num_steps=N, w_p=w_p, **MODES[mode]))


@functools.lru_cache(maxsize=None)
def decode_grid(mode: str, mesh_devices: int = 4) -> np.ndarray:
  """[len(K_D), 64, 64, 3] decodes of the first image."""
  codec, _, target, keys, _ = setup()
  mesh = grid.grid_mesh(1, jax.devices()[:mesh_devices])
  return np.asarray(decoder(mode)(None, codec.params, target, keys, K_D, K_P, mesh=mesh))[:, 0]


def _rmse(x, target):
  return np.sqrt(np.mean((x - np.asarray(target.x_b[0])) ** 2, axis=(1, 2, 3)))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_zero_weights_are_the_plain_sampler_bit_for_bit(mode):
  _, _, _, keys, _ = setup()
  key = jax.random.wrap_key_data(keys[0], impl=sampler.PRNG_IMPL)
  plain = jax.jit(samplers.make_ddim_sampler(EPS_FN, SCHEDULE, eta=1.0), static_argnums=2)(
      None, key, (1, 64, 64, 3))
  if mode == "project":
    # The same arithmetic (the updates are exactly zero), but a program with the idempotence
    # step's CG loop in it: XLA fuses the step's last multiply-adds differently (README,
    # "Determinism"), a few ulps.
    np.testing.assert_allclose(decode_grid(mode)[0], np.asarray(plain[0]), rtol=0, atol=2e-6)
  else:
    np.testing.assert_array_equal(decode_grid(mode)[0], np.asarray(plain[0]))


@pytest.mark.parametrize("mode", ["project", "schedule-xt", "schedule-x0", "schedule-x0-cap"])
def test_growing_k_d_converges_to_the_base_reconstruction(mode):
  _, _, target, _, _ = setup()
  rmse = _rmse(decode_grid(mode)[:3], target)        # K_D = 0, 0.5, 1 with K_P = 0
  assert np.all(np.diff(rmse) < 0), rmse
  assert rmse[-1] < (1e-6 if mode == "project" else 0.05 * rmse[0]), rmse   # project: exactly x̂_b


@pytest.mark.parametrize("mode", sorted(MODES))
def test_k_p_lowers_the_re_encoding_error(mode):
  codec, fns, target, _, _ = setup()
  out = jnp.asarray(decode_grid(mode)[[0, 3]])       # K_P = 0 and K_P = 1 (K_D = 0)
  err = np.asarray(constraints.reencode_error(fns, codec.params, out,
                                              jax.tree.map(lambda a: jnp.repeat(a, 2, 0), target)))
  assert err[1] < 0.9 * err[0], err


def test_step_cap_stops_an_oversized_step_from_overshooting():
  """η₀ = 5 with K_D = 1 oversteps ℓ_D's minimum (x̂_b) tenfold; capped, each inner step lands
  on the minimum of ℓ_D's quadratic model, which is x̂_b itself."""
  codec, fns, target, keys, w_p = setup()
  rmse = {}
  for cap in (False, True):
    cfg = sampler.DCICConfig(num_steps=N, mode="schedule", grad="x0", step_size=5.0, step_cap=cap, w_p=w_p)
    out = grid.GridDecoder(EPS_FN, fns, SCHEDULE, cfg)(None, codec.params, target, keys, [1.0], [0.0],
                                                       mesh=grid.grid_mesh(1, jax.devices()[:1]))
    rmse[cap] = float(_rmse(np.asarray(out)[:, 0], target)[0])
  assert rmse[True] < 1e-3 and rmse[False] > 0.1, rmse


@pytest.mark.parametrize("mode", ["project", "schedule-xt"])
def test_same_bits_across_runs_and_on_one_or_four_devices_and_no_coupling(mode):
  """A decode of image 1 alone on one device equals its decode beside image 0 on four devices."""
  codec, fns, target2, keys2, w_p = setup(2)
  dec = decoder(mode)
  four = np.asarray(dec(None, codec.params, target2, keys2, K_D, K_P))
  np.testing.assert_array_equal(four, np.asarray(dec(None, codec.params, target2, keys2, K_D, K_P)))
  alone = np.asarray(dec(None, codec.params, jax.tree.map(lambda a: a[1:], target2), keys2[1:], K_D,
                         K_P, mesh=grid.grid_mesh(1, jax.devices()[:1])))
  if mode == "project":   # K_P > 0 runs a CG loop that XLA compiles per trip count: a few ulps
    np.testing.assert_array_equal(four[:3, 1], alone[:3, 0])
    np.testing.assert_allclose(four[3:, 1], alone[3:, 0], rtol=0, atol=2e-6)
  else:
    np.testing.assert_array_equal(four[:, 1], alone[:, 0])
  assert np.abs(four[:, 0] - four[:, 1]).max() > 0.1     # two different images and seeds


def test_one_cpu_device_runs_the_grid_as_concurrent_parts_of_the_same_points(monkeypatch):
  """On one CPU device the grid is cut into `host_parts` concurrent calls of one compiled program
  (5 points: 3 + 3, the last repeated and trimmed); each point is the one decoded in one call,
  up to the last bits of a program compiled for fewer items."""
  codec, fns, target, keys, w_p = setup()
  mesh = grid.grid_mesh(1, jax.devices()[:1])
  cfg = sampler.DCICConfig(num_steps=N, w_p=w_p, **MODES["project"])
  k_d, k_p = np.array([0, 0.5, 1, 0, 1.0]), np.array([0, 0, 0, 1, 1.0])
  calls = []
  split = grid.GridDecoder(EPS_FN, fns, SCHEDULE, cfg)
  real = split._concurrently  # pylint: disable=protected-access
  monkeypatch.setattr(split, "_concurrently", lambda m, args: calls.append(len(args)) or real(m, args))
  parts = np.asarray(split(None, codec.params, target, keys, k_d, k_p, mesh=mesh))
  whole = np.asarray(grid.GridDecoder(EPS_FN, fns, SCHEDULE, cfg, host_parts=1)(
      None, codec.params, target, keys, k_d, k_p, mesh=mesh))
  assert calls == [2] and parts.shape == whole.shape == (5, 1, 64, 64, 3)
  np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-5)
  assert np.abs(parts[0] - parts[2]).max() > 0.01  # the points differ
  # Chunks of 2: the grid is padded to whole chunks in every part (5 points: 4 + 4, not 3 + 3).
  chunked = np.asarray(grid.GridDecoder(EPS_FN, fns, SCHEDULE, cfg, chunk=2)(
      None, codec.params, target, keys, k_d, k_p, mesh=mesh))
  np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5)


def test_one_trace_for_every_grid_of_the_same_shape():
  codec, _, target, keys, _ = setup()
  dec = decoder("project")
  first = decode_grid("project")
  before = dec.traces
  other = np.asarray(dec(None, codec.params, target, keys, np.linspace(0, 1, 4), np.ones(4),
                         mesh=grid.grid_mesh(1, jax.devices()[:4])))
  assert dec.traces == before
  assert not np.array_equal(other[:, 0], first)


# ---- the project mode's own contract ------------------------------------------------------------

AXIS = (0.0, 0.25, 0.5, 0.75, 1.0)


@functools.lru_cache(maxsize=None)
def project_axes(ball: float = sampler.DCICConfig.ball):
  """[10, 64, 64, 3]: the K_D axis at K_P = 0, then the K_P axis at K_D = 0 (N = 4 steps)."""
  codec, fns, target, keys, _ = setup()
  dec = grid.GridDecoder(EPS_FN, fns, SCHEDULE, sampler.DCICConfig(num_steps=N, ball=ball))
  k_d = list(AXIS) + [0.0] * 5
  k_p = [0.0] * 5 + list(AXIS)
  return np.asarray(dec(None, codec.params, target, keys, k_d, k_p,
                        mesh=grid.grid_mesh(1, jax.devices()[:1])))[:, 0]


def test_project_k_d_closes_in_on_the_distortion_ball():
  """Distance to x̂_b falls with K_D, and K_D = 1 ends inside the ball ‖x̂ − x̂_b‖² ≤ κ·D_q."""
  codec, fns, target, keys, _ = setup()
  out = project_axes()[:5]
  dist_sq = np.sum((out - np.asarray(target.x_b[0])) ** 2, axis=(1, 2, 3))
  assert np.all(np.diff(dist_sq) < 0), dist_sq
  d_q = float(projections.quantisation_error(fns, codec.params, target,
                                             jax.random.fold_in(jax.random.wrap_key_data(keys[0]), N + 3))[0, 0, 0, 0])
  assert dist_sq[-1] <= sampler.DCICConfig.ball * d_q * (1 + 1e-4), (dist_sq[-1], d_q)
  assert dist_sq[-1] > 0.5 * sampler.DCICConfig.ball * d_q     # the prior fills the ball, not x̂_b alone


def test_project_k_p_lowers_the_re_encoding_error_monotonically_to_zero():
  codec, fns, target, _, _ = setup()
  out = jnp.asarray(project_axes()[5:])
  err = np.asarray(constraints.reencode_error(fns, codec.params, out,
                                              jax.tree.map(lambda a: jnp.repeat(a, 5, 0), target)))
  assert np.all(np.diff(err) <= 1e-6) and err[0] > 3, err
  assert err[-1] == 0.0, err                 # K_P = 1: re-encoding the output gives ŷ exactly


def _idempotence_oracle(fns, params, target, key, zeta):
  """The Idempotence decoder (Xu et al. 2024; DPS ordering), written out independently:
  DDPM posterior step from the clipped x̂0, then x ← x' − ζ·∇_{x_t}‖g_s(Q(g_a(x̂0))) − x̂_b‖."""
  ab = np.asarray(SCHEDULE.alphas_cumprod)
  ab_prev = np.asarray(SCHEDULE.alphas_cumprod_prev)
  shape = (1, 64, 64, 3)
  normal = lambda i: jax.random.normal(jax.random.fold_in(key, i), (int(np.prod(shape)),)).reshape(shape)
  x = normal(N + 1)
  for i in range(N, 0, -1):
    a, a_prev = ab[i - 1], ab_prev[i - 1]
    beta = 1.0 - a / a_prev
    t = jnp.full((1,), SCHEDULE.timesteps[i - 1], jnp.int32)
    z = normal(i)

    def measured(x_t):
      x0 = jnp.clip((x_t - np.sqrt(1 - a) * EPS_FN(None, x_t, t)) / np.sqrt(a), -1, 1)
      mean = np.sqrt(a_prev) * beta / (1 - a) * x0 + np.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * x_t
      x_prev = mean + np.sqrt(beta * (1 - a_prev) / (1 - a)) * z
      y = fns.g_a(params, (x0 + 1) / 2)
      y_hat = round_ste(y - target.mu) + target.mu
      residual = fns.g_s(params, y_hat) * 2 - 1 - target.x_s
      return jnp.sqrt(jnp.sum(residual ** 2)), x_prev

    grad, x_prev = jax.grad(measured, has_aux=True)(x)
    x = x_prev - zeta * grad
  return np.asarray(x[0])


def test_dps_with_k_p_1_is_the_idempotence_decoder():
  codec, fns, target, keys, _ = setup()
  zeta = 0.6
  cfg = sampler.DCICConfig(num_steps=N, mode="dps", step_size=zeta, w_p=1.0)
  ours = np.asarray(grid.GridDecoder(EPS_FN, fns, SCHEDULE, cfg)(
      None, codec.params, target, keys, [0.0], [1.0]))[0, 0]
  key = jax.random.wrap_key_data(keys[0], impl=sampler.PRNG_IMPL)
  oracle = _idempotence_oracle(fns, codec.params, target, key, zeta)
  np.testing.assert_allclose(ours, oracle, atol=2e-5)
  plain = decode_grid("dps")[0]
  assert np.abs(ours - plain).max() > 1e-3        # the guidance did something


def test_late_start_is_the_sampler_from_the_noised_base_reconstruction():
  codec, fns, target, keys, w_p = setup()
  k = 3
  cfg = sampler.DCICConfig(num_steps=N, start_step=k, w_p=w_p)
  one = jax.jit(sampler.make_decode_one(EPS_FN, fns, SCHEDULE, cfg))
  late = np.asarray(one(None, codec.params, jax.tree.map(lambda a: a[0], target), keys[0], 0.0, 0.0))
  key = jax.random.wrap_key_data(keys[0], impl=sampler.PRNG_IMPL)
  a = SCHEDULE.alphas_cumprod[k - 1]
  x = np.sqrt(a) * target.x_b + np.sqrt(1 - a) * samplers.step_noise(key, N + 1, (1, 64, 64, 3))
  for i in range(k, 0, -1):
    t = jnp.full((1,), SCHEDULE.timesteps[i - 1], jnp.int32)
    x, _ = samplers.ddim_step(x, EPS_FN(None, x, t), i, samplers.step_noise(key, i, x.shape),
                              SCHEDULE, eta=1.0)
  np.testing.assert_allclose(late, np.asarray(x[0]), atol=1e-5)
  assert _rmse(late[None], target)[0] < _rmse(decode_grid("schedule-xt")[:1], target)[0]


def test_header_key_and_bad_prng_tag():
  np.testing.assert_array_equal(sampler.header_key(2**64 - 1), [2**32 - 1, 2**32 - 1])
  np.testing.assert_array_equal(sampler.header_key((7 << 32) + 9), [7, 9])
  with pytest.raises(BitstreamError, match="PRNG"):
    sampler.header_key(0, "rbg")


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="ddim"), "mode"), (dict(ball=-1.0), "ball"), (dict(margin=0.5), "margin"), (dict(grad="x1"), "grad"), (dict(optimizer="lbfgs"), "optimizer"),
    (dict(variant="pixels"), "variant"), (dict(start_step=200), "start_step"),
    (dict(spacing_power=0.5), "spacing_power"),
    (dict(mode="dps", grad="x0"), "dps")])
def test_bad_settings_are_user_errors(kwargs, match):
  with pytest.raises(UserError, match=match):
    sampler.DCICConfig(**kwargs)


def test_decoders_that_differentiate_the_prior_prepare_its_weights_once():
  """`xt` and `dps` steps differentiate ε_θ in every step: they call it on
  `eps_fn.prepare_for_input_grads(params)`, made once per decode; the others on the weights."""
  codec, fns, target, keys, w_p = setup()
  one = jax.tree.map(lambda a: a[0], target)
  seen, prepared = [], []

  def eps_fn(params, x, t):
    seen.append(params)
    return EPS_FN(None, x, t)
  eps_fn.prepare_for_input_grads = lambda p: prepared.append(p) or {"ready": p}
  for mode, want in (("schedule-xt", True), ("dps", True), ("schedule-x0", False), ("project", False)):
    seen.clear(), prepared.clear()
    decode = sampler.make_decode_one(eps_fn, fns, SCHEDULE,
                                     sampler.DCICConfig(num_steps=N, w_p=w_p, **MODES[mode]))
    jax.eval_shape(decode, jnp.zeros(()), codec.params, one, keys[0], 1.0, 1.0)
    assert seen and len(prepared) == int(want), mode
    assert all(isinstance(p, dict) == want for p in seen), mode


@pytest.mark.parametrize("std", [0.25, 0.5])
def test_x0_variance_from_eps_is_the_gaussian_variance_for_gaussian_data(std):
  """The prior's own estimate √((1−ᾱ)/ᾱ)·mean(ε̂·x̂0), with the exact ε̂ of N(0, σ²) data and x_t
  drawn from its marginal, is the closed form σ²(1−ᾱ)/(ᾱσ² + 1−ᾱ) from one 64² image, at every
  noise level (1 − mean ε̂² would be off by 0 to 3000× at high noise); never negative."""
  full = schedules.make_schedule("linear", 1000)
  sched = schedules.respace(full, 20)
  eps_fn = samplers.gaussian_eps_fn(std, full)
  want = sampler.x0_variance(sched, std)
  for i in (1, 5, 12, 16, 20):
    c = samplers.step_coefs(sched, i)
    k0, k1 = jax.random.split(jax.random.key(i))
    x0 = std * jax.random.normal(k0, (3, 64, 64, 3))
    x_t = c.sqrt_ab_t * x0 + c.sqrt_1m_ab_t * jax.random.normal(k1, x0.shape)
    eps = eps_fn(None, x_t, jnp.full((3,), sched.timesteps[i - 1], jnp.int32))
    got = np.asarray(sampler.x0_variance_from_eps(x_t, eps, c))
    assert got.shape == (3, 1, 1, 1)
    np.testing.assert_allclose(got.ravel(), want[i - 1], rtol=0.06)
  c = samplers.step_coefs(sched, 10)
  x_t = jnp.ones((1, 4, 4, 3))
  assert float(sampler.x0_variance_from_eps(x_t, -x_t, c)[0, 0, 0, 0]) == 0.0
