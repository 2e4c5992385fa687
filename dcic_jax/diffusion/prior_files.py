"""A prior on disk: the checkpoints of a `diffusion/train.py` workdir and the small exported folder.

Loading a prior (`diffusion/prior.py`) needs these and nothing of the trainer.
"""
import dataclasses
import json
import os
import shutil
from typing import Any

import orbax.checkpoint as ocp

from dcic_jax import checkpointing, io
from dcic_jax.diffusion.schedules import Schedule, make_schedule
from dcic_jax.diffusion.unet import UNetConfig


def latest_step(workdir: str) -> int:
  """Optimiser steps of the newest checkpoint under `workdir` (0 if none)."""
  path = os.path.join(prior_dir(workdir), "checkpoints")
  if not os.path.isdir(path):
    return 0
  manager = ocp.CheckpointManager(path)
  step = manager.latest_step()
  manager.close()
  return step or 0


def prior_dir(workdir: str) -> str:
  """`<workdir>/prior`: where `train_prior` keeps checkpoints, its config and metrics.jsonl."""
  return os.path.join(os.path.abspath(workdir), "prior")


def load_trained_prior(workdir: str, use_ema: bool = True,
                       step: int | None = None) -> tuple[UNetConfig, Any, Schedule]:
  """(UNetConfig, params, full T-step schedule) of a prior trained by `train_prior`."""
  out_dir = prior_dir(workdir)
  with open(os.path.join(out_dir, "prior_config.json")) as f:
    meta = json.load(f)
  cfg = UNetConfig(**meta["unet"])
  manager = ocp.CheckpointManager(os.path.join(out_dir, "checkpoints"))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no prior checkpoint under {out_dir}")
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  params = restored["ema_params"] if use_ema else restored["params"]
  return cfg, params, make_schedule(meta["schedule"], meta["num_timesteps"])


def write_prior(out_dir: str, cfg: UNetConfig, params, meta: dict,
                files: dict[str, bytes] | None = None) -> str:
  """Write `out_dir/prior_config.json` (`meta` with the architecture) and `out_dir/params` (orbax),
  through a temporary folder and a rename, so a failed write leaves no half-written prior.
  `meta` holds at least "schedule" and "num_timesteps"; "resolution" where known. `files`: more
  {name: bytes} to keep beside them."""
  out_dir = os.path.abspath(out_dir)
  tmp = out_dir + ".tmp"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  io.write_json(os.path.join(tmp, "prior_config.json"), {**meta, "unet": dataclasses.asdict(cfg)},
                indent=2)
  with checkpointing.local_checkpointer() as ckpt:
    ckpt.save(os.path.join(tmp, "params"), params)
  for name, data in (files or {}).items():
    io.write_bytes(os.path.join(tmp, name), data)
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.rename(tmp, out_dir)
  return out_dir


def export_prior(workdir: str, out_dir: str, step: int | None = None) -> str:
  """Write the EMA weights of a trained prior as a small self-contained folder (`write_prior`:
  architecture, schedule, steps trained; EMA parameters only, a third of a training checkpoint)
  with the training curve up to that step."""
  cfg, params, _ = load_trained_prior(workdir, step=step)
  with open(os.path.join(prior_dir(workdir), "prior_config.json")) as f:
    meta = json.load(f)
  manager = ocp.CheckpointManager(os.path.join(prior_dir(workdir), "checkpoints"))
  meta["trained_steps"] = int(manager.latest_step() if step is None else step)
  manager.close()
  files = {}
  curve = os.path.join(prior_dir(workdir), "metrics.jsonl")
  if os.path.isfile(curve):  # the training curve travels with the weights
    with open(curve) as f:
      files["metrics.jsonl"] = "".join(
          line for line in f if json.loads(line)["step"] <= meta["trained_steps"]).encode()
  return write_prior(out_dir, cfg, params, meta, files)


def is_exported_prior(path: str) -> bool:
  return (os.path.isfile(os.path.join(path, "prior_config.json"))
          and os.path.isdir(os.path.join(path, "params")))


def load_exported_prior(path: str) -> tuple[UNetConfig, Any, Schedule, int | None]:
  """(UNetConfig, params, full T-step schedule, training resolution or None) of a folder written
  by `write_prior`."""
  with open(os.path.join(path, "prior_config.json")) as f:
    meta = json.load(f)
  with checkpointing.local_checkpointer() as ckpt:
    params = ckpt.restore(os.path.abspath(os.path.join(path, "params")))
  return (UNetConfig(**meta["unet"]), params,
          make_schedule(meta["schedule"], meta["num_timesteps"]), meta.get("resolution"))
