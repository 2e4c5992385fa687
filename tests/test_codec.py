"""The codec as a file format: exact latent round trips, real rates, odd sizes, wrong models."""
import numpy as np
import pytest

from conftest import tiny_codec
from dcic_jax.entropy import bitstream
from dcic_jax.errors import BitstreamError, UserError


def test_round_trip_is_bit_exact(codec, image):
  data, z_sym, y_sym = codec.compress_with_symbols(image, seed=7)
  (hp, wp), _, _, index = codec.encode_latents(image)
  dec = codec.decompress(data)
  np.testing.assert_array_equal(np.round(dec.z_hat - codec.medians), z_sym)
  np.testing.assert_array_equal(np.round(dec.y_hat - dec.mu), y_sym)
  np.testing.assert_array_equal(dec.scale_index, index)
  assert dec.image.shape == image.shape and dec.image.dtype == np.uint8
  assert dec.header.seed == 7 and dec.header.prng_impl == "threefry2x32"
  assert (dec.header.padded_height, dec.header.padded_width) == (hp, wp) == (256, 384)


def test_decode_matches_forward_pass(codec, image):
  """compress/decompress reproduce the eval forward pass up to the fixed-point h_s rounding (mu
  within 2**-13 of the coder's grid plus ~2e-5; the grids of format versions 1–2 were 7e-4 off)."""
  import jax.numpy as jnp
  out = codec.module.apply({"params": codec.params}, jnp.asarray(image[None], jnp.float32) / 255.0)
  dec = codec.decompress(codec.compress(image))
  mu_float = np.asarray(out["mu"][0])
  assert np.abs(dec.mu - mu_float).max() < 5e-4
  agree = np.mean(np.round(np.asarray(out["y"][0]) - mu_float) == np.round(dec.y_hat - dec.mu))
  assert agree > 0.99
  x_fwd = np.clip(np.asarray(out["x_hat"][0]), 0, 1)
  assert np.abs(x_fwd - dec.x_hat).mean() < 2e-3
  assert codec._coding_module is codec.module  # trained kernels use every tap: no phase-split conv


@pytest.mark.parametrize("h,w", [(1, 1), (17, 5), (64, 64), (65, 130)])
def test_any_size_pads_and_crops(h, w):
  codec = tiny_codec("bmshj2018")
  rng = np.random.default_rng(h * 1000 + w)
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  dec = codec.decompress(codec.compress(image))
  assert dec.image.shape == (h, w, 3)
  assert dec.header.padded_height % 64 == 0 and dec.header.padded_width % 64 == 0


def test_rate_is_the_file_and_close_to_the_estimate(codec, image):
  data = codec.compress(image)
  est_bits = sum(codec.estimate_bits(image).values())
  assert abs(8 * len(data) / est_bits - 1) < 0.15  # random init: loose; shipped models are checked in experiments


def test_wrong_model_is_refused(image):
  a, b = tiny_codec("bmshj2018", seed=0), tiny_codec("bmshj2018", seed=1)
  with pytest.raises(BitstreamError, match="fingerprint"):
    b.decompress(a.compress(image))
  with pytest.raises(BitstreamError, match="codec"):
    tiny_codec("mbt2018-mean").decompress(a.compress(image))


def test_corrupted_payload_is_refused(image):
  codec = tiny_codec("bmshj2018")
  data = bytearray(codec.compress(image))
  data[-3] ^= 0x10
  with pytest.raises(BitstreamError, match="CRC"):
    codec.decompress(bytes(data))
  with pytest.raises(BitstreamError):
    codec.decompress(bytes(data[:len(data) // 2]))


def test_compress_refuses_bad_arrays():
  codec = tiny_codec("bmshj2018")
  with pytest.raises(UserError, match="uint8"):
    codec.compress(np.zeros((8, 8, 3), np.float32))
  with pytest.raises(UserError, match="uint8"):
    codec.compress(np.zeros((8, 8), np.uint8))


def test_fingerprint_changes_with_any_parameter():
  import jax
  from dcic_jax.codecs import codec as codec_lib
  c = tiny_codec("bmshj2018")
  params = jax.tree.map(np.array, c.params)
  params["g_s_layers_0"]["conv"]["bias"][0] += 1e-6
  c2 = codec_lib.Codec(c.codec_id, c.config, params, c.tables)
  assert c2.fingerprint != c.fingerprint and len(c.fingerprint) == 8


def test_header_fields(image):
  codec = tiny_codec("mbt2018-mean")
  header, strings = bitstream.unpack(codec.compress(image, seed=2**64 - 1))
  assert header.codec_id == "mbt2018-mean" and header.seed == 2**64 - 1
  assert header.fingerprint == codec.fingerprint and len(strings) == 1  # z and y in one string


def test_inconsistent_padding_is_refused(image):
  import dataclasses
  codec = tiny_codec("bmshj2018")
  header, strings = bitstream.unpack(codec.compress(image[:64, :64]))
  bad = bitstream.pack(dataclasses.replace(header, padded_height=128), strings)
  with pytest.raises(BitstreamError, match="padded size"):
    codec.decompress(bad)


@pytest.mark.parametrize("quantizer", ["noise", "ste"])
def test_training_forward_quantizers(quantizer):
  import jax
  import jax.numpy as jnp
  from dcic_jax.codecs.registry import make_codec
  m = make_codec("mbt2018-mean", N=8, M=8, quantizer=quantizer)
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 64, 64, 3))
  params = jax.jit(m.init)(jax.random.PRNGKey(1), x)["params"]
  out = m.apply({"params": params}, x, jax.random.PRNGKey(2), True)
  offset = np.asarray(out["y_hat"] - out["mu"])
  is_int = np.allclose(offset, np.round(offset), atol=1e-4)
  assert is_int == (quantizer == "ste")  # noise: y + U(-.5, .5); ste: round(y - mu) + mu
  grad = jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x, jax.random.PRNGKey(2), True)["x_hat"]))(params)
  assert float(jnp.abs(grad["g_a_layers_0"]["kernel"]).sum()) > 0  # straight-through: g_a still learns


def test_two_by_two_sub_pixel_kernels_code_bit_exact_and_match_the_float_h_s(image):
  """up_kernel = 2 (the 4×4 transposed conv, 16/36 of the 3×3 weights): the float transforms keep
  their shapes, and the integer h_s pads as the float one does, so the file decodes exactly and
  its means agree with the forward pass."""
  import jax
  import jax.numpy as jnp
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.codecs.registry import make_codec
  codec_id, config = "mbt2018-mean", dict(N=16, M=24, up_kernel=2)  # the mean-scale h_s: μ too
  module = make_codec(codec_id, **config)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3), np.float32))["params"]
  assert params["g_s_layers_0"]["conv"]["kernel"].shape[:2] == (2, 2)
  codec = codec_lib.make_codec_from_params(codec_id, config, params)
  data, _, y_sym = codec.compress_with_symbols(image)
  dec = codec.decompress(data)
  np.testing.assert_array_equal(np.round(dec.y_hat - dec.mu), y_sym)
  out = module.apply({"params": params}, jnp.asarray(image[None], jnp.float32) / 255.0)
  assert out["x_hat"].shape == (1,) + image.shape
  assert np.abs(dec.mu - np.asarray(out["mu"][0])).max() < 1e-2


def test_evaluation_rows_split_the_file_into_header_and_latent_strings(tmp_path):
  """kodak_rd's overhead without the header rests on Row.header_bpp: the container's bytes."""
  from conftest import IMAGES
  from dcic_jax import evaluate
  codec = tiny_codec("bmshj2018")
  path = IMAGES / "kodim23_crop.png"
  (row,) = evaluate.evaluate_codec(codec, "tiny", [path], out_dir=tmp_path)
  data = (tmp_path / "kodim23_crop.dcic").read_bytes()
  _, strings = bitstream.unpack(data)
  pixels = 256 * 384
  assert row.bpp == 8 * len(data) / pixels and row.latents_exact
  assert row.header_bpp == 8 * (len(data) - sum(map(len, strings))) / pixels
  assert 20 <= row.header_bpp * pixels / 8 <= 48  # a format-2 header, seed 0


def test_xla_options_this_jax_does_not_know_fall_back_to_the_default_compile(monkeypatch):
  from dcic_jax.codecs import codec as codec_lib
  monkeypatch.setattr(codec_lib, "XLA_CONV_OPTIONS", {"xla_cpu_no_such_option": ""})
  codec_lib._compiler_options.cache_clear()
  try:
    assert codec_lib._compiler_options() is None
  finally:
    codec_lib._compiler_options.cache_clear()


def test_export_fits_the_quantiles_of_z_and_leaves_the_density_alone():
  """A briefly trained codec's quantiles sit near their initial ±10 (here: a random init); the
  fit moves them to the density's tail_mass/2 points and median, and touches nothing else."""
  import math
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.codecs.registry import make_codec
  from dcic_jax.entropy.models import EntropyBottleneck
  c = tiny_codec("bmshj2018")
  params, before, after = codec_lib.fit_quantiles("bmshj2018", c.config, c.params)
  assert before > 100 and after < 1e-3 * before
  eb0, eb1 = c.params["entropy_bottleneck"], params["entropy_bottleneck"]
  for k in eb0:
    if k != "quantiles":
      np.testing.assert_array_equal(np.asarray(eb0[k]), np.asarray(eb1[k]))
  logits = make_codec("bmshj2018", **c.config).apply({"params": params}, method=lambda m: (
      m.entropy_bottleneck.logits_cumulative(m.entropy_bottleneck.quantiles)))  # [C, 1, 3]
  t = math.log(2.0 / EntropyBottleneck.tail_mass - 1.0)
  np.testing.assert_allclose(np.asarray(logits)[:, 0], np.tile([-t, 0.0, t], (len(logits), 1)), atol=0.05)
  # z's coding range (symbols per channel's table) grew to hold the density's tails.
  fitted = codec_lib.make_codec_from_params("bmshj2018", c.config, params)
  assert np.all(np.asarray(fitted.tables["z"]["sizes"]) > np.asarray(c.tables["z"]["sizes"]))
