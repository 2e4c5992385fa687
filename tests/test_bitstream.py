"""Tests for the .dcic container: round trips, and every kind of bad file gives a BitstreamError."""

import dataclasses
import os
import struct
import zlib

import hypothesis
from hypothesis import strategies as st
import pytest

from dcic_jax.entropy import bitstream
from dcic_jax.entropy.bitstream import Header
from dcic_jax.errors import BitstreamError, UserError

HEADER = Header(codec_id="bmshj2018", fingerprint=bytes(range(8)), height=5, width=7,
                padded_height=64, padded_width=64, seed=12345, prng_impl="threefry2x32")
STRINGS = [b"zz", b"yyyyy"]

# Byte offsets inside a file written with HEADER (codec id "bmshj2018" has 9 chars).
_CODEC_END = 4 + 1 + 1 + 9
_SIZES_AT = _CODEC_END + 8
_PRNG_LEN_AT = _SIZES_AT + 16 + 8
_NSTRINGS_AT = _PRNG_LEN_AT + 1 + len("threefry2x32")


def _file(header=HEADER, strings=STRINGS):
  return bitstream.pack(header, strings)


def _recrc(data: bytes) -> bytes:
  """Recomputes the CRC after a deliberate edit, so the test reaches the validation under test."""
  n = data[_NSTRINGS_AT]
  crc_at = _NSTRINGS_AT + 1 + 4 * n
  head, payload = data[:crc_at], data[crc_at + 4:]
  return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _patch(data: bytes, offset: int, fmt: str, value, recrc=True) -> bytes:
  out = bytearray(data)
  struct.pack_into(fmt, out, offset, value)
  return _recrc(bytes(out)) if recrc else bytes(out)


def _raises(data, *words):
  with pytest.raises(BitstreamError) as info:
    bitstream.unpack(data)
  message = str(info.value)
  assert "\n" not in message
  for word in words:
    assert word in message.lower(), message
  return message


# --------------------------------------------------------------------------------------------------
# Round trips.

_text = lambda max_len: st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                                max_size=max_len)


@st.composite
def headers(draw):
  height = draw(st.integers(1, 65535))
  width = draw(st.integers(1, 65535))
  return Header(
      codec_id=draw(_text(64)),
      fingerprint=draw(st.binary(min_size=8, max_size=8)),
      height=height, width=width,
      padded_height=height + draw(st.integers(0, 1023)),
      padded_width=width + draw(st.integers(0, 1023)),
      seed=draw(st.integers(0, 2**64 - 1)),
      prng_impl=draw(_text(32)))


_strings = st.lists(st.binary(max_size=64), min_size=1, max_size=16)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(headers(), _strings)
def test_round_trip(header, strings):
  data = bitstream.pack(header, strings)
  got_header, got_strings = bitstream.unpack(data)
  assert got_header == header
  assert got_strings == strings
  assert all(type(s) is bytes for s in got_strings)


def test_layout_is_stable():
  # Golden bytes: any change here is a format change and needs a FORMAT_VERSION bump.
  golden = "".join([
      "44434943", "01",  # magic, version
      "09", b"bmshj2018".hex(), "0001020304050607",  # codec id, fingerprint
      "05000000", "07000000", "40000000", "40000000",  # height, width, padded height, padded width
      "3930000000000000",  # seed 12345
      "0c", b"threefry2x32".hex(),  # prng impl
      "02", "02000000", "05000000",  # n_strings, lengths
      "f2540f82",  # crc32
      b"zzyyyyy".hex(),  # payload
  ])
  assert _file().hex() == golden


def test_numpy_ints_and_bytearray_are_normalised():
  np = pytest.importorskip("numpy")
  h = Header("a", bytearray(8), np.int64(3), np.int32(4), 3, 4, np.uint64(2**63), "p")
  assert type(h.height) is int and type(h.fingerprint) is bytes
  assert bitstream.unpack(bitstream.pack(h, [memoryview(b"x")]))[1] == [b"x"]


@pytest.mark.parametrize("kwargs", [
    dict(codec_id=""), dict(codec_id="x" * 65), dict(codec_id="é"), dict(codec_id="a\nb"),
    dict(fingerprint=b"1234567"), dict(fingerprint="12345678"),
    dict(height=0), dict(width=65536), dict(padded_height=4), dict(padded_width=7 + 1024),
    dict(seed=-1), dict(seed=2**64), dict(height=5.0), dict(height=True),
    dict(prng_impl=""), dict(prng_impl="p" * 33),
])
def test_invalid_header_is_a_value_error(kwargs):
  with pytest.raises(ValueError):
    dataclasses.replace(HEADER, **kwargs)


@pytest.mark.parametrize("strings", [[], [b""] * 17, [b"ok", "text"], b"bytes", [b"a", 3]])
def test_pack_rejects_bad_strings(strings):
  with pytest.raises(ValueError):
    bitstream.pack(HEADER, strings)


# --------------------------------------------------------------------------------------------------
# Damaged files.

def test_every_truncation_raises():
  data = _file()
  for n in range(len(data)):
    _raises(data[:n])


def test_every_single_bit_flip_raises():
  data = _file()
  for i in range(len(data) * 8):
    flipped = bytearray(data)
    flipped[i // 8] ^= 1 << (i % 8)
    _raises(bytes(flipped))


def test_payload_corruption_is_a_crc_error():
  data = bytearray(_file())
  data[-1] ^= 0xFF
  _raises(bytes(data), "crc")


def test_bad_magic():
  _raises(b"PNG\x00" + _file()[4:], "magic")


@pytest.mark.parametrize("version", [0, 2, 7, 255])
def test_bad_version(version):
  message = _raises(_patch(_file(), 4, "<B", version), "version")
  assert str(version) in message


@pytest.mark.parametrize("index,value", [(0, 0), (1, 0), (0, 70000), (1, 2**32 - 1)])
def test_absurd_image_size(index, value):
  _raises(_patch(_file(), _SIZES_AT + 4 * index, "<I", value), "absurd", "size")


@pytest.mark.parametrize("index,value", [(2, 4), (3, 6), (2, 5 + 1024), (3, 2**32 - 1)])
def test_absurd_padding(index, value):
  _raises(_patch(_file(), _SIZES_AT + 4 * index, "<I", value), "absurd", "padded")


@pytest.mark.parametrize("offset,value,word", [
    (5, 0, "codec id length"), (5, 65, "codec id length"), (5, 255, "codec id length"),
    (_PRNG_LEN_AT, 0, "prng impl length"), (_PRNG_LEN_AT, 33, "prng impl length"),
    (_NSTRINGS_AT, 0, "string count"), (_NSTRINGS_AT, 17, "string count"),
])
def test_bad_length_bytes(offset, value, word):
  _raises(_patch(_file(), offset, "<B", value, recrc=False), word)


def test_non_ascii_text():
  data = bytearray(_file())
  data[6] = 0xC3
  _raises(bytes(data), "codec id", "ascii")
  data[6] = 0x0A  # ASCII, but a newline would break one-line error messages.
  _raises(_recrc(bytes(data)), "codec id")


def test_oversized_string_length():
  data = _file()
  _raises(_patch(data, _NSTRINGS_AT + 1, "<I", 2**32 - 1), "length", "exceeds")
  _raises(_patch(data, _NSTRINGS_AT + 1, "<I", len(data) + 1), "exceeds")
  _raises(_patch(data, _NSTRINGS_AT + 1, "<I", 50), "truncated")


def test_trailing_garbage():
  _raises(_file() + b"\x00", "trailing")
  _raises(_file() + _file(), "trailing")


def test_payload_truncated_message():
  data = _file()
  message = _raises(data[:-3], "truncated")
  assert "7" in message and "4" in message


def test_too_short():
  _raises(b"", "not a .dcic")
  _raises(b"DCIC", "truncated")


def test_unpack_accepts_bytearray_and_rejects_non_bytes():
  assert bitstream.unpack(bytearray(_file()))[1] == STRINGS
  with pytest.raises(TypeError):
    bitstream.unpack("DCIC")


# --------------------------------------------------------------------------------------------------
# Fuzzing: nothing but BitstreamError, whatever the input.

def _unpack_or_bitstream_error(data):
  try:
    bitstream.unpack(data)
  except BitstreamError as e:
    assert "\n" not in str(e)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data):
  _unpack_or_bitstream_error(data)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.binary(max_size=300))
def test_fuzz_after_valid_magic(data):
  _unpack_or_bitstream_error(b"DCIC\x01" + data)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(headers(), _strings, st.data())
def test_fuzz_mutated_valid_files(header, strings, draw):
  data = bytearray(bitstream.pack(header, strings))
  for _ in range(draw.draw(st.integers(1, 8))):
    op = draw.draw(st.sampled_from(["set", "insert", "delete"]))
    i = draw.draw(st.integers(0, len(data)))
    if op == "set" and i < len(data):
      data[i] = draw.draw(st.integers(0, 255))
    elif op == "insert":
      data[i:i] = draw.draw(st.binary(min_size=1, max_size=8))
    else:
      del data[i:i + draw.draw(st.integers(1, 8))]
  _unpack_or_bitstream_error(bytes(data))


# --------------------------------------------------------------------------------------------------
# Model check.

def test_check_model():
  bitstream.check_model(HEADER, "bmshj2018", bytes(range(8)))
  with pytest.raises(BitstreamError, match="written by codec 'bmshj2018'.*'mbt2018'"):
    bitstream.check_model(HEADER, "mbt2018", bytes(range(8)))
  with pytest.raises(BitstreamError, match="0001020304050607.*ffffffffffffffff"):
    bitstream.check_model(HEADER, "bmshj2018", b"\xff" * 8)


# --------------------------------------------------------------------------------------------------
# Files on disk.

def test_write_and_read(tmp_path):
  path = tmp_path / "img.dcic"
  bitstream.write_atomic(path, _file())
  assert bitstream.unpack(bitstream.read_file(path)) == (HEADER, STRINGS)
  bitstream.write_atomic(str(path), b"second")  # Overwrites.
  assert bitstream.read_file(path) == b"second"
  assert os.listdir(tmp_path) == ["img.dcic"]
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_write_failure_keeps_destination(tmp_path, monkeypatch):
  path = tmp_path / "img.dcic"
  bitstream.write_atomic(path, b"original")
  with pytest.raises(TypeError):  # A programmer error mid-write propagates unchanged.
    bitstream.write_atomic(path, object())
  assert path.read_bytes() == b"original"
  assert os.listdir(tmp_path) == ["img.dcic"]

  def disk_full(fd):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(bitstream.os, "fsync", disk_full)
  with pytest.raises(UserError, match="No space left"):
    bitstream.write_atomic(path, b"new")
  assert path.read_bytes() == b"original"
  assert os.listdir(tmp_path) == ["img.dcic"]


def test_write_into_missing_directory(tmp_path):
  with pytest.raises(UserError, match="cannot write"):
    bitstream.write_atomic(tmp_path / "nope" / "img.dcic", b"x")
  assert os.listdir(tmp_path) == []


def test_replace_failure_leaves_no_temp(tmp_path):
  target = tmp_path / "is_a_dir"
  (target / "child").mkdir(parents=True)  # os.replace onto a non-empty directory fails.
  with pytest.raises(UserError, match="cannot write"):
    bitstream.write_atomic(target, b"x")
  assert sorted(os.listdir(tmp_path)) == ["is_a_dir"]


def test_read_file_errors(tmp_path):
  with pytest.raises(UserError, match="no such file"):
    bitstream.read_file(tmp_path / "missing.dcic")
  with pytest.raises(UserError, match="cannot read"):
    bitstream.read_file(tmp_path)
  (tmp_path / "empty.dcic").write_bytes(b"")
  with pytest.raises(BitstreamError, match="empty"):
    bitstream.read_file(tmp_path / "empty.dcic")
