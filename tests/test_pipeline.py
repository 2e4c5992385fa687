"""The main job's stages on a shipped codec and the analytic prior: files, report, resume."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import IMAGES, REPO
from tiny_exports import export_random_codec

sys.path.insert(0, str(REPO))
from configs import base  # noqa: E402


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  """Two tiny random codec exports standing in for two rate points."""
  root = tmp_path_factory.mktemp("exports")
  for q in (1, 3):
    export_random_codec(root / f"bmshj2018-q{q}", seed=q)
  return root


def _config(exports, **dcic):
  config = base.get_config()
  config.train_codec.steps = 0
  config.eval.images_dir = str(IMAGES)
  config.eval.max_images = 2
  config.eval.crop = 64
  config.eval.checkpoints = f"{exports / 'bmshj2018-q1'},{exports / 'bmshj2018-q3'}"
  config.dcic.rates = "bmshj2018-q3"
  config.dcic.prior = "analytic:0.5"
  config.dcic.kd = "0,1"
  config.dcic.kp = "0,1"
  config.dcic.num_steps = 3
  config.dcic.grad = "x0"
  config.report.crop = 32
  config.dcic.update(dcic)
  return config


def _tree(root):
  return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_stages_write_files_report_and_resume(tmp_path, exports, capsys):
  from dcic_jax import pipeline
  wd = tmp_path / "wd"
  report = pipeline.run(_config(exports), str(wd))
  names = ["kodim04_crop", "kodim15_crop"]
  for n in names:
    assert (wd / "files" / "bmshj2018-q1" / f"{n}.dcic").is_file()
    for point in ("kd0_kp0", "kd1_kp0", "kd0_kp1", "kd1_kp1"):
      assert (wd / "decoded" / "bmshj2018-q3" / point / f"{n}.png").is_file()
  assert not (wd / "decoded" / "bmshj2018-q1").exists()  # dcic.rates: only q3 gets the grid
  m = json.loads((wd / "measurements" / "bmshj2018-q3.json").read_text())
  size = (wd / "files" / "bmshj2018-q3" / "kodim04_crop.dcic").stat().st_size
  assert abs(m["bpp_per_image"]["kodim04_crop"] - 8 * size / 64**2) < 1e-9  # real file sizes
  assert set(m["points"]) == {"base", "kd0_kp0", "kd1_kp0", "kd0_kp1", "kd1_kp1"}
  # K_D = 1 pulls the decode toward x̂_b; K_D = K_P = 0 is the unconstrained sampler.
  from dcic_jax.data.images import load_rgb
  from dcic_jax.metrics.image import quality
  base_image = load_rgb(wd / "base" / "bmshj2018-q3" / "kodim04_crop.png")
  to_base = {p: quality(base_image, load_rgb(wd / "decoded" / "bmshj2018-q3" / p /
                                             "kodim04_crop.png"))[0]
             for p in ("kd0_kp0", "kd1_kp0")}
  assert to_base["kd1_kp0"] > to_base["kd0_kp0"] + 10
  text = report.read_text()
  for needle in ("Headline table", "DCIC_RD", "DCIC_RP", "DCIC_RDP", "rd_curves.png",
                 "dp_plane.png", "BD metrics", "grid_bmshj2018-q3"):
    assert needle in text, needle
  assert (wd / "report" / "report.html").is_file() and (wd / "report" / "dp_plane.png").is_file()
  assert "report:" in capsys.readouterr().out

  before = _tree(wd)
  stale = wd / "decoded" / "bmshj2018-q3" / "kd1_kp1" / ".kodim15_crop.tmp-host-0.png"
  stale.write_bytes(b"half")   # a writer killed mid-write
  pipeline.run(_config(exports), str(wd))  # finished workdir: nothing is redone, the stale temp goes
  assert _tree(wd) == before and not stale.exists()

  # A lost output is redone alone; a new DCIC setting decodes afresh.
  (wd / "decoded" / "bmshj2018-q3" / "kd1_kp1" / "kodim15_crop.png").unlink()
  pipeline.run(_config(exports, kp="0,0.5,1"), str(wd))
  assert (wd / "decoded" / "bmshj2018-q3" / "kd1_kp0.5" / "kodim15_crop.png").is_file()
  after = _tree(wd)
  assert after["files/bmshj2018-q3/kodim04_crop.dcic"] == before["files/bmshj2018-q3/kodim04_crop.dcic"]

  # The penalty form on a codec without stored constants (an export from before every export path
  # calibrated) calibrates it on the files, and says so.
  info_path = exports / "bmshj2018-q3" / "codec.json"
  text = info_path.read_text()
  info = json.loads(text)
  assert "w_p_reconstruction" in info.pop("dcic")   # exports are calibrated when written
  info_path.write_text(json.dumps(info))
  capsys.readouterr()
  try:
    pipeline.run(_config(exports, mode="schedule", kd="0", kp="1"), str(wd))
  finally:
    info_path.write_text(text)    # the module's other tests see the export as it was written
  assert "bmshj2018-q3 has no DCIC calibration; w_P = " in capsys.readouterr().out


def test_bad_config_values_are_one_line_errors(tmp_path, exports):
  from dcic_jax import pipeline
  from dcic_jax.errors import UserError
  for field, value, match in (("kd", "a,b", "dcic.kd"), ("mode", "nope", "mode"),
                              ("kp", "0,2", r"in \[0, 1\]"), ("rates", "nope-q9", "dcic.rates")):
    config = _config(exports, **{field: value})
    with pytest.raises(UserError, match=match):
      pipeline.run(config, str(tmp_path / field))


def test_main_reports_bad_config_in_one_line(tmp_path):
  p = subprocess.run([sys.executable, "-m", "dcic_jax.main", "--config=configs/demo.py",
                      f"--workdir={tmp_path}", "--config.eval.checkpoints=checkpoints/nope"],
                     capture_output=True, text=True, cwd=REPO, timeout=300)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  assert p.stderr.strip().splitlines()[-1].startswith("error:")


@pytest.mark.parametrize("name", ["celeba", "clic", "imagenet"])
def test_dataset_configs_say_what_is_missing(tmp_path, name):
  import importlib
  from dcic_jax import pipeline
  from dcic_jax.errors import UserError
  module = importlib.import_module(f"configs.{name}")
  for arg in ("", "runlocal"):
    config = module.get_config(arg)
    config.eval.images_dir = str(tmp_path / "nothing")
    with pytest.raises(UserError) as e:
      pipeline.run(config, str(tmp_path / f"wd{arg}"))
    message = str(e.value)
    assert "\n" not in message
    # The full configs name the missing prior first; runlocal uses the shipped one and then
    # names the missing dataset files.
    assert ("dcic.prior" in message) if not arg else (str(tmp_path / "nothing") in message)


def test_dry_run_prints_the_study_size_and_an_estimate(exports, capsys):
  from dcic_jax import pipeline
  pipeline.dry_run(_config(exports))
  out = capsys.readouterr().out
  assert "1 rates x 4 (K_D, K_P) points x 2 images = 8 decodes" in out
  assert "estimate:" in out


def test_codecs_of_one_architecture_share_one_compiled_decoder(exports):
  """The pipeline decodes each rate with `make_grid_decoder`: same architecture, prior and
  settings give the one decoder (one compiled program); another setting or prior a new one.
  The project mode takes no calibration constants, so the rates' settings agree."""
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.dcic import calibrate, sampler
  from dcic_jax.dcic.decode import make_grid_decoder
  from dcic_jax.diffusion.prior import load_prior
  q1, q3 = (codec_lib.load(exports / f"bmshj2018-q{q}") for q in (1, 3))
  prior = load_prior("analytic:0.5")
  weights = calibrate.weights_or_calibrate({"dcic": {"w_d": 1.0, "w_p_reconstruction": 7.0}},
                                           "reconstruction", "project", q1, [], "q1")
  assert weights == ((1.0, 1.0), None)
  cfg = sampler.DCICConfig(num_steps=3)
  dec = make_grid_decoder(q1, prior, cfg)
  assert make_grid_decoder(q3, prior, cfg) is dec
  assert make_grid_decoder(q3, prior, sampler.DCICConfig(num_steps=3, ball=0.5)) is not dec
  assert make_grid_decoder(q3, load_prior("analytic:0.5"), cfg) is not dec


def test_the_decoder_takes_its_steps_at_the_configured_spacing(exports, monkeypatch):
  """`make_grid_decoder` respaces the prior's schedule by `num_steps` and `spacing_power`."""
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.dcic import decode, sampler
  from dcic_jax.diffusion import schedules
  from dcic_jax.diffusion.prior import load_prior
  seen = []
  monkeypatch.setattr(decode, "GridDecoder", lambda eps, fns, schedule, cfg, *a: seen.append(schedule))
  q1 = codec_lib.load(exports / "bmshj2018-q1")
  prior = load_prior("analytic:0.25")
  for power in (1.0, 2.0):
    decode.make_grid_decoder(q1, prior, sampler.DCICConfig(num_steps=6, spacing_power=power))
  np.testing.assert_array_equal(seen[0].timesteps, schedules.space_timesteps(1000, 6))
  np.testing.assert_array_equal(seen[1].timesteps, schedules.space_timesteps(1000, 6, power=2.0))
  assert seen[1].timesteps[1] < seen[0].timesteps[1]
