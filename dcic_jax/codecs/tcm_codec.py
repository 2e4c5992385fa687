"""Coding for the official TCM model (`tcm_official.py`): `TCMCodec` is a `Codec` whose slice loop
runs the TCM entropy-parameter networks (h_mean_s / h_scale_s, the SWAtten, cc_mean / cc_scale and
LRP transforms of every slice) as exact integer networks, so files decode bit for bit on any
platform, as those of the other codecs do (`fixed_point.py`, `entropy/channelwise.py`).

The integer twin (`IntegerTCM`) follows the float module layer for layer with the exact integer ops
of `integer_ops.py`: weights on the 2**-20 grid, activations on 2**-16, attention probabilities,
sigmoid, Φ (GELU) and exp on 2**-24, every sum an exact integer below 2**53 (checked), softmax,
LayerNorm, sigmoid and tanh by exact integer division, square root and lookup tables stored with
the export. Fine grids, as in `fixed_point.py`: the TCM path is ~40 layers deep, and mu must stay
within ~1e-5 of the float network so that fewer than 0.01% of the symbols round differently from
the official code (docs/tcm.md). What the coder sees (mu, the LRP term r,
sigma for the table choice) is then rounded to the 2**-12 grid of the other codecs, so y_hat − mu
is exactly the integer symbol, which DCIC's latent constraint needs.
"""
import concurrent.futures
import dataclasses
import functools
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.codecs import fixed_point
from dcic_jax.codecs import integer_ops as iops
from dcic_jax.codecs.codec import TAIL_MASS, Codec, build_tables
from dcic_jax.codecs.tcm_official import _LN_EPS, pixel_shuffle
from dcic_jax.codecs.transformer import _relative_index, _window_labels, _window_merge, _window_partition
from dcic_jax.entropy import coder
from dcic_jax.entropy.channelwise import SliceSpec
from dcic_jax.entropy.models import gaussian_pmf_np
from dcic_jax.errors import UserError

CODEC_ID = "tcm-official"
# models/tcm.py's scale table (SCALES_MIN, SCALES_MAX, SCALES_LEVELS); CompressAI codes each latent
# with the first level >= sigma.
OFFICIAL_SCALES = (0.11, 256.0, 64)
GRID = fixed_point.A_FRAC          # the coder's grid: mu, r, sigma in units of 2**-12
_ENTROPY_PARTS = ("h_mean_s", "h_scale_s", "atten_", "cc_", "lrp_")
_LEAKY = round(0.01 * 2**iops.WGT)  # leaky ReLU slope on the weight grid
_GDN_PEDESTAL, _GDN_BETA_MIN = 2.0**-36, 1e-6  # layers.GDN's reparametrisation
_MASKED = -2.0**40                 # a logit no softmax weight survives (exp table: 0)
_HIGHEST = jax.lax.Precision.HIGHEST
_PAIR_POOL = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tcm-scale")  # `TCMCodec._both`


def quantize_entropy_params(params: dict) -> dict:
  """The float parameters of the entropy-parameter networks on the integer grids (float64 trees):
  kernels, LayerNorm scales, GDN gamma on 2**-WGT; biases (added to accumulators) and GDN beta on
  2**-(ACT + WGT); relative position biases on 2**-ACT; beside each kernel its `column_bound`.
  NumPy float64 with IEEE-exact ops only (a square, a subtraction, a power-of-two scaling, a
  correctly rounded sqrt), so every machine gets the same integers."""
  out = {}
  for path, v in flax.traverse_util.flatten_dict(params).items():
    if not path[0].startswith(_ENTROPY_PARTS):
      continue
    v = np.asarray(v, np.float64)
    name = path[-1]
    if path[-2] == "igdn":  # GDN's value = max(p, sqrt(min + pedestal))**2 − pedestal
      bound = math.sqrt((_GDN_BETA_MIN if name == "beta" else 0.0) + _GDN_PEDESTAL)
      v = np.maximum(v, bound) ** 2 - _GDN_PEDESTAL
      v = iops.to_int(v, iops.ACT + iops.WGT) if name == "beta" else iops.to_int(v.T, iops.WGT)  # gamma [in, out]
      if name == "gamma":
        out[path[:-1] + ("gamma_bound",)] = iops.column_bound(v)
    elif name in ("kernel", "scale"):
      v = iops.to_int(v, iops.WGT)
      if name == "kernel":
        out[path[:-1] + ("kernel_bound",)] = iops.column_bound(v)
    elif name == "bias":
      v = iops.to_int(v, iops.ACT + iops.WGT)
    elif name == "relative_position_params":
      v = iops.to_int(v, iops.ACT)
    else:
      raise ValueError(f"no integer form for parameter {'/'.join(path)}")
    out[path] = v
  return flax.traverse_util.unflatten_dict(out)


def _inv_sqrt(d: int) -> int:
  """round(2**WGT / sqrt(d)), in Python integers (no libm)."""
  return (math.isqrt(4**(iops.WGT + 1) // d) + 1) // 2


class IntegerTCM:
  """The TCM entropy-parameter networks on integers (units of `integer_ops`), layer for layer as
  `tcm_official.TCMOfficial` builds them; NHWC without the batch axis. One instance per traced
  call: it collects the bounds of every intermediate in `bounds`."""

  def __init__(self, cfg, tables: dict):
    self.cfg, self.tables, self.bounds = cfg, tables, []

  # ---- layers ----
  def conv(self, p, x):
    return iops.conv_same(x, p["kernel"], p["bias"], self.bounds, p["kernel_bound"])

  def dense(self, p, x):
    return iops.dense(x, p["kernel"], p["bias"], self.bounds, p["kernel_bound"])

  def leaky(self, x):
    return jnp.where(x >= 0, x, iops.mul_shift(x, _LEAKY, iops.WGT, self.bounds))

  def gelu(self, x):
    return iops.gelu(x, self.tables, self.bounds)

  def layer_norm(self, p, x):
    return iops.layer_norm(x, p["scale"], p["bias"], _LN_EPS, self.bounds)

  def igdn(self, p, x):
    """x·sqrt(beta + gamma·x²): exact squares, an integer dense layer, an exact integer root."""
    norm = iops.dense(iops.mul_shift(x, x, iops.ACT, self.bounds), p["gamma"], p["beta"], self.bounds, p["gamma_bound"])
    return iops.mul_shift(x, iops.isqrt(norm * 2.0**iops.ACT, self.bounds), iops.ACT, self.bounds)

  def subpel(self, p, x):
    return pixel_shuffle(self.conv(p, x)[None])[0]

  def residual_block_upsample(self, p, x):
    out = self.leaky(self.subpel(p["subpel_conv_0"], x))
    return self.igdn(p["igdn"], self.conv(p["conv"], out)) + self.subpel(p["upsample_0"], x)

  def residual_block(self, p, x):
    return self.leaky(self.conv(p["conv2"], self.leaky(self.conv(p["conv1"], x)))) + x

  def wmsa(self, p, x_HWC, head_dim: int, w: int, shifted: bool):
    """`tcm_official.WMSA`: q·kᵀ and attn·v exact, q pre-scaled by d**-0.5, the softmax exact."""
    h, wd, c = x_HWC.shape
    heads, d = c // head_dim, head_dim
    s = w // 2 if shifted else 0
    hp, wp = -(-h // w) * w, -(-wd // w) * w
    x = jnp.pad(x_HWC, ((0, hp - h), (0, wp - wd), (0, 0)))
    if s:
      x = jnp.roll(x, (-s, -s), axis=(0, 1))
    xw = _window_partition(x[None], w)[0]  # [nW, T, C]
    n_w, t = xw.shape[:2]
    qkv = self.dense(p["embedding_layer"], xw).reshape(n_w, t, 3, heads, d)
    q = iops.mul_shift(qkv[:, :, 0], _inv_sqrt(d), iops.WGT, self.bounds)
    k, v = qkv[:, :, 1], qkv[:, :, 2]
    self.bounds.append(jnp.max(jnp.abs(q)) * jnp.max(jnp.abs(k)) * d)
    logits = iops.shift_round(jnp.einsum("nthd,nshd->nhts", q, k, precision=_HIGHEST), iops.ACT)
    logits = logits + p["relative_position_params"].reshape(heads, -1)[:, _relative_index(w)]
    labels = _window_labels(h, wd, hp, wp, w, s)
    if (labels != labels[:, :1]).any():
      logits = jnp.where((labels[:, :, None] == labels[:, None, :])[:, None], logits, _MASKED)
    att = iops.softmax(logits, self.tables, self.bounds)  # [nW, heads, T, T], rows sum to ~2**TAB
    self.bounds.append(jnp.max(jnp.sum(att, -1)) * jnp.max(jnp.abs(v)))
    out = iops.shift_round(jnp.einsum("nhts,nshd->nthd", att, v, precision=_HIGHEST), iops.TAB)
    out = _window_merge(self.dense(p["linear"], out.reshape(n_w, t, c))[None], w, hp, wp)[0]
    if s:
      out = jnp.roll(out, (s, s), axis=(0, 1))
    return out[:h, :wd]

  def block(self, p, x, head_dim: int, w: int, shifted: bool):
    x = x + self.wmsa(p["msa"], self.layer_norm(p["ln1"], x), head_dim, w, shifted)
    return x + self.dense(p["mlp_2"], self.gelu(self.dense(p["mlp_0"], self.layer_norm(p["ln2"], x))))

  def conv_trans_block(self, p, x, head_dim: int, w: int, shifted: bool):
    a, b = jnp.split(self.conv(p["conv1_1"], x), 2, axis=-1)
    a = self.residual_block(p["conv_block"], a) + a
    b = self.block(p["trans_block"], b, head_dim, w, shifted)
    return x + self.conv(p["conv1_2"], jnp.concatenate([a, b], -1))

  def residual_unit(self, p, x):
    relu = lambda v: jnp.maximum(v, 0.0)
    h = relu(self.conv(p["conv_2"], relu(self.conv(p["conv_0"], x))))
    return relu(self.conv(p["conv_4"], h) + x)

  def swatten(self, p, x):
    c = self.cfg
    x = self.conv(p["in_conv"], x)
    z = self.block(p["non_local_block"]["block_1"], x, c.atten_head_dim, c.window, False)
    a, b = x, self.block(p["non_local_block"]["block_2"], z, c.atten_head_dim, c.window, True)
    for j in range(3):
      a = self.residual_unit(p[f"conv_a_{j}"], a)
      b = self.residual_unit(p[f"conv_b_{j}"], b)
    gate = iops.sigmoid(self.conv(p["conv_b_3"], b), self.tables, self.bounds)
    return self.conv(p["out_conv"], iops.mul_shift(a, gate, iops.TAB, self.bounds) + x)

  # ---- the networks (parameters as `stacked_entropy_params` arranges them) ----
  def hyper(self, layers: list, z_hat):
    """h_mean_s or h_scale_s: ResidualBlockUpsample, ConvTransBlocks, a subpel conv."""
    c = self.cfg
    x = self.residual_block_upsample(layers[0], z_hat)
    for k, p in enumerate(layers[1:-1]):
      x = self.conv_trans_block(p, x, c.hyper_head_dim, c.hyper_window, k % 2 == 1)
    return self.subpel(layers[-1], x)

  def cc(self, layers: list, x):
    """cc_mean / cc_scale / lrp transforms: 3×3 convs, GELU between them."""
    for j, p in enumerate(layers):
      x = self.conv(p, x)
      if j < len(layers) - 1:
        x = self.gelu(x)
    return x

  def slice_branch(self, p: dict, feat, support: list):
    """One half of `TCMOfficial.slice_params`: (cc(SWAtten(feat ‖ support)), SWAtten(..)) in 2**-ACT,
    mean or scale by its parameters."""
    out = self.swatten(p["atten"], jnp.concatenate([feat] + list(support[:self.cfg.support_slices]), -1))
    return self.cc(p["cc"], out), out

  def slice_lrp(self, layers: list, mean_support, y_hat_i):
    """`TCMOfficial.slice_lrp`: r_i = 0.5·tanh(lrp_i(mean support ‖ y_hat_i)), units 2**-TAB."""
    return iops.half_tanh(self.cc(layers, jnp.concatenate([mean_support, y_hat_i], -1)), self.tables, self.bounds)


def entropy_params_by_branch(q: dict, cfg) -> dict:
  """The integer parameters arranged for the coder: {"hyper": {"mean", "scale"}: [layer..],
  "slices": per slice {"mean", "scale"}: {"atten", "cc"}, "lrp": per slice [layer..]}. The mean and
  scale networks have the same shapes, so one compiled program runs either (`_hyper_int`,
  `_slice_branch_int`): half the programs XLA compiles, and no weight copies (stacking them for a
  `lax.map` made XLA copy each branch's weights out of the stack on every call)."""
  n_hyper = 2 + cfg.depths[3]
  hyper = [f"_{k}" for k in range(n_hyper - 1)] + [f"_{n_hyper - 1}_0"]
  cc = lambda kind, i: [q[f"{kind}_{i}_{2 * j}"] for j in range(len(cfg.cc_hidden) + 1)]
  return dict(
      hyper={b: [q[f"h_{b}_s" + k] for k in hyper] for b in ("mean", "scale")},
      slices=[{b: dict(atten=q[f"atten_{b}_{i}_0"], cc=cc(f"cc_{b}_transforms", i)) for b in ("mean", "scale")}
              for i in range(cfg.num_slices)],
      lrp=[cc("lrp_transforms", i) for i in range(cfg.num_slices)])


def _bound(net: IntegerTCM):
  return jnp.max(jnp.stack([jnp.asarray(b, jnp.float64) for b in net.bounds]))


def _to_grid(a, frac: int):
  """Integers in units of 2**-frac -> the coder's 2**-GRID grid, rounded."""
  return iops.shift_round(a, frac - GRID)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _hyper_int(layers, tables, z_hat_int, cfg):
  """h_mean_s or h_scale_s (by `layers`): (features in units 2**-ACT, largest intermediate bound)."""
  net = IntegerTCM(cfg, tables)
  return net.hyper(layers, z_hat_int), _bound(net)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _slice_branch_int(params, tables, feat, support, cfg):
  """One slice's mean or scale branch (by `params`, `feat`): (its output on the coder's grid, the
  SWAtten output in 2**-ACT (the mean's is the LRP's support), bound)."""
  net = IntegerTCM(cfg, tables)
  out, atten = net.slice_branch(params, feat, support)
  return _to_grid(out, iops.ACT), atten, _bound(net)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _slice_lrp_int(layers, tables, mean_support, y_hat_i, cfg):
  """(r_i on the coder's grid, bound)."""
  net = IntegerTCM(cfg, tables)
  return _to_grid(net.slice_lrp(layers, mean_support, y_hat_i), iops.TAB), _bound(net)


@dataclasses.dataclass(frozen=True, eq=False)
class TCMCodec(Codec):
  """`Codec` with the TCM slice loop: z and the 5 slices in one string, as for the other
  channel-wise codecs; the entropy parameters from the integer networks (`IntegerTCM`), one
  compiled float64 XLA program per network on the host CPU, as `fixed_point.HyperSynthesisInt`
  runs h_s (the values are exact integers, so the device's summation order cannot matter)."""

  def __post_init__(self):
    if "integer_tables" not in self.tables:
      raise UserError(f"this {self.codec_id} export predates integer coding of its entropy networks "
                      "(files from it decode only on the machine kind that wrote them); "
                      "re-import it with dcic import-tcm")

  @functools.cached_property
  def slice_spec(self) -> SliceSpec:
    t = self.module.tcm
    return SliceSpec(t.num_slices, t.M, t.M, 1, True)

  @functools.cached_property
  def _cpu(self):
    return jax.local_devices(backend="cpu")[0]

  @functools.cached_property
  def _integer_state(self):
    """(integer parameters, lookup tables) as float64 arrays on the CPU device."""
    with jax.enable_x64(True):
      tables = {k: np.asarray(v, np.float64) for k, v in self.tables["integer_tables"].items()}
      params = entropy_params_by_branch(quantize_entropy_params(self.params), self.module.tcm)
      return jax.device_put((params, tables), self._cpu)

  def _on_cpu(self, fn, *args, **kwargs):
    with jax.enable_x64(True), jax.default_device(self._cpu):  # both are per thread
      return jax.block_until_ready(fn(*args, **kwargs))

  def _both(self, mean_call: tuple, scale_call: tuple, **kwargs):
    """The mean and the scale network at once, the scale one on a second thread. Why: XLA:CPU
    runs each float64 product of these small networks on about one core; two programs at once keep
    both cores busy (encode + decode 0.90× the time on this 2-core CPU; docs/tcm.md)."""
    scale = _PAIR_POOL.submit(self._on_cpu, *scale_call, **kwargs)
    return self._on_cpu(*mean_call, **kwargs), scale.result()

  def _slices(self, z_hat: np.ndarray, symbols):
    """(y_hat, effective mu, index, symbols, LRP term r) [h, w, M] each, every float on the grid."""
    q, t = self._integer_state
    cfg = self.module.tcm
    up = 2.0**(iops.ACT - GRID)
    with jax.enable_x64(True), jax.default_device(self._cpu):
      z = jnp.asarray(iops.to_int(z_hat, iops.ACT))
      (mean_feat, b1), (scale_feat, b2) = self._both((_hyper_int, q["hyper"]["mean"], t, z),
                                                     (_hyper_int, q["hyper"]["scale"], t, z), cfg=cfg)
      iops.check_exact(max(b1, b2))
      support, done, mus, indexes, syms, rs = [], [], [], [], [], []
      for i in range(self.slice_spec.slices):
        p = q["slices"][i]
        (mu, mean_support, b1), (sigma, _, b2) = self._both(
            (_slice_branch_int, p["mean"], t, mean_feat, support), (_slice_branch_int, p["scale"], t, scale_feat, support),
            cfg=cfg)
        iops.check_exact(max(b1, b2))
        mu_int = np.asarray(mu)
        index = np.searchsorted(self.tables["scale_bounds"], np.asarray(sigma), side="left")
        sym = np.asarray(symbols(i, mu_int, index), np.int64)
        y_hat_int = sym.astype(np.float64) * 2.0**GRID + mu_int
        r, bound = _slice_lrp_int(q["lrp"][i], t, mean_support, jnp.asarray(y_hat_int * up), cfg=cfg)
        iops.check_exact(bound)
        r_int = np.asarray(r)
        support.append(jnp.asarray((y_hat_int + r_int) * up))
        done.append(y_hat_int + r_int)
        mus.append(mu_int + r_int)
        rs.append(r_int)
        indexes.append(index)
        syms.append(sym)
    cat = lambda xs: np.concatenate(xs, -1)
    to_float = fixed_point.to_float
    return to_float(cat(done)), to_float(cat(mus)), cat(indexes), cat(syms), to_float(cat(rs))


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
  bounds = np.floor(scales[:-1] * 2.0**GRID).astype(np.int64)
  return coder.make_tableset(pmfs, offsets).to_tree(), bounds


def make_tcm_codec(config: dict, params, codec_id: str = CODEC_ID) -> TCMCodec:
  """The post-training step for an imported model: z tables from params (`build_tables`), y tables
  with the official scale table (`official_y_tables`), the lookup tables of the integer networks
  (`integer_ops.make_tables`)."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  tables = build_tables(codec_id, config, params)
  tables["y"], tables["scale_bounds"] = official_y_tables()
  tables["integer_tables"] = iops.make_tables()
  return TCMCodec(codec_id, dict(config), params, tables)
