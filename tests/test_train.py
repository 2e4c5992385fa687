"""Codec training: the loss goes down, a killed run resumes to the same parameters, exports load."""
import shutil

import jax
import numpy as np
import pytest

from conftest import PHOTOS


def _config(steps, **kw):
  from configs import base
  c = base.get_config()
  c.codec.N, c.codec.M = 8, 12
  tc = c.train_codec
  tc.steps, tc.batch_size, tc.crop_size = steps, 4, 64
  tc.ckpt_every, tc.log_every, tc.warmup_steps = 2, 1, 1
  tc.data_dir = str(PHOTOS)
  for k, v in kw.items():
    setattr(tc, k, v)
  return c


def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path):
  from dcic_jax.train import restore_params, train_codec
  cfg = _config(4)
  _, params = train_codec(cfg, str(tmp_path))
  ref = jax.tree.map(np.asarray, params)
  # "Kill" after step 2: drop the last checkpoint, run again; it must resume from step 2.
  shutil.rmtree(tmp_path / "checkpoints" / "4")
  _, params2 = train_codec(cfg, str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, ref, jax.tree.map(np.asarray, params2))
  # A finished workdir does no work again.
  train_codec(cfg, str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, ref, jax.tree.map(np.asarray, restore_params(tmp_path)))


def test_loss_decreases_and_export_round_trips(tmp_path, image):
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.train import train_codec
  cfg = _config(30, lr=3e-3, ckpt_every=100, log_every=5)
  cfg.export_dir = str(tmp_path / "export")
  from tensorboardX import SummaryWriter  # noqa: F401  (training writes TensorBoard scalars)
  _, params = train_codec(cfg, str(tmp_path / "run"))
  exported = codec_lib.export_trained(cfg, params, cfg.export_dir)
  loaded = codec_lib.load(cfg.export_dir)
  assert loaded.fingerprint == exported.fingerprint
  data = loaded.compress(image[:64, :64])
  assert loaded.decompress(data).image.shape == (64, 64, 3)
  scalars = list((tmp_path / "run" / "tb").glob("events.*"))
  assert scalars, "no TensorBoard event file"
  from tensorboardX.event_file_writer import EventFileWriter  # noqa: F401
  import struct
  from tensorboardX.proto import event_pb2
  losses = []
  raw = scalars[0].read_bytes()
  pos = 0
  while pos < len(raw):
    n = struct.unpack("<Q", raw[pos:pos + 8])[0]
    ev = event_pb2.Event.FromString(raw[pos + 12:pos + 12 + n])
    pos += 12 + n + 4
    losses += [v.simple_value for v in ev.summary.value if v.tag == "train/rd"]
  assert len(losses) >= 2 and losses[-1] < losses[0]


def test_nan_loss_raises(tmp_path, monkeypatch):
  from dcic_jax import train
  real = train.rd_loss
  def nan_loss(*a, **k):
    loss, m = real(*a, **k)
    return loss * np.nan, {**m, "loss": loss * np.nan}
  monkeypatch.setattr(train, "rd_loss", nan_loss)
  with pytest.raises(FloatingPointError, match="step 1"):
    train.train_codec(_config(2), str(tmp_path))
