"""python -m dcic_jax.score / dcic_jax.evaluate: folder-against-folder scoring and its errors."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, REPO
from dcic_jax import score
from dcic_jax.data.images import load_rgb
from dcic_jax.metrics import image, perceptual, swd


def write_png(path, image_HW3):
  Image.fromarray(np.asarray(image_HW3, np.uint8)).save(path)


def noisy(image_HW3, seed, sigma=8.0):
  rng = np.random.RandomState(seed)
  x = np.round(image_HW3 + rng.normal(0.0, sigma, image_HW3.shape))
  return np.clip(x, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def recons_dir(tmp_path_factory):
  """Noisy copies of the shipped images, under the same stems (one saved as .webp)."""
  folder = tmp_path_factory.mktemp("recons")
  for i, path in enumerate(sorted(IMAGES.glob("*.png"))):
    suffix = ".webp" if i == 1 else ".png"
    img = Image.fromarray(noisy(load_rgb(path), i))
    img.save(folder / (path.stem + suffix), **({"lossless": True} if suffix == ".webp" else {}))
  return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  """Random FID Inception and LPIPS-alex weight files, rebuilt from the parity fixtures."""
  from test_perceptual import fixture, rebuild_state_dict
  folder = tmp_path_factory.mktemp("weights")
  paths = {"inception": folder / "inception.npz", "lpips": folder / "lpips_alex.npz"}
  perceptual.save_state_dict_npz(paths["inception"], rebuild_state_dict(fixture("inception")))
  perceptual.save_state_dict_npz(paths["lpips"], rebuild_state_dict(fixture("lpips"), "alex_"))
  return paths


def test_scores_shipped_images_per_image_and_per_set(recons_dir, tmp_path, capsys):
  out = tmp_path / "scores.json"
  assert score.main([str(IMAGES), str(recons_dir), "--json", str(out), "--seed", "3"]) == 0
  printed = capsys.readouterr().out
  result = json.loads(out.read_text())
  assert [r["image"] for r in result["images"]] == ["kodim04_crop", "kodim15_crop", "kodim23_crop"]
  for row in result["images"]:
    a = load_rgb(IMAGES / f"{row['image']}.png")[None]
    b = load_rgb(next(recons_dir.glob(row["image"] + ".*")))[None]
    assert row["psnr"] == pytest.approx(float(image.psnr(a, b)[0]), abs=1e-5)
    assert row["ms_ssim"] == pytest.approx(float(image.ms_ssim(a, b)[0]), abs=1e-6)
    assert f"| {row['image']} | {row['psnr']:.2f} | {row['ms_ssim']:.4f} |" in printed
  assert result["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in result["images"]]))
  assert "| mean |" in printed and "fid" not in result["set"] and "lpips" not in result["mean"]
  # Two image sizes (256x384 and 384x256): SWD pools the descriptors of both.
  assert result["set"]["seed"] == 3 and result["set"]["swd"] > 0


def test_lpips_fid_and_kid_on_patches(weights, tmp_path):
  originals, recons = tmp_path / "a", tmp_path / "b"
  originals.mkdir()
  recons.mkdir()
  crops = [load_rgb(IMAGES / "kodim23_crop.png")[100:164, 40:104],
           load_rgb(IMAGES / "kodim04_crop.png")[200:264, 60:124]]
  for i, crop in enumerate(crops):
    write_png(originals / f"{i}.png", crop)
    write_png(recons / f"{i}.png", noisy(crop, 10 + i, sigma=20.0))
  out = tmp_path / "scores.json"
  argv = [str(originals), str(recons), "--lpips", str(weights["lpips"]), "--fid", "--inception",
          str(weights["inception"]), "--patch", "64", "--batch-size", "2", "--json", str(out)]
  assert score.main(argv) == 0
  result = json.loads(out.read_text())
  a = np.stack(crops)
  b = np.stack([load_rgb(recons / f"{i}.png") for i in range(2)])
  net, variables = perceptual.load_lpips(weights["lpips"])
  np.testing.assert_allclose([r["lpips"] for r in result["images"]],
                             perceptual.lpips_distance(net, variables, a, b), rtol=1e-6)
  assert all(r["ms_ssim"] is None for r in result["images"])  # 64 px: too small for MS-SSIM
  s = result["set"]
  features = perceptual.InceptionFeatures(perceptual.load_inception(weights["inception"]), 2)
  f_a, f_b = features(a), features(b)  # one 64×64 patch per image
  assert s["fid_samples"] == 2 and s["patch_size"] == 64
  assert s["fid"] == pytest.approx(perceptual.fid_from_features(f_a, f_b), rel=1e-6)
  assert s["kid"] == pytest.approx(perceptual.kid(f_a, f_b, seed=0).mean, rel=1e-6)
  # One image size: the set SWD is swd.swd with the CLI's key.
  want = swd.swd(jax.random.fold_in(jax.random.PRNGKey(0), 0), a, b).mean
  assert s["swd"] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("problem", ["missing", "extra", "size", "fid_without_weights",
                                     "no_weights_file"])
def test_user_errors_are_one_line_and_exit_2(problem, tmp_path, capsys):
  originals, recons = tmp_path / "a", tmp_path / "b"
  originals.mkdir()
  recons.mkdir()
  img = load_rgb(IMAGES / "kodim23_crop.png")[:48, :48]
  for name in ("x", "y"):
    write_png(originals / f"{name}.png", img)
    write_png(recons / f"{name}.png", img)
  extra_args, expected = [], ""
  if problem == "missing":
    (recons / "y.png").unlink()
    expected = f"no reconstruction of y in {recons}"
  elif problem == "extra":
    write_png(recons / "z.png", img)
    expected = f"no original of z in {originals}"
  elif problem == "size":
    write_png(recons / "y.png", img[:40])
    expected = "y: original y.png is 48x48 but reconstruction y.png is 48x40"
  elif problem == "fid_without_weights":
    extra_args, expected = ["--fid"], "config.metrics.inception_path"
  else:
    extra_args = ["--lpips", str(tmp_path / "missing.npz")]
    expected = f"LPIPS weights not found: {tmp_path / 'missing.npz'}"
  assert score.main([str(originals), str(recons)] + extra_args) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and expected in err


def test_evaluate_module_runs_the_scorer(tmp_path):
  # The entry point named in the README; a user error exits 2 without a traceback.
  recons = tmp_path / "recons"
  recons.mkdir()
  shutil.copy(IMAGES / "kodim04_crop.png", recons)
  proc = subprocess.run([sys.executable, "-m", "dcic_jax.evaluate", str(IMAGES), str(recons)],
                        capture_output=True, text=True, cwd=REPO, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.startswith("error: no reconstruction of kodim15_crop, kodim23_crop")
  assert "Traceback" not in proc.stderr and proc.stdout == ""
