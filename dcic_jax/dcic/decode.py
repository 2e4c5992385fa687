"""From decoded .dcic files to DCIC images: glue between the codec, the prior and the grid decoder."""
import functools

import jax.numpy as jnp
import numpy as np

from dcic_jax import io, sweep
from dcic_jax.dcic import constraints
from dcic_jax.dcic.grid import GridDecoder
from dcic_jax.dcic.sampler import DCICConfig, decode_schedule, header_key
from dcic_jax.errors import UserError


def make_grid_decoder(codec, prior, cfg: DCICConfig, chunk: int = 1,
                      progress: bool = False) -> GridDecoder:
  """A `GridDecoder` for a `codecs.codec.Codec` and a `diffusion.prior.Prior`.

  Shared by every codec of one architecture (equal Flax modules; the weights are arguments of
  the call): the demo's three rates compile one program, not three (~10 s each on 2 cores).
  """
  if cfg.num_steps > prior.schedule.num_steps:
    raise UserError(f"{cfg.num_steps} steps: the prior has only {prior.schedule.num_steps}")
  return _shared_decoder(prior, codec.module, cfg, chunk, progress)


@functools.lru_cache(maxsize=4)
def _shared_decoder(prior, module, cfg: DCICConfig, chunk: int, progress: bool) -> GridDecoder:
  return GridDecoder(prior.eps_fn, constraints.CodecFns.from_module(module),
                     decode_schedule(prior.schedule, cfg), cfg, chunk, progress)


def targets_and_keys(codec, decoded: list) -> tuple[constraints.Target, jnp.ndarray]:
  """Stacked targets and header keys of decoded files that share one padded size."""
  sizes = {(d.header.height, d.header.width) for d in decoded}
  if len(sizes) != 1:
    raise UserError(f"files of different sizes cannot share a batch: {sorted(sizes)}")
  fns = constraints.CodecFns.from_module(codec.module)
  stack = lambda field: jnp.asarray(np.stack([getattr(d, field) for d in decoded]))
  target = constraints.make_target(fns, codec.params, stack("y_hat"), stack("mu"), stack("r"))
  keys = jnp.stack([header_key(d.header.seed, d.header.prng_impl) for d in decoded])
  return target, keys


def to_uint8(x: np.ndarray, height: int, width: int) -> np.ndarray:
  """[..., Hp, Wp, 3] in [−1, 1] -> [..., height, width, 3] uint8 (crop the padding)."""
  x = np.asarray(x)[..., :height, :width, :]
  return np.round(np.clip((x + 1.0) * 127.5, 0.0, 255.0)).astype(np.uint8)


def _grid_call(codec, prior, decoded: list, cfg: DCICConfig, k_d, k_p, chunk: int,
               progress: bool):
  """The padded, sharded x̂ [G', B, Hp, Wp, 3] of `GridDecoder` (G' >= G: see its `trim`)."""
  hp, wp = decoded[0].x_hat.shape[:2]
  if hp % prior.size_multiple or wp % prior.size_multiple:
    raise UserError(f"the prior needs sides that are multiples of {prior.size_multiple}; "
                    f"the file's padded size is {hp}x{wp}")
  target, keys = targets_and_keys(codec, decoded)
  decoder = make_grid_decoder(codec, prior, cfg, chunk, progress)
  return decoder(prior.params, codec.params, target, keys, k_d, k_p, trim=False)


def dcic_decode(codec, prior, decoded: list, cfg: DCICConfig, k_d, k_p, chunk: int = 1,
                progress: bool = False) -> np.ndarray:
  """uint8 [G, B, H, W, 3]: every (K_D, K_P) pair of the grid for every decoded file.

  One process (the CLI); a multi-host job writes its share with `dcic_decode_to_files`.
  """
  out = np.asarray(_grid_call(codec, prior, decoded, cfg, k_d, k_p, chunk, progress))
  return to_uint8(out[:np.size(k_d)], decoded[0].header.height, decoded[0].header.width)


def dcic_decode_to_files(codec, prior, decoded: list, cfg: DCICConfig, k_d, k_p, units, root,
                         chunk: int = 1, progress: bool = False) -> list:
  """Decode the grid and write PNG `units[g][b]` (`sweep.WorkUnit`, paths under `root`) for
  the (point, image) pairs this host's devices decoded: on several hosts every output is
  written once, by its owner, with nothing gathered across hosts. Returns the units written."""
  out = _grid_call(codec, prior, decoded, cfg, k_d, k_p, chunk, progress)
  h, w = decoded[0].header.height, decoded[0].header.width
  return sweep.write_owned(out, units, root, save=io.save_png,
                           convert=lambda x: to_uint8(x, h, w))
