"""The demo stage: writes files, a results table, and does no work twice."""
import json
import shutil

from conftest import IMAGES, SHIPPED


def test_demo_runs_and_resumes(tmp_path, capsys):
  from dcic_jax import demo
  imgs = tmp_path / "imgs"
  imgs.mkdir()
  shutil.copy(IMAGES / "kodim04_crop.png", imgs)
  ckpt = str(SHIPPED / "bmshj2018-q3")
  res = demo.run([ckpt], str(imgs), tmp_path / "out")
  s = res["bmshj2018-q3"]["summary"]
  assert s["all_latents_exact"] and s["n"] == 1 and 0 < s["bpp"] < 4
  assert (tmp_path / "out" / "bmshj2018-q3" / "kodim04_crop.dcic").is_file()
  assert "report:" in capsys.readouterr().out
  before = (tmp_path / "out" / "results.json").read_text()
  demo.run([ckpt], str(imgs), tmp_path / "out")  # cached: same results, nothing recomputed
  assert json.loads((tmp_path / "out" / "results.json").read_text()) == json.loads(before)


def test_main_reports_bad_config_in_one_line(tmp_path):
  import subprocess
  import sys
  from conftest import REPO
  p = subprocess.run([sys.executable, "-m", "dcic_jax.main", "--config=configs/demo.py", f"--workdir={tmp_path}",
                      "--config.eval.checkpoints=checkpoints/nope"], capture_output=True, text=True, cwd=REPO,
                     timeout=300)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  assert p.stderr.strip().splitlines()[-1].startswith("error:")
