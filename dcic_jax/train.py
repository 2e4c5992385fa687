"""Rate–distortion training of the base codecs (Ballé et al. 2018; CompressAI's recipe).

loss = lmbda · 255² · MSE(x, x_hat) + bpp_estimate + aux_weight · quantile_aux_loss, with x in [0, 1].
Data-parallel `jit` over a 1-D "data" mesh of every global device. Multi-host (after
`sharding.initialize()`): each host crops and loads only its rows of every global batch
(`host_crops`, the same batches as one process would draw) and feeds them with
`jax.make_array_from_process_local_data`; the state is replicated, so every host holds the same
parameters. Orbax checkpoints in `<workdir>/checkpoints` (a shared file system on several hosts:
orbax writes each array once, from process 0, and every host restores), and a re-run resumes from
the last one (a finished run does nothing again).
"""
import functools
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

from dcic_jax import checkpointing, sharding
from dcic_jax.codecs import codec as codec_lib
from dcic_jax.codecs.registry import codec_kwargs, make_codec
from dcic_jax.data.images import list_images, load_rgb
from dcic_jax.data.input_pipeline import crop_draws, cut, prefetch
from dcic_jax.dcic import calibrate
from dcic_jax.errors import UserError
from dcic_jax.train_log import ScalarLog


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: dict
  opt_state: optax.OptState


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


def lr_schedule(tc) -> optax.Schedule:
  """Linear warm-up from 0 to `lr`, then cosine decay to `lr * final_lr_frac` at `steps`."""
  return optax.warmup_cosine_decay_schedule(
      0.0, tc.lr, max(tc.warmup_steps, 1), max(tc.steps, tc.warmup_steps + 1), tc.lr * tc.final_lr_frac)


def make_optimizer(grad_clip: float, aux_lr: float, lr) -> optax.GradientTransformation:
  """Clipped Adam at rate `lr` for the model; a separate fixed-rate Adam for the quantiles.

  `lr` may be a traced scalar: the train step takes the scheduled rate of its step as an
  argument, so one compiled step serves every schedule, step count and λ of an architecture
  (a ladder of rate points trains after a single compile). The quantile aux loss is large and
  unrelated to the RD loss: keeping it out of the clipped optimiser stops it from shrinking the
  model's gradients (CompressAI also uses two).
  """
  main = optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr))
  label = lambda params: flax.traverse_util.path_aware_map(
      lambda path, _: "aux" if path[-1] == "quantiles" else "main", params)
  return optax.multi_transform({"main": main, "aux": optax.adam(aux_lr)}, label)


def _warm_start(params, init_from: str):
  """Copy every parameter whose path and shape match from a previous run (e.g. a neighbouring λ)."""
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


def host_crops(folder, crop: int, batch_size: int, rows: slice, seed: int, start: int = 0):
  """This host's rows of the batches `input_pipeline.random_crops` draws, loading only their images.

  The random draws of every row are replayed (cheap), so the global batch of step s is the same
  for any number of hosts; pixels are read and copied only for `rows`. Image sizes come from the
  file headers, so a host never decodes an image none of its rows picks.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  paths = list_images(folder)
  sizes = []
  for path in paths:
    with Image.open(path) as im:
      sizes.append((im.height, im.width))
  small = [p.name for p, (h, w) in zip(paths, sizes) if min(h, w) < crop]
  if small:
    raise UserError(f"images smaller than the {crop}px crop in {folder}: {', '.join(small[:5])}")
  load = functools.lru_cache(maxsize=64)(lambda k: load_rgb(paths[k]))
  step = start
  while True:
    draws = crop_draws(sizes, crop, batch_size, seed, step)[rows]
    yield np.array([cut(load(k), crop, i, j, flip) for k, i, j, flip in draws], np.uint8).reshape(
        len(draws), crop, crop, 3)
    step += 1


@functools.lru_cache(maxsize=4)
def _jitted_train_step(module, grad_clip: float, aux_lr: float, aux_weight: float, mesh, loss_fn):
  """The jitted step `(state, x_uint8, key, lmbda, lr) -> (state, metrics)`, cached so that
  every later run with this architecture in the process (resumes, tests, a ladder of λ with
  any step counts) reuses one compile: λ and the learning rate are traced arguments. The step's
  noise key is `fold_in(key, state.step)`, drawn on the device: done eagerly on the host it is
  one more dispatch per step, in series with the step."""

  def train_step(state: TrainState, x_uint8, key, lmbda, lr):
    rng = jax.random.fold_in(key, state.step)
    optimizer = make_optimizer(grad_clip, aux_lr, lr)
    x = x_uint8.astype(jnp.float32) / 255.0
    grad_fn = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
    (_, metrics), grads = grad_fn(module, state.params, x, rng, lmbda, aux_weight)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return jax.jit(train_step, donate_argnums=0,
                 out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)))


@functools.lru_cache(maxsize=4)
def _jitted_init(module):
  """`module.init`, compiled once per architecture: a ladder's rate points share it."""
  return jax.jit(module.init)


def initial_state(module, tc, key, mesh) -> TrainState:
  """Step-0 state (warm-started from `tc.init_from` if set), replicated on `mesh`."""
  x0 = jnp.zeros((1, tc.crop_size, tc.crop_size, 3))
  params = _jitted_init(module)(key, x0)["params"]  # one compile, not one per op
  if tc.init_from:
    params = _warm_start(params, tc.init_from)
  # Strong types: weakly typed leaves from init would come back strong from the first step and
  # make the second step compile again.
  params = jax.tree.map(lambda a: jax.lax.convert_element_type(a, a.dtype), params)
  optimizer = make_optimizer(tc.grad_clip, tc.aux_lr, tc.lr)  # the state's shape only
  state = TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=optimizer.init(params))
  return jax.device_put(state, sharding.replicated(mesh))  # same values on every host


def train_codec(config: ml_collections.ConfigDict, workdir: str):
  """Train (or resume) the codec of `config`; returns (module, params).

  Multi-host: every process calls it with the same config; the returned params are replicated
  global arrays (`np.asarray` works on every host).
  """
  tc = config.train_codec
  module = make_codec(config.codec.id, **codec_kwargs(config))
  if tc.batch_size % jax.device_count():
    raise UserError(f"train_codec.batch_size={tc.batch_size} must be a multiple of the {jax.device_count()} devices")
  mesh = sharding.data_mesh()
  is_main = jax.process_index() == 0

  root = jax.random.PRNGKey(config.seed)
  init_key, train_key = jax.random.split(root)
  state = initial_state(module, tc, init_key, mesh)

  mgr = checkpointing.train_manager(pathlib.Path(workdir) / "checkpoints", 2, tc.ckpt_every)
  if mgr.latest_step() is not None:  # every host restores the same replicated state
    state = checkpointing.resume(mgr, state, workdir)
    if is_main:
      print(f"resumed codec training from step {int(state.step)} in {workdir}")
  start = int(state.step)
  if start >= tc.steps:
    mgr.close()
    return module, state.params

  train_step = _jitted_train_step(module, tc.grad_clip, tc.aux_lr, tc.aux_weight, mesh, rd_loss)
  lrs = np.asarray(lr_schedule(tc)(np.arange(tc.steps)), np.float32)  # the step's rate, host side
  lmbda = np.float32(tc.lmbda)
  rows = sharding.host_rows(tc.batch_size, mesh)
  crops = host_crops(tc.data_dir, tc.crop_size, tc.batch_size, rows, seed=config.seed, start=start)
  batches = prefetch(lambda: sharding.global_batch(next(crops), mesh))  # host work overlaps the step
  log = ScalarLog(os.path.join(workdir, "tb"), "train")
  bar = tqdm.trange(start, tc.steps, initial=start, total=tc.steps, desc=f"train {config.codec.id}",
                    dynamic_ncols=True, disable=not is_main)
  try:
    for step in bar:
      state, metrics = train_step(state, next(batches), train_key, lmbda, lrs[step])
      if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
        m = jax.device_get(metrics)  # replicated: the same on every host, so all stop together
        if not np.isfinite(m["loss"]):
          raise FloatingPointError(f"codec training diverged at step {step + 1}: loss={m['loss']}")
        log.write(step + 1, m)
        bar.set_postfix(rd=f"{m['rd']:.3f}", bpp=f"{m['bpp']:.3f}", psnr=f"{m['psnr']:.2f}", aux=f"{m['aux']:.1f}")
      mgr.save(step + 1, args=ocp.args.StandardSave(state))  # collective: every host calls it
    if mgr.latest_step() != tc.steps:
      mgr.save(tc.steps, args=ocp.args.StandardSave(state), force=True)
  finally:
    batches.close()
    mgr.wait_until_finished()
    mgr.close()
    log.close()
  return module, state.params


def export_trained(config, params, out_dir, calibration_images: list[np.ndarray] | None = None) -> codec_lib.Codec:
  """Fit z's quantiles (`codecs.codec.fit_quantiles`), round the parameters to their stored form
  (`checkpointing.storage_form`), build the tables of that rounded codec, calibrate its DCIC
  penalty weights (`dcic.calibrate`, on `calibration_images` or the shipped crops), write the
  export directory."""
  kwargs = codec_kwargs(config)
  params, aux_trained, aux_fitted = codec_lib.fit_quantiles(config.codec.id, kwargs, params)
  stored = checkpointing.storage_form(params)
  codec = codec_lib.make_codec_from_params(config.codec.id, kwargs, checkpointing.from_storage(stored))
  meta = dict(lmbda=config.train_codec.lmbda, steps=config.train_codec.steps,
              crop_size=config.train_codec.crop_size, data_dir=config.train_codec.data_dir,
              aux_loss=dict(trained=aux_trained, fitted=aux_fitted),
              dcic=calibrate.calibrate_codec(codec, calibration_images))
  checkpointing.save_export(out_dir, codec.codec_id, kwargs, stored, codec.tables, meta,
                            codec.fingerprint.hex())
  return codec


def train_and_export(config: ml_collections.ConfigDict, workdir: str, export_dir: str) -> str:
  """`train_codec`, then process 0 writes the export (`export_trained`: tables and DCIC
  calibration) while the others wait; returns `export_dir`."""
  _, params = train_codec(config, workdir)
  if jax.process_index() == 0:
    export_trained(config, params, export_dir)
  sharding.sync("train_and_export")
  return export_dir
