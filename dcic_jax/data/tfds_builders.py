"""tensorflow-datasets builders for CelebA-HQ, CLIC 2020 and ImageNet-1K validation, without TensorFlow.

Stock tfds builders store `tfds.features.Image`, whose encoding needs TensorFlow. These store each
image's encoded file bytes unchanged (`tfds.features.Tensor(shape=(), dtype=np.object_)`) and its
stable name, in `array_record` files, read back with `builder.as_data_source()` and decoded with
Pillow (`datasets.py`). Nothing is downloaded: every builder reads a manual directory.

Prepare one (after putting the files where docs/datasets.md says):

  python -m dcic_jax.data.tfds_builders prepare celeba_hq --data-dir /data
  python -m dcic_jax.data.tfds_builders prepare clic2020 --manual-dir /data/clic2020 --data-dir /data

--manual-dir defaults to <data-dir>/<NAME>, the folder `datasets.eval_images(NAME, data_dir)` reads;
the copy goes to <data-dir>/dcic_<NAME>/<version>/, where `datasets.eval_images` then finds and
prefers it. Every part whose files are present is prepared (CLIC 2020: professional/mobile x
train/validation/test; CelebA-HQ: train and validation; ImageNet: validation only, as its training
set is read from the extracted folder). Examples keep the name order (no shuffling), so record i
of a part is the i-th name in the copy's metadata.json.
"""
import functools
import pathlib
import sys

import numpy as np

from dcic_jax.data import datasets
from dcic_jax.argtypes import Parser
from dcic_jax.errors import UserError, exit_code

BUILDABLE = ("celeba_hq", "clic2020", "imagenet")
_DESCRIPTIONS = {
    "celeba_hq": "CelebA-HQ face images (manual files), encoded bytes as distributed.",
    "clic2020": "CLIC 2020 professional and mobile images (manual zips), encoded bytes as distributed.",
    "imagenet": "ImageNet-1K (ILSVRC2012) validation images (manual tar), encoded bytes as distributed.",
}


def available_parts(name: str, manual_dir) -> tuple[dict, list[str]]:
  """({part: images} for every part present in `manual_dir`, [why each absent part is absent])."""
  found, missing = {}, []
  for part in datasets.PREPARED_PARTS[name]:
    try:
      found[part] = datasets.manual_part(name, pathlib.Path(manual_dir), part)
    except UserError as e:
      missing.append(str(e))
  return found, missing


@functools.lru_cache(maxsize=None)
def builder_class(dataset: str):
  """The tfds builder class of `dataset` (tfds is imported here, not when this module is)."""
  if dataset not in BUILDABLE:
    raise UserError(f"no tfds builder for {dataset!r}; builders: {', '.join(BUILDABLE)}")
  import tensorflow_datasets as tfds

  class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Encoded image bytes + name per example; splits are the parts found in the manual dir."""
    name = f"dcic_{dataset}"
    VERSION = tfds.core.Version(datasets.PREPARED_VERSION)
    RELEASE_NOTES = {datasets.PREPARED_VERSION: "Encoded bytes and names, array_record, name order."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (f"The manual dir is the dataset's folder, <data_dir>/{dataset}/.\n"
                                    + datasets.INSTRUCTIONS[dataset])
    show_progress = True

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      # No checksums file to find (nothing is downloaded); tfds' lookup of it would also need
      # the `importlib_resources` package, which tfds does not declare.
      return None

    def __init__(self, *, file_format="array_record", **kwargs):
      super().__init__(file_format=file_format, **kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, description=_DESCRIPTIONS[dataset],
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # the file's bytes
              "name": tfds.features.Tensor(shape=(), dtype=np.object_),   # datasets.EvalImage.name
          }),
          disable_shuffling=True,  # keep the name order: record i <-> metadata names[i]
          metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
      found, missing = available_parts(dataset, dl_manager.manual_dir)
      if not found:
        raise UserError(missing[0])
      self.info.metadata["names"] = {part: [im.name for im in images] for part, images in found.items()}
      return {part: self._generate_examples(part, images) for part, images in found.items()}

    def _generate_examples(self, part, images):
      import tqdm
      for im in tqdm.tqdm(images, desc=f"{dataset} {part}", unit="img", disable=not self.show_progress):
        yield im.name, {"image": im.read_bytes(), "name": im.name}

  Builder.__name__ = Builder.__qualname__ = "Dcic" + "".join(w.title() for w in dataset.split("_"))
  return Builder


def prepare(name: str, data_dir, manual_dir=None, force: bool = False, progress: bool = True
            ) -> pathlib.Path:
  """Write the array_record copy of `name` under `data_dir`; returns its directory.

  Checks the manual files first, so a missing file is the same one-line error as when reading.
  """
  import tensorflow_datasets as tfds
  data_dir = pathlib.Path(data_dir).expanduser()
  manual_dir = pathlib.Path(manual_dir).expanduser() if manual_dir else data_dir / name
  cls = builder_class(name)
  found, missing = available_parts(name, manual_dir)
  if not found:
    raise UserError(missing[0])
  skipped = [p for p in datasets.PREPARED_PARTS[name] if p not in found]
  if skipped:
    print(f"note: {name}: no files for {', '.join(skipped)}: those parts are not prepared", file=sys.stderr)
  tfds.display_progress_bar(False)  # our per-part tqdm bar instead of tfds' generic ones
  builder = cls(data_dir=str(data_dir))
  builder.show_progress = progress
  mode = tfds.download.GenerateMode.FORCE_REDOWNLOAD if force else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir), download_mode=mode, try_download_gcs=False))
  out = datasets.prepared_dir(name, data_dir)
  if pathlib.Path(builder.data_dir) != out:
    raise AssertionError(f"tfds wrote {builder.data_dir}, expected {out}")
  return out


def main(argv=None) -> int:
  parser = Parser(prog="python -m dcic_jax.data.tfds_builders",
                                   description="Prepare the project's tfds copies (array_record, no TensorFlow).")
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("prepare", help="read the manual files of NAME and write <data-dir>/dcic_NAME/")
  p.add_argument("name", choices=BUILDABLE)
  p.add_argument("--data-dir", required=True, help="root folder; the copy goes to <data-dir>/dcic_NAME/")
  p.add_argument("--manual-dir", default=None, help="the dataset's files (default <data-dir>/NAME)")
  p.add_argument("--force", action="store_true", help="rewrite an existing copy")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  def run():
    args = parser.parse_args(argv)
    out = prepare(args.name, args.data_dir, args.manual_dir, force=args.force, progress=not args.no_progress)
    print(f"prepared {args.name} in {out}")
  return exit_code(run)


if __name__ == "__main__":
  sys.exit(main())
