"""Rate–distortion training of the base codecs (Ballé et al. 2018; CompressAI's recipe).

loss = lmbda · 255² · MSE(x, x_hat) + bpp_estimate + aux_weight · quantile_aux_loss, with x in [0, 1].
Data-parallel `jit` over a 1-D "data" mesh; orbax checkpoints in `<workdir>/checkpoints`, and a
re-run resumes from the last one (a finished run does nothing again).
"""
import os
import pathlib

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

from dcic_jax import sharding
from dcic_jax.codecs.registry import make_codec
from dcic_jax.data.input_pipeline import load_folder, random_crops
from dcic_jax.errors import UserError


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: dict
  opt_state: optax.OptState


def codec_kwargs(config) -> dict:
  return {k: v for k, v in config.codec.items() if k != "id"}


def rd_loss(module, params, x_BHW3, rng, lmbda: float, aux_weight: float):
  """Per-batch RD loss and metrics; bits normalised by the batch's pixel count."""
  out = module.apply({"params": params}, x_BHW3, rng, True)
  num_pixels = x_BHW3.shape[0] * x_BHW3.shape[1] * x_BHW3.shape[2]
  bits = {k: -jnp.sum(jnp.log2(v)) for k, v in out["likelihoods"].items()}
  bpp = (bits["y"] + bits["z"]) / num_pixels
  mse = jnp.mean((out["x_hat"] - x_BHW3) ** 2)
  aux = module.apply({"params": params}, method="aux_loss")
  rd = lmbda * 255.0**2 * mse + bpp
  loss = rd + aux_weight * aux
  return loss, dict(loss=loss, rd=rd, bpp=bpp, mse=mse, psnr=-10.0 * jnp.log10(mse), aux=aux)


def make_optimizer(tc) -> optax.GradientTransformation:
  """Adam with warm-up + cosine decay for the model; a separate fixed-rate Adam for the quantiles.

  The quantile aux loss is large and unrelated to the RD loss: keeping it out of the clipped,
  scheduled optimiser stops it from shrinking the model's gradients (CompressAI also uses two).
  """
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, tc.lr, max(tc.warmup_steps, 1), max(tc.steps, tc.warmup_steps + 1), tc.lr * tc.final_lr_frac)
  main = optax.chain(optax.clip_by_global_norm(tc.grad_clip), optax.adam(schedule))
  label = lambda params: flax.traverse_util.path_aware_map(
      lambda path, _: "aux" if path[-1] == "quantiles" else "main", params)
  return optax.multi_transform({"main": main, "aux": optax.adam(tc.aux_lr)}, label)


def _checkpoint_manager(workdir, every: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      pathlib.Path(workdir).absolute() / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=every, create=True))


def restore_params(workdir) -> dict | None:
  """Parameters of the last checkpoint in a training workdir (None if there is none)."""
  path = pathlib.Path(workdir).absolute() / "checkpoints"
  if not path.is_dir():
    return None
  with ocp.CheckpointManager(path) as mgr:
    step = mgr.latest_step()
    if step is None:
      return None
    restored = mgr.restore(step, args=ocp.args.StandardRestore())
  return jax.tree.map(jnp.asarray, restored["params"])


def _warm_start(params, init_from: str):
  """Copy every parameter whose path and shape match from a previous run (e.g. a neighbouring λ)."""
  from dcic_jax import checkpointing  # local: avoids an import cycle
  src = checkpointing.load_params_any(init_from)
  flat_src = flax.traverse_util.flatten_dict(src)
  flat = flax.traverse_util.flatten_dict(params)
  copied = 0
  for k, v in flat.items():
    if k in flat_src and flat_src[k].shape == v.shape:
      flat[k] = jnp.asarray(flat_src[k], v.dtype)
      copied += 1
  print(f"warm start from {init_from}: {copied}/{len(flat)} parameter arrays copied")
  return flax.traverse_util.unflatten_dict(flat)


def train_codec(config: ml_collections.ConfigDict, workdir: str):
  """Train (or resume) the codec of `config`; returns (module, params)."""
  tc = config.train_codec
  module = make_codec(config.codec.id, **codec_kwargs(config))
  if tc.batch_size % jax.device_count():
    raise UserError(f"train_codec.batch_size={tc.batch_size} must be a multiple of the {jax.device_count()} devices")
  mesh = sharding.data_mesh()
  optimizer = make_optimizer(tc)

  root = jax.random.PRNGKey(config.seed)
  init_key, train_key = jax.random.split(root)
  x0 = jnp.zeros((1, tc.crop_size, tc.crop_size, 3))
  params = jax.jit(module.init)(init_key, x0)["params"]  # one compile, not one per op
  if tc.init_from:
    params = _warm_start(params, tc.init_from)
  state = TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=optimizer.init(params))
  state = jax.device_put(state, sharding.replicated(mesh))

  mgr = _checkpoint_manager(workdir, tc.ckpt_every)
  if mgr.latest_step() is not None:
    state = mgr.restore(mgr.latest_step(), args=ocp.args.StandardRestore(state))
    print(f"resumed codec training from step {int(state.step)} in {workdir}")
  start = int(state.step)
  if start >= tc.steps:
    mgr.close()
    return module, state.params

  def train_step(state: TrainState, x_uint8, rng):
    x = x_uint8.astype(jnp.float32) / 255.0
    grad_fn = jax.value_and_grad(rd_loss, argnums=1, has_aux=True)
    (_, metrics), grads = grad_fn(module, state.params, x, rng, tc.lmbda, tc.aux_weight)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  train_step = jax.jit(train_step, donate_argnums=0,
                       out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)))
  images = load_folder(tc.data_dir, min_side=tc.crop_size)
  batches = random_crops(images, tc.crop_size, tc.batch_size, seed=config.seed, start=start)
  from tensorboardX import SummaryWriter
  writer = SummaryWriter(os.path.join(workdir, "tb"))
  bar = tqdm.trange(start, tc.steps, initial=start, total=tc.steps, desc=f"train {config.codec.id}",
                    dynamic_ncols=True)
  for step in bar:
    batch = sharding.shard_batch(next(batches), mesh)
    state, metrics = train_step(state, batch, jax.random.fold_in(train_key, step))
    if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
      m = jax.device_get(metrics)
      if not np.isfinite(m["loss"]):
        raise FloatingPointError(f"codec training diverged at step {step + 1}: loss={m['loss']}")
      for k, v in m.items():
        writer.add_scalar(f"train/{k}", float(v), step + 1)
      bar.set_postfix(rd=f"{m['rd']:.3f}", bpp=f"{m['bpp']:.3f}", psnr=f"{m['psnr']:.2f}", aux=f"{m['aux']:.1f}")
    mgr.save(step + 1, args=ocp.args.StandardSave(state))
  if mgr.latest_step() != tc.steps:
    mgr.save(tc.steps, args=ocp.args.StandardSave(state), force=True)
  mgr.wait_until_finished()
  mgr.close()
  writer.close()
  return module, state.params
