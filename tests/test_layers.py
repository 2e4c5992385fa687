"""Small building blocks: depth-to-space, the lower-bound gradient, GDN."""
import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.codecs import layers


def test_depth_to_space_layout():
  x = np.arange(2 * 3 * 4 * 8, dtype=np.float32).reshape(2, 3, 4, 8)  # C = 2 after r=2
  y = np.asarray(layers.depth_to_space(jnp.asarray(x), 2))
  assert y.shape == (2, 6, 8, 2)
  for a in range(2):
    for b in range(2):
      np.testing.assert_array_equal(y[:, a::2, b::2, :], x[..., (a * 2 + b) * 2:(a * 2 + b + 1) * 2])


def test_lower_bound_gradient_pushes_up_from_below():
  g = jax.grad(lambda x: -layers.lower_bound(x, 1.0))(0.5)  # loss falls as x rises: let it through
  assert g == -1.0
  g = jax.grad(lambda x: layers.lower_bound(x, 1.0))(0.5)   # would push further down: blocked
  assert g == 0.0
  assert layers.lower_bound(0.5, 1.0) == 1.0


def test_gdn_identity_at_zero_gamma_and_inverse_direction():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 6))
  gdn, igdn = layers.GDN(), layers.GDN(inverse=True)
  p = gdn.init(jax.random.PRNGKey(1), x)
  y, z = gdn.apply(p, x), igdn.apply(p, x)
  norm = np.sqrt(1.0 + 0.1 * np.asarray(x) ** 2)  # beta = 1, gamma = 0.1 I at init
  np.testing.assert_allclose(np.asarray(y), np.asarray(x) / norm, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(z), np.asarray(x) * norm, rtol=1e-5)
