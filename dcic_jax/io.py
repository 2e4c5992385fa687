"""Atomic file writes: the one way the package writes an output file.

Every writer goes through `atomic_write`: the content goes to a hidden temporary file beside the
destination, is fsynced, then renamed onto it, and the folder is fsynced. Readers (a user, a
resumed job, another host on a shared file system) therefore see either no file or the whole
file, also after a crash or a power cut (without the fsync, a rename can reach the disk before
the data and leave an empty file). On any failure the temporary file is removed and the
destination is untouched; an OSError becomes one `UserError` line "cannot write PATH: reason".

Temporary names are `.STEM.tmp-HOST-PID-RANDOM.SUFFIX`: unique per host and process on a shared
file system, and keeping the suffix so encoders that pick a format from it still work. Only a
killed writer leaves one behind; `remove_stale_temporaries` finds them by that mark.
"""
import json
import os
import pathlib
import secrets
import socket
from typing import Callable

import numpy as np

from dcic_jax.errors import UserError

TMP_MARK = ".tmp-"


def temporary_path(path: pathlib.Path) -> pathlib.Path:
  """The hidden temporary file a write to `path` goes through first."""
  tag = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
  return path.with_name(f".{path.stem}{TMP_MARK}{tag}{path.suffix}")


def atomic_write(path, write: Callable[[pathlib.Path], None], *,
                 make_parents: bool = False) -> pathlib.Path:
  """Runs `write(tmp)` on a temporary file beside `path`, then renames it onto `path`.

  `make_parents` creates missing folders (work directories); without it a missing folder is an
  error, so a mistyped output path is refused rather than created. Returns `path`.
  """
  path = pathlib.Path(path)
  tmp = temporary_path(path)
  try:
    if make_parents:
      path.parent.mkdir(parents=True, exist_ok=True)
    write(tmp)
    _fsync(tmp, os.O_RDWR)
    os.replace(tmp, path)
  except BaseException as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    if isinstance(e, OSError):
      raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    raise
  try:   # Makes the rename itself durable (POSIX); best effort elsewhere.
    _fsync(path.parent, os.O_RDONLY)
  except OSError:
    pass
  return path


def _fsync(path: pathlib.Path, flags: int) -> None:
  fd = os.open(path, flags)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write_bytes(path, data: bytes, *, make_parents: bool = False) -> pathlib.Path:
  return atomic_write(path, lambda tmp: tmp.write_bytes(data), make_parents=make_parents)


def write_json(path, obj, *, indent: int = 1, sort_keys: bool = False,
               make_parents: bool = False) -> pathlib.Path:
  """`obj` as indented JSON with a final newline."""
  text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
  return write_bytes(path, text.encode(), make_parents=make_parents)


def save_png(path, image_uint8: np.ndarray, *, make_parents: bool = False) -> pathlib.Path:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = Image.fromarray(np.asarray(image_uint8, np.uint8))
  return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), make_parents=make_parents)


def save_npy(path, array: np.ndarray, *, make_parents: bool = False) -> pathlib.Path:
  def write(tmp):
    with open(tmp, "wb") as f:   # a file object: np.save would append .npy to a path
      np.save(f, np.asarray(array))
  return atomic_write(path, write, make_parents=make_parents)


def remove_stale_temporaries(root) -> int:
  """Deletes the temporary files killed writers left under `root`; returns how many.

  Call it on one process before a job writes (never while other hosts are writing).
  """
  n = 0
  for p in pathlib.Path(root).rglob(f".*{TMP_MARK}*"):
    if p.is_file():
      p.unlink()
      n += 1
  return n
