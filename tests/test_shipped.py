"""The shipped checkpoints: present, intact, and good enough to be the demo's codecs."""
import json

import pytest

from conftest import SHIPPED
from dcic_jax.codecs import codec as codec_lib

CKPTS = sorted(p.parent for p in SHIPPED.glob("*/codec.json"))


def test_ladder_is_complete():
  names = {p.name for p in CKPTS}
  for cid in ("bmshj2018", "mbt2018-mean"):
    assert {f"{cid}-q{q}" for q in (1, 2, 3, 4)} <= names


@pytest.mark.parametrize("path", CKPTS, ids=lambda p: p.name)
def test_loads_with_matching_fingerprint(path):
  codec = codec_lib.load(path)  # raises if the stored fingerprint does not match the contents
  assert codec.fingerprint.hex() == json.loads((path / "codec.json").read_text())["fingerprint"]


@pytest.mark.parametrize("path", CKPTS, ids=lambda p: p.name)
def test_every_shipped_codec_has_its_dcic_calibration(path):
  cal = json.loads((path / "codec.json").read_text())["dcic"]   # python -m dcic_jax.dcic.calibrate
  assert cal["w_d"] == 1.0 and cal["w_p_reconstruction"] > 0 and cal["w_p_latent"] > 0


def test_rate_ladder_is_monotone(image):
  """Higher quality index: more bits and higher PSNR on a real image."""
  from dcic_jax.metrics.image import quality
  img = image[:128, :192]
  points = []
  for q in (1, 4):
    c = codec_lib.load(SHIPPED / f"mbt2018-mean-q{q}")
    data = c.compress(img)
    points.append((len(data), quality(img, c.decompress(data).image)[0]))
  (b1, p1), (b4, p4) = points
  assert b1 < b4 and p1 < p4 and p1 > 20.0
