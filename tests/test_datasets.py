"""Datasets (data/datasets.py, data/tfds_builders.py) on tiny fake layouts written in tmp_path."""
import io
import json
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from dcic_jax.data import datasets
from dcic_jax.errors import UserError


def _pixels(seed: int, h: int, w: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write(path: pathlib.Path, image: np.ndarray, fmt: str = "PNG") -> np.ndarray:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path, format=fmt)
  return image


def _jpeg_bytes(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def _one_line_error(fn, *args, **kwargs) -> str:
  with pytest.raises(UserError) as e:
    fn(*args, **kwargs)
  msg = str(e.value)
  assert "\n" not in msg and msg
  return msg


# ---------------------------------------------------------------- folder

def test_folder_sorted_names_full_resolution_exact_pixels(tmp_path):
  want = {n: _write(tmp_path / f"{n}.png", _pixels(i, 17 + i, 23)) for i, n in enumerate(["b", "a", "c10", "c2"])}
  jpg = _pixels(9, 16, 16)
  (tmp_path / "d.JPG").write_bytes(_jpeg_bytes(jpg))
  (tmp_path / "notes.txt").write_text("not an image")
  (tmp_path / "sub").mkdir()
  _write(tmp_path / "sub" / "e.png", _pixels(5, 8, 8))  # subfolders are not part of the set

  images = datasets.eval_images("folder", str(tmp_path))
  assert [im.name for im in images] == ["a", "b", "c10", "c2", "d"]
  for im in images[:4]:
    np.testing.assert_array_equal(im.load(), want[im.name])
  d = images[4].load()
  assert d.shape == (16, 16, 3) and d.dtype == np.uint8
  np.testing.assert_array_equal(d, np.asarray(Image.open(tmp_path / "d.JPG").convert("RGB")))
  assert [im.name for im in datasets.eval_images("folder", tmp_path, max_images=2)] == ["a", "b"]
  assert [im.name for im in datasets.eval_images("folder", tmp_path)] == [im.name for im in images]  # stable


def test_folder_names_unique_and_file_name_safe(tmp_path):
  _write(tmp_path / "x.png", _pixels(0, 4, 4))
  (tmp_path / "x.jpg").write_bytes(_jpeg_bytes(_pixels(1, 4, 4)))
  _write(tmp_path / "my photo (1).png", _pixels(2, 4, 4))
  names = [im.name for im in datasets.eval_images("folder", tmp_path)]
  assert names == ["my_photo_1", "x_jpg", "x_png"]


def test_train_images_are_arrays_evenly_spaced(tmp_path):
  want = [_write(tmp_path / f"{i:02d}.png", _pixels(i, 6, 5)) for i in range(10)]
  images = datasets.train_images("folder", str(tmp_path))
  assert len(images) == 10 and all(im.dtype == np.uint8 and im.shape == (6, 5, 3) for im in images)
  sub = datasets.train_images("folder", str(tmp_path), max_images=3)
  assert len(sub) == 3
  for got, i in zip(sub, [0, 3, 6]):
    np.testing.assert_array_equal(got, want[i])
  from dcic_jax.data.input_pipeline import random_crops
  assert next(random_crops(sub, 4, 2, seed=0)).shape == (2, 4, 4, 3)


# ---------------------------------------------------------------- CelebA-HQ

def test_celeba_hq_split_layout(tmp_path):
  base = tmp_path / "celeba_hq"
  val = {"000001": _write(base / "val" / "male" / "000001.png", _pixels(1, 32, 32)),
         "000000": _write(base / "val" / "female" / "000000.png", _pixels(0, 32, 32))}
  for i in range(2, 6):
    _write(base / "train" / ("female" if i % 2 else "male") / f"{i:06d}.jpg", _pixels(i, 32, 32), "JPEG")
  images = datasets.eval_images("celeba_hq", str(tmp_path))
  assert [im.name for im in images] == ["000000", "000001"]
  for im in images:
    np.testing.assert_array_equal(im.load(), val[im.name])
  assert len(datasets.train_images("celeba_hq", str(tmp_path))) == 4


def test_celeba_hq_flat_layout_last_tenth_is_validation(tmp_path):
  for i in range(20):
    _write(tmp_path / "celeba_hq" / f"{i:05d}.png", _pixels(i, 8, 8))
  val = datasets.eval_images("celeba_hq", tmp_path)
  train = datasets.list_images("celeba_hq", tmp_path, "train")
  assert [im.name for im in val] == ["00018", "00019"]
  assert [im.name for im in train] == [f"{i:05d}" for i in range(18)]


# ---------------------------------------------------------------- CLIC 2020

def _clic(tmp_path, test_folder="test"):
  base = tmp_path / "clic2020"
  want = {}
  for s, sub in enumerate(["professional", "mobile"]):
    for i in range(2):
      want[f"{sub}-img{i}"] = _write(base / sub / "valid" / f"img{i}.png", _pixels(10 * s + i, 12 + i, 20))
  want["professional-t0"] = _write(base / "professional" / test_folder / "t0.png", _pixels(99, 9, 11))
  return want


def test_clic2020_validation_both_subsets(tmp_path):
  want = _clic(tmp_path)
  images = datasets.eval_images("clic2020", str(tmp_path), split="validation")
  assert [im.name for im in images] == ["mobile-img0", "mobile-img1", "professional-img0", "professional-img1"]
  for im in images:
    np.testing.assert_array_equal(im.load(), want[im.name])
  prof = datasets.eval_images("clic2020", str(tmp_path), split="professional_valid")
  assert [im.name for im in prof] == ["professional-img0", "professional-img1"]


def test_clic2020_missing_subset_names_zip_and_folder(tmp_path):
  _clic(tmp_path, test_folder="CLIC2020Professional_test")
  # The default evaluation split is test = professional + mobile; mobile's test set is absent.
  msg = _one_line_error(datasets.eval_images, "clic2020", str(tmp_path))
  assert "CLIC2020Mobile_test.zip" in msg and str(tmp_path / "clic2020" / "mobile") in msg
  images = datasets.eval_images("clic2020", str(tmp_path), split="professional_test")
  assert [im.name for im in images] == ["professional-t0"]  # folder named like the zip is accepted


# ---------------------------------------------------------------- ImageNet

def _imagenet_tar(tmp_path, n=3):
  tar = tmp_path / "imagenet" / "ILSVRC2012_img_val.tar"
  tar.parent.mkdir(parents=True)
  data = {}
  with tarfile.open(tar, "w") as t:
    for i in reversed(range(n)):  # archive order is not name order
      name = f"ILSVRC2012_val_{i + 1:08d}"
      data[name] = _jpeg_bytes(_pixels(i, 10 + i, 14))
      info = tarfile.TarInfo(f"{name}.JPEG")
      info.size = len(data[name])
      t.addfile(info, io.BytesIO(data[name]))
  return data


def test_imagenet_val_tar_and_extracted_folder_agree(tmp_path):
  data = _imagenet_tar(tmp_path)
  from_tar = datasets.eval_images("imagenet", str(tmp_path))
  assert [im.name for im in from_tar] == sorted(data)
  for im in from_tar:
    assert im.read_bytes() == data[im.name]
    np.testing.assert_array_equal(im.load(), np.asarray(Image.open(io.BytesIO(data[im.name])).convert("RGB")))
  other = tmp_path / "other"
  for k, (name, b) in enumerate(sorted(data.items())):  # the per-class layout of an extracted val set
    (other / "imagenet" / "val" / f"n0000000{k % 2}").mkdir(parents=True, exist_ok=True)
    (other / "imagenet" / "val" / f"n0000000{k % 2}" / f"{name}.JPEG").write_bytes(b)
  from_dir = datasets.eval_images("imagenet", str(other), max_images=2)
  assert [im.name for im in from_dir] == [im.name for im in from_tar[:2]]
  assert [im.read_bytes() for im in from_dir] == [im.read_bytes() for im in from_tar[:2]]


def test_imagenet_train_folder(tmp_path):
  for k in range(2):
    for i in range(2):
      _write(tmp_path / "imagenet" / "train" / f"n0{k}" / f"n0{k}_{i}.JPEG", _pixels(k + i, 8, 9), "JPEG")
  assert len(datasets.train_images("imagenet", tmp_path)) == 4
  msg = _one_line_error(datasets.eval_images, "imagenet", tmp_path)
  assert "ILSVRC2012_img_val.tar" in msg and str(tmp_path / "imagenet" / "ILSVRC2012_img_val.tar") in msg


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("name, split, expected", [
    ("celeba_hq", "", ["celeba_hq", "CelebAMask-HQ", "{root}/celeba_hq/train/", "{root}/celeba_hq/val/"]),
    ("clic2020", "", ["professional", "CLIC2020", ".zip", "{root}/clic2020/"]),
    ("clic2020", "validation", ["mobile_valid_2020.zip", "{root}/clic2020/mobile/valid/"]),
    ("imagenet", "", ["ILSVRC2012_img_val.tar", "{root}/imagenet/ILSVRC2012_img_val.tar", "image-net.org"]),
    ("imagenet", "train", ["ILSVRC2012_img_train.tar", "{root}/imagenet/train/<wnid>/*.JPEG"]),
    ("folder", "", ["{root}"]),
])
def test_missing_files_one_line_says_what_and_where(tmp_path, name, split, expected):
  root = tmp_path / "empty"
  root.mkdir()
  if name == "folder":
    msg = _one_line_error(datasets.eval_images, name, str(root))
  elif split == "train":
    msg = _one_line_error(datasets.train_images, name, str(root))
  else:
    msg = _one_line_error(datasets.eval_images, name, str(root), split=split)
  for e in expected:
    assert e.format(root=root) in msg, (e, msg)


def test_unknown_names_and_splits(tmp_path):
  msg = _one_line_error(datasets.eval_images, "kodakk", str(tmp_path))
  assert "kodakk" in msg and all(n in msg for n in datasets.DATASETS)
  msg = _one_line_error(datasets.eval_images, "celeba_hq", str(tmp_path), split="test")
  assert "train, validation" in msg
  _one_line_error(datasets.eval_images, "clic2020", str(tmp_path), split="phone_test")
  _one_line_error(datasets.eval_images, "folder", str(tmp_path), split="validation")


def test_corrupt_image_is_a_user_error(tmp_path):
  (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
  (image,) = datasets.eval_images("folder", tmp_path)
  assert "bad.png" in _one_line_error(image.load)


def test_import_does_not_load_tfds():
  code = "import sys, dcic_jax.data.datasets; sys.exit('tensorflow_datasets' in sys.modules)"
  assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------- tfds builders (array_record)

def _tfds():
  try:
    import array_record  # noqa: F401
    import tensorflow_datasets as tfds
  except Exception as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"tensorflow_datasets / array_record not importable ({type(e).__name__}: {e})")
  return tfds


def test_prepare_clic2020_array_record_reads_back_identical(tmp_path):
  tfds = _tfds()
  from dcic_jax.data import tfds_builders
  want = _clic(tmp_path)
  manual = {im.name: im.read_bytes() for im in datasets.eval_images("clic2020", tmp_path, "validation")}
  out = tfds_builders.prepare("clic2020", tmp_path, progress=False)
  assert out == tmp_path / "dcic_clic2020" / datasets.PREPARED_VERSION
  assert sorted(p.name for p in out.glob("*.array_record*")) == [
      "dcic_clic2020-mobile_validation.array_record-00000-of-00001",
      "dcic_clic2020-professional_test.array_record-00000-of-00001",
      "dcic_clic2020-professional_validation.array_record-00000-of-00001"]

  source = tfds.builder_from_directory(str(out)).as_data_source(split="professional_validation")
  records = [source[i] for i in range(len(source))]
  assert [r["name"] for r in records] == [b"professional-img0", b"professional-img1"]
  for r in records:
    assert r["image"] == manual[r["name"].decode()]

  # The prepared copy is now what eval_images reads, with the same names and pixels, even
  # once the manual files are gone.
  for p in (tmp_path / "clic2020").rglob("*.png"):
    p.unlink()
  images = datasets.eval_images("clic2020", str(tmp_path), "validation")
  assert [im.name for im in images] == sorted(manual)
  assert all("dcic_clic2020" in im.source for im in images)
  for im in images:
    assert im.read_bytes() == manual[im.name]
    np.testing.assert_array_equal(im.load(), want[im.name])
  # Parts that were not prepared still come from (here: missing) manual files.
  assert "CLIC2020Mobile_test.zip" in _one_line_error(datasets.eval_images, "clic2020", str(tmp_path), "test")


def test_prepare_imagenet_from_tar_matches_adapter(tmp_path):
  _tfds()
  from dcic_jax.data import tfds_builders
  data = _imagenet_tar(tmp_path, n=4)
  out = tfds_builders.prepare("imagenet", tmp_path, progress=False)
  (tmp_path / "imagenet" / "ILSVRC2012_img_val.tar").unlink()
  images = datasets.eval_images("imagenet", tmp_path, max_images=3)
  assert [im.name for im in images] == sorted(data)[:3]
  assert all(str(out) in im.source and im.read_bytes() == data[im.name] for im in images)
  # A copy whose metadata no longer matches its records is refused, not read as the wrong image.
  meta = json.loads((out / "metadata.json").read_text())
  meta["names"]["validation"][:2] = meta["names"]["validation"][1::-1]
  (out / "metadata.json").write_text(json.dumps(meta))
  first = datasets.eval_images("imagenet", tmp_path)[0]
  assert "inconsistent" in _one_line_error(first.load)


def test_prepare_cli_missing_files_one_line_error(tmp_path, capsys):
  _tfds()
  from dcic_jax.data import tfds_builders
  rc = tfds_builders.main(["prepare", "celeba_hq", "--data-dir", str(tmp_path), "--no-progress"])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.startswith("error: celeba_hq:") and "\n" not in err
  assert str(tmp_path / "celeba_hq") in err
  assert not (tmp_path / "dcic_celeba_hq").exists()
