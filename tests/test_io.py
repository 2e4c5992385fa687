"""Atomic writes (`dcic_jax.io`): whole files or nothing, one-line errors, no temporaries left."""
import os

import numpy as np
import pytest

from dcic_jax import io
from dcic_jax.errors import UserError


def test_write_failure_keeps_destination(tmp_path, monkeypatch):
  path = tmp_path / "img.dcic"
  io.write_bytes(path, b"original")
  with pytest.raises(TypeError):  # A programmer error mid-write propagates unchanged.
    io.write_bytes(path, object())
  assert path.read_bytes() == b"original"
  assert os.listdir(tmp_path) == ["img.dcic"]

  def disk_full(fd):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(io.os, "fsync", disk_full)
  with pytest.raises(UserError, match="No space left"):
    io.write_bytes(path, b"new")
  assert path.read_bytes() == b"original"
  assert os.listdir(tmp_path) == ["img.dcic"]


def test_write_into_missing_directory(tmp_path):
  with pytest.raises(UserError, match="cannot write"):
    io.write_bytes(tmp_path / "nope" / "img.dcic", b"x")
  assert os.listdir(tmp_path) == []


def test_replace_failure_leaves_no_temp(tmp_path):
  target = tmp_path / "is_a_dir"
  (target / "child").mkdir(parents=True)  # os.replace onto a non-empty directory fails.
  with pytest.raises(UserError, match="cannot write"):
    io.write_bytes(target, b"x")
  assert sorted(os.listdir(tmp_path)) == ["is_a_dir"]


def test_atomic_write_failure_is_one_line_and_leaves_nothing(tmp_path):
  (tmp_path / "a_file").write_bytes(b"x")
  with pytest.raises(UserError, match="cannot write") as info:   # parent is a file
    io.atomic_write(tmp_path / "a_file" / "out.png", lambda tmp: tmp.write_bytes(b"y"),
                    make_parents=True)
  assert "\n" not in str(info.value)

  def disk_full(tmp):
    tmp.write_bytes(b"half")
    raise OSError(28, "No space left on device")
  with pytest.raises(UserError, match="No space left"):
    io.atomic_write(tmp_path / "out.png", disk_full)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]




def test_png_npy_and_json_round_trip_into_new_folders(tmp_path):
  from PIL import Image
  image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
  io.save_png(tmp_path / "a" / "x.png", image, make_parents=True)
  io.save_npy(tmp_path / "b" / "x.data", image, make_parents=True)  # no .npy appended
  io.write_json(tmp_path / "c" / "x.json", {"b": 1, "a": [2]}, sort_keys=True, make_parents=True)
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / "x.png")), image)
  np.testing.assert_array_equal(np.load(tmp_path / "b" / "x.data"), image)
  assert (tmp_path / "c" / "x.json").read_text() == '{\n "a": [\n  2\n ],\n "b": 1\n}\n'
  assert not list(tmp_path.rglob(".*"))


def test_a_killed_writer_leaves_a_temporary_that_cleanup_finds(tmp_path):
  def killed(tmp):
    tmp.write_bytes(b"half")
    os.link(tmp, tmp_path / "sub" / f".keep{io.TMP_MARK}x")  # what a SIGKILL would leave
    raise KeyboardInterrupt
  (tmp_path / "sub").mkdir()
  with pytest.raises(KeyboardInterrupt):
    io.atomic_write(tmp_path / "sub" / "out.png", killed)
  assert io.temporary_path(tmp_path / "out.png").name.startswith(".out.tmp-")
  assert io.remove_stale_temporaries(tmp_path) == 1
  assert not list(tmp_path.rglob("*.*"))
