"""Integer tables and the range coder: exact round trips, escapes, and table invariants."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dcic_jax.entropy import coder
from dcic_jax.entropy.models import gaussian_pmf_np
from dcic_jax.errors import BitstreamError


def _tables(scales=(0.11, 0.5, 2.0, 40.0)):
  pmfs, offs = [], []
  for s in scales:
    r = int(np.ceil(s * 6.1))
    pmfs.append(gaussian_pmf_np(s, np.arange(-r, r + 1)))
    offs.append(-r)
  return coder.make_tableset(pmfs, offs)


def test_counts_are_valid_distributions():
  t = _tables()
  for k in range(len(t.sizes)):
    c = t.counts[t.starts[k]:t.starts[k] + t.sizes[k] + 1]
    assert c.min() >= 1 and int(c.sum()) == 1 << coder.PRECISION


def test_quantize_pmf_keeps_shape_of_distribution():
  p = gaussian_pmf_np(3.0, np.arange(-20, 21))
  c = coder.quantize_pmf(p).astype(np.float64) / (1 << coder.PRECISION)
  assert np.abs(c[:-1] - p).max() < 1e-3


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.floats(0.05, 100.0))
def test_round_trip_any_values(seed, n, spread):
  rng = np.random.default_rng(seed)
  t = _tables()
  idx = rng.integers(0, len(t.sizes), n)
  v = np.round(rng.standard_cauchy(n) * spread).clip(-2**40, 2**40).astype(np.int64)  # heavy tails: escapes
  data = coder.encode(v, idx, t)
  np.testing.assert_array_equal(coder.decode(data, idx, t), v)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(0, 300), min_size=1, max_size=4))
def test_parts_in_one_string_round_trip_and_end_exactly(seed, sizes):
  """z, then y's parts, share one string: each part decodes back in order, escapes included, and
  the decoder ends with no whole word left over (`finish`), which rejects appended words (beyond
  the two it may already hold as look-ahead)."""
  rng = np.random.default_rng(seed)
  t = _tables()
  enc, parts = coder.Encoder(), []
  for n in sizes:
    idx = rng.integers(0, len(t.sizes), n)
    v = np.round(rng.standard_cauchy(n) * 3).clip(-2**40, 2**40).astype(np.int64)
    enc.encode(v, idx, t)
    parts.append((v, idx))
  data = enc.finish()
  dec = coder.Decoder(data)
  for v, idx in parts:
    np.testing.assert_array_equal(dec.decode(idx, t), v)
  dec.finish()
  # 12 bytes are more than the look-ahead holds; 4 bytes may hide in it (only coding again sees
  # them) or not, depending on where the last symbol's interval left the decoder.
  for tail, message in ((bytes(12), "left after"), (bytes(4), "left after|not the coding")):
    extra = coder.Decoder(data + tail)
    for _, idx in parts:
      extra.decode(idx, t)
    with pytest.raises(BitstreamError, match=message):
      extra.finish()


def test_a_word_hidden_in_the_look_ahead_is_caught_by_coding_again():
  """One appended word that the range decoder holds as look-ahead (so it looks exhausted) is
  refused because coding the decoded symbols again does not give the same bytes."""
  rng = np.random.default_rng(0)
  t = _tables()
  idx = rng.integers(0, len(t.sizes), 50)
  v = np.round(rng.standard_cauchy(50) * 3).astype(np.int64)
  dec = coder.Decoder(coder.encode(v, idx, t) + bytes(4))
  np.testing.assert_array_equal(dec.decode(idx, t), v)
  with pytest.raises(BitstreamError, match="not the coding"):
    dec.finish()


def test_rate_matches_model_entropy():
  """Symbols drawn from the table's own distribution cost about their information content."""
  rng = np.random.default_rng(0)
  t = _tables((1.5,))
  p = t.probabilities(0)
  sym = rng.choice(len(p) - 1, size=20000, p=p[:-1] / p[:-1].sum())
  v = sym + t.offsets[0]
  bits = 8 * len(coder.encode(v, np.zeros_like(v), t))
  ideal = -np.log2(p[sym]).sum()
  assert ideal <= bits < ideal * 1.01 + 64


def test_empty_and_shaped_input():
  t = _tables()
  idx = np.zeros((2, 3), np.int64)
  v = np.arange(6).reshape(2, 3) - 3
  out = coder.decode(coder.encode(v, idx, t), idx, t)
  assert out.shape == (2, 3) and np.array_equal(out, v)


def test_oversized_table_is_refused():
  with pytest.raises(ValueError, match="too large"):
    coder.quantize_pmf(np.ones(40000) / 40000)


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_tables_used_is_numpy_unique(n):
  """The coding order (table by table, ascending) must not change: files stay byte-identical."""
  idx = np.random.default_rng(n).integers(0, 40, n)
  np.testing.assert_array_equal(coder._tables_used(idx), np.unique(idx))
