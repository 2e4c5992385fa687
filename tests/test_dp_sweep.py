"""experiments/dp_sweep.py: the grid over several N, the Idempotence baseline and the NFE match."""
import sys

import pytest

from conftest import IMAGES, REPO
from tiny_exports import export_random_codec

sys.path.insert(0, str(REPO / "experiments"))
import dp_sweep  # noqa: E402


def _row(name, swd, nfe, steps, k_d=0.0, k_p=1.0, psnr=20.0):
  return dict(name=name, swd=swd, nfe=nfe, steps=steps, k_d=k_d, k_p=k_p, psnr=psnr)


def test_nfe_to_match_takes_the_cheapest_point_at_least_as_realistic():
  idem = _row("Idempotence (dps)", 50.0, 3000, 1000)
  rows = [_row("base codec", 10.0, 0, 0, None, None),   # not a DCIC point
          _row("DCIC_RD", 10.0, 10, 10, 1.0, 0.0),      # K_P = 0: not comparable
          _row("DCIC_RP", 60.0, 10, 10), _row("DCIC_RDP", 49.0, 20, 20, 1.0, 1.0),
          _row("DCIC_RP", 40.0, 50, 50), idem]
  line = dp_sweep._nfe_to_match(rows)
  assert "N=20" in line and "150.0x fewer" in line, line
  assert "no DCIC point" in dp_sweep._nfe_to_match([_row("DCIC_RP", 60.0, 10, 10), idem])


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  return export_random_codec(tmp_path_factory.mktemp("export") / "tiny", "mbt2018-mean")


def test_sweep_over_two_step_counts_with_the_idempotence_baseline(export, tmp_path, capsys):
  import json
  out = tmp_path / "sweep.json"
  dp_sweep.main(["--prior", "analytic:0.5", "--checkpoint", str(export),
                 "--images", str(IMAGES), "--crop", "64", "--max-images", "2", "--kd", "0,1",
                 "--kp", "0,1", "--steps", "2,4", "--grad", "x0", "--idempotence-steps", "4",
                 "--json", str(out)])
  rows = json.loads(out.read_text())["rows"]
  assert [r["steps"] for r in rows if r["name"] != "base codec"] == [2] * 4 + [4] * 4 + [4]
  assert rows[-1]["name"] == "Idempotence (dps)" and rows[-1]["nfe"] == 12
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert "Idempotence" in last or "no DCIC point" in last
