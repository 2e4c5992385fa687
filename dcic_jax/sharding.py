"""Devices, hosts and meshes: the one place that decides how work is laid over them.

Multi-host runs use JAX's multi-controller runtime: every host runs the same program after
`initialize()`, owns `jax.local_devices()`, feeds only its rows of each global batch
(`host_rows`, `global_batch`) and takes part in every collective call. On one host nothing
here needs `initialize()`; the same functions then describe the single process.

    initialize()            # flags/env, or JAX's cluster auto-detection (TPU pod, SLURM, Open MPI)
    mesh = data_mesh()      # 1-D "data" mesh over every global device
    rows = host_rows(global_batch_size, mesh)           # this host's slice of the batch
    batch = global_batch(local_rows, mesh)              # -> one global jax.Array
"""
import dataclasses
import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

# Environment variables read by `initialize` when no argument is given (they mirror the flags of
# `jax.distributed.initialize`, so a launcher can set them instead of editing command lines).
ENV_COORDINATOR = "DCIC_COORDINATOR_ADDRESS"   # host:port of process 0
ENV_NUM_PROCESSES = "DCIC_NUM_PROCESSES"
ENV_PROCESS_ID = "DCIC_PROCESS_ID"
ENV_DISTRIBUTED = "DCIC_DISTRIBUTED"           # "auto" (default), "on" or "off"


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
  """Where this process stands in the job (recorded in logs and sweep manifests)."""
  index: int
  count: int
  local_devices: int
  global_devices: int
  platform: str

  @property
  def is_main(self) -> bool:
    return self.index == 0


def process_info() -> ProcessInfo:
  return ProcessInfo(jax.process_index(), jax.process_count(), jax.local_device_count(),
                     jax.device_count(), jax.default_backend())


def _int_env(name: str) -> int | None:
  v = os.environ.get(name, "").strip()
  return int(v) if v else None


def detected_cluster() -> str | None:
  """The multi-host launcher whose environment JAX's auto-detection can read, if any.

  Only launchers that started more than one process count: a one-task SLURM job or a single
  TPU VM runs as a plain single process.
  """
  env = os.environ
  if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1 and "SLURM_JOB_ID" in env:
    return "slurm"
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return "ompi"
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]) > 1:
    return "tpu"
  return None


def initialize(mode: str | None = None, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               local_device_ids: Sequence[int] | None = None,
               cpu_collectives: str | None = None, compilation_cache_dir: str | None = None,
               timeout_s: int = 300) -> ProcessInfo:
  """Start `jax.distributed` when asked; call before anything touches a device.

  mode "off": single process. "on": always initialise (explicit arguments / `DCIC_*` env, else
  JAX's auto-detection). "auto" (default, or `DCIC_DISTRIBUTED`): initialise when a coordinator
  is given or a multi-process launcher is detected (`detected_cluster`), else stay single.
  `cpu_collectives="gloo"` lets CPU devices of several processes run collectives (tests, CPU
  clusters). With `compilation_cache_dir`, programs go through JAX's persistent cache and, on
  several hosts, a program no host has cached is compiled by process 0 and sent to the others
  (`jax_share_binary_between_hosts`). Not used by the tests: only process 0 writes the cache, so
  on a re-run the other hosts may still compile alone and reach gloo's 30 s rendezvous late.
  Calling it again after a successful initialisation is a no-op.
  """
  mode = (mode or os.environ.get(ENV_DISTRIBUTED, "auto")).lower()
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed mode must be auto, on or off, got {mode!r}")
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  num_processes = num_processes if num_processes is not None else _int_env(ENV_NUM_PROCESSES)
  process_id = process_id if process_id is not None else _int_env(ENV_PROCESS_ID)
  explicit = coordinator_address is not None or num_processes is not None
  if compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", compilation_cache_dir)
  if mode == "off" or (mode == "auto" and not explicit and detected_cluster() is None):
    return process_info()
  if jax.distributed.is_initialized():
    return process_info()
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if compilation_cache_dir:
    jax.config.update("jax_share_binary_between_hosts", True)
    jax.config.update("jax_share_binary_between_hosts_timeout_ms", 1000 * max(timeout_s, 600))
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id, local_device_ids=local_device_ids,
                             initialization_timeout=timeout_s)
  _orbax_uses_coordination_barriers()
  return process_info()


def _orbax_uses_coordination_barriers() -> None:
  """Orbax's barriers through the coordination service (they take timeouts) instead of device
  all-gathers (on gloo a peer more than 30 s late, e.g. still compiling, kills the job)."""
  try:
    from absl import flags  # pylint: disable=g-import-not-at-top
    from orbax.checkpoint._src.multihost import multihost as _  # noqa: F401  defines the flag
    flag = flags.FLAGS["experimental_orbax_use_distributed_barrier"]
  except (ImportError, KeyError):
    return
  flag.value = True
  flag.present = 1  # readable before absl parses the command line


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """1-D mesh over every global device (or `devices`), axis "data" (pure data parallelism)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def owner_processes(sharding: jax.sharding.Sharding, shape: Sequence[int]) -> dict[int, list[tuple]]:
  """process index -> the index tuples (per-dimension slices) of the shards it holds.

  Computed from the sharding alone, so every host knows every other host's share without talking.
  """
  out: dict[int, list[tuple]] = {}
  for device, index in sharding.devices_indices_map(tuple(shape)).items():
    out.setdefault(device.process_index, []).append(index)
  return out


def process_rows(num_rows: int, mesh, process_index: int) -> slice:
  """Rows [start, stop) of a global batch split over "data" that `process_index` feeds."""
  if num_rows % mesh.shape["data"]:
    raise ValueError(f"batch of {num_rows} does not split over {mesh.shape['data']} devices")
  spans = {idx[0].indices(num_rows)[:2]
           for idx in owner_processes(batch_sharded(mesh), (num_rows,)).get(process_index, [])}
  if not spans:
    return slice(0, 0)
  start, stop = min(s for s, _ in spans), max(e for _, e in spans)
  if sum(e - s for s, e in spans) != stop - start:
    raise ValueError(f"process {process_index} owns non-contiguous rows {sorted(spans)}; "
                     "order the mesh's devices by process")
  return slice(start, stop)


def host_rows(num_rows: int, mesh) -> slice:
  """This host's rows of a global batch of `num_rows` split over the mesh's "data" axis."""
  return process_rows(num_rows, mesh, jax.process_index())


def global_batch(local: np.ndarray, mesh) -> jax.Array:
  """One global array, split over "data", from this host's rows (`host_rows`) only."""
  n = local.shape[0] * jax.process_count()
  return jax.make_array_from_process_local_data(batch_sharded(mesh), local,
                                                (n,) + tuple(local.shape[1:]))


def sync(name: str, timeout_s: int = 600) -> None:
  """Barrier over all processes (no-op on one): e.g. after process 0 wrote a file the others read.

  Uses the coordination service (no device program, so no 30 s gloo rendezvous) when it can.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  client = getattr(distributed.global_state, "client", None)
  if client is not None and hasattr(client, "wait_at_barrier"):
    client.wait_at_barrier(f"dcic_jax:{name}", timeout_in_ms=1000 * timeout_s)
  else:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


_GATHERS = [0]


def host_allgather(name: str, value: bytes, timeout_s: int = 600) -> list[bytes]:
  """Every process's `value`, in process order, through the coordination service's key-value
  store (no device program: safe while other hosts are still compiling). One process: [value]."""
  if jax.process_count() == 1:
    return [value]
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  client = distributed.global_state.client
  _GATHERS[0] += 1
  key = f"dcic_jax/gather/{name}/{_GATHERS[0]}"
  client.key_value_set_bytes(f"{key}/{jax.process_index()}", value)
  return [client.blocking_key_value_get_bytes(f"{key}/{i}", 1000 * timeout_s)
          for i in range(jax.process_count())]
