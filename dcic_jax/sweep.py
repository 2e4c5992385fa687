"""Splitting a study (rates × (K_D, K_P) grid × images) over hosts and devices, resumably.

Two kinds of work:

* Sharded calls. A grid decode is one compiled collective call over the global mesh: every host
  takes part, and each output (grid point, image) lies on the devices of the host whose devices
  decoded it (`GridDecoder` lays points over "grid" and images over "data"). `owners` names one
  writer per output from the result's sharding alone (a replicated result is dealt round-robin
  over the hosts), and `write_owned` writes this host's share.
* Independent units (encode an image, score a file): `assign` deals them to processes,
  deterministic and balanced, each unit to exactly one process.

Every output is written atomically (`io.atomic_write`: temporary file + rename), so a host
killed mid-sweep leaves only whole files, and `pending` (`pending_images` for a call) lists
exactly what a re-run still has to do. The output root must be one file system every host sees (NFS, Filestore, GCS FUSE);
the report then reads the union of everyone's files.

`estimate` sizes a sweep for `--dry-run`: devices × items per device × steps × seconds per
UNet call → wall time.
"""
import dataclasses
import math
import pathlib
import time
from typing import Callable, Iterable, Sequence

import jax
import numpy as np

from dcic_jax import io


@dataclasses.dataclass(frozen=True, order=True)
class WorkUnit:
  """One output file of the study. `point` indexes the (K_D, K_P) grid (−1: not a grid output)."""
  rate: str          # rate / codec checkpoint name: one compiled call per rate
  image: str         # image stem
  point: int = -1
  k_d: float = 0.0
  k_p: float = 0.0
  path: str = ""     # output file, relative to the sweep root


# ----------------------------------------------------------------------------- building units

def point_name(k_d: float, k_p: float) -> str:
  """The file/folder name of a grid point, e.g. kd0.5_kp1: the one spelling the pipeline, the CLI
  and the report share."""
  return f"kd{k_d:g}_kp{k_p:g}"


def grid_units(rate: str, images: Sequence[str], k_d: Sequence[float], k_p: Sequence[float],
               path_fn: Callable[[str, str, int, float, float], str]) -> list[list[WorkUnit]]:
  """The outputs of one grid call, [G][B]: `path_fn(rate, image, point, k_d, k_p)` names each."""
  if len(k_d) != len(k_p):
    raise ValueError(f"K_D and K_P must pair up, got {len(k_d)} and {len(k_p)}")
  units = [[WorkUnit(rate, image, g, float(kd), float(kp), path_fn(rate, image, g, float(kd), float(kp)))
            for image in images] for g, (kd, kp) in enumerate(zip(k_d, k_p))]
  paths = [u.path for row in units for u in row]
  if len(set(paths)) != len(paths):
    raise ValueError(f"path_fn gives {len(paths) - len(set(paths))} colliding output paths")
  return units


# ----------------------------------------------------------------------------- independent units

def assign(units: Iterable[WorkUnit], process_index: int, process_count: int,
           group: Callable[[WorkUnit], object] | None = None) -> list[WorkUnit]:
  """This process's share of `units`: every unit to exactly one process, the same answer on all.

  Units are sorted first (the caller's order does not matter). `group(unit)` keeps units that
  must run together (e.g. all grid points of one (rate, image)) on one process; groups are dealt
  largest first to the least-loaded process (ties: lowest index), so loads differ by at most one
  group.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process {process_index} is not in 0..{process_count - 1}")
  groups: dict[object, list[WorkUnit]] = {}
  for u in sorted(units):
    groups.setdefault(group(u) if group else u, []).append(u)
  load = [0] * process_count
  mine: list[WorkUnit] = []
  for members in sorted(groups.values(), key=lambda m: (-len(m), m[0])):
    p = min(range(process_count), key=lambda i: (load[i], i))
    load[p] += len(members)
    if p == process_index:
      mine += members
  return sorted(mine)


# ----------------------------------------------------------------------------- resuming

def output_path(root, unit: WorkUnit) -> pathlib.Path:
  return pathlib.Path(root) / unit.path


def pending(units: Iterable[WorkUnit], root) -> list[WorkUnit]:
  """Units whose output file does not exist yet (a temporary file of a killed host does not count)."""
  return [u for u in units if not output_path(root, u).is_file()]


def pending_images(units: Sequence[Sequence[WorkUnit]], root) -> list[int]:
  """Image columns of a grid call ([G][B] units) with any output missing, agreed by all hosts.

  A collective call must be made by every host or by none, so each host's view is OR-ed over all
  processes (on a shared root they agree anyway; this also covers a file that appeared between
  two hosts' checks).
  """
  missing = np.array([[not output_path(root, u).is_file() for u in row] for row in units], bool)
  missing = missing.reshape(len(units), -1).any(axis=0)
  from dcic_jax import sharding  # pylint: disable=g-import-not-at-top
  views = sharding.host_allgather("pending_images", np.packbits(missing).tobytes())
  missing = np.stack([np.unpackbits(np.frombuffer(v, np.uint8), count=missing.size).astype(bool)
                      for v in views]).any(axis=0)
  return [int(b) for b in np.flatnonzero(missing)]


# ----------------------------------------------------------------------------- sharded calls

def owners(array: jax.Array) -> np.ndarray:
  """int [d0, d1]: the one process that writes each element of the first two axes of a global array.

  An element held by one host is written by it. An element several hosts hold (a replicated or
  partly replicated layout) goes to holders[(i0·d1 + i1) mod #holders], the holders sorted: still
  exactly one writer, and the writes spread over the hosts. Computed from the sharding alone, the
  same on every host, with no communication.
  """
  d0, d1 = array.shape[:2]
  holders = [[set() for _ in range(d1)] for _ in range(d0)]
  for device, index in array.sharding.devices_indices_map(tuple(array.shape)).items():
    for i0 in range(*index[0].indices(d0)):
      for i1 in range(*index[1].indices(d1)):
        holders[i0][i1].add(device.process_index)
  out = np.empty((d0, d1), np.int32)
  for i0 in range(d0):
    for i1 in range(d1):
      h = sorted(holders[i0][i1])
      if not h:
        raise ValueError(f"element ({i0}, {i1}) is on no device")
      out[i0, i1] = h[(i0 * d1 + i1) % len(h)]
  return out


def local_items(array: jax.Array, process_index: int | None = None):
  """Yield (g, b, numpy element [...]) for every element of axes (0, 1) that this process owns.

  Reads only this host's shards (no gather across hosts).
  """
  process_index = jax.process_index() if process_index is None else process_index
  own = owners(array)
  seen = np.zeros(own.shape, bool)
  for shard in array.addressable_shards:
    data = None
    rows, cols = shard.index[0].indices(own.shape[0]), shard.index[1].indices(own.shape[1])
    for g in range(*rows):
      for b in range(*cols):
        if own[g, b] == process_index and not seen[g, b]:
          if data is None:
            data = np.asarray(shard.data)
          seen[g, b] = True
          yield g, b, data[g - rows[0], b - cols[0]]


def write_owned(array: jax.Array, units: Sequence[Sequence[WorkUnit]], root,
                save: Callable[..., pathlib.Path] = io.save_png,
                convert: Callable[[np.ndarray], np.ndarray] | None = None,
                overwrite: bool = False) -> list[WorkUnit]:
  """Write this host's outputs of a sharded call: element [g, b] of `array` to `units[g][b]`.

  `array` may have more rows than `units` (a grid padded to whole chunks): those are not written.
  `save(path, element, make_parents=True)` writes one output atomically (`io.save_png`,
  `io.save_npy`); `convert` maps an element before saving (e.g. [−1, 1] floats → cropped uint8).
  Outputs that exist already are skipped unless `overwrite`. Returns the units this host wrote.
  """
  if not (len(units) <= array.shape[0] and len(units[0]) == array.shape[1]):
    raise ValueError(f"{len(units)}x{len(units[0])} units for an output of shape {array.shape[:2]}")
  written = []
  for g, b, x in local_items(array):
    if g >= len(units):
      continue
    unit = units[g][b]
    path = output_path(root, unit)
    if overwrite or not path.is_file():
      save(path, convert(x) if convert else x, make_parents=True)
      written.append(unit)
  return written


# ----------------------------------------------------------------------------- sizing

def unet_calls_per_step(mode: str = "project", grad: str = "xt", inner_steps: int = 1) -> float:
  """ε_θ evaluations of one outer step, counting a backward pass as two forwards."""
  if mode == "project":
    return 1.0                       # one forward; the constraint steps go through the codec only
  if mode == "dps":
    return 3.0                       # forward + backward through ε_θ
  if grad == "xt":
    return 3.0 * inner_steps + 1.0   # G forward+backward, then the step's own denoise
  return 1.0                         # x0: the gradient goes through the codec only


@dataclasses.dataclass(frozen=True)
class SweepEstimate:
  """Wall-time estimate of a sweep (one sharded call per rate, run one after another)."""
  rates: int
  images: int
  points: int
  devices: int
  hosts: int
  steps: int                  # outer steps per decode (start_step or num_steps)
  calls_per_step: float       # ε_θ evaluations per outer step (`unet_calls_per_step`)
  chunk: int                  # items each device decodes together
  seconds_per_call: float     # one ε_θ call on a chunk, one device
  compile_seconds: float = 0.0  # per rate

  @property
  def data_devices(self) -> int:
    return math.gcd(self.devices, self.images)

  @property
  def padded_points(self) -> int:
    grid = self.devices // self.data_devices
    per_device_images = self.images // self.data_devices
    step = grid * (self.chunk // math.gcd(self.chunk, per_device_images))
    return self.points + (-self.points % step)

  @property
  def items_per_device(self) -> int:
    """(grid point, image) decodes per device and rate (padding included)."""
    return self.padded_points * self.images // self.devices

  @property
  def seconds_per_rate(self) -> float:
    chunks = math.ceil(self.items_per_device / self.chunk)
    return self.compile_seconds + chunks * self.steps * self.calls_per_step * self.seconds_per_call

  @property
  def wall_seconds(self) -> float:
    return self.rates * self.seconds_per_rate

  @property
  def outputs(self) -> int:
    return self.rates * self.points * self.images

  def format(self) -> str:
    mesh = f"{self.devices // self.data_devices} grid x {self.data_devices} data"
    return "\n".join([
        f"sweep: {self.rates} rates x {self.points} (K_D, K_P) points x {self.images} images "
        f"= {self.outputs} decodes",
        f"devices: {self.devices} on {self.hosts} host(s), mesh {mesh}; "
        f"{self.items_per_device} decodes per device and rate "
        f"(grid padded by {self.padded_points - self.points})",
        f"per decode: {self.steps} steps x {self.calls_per_step:g} UNet calls; "
        f"{self.seconds_per_call * 1e3:.1f} ms per call on a chunk of {self.chunk}",
        f"estimate: {_hms(self.seconds_per_rate)} per rate "
        f"(compile {_hms(self.compile_seconds)}), {_hms(self.wall_seconds)} in all",
    ])


def _hms(seconds: float) -> str:
  s = int(round(seconds))
  return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def estimate(rates: int, images: int, points: int, steps: int, seconds_per_call: float,
             devices: int | None = None, hosts: int | None = None, chunk: int = 1,
             calls_per_step: float = 4.0, compile_seconds: float = 0.0) -> SweepEstimate:
  """`SweepEstimate` for the global devices of this job unless `devices` / `hosts` are given."""
  return SweepEstimate(rates=rates, images=images, points=points,
                       devices=devices or jax.device_count(), hosts=hosts or jax.process_count(),
                       steps=steps, calls_per_step=calls_per_step, chunk=chunk,
                       seconds_per_call=seconds_per_call, compile_seconds=compile_seconds)


def print_estimate(est: SweepEstimate) -> None:
  """Print on process 0 only (every host computes the same estimate)."""
  if jax.process_index() == 0:
    print(est.format(), flush=True)


def measure_seconds_per_call(eps_fn, params, height: int, width: int, chunk: int = 1,
                             repeats: int = 3, device=None) -> float:
  """Median seconds of one jitted ε_θ call on a [chunk, H, W, 3] batch on one local device."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  device = device or jax.local_devices()[0]
  x = jax.device_put(jnp.zeros((chunk, height, width, 3), jnp.float32), device)
  t = jax.device_put(jnp.full((chunk,), 500, jnp.int32), device)
  params = jax.device_put(params, device)
  fn = jax.jit(eps_fn)
  fn(params, x, t).block_until_ready()  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn(params, x, t).block_until_ready()
    times.append(time.perf_counter() - start)
  return float(np.median(times))
