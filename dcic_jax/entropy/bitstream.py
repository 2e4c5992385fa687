"""The `.dcic` container: a small validated header followed by the entropy-coded strings.

The header carries everything a decoder needs besides the checkpoint (docs/design.md §3): which codec and
which exact parameters wrote the file (so decoding with the wrong model is an error, not garbage), the
image size and its padding, and the seed + PRNG tag of the decoder's common randomness (DCIC's
consistent noise costs zero bits). The payload is the strings concatenated; the file size is
the rate.

Byte layout, versions 2 and 3 (fixed-size integers little-endian; "varint" is unsigned LEB128, 7
bits a byte, shortest form only, at most 5 bytes, 10 for the seed):

| field          | size        | notes                                                     |
| -------------- | ----------- | --------------------------------------------------------- |
| magic          | 4           | b"DCIC"                                                   |
| version        | u8          | FORMAT_VERSION (3)                                        |
| codec          | u8 [+ text] | code from CODEC_CODES; 0: u8 length 1..64 + printable ASCII id |
| fingerprint    | 8           | hash of the model parameters + coding tables              |
| height, width  | varint × 2  | 1..65535 each                                             |
| padding h, w   | varint × 2  | padded size − size, 0..1023 each                          |
| seed           | varint      | common-randomness seed of the decoder, 0..2**64-1         |
| prng_impl      | u8 [+ text] | code from PRNG_CODES; 0: u8 length 1..32 + printable ASCII |
| n_strings      | u8          | 1..16                                                     |
| lengths        | varint × n  | byte length of each string                                |
| crc32          | u32         | zlib.crc32 of every header byte before it + the payload   |
| payload        | sum(lengths)| the strings, concatenated; nothing may follow             |

The codecs write one string (z, then all of y, in one range coder; `codecs/codec.py`), so a
Kodak file of a shipped codec has a 29–30-byte header with a seed below 128 (the CLI's default is
0), 39–40 with a full 64-bit seed. Version 1 (still read, no longer written) spent 73–76 bytes: the
ids as text, the four sizes and the lengths as u32, the seed as u64.

Versions 2 and 3 have the same bytes and differ in what the latents mean: from version 3 the
integer networks that give the coder mu and sigma (`codecs/fixed_point.py`, `entropy/channelwise.py`)
compute on finer grids, so the same model gives other mu; a decoder runs the grids of the file's
version (`fixed_point.grids_for`), so older files still decode to what they did. `pack` writes
either (`Header.version`), so a file for an older build can still be made.

Every problem with a file raises `BitstreamError` with a one-line message. A length field is checked
against the real file size before it is used; the declared image size is checked by
`Codec.decompress` against the pixel limit (`limits.py`) and against the bits the strings hold
before any latent or pixel is allocated (docs/reliability.md), so a hostile file cannot cause a
huge allocation.
"""

import dataclasses
import numbers
import os
import struct
import zlib
from typing import Sequence

from dcic_jax.errors import BitstreamError, UserError

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
WRITABLE_VERSIONS = (2, 3)  # one layout; 3: the fine grids of the integer networks
MAGIC = b"DCIC"

# One-byte codes of the common names; append only (a code, once given, means that name forever).
# Any other name is written as text after code 0.
CODEC_CODES = {"bmshj2018": 1, "mbt2018-mean": 2, "swint-charm": 3, "tcm": 4, "tcm-official": 5}
PRNG_CODES = {"threefry2x32": 1, "rbg": 2, "unsafe_rbg": 3}
MAX_VARINT_BYTES = 5  # sizes and lengths
MAX_SEED_BYTES = 10   # 64 bits

MAX_CODEC_ID = 64
MAX_PRNG_IMPL = 32
MAX_STRINGS = 16
MAX_SIZE = 65535
MAX_PADDING = 1024  # padded - size must stay below this
FINGERPRINT_BYTES = 8

_SIZES = struct.Struct("<4I")  # height, width, padded_height, padded_width
_U8, _U32, _U64 = struct.Struct("<B"), struct.Struct("<I"), struct.Struct("<Q")
# Smallest possible file (versions 2, 3): coded ids, one-byte sizes, one empty string.
MIN_FILE_BYTES = len(MAGIC) + 1 + 1 + FINGERPRINT_BYTES + 4 + 1 + 1 + 1 + 1 + _U32.size


@dataclasses.dataclass(frozen=True)
class Header:
  """What the decoder must know besides the checkpoint; validated on construction."""
  codec_id: str  # registry id of the codec, e.g. "bmshj2018"
  fingerprint: bytes  # 8 bytes identifying parameters + coding tables
  height: int  # original image size in pixels
  width: int
  padded_height: int  # size after padding to the codec's stride multiple
  padded_width: int
  seed: int  # 0 .. 2**64-1: seed of the decoder's consistent noise
  prng_impl: str  # PRNG implementation tag, e.g. "threefry2x32"
  version: int = FORMAT_VERSION  # format version the file is written in (says which integer grids)

  def __post_init__(self):
    # Normalise numpy integers / bytearrays so equality and packing behave.
    for name in ("height", "width", "padded_height", "padded_width", "seed", "version"):
      value = getattr(self, name)
      if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
      object.__setattr__(self, name, int(value))
    if isinstance(self.fingerprint, (bytearray, memoryview)):
      object.__setattr__(self, "fingerprint", bytes(self.fingerprint))
    _check_header(self)


def _check_text(name: str, value, max_len: int) -> None:
  if not isinstance(value, str):
    raise ValueError(f"{name} must be a str, got {type(value).__name__}")
  # Printable ASCII only, so that error messages naming it stay on one line.
  if not 1 <= len(value) <= max_len or not all(" " <= c <= "~" for c in value):
    raise ValueError(f"{name} must be 1..{max_len} printable ASCII chars, got {value[:80]!r}")


def _check_header(h: Header) -> None:
  """Raises ValueError naming the first field that is out of range."""
  if h.version not in READABLE_VERSIONS:
    raise ValueError(f"format version {h.version} is not one of {READABLE_VERSIONS}")
  _check_text("codec id", h.codec_id, MAX_CODEC_ID)
  if not isinstance(h.fingerprint, bytes) or len(h.fingerprint) != FINGERPRINT_BYTES:
    raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {h.fingerprint!r}")
  if not (1 <= h.height <= MAX_SIZE and 1 <= h.width <= MAX_SIZE):
    raise ValueError(f"absurd image size {h.height}x{h.width}")
  if not (h.height <= h.padded_height < h.height + MAX_PADDING
          and h.width <= h.padded_width < h.width + MAX_PADDING):
    raise ValueError(f"absurd padded size {h.padded_height}x{h.padded_width} "
                     f"for a {h.height}x{h.width} image")
  if not 0 <= h.seed < 2**64:
    raise ValueError(f"seed {h.seed} out of range 0..2**64-1")
  _check_text("prng impl", h.prng_impl, MAX_PRNG_IMPL)


def pack(header: Header, strings: Sequence[bytes]) -> bytes:
  """Serialises a header and its entropy-coded strings; ValueError on programmer errors."""
  if not isinstance(header, Header):
    raise ValueError(f"header must be a Header, got {type(header).__name__}")
  _check_header(header)  # Already done at construction; cheap, and guards object.__setattr__.
  if header.version not in WRITABLE_VERSIONS:
    raise ValueError(f"format version {header.version} is read, not written (writes {WRITABLE_VERSIONS})")
  if isinstance(strings, (bytes, bytearray, str)):
    raise ValueError("strings must be a sequence of byte strings, not a single one")
  strings = list(strings)
  if not 1 <= len(strings) <= MAX_STRINGS:
    raise ValueError(f"need 1..{MAX_STRINGS} strings, got {len(strings)}")
  for i, s in enumerate(strings):
    if not isinstance(s, (bytes, bytearray, memoryview)):
      raise ValueError(f"string {i} must be bytes, got {type(s).__name__}")
    if len(s) >= 2**(7 * MAX_VARINT_BYTES):
      raise ValueError(f"string {i} is too long ({len(s)} bytes)")
  head = b"".join([
      MAGIC, _U8.pack(header.version),
      _name(header.codec_id, CODEC_CODES),
      header.fingerprint,
      *(_varint(v) for v in (header.height, header.width, header.padded_height - header.height,
                             header.padded_width - header.width)),
      _varint(header.seed),
      _name(header.prng_impl, PRNG_CODES),
      _U8.pack(len(strings)),
      *(_varint(len(s)) for s in strings),
  ])
  payload = b"".join(bytes(s) for s in strings)
  crc = zlib.crc32(payload, zlib.crc32(head))
  return head + _U32.pack(crc) + payload


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
    value >>= 7
    if not value:
      return bytes(out)


def _name(name: str, codes: dict[str, int]) -> bytes:
  if name in codes:
    return _U8.pack(codes[name])
  raw = name.encode("ascii")
  return _U8.pack(0) + _U8.pack(len(raw)) + raw


class _Reader:
  """A cursor over the file that turns running off its end into a clear error."""

  def __init__(self, data: bytes):
    self.data = data
    self.pos = 0

  def take(self, n: int, what: str) -> bytes:
    if self.pos + n > len(self.data):
      raise BitstreamError(f"file truncated while reading the {what}")
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def read(self, fmt: struct.Struct, what: str) -> tuple[int, ...]:
    return fmt.unpack(self.take(fmt.size, what))

  def varint(self, what: str, max_bytes: int = MAX_VARINT_BYTES) -> int:
    value = 0
    for i in range(max_bytes):
      byte = self.take(1, what)[0]
      value |= (byte & 0x7F) << (7 * i)
      if not byte & 0x80:
        if byte == 0 and i:
          raise BitstreamError(f"bad {what}: not in its shortest form")
        return value
    raise BitstreamError(f"bad {what}: longer than {max_bytes} bytes")

  def name(self, what: str, codes: dict[str, int], max_len: int) -> str:
    """A coded name (versions 2, 3): a code from `codes`, or 0 and the name as text."""
    (code,) = self.read(_U8, what)
    if code == 0:
      return self.text(what, max_len)
    for name, c in codes.items():
      if c == code:
        return name
    raise BitstreamError(f"unknown {what} code {code} (a newer dcic_jax wrote this file?)")

  def text(self, what: str, max_len: int) -> str:
    (n,) = self.read(_U8, f"{what} length")
    if not 1 <= n <= max_len:
      raise BitstreamError(f"bad {what} length {n} (must be 1..{max_len})")
    raw = self.take(n, what)
    try:
      return raw.decode("ascii")
    except UnicodeDecodeError:
      raise BitstreamError(f"{what} is not ASCII") from None


def unpack(data: bytes) -> tuple[Header, list[bytes]]:
  """Parses and validates a .dcic file; any problem raises BitstreamError with one line."""
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise TypeError(f"unpack needs bytes, got {type(data).__name__}")
  data = bytes(data)
  if len(data) < MIN_FILE_BYTES:
    raise BitstreamError(f"not a .dcic file or truncated: {len(data)} bytes, "
                         f"a .dcic file has at least {MIN_FILE_BYTES}")
  if data[:len(MAGIC)] != MAGIC:
    raise BitstreamError("not a .dcic file (bad magic)")
  version = data[len(MAGIC)]
  if version not in READABLE_VERSIONS:
    raise BitstreamError(f"unsupported .dcic format version {version} "
                         f"(this build reads versions {', '.join(map(str, READABLE_VERSIONS))})")

  r = _Reader(data)
  r.pos = len(MAGIC) + 1
  if version == 1:
    codec_id = r.text("codec id", MAX_CODEC_ID)
    fingerprint = r.take(FINGERPRINT_BYTES, "fingerprint")
    height, width, padded_height, padded_width = r.read(_SIZES, "image size")
    (seed,) = r.read(_U64, "seed")
    prng_impl = r.text("prng impl", MAX_PRNG_IMPL)
  else:
    codec_id = r.name("codec id", CODEC_CODES, MAX_CODEC_ID)
    fingerprint = r.take(FINGERPRINT_BYTES, "fingerprint")
    height, width, pad_h, pad_w = (r.varint("image size") for _ in range(4))
    padded_height, padded_width = height + pad_h, width + pad_w
    seed = r.varint("seed", MAX_SEED_BYTES)
    prng_impl = r.name("prng impl", PRNG_CODES, MAX_PRNG_IMPL)
  try:
    header = Header(codec_id, fingerprint, height, width, padded_height, padded_width, seed,
                    prng_impl, version)
  except ValueError as e:
    raise BitstreamError(f"bad .dcic header: {e}") from None

  (n_strings,) = r.read(_U8, "string count")
  if not 1 <= n_strings <= MAX_STRINGS:
    raise BitstreamError(f"bad string count {n_strings} (must be 1..{MAX_STRINGS})")
  if version == 1:
    lengths = [r.read(_U32, "string lengths")[0] for _ in range(n_strings)]
  else:
    lengths = [r.varint("string lengths") for _ in range(n_strings)]
  for i, n in enumerate(lengths):
    if n > len(data):
      raise BitstreamError(f"string {i} length {n} exceeds the file size {len(data)}")
  crc_pos = r.pos
  (crc,) = r.read(_U32, "CRC")

  expected, found = sum(lengths), len(data) - r.pos
  if found < expected:
    raise BitstreamError(f"file truncated: header says {expected} payload bytes, found {found}")
  if found > expected:
    raise BitstreamError(f"trailing garbage: header says {expected} payload bytes, found {found}")
  if zlib.crc32(data[r.pos:], zlib.crc32(data[:crc_pos])) != crc:
    raise BitstreamError("corrupted .dcic file (CRC mismatch)")

  strings = []
  for n in lengths:
    strings.append(r.take(n, "payload"))
  return header, strings


def check_model(header: Header, codec_id: str, fingerprint: bytes) -> None:
  """Refuses to decode with a model other than the one that encoded (it would give garbage)."""
  if header.codec_id != codec_id or header.fingerprint != bytes(fingerprint):
    raise BitstreamError(
        f"file was written by codec {header.codec_id!r} (fingerprint {header.fingerprint.hex()}), "
        f"this checkpoint is {codec_id!r} ({bytes(fingerprint).hex()})")


def read_file(path) -> bytes:
  """Reads a whole .dcic file, turning OS errors into one-line user errors."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise UserError(f"no such file: {path}") from None
  except OSError as e:
    raise UserError(f"cannot read {path}: {e.strerror or e}") from None
  if not data:
    raise BitstreamError(f"{path} is empty, not a .dcic file")
  return data
