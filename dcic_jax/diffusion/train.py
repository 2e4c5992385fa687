"""Training the unconditional pixel-space diffusion prior ε_θ (DDPM / ADM recipe).

Ho et al. 2020 (L_simple, Adam, warm-up, EMA of the weights, dropout, gradient clipping);
Nichol & Dhariwal 2021 (cosine schedule option); Dhariwal & Nichol 2021 (ADM architecture).

`train_prior(config, workdir, images)` is the entry point: one jitted step with the batch sharded
over a 1-D "data" mesh and the state replicated, the state donated, per-step randomness
`fold_in(key(seed), step)` (so a resumed run draws the same t and ε as an uninterrupted one),
orbax checkpoints under `<workdir>/prior/checkpoints` with resume from the latest step,
TensorBoard scalars under `<workdir>/prior/tensorboard`, and a NaN/inf loss stops the run with
the step number. Train a prior (CPU: slow; a GPU is the place) with e.g.

  python -m dcic_jax.diffusion.train \
      --images=/path/to/training/images --workdir=workdir/prior64 --crop=64 --batch=64 \
      --steps=200000
"""
import dataclasses
import functools
import os
from typing import Any, Iterator

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

from dcic_jax import checkpointing, io, sharding
from dcic_jax.data.input_pipeline import load_folder, prefetch, random_crops
from dcic_jax.errors import UserError
from dcic_jax.diffusion import losses
from dcic_jax.diffusion.schedules import Schedule, make_schedule
from dcic_jax.diffusion.prior_config import default_prior_config
from dcic_jax.diffusion.prior_files import export_prior, latest_step, prior_dir
from dcic_jax.diffusion.unet import UNet, UNetConfig, apply_by_parts, init_params
from dcic_jax.train_log import ScalarLog


class TrainState(flax.struct.PyTreeNode):
  """Everything a resumed run needs, replicated on every device."""
  step: jax.Array          # [] int32, optimiser steps done
  params: Any
  ema_params: Any
  opt_state: optax.OptState


def make_optimizer(train_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Clip by global norm, then AdamW with a linear warm-up to a constant learning rate.

  The update runs on one flat vector (`optax.flatten`): a few large kernels instead of a few
  per parameter array, which compiles faster and launches fewer kernels; the maths is the same.
  """
  return optax.flatten(optax.chain(
      optax.clip_by_global_norm(train_cfg.grad_clip),
      optax.adamw(learning_rate_schedule(train_cfg), b1=train_cfg.adam_b1, b2=train_cfg.adam_b2,
                  weight_decay=train_cfg.weight_decay)))


def learning_rate_schedule(train_cfg: ml_collections.ConfigDict) -> optax.Schedule:
  return optax.linear_schedule(0.0, train_cfg.learning_rate, max(train_cfg.warmup_steps, 1))


def create_train_state(cfg: UNetConfig, tx: optax.GradientTransformation,
                       key: jax.Array) -> TrainState:
  params = init_params(cfg, key)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params))


def make_train_step(model: UNet, tx: optax.GradientTransformation, schedule: Schedule,
                    ema_decay: float):
  """Pure `train_step(state, x0_BHWC, key) -> (state, metrics)`; the step's key is
  `fold_in(key, state.step)`."""
  alphas_cumprod_T = jnp.asarray(schedule.alphas_cumprod, jnp.float32)

  def apply_fn(params, x_t, t_B, dropout_key):
    # On a CPU the batch's slices run concurrently (`unet.apply_by_parts`), each with its own
    # dropout key: 0.83x the time of the default small configuration's step.
    def apply(x, t, i):
      key = dropout_key if i is None else jax.random.fold_in(dropout_key, i)
      return model.apply({"params": params}, x, t, train=True, rngs={"dropout": key})
    return apply_by_parts(apply, x_t, t_B)

  def train_step(state: TrainState, x0_BHWC: jax.Array,
                 key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    step_key = jax.random.fold_in(key, state.step)
    grad_fn = jax.value_and_grad(losses.eps_loss, argnums=1, has_aux=True)
    (_, metrics), grads = grad_fn(apply_fn, state.params, x0_BHWC, step_key, alphas_cumprod_T)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p,
                              state.ema_params, params)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
    return TrainState(step=state.step + 1, params=params, ema_params=ema_params,
                      opt_state=opt_state), metrics

  return train_step


def to_model_range(batch: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] → float32 [−1, 1]; float batches are taken to be in [−1, 1] already."""
  if batch.dtype == np.uint8:
    return batch.astype(np.float32) / 127.5 - 1.0
  return np.asarray(batch, np.float32)


def folder_crops(folder: str, crop_size: int, batch_size: int, seed: int,
                 start: int = 0) -> Iterator[np.ndarray]:
  """Endless uint8 [B, crop, crop, 3] random-crop batches of the images in `folder` that are at
  least crop_size on each side (the codec's pipeline: `data/input_pipeline.py`), beginning with
  batch `start` (a resumed run passes its step, so it sees the batches an unbroken run would)."""
  images = [a for a in load_folder(folder) if min(a.shape[:2]) >= crop_size]
  if not images:
    raise UserError(f"no image of at least {crop_size}x{crop_size} in {folder!r}")
  return random_crops(images, crop_size, batch_size, seed, start)


def _check_finite(step: int, metrics: dict[str, Any]) -> dict[str, float]:
  values = {k: float(v) for k, v in metrics.items()}
  for name in ("loss", "grad_norm"):
    if not np.isfinite(values[name]):
      raise FloatingPointError(f"non-finite {name} ({values[name]}) at training step {step}")
  return values


def train_prior(config: ml_collections.ConfigDict, workdir: str,
                images: Iterator[np.ndarray]) -> TrainState:
  """Train (or resume training) the prior described by `config.prior` on `images`.

  `images` yields this process's share of each global batch, [B_local, H, W, C] uint8 or float
  in [−1, 1]. Returns the final replicated state (its `ema_params` are the ones to sample with).
  """
  prior = config.prior
  tc = prior.train
  cfg = UNetConfig(**prior.unet)
  lr_schedule = learning_rate_schedule(tc)

  n = jax.device_count()
  if tc.batch_size % n:
    raise ValueError(f"batch_size {tc.batch_size} is not divisible by the {n} devices")
  mesh = sharding.data_mesh()

  key = jax.random.key(tc.seed)
  init_key, step_key = jax.random.split(key)
  init_fn, train_step = _jitted_fns(cfg, prior.schedule, prior.num_timesteps,
                                    _optimizer_key(tc), tc.ema_decay, mesh)

  out_dir = prior_dir(workdir)
  manager = checkpointing.train_manager(os.path.join(out_dir, "checkpoints"), tc.max_to_keep)
  latest = manager.latest_step()
  if latest is None:
    state = init_fn(init_key)
  else:  # resume: restore into the replicated layout of a fresh state
    state = checkpointing.resume(manager, jax.eval_shape(init_fn, init_key), out_dir)
  start = int(state.step)
  is_main = jax.process_index() == 0
  if is_main:
    io.write_json(os.path.join(out_dir, "prior_config.json"),
                  {"unet": dataclasses.asdict(cfg), "schedule": prior.schedule,
                   "num_timesteps": prior.num_timesteps}, indent=2, make_parents=True)

  log = ScalarLog(os.path.join(out_dir, "tensorboard"), "prior",
                  jsonl=os.path.join(out_dir, "metrics.jsonl"))
  bar = tqdm.tqdm(total=tc.num_steps, initial=start, desc="prior",
                  disable=not (is_main and tc.progress_bar))
  pending = None  # (step, metrics) of the last dispatched step, checked one step late

  def next_batch():
    local = to_model_range(next(images))
    if local.shape[0] * jax.process_count() != tc.batch_size:
      raise ValueError(f"batch of {local.shape[0] * jax.process_count()} images, config "
                       f"batch_size {tc.batch_size}")
    return sharding.global_batch(local, mesh)

  batches = prefetch(next_batch)  # the host's crops overlap the device's step
  try:
    for step in range(start, tc.num_steps):
      state, metrics = train_step(state, next(batches), step_key)
      if pending is not None:
        _log(log, bar, *pending, lr_schedule, tc.log_every)
      pending = (step, metrics)
      bar.update(1)
      if (step + 1) % tc.checkpoint_every == 0 or step + 1 == tc.num_steps:
        _log(log, bar, *pending, lr_schedule, tc.log_every)  # never save a diverged state
        pending = None
        manager.save(step + 1, args=ocp.args.StandardSave(state))
    if pending is not None:
      _log(log, bar, *pending, lr_schedule, tc.log_every)
  finally:
    batches.close()
    manager.wait_until_finished()
    manager.close()
    bar.close()
    log.close()
  return state


_OPTIMIZER_FIELDS = ("learning_rate", "warmup_steps", "grad_clip", "weight_decay", "adam_b1",
                     "adam_b2")


def _optimizer_key(tc: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
  return tuple((name, tc[name]) for name in _OPTIMIZER_FIELDS)


@functools.lru_cache(maxsize=8)
def _jitted_fns(cfg: UNetConfig, schedule_kind: str, num_timesteps: int,
                optimizer_key: tuple[tuple[str, Any], ...], ema_decay: float,
                mesh: jax.sharding.Mesh):
  """Jitted (init, train_step), cached so that repeated `train_prior` calls in one process
  (resuming, notebooks, tests) reuse the compiled step."""
  tx = make_optimizer(ml_collections.ConfigDict(dict(optimizer_key)))
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  init_fn = jax.jit(lambda k: create_train_state(cfg, tx, k), out_shardings=replicated)
  step = make_train_step(UNet(cfg), tx, make_schedule(schedule_kind, num_timesteps), ema_decay)
  train_step = jax.jit(step, in_shardings=(replicated, batch_sharding, replicated),
                       out_shardings=(replicated, replicated), donate_argnums=(0,))
  return init_fn, train_step


def _log(log: ScalarLog, bar, step: int, metrics, lr_schedule, log_every: int) -> None:
  values = _check_finite(step, metrics)
  if (step + 1) % log_every == 0:
    values["learning_rate"] = float(lr_schedule(step))
    log.write(step + 1, values)
    bar.set_postfix(loss=f"{values['loss']:.4f}")


def _ints(text: str) -> tuple[int, ...]:
  return tuple(int(v) for v in text.split(",") if v.strip())


def main(argv: list[str] | None = None) -> int:
  """Minimal CLI for training a prior on a folder of images (see the module docstring)."""
  from dcic_jax.errors import exit_code  # pylint: disable=g-import-not-at-top
  return exit_code(_train_from_args, argv)


def _train_from_args(argv) -> None:
  from dcic_jax.argtypes import Parser  # pylint: disable=g-import-not-at-top
  defaults = default_prior_config()
  p = Parser(prog="python -m dcic_jax.diffusion.train", description=__doc__.splitlines()[0])
  p.add_argument("--images", required=True, help="folder of PNG/JPEG training images")
  p.add_argument("--workdir", required=True)
  p.add_argument("--crop", type=int, default=64)
  p.add_argument("--steps", type=int, default=200_000)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--seed", type=int, required=True, help="PRNG seed of init, crops, t and eps")
  p.add_argument("--base-channels", type=int, default=defaults.unet.base_channels)
  p.add_argument("--channel-mult", type=_ints, default=defaults.unet.channel_mult)
  p.add_argument("--num-res-blocks", type=int, default=defaults.unet.num_res_blocks)
  p.add_argument("--attention-levels", type=_ints, default=defaults.unet.attention_levels,
                 help="comma-separated levels with attention ('' for the middle block only)")
  p.add_argument("--num-heads", type=int, default=defaults.unet.num_heads)
  p.add_argument("--norm-groups", type=int, default=32)
  p.add_argument("--dropout", type=float, default=defaults.unet.dropout)
  p.add_argument("--lr", type=float, default=defaults.train.learning_rate)
  p.add_argument("--warmup", type=int, default=defaults.train.warmup_steps)
  p.add_argument("--ema", type=float, default=defaults.train.ema_decay)
  p.add_argument("--log-every", type=int, default=defaults.train.log_every)
  p.add_argument("--checkpoint-every", type=int, default=defaults.train.checkpoint_every)
  p.add_argument("--export", default="", help="after training, write the EMA weights here "
                 "(`export_prior`; e.g. checkpoints/prior)")
  args = p.parse_args(argv)
  config = ml_collections.ConfigDict({"prior": defaults})
  config.prior.unet.update(base_channels=args.base_channels, channel_mult=args.channel_mult,
                           num_res_blocks=args.num_res_blocks,
                           attention_levels=args.attention_levels, num_heads=args.num_heads,
                           norm_groups=args.norm_groups, dropout=args.dropout)
  config.prior.train.update(crop_size=args.crop, num_steps=args.steps, batch_size=args.batch,
                            seed=args.seed, learning_rate=args.lr, warmup_steps=args.warmup,
                            ema_decay=args.ema, log_every=args.log_every,
                            checkpoint_every=args.checkpoint_every)
  local_batch = args.batch // jax.process_count()
  train_prior(config, args.workdir,
              folder_crops(args.images, args.crop, local_batch, args.seed + jax.process_index(),
                           start=latest_step(args.workdir)))
  if args.export and jax.process_index() == 0:
    print(f"exported the prior to {export_prior(args.workdir, args.export)}")


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  sys.exit(main())
