"""Integer coding tables and the range coder (constriction) for quantised latents.

A `TableSet` holds K discrete distributions as integer counts summing to 2**PRECISION, each over
the symbols [offset_k, offset_k + size_k - 1] plus one escape symbol. The tables are built once
(post-training, `codec.build_tables`) and stored with the model, so encoder and decoder feed the
coder identical integers on every platform; the coder itself (constriction's range coder) is
deterministic integer code. Values outside a table's range are sent as the escape symbol
followed by an Elias-gamma-style code of the value through uniform models (rare by design:
the ranges cover all but ~1e-9 of each distribution's mass).

Symbols are coded grouped by table (one batch call per table, in table order) and the escaped
values last; the decoder knows each symbol's table, so it regroups identically. Several such
parts (z, then y or its slices) go into one string, one after the other.

Hostile strings. A range coder never writes fewer bits than the information -log2 P of what it
coded (its intervals only shrink faster than the ideal ones; measured worst case over random
streams: 0.07 bit under), and its decoder pulls in a 32-bit word for every 32 bits of information
it decodes, after a look-ahead of two words. So while decoding, the information of the symbols
decoded so far (exact: the tables are integer counts) must stay within 32 bits per word of the
string plus `SLACK_BITS`; more means the decoder is reading past the end (constriction then
reads zero words and says nothing). `Decoder` checks this after every batch of at most
`_BATCH` symbols, so a file that declares a huge image with a short string is refused after
decoding a few more symbols than the string can hold; `min_bits` gives the bound before decoding
anything. At the end, `finish` refuses whole words left unread, and codes the decoded symbols
again: the string must be exactly those bytes, which also catches what hides in the two words of
look-ahead. Every error constriction raises on bad data becomes a `BitstreamError`.
"""
import dataclasses
import functools

import constriction
import numpy as np

from dcic_jax.errors import BitstreamError

PRECISION = 16          # counts sum to 2**16; every symbol (and the escape) has count >= 1
_CHUNK_BITS = 16        # escaped magnitudes are sent in 16-bit chunks
_MAX_ESCAPE_BITS = 48
WORD_BITS = 32          # constriction's range coder writes 32-bit words
SLACK_BITS = 2 * WORD_BITS  # the decoder's two words of look-ahead: an over-read up to this is not seen
_BATCH = 1 << 18        # symbols per constriction call between two budget checks


@dataclasses.dataclass(frozen=True)
class TableSet:
  counts: np.ndarray    # [sum(sizes + 1)] uint16, tables concatenated, escape count last in each
  starts: np.ndarray    # [K] int64 start of table k in `counts`
  sizes: np.ndarray     # [K] int32 number of in-range symbols of table k
  offsets: np.ndarray   # [K] int32 value of table k's first symbol

  def to_tree(self) -> dict:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  @classmethod
  def from_tree(cls, tree: dict) -> "TableSet":
    return cls(counts=np.asarray(tree["counts"], np.uint16), starts=np.asarray(tree["starts"], np.int64),
               sizes=np.asarray(tree["sizes"], np.int32), offsets=np.asarray(tree["offsets"], np.int32))

  def probabilities(self, k: int) -> np.ndarray:
    """Table k as float64 probabilities (exact dyadic values, so constriction's scaling is exact)."""
    c = self.counts[self.starts[k]:self.starts[k] + self.sizes[k] + 1]
    return c.astype(np.float64) / float(1 << PRECISION)

  @functools.cached_property
  def bits(self) -> np.ndarray:
    """[len(counts)] float64 information -log2 p of every entry (escape included), in bits."""
    return PRECISION - np.log2(self.counts.astype(np.float64))

  @functools.cached_property
  def min_bits(self) -> np.ndarray:
    """[K] the fewest bits any one symbol of table k costs: the bound on a string before decoding."""
    return PRECISION - np.log2(np.maximum.reduceat(self.counts.astype(np.float64), self.starts))


def quantize_pmf(pmf: np.ndarray) -> np.ndarray:
  """float pmf over n symbols (+ implicit escape = leftover mass) -> n + 1 integer counts.

  Every count >= 1 and the total is exactly 2**PRECISION; rounding slack goes to/from the
  largest entries.
  """
  pmf = np.clip(np.asarray(pmf, np.float64), 0.0, None)
  escape = max(1.0 - pmf.sum(), 0.0)
  p = np.append(pmf, escape)
  total = 1 << PRECISION
  if len(p) > total // 2:
    raise ValueError(f"table of {len(p)} symbols is too large for {PRECISION}-bit counts")
  counts = np.maximum(np.floor(p / p.sum() * total), 1).astype(np.int64)
  diff = total - counts.sum()
  order = np.argsort(-counts[:-1], kind="stable")  # adjust in-range symbols, largest first
  i = 0
  while diff != 0:
    j = order[i % len(order)]
    step = 1 if diff > 0 else -1
    if counts[j] + step >= 1:
      counts[j] += step
      diff -= step
    i += 1
  return counts.astype(np.uint16)  # fits: with >= 2 entries of count >= 1, none exceeds 2**16 - 1


def make_tableset(pmfs: list[np.ndarray], offsets: list[int]) -> TableSet:
  counts = [quantize_pmf(p) for p in pmfs]
  sizes = np.array([len(c) - 1 for c in counts], np.int32)
  starts = np.concatenate([[0], np.cumsum([len(c) for c in counts])[:-1]]).astype(np.int64)
  return TableSet(np.concatenate(counts), starts, sizes, np.asarray(offsets, np.int32))


def _zigzag(v: np.ndarray) -> np.ndarray:
  v = v.astype(np.int64)
  return np.where(v >= 0, 2 * v, -2 * v - 1)


def _unzigzag(u: np.ndarray) -> np.ndarray:
  return np.where(u % 2 == 0, u // 2, -(u + 1) // 2)


def _tables_used(table_idx: np.ndarray) -> np.ndarray:
  """The distinct table indexes in ascending order, as `np.unique` gives them; counting is ~8×
  faster than its sort/hash on a Kodak y (300k indexes)."""
  return np.flatnonzero(np.bincount(table_idx, minlength=1))


class Encoder:
  """One range-coded string for any number of `encode` calls, in order; `finish` gives its bytes.

  A codec codes z and every part of y into one string: each extra string would cost its own
  flush (~2 bytes on average: whole 32-bit words) and its own length field in the header.
  """

  def __init__(self):
    self._enc = constriction.stream.queue.RangeEncoder()

  def encode(self, values: np.ndarray, table_idx: np.ndarray, tables: TableSet) -> None:
    """Appends integer `values` (any shape), value i coded with table `table_idx[i]`."""
    values = np.asarray(values).reshape(-1).astype(np.int64)
    table_idx = np.asarray(table_idx).reshape(-1)
    escaped = []
    for k in _tables_used(table_idx):
      v = values[table_idx == k] - tables.offsets[k]
      out = (v < 0) | (v >= tables.sizes[k])
      escaped.append(v[out])
      sym = np.where(out, tables.sizes[k], v).astype(np.int32)
      self._enc.encode(sym, constriction.stream.model.Categorical(tables.probabilities(k), perfect=False))
    escaped = np.concatenate(escaped) if escaped else np.zeros(0, np.int64)
    if escaped.size:
      _encode_escapes(self._enc, escaped)

  def finish(self) -> bytes:
    return self._enc.get_compressed().tobytes()


class Decoder:
  """Reads back what `Encoder` wrote: the same `decode` calls, in the same order.

  Hostile data: raises BitstreamError when the string is not whole words, when its symbols need
  more information than it holds (see the module docstring), when constriction refuses it, or
  (`finish`) when it is not exactly the string that coding its symbols again gives.
  """

  def __init__(self, data: bytes):
    if len(data) % 4:
      raise BitstreamError(f"latent string of {len(data)} bytes is not whole 32-bit words")
    self._data = bytes(data)
    self._calls = []   # (values int64, table_idx, tables) of every decode, to code them again
    self._budget = budget_bits(len(data))
    self._spent = 0.0
    self._dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, np.uint32).copy())

  def _spend(self, bits: float) -> None:
    self._spent += bits
    if self._spent > self._budget:
      raise BitstreamError(f"latent string ends early: its symbols need over {self._spent:.0f} bits, "
                           f"it holds {self._budget - SLACK_BITS}")

  def _read(self, model, n: int) -> np.ndarray:
    try:
      return self._dec.decode(model, n)
    except Exception as e:  # constriction's refusals of bad data: AssertionError, ValueError, ...
      raise BitstreamError(f"latent string does not decode ({type(e).__name__}: {e})") from None

  def decode(self, table_idx: np.ndarray, tables: TableSet) -> np.ndarray:
    """int32 values, shaped like `table_idx`."""
    shape = np.shape(table_idx)
    table_idx = np.asarray(table_idx).reshape(-1)
    out = np.empty(table_idx.size, np.int64)
    esc_pos = []
    for k in _tables_used(table_idx):
      pos = np.nonzero(table_idx == k)[0]
      model = constriction.stream.model.Categorical(tables.probabilities(k), perfect=False)
      sym = np.empty(pos.size, np.int64)
      for i in range(0, pos.size, _BATCH):
        part = self._read(model, min(_BATCH, pos.size - i))
        self._spend(float(tables.bits[tables.starts[k] + part].sum()))
        sym[i:i + part.size] = part
      out[pos] = sym + tables.offsets[k]
      esc_pos.append((pos[sym == tables.sizes[k]], tables.offsets[k]))
    n_esc = sum(p.size for p, _ in esc_pos)
    if n_esc:
      v = self._escapes(n_esc)
      i = 0
      for pos, off in esc_pos:
        out[pos] = v[i:i + pos.size] + off
        i += pos.size
    self._calls.append((out, table_idx, tables))
    return out.astype(np.int32).reshape(shape)

  def _escapes(self, n: int) -> np.ndarray:
    """Inverse of `_encode_escapes`: every 16-bit chunk in one call (they share one model)."""
    nbits = self._read(constriction.stream.model.Uniform(_MAX_ESCAPE_BITS + 1), n).astype(np.int64)
    chunks = -(-nbits // _CHUNK_BITS)
    self._spend(n * np.log2(_MAX_ESCAPE_BITS + 1) + _CHUNK_BITS * float(chunks.sum()))
    flat = self._read(constriction.stream.model.Uniform(1 << _CHUNK_BITS), int(chunks.sum())).astype(np.int64)
    owner = np.repeat(np.arange(n), chunks)
    shift = _CHUNK_BITS * (np.arange(flat.size) - np.repeat(np.cumsum(chunks) - chunks, chunks))
    u = np.zeros(n, np.int64)
    np.bitwise_or.at(u, owner, flat << shift)
    return _unzigzag(u)

  def finish(self) -> None:
    """BitstreamError unless the string is exactly the coding of what it decoded to.

    `maybe_exhausted` catches whole words left unread; the look-ahead words it cannot judge (one
    appended word, changed bits after the last symbol's interval) are caught by coding the decoded
    symbols again and comparing the bytes: the encoder is deterministic, so a string it wrote
    always matches. This costs one more coding pass (a few percent of a decode).
    """
    if not self._dec.maybe_exhausted():
      raise BitstreamError("latent string has data left after the last symbol")
    enc = Encoder()
    for values, table_idx, tables in self._calls:
      enc.encode(values, table_idx, tables)
    if enc.finish() != self._data:
      raise BitstreamError("latent string is not the coding of the symbols it decodes to "
                           "(data appended or changed after the last symbol)")


def budget_bits(n_bytes: int) -> float:
  """The most information a string of n_bytes can make its decoder yield, padding included."""
  return WORD_BITS * (n_bytes // 4) + SLACK_BITS


def encode(values: np.ndarray, table_idx: np.ndarray, tables: TableSet) -> bytes:
  """One-call `Encoder`: range-code `values`, value i with table `table_idx[i]`."""
  enc = Encoder()
  enc.encode(values, table_idx, tables)
  return enc.finish()


def decode(data: bytes, table_idx: np.ndarray, tables: TableSet) -> np.ndarray:
  """Inverse of `encode`: int32 values, shaped like `table_idx`."""
  return Decoder(data).decode(table_idx, tables)


def _encode_escapes(enc, v: np.ndarray) -> None:
  """Offset-relative escaped values: zigzag, bit length (uniform), then 16-bit chunks (uniform)."""
  u = _zigzag(v)
  nbits = np.array([int(x).bit_length() for x in u], np.int32)
  if nbits.max() > _MAX_ESCAPE_BITS:
    raise ValueError("latent value out of the coder's range (|v| >= 2**47)")
  enc.encode(nbits, constriction.stream.model.Uniform(_MAX_ESCAPE_BITS + 1))
  for x, n in zip(u, nbits):
    for c in range(0, int(n), _CHUNK_BITS):
      enc.encode(np.array([(int(x) >> c) & 0xFFFF], np.int32), constriction.stream.model.Uniform(1 << _CHUNK_BITS))
