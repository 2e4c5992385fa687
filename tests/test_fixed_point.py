"""The integer hyper-synthesis: exact, order-independent, and close to the float network; files of
format versions 1–2 keep the grids they were written with."""
import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.codecs import fixed_point
from dcic_jax.errors import BitstreamError


def _z_hat(codec, seed=0, shape=(3, 5)):
  rng = np.random.default_rng(seed)
  z = rng.integers(-4, 5, shape + (codec.module.cfg.N,)).astype(np.float32)
  return (z + codec.medians).astype(np.float32)


def _mu_sigma(codec, z_hat, grids=fixed_point.GRIDS):
  """(mu_int, sigma_int) of the NumPy reference, on the fine grid and on the coder's."""
  qparams = fixed_point.quantize_hyper_params(codec.params["h_s_net"], codec.spec, grids)
  out = fixed_point.hyper_synthesis_int(qparams, codec.spec, z_hat, grids)
  return (fixed_point.split_mu_sigma(out, codec.spec),
          fixed_point.split_mu_sigma(fixed_point.to_coder_grid(out, grids), codec.spec))


def test_matches_float_network(codec):
  """Within ~4e-5 of the float network on the fine grid, 2**-13 more on the coder's; the grids of
  format versions 1–2 (activations on the coder's grid) were ~2e-3 off, which these bounds refuse."""
  z_hat = _z_hat(codec)
  float_out = codec.module.apply({"params": codec.params}, jnp.asarray(z_hat[None]), method="h_s")
  fine, coarse = _mu_sigma(codec, z_hat)
  for a_f, a_fine, a_coder in zip(float_out, fine, coarse):
    a_f = np.asarray(a_f[0])
    assert np.abs(a_fine / 2.0**fixed_point.GRIDS.activations - a_f).max() < 1e-4
    assert np.abs(fixed_point.to_float(a_coder) - a_f).max() < 2.5e-4
  _, legacy = _mu_sigma(codec, z_hat, fixed_point.LEGACY)
  assert max(np.abs(fixed_point.to_float(a) - np.asarray(f[0])).max() for a, f in zip(legacy, float_out)) > 1e-3


def test_values_are_exact_integers(codec):
  for pair in _mu_sigma(codec, _z_hat(codec, 1)):
    for a in pair:
      assert np.array_equal(a, np.round(a)) and np.abs(a).max() < 2**24


def test_coder_grid_rounds_halves_up_and_legacy_grids_are_on_it():
  fine = np.array([-49.0, -48, -47, -17, -16, -15, -1, 0, 1, 15, 16, 17, 47, 48, 49])  # units of 2**-17
  want = np.floor(fine / 32 + 0.5)  # units of 2**-12: round(x), halves (±16) up
  np.testing.assert_array_equal(fixed_point.to_coder_grid(fine, fixed_point.GRIDS), want)
  np.testing.assert_array_equal(fixed_point.to_coder_grid(fine, fixed_point.LEGACY), fine)
  assert fixed_point.GRIDS.activations - fixed_point.A_FRAC == 5


def test_format_version_picks_the_grids():
  from dcic_jax.entropy import bitstream
  assert fixed_point.grids_for(bitstream.FORMAT_VERSION) == fixed_point.GRIDS
  assert fixed_point.grids_for(1) == fixed_point.grids_for(2) == fixed_point.LEGACY
  assert fixed_point.LEGACY == fixed_point.Grids(14, 12, 16) and fixed_point.LEGACY.leaky_num == 655


def test_version_2_file_decodes_with_its_own_grids(codec, image):
  """A file of the old grids (format version 2) decodes to the latents it was written with. Read as
  version 3 (the byte changed, CRC fixed) the same bits give the mean-scale model other mu, so the
  version byte is what keeps old files right (the scale-only model's table indexes rarely move)."""
  import dataclasses
  from dcic_jax.entropy import bitstream
  data, z_sym, y_sym = codec.compress_with_symbols(image, seed=5, version=2)
  header, strings = bitstream.unpack(data)
  assert header.version == 2 and data[4] == 2
  dec = codec.decompress(data)
  old = codec.for_version(2)
  assert old.grids == fixed_point.LEGACY and codec.grids == fixed_point.GRIDS
  (_, _, _, index) = old.encode_latents(image)
  np.testing.assert_array_equal(np.round(dec.y_hat - dec.mu), y_sym)
  np.testing.assert_array_equal(dec.scale_index, index)
  mu_old, _ = old._hyper(dec.z_hat)
  np.testing.assert_array_equal(dec.mu, mu_old)
  try:
    other = codec.decompress(bitstream.pack(dataclasses.replace(header, version=3), strings))
    changed = not (np.array_equal(other.mu, dec.mu) and np.array_equal(other.scale_index, dec.scale_index))
  except BitstreamError:  # the other tables can also run the range decoder off the string
    changed = True
  assert changed or not codec.spec.split_mean
  assert codec.for_version(2) is old and codec.for_version(3) is codec  # twins are made once


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


def _dense_conv_reference(a, w, b):
  """Exact 'same' conv by a sum over taps, independent of `_conv_same`'s im2col."""
  k = w.shape[0]
  h, wd, _ = a.shape
  padded = np.pad(a, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  out = np.zeros((h, wd, w.shape[-1])) + b
  for dh in range(k):
    for dw in range(k):
      out += padded[dh:dh + h, dw:dw + wd] @ w[dh, dw]
  return out


def test_transposed_kernel_runs_per_phase_bit_exact():
  """A sub-pixel kernel holding a 5x5 transposed conv (imported weights) is multiplied over its
  25 nonzero taps per phase; the result equals the dense 36-tap conv exactly."""
  from dcic_jax.codecs.layers import transposed_taps
  rng = np.random.default_rng(0)
  w = rng.integers(-2**14, 2**14, (3, 3, 6, 4 * 5)).astype(np.float64)
  w6 = w.reshape(3, 3, 6, 2, 2, 5)
  w6[0, :, :, 1] = 0  # odd output rows: no first row of taps
  w6[:, 0, :, :, 1] = 0  # odd output columns: no first column
  w = w6.reshape(3, 3, 6, 20)
  assert transposed_taps(w)
  a = rng.integers(-2**12, 2**12, (5, 7, 6)).astype(np.float64)
  b = rng.integers(-2**20, 2**20, (20,)).astype(np.float64)
  np.testing.assert_array_equal(fixed_point._conv_same(a, w, b), _dense_conv_reference(a, w, b))
  w[0, 0, 0, 5] = 1.0  # one tap breaks the pattern: the dense path, same answer as the reference
  assert not transposed_taps(w)
  np.testing.assert_array_equal(fixed_point._conv_same(a, w, b), _dense_conv_reference(a, w, b))


def test_codecs_use_the_xla_program_and_it_gives_the_reference_numbers(codec):
  """`HyperSynthesisInt` (XLA, float64) is what `Codec` runs; it must equal the NumPy reference to
  the bit, with large z (wide accumulators) and negative activations (leaky ReLU)."""
  z_hat = _z_hat(codec, 3, (4, 6)) * 8
  for grids in (fixed_point.GRIDS, fixed_point.LEGACY):
    c = codec.with_grids(grids)
    ref = fixed_point.hyper_synthesis_int(c.qparams, c.spec, z_hat, grids)
    out = c._h_s_int(z_hat)
    assert out.dtype == np.float64 and np.abs(ref).max() > 2**grids.activations
    np.testing.assert_array_equal(out, ref)


def test_xla_program_runs_transposed_kernels_per_phase_bit_exact():
  """Imported (transposed-taps) kernels take `phase_conv` in the XLA program; same integers."""
  from dcic_jax.codecs.hyperprior import HyperSpec
  from dcic_jax.codecs.layers import transposed_taps
  rng = np.random.default_rng(1)
  spec = HyperSpec(((12, True), (12, True), (10, False)), "relu", True, False)
  qparams = []
  for cin, cout in ((12, 48), (12, 48), (12, 10)):
    w = rng.integers(-2**13, 2**13, (3, 3, cin, cout)).astype(np.float64)
    if cout == 48:
      w6 = w.reshape(3, 3, cin, 2, 2, 12)
      w6[0, :, :, 1] = 0
      w6[:, 0, :, :, 1] = 0
    qparams.append((w, rng.integers(-2**24, 2**24, (cout,)).astype(np.float64)))
  h_s = fixed_point.HyperSynthesisInt(qparams, spec)
  assert h_s.phases == (True, True, False) and transposed_taps(qparams[0][0])
  z_hat = rng.integers(-6, 7, (3, 4, 12)).astype(np.float32)
  np.testing.assert_array_equal(h_s(z_hat), fixed_point.hyper_synthesis_int(qparams, spec, z_hat))


def test_xla_program_refuses_inexact_ranges(codec):
  import pytest
  with pytest.raises(OverflowError, match="exact float64"):
    codec._h_s_int(_z_hat(codec) * 2.0**30)


def test_an_image_beyond_the_exact_range_is_one_user_error(codec, image):
  """A model whose h_s would leave the exact range on an image (here: a first-layer bias of 1e6)
  refuses to code it with a UserError (the command line's one `error:` line), not a trace."""
  import pytest
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.errors import UserError
  params = jax.tree.map(np.asarray, codec.params)
  layer = params["h_s_net"]["layer0"]
  layer = layer.get("conv", layer)
  layer["bias"] = layer["bias"] + np.float32(1e6)
  big = codec_lib.Codec(codec.codec_id, codec.config, params, codec.tables)
  with pytest.raises(UserError, match="cannot code this image exactly"):
    big.compress(image)


def test_without_a_cpu_backend_the_numpy_reference_runs(codec, monkeypatch):
  import jax

  def no_cpu(process_index=None, backend=None, host_id=None):
    raise RuntimeError(f"Unknown backend {backend}")
  monkeypatch.setattr(jax, "local_devices", no_cpu)
  h_s = fixed_point.HyperSynthesisInt(codec.qparams, codec.spec)
  z_hat = _z_hat(codec, 4)
  assert h_s._cpu is None
  np.testing.assert_array_equal(h_s(z_hat), fixed_point.hyper_synthesis_int(codec.qparams, codec.spec, z_hat))
