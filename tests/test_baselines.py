"""Classical baselines: round trips, monotone RD, at_bpp accuracy, clean skipping."""
import dataclasses
import pathlib
import types

import numpy as np
import pytest

from dcic_jax.baselines import classical
from dcic_jax.data.images import load_rgb

CROP = pathlib.Path(__file__).resolve().parent.parent / "data" / "images" / "kodim23_crop.png"
AVAILABLE = [c.name for c in classical.available_codecs()]


@pytest.fixture(scope="module")
def image():
  return np.ascontiguousarray(load_rgb(CROP)[:192, :256])


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64))**2)
  return 10 * np.log10(255.0**2 / mse)


def _knob(codec, frac):
  """Quality at `frac` along the range in the 'bigger file' direction."""
  q = codec.qmin + frac * (codec.qmax - codec.qmin)
  if not codec.increasing:
    q = codec.qmax - frac * (codec.qmax - codec.qmin)
  return round(q) if codec.integer else q


def test_registry_covers_all_codecs():
  assert {"jpeg", "webp", "jpeg2000", "avif", "jpegxl", "hevc_intra"} <= set(classical.REGISTRY)
  assert "jpeg" in AVAILABLE  # Pillow's JPEG is the BD anchor; it must always be there
  for c in classical.skipped_codecs():
    assert c.note and "\n" not in c.note


@pytest.mark.parametrize("name", AVAILABLE)
def test_roundtrip_shape(name, image):
  codec = classical.get(name)
  rate, decoded, data = classical.roundtrip(codec, image, _knob(codec, 0.5))
  assert decoded.shape == image.shape and decoded.dtype == np.uint8
  assert rate == pytest.approx(8 * len(data) / (192 * 256))
  assert _psnr(image, decoded) > 20


@pytest.mark.parametrize("name", AVAILABLE)
def test_rate_and_psnr_rise_with_quality(name, image):
  codec = classical.get(name)
  rates, psnrs = [], []
  for frac in (0.2, 0.5, 0.8):
    r, d, _ = classical.roundtrip(codec, image, _knob(codec, frac))
    rates.append(r)
    psnrs.append(_psnr(image, d))
  assert rates[0] < rates[1] < rates[2], rates
  assert psnrs[0] < psnrs[1] < psnrs[2], psnrs


@pytest.mark.parametrize("name", AVAILABLE)
@pytest.mark.parametrize("target", [0.25, 1.0])
def test_at_bpp_lands_near_target(name, target, image):
  codec = classical.get(name)
  cache = {}
  rate, decoded, q = classical.at_bpp(codec, image, target, cache=cache)
  assert decoded.shape == image.shape
  assert rate == pytest.approx(8 * len(cache[q]) / (192 * 256))
  # Within 35%, or else the closest the codec can get (an end of its quality range).
  all_rates = [8 * len(b) / (192 * 256) for b in cache.values()]
  assert abs(rate - target) <= 0.35 * target or abs(rate - target) == min(
      abs(r - target) for r in all_rates) and q in (codec.qmin, codec.qmax)


def test_at_bpp_clamps_to_range_end(image):
  codec = classical.get("jpeg")
  rate, _, q = classical.at_bpp(codec, image, 1e-4)  # far below JPEG's q=1 size
  assert q == codec.qmin and rate > 1e-4
  rate, _, q = classical.at_bpp(codec, image, 100.0)
  assert q == codec.qmax


def test_unavailable_codec_is_skipped(image):
  jpeg = classical.get("jpeg")
  fake = dataclasses.replace(jpeg, name="fake", available=False, note="mocked as missing")
  registry = {"jpeg": jpeg, "fake": fake}
  assert [c.name for c in classical.available_codecs(registry)] == ["jpeg"]
  assert [c.name for c in classical.skipped_codecs(registry)] == ["fake"]
  with pytest.raises(RuntimeError, match="mocked as missing"):
    classical.at_bpp(fake, image, 0.5)


def test_missing_libraries_become_notes(monkeypatch):
  """No imagecodecs features and no ffmpeg: the registry still builds, with one-line notes."""
  off = types.SimpleNamespace(available=False)
  fake_ic = types.SimpleNamespace(__version__="0", JPEG2K=off, AVIF=off, JPEGXL=off)
  monkeypatch.setattr(classical, "imagecodecs", fake_ic)
  monkeypatch.setattr(classical.shutil, "which", lambda name: None)
  reg = classical._build_registry()
  for name in ("jpeg2000", "avif", "jpegxl", "hevc_intra"):
    assert not reg[name].available and reg[name].note
  assert "ffmpeg" in reg["hevc_intra"].note
  assert reg["jpeg"].available
  monkeypatch.setattr(classical, "imagecodecs", None)
  assert "not installed" in classical._build_registry()["avif"].note


def test_experiment_smoke(tmp_path, image):
  """The Kodak script end to end on one small image and two codecs (fast path)."""
  import importlib.util
  from dcic_jax.io import save_png
  path = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "baselines_kodak.py"
  spec = importlib.util.spec_from_file_location("baselines_kodak", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  folder = tmp_path / "imgs"
  folder.mkdir()
  save_png(folder / "a.png", image)
  results = mod.main(["--kodak", str(folder), "--bpps", "0.25,0.5,1.0", "--codecs", "jpeg,webp",
                      "--out", str(tmp_path / "out"), "--workers", "1"])
  assert set(results) == {"jpeg", "webp"}
  assert (tmp_path / "out" / "baselines_kodak.md").exists()
  assert (tmp_path / "out" / "baselines_kodak.json").exists()
