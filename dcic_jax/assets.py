"""Where the shipped files live: codec exports and the prior (checkpoints/), the demo images
(data/images/) and the configs (configs/).

In a source checkout (plain or `pip install -e .`) they sit beside the package; a wheel carries
copies under `dcic_jax/_assets` (setup.py's build step puts them there). A relative path in a
config or on the command line names the user's file when it exists from the working directory,
and the shipped one otherwise, so `--config=configs/demo.py` and the demo's
`checkpoints/mbt2018-mean-q1` work from any directory.
"""
import os
import pathlib

from dcic_jax.errors import UserError

_PACKAGE = pathlib.Path(__file__).resolve().parent
SUBDIRS = ("checkpoints", "configs", "data/images")


def root() -> pathlib.Path:
  """The folder that holds checkpoints/, configs/ and data/ (source checkout first, then wheel)."""
  for candidate in (_PACKAGE.parent, _PACKAGE / "_assets"):
    if (candidate / "checkpoints").is_dir() and (candidate / "configs").is_dir():
      return candidate
  raise UserError(f"the shipped files (checkpoints/, configs/, data/images/) are neither beside "
                  f"{_PACKAGE} nor in {_PACKAGE / '_assets'}: reinstall dcic_jax from its source "
                  "folder (pip install .) or run from a source checkout")


def resolve(path: str | os.PathLike) -> pathlib.Path:
  """`path` itself if it exists (or is absolute), else the shipped file of that relative name."""
  p = pathlib.Path(path).expanduser()
  if p.is_absolute() or p.exists():
    return p
  shipped = root() / p
  return shipped if shipped.exists() else p


def shipped(relative: str) -> pathlib.Path:
  """A shipped file or folder by its name relative to the assets root, e.g. "checkpoints/prior"."""
  return root() / relative
