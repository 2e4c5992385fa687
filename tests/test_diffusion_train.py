"""Training the prior: L_simple (Ho et al. 2020), resume, NaN guard, data iterator."""
import itertools
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from dcic_jax.diffusion import losses, prior_config, prior_files, schedules, train

# One level, no attention, three residual blocks (middle ×2, up ×1): the smallest UNet that
# still trains through dropout, remat and a skip; compiling the step dominates this file.
TINY_UNET = dict(base_channels=8, channel_mult=(1,), num_res_blocks=0, attention_levels=(),
                 mid_attention=False, norm_groups=4, dropout=0.1, remat=True)


def _config(num_steps, batch_size):
  prior = prior_config.default_prior_config()
  prior.unet = TINY_UNET
  prior.train.update(batch_size=batch_size, num_steps=num_steps, warmup_steps=2, log_every=1,
                     checkpoint_every=2, progress_bar=False, seed=7, ema_decay=0.9)
  return ml_collections.ConfigDict({"prior": prior})


def _batches(batch_size, seed):
  batch = np.random.default_rng(seed).integers(0, 256, (batch_size, 8, 8, 3), dtype=np.uint8)
  return itertools.repeat(batch)


def test_resumed_training_equals_uninterrupted_training(tmp_path):
  b = 2 * jax.device_count()  # the batch is sharded over every device
  straight = train.train_prior(_config(4, b), str(tmp_path / "a"), _batches(b, 0))
  train.train_prior(_config(2, b), str(tmp_path / "b"), _batches(b, 0))
  resumed = train.train_prior(_config(4, b), str(tmp_path / "b"), _batches(b, 0))
  assert int(straight.step) == int(resumed.step) == 4
  jax.tree.map(np.testing.assert_array_equal, straight.params, resumed.params)
  jax.tree.map(np.testing.assert_array_equal, straight.ema_params, resumed.ema_params)
  assert not all(jax.tree.leaves(jax.tree.map(
      lambda p, e: np.array_equal(p, e), straight.params, straight.ema_params)))
  assert os.listdir(tmp_path / "a" / "prior" / "tensorboard")
  cfg, params, schedule = prior_files.load_trained_prior(str(tmp_path / "b"))
  assert cfg.remat and schedule.num_steps == 1000
  jax.tree.map(np.testing.assert_array_equal, params, resumed.ema_params)


def test_nan_loss_stops_with_the_step_number(tmp_path):
  b = 2 * jax.device_count()
  good = np.zeros((b, 8, 8, 3), np.float32)
  bad = np.full((b, 8, 8, 3), np.nan, np.float32)
  with pytest.raises(FloatingPointError, match="step 1"):
    train.train_prior(_config(4, b), str(tmp_path), iter([good, bad, good, good]))


def test_eps_loss_of_the_zero_network_is_the_noise_power():
  x0 = np.zeros((4, 8, 8, 3), np.float32)
  loss, _ = losses.eps_loss(lambda p, x_t, t, k: 0.0 * x_t, None, x0, jax.random.key(0),
                            schedules.make_schedule().alphas_cumprod)
  assert abs(float(loss) - 1.0) < 0.15  # E‖ε‖² per pixel


def test_folder_crops_are_reproducible(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(2):
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "small.png")  # skipped
  a = list(itertools.islice(train.folder_crops(str(tmp_path), 16, 3, seed=1), 2))
  b = list(itertools.islice(train.folder_crops(str(tmp_path), 16, 3, seed=1), 2))
  assert a[0].shape == (3, 16, 16, 3) and a[0].dtype == np.uint8
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  from dcic_jax.errors import UserError
  with pytest.raises(UserError, match="no image of at least"):
    next(train.folder_crops(str(tmp_path), 64, 1, seed=0))


def test_a_cpu_batch_trains_as_concurrent_slices_with_the_same_step(monkeypatch):
  """The step runs a CPU batch as `cpu_batch_parts` slices (concurrent there), with the whole
  batch's loss and gradient (no dropout here: with it, each slice draws its own mask)."""
  import jax.numpy as jnp
  import optax
  from dcic_jax.diffusion import unet
  cfg = unet.UNetConfig(**{**TINY_UNET, "dropout": 0.0, "remat": False})
  schedule = schedules.make_schedule("linear", 1000)
  state = train.create_train_state(cfg, optax.sgd(0.1), jax.random.key(0))
  x0 = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)
  metrics = {}
  for parts in (1, 2):
    monkeypatch.setattr(unet, "cpu_batch_parts", lambda b, parts=parts: parts)
    step = jax.jit(train.make_train_step(unet.UNet(cfg), optax.sgd(0.1), schedule, 0.9))
    metrics[parts] = jax.device_get(step(state, x0, jax.random.key(1))[1])
  np.testing.assert_allclose(metrics[2]["loss"], metrics[1]["loss"], rtol=1e-6)
  np.testing.assert_allclose(metrics[2]["grad_norm"], metrics[1]["grad_norm"], rtol=1e-5)
