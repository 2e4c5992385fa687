"""Decode a (K_D, K_P) grid × a batch of images in one compiled, sharded call.

The grid axis and the image axis are laid over a 2-D device mesh `("grid", "data")`; every device
decodes its (grid point, image) pairs in chunks of a fixed size `chunk` (vmapped within a chunk,
`lax.map` over chunks). Because a chunk's program never depends on the mesh, a decode in one
process gives the same bits on 1 device and on 4 fake CPU devices (the partitioner would
otherwise change the per-device batch of every convolution, and with it the float summation
order). Across processes XLA builds a slightly different program: 2 processes × 2 devices
differ from 1 × 4 by up to 2.7e-7 (tests/test_multihost.py), well below one 8-bit level. Raise
`chunk` for throughput on an accelerator.

K_D and K_P are traced arrays, so every grid of the same length reuses one compiled program.

On one CPU device the grid is cut into `host_parts` equal parts that run as concurrent calls of one
compiled program, on threads of this process (`dcic_jax/host_parts.py`): XLA:CPU keeps only about
one core busy with a batch-1 UNet and codec, so the parts fill the others (the demo's grid call:
~0.7× the time on 2 cores; docs/benchmarks.md). Each item is the same function of its inputs
either way; the parts' programs are compiled for fewer items, which may round differently in the
last bits (5e-7 measured).
Multi-host: call `jax.distributed.initialize()` first; the mesh spans the global devices and the
same code runs on every host (docs/scaling.md).
"""
import contextlib
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from dcic_jax.dcic.constraints import CodecFns, Target
from dcic_jax.dcic.sampler import DCICConfig, make_decode_one
from dcic_jax.diffusion.samplers import EpsFn
from dcic_jax.diffusion.schedules import Schedule
from dcic_jax.host_parts import concurrent_calls, parts_for


def grid_mesh(num_images: int, devices=None) -> jax.sharding.Mesh:
  """A ("grid", "data") mesh over the devices: images split as far as they divide, grid the rest."""
  devices = jax.devices() if devices is None else list(devices)
  data = math.gcd(len(devices), num_images)
  return jax.make_mesh((len(devices) // data, data), ("grid", "data"),
                       axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def _shardings(mesh) -> tuple[NamedSharding, NamedSharding, NamedSharding]:
  """(replicated, split over "data", split over "grid")."""
  return tuple(NamedSharding(mesh, s) for s in (P(), P("data"), P("grid")))


class GridDecoder:
  """`decoder(prior_params, codec_params, targets[B], keys[B, 2], k_d[G], k_p[G]) -> x̂ [G, B, H, W, 3]`.

  One jitted program per mesh; calls with the same shapes reuse it (`traces` counts tracings).
  """

  def __init__(self, eps_fn: EpsFn, codec: CodecFns, schedule: Schedule, cfg: DCICConfig,
               chunk: int = 1, progress: bool = False, host_parts: int = 2):
    self.cfg = cfg
    self.chunk = chunk
    self.host_parts = host_parts  # concurrent calls on a one-device CPU mesh (module docstring)
    self.traces = 0
    self._steps = (cfg.start_step or cfg.num_steps)
    self._bar = None
    self._progress = progress
    on_step = self._tick if progress else None
    self._one = jax.vmap(make_decode_one(eps_fn, codec, schedule, cfg, on_step),
                         in_axes=(None, None, 0, 0, 0, 0))
    self._jitted: dict[Any, Any] = {}
    self._aot: dict[Any, Any] = {}

  def _tick(self, i) -> None:
    del i
    if self._bar is not None:  # called once per step of a vmapped chunk of `chunk` items
      self._bar.update(self.chunk)

  def _local(self, prior_params, codec_params, targets: Target, keys, k_d, k_p):
    """One device: its g grid points × b images as g·b items, decoded `chunk` at a time."""
    self.traces += 1
    g, b = k_d.shape[0], keys.shape[0]
    items = lambda a, axis: jnp.repeat(a, b, axis=0) if axis == "grid" else \
        jnp.tile(a, (g,) + (1,) * (a.ndim - 1))
    xs = (jax.tree.map(lambda a: items(a, "data"), targets), items(keys, "data"),
          items(k_d, "grid"), items(k_p, "grid"))
    n = g * b
    if n % self.chunk:
      raise ValueError(f"{n} items per device do not split into chunks of {self.chunk}")
    xs = jax.tree.map(lambda a: a.reshape((n // self.chunk, self.chunk) + a.shape[1:]), xs)
    out = jax.lax.map(lambda x: self._one(prior_params, codec_params, *x), xs)
    return out.reshape((g, b) + out.shape[2:])

  def _compiled(self, mesh):
    key = (tuple(mesh.shape.items()), tuple(d.id for d in mesh.devices.flat))
    if key not in self._jitted:
      fn = jax.shard_map(self._local, mesh=mesh,
                         in_specs=(P(), P(), P("data"), P("data"), P("grid"), P("grid")),
                         out_specs=P("grid", "data"), check_vma=False)
      rep, data, grid = _shardings(mesh)
      self._jitted[key] = jax.jit(fn, in_shardings=(rep, rep, data, data, grid, grid),
                                  out_shardings=NamedSharding(mesh, P("grid", "data")))
    return self._jitted[key]

  def __call__(self, prior_params, codec_params, targets: Target, keys: jax.Array,
               k_d, k_p, mesh=None, trim: bool = True) -> jax.Array:
    """x̂ [G, B, H, W, 3], sharded ("grid", "data") over the mesh.

    The grid is padded to whole chunks per device. `trim` drops the padded points, which
    re-lays the array out (on several hosts: gathers it everywhere); with `trim=False` the
    result keeps its sharding and its padded rows, and each host writes the rows its devices
    decoded (`sweep.write_owned` skips the rows beyond its units).
    """
    k_d = np.asarray(k_d, np.float32).reshape(-1)
    k_p = np.asarray(k_p, np.float32).reshape(-1)
    if k_d.shape != k_p.shape or not len(k_d):
      raise ValueError(f"K_D and K_P must pair up, got {k_d.shape} and {k_p.shape}")
    num_images = keys.shape[0]
    mesh = grid_mesh(num_images) if mesh is None else mesh
    if num_images % mesh.shape["data"]:
      raise ValueError(f"{num_images} images do not split over a data axis of {mesh.shape['data']}")
    # Pad the grid (repeating its last point; trimmed below) so every device gets whole chunks,
    # in each of `parts` equal concurrent calls.
    per_device_images = num_images // mesh.shape["data"]
    step = mesh.shape["grid"] * (self.chunk // math.gcd(self.chunk, per_device_images))
    parts = parts_for(self.host_parts, -(-len(k_d) // step), mesh.devices.flat)
    pad = -len(k_d) % (step * parts)
    k_d_p = np.concatenate([k_d, np.repeat(k_d[-1:], pad)]).reshape(parts, -1)
    k_p_p = np.concatenate([k_p, np.repeat(k_p[-1:], pad)]).reshape(parts, -1)
    rep, data, grid = _shardings(mesh)
    prior_params, codec_params = jax.device_put((prior_params, codec_params), rep)
    targets, keys = jax.device_put((targets, jnp.asarray(keys)), data)
    args = [(prior_params, codec_params, targets, keys) + jax.device_put((k_d_p[i], k_p_p[i]), grid)
            for i in range(parts)]
    with contextlib.ExitStack() as stack:
      stack.enter_context(jax.threefry_partitionable(True))
      if self._progress:
        self._bar = stack.enter_context(tqdm.tqdm(
            total=self._steps * k_d_p.size * num_images, desc="DCIC decode", unit="step"))
      try:
        if parts == 1:
          out = self._compiled(mesh)(*args[0])
          out.block_until_ready()
        else:
          out = jnp.concatenate(self._concurrently(mesh, args))
      finally:
        self._bar = None
    return out[:len(k_d)] if trim else out

  def _concurrently(self, mesh, args: list) -> list:
    """The parts as concurrent calls of one program, compiled once per mesh and argument shapes."""
    return concurrent_calls(self._compiled(mesh), args,
                            self._aot.setdefault(tuple(mesh.shape.items()), {}))
