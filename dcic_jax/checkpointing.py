"""Trained-codec files: an export directory holds everything a decoder needs, bit for bit.

    <dir>/codec.json   codec id, config, training facts (λ, steps), fingerprint
    <dir>/state/       orbax checkpoint: {"params": ..., "tables": ...}

Trained exports are stored compactly (`storage_form`): the kernels of the hyper transforms h_a/h_s
as int8 codes with one float32 scale per output channel, every other kernel as float16, the rest
as float32. The exported codec *is* the stored one: its coding tables and fingerprint are computed
from `from_storage(storage_form(params))`, and loading computes exactly those float32 values again.
Imports (CompressAI weights) and other float32 trees are stored as they are.

Why int8 only for h_a/h_s: they predict the entropy model's σ (and μ), not pixels. For a scale-only
codec (bmshj2018) their rounding moves the rate alone: +0.04% bpp at identical PSNR on 4 Kodak
images with bmshj2018-q4, where int8 everywhere costs 0.03 dB (experiments/storage_precision.py).
For a mean-scale codec μ also sets the quantisation offset, ŷ = round(y − μ) + μ, so a few latents
land one step away and x̂_b moves a little either way (docs/benchmarks.md, "Shipped CNN codecs on Kodak"). It saves
22% of a CNN export.
"""
import json
import pathlib
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dcic_jax.errors import UserError


def _is_export(path: pathlib.Path) -> bool:
  return (path / "codec.json").is_file()


INT8_MODULES = ("h_a", "h_s")  # top-level parameter names whose kernels are stored as int8
INT8_CODES, INT8_SCALE = "int8_codes", "int8_scale"  # a stored int8 kernel: {INT8_CODES: q, INT8_SCALE: s}


def int8_kernel(w: np.ndarray) -> dict:
  """Symmetric per-output-channel int8 codes of a kernel [..., C_out]: w ≈ q · s, |q| ≤ 127."""
  w = np.asarray(w, np.float32)
  if not np.all(np.isfinite(w)):
    raise ValueError("cannot store a kernel with non-finite values")
  s = np.abs(w).reshape(-1, w.shape[-1]).max(axis=0) / np.float32(127)
  s = np.where(s > 0, s, np.float32(1)).astype(np.float32)
  q = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
  return {INT8_CODES: q, INT8_SCALE: s}


def storage_form(params) -> dict:
  """The tree an export stores (see the module docstring); `from_storage` turns it into the codec.
  Idempotent: a tree already in storage form comes back unchanged, so a stored form carried
  elsewhere (e.g. `train_ladder.py --params-npz`) exports to the very same codec."""
  def store(path, v):
    if path[-1] == INT8_CODES:
      return np.asarray(v, np.int8)
    if path[-1] == INT8_SCALE:
      return np.asarray(v, np.float32)
    if path[-1] != "kernel":
      return np.asarray(v, np.float32)
    if path[0].startswith(INT8_MODULES):
      return int8_kernel(v)
    return np.asarray(v, np.float16)
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: store(k, v) for k, v in flat.items()})


def from_storage(stored) -> dict:
  """float32 parameters of a stored tree: int8 codes times their scales, float16/32 widened."""
  flat = flax.traverse_util.flatten_dict(stored)
  out = {}
  for k, v in flat.items():
    if k[-1] == INT8_CODES:
      out[k[:-1]] = np.asarray(v, np.int8).astype(np.float32) * np.asarray(flat[k[:-1] + (INT8_SCALE,)], np.float32)
    elif k[-1] != INT8_SCALE:
      out[k] = np.asarray(v, np.float32)
  return flax.traverse_util.unflatten_dict(out)


def train_manager(directory, max_to_keep: int, save_interval_steps: int = 1) -> ocp.CheckpointManager:
  """The orbax manager of a training run's checkpoints (both trainers): `save(step)` on steps that
  are not multiples of `save_interval_steps` does nothing, so a trainer may call it every step."""
  return ocp.CheckpointManager(
      pathlib.Path(directory).absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           save_interval_steps=save_interval_steps))


def resume(manager: ocp.CheckpointManager, target, workdir):
  """Restores the latest step of `manager` into `target`'s structure (a state or its shapes).

  A workdir written by a version of dcic_jax with another train state (other optimiser or
  fields) cannot resume: one clear line instead of orbax's tree-mismatch dump.
  """
  step = manager.latest_step()
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(target))
  except ValueError as e:
    if "tree structures do not match" not in str(e):
      raise
    raise UserError(f"cannot resume from {workdir}: its step-{step} checkpoint holds another train "
                    "state layout (written by another dcic_jax version?); use a fresh --workdir, "
                    "or start from its parameters with init_from") from None


def local_checkpointer() -> ocp.StandardCheckpointer:
  """A checkpointer for this process alone. Exports are small host-side files that one process
  writes or reads on its own; orbax's default would wait at a barrier for every process of a
  multi-host job and hang when only one of them saves or loads."""
  me = jax.process_index()
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"export-{me}"))


def save_export(path, codec_id: str, codec_config: dict, stored, tables: dict, meta: dict, fingerprint: str):
  """Write an export directory atomically (temp dir + rename). `stored`: the parameters as they are
  to be kept, a float tree or a `storage_form`; the fingerprint is that of `from_storage(stored)`."""
  path = pathlib.Path(path).absolute()
  tmp = path.with_name(path.name + ".tmp")
  if tmp.exists():
    shutil.rmtree(tmp)
  tmp.mkdir(parents=True)
  with local_checkpointer() as ckptr:
    ckptr.save(tmp / "state", {"params": stored, "tables": tables})
  info = dict(codec_id=codec_id, config=codec_config, fingerprint=fingerprint, **meta)
  (tmp / "codec.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
  if path.exists():
    shutil.rmtree(path)
  tmp.rename(path)


def load_export(path):
  """(info dict, float32 params, tables of numpy arrays) from an export directory."""
  path = pathlib.Path(path).absolute()
  if not _is_export(path):
    raise UserError(f"not a codec checkpoint: {path} (expected {path / 'codec.json'}; "
                    "shipped ones are in checkpoints/, or train one with dcic_jax.main)")
  info = json.loads((path / "codec.json").read_text())
  with local_checkpointer() as ckptr:
    state = ckptr.restore(path / "state")
  params = from_storage(state["params"])
  tables = jax.tree.map(np.asarray, state["tables"])
  return info, params, tables


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


def load_params_any(path) -> dict:
  """Parameters from an export directory or from a training workdir's last checkpoint."""
  path = pathlib.Path(path)
  if _is_export(path):
    return load_export(path)[1]
  params = restore_params(path)
  if params is None:
    raise UserError(f"no codec checkpoint in {path} (neither an export with codec.json nor a workdir with checkpoints/)")
  return params
