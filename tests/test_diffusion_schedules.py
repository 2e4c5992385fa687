"""Noise schedules and respacing (Ho et al. 2020; Nichol & Dhariwal 2021)."""
import math

import numpy as np
import pytest

from dcic_jax.diffusion import schedules


def test_linear_schedule_is_ddpm():
  s = schedules.make_schedule("linear", 1000)
  betas = 1.0 - s.alphas_cumprod / s.alphas_cumprod_prev
  assert s.alphas_cumprod.dtype == np.float64
  np.testing.assert_allclose(betas[[0, -1]], [1e-4, 0.02], rtol=1e-12)
  np.testing.assert_allclose(s.alphas_cumprod, np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000)),
                             rtol=1e-12)
  np.testing.assert_array_equal(s.timesteps, np.arange(1000))
  assert s.alphas_cumprod_prev[0] == 1.0


def test_cosine_schedule_follows_the_formula():
  s = schedules.make_schedule("cosine", 1000)
  f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
  expected = np.array([f((t + 1) / 1000) / f(0.0) for t in range(1000)])
  unclipped = s.betas < 0.999
  np.testing.assert_allclose(s.alphas_cumprod[:900], expected[:900], rtol=1e-10)
  assert unclipped[:900].all() and s.betas.max() <= 0.999
  assert np.all(np.diff(s.alphas_cumprod) < 0)


def test_respacing_keeps_the_ends_and_the_alpha_bar():
  full = schedules.make_schedule("linear", 1000)
  r = schedules.respace(full, 50)
  assert r.num_steps == 50 and r.timesteps[0] == 0 and r.timesteps[-1] == 999
  assert np.all(np.diff(r.timesteps) > 0)
  np.testing.assert_array_equal(r.alphas_cumprod, full.alphas_cumprod[r.timesteps])
  assert r.alphas_cumprod_prev[0] == 1.0
  np.testing.assert_array_equal(r.alphas_cumprod_prev[1:], r.alphas_cumprod[:-1])
  # The respaced β define a chain of their own with the same ᾱ at the kept steps.
  np.testing.assert_allclose(np.cumprod(1.0 - r.betas), r.alphas_cumprod, rtol=1e-12)


def test_respacing_to_all_steps_is_the_identity():
  full = schedules.make_schedule("cosine", 100)
  r = schedules.respace(full, 100)
  np.testing.assert_array_equal(r.timesteps, full.timesteps)
  np.testing.assert_array_equal(r.alphas_cumprod, full.alphas_cumprod)
  np.testing.assert_array_equal(r.alphas_cumprod_prev, full.alphas_cumprod_prev)


def test_explicit_timesteps_and_bad_arguments():
  full = schedules.make_schedule("linear", 1000)
  r = schedules.respace(full, timesteps=[0, 500, 999])
  np.testing.assert_array_equal(r.timesteps, [0, 500, 999])
  with pytest.raises(ValueError, match="unknown noise schedule"):
    schedules.make_schedule("sigmoid")
  with pytest.raises(ValueError, match="cannot respace"):
    schedules.respace(full, 1001)
  with pytest.raises(ValueError, match="increase"):
    schedules.respace(full, timesteps=[5, 5, 10])
  with pytest.raises(ValueError, match="full schedule"):
    schedules.respace(r, 2)


def test_power_spacing_is_denser_at_low_noise_and_keeps_the_ends():
  """power = 2 puts the steps at (T−1)·(i/(N−1))², strictly increasing even where the rounded
  squares repeat; power = 1 is the even spacing; powers below 1 are refused."""
  quad = schedules.space_timesteps(1000, 20, power=2.0)
  assert quad[0] == 0 and quad[-1] == 999 and np.all(np.diff(quad) > 0)
  np.testing.assert_array_equal(quad[5:8], np.round(999 * (np.arange(5, 8) / 19) ** 2))
  assert np.all(np.diff(np.diff(quad)) >= 0)                # gaps grow with the noise level
  many = schedules.space_timesteps(1000, 100, power=2.0)
  np.testing.assert_array_equal(many[:5], [0, 1, 2, 3, 4])  # squares that round alike moved apart
  np.testing.assert_array_equal(schedules.space_timesteps(1000, 20, power=1.0),
                                schedules.space_timesteps(1000, 20))
  full = schedules.make_schedule("linear", 1000)
  np.testing.assert_array_equal(schedules.respace(full, 20, power=2.0).timesteps, quad)
  with pytest.raises(ValueError, match="power"):
    schedules.space_timesteps(1000, 20, power=0.5)
