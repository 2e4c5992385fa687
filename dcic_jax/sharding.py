"""Device meshes: one place that decides how arrays are laid out over the devices."""
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P


def data_mesh() -> jax.sharding.Mesh:
  """1-D mesh over every device, axis "data" (pure data parallelism)."""
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def shard_batch(batch: np.ndarray, mesh) -> jax.Array:
  """Place a host batch with its leading axis split over the "data" axis."""
  n = mesh.shape["data"]
  if batch.shape[0] % n:
    raise ValueError(f"batch of {batch.shape[0]} does not split over {n} devices")
  return jax.device_put(batch, batch_sharded(mesh))
