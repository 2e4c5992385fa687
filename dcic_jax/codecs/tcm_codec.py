"""Coding for the official TCM model (`tcm_official.py`): `TCMCodec` is a `Codec` whose slice loop
runs the TCM entropy-parameter networks (Swin attention, GELU, tanh) as float32 XLA programs on the
host CPU and puts every number the coder sees on the 2**-12 grid of the other codecs.

Why not integer networks as for h_s (`fixed_point.py`): softmax attention, LayerNorm, GELU, sigmoid
and tanh have no exact integer twin in this project yet. What the grid buys: y_hat − mu is exactly
the integer symbol, and encoder and decoder agree bit for bit on the same jax build and CPU kind
(XLA:CPU is deterministic); across platforms a last-bit difference of a float network can flip a
grid rounding, so files are not yet portable between machine kinds (docs/tcm.md).
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.codecs import fixed_point
from dcic_jax.codecs.codec import TAIL_MASS, Codec, build_tables
from dcic_jax.entropy import coder
from dcic_jax.entropy.channelwise import SliceSpec
from dcic_jax.entropy.models import gaussian_pmf_np

CODEC_ID = "tcm-official"
# models/tcm.py's scale table (SCALES_MIN, SCALES_MAX, SCALES_LEVELS); CompressAI codes each latent
# with the first level >= sigma.
OFFICIAL_SCALES = (0.11, 256.0, 64)

def _grid_int(a) -> np.ndarray:
  """Float values -> integers in units of 2**-A_FRAC (the coder's grid), float64."""
  return np.round(np.asarray(a, np.float64) * 2.0**fixed_point.A_FRAC)


@dataclasses.dataclass(frozen=True, eq=False)
class TCMCodec(Codec):
  """`Codec` with the TCM slice loop: z and the 5 slices in one string, as for the other
  channel-wise codecs; the entropy parameters from float32 XLA programs on the host CPU, put on
  the 2**-12 grid (module docstring: deterministic per jax build and CPU, not integer-exact)."""

  @functools.cached_property
  def slice_spec(self) -> SliceSpec:
    t = self.module.tcm
    return SliceSpec(t.num_slices, t.M, t.M, 1, True)

  @functools.cached_property
  def _cpu(self):
    return jax.local_devices(backend="cpu")[0]

  @functools.cached_property
  def _cpu_params(self):
    return jax.device_put(self.params, self._cpu)

  @functools.cached_property
  def _hyper_fn(self):
    m = self.module
    return jax.jit(lambda p, z: m.apply({"params": p}, z, method="h_s"))

  @functools.cached_property
  def _slice_fns(self):
    m = self.module
    def params_fn(p, i, mean_feat, scale_feat, support):
      return m.apply({"params": p}, i, mean_feat, scale_feat, support, method="slice_params")
    def lrp_fn(p, i, mean_support, y_hat_i):
      return m.apply({"params": p}, i, mean_support, y_hat_i, method="slice_lrp")
    return jax.jit(params_fn, static_argnums=1), jax.jit(lrp_fn, static_argnums=1)

  def _slices(self, z_hat: np.ndarray, symbols):
    """(y_hat, effective mu, index, symbols, LRP term r) [h, w, M] each, every float on the grid."""
    params_fn, lrp_fn = self._slice_fns
    p = self._cpu_params
    with jax.default_device(self._cpu):
      mean_feat, scale_feat = self._hyper_fn(p, jnp.asarray(z_hat[None], jnp.float32))
      done, mus, indexes, syms, rs = [], [], [], [], []
      for i in range(self.slice_spec.slices):
        mu, sigma, mean_support = params_fn(p, i, mean_feat, scale_feat, [jnp.asarray(a[None]) for a in done])
        mu_int = _grid_int(mu[0])
        index = np.searchsorted(self.tables["scale_bounds"], _grid_int(sigma[0]), side="left")
        sym = np.asarray(symbols(i, mu_int, index), np.int64)
        y_hat_int = sym.astype(np.float64) * 2.0**fixed_point.A_FRAC + mu_int
        r_int = _grid_int(lrp_fn(p, i, mean_support, jnp.asarray(fixed_point.to_float(y_hat_int)[None]))[0])
        done.append(fixed_point.to_float(y_hat_int + r_int))
        mus.append(mu_int + r_int)
        rs.append(r_int)
        indexes.append(index)
        syms.append(sym)
    cat = lambda xs: np.concatenate(xs, -1)
    return cat(done), fixed_point.to_float(cat(mus)), cat(indexes), cat(syms), fixed_point.to_float(cat(rs))


def official_y_tables() -> tuple[dict, np.ndarray]:
  """(y TableSet tree, integer sigma thresholds) with the official scale table and level rule.

  Why not the 128 nearest-in-log levels of `codec.build_tables`: with the official levels and
  CompressAI's round-up rule the files have the official code's size (its models were trained and
  published with them).
  """
  lo, hi, n = OFFICIAL_SCALES
  scales = np.exp(np.linspace(math.log(lo), math.log(hi), n))
  from scipy.stats import norm  # pylint: disable=g-import-not-at-top
  tail = float(norm.isf(TAIL_MASS / 2))
  pmfs, offsets = [], []
  for s in scales:
    r = int(math.ceil(s * tail))
    pmfs.append(gaussian_pmf_np(s, np.arange(-r, r + 1)))
    offsets.append(-r)
  # index = #{levels below sigma} (first level >= sigma); sigma on the 2**-12 grid: level s is below
  # sigma_int / 2**12 iff floor(s·2**12) < sigma_int (no level is a grid point).
  bounds = np.floor(scales[:-1] * 2.0**fixed_point.A_FRAC).astype(np.int64)
  return coder.make_tableset(pmfs, offsets).to_tree(), bounds


def make_tcm_codec(config: dict, params, codec_id: str = CODEC_ID) -> TCMCodec:
  """The post-training step for an imported model: z tables from params (`build_tables`), y tables
  with the official scale table (`official_y_tables`)."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  tables = build_tables(codec_id, config, params)
  tables["y"], tables["scale_bounds"] = official_y_tables()
  return TCMCodec(codec_id, dict(config), params, tables)
