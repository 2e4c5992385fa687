"""experiments/ideal_steps_1d.py: the exact conditional steps it compares DCIC with."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from conftest import REPO
from dcic_jax.diffusion import analytic, samplers, schedules

sys.path.insert(0, str(REPO / "experiments"))
import analytic_rdp  # noqa: E402
import ideal_steps_1d  # noqa: E402

FULL = schedules.make_schedule("linear", 1000)


@pytest.mark.parametrize("name", ["gauss", "gmm"])
@pytest.mark.parametrize("t", [30, 400])
def test_prior_mean_is_the_analytic_prior_s_x0(name, t):
  """E[x0 | x_t] from the closed-form posterior components equals the analytic prior's x̂0."""
  source, _ = analytic_rdp.make_source(name)
  x_t = np.linspace(-1.5, 1.5, 31)
  ab = float(FULL.alphas_cumprod[t])
  got = ideal_steps_1d.x0_step("prior-mean", source, x_t, ab, None, None, None)
  eps = analytic.eps_fn(source, FULL)(None, jnp.asarray(x_t, jnp.float32).reshape(1, 31, 1, 1),
                                      jnp.full((1,), t, jnp.int32))
  want = (x_t - np.sqrt(1 - ab) * np.asarray(eps, np.float64).reshape(-1)) / np.sqrt(ab)
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_log_box_mass_in_both_tails_and_the_middle():
  a = np.array([-1.0, 3.0, 30.0, -31.0, 8.0])
  b = np.array([1.0, 4.0, 31.0, -30.0, 8.5])
  got = ideal_steps_1d.log_box_mass(a, b)
  direct = np.log(special.ndtr(b[:2]) - special.ndtr(a[:2]))
  np.testing.assert_allclose(got[:2], direct, rtol=1e-10)
  # Far tails: log Φc(30) ≈ −30²/2 − log(30√(2π)); the box (30, 31) holds nearly all of it.
  np.testing.assert_allclose(got[2], special.log_ndtr(-30.0), rtol=1e-6)
  np.testing.assert_allclose(got[3], got[2], rtol=1e-12)        # the mirror box
  assert np.all(np.isfinite(got))


def test_conditional_steps_stay_in_their_cells_and_the_draw_is_a_posterior_sample():
  """Ideal mean and draw keep every value in its cell; with 20 steps the draw is still at the
  bound's P = 0 end (2D*, 0), where the mean stops short of D = 2D*."""
  source, _ = analytic_rdp.make_source("gauss")
  key = jax.random.key(3)
  lo, hi = np.array([-0.3, 0.0]), np.array([-0.2, 0.1])
  for rule in ("ideal-mean", "ideal-draw"):
    u = ideal_steps_1d.x0_step(rule, source, np.array([0.9, -0.9]), 0.5, lo, hi, key)
    assert np.all((u >= lo) & (u <= hi)), (rule, u)
  draw = ideal_steps_1d.run(source, 0.25, "ideal-draw", 20, 20000, key)
  mean = ideal_steps_1d.run(source, 0.25, "ideal-mean", 20, 20000, key)
  assert 1.9 < draw["D"] < 2.1 and draw["P"] < 0.02, draw
  assert mean["D"] < 1.6 and mean["P"] > 3 * draw["P"], mean
