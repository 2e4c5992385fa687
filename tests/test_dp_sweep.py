"""experiments/dp_sweep.py: crops, the Idempotence baseline's ζ, costs and the cheapest match."""
import json
import sys

import numpy as np
import pytest

from conftest import IMAGES, REPO
from tiny_exports import export_random_codec

sys.path.insert(0, str(REPO / "experiments"))
import dp_sweep  # noqa: E402


def test_crops_are_distinct_squares_around_the_centre():
  image = np.arange(256 * 384 * 3, dtype=np.int64).reshape(256, 384, 3)
  got = dp_sweep.crops(image, 64, 4)
  assert len(got) == 4 and all(c.shape == (64, 64, 3) for c in got)
  tops = sorted({int(c[0, 0, 0]) // (384 * 3) for c in got})
  assert tops == [64, 128]                       # the two middle rows of a 4×6 grid of cells
  assert len({int(c[0, 0, 0]) for c in got}) == 4
  with pytest.raises(SystemExit, match="holds 24 crops"):
    dp_sweep.crops(image, 64, 25)


def _row(name, swd, fwd, n=10, start=0, point=None, fwd_eq=None, seconds=1.0):
  return dict(name=name, swd=swd, fwd=fwd, fwd_eq=fwd if fwd_eq is None else fwd_eq, n=n, start=start,
              point=point, seconds=seconds)


def test_cheapest_match_takes_the_fewest_forward_passes_at_least_as_realistic():
  idem = _row("Idempotence (dps, ζ=0.15)", 50.0, 1000, 1000, fwd_eq=3000, seconds=100.0)
  rows = [_row("DCIC_RD (1.0, 0.0)", 10.0, 10, point=(1.0, 0.0)),      # K_P = 0: not comparable
          _row("DCIC_RP (0.0, 1.0)", 60.0, 10, point=(0.0, 1.0)),      # less realistic
          _row("DCIC_RP (0.0, 1.0)", 49.0, 20, 20, point=(0.0, 1.0), seconds=2.0),
          _row("DCIC_RP (0.0, 1.0)", 40.0, 50, 50, point=(0.0, 1.0)), idem]
  line = dp_sweep.cheapest_match(rows)
  assert "N=20 " in line and "50x fewer forward passes" in line and "150x fewer forward-eq" in line, line
  assert "no DCIC (0, 1)" in dp_sweep.cheapest_match([rows[1], idem])


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  return export_random_codec(tmp_path_factory.mktemp("export") / "tiny", "mbt2018-mean")


def test_sweep_with_a_late_start_and_the_idempotence_baseline(export, tmp_path, capsys):
  out = tmp_path / "sweep.json"
  dp_sweep.main(["--prior", "analytic:0.5", "--checkpoint", str(export), "--images", str(IMAGES),
                 "--crop", "64", "--crops-per-image", "2", "--steps", "2", "--start-steps", "4:2",
                 "--idempotence-steps", "4", "--swd-seeds", "1", "--bootstrap", "2", "--json", str(out)])
  saved = json.loads(out.read_text())
  rows = saved["rows"]
  assert saved["zeta"] == pytest.approx(0.6 * 64 / 256)
  assert [r["name"].split()[0] for r in rows] == ["base"] + ["DCIC_RP", "DCIC_RDP", "DCIC_RD"] * 2 + ["Idempotence"]
  assert [r["fwd"] for r in rows[1:]] == [2, 2, 2, 2, 2, 2, 4] and rows[-1]["fwd_eq"] == 12
  assert all(np.isfinite(r["swd_sd"]) and r["psnr_sd"] > 0 for r in rows)
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert "Idempotence" in last
