"""The official TCM codec (Liu, Sun & Katto, CVPR 2023, "Learned Image Compression with Mixed
Transformer-CNN Architectures"), layer for layer as `jmliu206/LIC_TCM` `models/tcm.py` builds it,
so its published checkpoints (N = 64 and N = 128, M = 320) import one to one (`tcm_import.py`).

    x ─g_a─► y ─h_a─► z ─Q─► z_hat ─h_mean_s, h_scale_s─► (mean_feat, scale_feat)
    per slice i:  support = [feat ‖ y_hat_0 .. y_hat_{min(i, max_support)-1}]
                  mu_i    = cc_mean_i (SWAtten_mean_i (mean support))
                  sigma_i = cc_scale_i(SWAtten_scale_i(scale support))
                  y_hat_i = round(y_i − mu_i) + mu_i + 0.5·tanh(lrp_i(SWAtten_mean_i(..) ‖ y_hat_i))
    y_hat ─g_s─► x_hat

g_a / g_s / h_a / h_*_s mix ResidualBlockWithStride / ResidualBlockUpsample (CompressAI, with
GDN / IGDN) with ConvTransBlocks: a 1×1 conv, one half of the channels through a residual conv
block (added to itself once more, as the official code does), the other through a Swin block
pair (W-MSA then SW-MSA, relative position bias, exact GELU, LayerNorm eps 1e-5), a 1×1 conv
back, plus the input. Parameter names are the official state-dict keys with every numeric
component joined to its predecessor (`g_a.1.conv1_1.weight` -> `g_a_1/conv1_1/kernel`).

Where the official code is defined, this is the same function: inputs whose sides are multiples
of 128 and at least 256 (y at least 16 per side, a multiple of the window 8; the official
`SwinBlock` zero-pads y of side <= 8 to a size that its window partition or the LRP concatenation
then rejects: 128² and 192² inputs fail there, 256² and 384² run). Elsewhere (the project
pads images to multiples of 64 only) the attention windows are padded and the padding masked out,
as `codecs/transformer.py` does, so every size codes.

Coding (`tcm_codec.TCMCodec`): the entropy-parameter networks (h_mean_s / h_scale_s, SWAtten,
cc_mean / cc_scale, LRP) run at coding time as their exact integer twin (`tcm_codec.IntegerTCM`,
ops in `integer_ops.py`: integer products exact in float64, exact division and square root,
exp / Φ by lookup tables stored with the export), so files decode bit for bit on any platform, as
the other codecs' do; this module is the float model (import, forward, g_a / g_s) (docs/tcm.md).
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from dcic_jax.codecs.hyperprior import HyperpriorParts
from dcic_jax.codecs.layers import GDN, conv
from dcic_jax.codecs.transformer import _relative_index, _window_labels, _window_merge, _window_partition
from dcic_jax.entropy.models import EntropyBottleneck, gaussian_likelihood
from dcic_jax.entropy import quantization

_MASKED = -1e9
_LN_EPS = 1e-5  # torch.nn.LayerNorm's default


@dataclasses.dataclass(frozen=True)
class TCMOfficialConfig:
  """The official constructor's knobs; defaults are its defaults (the N = 128 checkpoints)."""
  N: int = 128                                   # half the width of the transforms (2N channels)
  M: int = 320                                   # channels of y
  depths: tuple[int, ...] = (2, 2, 2, 2, 2, 2)   # ConvTransBlocks per stage (official `config`)
  head_dim: tuple[int, ...] = (8, 16, 32, 32, 16, 8)  # per stage: g_a × 3, g_s × 3
  window: int = 8                                # window of g_a / g_s / SWAtten
  num_slices: int = 5
  max_support_slices: int = 5
  z_channels: int = 192                          # channels of z (hard-coded 192 officially)
  hyper_head_dim: int = 32                       # ConvTransBlocks of h_a / h_*_s
  hyper_window: int = 4
  atten_dim: int = 128                           # SWAtten inter_dim
  atten_head_dim: int = 16
  cc_hidden: tuple[int, ...] = (224, 128)        # hidden widths of cc_* and lrp transforms

  def __post_init__(self):  # JSON gives lists; the module needs hashable fields
    for f in ("depths", "head_dim", "cc_hidden"):
      object.__setattr__(self, f, tuple(int(v) for v in getattr(self, f)))

  @property
  def support_slices(self) -> int:
    """Decoded slices a slice network reads at most (official: all of them when negative)."""
    return self.num_slices if self.max_support_slices < 0 else self.max_support_slices

  def support_channels(self, i: int) -> int:
    return self.M + self.M // self.num_slices * min(i, self.support_slices)


def check_config(cfg: TCMOfficialConfig) -> None:
  if cfg.M % cfg.num_slices:
    raise ValueError(f"M={cfg.M} must be divisible by num_slices={cfg.num_slices}")
  if len(cfg.depths) != 6 or len(cfg.head_dim) != 6:
    raise ValueError("depths and head_dim need 6 entries (g_a × 3, g_s × 3)")
  if cfg.N % min(cfg.head_dim) or cfg.N % cfg.hyper_head_dim or cfg.atten_dim % cfg.atten_head_dim:
    raise ValueError(f"head dims must divide the attention widths, got {cfg}")


@dataclasses.dataclass(frozen=True)
class _CodingDims:
  """What `Codec` reads from `module.cfg`: z channels, y channels, the attention window."""
  N: int
  M: int
  window: int


# ---- layers ----
def pixel_shuffle(x_BHWC: jax.Array, r: int = 2) -> jax.Array:
  """torch.nn.PixelShuffle in NHWC: channel c·r² + a·r + b lands at (r·h + a, r·w + b, c)."""
  b, h, w, crr = x_BHWC.shape
  c = crr // (r * r)
  return x_BHWC.reshape(b, h, w, c, r, r).transpose(0, 1, 4, 2, 5, 3).reshape(b, h * r, w * r, c)


def _leaky(x):
  return nn.leaky_relu(x, 0.01)


class ResidualBlockWithStride(nn.Module):
  features: int
  stride: int = 2

  @nn.compact
  def __call__(self, x):
    out = GDN(name="gdn")(conv(self.features, 3, 1, name="conv2")(_leaky(conv(self.features, 3, self.stride,
                                                                               name="conv1")(x))))
    skip = self.stride != 1 or x.shape[-1] != self.features
    return out + (conv(self.features, 1, self.stride, name="skip")(x) if skip else x)


class ResidualBlockUpsample(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    subpel = lambda name: pixel_shuffle(conv(4 * self.features, 3, 1, name=name)(x))
    out = _leaky(subpel("subpel_conv_0"))
    out = GDN(inverse=True, name="igdn")(conv(self.features, 3, 1, name="conv")(out))
    return out + subpel("upsample_0")


class ResidualBlock(nn.Module):
  """Two 3×3 convs, leaky ReLU after each, plus the input (in = out channels)."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    return _leaky(conv(c, 3, 1, name="conv2")(_leaky(conv(c, 3, 1, name="conv1")(x)))) + x


class WMSA(nn.Module):
  """Window (or shifted-window) multi-head self-attention, relative position bias [heads, 2w−1, 2w−1]."""
  head_dim: int
  window: int
  shifted: bool

  @nn.compact
  def __call__(self, x_BHWC):
    b, h, wd, c = x_BHWC.shape
    w, heads, d = self.window, c // self.head_dim, self.head_dim
    s = w // 2 if self.shifted else 0
    hp, wp = -(-h // w) * w, -(-wd // w) * w
    x = jnp.pad(x_BHWC, ((0, 0), (0, hp - h), (0, wp - wd), (0, 0)))
    if s:
      x = jnp.roll(x, (-s, -s), axis=(1, 2))
    xw = _window_partition(x, w)  # [B, nW, T, C]
    n_w, t = xw.shape[1], w * w
    qkv = nn.Dense(3 * c, name="embedding_layer")(xw).reshape(b, n_w, t, 3, heads, d)
    q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]  # [B, nW, T, heads, d]
    logits = jnp.einsum("bnthd,bnshd->bnhts", q, k) * d**-0.5
    table = self.param("relative_position_params", nn.initializers.normal(0.02), (heads, 2 * w - 1, 2 * w - 1))
    bias = table.reshape(heads, -1)[:, _relative_index(w)]  # [heads, T, T]
    logits = logits + bias
    labels = _window_labels(h, wd, hp, wp, w, s)  # [nW, T], static: all equal without shift or padding
    if (labels != labels[:, :1]).any():
      logits = jnp.where((labels[:, :, None] == labels[:, None, :])[None, :, None], logits, _MASKED)
    att = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bnhts,bnshd->bnthd", att, v).reshape(b, n_w, t, c)
    out = _window_merge(nn.Dense(c, name="linear")(out), w, hp, wp)
    if s:
      out = jnp.roll(out, (s, s), axis=(1, 2))
    return out[:, :h, :wd]


class Block(nn.Module):
  """Swin block: x + WMSA(LN(x)), then x + MLP(LN(x)) with a 4× exact-GELU MLP."""
  head_dim: int
  window: int
  shifted: bool

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = x + WMSA(self.head_dim, self.window, self.shifted, name="msa")(nn.LayerNorm(_LN_EPS, name="ln1")(x))
    h = nn.gelu(nn.Dense(4 * c, name="mlp_0")(nn.LayerNorm(_LN_EPS, name="ln2")(x)), approximate=False)
    return x + nn.Dense(c, name="mlp_2")(h)


class ConvTransBlock(nn.Module):
  """x + 1×1([2·a + ResBlock(a) ‖ SwinBlock(b)]), [a ‖ b] = 1×1(x) split in halves."""
  head_dim: int
  window: int
  shifted: bool

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    a, b = jnp.split(conv(c, 1, 1, name="conv1_1")(x), 2, axis=-1)
    a = ResidualBlock(name="conv_block")(a) + a
    b = Block(self.head_dim, self.window, self.shifted, name="trans_block")(b)
    return x + conv(c, 1, 1, name="conv1_2")(jnp.concatenate([a, b], -1))


class SwinPair(nn.Module):
  """The official `SwinBlock`: a W-MSA block then an SW-MSA block."""
  head_dim: int
  window: int

  @nn.compact
  def __call__(self, x):
    x = Block(self.head_dim, self.window, False, name="block_1")(x)
    return Block(self.head_dim, self.window, True, name="block_2")(x)


class ResidualUnit(nn.Module):
  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    h = nn.relu(conv(c // 2, 1, 1, name="conv_0")(x))
    h = nn.relu(conv(c // 2, 3, 1, name="conv_2")(h))
    return nn.relu(conv(c, 1, 1, name="conv_4")(h) + x)


class SWAtten(nn.Module):
  """1×1 in, x + a(x)·sigmoid(b(Swin(x))), 1×1 out (CompressAI AttentionBlock around a Swin pair)."""
  features: int
  inter: int
  head_dim: int
  window: int

  @nn.compact
  def __call__(self, x):
    x = conv(self.inter, 1, 1, name="in_conv")(x)
    z = SwinPair(self.head_dim, self.window, name="non_local_block")(x)
    a, b = x, z
    for j in range(3):
      a = ResidualUnit(name=f"conv_a_{j}")(a)
      b = ResidualUnit(name=f"conv_b_{j}")(b)
    b = conv(self.inter, 1, 1, name="conv_b_3")(b)
    return conv(self.features, 1, 1, name="out_conv")(a * jax.nn.sigmoid(b) + x)


def _stack_layer(name: str, k: int, n: int) -> tuple[str, bool]:
  """(attribute name, pixel shuffle after?) of layer k of an n-layer official stack."""
  last_subpel = k == n - 1 and name in ("g_s", "h_mean_s", "h_scale_s")
  return (f"{name}_{k}_0" if last_subpel else f"{name}_{k}"), last_subpel


def _gelu(x):
  return nn.gelu(x, approximate=False)


# ---- the codec ----
class TCMOfficial(HyperpriorParts, nn.Module):
  """Codec contract of `codecs/registry.py` (g_a, g_s, h_a, h_s, medians, aux_loss, __call__);
  coded by `TCMCodec` with its own integer twin of the entropy networks (`tcm_codec.IntegerTCM`)."""
  tcm: TCMOfficialConfig

  @property
  def cfg(self) -> _CodingDims:
    return _CodingDims(self.tcm.z_channels, self.tcm.M, self.tcm.window)

  def setup(self):
    c = self.tcm
    n2, w = 2 * c.N, c.window

    def ctb(stage_head, win, count):
      return [ConvTransBlock(stage_head, win, k % 2 == 1) for k in range(count)]

    d, hd = c.depths, c.head_dim
    # The official nn.Sequential stacks; the last layer of g_s and h_*_s is a subpel conv, itself a
    # Sequential (conv, PixelShuffle), whence its key `<stack>.<k>.0`.
    stacks = dict(
        g_a=([ResidualBlockWithStride(n2)] + ctb(hd[0], w, d[0]) + [ResidualBlockWithStride(n2)]
             + ctb(hd[1], w, d[1]) + [ResidualBlockWithStride(n2)] + ctb(hd[2], w, d[2]) + [conv(c.M, 3, 2)]),
        g_s=([ResidualBlockUpsample(n2)] + ctb(hd[3], w, d[3]) + [ResidualBlockUpsample(n2)]
             + ctb(hd[4], w, d[4]) + [ResidualBlockUpsample(n2)] + ctb(hd[5], w, d[5]) + [conv(4 * 3, 3, 1)]),
        h_a=([ResidualBlockWithStride(n2)] + ctb(c.hyper_head_dim, c.hyper_window, d[0])
             + [conv(c.z_channels, 3, 2)]),
        h_mean_s=([ResidualBlockUpsample(n2)] + ctb(c.hyper_head_dim, c.hyper_window, d[3]) + [conv(4 * c.M, 3, 1)]),
        h_scale_s=([ResidualBlockUpsample(n2)] + ctb(c.hyper_head_dim, c.hyper_window, d[3]) + [conv(4 * c.M, 3, 1)]))
    # Flax names a module assigned in setup after its attribute: these names are the official
    # keys with every numeric component joined to the one before (`tcm_import.flax_path`).
    for name, layers in stacks.items():
      for k, layer in enumerate(layers):
        setattr(self, _stack_layer(name, k, len(layers))[0], layer)
    self._depth = {name: len(layers) for name, layers in stacks.items()}
    cs = c.M // c.num_slices
    for i in range(c.num_slices):
      for kind in ("mean", "scale"):
        setattr(self, f"atten_{kind}_{i}_0", SWAtten(c.support_channels(i), c.atten_dim, c.atten_head_dim, w))
      for kind in ("cc_mean_transforms", "cc_scale_transforms", "lrp_transforms"):
        for j, f in enumerate(c.cc_hidden + (cs,)):
          setattr(self, f"{kind}_{i}_{2 * j}", conv(f, 3, 1))
    self.entropy_bottleneck = EntropyBottleneck(c.z_channels)

  def _run(self, name: str, x):
    n = self._depth[name]
    for k in range(n):
      attr, shuffle = _stack_layer(name, k, n)
      x = getattr(self, attr)(x)
      if shuffle:
        x = pixel_shuffle(x)
    return x

  def g_a(self, x_BHW3: jax.Array) -> jax.Array:
    return self._run("g_a", x_BHW3)

  def g_s(self, y_hat: jax.Array) -> jax.Array:
    return self._run("g_s", y_hat)

  def h_a(self, y: jax.Array) -> jax.Array:
    return self._run("h_a", y)

  def h_s(self, z_hat: jax.Array):
    """(mean_feat, scale_feat) [B, h, w, M] each: the hyper features of the slice networks."""
    return self._run("h_mean_s", z_hat), self._run("h_scale_s", z_hat)

  def _cc(self, kind: str, i: int, x):
    n = len(self.tcm.cc_hidden) + 1
    for j in range(n):
      x = getattr(self, f"{kind}_{i}_{2 * j}")(x)
      if j < n - 1:
        x = _gelu(x)
    return x

  def slice_params(self, i: int, mean_feat, scale_feat, support: list):
    """Slice i's (mu_i, sigma_i, mean support after SWAtten) from the hyper features and the
    decoded slices (only the first `max_support_slices` are read)."""
    support = list(support[:self.tcm.support_slices])
    mean_support = getattr(self, f"atten_mean_{i}_0")(jnp.concatenate([mean_feat] + support, -1))
    scale_support = getattr(self, f"atten_scale_{i}_0")(jnp.concatenate([scale_feat] + support, -1))
    return self._cc("cc_mean_transforms", i, mean_support), self._cc("cc_scale_transforms", i, scale_support), \
        mean_support

  def slice_params_at(self, z_hat, y_hat):
    """(mu, sigma) [B, h, w, M] of every slice, without the LRP term, at a decoded z_hat and y_hat
    (slice i reads the decoded slices before it): the float twin of what the coder computes."""
    mean_feat, scale_feat = self.h_s(z_hat)
    cs = self.tcm.M // self.tcm.num_slices
    done = [y_hat[..., i * cs:(i + 1) * cs] for i in range(self.tcm.num_slices)]
    outs = [self.slice_params(i, mean_feat, scale_feat, done[:i]) for i in range(self.tcm.num_slices)]
    return jnp.concatenate([o[0] for o in outs], -1), jnp.concatenate([o[1] for o in outs], -1)

  def slice_lrp(self, i: int, mean_support, y_hat_i):
    """The latent residual r_i = 0.5·tanh(lrp_i(mean support ‖ y_hat_i))."""
    return 0.5 * jnp.tanh(self._cc("lrp_transforms", i, jnp.concatenate([mean_support, y_hat_i], -1)))

  def __call__(self, x_BHW3: jax.Array, rng: jax.Array | None = None, train: bool = False) -> dict:
    """Evaluation forward of the official model (hard rounding): its means, scales and
    likelihoods; `mu` is the effective mean (with the LRP term), so y_hat − mu is the symbol."""
    if train:
      raise NotImplementedError("tcm-official is for imported checkpoints; train the `tcm` codec instead")
    y = self.g_a(x_BHW3)
    z = self.h_a(y)
    z_hat, z_lik, _ = self.quantize_z(z, rng, False)
    mean_feat, scale_feat = self.h_s(z_hat)
    cs = self.tcm.M // self.tcm.num_slices
    done, means, mus, sigmas, liks, rs = [], [], [], [], [], []
    for i in range(self.tcm.num_slices):
      mu_i, sigma_i, mean_support = self.slice_params(i, mean_feat, scale_feat, done)
      y_hat_i = quantization.quantize(y[..., i * cs:(i + 1) * cs], "round", offset=mu_i)
      liks.append(gaussian_likelihood(y_hat_i, mu_i, sigma_i))
      r_i = self.slice_lrp(i, mean_support, y_hat_i)
      done.append(y_hat_i + r_i)
      means.append(mu_i)
      mus.append(mu_i + r_i)
      sigmas.append(sigma_i)
      rs.append(r_i)
    cat = lambda xs: jnp.concatenate(xs, -1)
    y_hat = cat(done)
    return dict(x_hat=self.g_s(y_hat), y=y, z=z, y_hat=y_hat, z_hat=z_hat, mu=cat(mus), means=cat(means),
                sigma=cat(sigmas), r=cat(rs), likelihoods=dict(y=cat(liks), z=z_lik))


def build(cfg: TCMOfficialConfig) -> TCMOfficial:
  return TCMOfficial(cfg)
