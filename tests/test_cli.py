"""The command line: round trips, one-line errors with exit status 2, no partial outputs."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, REPO, tiny_codec
from dcic_jax import cli
from dcic_jax.io import write_bytes


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  from dcic_jax import checkpointing
  c = tiny_codec("mbt2018-mean")
  path = tmp_path_factory.mktemp("ckpt") / "tiny"
  checkpointing.save_export(path, c.codec_id, c.config, c.params, c.tables, {}, c.fingerprint.hex())
  return path


def _run(*args):
  return cli.main([str(a) for a in args])


def test_compress_decompress(tmp_path, ckpt, capsys):
  src = IMAGES / "kodim15_crop.png"
  assert _run("compress", src, tmp_path / "a.dcic", "--checkpoint", ckpt, "--seed", "5") == 0
  assert "bpp" in capsys.readouterr().out
  assert _run("decompress", tmp_path / "a.dcic", tmp_path / "a.png", "--checkpoint", ckpt) == 0
  out = np.asarray(Image.open(tmp_path / "a.png"))
  assert out.shape == np.asarray(Image.open(src)).shape


@pytest.mark.parametrize("mode,ok", [("L", True), ("P", True), ("I;16", True), ("RGBA", True), ("RGBA-transparent", False),
                                     ("F", False)])
def test_input_modes(tmp_path, ckpt, capsys, mode, ok):
  rgb = np.asarray(Image.open(IMAGES / "kodim04_crop.png"))[:40, :50]
  if mode == "RGBA-transparent":
    a = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    a[0, 0, 3] = 0
    im = Image.fromarray(a, "RGBA")
  elif mode == "I;16":
    im = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)  # mode I;16
  elif mode == "F":
    im = Image.fromarray(rgb[..., 0].astype(np.float32))  # mode F
  elif mode == "RGBA":
    im = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA")
  else:
    im = Image.fromarray(rgb).convert(mode)
  src = tmp_path / ("in.tif" if mode in ("F", "I;16") else "in.png")
  im.save(src)
  rc = _run("compress", src, tmp_path / "o.dcic", "--checkpoint", ckpt)
  err = capsys.readouterr().err
  if ok:
    assert rc == 0
  else:
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error:")
    assert not (tmp_path / "o.dcic").exists()


def test_bad_inputs_give_one_line_and_no_output(tmp_path, ckpt, capsys):
  good = tmp_path / "good.dcic"
  assert _run("compress", IMAGES / "kodim15_crop.png", good, "--checkpoint", ckpt) == 0
  data = good.read_bytes()
  cases = {
      "missing.dcic": None,
      "trunc.dcic": data[:len(data) // 2],
      "flip.dcic": data[:-5] + bytes([data[-5] ^ 1]) + data[-4:],
      "magic.dcic": b"XXXX" + data[4:],
      "empty.dcic": b"",
  }
  for name, content in cases.items():
    if content is not None:
      write_bytes(tmp_path / name, content)
    out = tmp_path / (name + ".png")
    assert _run("decompress", tmp_path / name, out, "--checkpoint", ckpt) == 2, name
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1, (name, err)
    assert not out.exists()
  # Wrong model: another tiny codec's file.
  other = tiny_codec("bmshj2018")
  write_bytes(tmp_path / "other.dcic", other.compress(np.zeros((8, 8, 3), np.uint8)))
  assert _run("decompress", tmp_path / "other.dcic", tmp_path / "x.png", "--checkpoint", ckpt) == 2
  assert "codec" in capsys.readouterr().err
  # Not an image; a checkpoint that isn't one.
  (tmp_path / "t.png").write_text("hello")
  assert _run("compress", tmp_path / "t.png", tmp_path / "t.dcic", "--checkpoint", ckpt) == 2
  assert _run("compress", IMAGES / "kodim15_crop.png", tmp_path / "t.dcic", "--checkpoint", tmp_path) == 2
  assert not (tmp_path / "t.dcic").exists()


def test_no_traceback_from_the_real_process(tmp_path):
  (tmp_path / "junk.dcic").write_bytes(b"DCIC" + bytes(100))
  p = subprocess.run([sys.executable, "-m", "dcic_jax", "decompress", str(tmp_path / "junk.dcic"),
                      str(tmp_path / "o.png")], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  assert p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error:")
  assert not (tmp_path / "o.png").exists()


def test_one_command_hands_every_tool_its_arguments(tmp_path, capsys):
  """`dcic TOOL ...` runs the module behind TOOL with the same one-line refusals as compress."""
  assert set(cli.TOOLS) >= {"run", "score", "train-codec", "train-prior", "import-compressai",
                            "import-prior", "calibrate", "convert-metric-weights", "prepare-dataset"}
  helps = subprocess.run([sys.executable, "-m", "dcic_jax", "--help"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120).stdout
  assert all(name in helps for name in cli.TOOLS)
  for tool, needle in (("score", "python -m dcic_jax.score"), ("calibrate", "python -m dcic_jax.dcic.calibrate"),
                       ("train-prior", "--workdir"), ("import-prior", "--out")):
    assert _run(tool) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and err.count("\n") == 1
  # The absl job: a config that does not exist is one line too (ml_collections loads it lazily).
  p = subprocess.run([sys.executable, "-m", "dcic_jax", "run", "--config=configs/nope.py", f"--workdir={tmp_path}/w"],
                     capture_output=True, text=True, cwd=tmp_path, timeout=300)
  assert p.returncode == 2 and p.stderr.startswith("error: dcic run: --config:") and p.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def small_file(tmp_path_factory, ckpt):
  path = tmp_path_factory.mktemp("dcic") / "small.dcic"
  rgb = np.asarray(Image.open(IMAGES / "kodim23_crop.png"))[:64, :64]
  src = path.with_suffix(".png")
  Image.fromarray(rgb).save(src)
  assert _run("compress", src, path, "--checkpoint", ckpt, "--seed", "9") == 0
  return path


def test_dcic_grid_writes_every_point_and_its_settings(tmp_path, ckpt, small_file, capsys):
  import json
  out = tmp_path / "grid"
  assert _run("decompress", small_file, "--checkpoint", ckpt, "--prior", "analytic:0.5", "--steps", "3",
              "--grid", "0,1x0,0.5", "--out-dir", out) == 0
  settings = json.loads((out / "settings.json").read_text())
  names = [p["file"] for p in settings["points"]]
  assert names == ["kd0_kp0.png", "kd0_kp0.5.png", "kd1_kp0.png", "kd1_kp0.5.png"]
  assert settings["seed"] == 9 and settings["dcic"]["num_steps"] == 3
  images = {n: np.asarray(Image.open(out / n)) for n in names}
  assert all(a.shape == (64, 64, 3) for a in images.values())
  base = tmp_path / "base.png"
  assert _run("decompress", small_file, base, "--checkpoint", ckpt) == 0
  x_b = np.asarray(Image.open(base)).astype(float)
  dist = {n: np.abs(a - x_b).mean() for n, a in images.items()}
  assert dist["kd1_kp0.png"] < 0.2 * dist["kd0_kp0.png"]   # K_D = 1 pulls onto x̂_b
  # A single point through --kd/--kp equals the same point of the grid (same seed, same program maths).
  one = tmp_path / "one.png"
  assert _run("decompress", small_file, one, "--checkpoint", ckpt, "--prior", "analytic:0.5", "--steps", "3",
              "--kd", "1", "--kp", "0.5") == 0
  np.testing.assert_array_equal(np.asarray(Image.open(one)), images["kd1_kp0.5.png"])


def test_a_penalty_mode_calibrates_an_uncalibrated_codec_on_the_file(tmp_path, ckpt, small_file, capsys):
  """w_P = 1 would make K_P mean something else per codec: the file's own x̂_b calibrates it."""
  import json
  import numpy as np
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.dcic import calibrate
  assert "dcic" not in json.loads((ckpt / "codec.json").read_text())
  out = tmp_path / "p.png"
  assert _run("decompress", small_file, out, "--checkpoint", ckpt, "--prior", "analytic:0.5", "--steps", "2",
              "--mode", "schedule", "--grad", "x0", "--kp", "1") == 0
  codec = codec_lib.load(ckpt)
  w_p = np.median(calibrate.ratios_of_decoded(codec, [codec.decompress(small_file.read_bytes())], "reconstruction"))
  assert f"no DCIC calibration; w_P = {w_p:.4g} from the 1 file(s)" in capsys.readouterr().err
  assert out.is_file()


@pytest.mark.parametrize("args, match", [
    (["--grid", "0,1x0"], "--out-dir"),
    (["--grid", "0,1", "--out-dir", "{tmp}/g"], "bad --grid"),
    (["--grid", "0,1x-1", "--out-dir", "{tmp}/g"], "bad --grid"),
    (["{tmp}/o.png", "--kd", "1", "--prior", "{tmp}/missing"], "prior not found"),
    (["{tmp}/o.png", "--kd", "1", "--prior", "analytic:x"], "analytic"),
    (["{tmp}/o.png", "--kd", "1", "--prior", "analytic:0.5", "--steps", "0"], "--steps"),
    (["--grid", "0,1x0,2", "--out-dir", "{tmp}/g", "--prior", "analytic:0.5"], "in [0, 1]"),
    (["{tmp}/o.png", "--kp", "1.5", "--prior", "analytic:0.5"], "in [0, 1]"),
])
def test_dcic_user_errors_are_one_line(tmp_path, ckpt, small_file, capsys, args, match):
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  assert _run("decompress", small_file, *args, "--checkpoint", ckpt) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and match in err and err.count("\n") == 1
  assert not list(tmp_path.glob("*.png")) and not (tmp_path / "g").exists()


def test_a_missing_prior_is_refused_before_the_file_is_decoded(tmp_path, ckpt, small_file, capsys, monkeypatch):
  from dcic_jax.codecs import codec as codec_lib

  def decode(*_):
    raise AssertionError("the file was decoded before the prior was checked")
  monkeypatch.setattr(codec_lib.Codec, "decompress", decode)
  assert _run("decompress", small_file, tmp_path / "o.png", "--checkpoint", ckpt, "--kd", "1",
              "--prior", tmp_path / "missing") == 2
  assert "prior not found" in capsys.readouterr().err


def test_decoder_flags_reach_the_decoder_config():
  """Every project-mode flag lands in the DCICConfig the decode is built from."""
  from dcic_jax.dcic.sampler import DCICConfig, config_from
  args = cli.build_parser().parse_args(["decompress", "a.dcic", "--kd", "1", "--kp", "1", "--idem-draw",
                                        "--ball", "0.1", "--margin", "0.2", "--cg-iters", "3",
                                        "--spacing-power", "2", "--x0-var", "eps", "--data-std", "0.3"])
  cfg = config_from(vars(args))
  assert (cfg.idem_draw, cfg.ball, cfg.margin, cfg.cg_iters, cfg.spacing_power, cfg.x0_var, cfg.data_std) == \
      (True, 0.1, 0.2, 3, 2.0, "eps", 0.3)
  plain = config_from(vars(cli.build_parser().parse_args(["decompress", "a.dcic"])))
  assert plain == DCICConfig() and (plain.idem_draw, plain.x0_var) == (False, "gaussian")
