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
from dcic_jax import io
from dcic_jax.errors import BitstreamError, UserError

HEADER = Header(codec_id="bmshj2018", fingerprint=bytes(range(8)), height=5, width=7,
                padded_height=64, padded_width=64, seed=12345, prng_impl="threefry2x32")
STRINGS = [b"zz", b"yyyyy"]

def _file(header=HEADER, strings=STRINGS):
  return bitstream.pack(header, strings)


def _raw(codec=b"\x01", sizes=(5, 7, 59, 57), prng=b"\x01", strings=STRINGS, lengths=None,
         version=3, fingerprint=bytes(range(8)), seed=12345) -> bytes:
  """A version-3 file (version 2's bytes) assembled field by field with a correct CRC, so that a test can put any
  value (in range or not) in any field and reach the check under test. `sizes` and `lengths`
  are ints (written as varints) or raw bytes."""
  field = lambda v: v if isinstance(v, bytes) else bitstream._varint(v)
  lengths = [len(x) for x in strings] if lengths is None else lengths
  head = b"".join([b"DCIC", bytes([version]), codec, fingerprint, *map(field, sizes),
                   field(seed), prng, bytes([len(lengths)]), *map(field, lengths)])
  payload = b"".join(strings)
  return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


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
      "44434943", "03",  # magic, version
      "01", "0001020304050607",  # codec code (bmshj2018), fingerprint
      "05", "07", "3b", "39",  # height, width, padding 59 and 57 (varints)
      "b960",  # seed 12345 (varint)
      "01",  # prng code (threefry2x32)
      "02", "02", "05",  # n_strings, lengths (varints)
      "2f788ba8",  # crc32
      b"zzyyyyy".hex(),  # payload
  ])
  assert _file().hex() == golden
  assert _raw() == _file()


def test_version_1_files_still_read():
  version_1 = bytes.fromhex("".join([
      "44434943", "01", "09", b"bmshj2018".hex(), "0001020304050607",
      "05000000", "07000000", "40000000", "40000000", "3930000000000000",
      "0c", b"threefry2x32".hex(), "02", "02000000", "05000000", "f2540f82", b"zzyyyyy".hex()]))
  assert bitstream.unpack(version_1) == (dataclasses.replace(HEADER, version=1), STRINGS)


def test_version_2_files_still_read_and_can_be_written():
  """Version 2 has version 3's bytes (only the integer networks' grids differ, `fixed_point.grids_for`):
  the header says which, and a version-2 file can still be made for an older build."""
  old = dataclasses.replace(HEADER, version=2)
  data = bitstream.pack(old, STRINGS)
  assert data[4] == 2 and data[5:-len(b"zzyyyyy") - 4] == _file()[5:-len(b"zzyyyyy") - 4]
  assert data == _raw(version=2)
  assert bitstream.unpack(data) == (old, STRINGS)


def test_version_1_is_read_not_written():
  with pytest.raises(ValueError, match="not written"):
    bitstream.pack(dataclasses.replace(HEADER, version=1), STRINGS)
  with pytest.raises(ValueError, match="format version 4"):
    dataclasses.replace(HEADER, version=4)


@pytest.mark.parametrize("seed,header_bytes", [(0, 31), (127, 31), (128, 32), (2**64 - 1, 40)])
def test_header_of_a_kodak_file(seed, header_bytes):
  h = Header("mbt2018-mean", bytes(8), 512, 768, 512, 768, seed, "threefry2x32")
  strings = [b"z" * 300, b"y" * 7000]
  assert len(bitstream.pack(h, strings)) - 7300 == header_bytes


def test_names_without_a_code_are_written_as_text():
  h = dataclasses.replace(HEADER, codec_id="my-codec", prng_impl="philox")
  data = bitstream.pack(h, STRINGS)
  assert b"\x00\x08my-codec" in data and b"\x00\x06philox" in data
  assert bitstream.unpack(data)[0] == h


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 65535, 2**35 - 1])
def test_varint_round_trip(value):
  data = bitstream._varint(value)
  assert len(data) == max(1, -(-value.bit_length() // 7))
  assert bitstream._Reader(data).varint("x") == value


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


@pytest.mark.parametrize("version", [0, 4, 7, 255])
def test_bad_version(version):
  message = _raises(_raw(version=version), "version")
  assert str(version) in message


@pytest.mark.parametrize("sizes", [(0, 7, 0, 0), (5, 0, 0, 0), (70000, 7, 0, 0), (5, 2**35 - 1, 0, 0)])
def test_absurd_image_size(sizes):
  _raises(_raw(sizes=sizes), "absurd", "size")


@pytest.mark.parametrize("sizes", [(5, 7, 1024, 0), (5, 7, 0, 1024), (5, 7, 0, 2**30)])
def test_absurd_padding(sizes):
  _raises(_raw(sizes=sizes), "absurd", "padded")


@pytest.mark.parametrize("size,word", [(b"\x85\x00", "shortest"), (b"\xff" * 5 + b"\x01", "longer")])
def test_bad_varints(size, word):
  _raises(_raw(sizes=(size, 7, 0, 0)), "image size", word)


def test_seed_beyond_64_bits():
  _raises(_raw(seed=2**64), "seed")
  _raises(_raw(seed=b"\xff" * 10 + b"\x01"), "seed", "longer than 10")


@pytest.mark.parametrize("fields,words", [
    (dict(codec=b"\x00\x00"), ["codec id length"]), (dict(codec=b"\x00\x41"), ["codec id length"]),
    (dict(codec=b"\x00\xff"), ["codec id length"]), (dict(codec=b"\x63"), ["unknown codec id code 99"]),
    (dict(prng=b"\x00\x00"), ["prng impl length"]), (dict(prng=b"\x00\x21"), ["prng impl length"]),
    (dict(prng=b"\xc8"), ["unknown prng impl code 200"]),
    (dict(lengths=[]), ["string count"]), (dict(lengths=[0] * 17, strings=[]), ["string count"]),
])
def test_bad_coded_fields(fields, words):
  _raises(_raw(**fields), *words)


def test_non_ascii_text():
  _raises(_raw(codec=b"\x00\x01\xc3"), "codec id", "ascii")
  _raises(_raw(codec=b"\x00\x01\x0a"), "codec id")  # ASCII, but a newline breaks one-line errors


def test_oversized_string_length():
  _raises(_raw(lengths=[2, 2**35 - 1]), "length", "exceeds")
  _raises(_raw(lengths=[2, len(_file()) + 1]), "exceeds")
  _raises(_raw(lengths=[2, 30]), "truncated")


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
  _unpack_or_bitstream_error(b"DCIC\x02" + data)
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
  io.write_bytes(path, _file())
  assert bitstream.unpack(bitstream.read_file(path)) == (HEADER, STRINGS)
  io.write_bytes(str(path), b"second")  # Overwrites.
  assert bitstream.read_file(path) == b"second"
  assert os.listdir(tmp_path) == ["img.dcic"]
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_read_file_errors(tmp_path):
  with pytest.raises(UserError, match="no such file"):
    bitstream.read_file(tmp_path / "missing.dcic")
  with pytest.raises(UserError, match="cannot read"):
    bitstream.read_file(tmp_path)
  (tmp_path / "empty.dcic").write_bytes(b"")
  with pytest.raises(BitstreamError, match="empty"):
    bitstream.read_file(tmp_path / "empty.dcic")
