"""Transformer / hybrid codecs and the channel-wise AR entropy model behind the common codec contract.

Every registered codec (CNN ones included) must round-trip a real image bit-exact through a
.dcic file, and its forward pass must agree with compress/decompress; the new codecs must also
serve both DCIC ℓ_P variants. Tiny configs (depth 1, window 4): compiling dominates the run time.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_codec
from dcic_jax.codecs import codec as codec_lib
from dcic_jax.codecs.registry import codec_ids, make_codec
from dcic_jax.entropy import bitstream, channelwise
from dcic_jax.errors import BitstreamError, UserError

NEW = ("swint-charm", "tcm")
TINY = dict(N=16, M=24, window=4, depth=1, head_dim=8, slices=2, context_hidden=8)


@functools.lru_cache(maxsize=None)
def tiny(codec_id: str) -> codec_lib.Codec:
  if codec_id not in NEW:
    return tiny_codec(codec_id)
  module = make_codec(codec_id, **TINY)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3), np.float32))["params"]
  return codec_lib.make_codec_from_params(codec_id, TINY, params)


@functools.lru_cache(maxsize=None)
def coded(codec_id: str, image_bytes: bytes, shape: tuple):
  """(file, z symbols, y symbols, decoded) for the shared test image (cached across tests)."""
  image = np.frombuffer(image_bytes, np.uint8).reshape(shape)
  data, z_sym, y_sym = tiny(codec_id).compress_with_symbols(image, seed=3)
  return data, z_sym, y_sym, tiny(codec_id).decompress(data)


def _coded(codec_id, image):
  return coded(codec_id, image.tobytes(), image.shape)


def test_registry_has_every_family_and_checks_configs():
  assert {"bmshj2018", "mbt2018-mean", "swint-charm", "tcm"} <= set(codec_ids())
  with pytest.raises(UserError, match="unknown codec config"):
    make_codec("tcm", N=8, gdn=True)
  with pytest.raises(UserError, match="divisible"):
    make_codec("swint-charm", M=24, slices=5)
  with pytest.raises(UserError, match="unknown codec config"):
    make_codec("bmshj2018", window=8)  # CNN configs keep their own fields


@pytest.mark.parametrize("codec_id", codec_ids())
def test_every_codec_round_trips_a_real_image_bit_exact(codec_id, image):
  codec = tiny(codec_id)
  data, z_sym, y_sym, dec = _coded(codec_id, image)
  _, _, _, index = codec.encode_latents(image)
  np.testing.assert_array_equal(np.round(dec.z_hat - codec.medians), z_sym)
  np.testing.assert_array_equal(np.round(dec.y_hat - dec.mu), y_sym)
  np.testing.assert_array_equal(dec.scale_index, index)
  assert dec.image.shape == image.shape and dec.header.codec_id == codec_id and dec.header.seed == 3
  assert len(bitstream.unpack(data)[1]) == 1  # z and all of y in one string
  again = codec.decompress(data)  # decoding is a pure function of the file
  np.testing.assert_array_equal(again.y_hat, dec.y_hat)
  np.testing.assert_array_equal(again.image, dec.image)


@pytest.mark.parametrize("codec_id", codec_ids())
def test_every_codec_forward_agrees_with_the_coder(codec_id, image):
  """The eval forward pass (float nets) matches the file (integer nets) up to fixed-point rounding.

  Channel-wise models: a y_i − mu_i within the integer networks' error of a half-integer rounds the
  other way in one of them, and the LRP term and the later slices around it follow (one such symbol
  of the tiny tcm moves mu by up to 0.06 over a tenth of its latents), so their mu is compared here
  by its median, and to the bit of precision at the coder's own symbols in the next test."""
  codec = tiny(codec_id)
  data, _, _, dec = _coded(codec_id, image)
  fwd = jax.jit(lambda p, x: codec.module.apply({"params": p}, x))
  out = jax.device_get(fwd(codec.params, jnp.asarray(image[None], jnp.float32) / 255.0))
  err = np.abs(dec.mu - out["mu"][0])
  assert err.max() < 5e-4 if codec.slice_spec is None else np.median(err) < 2e-4
  sym_fwd = np.round(out["y_hat"][0] - out["mu"][0])
  assert np.mean(sym_fwd == np.round(dec.y_hat - dec.mu)) > 0.99
  assert np.abs(np.clip(out["x_hat"][0], 0, 1) - dec.x_hat).mean() < 4e-3
  est_bits = sum(-np.log2(v).sum() for v in out["likelihoods"].values())
  assert abs(8 * len(data) / est_bits - 1) < 0.15


@pytest.mark.parametrize("codec_id", NEW)
def test_integer_slice_networks_match_the_float_ones_at_the_coders_symbols(codec_id, image):
  """The float slice loop fed the decoder's y_hat − r (symbol + mu_i, which it rounds back to the
  same symbol) gives the coder's mu within the fine grids' error (the grids of format versions 1–2
  were ~1e-3 off): no near-tie can flip a symbol here."""
  codec = tiny(codec_id)
  *_, dec = _coded(codec_id, image)
  apply = lambda *a, method: codec.module.apply({"params": codec.params}, *a, method=method)
  mean_feat, scale_feat = apply(jnp.asarray(dec.z_hat[None]), method="h_s")
  out = apply(jnp.asarray((dec.y_hat - dec.r)[None]), mean_feat, scale_feat, None, False,
              method=lambda m, *a: m.context(*a))
  np.testing.assert_array_equal(np.round(out["y_hat"][0] - out["mu"][0]), np.round(dec.y_hat - dec.mu))
  assert np.abs(out["mu"][0] - dec.mu).max() < 5e-4


@pytest.mark.parametrize("codec_id", codec_ids())
def test_files_with_one_string_per_part_still_decode(codec_id, image):
  """Files written before 2026-11-26 hold z and each part of y as separate strings."""
  from dcic_jax.entropy import coder
  codec = tiny(codec_id)
  data, z_sym, y_sym, dec = _coded(codec_id, image)
  _, _, _, index = codec.encode_latents(image)
  z_idx = np.broadcast_to(np.arange(z_sym.shape[-1]), z_sym.shape)
  old = [coder.encode(z_sym, z_idx, codec.z_tables)] + [
      coder.encode(s, i, codec.y_tables) for s, i in zip(codec._y_parts(y_sym), codec._y_parts(index))]
  header, (one,) = bitstream.unpack(data)
  old_file = bitstream.pack(header, old)
  assert len(old_file) > len(data)  # one string is the smaller file
  np.testing.assert_array_equal(codec.decompress(old_file).image, dec.image)


@pytest.mark.parametrize("codec_id", NEW)
def test_slice_model_is_exact_integers_and_needs_the_whole_string(codec_id, image):
  codec = tiny(codec_id)
  data, _, _, dec = _coded(codec_id, image)
  for a in (dec.y_hat, dec.mu):  # on the 2**-12 grid the integer twin works on
    scaled = a.astype(np.float64) * 4096
    assert np.array_equal(scaled, np.round(scaled))
  header, strings = bitstream.unpack(data)
  assert len(strings) == 1  # z and every slice in one range-coded string
  with pytest.raises(BitstreamError, match="latent string"):
    codec.decompress(bitstream.pack(header, strings * 2))
  with pytest.raises(BitstreamError, match="latent string has data left after"):
    codec.decompress(bitstream.pack(header, [strings[0] + bytes(12)]))  # a valid CRC, words to spare
  assert codec.slice_spec.lrp  # the tiny configs exercise latent residual prediction


def test_softsign_integer_form_is_exact():
  """r = 0.5·x/(1+|x|) on the coder's 2**-12 grid from x on the networks' grid, by one exact integer
  division: rounded halves up (format version 3), floored with x on 2**-12 (versions 1–2)."""
  import math
  from fractions import Fraction
  from dcic_jax.codecs.fixed_point import GRIDS, LEGACY
  x = np.array([-(2**40), -123457, -4096, -1, 0, 1, 4095, 4096, 98765, 2**40], np.float64)
  got = channelwise.softsign_half_int(x, LEGACY)
  want = [np.floor(v * 4096 / (2 * (4096 + abs(v)))) for v in x]  # small ints: exact in float64 here
  np.testing.assert_array_equal(got[1:-1], want[1:-1])
  assert got[0] == -2048 and got[-1] == 2047  # saturates at r = ±0.5 (2048 units of 2**-12)
  unit = 2**GRIDS.activations
  x = np.array([-(2**40), -4095 * unit, -unit, -16, -1, 0, 1, 5, 16, 4095, unit, 7 * unit + 3, 4095 * unit, 2**40],
               np.float64)
  want = [math.floor(Fraction(int(v) * 4096, 2 * (unit + abs(int(v)))) + Fraction(1, 2)) for v in x]
  np.testing.assert_array_equal(channelwise.softsign_half_int(x, GRIDS), want)
  assert want[2] == -1024 and want[10] == 1024  # x = ±1: r = ±1/4
  assert want[1] == -2047 and want[-2] == 2048  # x = ±4095: r = ±2047.5 units, halves up
  assert want[0] == -2048 and want[-1] == 2048


def test_window_attention_is_local_and_shift_mask_blocks_the_wrap_around():
  """W-MSA mixes tokens only inside a window; SW-MSA crosses window borders but never wraps."""
  from dcic_jax.codecs.transformer import WindowAttention
  w, size = 4, 8
  x = jax.random.normal(jax.random.PRNGKey(0), (1, size, size, 8))

  def influence(shift, src):
    att = WindowAttention(heads=2, window=w, shift=shift)
    p = att.init(jax.random.PRNGKey(1), x)
    p = jax.tree.map(lambda a: a + 0.1, p)  # non-zero relative bias too
    delta = att.apply(p, x.at[0, src[0], src[1]].add(5.0)) - att.apply(p, x)
    return np.abs(np.asarray(delta)[0]).sum(-1) > 1e-6  # [H, W] touched outputs

  plain = influence(False, (0, 0))
  assert plain[:w, :w].all() and not plain[w:].any() and not plain[:, w:].any()
  shifted = influence(True, (0, 0))  # (0, 0) sits in the wrapped corner region [0, w/2)^2
  assert shifted[:w // 2, :w // 2].all() and shifted.sum() == (w // 2) ** 2
  crossing = influence(True, (w // 2, w // 2))  # a shifted window spans [w/2, 3w/2)^2
  assert crossing[w // 2:w // 2 + w, w // 2:w // 2 + w].all() and crossing.sum() == w * w
  padded = WindowAttention(heads=2, window=w)  # 6x6 map: padded to 8x8, padding masked out
  p = padded.init(jax.random.PRNGKey(1), x[:, :6, :6])
  assert padded.apply(p, x[:, :6, :6]).shape == (1, 6, 6, 8)


@pytest.mark.parametrize("codec_id", NEW)
def test_dcic_constraints_both_variants(codec_id, image):
  """ℓ_P `latent` needs mu with y_hat − mu integer (LRP included); `reconstruction` needs g_a/g_s."""
  from dcic_jax.dcic import constraints as C
  codec = tiny(codec_id)
  _, _, _, dec = _coded(codec_id, image)
  fns = C.CodecFns.from_module(codec.module)
  target = C.make_target(fns, codec.params, jnp.asarray(dec.y_hat[None]), jnp.asarray(dec.mu[None]),
                         jnp.asarray(dec.r[None]))
  u = C.from_codec(jnp.asarray(dec.x_hat[None]))

  @jax.jit
  def both(u):
    lat = C.idempotence_residual(fns, codec.params, u, target, "latent")
    grads = [jax.grad(lambda v: C.idempotence_loss(fns, codec.params, v, target, variant).sum())(u)
             for variant in C.VARIANTS]
    return lat, grads

  lat, grads = jax.device_get(both(u))
  # Re-encoding x̂_b lands on the file's symbol grid (fails if mu lacked the LRP term: off by r).
  np.testing.assert_allclose(lat, np.round(lat), atol=1e-4)
  for g in grads:  # the straight-through gradient of both variants reaches u
    assert g.shape == u.shape and np.isfinite(g).all() and np.abs(g).sum() > 0


@pytest.mark.parametrize("codec_id", NEW)
def test_re_encoding_the_source_image_lands_exactly_on_its_file(codec_id, image):
  """With LRP the encoder rounds y around μ − r: Q(g_a(x)) of the coded image x itself must
  give back the file's ŷ exactly (rounding around μ, as before `Target.r`, misses latents)."""
  from dcic_jax.dcic import constraints as C
  codec = tiny(codec_id)
  _, _, _, dec = _coded(codec_id, image)
  assert np.abs(dec.r).max() > 0, "the tiny codec's LRP term is zero: the test would prove nothing"
  fns = C.CodecFns.from_module(codec.module)
  target = C.make_target(fns, codec.params, jnp.asarray(dec.y_hat[None]), jnp.asarray(dec.mu[None]),
                         jnp.asarray(dec.r[None]))
  u = C.from_codec(jnp.asarray(image[None], jnp.float32) / 255.0)
  assert float(C.reencode_error(fns, codec.params, u, target)[0]) == 0.0
  without_r = target.replace(r=jnp.zeros_like(target.r))
  assert float(C.reencode_error(fns, codec.params, u, without_r)[0]) > 0.0
