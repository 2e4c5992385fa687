"""`pip install .` (not -e) gives a working package: the wheel carries the shipped exports, prior,
demo images and configs, and the CLI and the demo config find them from any directory."""
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

REPO = pathlib.Path(__file__).resolve().parent.parent


def _run(args, cwd, timeout=600, env=None):
  proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
  assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
  return proc.stdout


def test_a_wheel_install_runs_the_cli_and_the_demo_config_from_elsewhere(tmp_path):
  _run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path / "dist")],
       tmp_path)
  (wheel,) = (tmp_path / "dist").glob("dcic_jax-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  for shipped in ("dcic_jax/_assets/checkpoints/prior/", "dcic_jax/_assets/checkpoints/mbt2018-mean-q1/codec.json",
                  "dcic_jax/_assets/configs/demo.py", "dcic_jax/_assets/data/images/kodim23_crop.png"):
    assert any(n.startswith(shipped) for n in names), shipped
  # A venv that sees this machine's dependencies but installs dcic_jax from the wheel alone.
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path)
  python = str(venv / "bin" / "python")
  _run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], tmp_path)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  shutil.copy(REPO / "data" / "images" / "kodim23_crop.png", elsewhere / "in.png")
  where = _run([python, "-c", "import dcic_jax; print(dcic_jax.__file__)"], elsewhere)
  assert str(venv) in where and str(REPO) not in where
  _run([python, "-m", "dcic_jax", "compress", "in.png", "a.dcic", "--checkpoint", "checkpoints/mbt2018-mean-q1"],
       elsewhere)
  assert "base reconstruction (mbt2018-mean)" in _run([str(venv / "bin" / "dcic"), "decompress", "a.dcic", "a.png"],
                                                      elsewhere)
  out = _run([python, "-m", "dcic_jax.main", "--config=configs/demo.py", "--workdir=wd", "--dry_run"], elsewhere)
  assert "per rate" in out
  if os.environ.get("DCIC_WHEEL_FULL_DEMO") == "1":  # the whole demo (minutes): a release check
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the decode of a user, not the tests
    out = _run([str(venv / "bin" / "dcic"), "run", "--config=configs/demo.py", "--workdir=wd"], elsewhere,
               timeout=3600, env=env)
    assert (elsewhere / "wd" / "report" / "report.html").is_file(), out[-3000:]
    print(out[-3000:])
