"""A batch as concurrent calls of one compiled program, on threads of this process (one CPU device).

XLA:CPU runs the small convolutions of a diffusion UNet or a codec (up to about 32 input channels,
batch 1–2) on one core, and overlaps independent parts of one program only in part
(`experiments/bench_unet.py --mode convs`; docs/benchmarks.md). Cutting a batch into equal parts
and running them as concurrent calls of the program compiled for one part fills the other cores.
Each item is the same function of its inputs either way; a program compiled for fewer items may
round differently in the last bits. On accelerators, on meshes of several devices and across
processes, the batch stays one call: there XLA parallelises within a call.
"""
import concurrent.futures
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp


def parts_for(requested: int, units: int, devices: Sequence[Any] | None = None) -> int:
  """How many concurrent calls: `requested` (at most `units`) when the work sits on one CPU device
  of one process, else 1."""
  devices = jax.devices() if devices is None else list(devices)
  if len(devices) != 1 or devices[0].platform != "cpu" or jax.process_count() != 1:
    return 1
  return max(1, min(requested, units))


def run_concurrently(compiled: Callable, args_per_part: Sequence[tuple]) -> list:
  """`compiled(*args)` for every part, on one thread each, all finished on return.

  `compiled` should be compiled ahead of time (`jit(f).lower(...).compile()`), so the threads do
  not each trace and compile it. The PRNG setting is per thread, like every jax config context,
  so the project's (threefry_partitionable) is set in each.
  """
  def run(args):
    with jax.threefry_partitionable(True):
      return jax.block_until_ready(compiled(*args))
  with concurrent.futures.ThreadPoolExecutor(len(args_per_part)) as pool:
    return list(pool.map(run, args_per_part))


def concurrent_calls(jitted: Callable, args_per_part: Sequence[tuple], cache: dict) -> list:
  """`jitted(*args)` for every part, as concurrent calls of the program compiled ahead of time for
  the parts' argument shapes (kept in `cache`), so that the threads do not each compile it."""
  first = args_per_part[0]
  key = (jax.tree.structure(first),
         tuple((jnp.shape(a), str(jnp.result_type(a))) for a in jax.tree.leaves(first)))
  if key not in cache:
    cache[key] = jitted.lower(*first).compile()
  return run_concurrently(cache[key], args_per_part)


def split_batch(fn: Callable, parts: int, batch_argnums: Sequence[int]) -> Callable:
  """`fn` (jax-traceable) with the leading axis of the arguments at `batch_argnums` cut into
  `parts` equal parts, run as concurrent calls; outputs concatenated along their leading axis.

  The other arguments (weights) go to every part. Where `parts_for` says 1 for the devices that
  hold the batch (a NumPy batch: the default device), or the batch does not split evenly, it is
  one jitted call. Compiled programs are kept per argument shapes.
  """
  jitted = jax.jit(fn)
  compiled: dict[Any, Any] = {}

  def call(*args):
    x = args[batch_argnums[0]]
    batch = x.shape[0]
    devices = list(x.sharding.device_set) if isinstance(x, jax.Array) else jax.devices()[:1]
    p = parts_for(parts, batch, devices)
    if p == 1 or batch % p:
      return jitted(*args)
    size = batch // p
    pieces = [tuple(a[k * size:(k + 1) * size] if i in batch_argnums else a
                    for i, a in enumerate(args)) for k in range(p)]
    outs = concurrent_calls(jitted, pieces, compiled)
    return jax.tree.map(lambda *o: jnp.concatenate(o), *outs)

  return call
