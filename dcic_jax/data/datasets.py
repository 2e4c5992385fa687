"""The datasets of the study (docs/design.md §5): any image folder, CelebA-HQ, CLIC 2020 and ImageNet-1K.

Nothing can be downloaded at run time, so every dataset other than "folder" is read from files the
user put under one root folder `data_dir` (layouts in docs/datasets.md and in `INSTRUCTIONS`), and
a missing file is a one-line `UserError` that says which files to put where.

Two readers give the same bytes, hence the same pixels:
  * the manual files themselves (an adapter: image files, or members of ImageNet's validation tar);
  * the project's tensorflow-datasets copy, once `python -m dcic_jax.data.tfds_builders prepare`
    has written it to `<data_dir>/dcic_<name>/<version>/` (array_record, one record per image).
The prepared copy is used whenever it holds every part of the requested split and tfds imports;
otherwise the manual files are read. No TensorFlow is needed by either.

Evaluation sets are lists of `EvalImage`, sorted by name; names are file-name-safe and unique
within a set, and the same for both readers, so outputs can be keyed by them.
"""
import collections
import dataclasses
import functools
import json
import pathlib
import re
import tarfile
from typing import Callable

import numpy as np

from dcic_jax.data.images import IMAGE_SUFFIXES, decode_rgb
from dcic_jax.errors import UserError

DATASETS = ("folder", "celeba_hq", "clic2020", "imagenet")
PREPARED_VERSION = "1.0.0"  # version of the tfds builders in tfds_builders.py
CLIC_SUBSETS = ("mobile", "professional")
CELEBA_HQ_FLAT_VAL = 1000   # flat CelebA-HQ folder: the last min(1000, n // 10) images are validation

_SPLIT_ALIASES = {"train": "train", "val": "validation", "valid": "validation",
                  "validation": "validation", "test": "test"}
_DEFAULT_EVAL_SPLIT = {"folder": "", "celeba_hq": "validation", "clic2020": "test",
                       "imagenet": "validation"}
_SPLITS = {"folder": ("",), "celeba_hq": ("train", "validation"),
           "clic2020": ("train", "validation", "test"), "imagenet": ("train", "validation")}
# Parts the tfds builders store (a requested split is the union of one or more parts).
PREPARED_PARTS = {
    "celeba_hq": ("train", "validation"),
    "clic2020": tuple(f"{s}_{p}" for s in CLIC_SUBSETS for p in ("train", "validation", "test")),
    "imagenet": ("validation",),  # ImageNet's 1.28M training images are read from the folder
}

_CLIC_ZIPS = {  # (subset, split) -> the CLIC 2020 zip and the folder name it unpacks to
    ("professional", "train"): ("professional_train_2020.zip", "train"),
    ("professional", "validation"): ("professional_valid_2020.zip", "valid"),
    ("professional", "test"): ("CLIC2020Professional_test.zip", "test"),
    ("mobile", "train"): ("mobile_train_2020.zip", "train"),
    ("mobile", "validation"): ("mobile_valid_2020.zip", "valid"),
    ("mobile", "test"): ("CLIC2020Mobile_test.zip", "test"),
}
_CLIC_URL = "https://data.vision.ee.ethz.ch/cvl/clic/"

INSTRUCTIONS = {
    "celeba_hq": """\
Put the CelebA-HQ images (PNG or JPEG, any resolution) in <data_dir>/celeba_hq/, either
  * split: <data_dir>/celeba_hq/train/**/* and <data_dir>/celeba_hq/val/**/* (the layout of
    StarGAN v2's celeba_hq.zip: train/female/*.jpg, train/male/*.jpg, val/female/*.jpg, ...), or
  * flat: all images directly in <data_dir>/celeba_hq/ (e.g. CelebAMask-HQ's CelebA-HQ-img/*.jpg,
    or 00000.png ... 29999.png made with the progressive_growing_of_gans scripts); the last
    min(1000, n // 10) images in name order are the validation split, the rest are train.
CelebA-HQ cannot be downloaded by this project: get it from https://github.com/switchablenorms/CelebAMask-HQ
or https://github.com/clovaai/stargan-v2 (celeba_hq.zip) or build it with
https://github.com/tkarras/progressive_growing_of_gans.""",
    "clic2020": f"""\
Download the CLIC 2020 zips (https://www.compression.cc/, files under {_CLIC_URL}):
professional_valid_2020.zip, mobile_valid_2020.zip (validation), test/CLIC2020Professional_test.zip,
test/CLIC2020Mobile_test.zip (test), professional_train_2020.zip, mobile_train_2020.zip (train), and
unzip each into <data_dir>/clic2020/professional/ or <data_dir>/clic2020/mobile/, e.g.
  unzip professional_valid_2020.zip -d <data_dir>/clic2020/professional
so that the PNGs are in <data_dir>/clic2020/<professional|mobile>/<train|valid|test>/ (a folder
whose name contains "train", "valid" or "test" is accepted, e.g. CLIC2020Professional_test/).""",
    "imagenet": """\
Register at https://image-net.org/download-images and download the ILSVRC2012 (ImageNet-1K) files:
  * validation: ILSVRC2012_img_val.tar (6.3 GB, 50,000 JPEGs) as <data_dir>/imagenet/ILSVRC2012_img_val.tar,
    or its JPEGs extracted under <data_dir>/imagenet/val/ (flat, or in <wnid>/ class folders);
  * train (only for training): ILSVRC2012_img_train.tar extracted, with each of its 1000 class tars
    extracted too, as <data_dir>/imagenet/train/<wnid>/*.JPEG.
Class labels are not used (compression only).""",
}


@dataclasses.dataclass(frozen=True)
class EvalImage:
  """One image of a dataset: a stable name and a way to read its encoded bytes.

  Reading is deferred so a 50,000-image set can be listed (and cut to `max_images`) without
  decoding it; `load()` gives the full-resolution pixels.
  """
  name: str    # file-name-safe, unique within its set, equal for both readers
  source: str  # where the bytes come from, for messages (a path, "tar:member" or "tfds dir[split][i]")
  read: Callable[[], bytes] = dataclasses.field(repr=False, compare=False)

  def read_bytes(self) -> bytes:
    return self.read()

  def load(self) -> np.ndarray:
    """uint8 [H, W, 3] at full resolution."""
    return decode_rgb(self.read(), self.source)


def eval_images(name: str, data_dir: str, split: str = "", max_images: int = 0) -> list[EvalImage]:
  """The evaluation set, sorted by name; the first `max_images` of it if > 0.

  `split` "" is the dataset's evaluation split: the folder itself, CelebA-HQ "validation",
  CLIC 2020 "test" (professional + mobile; "professional_test", "mobile_validation", ... pick one
  subset) and ImageNet "validation".
  """
  images = list_images(name, data_dir, split or _DEFAULT_EVAL_SPLIT.get(name, ""))
  return images[:max_images] if max_images > 0 else images


def train_images(name: str, data_dir: str, max_images: int = 0) -> list[np.ndarray]:
  """Decoded training images (uint8 [H, W, 3]) for `input_pipeline.random_crops`.

  The "train" split ("folder": all images of the folder). With `max_images` > 0, that many
  images evenly spaced over the name order are taken (so an ImageNet subset spans the classes);
  set it for the large sets, which are decoded into memory.
  """
  images = list_images(name, data_dir, "" if name == "folder" else "train")
  if 0 < max_images < len(images):
    images = [images[i * len(images) // max_images] for i in range(max_images)]
  return [im.load() for im in images]


def list_images(name: str, data_dir: str, split: str) -> list[EvalImage]:
  """All images of one split, sorted by name, from the prepared tfds copy or the manual files."""
  if name not in DATASETS:
    raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
  data_dir = pathlib.Path(data_dir).expanduser()
  parts = split_parts(name, split)
  if name == "folder":
    return _folder_images(data_dir)
  prepared = _prepared_images(name, data_dir, parts)
  if prepared is not None:
    return prepared
  base = data_dir / name
  images, missing = [], []
  for part in parts:
    try:
      images += manual_part(name, base, part)
    except UserError as e:  # report every missing part at once (CLIC: both subsets)
      missing.append(str(e).removeprefix(f"{name}: ") if missing else str(e))
  if missing:
    raise UserError("; ".join(missing))
  return sorted(images, key=lambda im: im.name)


def split_parts(name: str, split: str) -> tuple[str, ...]:
  """A requested split -> the stored parts it is made of (e.g. CLIC "test" -> both subsets)."""
  if name == "folder":
    if split:
      raise UserError(f"the folder dataset has no splits (got split {split!r}): use split \"\"")
    return ("",)
  subset, _, rest = split.partition("_") if name == "clic2020" and "_" in split else ("", "", split)
  canonical = _SPLIT_ALIASES.get(rest)
  if canonical not in _SPLITS[name] or (subset and subset not in CLIC_SUBSETS):
    known = ", ".join(_SPLITS[name])
    extra = " (optionally prefixed professional_ or mobile_)" if name == "clic2020" else ""
    raise UserError(f"{name}: unknown split {split!r}; known splits: {known}{extra}")
  if name == "clic2020":
    return tuple(f"{s}_{canonical}" for s in ((subset,) if subset else CLIC_SUBSETS))
  return (canonical,)


def manual_part(name: str, base: pathlib.Path, part: str) -> list[EvalImage]:
  """The images of one stored part read from the manual files under `base` (= <data_dir>/<name>).

  Also what the tfds builders generate from, so both readers see identical bytes.
  """
  base = pathlib.Path(base)
  if name == "celeba_hq":
    return _celeba_hq(base, part)
  if name == "clic2020":
    subset, split = part.split("_", 1)
    return _clic2020(base, subset, split)
  if name == "imagenet":
    return _imagenet(base, part)
  raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


# ---------------------------------------------------------------- manual files (adapters)

def _folder_images(folder: pathlib.Path) -> list[EvalImage]:
  if not folder.is_dir():
    raise UserError(f"folder dataset: image folder not found: {folder} (put PNG/JPEG files directly in it)")
  files = _image_files(folder, recursive=False)
  if not files:
    raise UserError(f"folder dataset: no images ({', '.join(IMAGE_SUFFIXES)}) directly in {folder} "
                    "(subfolders are not searched)")
  return _file_images(folder, files)


def _celeba_hq(base: pathlib.Path, part: str) -> list[EvalImage]:
  def missing(what):
    return UserError(f"celeba_hq: {what}; expected CelebA-HQ PNG/JPEG files in {base}/train/ and {base}/val/ "
                     f"(StarGAN v2 celeba_hq.zip layout) or all of them directly in {base}/ "
                     "(e.g. CelebAMask-HQ's CelebA-HQ-img/*.jpg); CelebA-HQ is not downloadable here: "
                     "see docs/datasets.md")
  if not base.is_dir():
    raise missing(f"folder {base} not found")
  split_dirs = {"train": base / "train", "validation": base / "val"}
  if any(d.is_dir() for d in split_dirs.values()):
    folder = split_dirs[part]
    files = _image_files(folder, recursive=True) if folder.is_dir() else []
    if not files:
      raise missing(f"no {part} images in {folder}")
    return _file_images(folder, files)
  files = _image_files(base, recursive=False)
  if len(files) < 2:
    raise missing(f"no images in {base} (need at least 2: train and validation)")
  images = sorted(_file_images(base, files), key=lambda im: im.name)
  n_val = max(1, min(CELEBA_HQ_FLAT_VAL, len(images) // 10))
  return images[-n_val:] if part == "validation" else images[:-n_val]


def _clic2020(base: pathlib.Path, subset: str, split: str) -> list[EvalImage]:
  zip_name, folder_name = _CLIC_ZIPS[(subset, split)]
  url = _CLIC_URL + ("test/" if split == "test" else "") + zip_name
  where = base / subset
  hint = (f"download {zip_name} ({url}, CLIC 2020: https://www.compression.cc/) and unzip it into {where}/ "
          f"so that the PNGs are in {where / folder_name}/")
  key = "valid" if split == "validation" else split
  candidates = sorted(d for d in where.iterdir() if d.is_dir() and key in d.name.lower()) if where.is_dir() else []
  exact = [d for d in candidates if d.name.lower() == folder_name]
  if len(candidates) > 1 and not exact:
    raise UserError(f"clic2020: several {split} folders in {where}: "
                    f"{', '.join(d.name for d in candidates)}; keep one, named {folder_name}/")
  folder = (exact or candidates or [where / folder_name])[0]
  files = _image_files(folder, recursive=True) if folder.is_dir() else []
  if not files:
    raise UserError(f"clic2020: no {subset} {split} images in {folder}: {hint}")
  return [dataclasses.replace(im, name=f"{subset}-{im.name}") for im in _file_images(folder, files)]


def _imagenet(base: pathlib.Path, part: str) -> list[EvalImage]:
  if part == "train":
    folder = base / "train"
    files = _image_files(folder, recursive=True) if folder.is_dir() else []
    if not files:
      raise UserError(f"imagenet: no training images in {folder}: extract ILSVRC2012_img_train.tar "
                      f"(https://image-net.org/download-images, registration needed) and its 1000 class tars "
                      f"so that the JPEGs are at {folder}/<wnid>/*.JPEG")
    return _file_images(folder, files)
  folder, tar = base / "val", base / "ILSVRC2012_img_val.tar"
  files = _image_files(folder, recursive=True) if folder.is_dir() else []
  if files:
    return _file_images(folder, files)
  if tar.is_file():
    return _tar_images(tar)
  raise UserError(f"imagenet: validation images not found: put ILSVRC2012_img_val.tar (6.3 GB, from "
                  f"https://image-net.org/download-images, registration needed) at {tar}, or its 50,000 "
                  f"extracted JPEGs under {folder}/")


def _image_files(folder: pathlib.Path, recursive: bool) -> list[pathlib.Path]:
  found = folder.rglob("*") if recursive else folder.iterdir()
  return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                and p.is_file())


def _file_images(folder: pathlib.Path, files: list[pathlib.Path]) -> list[EvalImage]:
  rels = [p.relative_to(folder) for p in files]
  images = [EvalImage(n, str(p), functools.partial(_read_file, p)) for n, p in zip(_names(rels), files)]
  return sorted(images, key=lambda im: im.name)


def _tar_images(tar: pathlib.Path) -> list[EvalImage]:
  """Images inside an uncompressed tar, read by offset so no member is ever extracted."""
  try:
    with tarfile.open(tar, "r:") as t:
      members = [m for m in t if m.isfile() and pathlib.PurePosixPath(m.name).suffix.lower() in IMAGE_SUFFIXES]
  except (tarfile.TarError, OSError) as e:
    raise UserError(f"{tar}: not a readable uncompressed tar ({e})") from None
  if not members:
    raise UserError(f"{tar}: no images (JPEG/PNG members) in the tar")
  rels = [pathlib.PurePosixPath(m.name) for m in members]
  images = [EvalImage(n, f"{tar}:{m.name}", functools.partial(_read_range, tar, m.offset_data, m.size))
            for n, m in zip(_names(rels), members)]
  return sorted(images, key=lambda im: im.name)


def _names(rels: list) -> list[str]:
  """Stable, file-name-safe names unique within a set: the file stem, made longer only on a clash.

  A clash adds the folders (joined by "-"), then the suffix; names do not depend on the order of
  the files nor, without a clash, on the nesting (ImageNet val flat or per class: same names).
  """
  def clean(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("._-") or "image"
  forms = [(clean(r.stem), clean("-".join(r.parts[:-1] + (r.stem,))),
            clean("-".join(r.parts[:-1] + (f"{r.stem}_{r.suffix[1:]}",)))) for r in rels]
  level = [0] * len(rels)
  while True:
    names = [f[lv] for f, lv in zip(forms, level)]
    counts = collections.Counter(names)
    clashes = [i for i, n in enumerate(names) if counts[n] > 1]
    if not clashes:
      return names
    if all(level[i] == 2 for i in clashes):  # only reachable through `clean`: number them
      return [f"{n}-{i}" if counts[n] > 1 else n for i, n in enumerate(names)]
    for i in clashes:
      level[i] = min(level[i] + 1, 2)


def _read_file(path: pathlib.Path) -> bytes:
  try:
    return path.read_bytes()
  except OSError as e:
    raise UserError(f"cannot read {path} ({e.strerror or e})") from None


def _read_range(path: pathlib.Path, offset: int, size: int) -> bytes:
  try:
    with open(path, "rb") as f:
      f.seek(offset)
      data = f.read(size)
  except OSError as e:
    raise UserError(f"cannot read {path} ({e.strerror or e})") from None
  if len(data) != size:
    raise UserError(f"{path}: truncated archive (member at byte {offset} is short)")
  return data


# ---------------------------------------------------------------- prepared tfds copy

def prepared_dir(name: str, data_dir) -> pathlib.Path:
  """Where `tfds_builders prepare` writes dataset `name` for this `data_dir`."""
  return pathlib.Path(data_dir) / f"dcic_{name}" / PREPARED_VERSION


def _prepared_images(name: str, data_dir: pathlib.Path, parts) -> list[EvalImage] | None:
  """The split from the prepared copy, or None when it is absent/incomplete (then manual files)."""
  root = prepared_dir(name, data_dir)
  try:
    names = json.loads((root / "metadata.json").read_text())["names"]
  except (OSError, ValueError, KeyError, TypeError):
    return None
  if not all(p in names for p in parts) or not (root / "dataset_info.json").is_file():
    return None
  try:
    import tensorflow_datasets  # noqa: F401  (only to know whether the copy can be read)
  except Exception:  # a broken tfds install: the manual files still work
    return None
  images = [EvalImage(n, f"{root}[{p}][{i}]", functools.partial(_read_prepared, str(root), p, i, n))
            for p in parts for i, n in enumerate(names[p])]
  return sorted(images, key=lambda im: im.name)


@functools.lru_cache(maxsize=16)
def _data_source(root: str, split: str):
  import tensorflow_datasets as tfds
  return tfds.builder_from_directory(root).as_data_source(split=split)


def _read_prepared(root: str, split: str, index: int, name: str) -> bytes:
  try:
    record = _data_source(root, split)[index]
  except Exception as e:  # tfds / array_record broken, or a file missing from the copy
    why = " ".join(f"{type(e).__name__}: {e}".split())  # one line
    raise UserError(f"cannot read the prepared copy {root} ({why}); fix tensorflow-datasets, or delete "
                    "the copy to read the manual files") from None
  stored = record["name"]
  stored = stored.decode() if isinstance(stored, bytes) else str(stored)
  if stored != name:
    raise UserError(f"{root}: record {index} of {split} is {stored!r}, expected {name!r}; "
                    "the prepared copy is inconsistent: delete it and run prepare again")
  return bytes(record["image"])
