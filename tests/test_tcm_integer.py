"""The exact integer ops (`codecs/integer_ops.py`) and the integer TCM entropy networks that code
`tcm-official` files (`codecs/tcm_codec.py`), on a tiny TCM configuration: the ops against their
float twins, their exactness, and compress / decompress through the command line.

(The full-size model's round trip against the official code: tests/test_tcm_official.py.)
"""
import functools
import math
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import special

from conftest import IMAGES, REPO
from dcic_jax.codecs import integer_ops as iops
from dcic_jax.codecs import tcm_codec
from dcic_jax.codecs.registry import make_codec
from dcic_jax.entropy.models import EntropyBottleneck
from dcic_jax.errors import UserError

# Two slices, not five: the same layers, half the programs to compile.
TINY = dict(N=16, M=16, depths=[1, 1, 1, 2, 1, 1], head_dim=[8] * 6, z_channels=16, hyper_head_dim=8,
            atten_dim=16, atten_head_dim=8, cc_hidden=[16, 8], num_slices=2)


def _run(fn, *args):
  """fn(*args, bounds) on float64 integers under x64: (result as numpy, largest bound)."""
  with jax.enable_x64(True):
    bounds = []
    out = fn(*[jnp.asarray(a, jnp.float64) if isinstance(a, np.ndarray) else a for a in args], bounds)
    return np.asarray(out), max(float(b) for b in bounds) if bounds else 0.0


@functools.cache
def _tables():
  with jax.enable_x64(True):
    return {k: jnp.asarray(v, jnp.float64) for k, v in iops.make_tables().items()}


def _grid(x, frac=iops.ACT):
  return iops.to_int(x, frac)


def test_integer_division_and_root_are_exact():
  rng = np.random.default_rng(0)
  n = np.concatenate([rng.integers(-2**50, 2**50, 2000), [0, 1, -1, 2**50 - 1, -2**50]]).astype(np.int64)
  d = np.concatenate([rng.integers(1, 2**40, 2000), [1, 3, 7, 2**40 - 1, 5]]).astype(np.int64)
  q, _ = _run(iops.div_round, n.astype(np.float64), d.astype(np.float64))
  exact = [(2 * int(a) + int(b)) // (2 * int(b)) for a, b in zip(n, d)]  # round half up, Python integers
  assert q.astype(np.int64).tolist() == exact
  m = np.abs(n)
  s, _ = _run(iops.isqrt, m.astype(np.float64))
  assert s.astype(np.int64).tolist() == [math.isqrt(int(v)) for v in m]


def test_lookup_ops_against_their_float_twins():
  t = _tables()
  x = np.linspace(-12, 12, 20001)
  xi = _grid(x)
  x = xi / 2.0**iops.ACT  # the grid values themselves
  gelu, _ = _run(lambda a, b: iops.gelu(a, t, b), xi)
  np.testing.assert_allclose(gelu / 2.0**iops.ACT, x * special.ndtr(x), atol=3 * 2.0**-iops.ACT)
  sig, _ = _run(lambda a, b: iops.sigmoid(a, t, b), xi)
  np.testing.assert_allclose(sig / 2.0**iops.TAB, special.expit(x), atol=4 * 2.0**-iops.TAB)
  th, _ = _run(lambda a, b: iops.half_tanh(a, t, b), xi)
  np.testing.assert_allclose(th / 2.0**iops.TAB, 0.5 * np.tanh(x), atol=4 * 2.0**-iops.TAB)
  pos = np.abs(xi)
  e, _ = _run(lambda a, b: iops.exp_neg(a, t, b), pos)
  np.testing.assert_allclose(e / 2.0**iops.TAB, np.exp(-pos / 2.0**iops.ACT), atol=2 * 2.0**-iops.TAB)
  for out in (gelu, sig, th, e):
    assert np.array_equal(out, np.round(out))


def test_softmax_and_layer_norm_against_their_float_twins():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 4, (6, 64))
  logits[0, 5:] = -1e6  # masked entries: exactly 0
  p, bound = _run(lambda a, b: iops.softmax(a, _tables(), b), _grid(logits))
  np.testing.assert_allclose(p / 2.0**iops.TAB, special.softmax(_grid(logits) / 2.0**iops.ACT, -1), atol=3e-7)
  assert np.all(p[0, 5:] == 0) and bound < iops.EXACT
  x = rng.normal(0.5, 3, (10, 128))
  scale, bias = rng.normal(1, 0.2, 128), rng.normal(0, 0.5, 128)
  ln, _ = _run(lambda a, s, b_, b: iops.layer_norm(a, s, b_, 1e-5, b), _grid(x), _grid(scale, iops.WGT),
               _grid(bias, iops.ACT + iops.WGT))
  xq = _grid(x) / 2.0**iops.ACT
  ref = (xq - xq.mean(-1, keepdims=True)) / np.sqrt(xq.var(-1, keepdims=True) + 1e-5) * scale + bias
  np.testing.assert_allclose(ln / 2.0**iops.ACT, ref, atol=5e-5)  # relative ~1e-5: the variance from 2**-12 values


def test_tables_are_the_stored_integers():
  """A decoder reads the tables stored with the export: integers, within a unit of the functions
  (so regenerating them elsewhere would give the same or nearly the same numbers, never needed)."""
  t = iops.make_tables()
  assert all(v.dtype == np.int64 for v in t.values())
  k = np.arange(len(t["exp_high"]))
  np.testing.assert_allclose(t["exp_high"], np.exp(-k * 2.0**(iops.EXP_LOW_BITS - iops.ACT)) * 2.0**iops.TAB, atol=0.5)
  assert t["phi"][0] == 0 and t["phi"][-1] == 2**iops.TAB and t["exp_high"][-1] == 0


def test_overflow_is_refused():
  w = np.full((1, 1, 8, 4), 2.0**iops.WGT)
  conv = functools.partial(iops.conv_same, w_bound=iops.column_bound(w))
  _, bound = _run(conv, np.full((2, 2, 8), 2.0**48), w, np.zeros(4))
  with pytest.raises(OverflowError):
    iops.check_exact(bound)


# ---- the tiny TCM ----
@functools.cache
def _tiny_codec() -> tcm_codec.TCMCodec:
  """Seeded parameters of the shapes of a tiny `tcm-official` (jit(init) of the whole model would
  compile for a minute): kernels N(0, 1/fan_in), small biases, identity-like GDN and LayerNorm."""
  m = make_codec("tcm-official", **TINY)
  shapes = flax.traverse_util.flatten_dict(jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"])
  rng = np.random.default_rng(0)
  params = {}
  for path, s in shapes.items():
    if path[0] == "entropy_bottleneck":
      continue
    name, shape = path[-1], s.shape
    if name == "kernel":
      v = rng.normal(0, 1 / math.sqrt(math.prod(shape[:-1])), shape)
    elif name == "beta":
      v = np.ones(shape)
    elif name == "gamma":
      v = np.sqrt(0.1 * np.eye(shape[0]) + 1e-3)
    elif name == "scale":
      v = rng.normal(1, 0.1, shape)
    else:  # biases, relative position tables
      v = rng.normal(0, 0.05, shape)
    params[path] = v.astype(np.float32)
  params = flax.traverse_util.unflatten_dict(params)
  params["entropy_bottleneck"] = EntropyBottleneck(TINY["z_channels"]).init(
      jax.random.key(1), jnp.zeros((1, 1, 1, TINY["z_channels"])))["params"]
  return tcm_codec.make_tcm_codec(TINY, params)


def _image():
  return np.asarray(Image.open(IMAGES / "kodim23_crop.png"))[:64, :80]  # y 4×5: padded, masked windows


def test_integer_network_is_close_to_the_float_network_and_exact():
  codec = _tiny_codec()
  data, _, y_sym = codec.compress_with_symbols(_image())
  dec = codec.decompress(data)
  assert np.array_equal((dec.y_hat - dec.mu).astype(np.int64), y_sym)
  mu, _ = jax.jit(lambda p, z, y: codec.module.apply({"params": p}, z, y, method="slice_params_at"))(
      codec.params, dec.z_hat[None], dec.y_hat[None])
  mu = np.asarray(mu)[0]
  err = np.abs(dec.mu - dec.r - mu).max() - 2.0**-13  # less the coder's grid rounding
  assert err < 3e-5 * np.abs(mu).max(), err
  with pytest.raises(UserError, match="re-import"):
    tcm_codec.TCMCodec(codec.codec_id, codec.config, codec.params,
                       {k: v for k, v in codec.tables.items() if k != "integer_tables"})


def test_hostile_latents_are_a_decode_error():
  """A file whose first slice decodes to values the integer networks cannot hold exactly (|symbol|
  2**24) is refused as undecodable (OverflowError inside), not decoded to platform-dependent numbers."""
  from dcic_jax.entropy import bitstream, coder
  from dcic_jax.errors import BitstreamError
  codec = _tiny_codec()
  data, z_sym, y_sym = codec.compress_with_symbols(_image())
  index = codec.decompress(data).scale_index
  header, _ = bitstream.unpack(data)
  enc = coder.Encoder()
  enc.encode(z_sym, np.broadcast_to(np.arange(z_sym.shape[-1]), z_sym.shape), codec.z_tables)
  cs = TINY["M"] // TINY["num_slices"]
  enc.encode(np.full_like(y_sym[..., :cs], 2**24), index[..., :cs], codec.y_tables)  # slice 0: its own tables
  enc.encode(y_sym[..., cs:], index[..., cs:], codec.y_tables)
  with pytest.raises(BitstreamError, match="OverflowError"):
    codec.decompress(bitstream.pack(header, [enc.finish()]))


def test_crc_fixed_mutants_are_refused_or_decoded():
  """experiments/fuzz_bitstream.py's mutants of tcm-official files (import-only, so not in the
  registered codecs test_fuzz.py covers): each decodes or is refused in one line."""
  sys.path.insert(0, str(REPO / "experiments"))
  import fuzz_bitstream  # pylint: disable=g-import-not-at-top
  codec = _tiny_codec()
  files = [codec.compress(_image(), seed=1), codec.compress(np.full((64, 64, 3), 90, np.uint8))]
  outcomes = fuzz_bitstream.decode_mutants(codec, files, 60, np.random.default_rng(0))
  assert outcomes["refused"] > 30, outcomes


def test_command_line_round_trip(tmp_path):
  """compress and decompress in fresh processes on a written export: the same file bytes and the
  same decoded latents as in this process, so the same symbols.

  Then a DCIC decode of the same file (`--kd 1 --kp 1`, the analytic prior, 2 steps): it runs
  through the TCM's g_a / g_s and their derivatives, and its output re-encodes to the file's
  symbols more often than the base reconstruction does (the weights are random, so the image
  itself means nothing). The processes share this session's XLA cache, which the in-process
  coding fills first.
  """
  import os
  from dcic_jax import checkpointing
  codec = _tiny_codec()
  ours, _, y_sym = codec.compress_with_symbols(_image(), seed=3)
  dec = codec.decompress(ours)
  ckpt = tmp_path / "tiny-tcm"
  checkpointing.save_export(ckpt, codec.codec_id, codec.config, codec.params, codec.tables, {}, codec.fingerprint.hex())
  Image.fromarray(_image()).save(tmp_path / "in.png")
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir or ""),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(jax.config.jax_persistent_cache_min_compile_time_secs))
  dcic = lambda *a: subprocess.run([sys.executable, "-m", "dcic_jax", *map(str, a), "--checkpoint", ckpt],
                                   capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
  p = dcic("compress", tmp_path / "in.png", tmp_path / "a.dcic", "--seed", "3")
  assert p.returncode == 0, p.stderr
  assert (tmp_path / "a.dcic").read_bytes() == ours
  p = dcic("decompress", tmp_path / "a.dcic", tmp_path / "a.png")
  assert p.returncode == 0, p.stderr
  assert np.array_equal((dec.y_hat - dec.mu).astype(np.int64), y_sym)
  assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), dec.image)
  p = dcic("decompress", tmp_path / "a.dcic", tmp_path / "dcic.png", "--kd", "1", "--kp", "1",
           "--prior", "analytic:0.5", "--steps", "2")
  assert p.returncode == 0, p.stderr
  out = np.asarray(Image.open(tmp_path / "dcic.png"))
  assert out.shape == dec.image.shape and not np.array_equal(out, dec.image)
  same = lambda img: np.mean(codec.compress_with_symbols(img, seed=3)[2] == y_sym)
  assert same(out) > same(dec.image)
