"""DDPM ancestral and DDIM(η) samplers (Ho et al. 2020; Song et al. 2021).

DDIM with η = 1 is the DDPM posterior step, so both chains, started from the same noise and fed
the same z_i, must agree step for step; DDIM with η = 0 ignores z.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.diffusion import samplers, schedules, unet

FULL = schedules.make_schedule("linear", 1000)
SHAPE = (2, 8, 8, 3)


def _compile(fn, *args, static_argnums=()):
  """jit + compile without LLVM optimisation: about half the compile time on this CPU, and
  the same numbers within these tests' tolerances."""
  return jax.jit(fn, static_argnums=static_argnums).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})


def _two_chains(eps_fn, params, key, schedule, shape):
  """Run DDIM(η=1) and DDPM side by side from one x_T and one z_i per step: ([N] max |Δx|,
  final DDIM x, final DDPM x). One ε evaluation per step on the stacked pair."""
  n = schedule.num_steps
  timesteps = jnp.asarray(schedule.timesteps, jnp.int32)
  x_T = samplers.step_noise(key, n + 1, shape)

  def body(carry, i):
    x_a, x_b = carry
    t = jnp.full((2 * shape[0],), timesteps[i - 1], jnp.int32)
    eps = eps_fn(params, jnp.concatenate([x_a, x_b]), t)
    z = samplers.step_noise(key, i, shape)
    x_a, _ = samplers.ddim_step(x_a, eps[:shape[0]], i, z, schedule, eta=1.0)
    x_b, _ = samplers.ddpm_step(x_b, eps[shape[0]:], i, z, schedule)
    return (x_a, x_b), jnp.max(jnp.abs(x_a - x_b))

  (x_a, x_b), diffs = jax.lax.scan(body, (x_T, x_T), jnp.arange(n, 0, -1))
  return diffs, x_a, x_b


def test_ddim_eta1_is_ddpm_step_for_step_over_all_1000_steps():
  eps_fn = samplers.gaussian_eps_fn(0.6, FULL)
  key = jax.random.key(0)
  diffs, x_ddim, x_ddpm = _compile(
      functools.partial(_two_chains, eps_fn, None, schedule=FULL, shape=SHAPE), key)(key)
  assert diffs.shape == (1000,)
  assert float(diffs.max()) < 1e-4
  assert float(jnp.std(x_ddim)) > 0.3  # a real sample, not a collapsed one
  # The factory samplers follow the same noise convention (x_T from fold_in(key, N+1), ...).
  ddim = _compile(samplers.make_ddim_sampler(eps_fn, FULL, eta=1.0), None, key, SHAPE,
                  static_argnums=2)
  ddpm = _compile(samplers.make_ddpm_sampler(eps_fn, FULL), None, key, SHAPE, static_argnums=2)
  np.testing.assert_allclose(ddim(None, key), x_ddim, atol=1e-5)
  np.testing.assert_allclose(ddpm(None, key), x_ddpm, atol=1e-5)


def test_ddim_eta1_is_ddpm_with_a_tiny_unet_on_respaced_steps():
  cfg = unet.UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                        attention_levels=(1,), norm_groups=8, num_heads=2)
  params = unet.random_params(cfg, seed=1)
  eps_fn = unet.make_eps_fn(unet.UNet(cfg))
  schedule = schedules.respace(FULL, 12)
  key = jax.random.key(1)
  diffs, x_ddim, _ = _compile(
      functools.partial(_two_chains, eps_fn, schedule=schedule, shape=(1, 16, 16, 3)),
      params, key)(params, key)
  assert float(diffs.max()) < 1e-5
  assert float(jnp.abs(x_ddim).max()) <= 1.0  # the last step returns the clipped x̂0


def test_ddim_eta0_is_deterministic_and_keys_reproduce():
  eps_fn = samplers.gaussian_eps_fn(0.6, FULL)
  schedule = schedules.respace(FULL, 25)
  # Flat draws (samplers.step_noise): 4-D threefry draws compile slowly on CPU.
  x_t = samplers.step_noise(jax.random.key(2), 0, SHAPE)
  eps = eps_fn(None, x_t, jnp.full((2,), schedule.timesteps[9]))
  z1, z2 = (samplers.step_noise(jax.random.key(3), i, SHAPE) for i in (1, 2))
  a, _ = samplers.ddim_step(x_t, eps, 10, z1, schedule, eta=0.0)
  b, _ = samplers.ddim_step(x_t, eps, 10, z2, schedule, eta=0.0)
  np.testing.assert_array_equal(a, b)  # η = 0: no noise enters
  c, _ = samplers.ddim_step(x_t, eps, 10, z1, schedule, eta=0.5)
  assert float(jnp.abs(c - a).max()) > 1e-3

  key = jax.random.key(4)
  ddim = _compile(samplers.make_ddim_sampler(eps_fn, schedule, eta=0.0), None, key, SHAPE,
                  static_argnums=2)
  ddpm = _compile(samplers.make_ddpm_sampler(eps_fn, schedule, variance="large"), None, key,
                  SHAPE, static_argnums=2)
  np.testing.assert_array_equal(ddim(None, key), ddim(None, key))
  np.testing.assert_array_equal(ddpm(None, key), ddpm(None, key))
  assert float(jnp.abs(ddim(None, key) - ddim(None, jax.random.key(5))).max()) > 0.1


def test_x0_and_eps_round_trip_and_last_step_returns_x0():
  x_t = samplers.step_noise(jax.random.key(6), 0, SHAPE)
  eps = samplers.step_noise(jax.random.key(7), 0, SHAPE)
  schedule = schedules.respace(FULL, 10)
  c = samplers.step_coefs(schedule, 7)
  x0 = samplers.predict_x0(x_t, eps, c, clip=False)
  np.testing.assert_allclose(samplers.eps_from_x0(x_t, x0, c), eps, atol=1e-5)
  assert float(jnp.abs(samplers.predict_x0(x_t, 5 * eps, c)).max()) <= 1.0
  x_s, x0_hat = samplers.ddim_step(x_t, eps, 1, eps, schedule, eta=1.0)
  np.testing.assert_allclose(x_s, x0_hat, atol=1e-6)
  x_s, x0_hat = samplers.ddpm_step(x_t, eps, 1, eps, schedule, variance="large")
  np.testing.assert_allclose(x_s, x0_hat, atol=1e-6)
