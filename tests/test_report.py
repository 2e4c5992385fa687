"""Published curves from files (report/baselines.py) and BD cells that say why they are undefined."""
import json
import math

import numpy as np
import pytest

from dcic_jax.errors import UserError, exit_code
from dcic_jax.metrics import bd
from dcic_jax.report import baselines, curves

RATE = np.array([0.1, 0.2, 0.4, 0.8])
PSNR = np.array([28.0, 30.0, 32.0, 34.0])


def test_bd_explained_matches_bd_and_says_why():
  rate, delta = bd.bd_explained(RATE, PSNR, RATE * 0.9, PSNR + 0.1)
  ref = bd.bd(RATE, PSNR, RATE * 0.9, PSNR + 0.1)
  assert (rate.value, delta.value) == (ref.rate_percent, ref.metric_delta)
  assert rate.format("+.1f", "%") == f"{ref.rate_percent:+.1f}%"
  cases = [  # (metric of b, rate of b, the words of the BD-rate cell)
      (PSNR[::-1], RATE, "b: not monotone in rate"),
      (PSNR + 10, RATE * 100, "quality ranges do not overlap"),
      (PSNR * np.nan, RATE, "b: not measured"),
      (np.array([30, np.nan, np.nan, np.nan]), RATE, "b: 1 measured rate, needs 2"),
      (PSNR, np.array([0.1, 0.1, 0.4, 0.8]), "b: two points at one rate")]
  for metric_b, rate_b, why in cases:
    r, _ = bd.bd_explained(RATE, PSNR, rate_b, metric_b)
    assert math.isnan(r.value) and r.why == why, (r, why)
    assert r.format("+.1f", "%") == f"n/a ({why})" and "nan" not in r.format("+.1f", "%")
  r, d = bd.bd_explained(RATE, PSNR, RATE * 100, PSNR)
  assert d.why == "rate ranges do not overlap"
  # BD-metric stays defined where only BD-rate is not (a curve not monotone in rate)
  r, d = bd.bd_explained(RATE, PSNR, RATE, np.array([28.0, 31.0, 30.5, 34.0]))
  assert math.isnan(r.value) and not math.isnan(d.value)
  # a falling metric (FID) is monotone the other way
  r, _ = bd.bd_explained(RATE, -PSNR, RATE * 0.9, -PSNR, higher_is_better=False)
  assert r.value < 0


def _write(tmp_path, name, doc):
  path = tmp_path / name
  path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
  return path


def test_baselines_read_compressai_layout(tmp_path):
  vtm = _write(tmp_path, "vtm.json", {"name": "VTM", "description": "VTM", "results": {
      "psnr": [26.1, 28.5, 31.2], "ms-ssim": [0.86, 0.91, 0.95], "bpp": [0.05, 0.11, 0.25],
      "encoding_time": [1, 2, 3]}})
  hific = _write(tmp_path, "hific.json", {"results": {
      "bpp": [0.14, 0.3, 0.45], "psnr-rgb": [27.0, 29.0, 30.5], "fid": [8.1, None, 3.3]}})
  got = baselines.load(f"{vtm}, {hific}")
  assert [c.label for c in got] == ["VTM", "hific"]  # no "name": the file stem
  assert got[0].bpp == (0.05, 0.11, 0.25)
  np.testing.assert_allclose(got[0].values("ms_ssim"), [0.86, 0.91, 0.95])
  assert np.isnan(got[1].values("fid")[1]) and np.isnan(got[1].values("ms_ssim")).all()
  assert [k for _, k, _ in curves.metrics_of([p for c in got for p in c.points])] == [
      "psnr", "ms_ssim", "fid"]
  assert baselines.load("") == [] and baselines.stamp("") == []
  before = baselines.stamp(str(vtm))
  vtm.write_text(vtm.read_text().replace("26.1", "26.2"))
  assert baselines.stamp(str(vtm)) != before  # an edited file rebuilds the report


@pytest.mark.parametrize("doc,words", [
    ("{not json", "not JSON"),
    ([1, 2], "expected CompressAI's layout"),
    ({"results": {"psnr": [30]}}, "expected CompressAI's layout"),
    ({"results": {"bpp": [0.1, -0.2], "psnr": [30, 31]}}, "positive numbers"),
    ({"results": {"bpp": [0.1, 0.2], "psnr": [30]}}, '"psnr" has 1 values for 2 rates'),
    ({"results": {"bpp": [0.1, 0.2], "psnr": ["30", 31]}}, "list of finite numbers"),
    ('{"results": {"bpp": [0.1, 0.2], "psnr": [NaN, 31]}}', "list of finite numbers"),
    ({"results": {"bpp": [0.1, 0.2], "time": [1, 2]}}, "no metric"),
    ({"name": 3, "results": {"bpp": [0.1], "psnr": [30]}}, '"name" must be a string'),
])
def test_bad_baseline_file_is_one_error_line(tmp_path, capsys, doc, words):
  path = _write(tmp_path, "bad.json", doc)
  assert exit_code(baselines.load, str(path)) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"error: baseline {path}:") and err.count("\n") == 1 and words in err


def test_missing_or_duplicate_baselines(tmp_path):
  with pytest.raises(UserError, match="cannot read"):
    baselines.load(str(tmp_path / "absent.json"))
  a = _write(tmp_path, "a.json", {"name": "X", "results": {"bpp": [0.1], "psnr": [30]}})
  b = _write(tmp_path, "b.json", {"name": "X", "results": {"bpp": [0.2], "psnr": [31]}})
  with pytest.raises(UserError, match="same name"):
    baselines.load([a, b])


def test_pipeline_refuses_a_bad_baseline_before_any_stage(tmp_path, capsys):
  import sys
  from conftest import REPO
  sys.path.insert(0, str(REPO))
  from configs import base
  from dcic_jax import pipeline
  config = base.get_config()
  config.report.baselines = str(_write(tmp_path, "bad.json", "{"))
  assert exit_code(pipeline.run, config, str(tmp_path / "wd")) == 2
  assert capsys.readouterr().err.count("\n") == 1
  assert not (tmp_path / "wd").exists()
