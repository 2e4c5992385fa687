"""Hostile and unusual input: declared sizes, exhausted or over-long strings, coder refusals, bad
flags and odd image files all end in one `error:` line (or a note), never a crash or a big allocation."""
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, tiny_codec
from dcic_jax import cli, limits
from dcic_jax.codecs import codec as codec_lib
from dcic_jax.entropy import bitstream, coder
from dcic_jax.errors import BitstreamError, UserError


@pytest.fixture(scope="module")
def tiny():
  return tiny_codec("bmshj2018")


@pytest.fixture(scope="module")
def valid(tiny):
  photo = np.asarray(Image.open(IMAGES / "kodim23_crop.png"))[:64, :128]
  return tiny.compress(photo, seed=3)


def _file(codec, h, w, payload: bytes) -> bytes:
  hp, wp = codec_lib._padded_size(h, w)
  header = bitstream.Header(codec.codec_id, codec.fingerprint, h, w, hp, wp, 0, codec_lib.PRNG_IMPL)
  return bitstream.pack(header, [payload])


def _with_payload(data: bytes, payload: bytes) -> bytes:
  """The same header with another payload, length field and CRC fixed (anyone can do this)."""
  header, _ = bitstream.unpack(data)
  return bitstream.pack(header, [payload])


def test_huge_declared_size_is_refused_by_the_limit_before_any_allocation(tiny):
  data = _file(tiny, 65535, 65535, b"")
  assert len(data) < 40
  with pytest.raises(UserError, match="pixel limit of 67108864.*--max-pixels, config max_pixels or DCIC_MAX_PIXELS"):
    tiny.decompress(data)
  # With the limit lifted, the payload cannot hold that many latents: refused before decoding.
  with pytest.raises(BitstreamError, match="needs at least"):
    tiny.decompress(data, max_pixels=2**40)


def test_the_limit_comes_from_configure_then_environment_then_default(monkeypatch):
  monkeypatch.delenv(limits.ENV_VAR, raising=False)
  assert limits.max_pixels() == limits.DEFAULT_MAX_PIXELS == 8192 * 8192
  monkeypatch.setenv(limits.ENV_VAR, "2**20")
  assert limits.max_pixels() == 2**20
  limits.configure(1000)
  try:
    assert limits.max_pixels() == 1000
    with pytest.raises(UserError, match="over the pixel limit of 1000"):
      limits.check(40, 26, "x")
  finally:
    limits.configure(None)
  monkeypatch.setenv(limits.ENV_VAR, "lots")
  with pytest.raises(UserError, match=r"\$DCIC_MAX_PIXELS must be a positive integer"):
    limits.max_pixels()


@pytest.mark.parametrize("payload", [b"", bytes(64), bytes(4096), b"\xff" * 64])
def test_empty_and_constant_payloads_are_refused(tiny, payload):
  with pytest.raises(BitstreamError, match="ends early|needs at least|does not decode|left after"):
    tiny.decompress(_file(tiny, 1024, 1024, payload))


def test_strings_are_consumed_exactly(tiny, valid):
  """Truncating (over-read) or extending (under-read) a string is refused, down to one appended
  word inside the coder's look-ahead (caught by coding the symbols again); so is a string that is
  not whole words."""
  _, (payload,) = bitstream.unpack(valid)
  tiny.decompress(valid)
  for cut in (12, 16, len(payload) // 8 * 4):
    with pytest.raises(BitstreamError):  # "ends early", "left after" or constriction's AssertionError
      tiny.decompress(_with_payload(valid, payload[:-cut]))
  for extra in (bytes(4), b"\x5a" * 4, bytes(8), bytes(12), b"\x5a" * 64):
    with pytest.raises(BitstreamError, match="left after|not the coding"):
      tiny.decompress(_with_payload(valid, payload + extra))
  with pytest.raises(BitstreamError, match="whole 32-bit words"):
    tiny.decompress(_with_payload(valid, payload[:-1]))


def test_every_coder_error_becomes_a_bitstream_error(tiny, valid, monkeypatch):
  """constriction raises AssertionError ("invalid for the employed entropy model") on some bad
  data; whatever it raises is one line."""
  class Refuses:
    def __init__(self, *_):
      pass

    def decode(self, *_):
      raise AssertionError("Tried to decode from compressed data that is invalid for the employed entropy model.")

  monkeypatch.setattr(coder.constriction.stream.queue, "RangeDecoder", Refuses)
  with pytest.raises(BitstreamError, match="AssertionError: Tried to decode"):
    tiny.decompress(valid)


def test_information_bound_holds_for_valid_strings_and_catches_over_reads():
  """The budget the decoder checks (32 bits a word + SLACK_BITS) is never exceeded by what the
  encoder wrote, and decoding 1000 more symbols than were written exceeds it."""
  rng = np.random.default_rng(0)
  t = coder.make_tableset([np.exp(-np.arange(-9, 10)**2 / 8.0) / np.sqrt(8 * np.pi)], [-9])
  for n in (1, 10, 1000):
    v = rng.integers(-9, 10, n)
    data = coder.encode(v, np.zeros(n, np.int64), t)
    info = float(t.bits[v + 9].sum())
    assert info <= coder.budget_bits(len(data)) - coder.SLACK_BITS + 1
    dec = coder.Decoder(data)
    with pytest.raises(BitstreamError, match="ends early"):
      dec.decode(np.zeros(n + 1000, np.int64), t)


def test_g_s_in_tiles_equals_one_call(tiny):
  """Tiles with a halo of g_s's measured receptive field give the untiled output (to float
  rounding of differently shaped convolutions); one latent less of halo does not."""
  y = np.random.default_rng(0).normal(0, 2, (13, 11, 24)).astype(np.float32)
  whole = tiny.synthesize(y)
  halo, align = tiny.g_s_halo
  assert halo >= 1 and align == 1
  np.testing.assert_allclose(tiny.synthesize(y, tile=4), whole, atol=1e-3)
  short = codec_lib.Codec(tiny.codec_id, tiny.config, tiny.params, tiny.tables)
  short.__dict__["g_s_halo"] = (halo - 1, 1)
  assert np.abs(short.synthesize(y, tile=4) - whole).max() > 0.1


def test_tiles_cover_each_latent_once_with_aligned_windows():
  for n, tile, halo, align in [(13, 4, 2, 1), (37, 8, 16, 8), (8, 64, 3, 4), (130, 64, 10, 8)]:
    cores = []
    for r0, r1, c0, c1 in codec_lib._tiles(n, tile, halo, align):
      assert r0 % align == 0 and 0 <= r0 <= c0 < c1 <= r1 <= n
      assert c0 - r0 >= min(halo, c0) and r1 - c1 >= min(halo, n - c1)
      cores.extend(range(c0, c1))
    assert cores == list(range(n))


# ---- command line ----
def _run(*args):
  return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny):
  from dcic_jax import checkpointing
  path = tmp_path_factory.mktemp("ckpt") / "tiny"
  checkpointing.save_export(path, tiny.codec_id, tiny.config, tiny.params, tiny.tables, {}, tiny.fingerprint.hex())
  return path


def _one_line(capsys, *words):
  err = capsys.readouterr().err
  assert err.startswith("error:") and err.count("\n") == 1, err
  for w in words:
    assert w in err, err


@pytest.mark.parametrize("args, words", [
    (["compress", "in.png", "o.dcic", "--checkpoint", "c", "--seed", "-1"], ["--seed", "2**64"]),
    (["compress", "in.png", "o.dcic", "--checkpoint", "c", "--seed", "2**70"], ["--seed", "not an integer"]),
    (["decompress", "in.dcic", "o.png", "--kd", "-1"], ["--kd", ">= 0"]),
    (["decompress", "in.dcic", "o.png", "--kd", "nan"], ["--kd", "finite"]),
    (["decompress", "in.dcic", "o.png", "--kp", "inf"], ["--kp", "finite"]),
    (["decompress", "in.dcic", "o.png", "--kp", "1e9"], ["in [0, 1]"]),
    (["decompress", "in.dcic", "o.png", "--kd", "1", "--steps", "0"], ["--steps", ">= 1"]),
    (["decompress", "in.dcic", "o.png", "--max-pixels", "-5"], ["--max-pixels", "positive"]),
    (["decompress", "in.dcic", "o.png", "--bogus"], ["unrecognized arguments"]),
    (["frobnicate"], ["invalid choice"]),
])
def test_bad_flags_give_one_line_and_status_2(tmp_path, capsys, args, words):
  """Refused before any file is read (the input does not exist) and with no usage block."""
  assert _run(*[tmp_path / a if a.endswith((".png", ".dcic")) else a for a in args]) == 2
  _one_line(capsys, *words)
  assert not list(tmp_path.iterdir())


def test_cli_pixel_limit_and_hostile_files_leave_nothing_behind(tmp_path, ckpt, tiny, valid, capsys, monkeypatch):
  good = tmp_path / "good.dcic"
  good.write_bytes(valid)
  out = tmp_path / "out" / "o.png"
  out.parent.mkdir()
  assert _run("decompress", good, out, "--checkpoint", ckpt, "--max-pixels", 4000) == 2
  _one_line(capsys, "over the pixel limit of 4000", "--max-pixels")
  monkeypatch.setenv(limits.ENV_VAR, "4000")
  assert _run("compress", IMAGES / "kodim23_crop.png", tmp_path / "out" / "x.dcic", "--checkpoint", ckpt) == 2
  _one_line(capsys, "over the pixel limit of 4000", "DCIC_MAX_PIXELS")
  monkeypatch.delenv(limits.ENV_VAR)
  _, (payload,) = bitstream.unpack(valid)
  for name, data in {"huge": _file(tiny, 65535, 65535, b""), "empty": _file(tiny, 1024, 1024, b""),
                     "zeros": _with_payload(valid, bytes(len(payload))),
                     "short": _with_payload(valid, payload[:len(payload) // 2])}.items():
    (tmp_path / f"{name}.dcic").write_bytes(data)
    assert _run("decompress", tmp_path / f"{name}.dcic", out, "--checkpoint", ckpt) == 2, name
    _one_line(capsys)
  assert not list(out.parent.iterdir())


# ---- image files ----
def _png(path, w, h, bit_depth, color_type, raw: bytes) -> None:
  """A PNG written chunk by chunk, so it may lie about its size."""
  def chunk(kind, body):
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
  ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([bit_depth, color_type, 0, 0, 0])
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_image_files_are_refused_in_one_line_or_converted_with_a_note(tmp_path, capsys):
  from dcic_jax.data.images import load_rgb
  _png(tmp_path / "bomb.png", 30000, 30000, 8, 2, bytes(10))   # Pillow alone: DecompressionBombError
  _png(tmp_path / "big.png", 9000, 9000, 8, 2, bytes(10))      # between our limit and Pillow's
  for name in ("bomb.png", "big.png"):
    with pytest.raises(UserError, match="over the pixel limit"):
      load_rgb(tmp_path / name)
  rgb16 = np.arange(6 * 8 * 3, dtype=">u2").reshape(6, 8, 3) * 1000
  _png(tmp_path / "rgb16.png", 8, 6, 16, 2, b"".join(b"\x00" + row.tobytes() for row in rgb16))
  assert load_rgb(tmp_path / "rgb16.png").shape == (6, 8, 3)
  assert "16-bit RGB image converted to 8 bits" in capsys.readouterr().err
  frames = [Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)) for i in range(3)]
  frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
  assert (load_rgb(tmp_path / "anim.gif") == 0).all()
  assert "3 frames; coding the first" in capsys.readouterr().err
  (tmp_path / "trunc.png").write_bytes((tmp_path / "rgb16.png").read_bytes()[:60])
  (tmp_path / "junk.png").write_bytes(b"hello")
  for name in ("trunc.png", "junk.png"):
    with pytest.raises(UserError, match="cannot read image"):
      load_rgb(tmp_path / name)
