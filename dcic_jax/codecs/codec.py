"""A trained codec as a value: module + params + coding tables, with real compress/decompress.

`Codec.compress(image) -> bytes` writes a complete .dcic file (docs/design.md §3);
`Codec.decompress(bytes) -> Decoded` gives back the latents and the base reconstruction x̂_b.
The coding path is:  z -> round(z - median) -> factorized tables;  exact integer h_s(z_hat) ->
(mu, sigma index) -> round(y - mu) -> Gaussian tables;  z then y range-coded by constriction into
one string. Codecs with a channel-wise autoregressive model of y (`entropy/channelwise.py`) run
the slice loop in the same exact integer arithmetic and code the slices after z in slice order,
in that same string. (Files written before 2026-11-26 hold one string per part, [z, y] or
[z, y_0, .., y_{S-1}]; they still decode. One string saves each extra part its coder flush and
its length field: ~4 bytes for the CNN codecs, ~20 for four slices.)
"""
import copy
import dataclasses
import functools
import hashlib
import importlib
import json
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dcic_jax import limits
from dcic_jax.codecs import fixed_point, layers
from dcic_jax.codecs.registry import make_codec
from dcic_jax.entropy import bitstream, channelwise, coder
from dcic_jax.entropy.models import SCALE_BOUND, gaussian_pmf_np
from dcic_jax.errors import BitstreamError, UserError

PAD_MULTIPLE = 64                  # total stride of g_a followed by h_a
PRNG_IMPL = "threefry2x32"         # recorded in every header; the DCIC decoder builds its key with it
SCALE_TABLE = (SCALE_BOUND, 256.0, 128)  # log-spaced Gaussian scales: min, max, levels
TAIL_MASS = 1e-9                    # mass left outside every table's range (sent by escape coding)
MAX_Z_RANGE = 4096                  # cap on a factorized table's symbol range
# XLA:CPU hands convolutions and matrix products to YNNPACK by default. On the README's 2-core
# AVX2 CPU, XLA's own convolutions took 5–11% less CPU time for g_a at N = 128 and 3–20% less for
# the shipped codecs' g_s, so the coding transforms leave YNNPACK the matrix products only
# (`_compiler_options`).
XLA_CONV_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
# g_s of a large image runs in tiles of TILE_LATENTS² latents plus a halo of its receptive field on
# each side (`Codec.synthesize`), so its memory stays that of a ~1.3k-pixel-square tile
# (docs/reliability.md); at or below TILE_ABOVE latent positions (2048² pixels) it runs whole.
TILE_LATENTS = 64
TILE_ABOVE = 128 * 128
STRIDE = 16                        # pixels per latent of y


@dataclasses.dataclass(frozen=True)
class Decoded:
  header: bitstream.Header
  z_hat: np.ndarray       # [h, w, N] float32
  y_hat: np.ndarray       # [H/16, W/16, M] float32 (padded grid)
  mu: np.ndarray          # [H/16, W/16, M] exact decoded means (0 for the scale-only model; channel-wise
                          # models: mu + LRP term), so y_hat - mu is the integer symbol
  scale_index: np.ndarray # [H/16, W/16, M] int table index of every latent
  x_hat: np.ndarray       # [Hp, Wp, 3] float32 in [0, 1]: base reconstruction on the padded grid
  image: np.ndarray       # [H, W, 3] uint8: the cropped, 8-bit base reconstruction
  r: np.ndarray           # [H/16, W/16, M] the LRP term inside mu (0 without LRP): the encoder rounds
                          # y around mu - r, so re-encoding is exact with round(y - mu + r) + mu


def scale_table() -> np.ndarray:
  lo, hi, n = SCALE_TABLE
  return np.exp(np.linspace(math.log(lo), math.log(hi), n))


@functools.cache
def _compiler_options() -> dict | None:
  """`XLA_CONV_OPTIONS` on the CPU backend of a jax that knows them, else None (default compile)."""
  if jax.default_backend() != "cpu":
    return None
  try:
    jax.jit(lambda v: v, compiler_options=XLA_CONV_OPTIONS).lower(0.0).compile()
  except jax.errors.JaxRuntimeError:
    return None
  return XLA_CONV_OPTIONS


def _tiles(n: int, tile: int, halo: int, align: int):
  """Along one axis of n latents: (window start, end, core start, end) for cores of `tile` latents,
  windows grown by `halo` on each side, starts on multiples of `align`, clipped to [0, n]."""
  for c0 in range(0, n, tile):
    c1 = min(c0 + tile, n)
    r0 = max(c0 - halo, 0) // align * align
    r1 = min(-(-(c1 + halo) // align) * align, n)
    yield r0, r1, c0, c1


def _to_uint8(x_HW3: np.ndarray, rows: int = 256) -> np.ndarray:
  """round(255·x) as uint8, a band of rows at a time: an 8K image's float temporaries would
  otherwise add 0.8 GB to the decode's peak."""
  out = np.empty(x_HW3.shape, np.uint8)
  for i in range(0, x_HW3.shape[0], rows):
    out[i:i + rows] = np.round(x_HW3[i:i + rows] * 255.0)
  return out


def _padded_size(h: int, w: int) -> tuple[int, int]:
  return -(-h // PAD_MULTIPLE) * PAD_MULTIPLE, -(-w // PAD_MULTIPLE) * PAD_MULTIPLE


def _pad(image_HW3: np.ndarray):
  h, w = image_HW3.shape[:2]
  hp, wp = _padded_size(h, w)
  return np.pad(image_HW3, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge"), (hp, wp)


@dataclasses.dataclass(frozen=True, eq=False)
class Codec:
  codec_id: str
  config: dict            # codec constructor kwargs (HyperpriorConfig fields)
  params: dict            # float32 parameter tree
  tables: dict            # {"z": TableSet tree, "y": TableSet tree, "scale_bounds": int64 [L]}
  grids: fixed_point.Grids = fixed_point.GRIDS  # of the integer networks; see `for_version`

  # ---- derived, computed once ----
  @functools.cached_property
  def module(self):
    return make_codec(self.codec_id, **self.config)

  @functools.cached_property
  def spec(self):
    return self.module.hyper_spec()

  @functools.cached_property
  def qparams(self):
    return fixed_point.quantize_hyper_params(self.params["h_s_net"], self.spec, self.grids)

  @functools.cached_property
  def _h_s_int(self) -> fixed_point.HyperSynthesisInt:
    return fixed_point.HyperSynthesisInt(self.qparams, self.spec, self.grids)

  @functools.cached_property
  def _by_grids(self) -> dict:
    return {self.grids: self}

  def for_version(self, version: int) -> "Codec":
    """This codec with the integer grids the files of format `version` were written with."""
    return self.with_grids(fixed_point.grids_for(version))

  def with_grids(self, grids: fixed_point.Grids) -> "Codec":
    """This codec with its integer networks on `grids`: the same model, parameters and compiled
    transforms (shared, not compiled again); only the integer networks differ."""
    if grids not in self._by_grids:
      twin = copy.copy(self)  # shares the cached transforms and `_by_grids`; drops what depends on the grids
      for name in ("qparams", "_h_s_int", "slice_qparams"):
        twin.__dict__.pop(name, None)
      object.__setattr__(twin, "grids", grids)
      self._by_grids[grids] = twin
    return self._by_grids[grids]

  @functools.cached_property
  def slice_spec(self) -> "channelwise.SliceSpec | None":
    """The channel-wise model of y, or None for a plain (mean-)scale hyperprior."""
    get = getattr(self.module, "slice_spec", None)
    return get() if get is not None else None

  @functools.cached_property
  def slice_qparams(self):
    return channelwise.quantize_slice_params(self.params["context"], self.slice_spec, self.grids)

  @functools.cached_property
  def medians(self) -> np.ndarray:
    return np.asarray(self.params["entropy_bottleneck"]["quantiles"][:, 0, 1], np.float32)

  @functools.cached_property
  def z_tables(self) -> coder.TableSet:
    return coder.TableSet.from_tree(self.tables["z"])

  @functools.cached_property
  def y_tables(self) -> coder.TableSet:
    return coder.TableSet.from_tree(self.tables["y"])

  @functools.cached_property
  def fingerprint(self) -> bytes:
    """8-byte hash of id, config, parameters and tables: a file decodes only with its own model."""
    h = hashlib.sha256(self.codec_id.encode())
    h.update(json.dumps(self.config, sort_keys=True).encode())
    for tree in (self.params, self.tables):
      for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(tree)[0], key=lambda kv: str(kv[0])):
        a = np.ascontiguousarray(leaf)
        h.update(str(path).encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.digest()[:8]

  @functools.cached_property
  def _coding_module(self):
    """`module`, or the twin that skips the zero taps of its upsampling kernels when every one of
    them holds a 5×5 transposed conv (imported CompressAI weights, `layers.transposed_taps`):
    the same outputs to float rounding from 25/36 of g_s's convolution work."""
    fields = {f.name for f in dataclasses.fields(self.module)}
    kernels = [v for k, v in flax.traverse_util.flatten_dict(self.params).items() if k[-2:] == ("conv", "kernel")]
    if "transposed_up" in fields and kernels and all(map(layers.transposed_taps, kernels)):
      return self.module.clone(transposed_up=True)
    return self.module

  @functools.cached_property
  def _device_params(self):
    """The parameters on the device once, not copied there again by every jitted call."""
    return jax.device_put(self.params)

  @functools.cached_property
  def _analysis(self):
    m = self.module
    def f(params, image_BHW3):
      y = m.apply({"params": params}, image_BHW3.astype(jnp.float32) / 255.0, method="g_a")
      return y, m.apply({"params": params}, y, method="h_a")
    return jax.jit(f, compiler_options=_compiler_options())

  @functools.cached_property
  def _synthesis(self):
    m = self._coding_module
    return jax.jit(lambda params, y_hat: jnp.clip(m.apply({"params": params}, y_hat, method="g_s"), 0.0, 1.0),
                   compiler_options=_compiler_options())

  def synthesize(self, y_hat_hwM: np.ndarray, tile: int | None = None) -> np.ndarray:
    """g_s, clipped to [0, 1]: y_hat [h, w, M] -> x_hat [16h, 16w, 3] float32.

    Above TILE_ABOVE latent positions (or with `tile`), in tiles of `tile` latents that each see
    `g_s_halo` more on every side: the same output as one call, in the memory of one tile.
    """
    h, w = y_hat_hwM.shape[:2]
    if tile is None:
      if h * w <= TILE_ABOVE:
        return np.asarray(self._synthesis(self._device_params, y_hat_hwM[None]))[0]
      tile = TILE_LATENTS
    halo, align = self.g_s_halo
    out = np.empty((STRIDE * h, STRIDE * w, 3), np.float32)
    for r0, r1, c0, c1 in _tiles(h, tile, halo, align):
      for s0, s1, d0, d1 in _tiles(w, tile, halo, align):
        x = np.asarray(self._synthesis(self._device_params, y_hat_hwM[None, r0:r1, s0:s1]))[0]
        out[STRIDE * c0:STRIDE * c1, STRIDE * d0:STRIDE * d1] = x[STRIDE * (c0 - r0):STRIDE * (c1 - r0),
                                                                  STRIDE * (d0 - s0):STRIDE * (d1 - s0)]
    return out

  @functools.cached_property
  def g_s_halo(self) -> tuple[int, int]:
    """(halo, alignment) in latents: the receptive field of g_s, measured as the support of its
    Jacobian for one latent (a JVP: exact zeros outside it), rounded up to the attention window
    (`align`: tiles start on the window grid, so windows fall as in the whole image)."""
    align = int(getattr(self.module.cfg, "window", 1))
    m = self._coding_module
    g = jax.jit(lambda p, y, t: jax.jvp(lambda v: m.apply({"params": p}, v, method="g_s"), (y,), (t,))[1])
    side = 8 * align
    while True:
      y = jax.random.normal(jax.random.key(0), (1, side, side, self.module.cfg.M), jnp.float32)
      t = jnp.zeros_like(y).at[0, side // 2, side // 2].set(1.0)
      rows, cols = np.nonzero(np.any(np.asarray(g(self._device_params, y, t))[0] != 0, axis=-1))
      reach = max(side // 2 * STRIDE - rows.min(), rows.max() - (side // 2 + 1) * STRIDE + 1,
                  side // 2 * STRIDE - cols.min(), cols.max() - (side // 2 + 1) * STRIDE + 1)
      if rows.min() > 0 and cols.min() > 0 and rows.max() < side * STRIDE - 1 and cols.max() < side * STRIDE - 1:
        halo = -(-int(reach) // STRIDE)
        return -(-halo // align) * align, align
      side *= 2

  # ---- coding ----
  def _hyper(self, z_hat: np.ndarray):
    out = fixed_point.to_coder_grid(self._h_s_int(z_hat), self.grids)
    mu_int, sigma_int = fixed_point.split_mu_sigma(out, self.spec)
    index = np.searchsorted(self.tables["scale_bounds"], sigma_int, side="left")  # in [0, levels - 1]
    return fixed_point.to_float(mu_int), index

  def _slices(self, z_hat: np.ndarray, symbols):
    """Channel-wise model: (y_hat, effective mu, index, symbols, LRP term) from the exact integer
    slice loop."""
    feat_mean, feat_scale = fixed_point.split_mu_sigma(self._h_s_int(z_hat), self.spec)
    y_hat, mu, index, sym, r = channelwise.code_slices(self.slice_qparams, self.slice_spec, feat_mean,
                                                       feat_scale, self.tables["scale_bounds"], symbols,
                                                       self.grids)
    return fixed_point.to_float(y_hat), fixed_point.to_float(mu), index, sym, fixed_point.to_float(r)

  def encode_latents(self, image_HW3: np.ndarray):
    """uint8 image -> (padded size, z symbols, y symbols, y scale indexes); the encoder half."""
    padded, (hp, wp) = _pad(np.asarray(image_HW3))
    y, z = jax.device_get(self._analysis(self._device_params, padded[None]))
    z_sym = np.round(z[0] - self.medians).astype(np.int64)
    z_hat = (z_sym.astype(np.float32) + self.medians).astype(np.float32)
    if self.slice_spec is not None:
      # The encoder runs the decoder's integer loop, rounding y_i around the exact mu_i it yields.
      ranges = [self.slice_spec.slice_range(i) for i in range(self.slice_spec.slices)]
      rounder = lambda i, mu_int, _: np.round(y[0][..., ranges[i]] - fixed_point.to_float(mu_int))
      _, _, index, y_sym, _ = self._slices(z_hat, rounder)
      return (hp, wp), z_sym, y_sym.astype(np.int64), index
    mu, index = self._hyper(z_hat)
    y_sym = np.round(y[0] - mu).astype(np.int64)
    return (hp, wp), z_sym, y_sym, index

  def _y_parts(self, a: np.ndarray) -> list[np.ndarray]:
    """y-shaped array -> one part per coded y string (the slices, or the whole of y)."""
    if self.slice_spec is None:
      return [a]
    return [a[..., self.slice_spec.slice_range(i)] for i in range(self.slice_spec.slices)]

  def compress(self, image_HW3: np.ndarray, seed: int = 0, version: int = bitstream.FORMAT_VERSION) -> bytes:
    """uint8 [H, W, 3] -> complete .dcic file bytes (of format `version`: an older one is read by
    older builds)."""
    return self.compress_with_symbols(image_HW3, seed, version)[0]

  def compress_with_symbols(self, image_HW3: np.ndarray, seed: int = 0, version: int = bitstream.FORMAT_VERSION):
    """(file bytes, z symbols, y symbols): the symbols let callers check a decode bit for bit."""
    if version not in bitstream.WRITABLE_VERSIONS:
      raise UserError(f"cannot write format version {version} (writes {bitstream.WRITABLE_VERSIONS})")
    image_HW3 = np.asarray(image_HW3)
    if image_HW3.dtype != np.uint8 or image_HW3.ndim != 3 or image_HW3.shape[2] != 3:
      raise UserError(f"compress needs a uint8 [H, W, 3] image, got {image_HW3.dtype} {image_HW3.shape}")
    h, w = image_HW3.shape[:2]
    if not (1 <= h <= bitstream.MAX_SIZE and 1 <= w <= bitstream.MAX_SIZE):
      raise UserError(f"image size {h}x{w} is outside 1..{bitstream.MAX_SIZE} pixels per side")
    try:
      (hp, wp), z_sym, y_sym, index = self.for_version(version).encode_latents(image_HW3)
    except OverflowError as e:  # the exactness bound of the integer entropy networks (fixed_point.py)
      raise UserError(f"this model cannot code this image exactly: {e}") from None
    z_idx = np.broadcast_to(np.arange(z_sym.shape[-1]), z_sym.shape)
    enc = coder.Encoder()  # one string: z, then each part of y (the decoder needs them in this order)
    enc.encode(z_sym, z_idx, self.z_tables)
    for s, i in zip(self._y_parts(y_sym), self._y_parts(index)):
      enc.encode(s, i, self.y_tables)
    header = bitstream.Header(codec_id=self.codec_id, fingerprint=self.fingerprint, height=h, width=w,
                              padded_height=hp, padded_width=wp, seed=int(seed), prng_impl=PRNG_IMPL,
                              version=version)
    return bitstream.pack(header, [enc.finish()]), z_sym, y_sym

  def decompress(self, data: bytes, max_pixels: int | None = None) -> Decoded:
    """.dcic bytes -> `Decoded`. The file is hostile: its size is checked against the pixel limit
    (`limits`, or `max_pixels`) and against what its strings can hold before anything is allocated,
    and every problem is a BitstreamError / UserError (docs/reliability.md)."""
    header, strings = bitstream.unpack(data)
    bitstream.check_model(header, self.codec_id, self.fingerprint)
    latents = self.for_version(header.version)  # its integer networks: the grids that wrote the file
    limits.check(header.height, header.width, ".dcic header", max_pixels)
    n_y = 1 if self.slice_spec is None else self.slice_spec.slices
    if len(strings) not in (1, 1 + n_y):
      what = "(z, y)" if n_y == 1 else f"(z and {n_y} y slices)"
      raise BitstreamError(f"expected 1 latent string, or {1 + n_y} {what} as files written before "
                           f"2026-11-26 have, file has {len(strings)}")
    hp, wp = header.padded_height, header.padded_width
    if (hp, wp) != _padded_size(header.height, header.width):
      raise BitstreamError(f"padded size {hp}x{wp} does not match image size {header.height}x{header.width}")
    n_z = self.module.cfg.N
    self._check_room(hp, wp, strings)
    z_idx = np.broadcast_to(np.arange(n_z), (hp // 64, wp // 64, n_z))
    try:
      decoders = [coder.Decoder(s) for s in strings]
      part = lambda i: decoders[min(i, len(decoders) - 1)]  # part 0 is z, then y's parts
      z_sym = part(0).decode(z_idx, self.z_tables)
      z_hat = (z_sym.astype(np.float32) + self.medians).astype(np.float32)
      if self.slice_spec is not None:
        reader = lambda i, _, index_i: part(1 + i).decode(index_i, self.y_tables)
        y_hat, mu, index, _, r = latents._slices(z_hat, reader)
      else:
        mu, index = latents._hyper(z_hat)
        y_sym = part(1).decode(index, self.y_tables)
        y_hat = (y_sym.astype(np.float32) + mu).astype(np.float32)
        r = np.zeros_like(y_hat)
      for d in decoders:
        d.finish()
    except (ArithmeticError, ValueError, RuntimeError) as e:  # hostile latents the integer h_s refuses
      raise BitstreamError(f"latent strings do not decode ({type(e).__name__}: {e})") from None
    if not np.all(np.isfinite(y_hat)):
      raise BitstreamError("latent strings decode to values outside float32")
    x_hat = self.synthesize(y_hat)
    image = _to_uint8(x_hat[:header.height, :header.width])
    return Decoded(header, z_hat, y_hat, mu, index, x_hat, image, np.asarray(r, np.float32))

  def _check_room(self, hp: int, wp: int, strings) -> None:
    """Refuses a size the strings cannot hold, before decoding: every z symbol costs at least its
    channel table's cheapest symbol, every y symbol the cheapest symbol of any y table."""
    n_pos_z, n_y = (hp // 64) * (wp // 64), (hp // 16) * (wp // 16) * self.module.cfg.M
    need = n_pos_z * float(self.z_tables.min_bits.sum()) + n_y * float(self.y_tables.min_bits.min())
    room = sum(coder.budget_bits(len(s)) for s in strings)
    if need > room:
      raise BitstreamError(f"a {hp}x{wp} (padded) image needs at least {need:.0f} bits of latents, "
                           f"the file holds {room - coder.SLACK_BITS * len(strings):.0f}")

  def estimate_bits(self, image_HW3: np.ndarray) -> dict:
    """Bits the entropy models predict for this image (hard rounding, float h_s), for bpp_est."""
    padded, _ = _pad(np.asarray(image_HW3))
    out = self._forward(self._device_params, jnp.asarray(padded[None], jnp.float32) / 255.0)
    return {k: float(v) for k, v in jax.device_get(out).items()}

  @functools.cached_property
  def _forward(self):
    m = self._coding_module
    def f(params, x):
      out = m.apply({"params": params}, x, None, False)
      return {k: -jnp.sum(jnp.log2(v)) for k, v in out["likelihoods"].items()}
    return jax.jit(f, compiler_options=_compiler_options())


# ---- post-training step: coding tables ----
def build_tables(codec_id: str, config: dict, params) -> dict:
  """Integer coding tables from trained params (run once; stored with the model)."""
  module = make_codec(codec_id, **config)
  eb = params["entropy_bottleneck"]
  q = np.asarray(eb["quantiles"], np.float64)[:, 0, :]  # [C, 3]
  med = q[:, 1]
  lo = np.maximum(np.floor(q[:, 0] - med), -MAX_Z_RANGE // 2).astype(np.int64)
  hi = np.minimum(np.ceil(q[:, 2] - med), MAX_Z_RANGE // 2).astype(np.int64)
  lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
  grid = np.arange(lo.min(), hi.max() + 1)
  values = (grid[:, None] + med[None, :]).astype(np.float32)[None, None]  # [1, 1, K, C]
  likelihood = jax.jit(lambda p, z: module.apply({"params": p}, z, method=lambda m, v: m.entropy_bottleneck(v)))
  lik = np.asarray(likelihood(params, jnp.asarray(values)))[0, 0]
  z_pmfs = [lik[lo[c] - grid[0]:hi[c] - grid[0] + 1, c].astype(np.float64) for c in range(len(med))]
  z_tables = coder.make_tableset(z_pmfs, list(lo))

  scales = scale_table()
  from scipy.stats import norm  # pylint: disable=g-import-not-at-top
  tail = float(norm.isf(TAIL_MASS / 2))  # Φ^{-1}(1 - m/2), without rounding 1 - m/2 first
  y_pmfs, y_offsets = [], []
  for s in scales:
    r = int(math.ceil(s * tail))
    y_pmfs.append(gaussian_pmf_np(s, np.arange(-r, r + 1)))
    y_offsets.append(-r)
  y_tables = coder.make_tableset(y_pmfs, y_offsets)
  # Each sigma takes the level nearest in log scale: thresholds at the geometric midpoints,
  # as integers on the fixed-point grid of sigma. (CompressAI rounds up to the next level, which
  # over-estimates sigma by up to one level step and wastes rate on the many small-sigma latents.)
  bounds = np.floor(np.sqrt(scales[:-1] * scales[1:]) * 2.0**fixed_point.A_FRAC).astype(np.int64)
  return {"z": z_tables.to_tree(), "y": y_tables.to_tree(), "scale_bounds": bounds}


def make_codec_from_params(codec_id: str, config: dict, params) -> Codec:
  """The post-training step: tables from params, giving a ready-to-code `Codec`."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  return Codec(codec_id, dict(config), params, build_tables(codec_id, config, params))


def load(path) -> Codec:
  """The codec of an export directory, as the `Codec` (subclass) that codes its id, its
  fingerprint checked against the one recorded."""
  from dcic_jax import checkpointing
  from dcic_jax.codecs.registry import CODING_CLASSES
  info, params, tables = checkpointing.load_export(path)
  module, _, name = CODING_CLASSES.get(info["codec_id"], ":").partition(":")
  cls = getattr(importlib.import_module(module), name) if module else Codec
  codec = cls(info["codec_id"], info["config"], params, tables)
  if codec.fingerprint.hex() != info["fingerprint"]:
    raise UserError(f"checkpoint {path} is damaged: fingerprint {codec.fingerprint.hex()} != {info['fingerprint']}")
  return codec


def fit_quantiles(codec_id: str, config: dict, params, steps: int = 4000) -> tuple[dict, float, float]:
  """params with z's quantiles fitted to their targets, density frozen; also the aux loss before, after.

  Training moves the quantiles with a small fixed-rate Adam beside the model (as CompressAI does),
  which converges only over a long run. After a brief one they sit near their initial ±10, far
  from the tails of the density they describe (the 400-step tcm: aux loss 1821), so z's coding
  range is too narrow (values outside it are escape-coded) and its rounding offsets, the
  medians, are off. The aux loss depends on the quantiles alone, so finishing the job at export
  needs no data: one compiled loop of Adam steps on a [C, 1, 3] array.
  """
  module = make_codec(codec_id, **config)
  eb = params["entropy_bottleneck"]
  def aux(q):
    return module.apply({"params": {**params, "entropy_bottleneck": {**eb, "quantiles": q}}}, method="aux_loss")
  opt = optax.adam(optax.cosine_decay_schedule(1.0, steps, alpha=1e-3))
  def body(_, carry):
    q, state = carry
    updates, state = opt.update(jax.grad(aux)(q), state)
    return optax.apply_updates(q, updates), state

  @jax.jit
  def fit(q0):
    q, _ = jax.lax.fori_loop(0, steps, body, (q0, opt.init(q0)))
    return q, aux(q0), aux(q)
  q, before, after = fit(jnp.asarray(eb["quantiles"], jnp.float32))
  return {**params, "entropy_bottleneck": {**eb, "quantiles": q}}, float(before), float(after)
