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
  from dcic_jax.checkpointing import restore_params
  from dcic_jax.train import train_codec
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
  """`dcic train-codec` (from another directory): trains, exports tables and calibration."""
  import json
  import subprocess
  import sys
  from dcic_jax.codecs import codec as codec_lib
  export = tmp_path / "export"
  sets = dict(N=8, M=12)
  tc = dict(steps=30, batch_size=4, crop_size=64, ckpt_every=100, log_every=5, warmup_steps=1, lr=3e-3,
            data_dir=PHOTOS)
  p = subprocess.run([sys.executable, "-m", "dcic_jax", "train-codec", "--config=configs/train_codec.py:bmshj2018,1",
                      f"--workdir={tmp_path / 'run'}", f"--config.export_dir={export}",
                      *[f"--config.codec.{k}={v}" for k, v in sets.items()],
                      *[f"--config.train_codec.{k}={v}" for k, v in tc.items()]],
                     capture_output=True, text=True, cwd=tmp_path, timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  assert f"exported the codec to {export}" in p.stdout
  loaded = codec_lib.load(export)
  info = json.loads((export / "codec.json").read_text())
  aux = info["aux_loss"]  # z's quantiles fitted
  assert aux["fitted"] < 1e-3 * aux["trained"]
  cal = info["dcic"]  # penalty weights stored
  assert cal["w_d"] == 1.0 and cal["w_p_latent"] > 0 and cal["w_p_reconstruction"] > 0
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


def test_a_ladder_of_rates_and_step_counts_traces_the_step_once(tmp_path, monkeypatch):
  """λ and the learning rate are traced: rate points with other λ and schedule lengths reuse
  the compiled step (experiments/train_ladder.py relies on it), and λ really reaches the loss."""
  from dcic_jax import train
  real, traces = train.rd_loss, []
  def counting_loss(*a, **k):
    traces.append(1)  # runs once per trace, not per step
    return real(*a, **k)
  monkeypatch.setattr(train, "rd_loss", counting_loss)
  _, low = train.train_codec(_config(2, lmbda=0.001, ckpt_every=100), str(tmp_path / "low"))
  _, high = train.train_codec(_config(3, lmbda=0.05, ckpt_every=100, warmup_steps=2), str(tmp_path / "high"))
  _, high2 = train.train_codec(_config(2, lmbda=0.05, ckpt_every=100), str(tmp_path / "high2"))
  assert len(traces) == 1
  diff = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), low, high2)
  assert max(jax.tree.leaves(diff)) > 0, "λ did not change the trained parameters"


def test_prefetch_yields_the_same_items_in_order_and_re_raises_errors():
  from dcic_jax.data.input_pipeline import prefetch
  counter = iter(range(10))
  def make():
    v = next(counter)
    if v == 5:
      raise ValueError("bad batch 5")
    return v
  it = prefetch(make, depth=2)
  assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
  with pytest.raises(ValueError, match="bad batch 5"):
    next(it)
  it = prefetch(lambda: 1)
  next(it)
  it.close()  # stops the thread; a closed iterator is exhausted
  with pytest.raises(StopIteration):
    next(it)


def test_a_workdir_with_another_state_layout_is_a_clear_error(tmp_path):
  """Resuming needs the same train-state tree; a mismatch is one line naming the workdir."""
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  import pytest
  from dcic_jax import checkpointing
  from dcic_jax.errors import UserError
  mgr = ocp.CheckpointManager(tmp_path / "ckpt", options=ocp.CheckpointManagerOptions(create=True))
  mgr.save(3, args=ocp.args.StandardSave({"step": jnp.int32(3), "params": {"w": jnp.zeros(2)}}))
  mgr.wait_until_finished()
  assert checkpointing.resume(mgr, {"step": jnp.int32(0), "params": {"w": jnp.ones(2)}}, tmp_path)["step"] == 3
  with pytest.raises(UserError, match=r"cannot resume from .*another train state layout"):
    checkpointing.resume(mgr, {"step": jnp.int32(0), "opt": {"mu": jnp.ones(2)}}, tmp_path)
  mgr.close()
