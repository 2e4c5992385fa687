"""Trained-codec files: an export directory holds everything a decoder needs, bit for bit.

    <dir>/codec.json   codec id, config, training facts (λ, steps), fingerprint
    <dir>/state/       orbax checkpoint: {"params": ..., "tables": ...}

Trained exports round their conv kernels to float16 (halves the shipped size); the exported
codec *is* the rounded one: its coding tables and fingerprint are computed after the rounding.
Kernels that are not float16-exact (imports) are stored as float32.
"""
import json
import pathlib
import shutil

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from dcic_jax.errors import UserError


def _is_export(path: pathlib.Path) -> bool:
  return (path / "codec.json").is_file()


def round_kernels_f16(params) -> dict:
  """Round conv kernels through float16 (storage precision); other parameters stay float32."""
  flat = flax.traverse_util.flatten_dict(params)
  out = {k: (np.asarray(v, np.float16).astype(np.float32) if k[-1] == "kernel" else np.asarray(v, np.float32))
         for k, v in flat.items()}
  return flax.traverse_util.unflatten_dict(out)


def _to_storage(params) -> dict:
  """Kernels go to float16 where that is lossless (exports rounded by `round_kernels_f16`);
  anything else (e.g. imported CompressAI weights) is stored exactly as float32."""
  def store(path, v):
    v = np.asarray(v)
    if path[-1] == "kernel" and np.array_equal(v.astype(np.float16).astype(v.dtype), v):
      return v.astype(np.float16)
    return v
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: store(k, v) for k, v in flat.items()})


def local_checkpointer() -> ocp.StandardCheckpointer:
  """A checkpointer for this process alone. Exports are small host-side files that one process
  writes or reads on its own; orbax's default would wait at a barrier for every process of a
  multi-host job and hang when only one of them saves or loads."""
  me = jax.process_index()
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"export-{me}"))


def save_export(path, codec_id: str, codec_config: dict, params, tables: dict, meta: dict, fingerprint: str):
  """Write an export directory atomically (temp dir + rename)."""
  path = pathlib.Path(path).absolute()
  tmp = path.with_name(path.name + ".tmp")
  if tmp.exists():
    shutil.rmtree(tmp)
  tmp.mkdir(parents=True)
  with local_checkpointer() as ckptr:
    ckptr.save(tmp / "state", {"params": _to_storage(params), "tables": tables})
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
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), state["params"])
  tables = jax.tree.map(np.asarray, state["tables"])
  return info, params, tables


def load_params_any(path) -> dict:
  """Parameters from an export directory or from a training workdir's last checkpoint."""
  path = pathlib.Path(path)
  if _is_export(path):
    return load_export(path)[1]
  from dcic_jax.train import restore_params
  params = restore_params(path)
  if params is None:
    raise UserError(f"no codec checkpoint in {path} (neither an export with codec.json nor a workdir with checkpoints/)")
  return params
