"""The integer hyper-synthesis: exact, order-independent, and close to the float network."""
import jax.numpy as jnp
import numpy as np

from dcic_jax.codecs import fixed_point


def _z_hat(codec, seed=0, shape=(3, 5)):
  rng = np.random.default_rng(seed)
  z = rng.integers(-4, 5, shape + (codec.module.cfg.N,)).astype(np.float32)
  return (z + codec.medians).astype(np.float32)


def test_matches_float_network(codec):
  z_hat = _z_hat(codec)
  mu_f, sigma_f = codec.module.apply({"params": codec.params}, jnp.asarray(z_hat[None]), method="h_s")
  mu_i, sigma_i = fixed_point.mu_sigma_int(codec.qparams, codec.spec, z_hat)
  assert np.abs(fixed_point.to_float(mu_i) - np.asarray(mu_f[0])).max() < 5e-3
  assert np.abs(fixed_point.to_float(sigma_i) - np.asarray(sigma_f[0])).max() < 5e-3


def test_values_are_exact_integers(codec):
  mu_i, sigma_i = fixed_point.mu_sigma_int(codec.qparams, codec.spec, _z_hat(codec, 1))
  for a in (mu_i, sigma_i):
    assert np.array_equal(a, np.round(a)) and np.abs(a).max() < 2**24


def test_independent_of_summation_order(codec):
  """Permuting input channels (and the kernel rows with them) reorders every dot product."""
  z_hat = _z_hat(codec, 2)
  ref = fixed_point.hyper_synthesis_int(codec.qparams, codec.spec, z_hat)
  perm = np.random.default_rng(0).permutation(z_hat.shape[-1])
  (w0, b0), rest = codec.qparams[0], codec.qparams[1:]
  permuted = [(w0[:, :, perm, :], b0)] + list(rest)
  out = fixed_point.hyper_synthesis_int(permuted, codec.spec, z_hat[..., perm])
  np.testing.assert_array_equal(out, ref)


def test_scale_index_is_integer_comparison(codec, image):
  _, _, _, index = codec.encode_latents(image)
  bounds = codec.tables["scale_bounds"]
  assert bounds.dtype.kind == "i" and index.min() >= 0 and index.max() < len(bounds)


def test_scale_levels_are_picked_nearest_in_log_scale(codec):
  from dcic_jax.codecs.codec import scale_table
  s = scale_table()
  bounds = codec.tables["scale_bounds"]
  assert len(bounds) == len(s) - 1
  for k in (0, 1, len(s) // 2, len(s) - 1):
    for f in (0.985, 1.0, 1.015):  # within half a level step (levels are ≈6% apart) of level k
      sigma_int = np.floor(s[k] * f * 2.0**fixed_point.A_FRAC)
      assert np.searchsorted(bounds, sigma_int, side="left") == k
