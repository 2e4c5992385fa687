"""Small building blocks: depth-to-space, the lower-bound gradient, GDN."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def _transposed_kernel(rng, cin, cout):
  """A 3×3 sub-pixel kernel holding a random 5×5 stride-2 transposed conv (CompressAI's upsampling)."""
  from dcic_jax.codecs.compressai_import import deconv_kernel
  return deconv_kernel(rng.normal(size=(cin, cout, 5, 5)).astype(np.float32))


def test_transposed_taps_detects_imported_kernels_only():
  rng = np.random.default_rng(0)
  assert layers.transposed_taps(_transposed_kernel(rng, 4, 3))
  assert not layers.transposed_taps(rng.normal(size=(3, 3, 4, 12)))  # a trained sub-pixel kernel
  assert not layers.transposed_taps(np.zeros((2, 2, 4, 12)))          # up_kernel = 2
  k = _transposed_kernel(rng, 4, 3).reshape(3, 3, 4, 2, 2, 3)
  k[0, 1, 2, 1, 0, 1] = 1e-30                                          # one tiny nonzero skipped tap
  assert not layers.transposed_taps(k.reshape(3, 3, 4, 12))


@pytest.mark.parametrize("cout", [3, layers.FEW_OUTPUTS + 1])  # tap products / one conv per phase
def test_phase_conv_equals_the_dense_subpixel_conv(cout):
  """Upsample(transposed=True) skips the zero taps and gives the dense conv's output (odd sizes, in != out)."""
  rng = np.random.default_rng(cout)
  x = jnp.asarray(rng.normal(size=(2, 5, 7, 6)), jnp.float32)
  params = {"conv": {"kernel": jnp.asarray(_transposed_kernel(rng, 6, cout)),
                     "bias": jnp.asarray(rng.normal(size=(4 * cout,)), jnp.float32)}}
  dense = layers.Upsample(cout).apply({"params": params}, x)
  split = jax.jit(layers.Upsample(cout, transposed=True).apply)({"params": params}, x)
  assert split.shape == dense.shape == (2, 10, 14, cout)
  np.testing.assert_allclose(np.asarray(split), np.asarray(dense), rtol=0, atol=1e-5)
  # Same parameter tree: checkpoints load into either form.
  init = layers.Upsample(cout, transposed=True).init(jax.random.PRNGKey(0), x)["params"]
  assert jax.tree.map(np.shape, init) == jax.tree.map(np.shape, params)
