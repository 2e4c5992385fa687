"""Swin-Transformer codec (in the spirit of SwinT-ChARM, Zhu, Yang & Cohen, ICLR 2022).

    x ─g_a─► y ─h_a─► z ─Q─► z_hat ─h_s─► (mean_feat, scale_feat) ─ChARM─► per slice (mu, sigma) ; y_hat ─g_s─► x_hat

g_a: four stages of [patch merging (2x2 space-to-depth + linear), `depth` Swin blocks], the blocks
alternating windowed (W-MSA) and shifted-window (SW-MSA) self-attention; g_s mirrors it with
patch splitting (linear to 4·C + depth-to-space). h_a/h_s stay convolutional, so the coder's exact
integer h_s (`codecs/fixed_point.py`) applies unchanged, and y is coded by the channel-wise
autoregressive model of `entropy/channelwise.py` (slices=0: the plain mean-scale hyperprior).

`ChannelwiseHyperprior` is the shared half (hyper path + entropy models) that the hybrid
Transformer–CNN codec (`codecs/hybrid.py`) reuses with its own transforms.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.codecs.hyperprior import HyperpriorParts, HyperSpec, HyperSynthesis
from dcic_jax.codecs.layers import activation, conv, depth_to_space, space_to_depth
from dcic_jax.entropy.channelwise import ChannelwiseContext, SliceSpec
from dcic_jax.entropy.models import EntropyBottleneck

_MASKED = -1e9


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  N: int = 128                  # channels of the transforms (and of z)
  M: int = 192                  # channels of y
  quantizer: str = "noise"      # training proxy for rounding y: "noise" or "ste" (rate still uses noise)
  up_kernel: int = 3            # kernel of the sub-pixel upsampling convs (h_s; hybrid g_s)
  window: int = 8               # attention window side (tokens); maps are padded to a multiple
  depth: int = 2                # attention blocks per stage, alternating W-MSA / SW-MSA
  head_dim: int = 16            # channels per attention head (heads = C // head_dim, at least 1)
  mlp_ratio: int = 2            # hidden width of the blocks' MLP, in multiples of C
  slices: int = 4               # channel-wise AR slices of y; 0 = plain mean-scale hyperprior
  context_hidden: int = 0       # hidden width of the slice networks; 0 = max(M // 2, 8)
  lrp: bool = True              # latent residual prediction (Minnen & Singh 2020)


def num_heads(channels: int, head_dim: int) -> int:
  """Largest head count <= C // head_dim (at least 1) that divides C."""
  h = max(1, channels // head_dim)
  while channels % h:
    h -= 1
  return h


# ---- windowed attention ----
def _window_partition(x_BHWC: jax.Array, w: int) -> jax.Array:
  """[B, H, W, C] (H, W multiples of w) -> [B, nW, w*w, C], windows in row-major order."""
  b, h, wd, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // w, w, wd // w, w, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // w) * (wd // w), w * w, c)


def _window_merge(x_BNTC: jax.Array, w: int, h: int, wd: int) -> jax.Array:
  b, _, _, c = x_BNTC.shape
  x = x_BNTC.reshape(b, h // w, wd // w, w, w, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, wd, c)


def _relative_index(w: int) -> np.ndarray:
  """[T, T] index into the (2w-1)^2 relative-position bias table (Swin)."""
  coords = np.stack(np.meshgrid(np.arange(w), np.arange(w), indexing="ij")).reshape(2, -1)  # [2, T]
  rel = coords[:, :, None] - coords[:, None, :] + (w - 1)  # [2, T, T] in [0, 2w-2]
  return rel[0] * (2 * w - 1) + rel[1]


def _window_labels(h: int, wd: int, hp: int, wp: int, w: int, shift: int) -> np.ndarray:
  """[nW, T] labels in the (padded, rolled) frame; a token attends only to equal labels.

  Labels separate the regions a cyclic shift glues into one window (Swin's SW-MSA mask) and the
  padding from the image, so padded tokens never reach real ones.
  """
  pad = np.zeros((hp, wp), np.int64)
  pad[h:, :] = 1
  pad[:, wd:] = 1
  region = np.zeros((hp, wp), np.int64)
  if shift:
    pad = np.roll(pad, (-shift, -shift), axis=(0, 1))
    for i, rs in enumerate((slice(0, hp - w), slice(hp - w, hp - shift), slice(hp - shift, hp))):
      for j, cs in enumerate((slice(0, wp - w), slice(wp - w, wp - shift), slice(wp - shift, wp))):
        region[rs, cs] = 3 * i + j
  labels = region * 2 + pad
  return np.asarray(_window_partition(labels[None, :, :, None], w))[0, :, :, 0]


class WindowAttention(nn.Module):
  """Multi-head self-attention inside w×w windows (shifted by w/2 if `shift`), with relative bias."""
  heads: int
  window: int
  shift: bool = False

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    b, h, wd, c = x_BHWC.shape
    w = self.window
    s = w // 2 if self.shift else 0
    hp, wp = -(-h // w) * w, -(-wd // w) * w
    x = jnp.pad(x_BHWC, ((0, 0), (0, hp - h), (0, wp - wd), (0, 0)))
    if s:
      x = jnp.roll(x, (-s, -s), axis=(1, 2))
    xw = _window_partition(x, w)  # [B, nW, T, C]
    n_w, t, d = xw.shape[1], w * w, c // self.heads
    qkv = nn.Dense(3 * c, name="qkv")(xw).reshape(b, n_w, t, 3, self.heads, d)
    q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]  # [B, nW, T, heads, d]
    logits = jnp.einsum("bnthd,bnshd->bnhts", q * d**-0.5, k)
    table = self.param("rel_bias", nn.initializers.zeros, ((2 * w - 1) ** 2, self.heads))
    bias = table[_relative_index(w)].transpose(2, 0, 1)  # [heads, T, T]
    labels = _window_labels(h, wd, hp, wp, w, s)  # [nW, T], static
    mask = labels[:, :, None] == labels[:, None, :]
    logits = jnp.where(mask[None, :, None], logits + bias, _MASKED)
    att = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bnhts,bnshd->bnthd", att, v).reshape(b, n_w, t, c)
    out = _window_merge(nn.Dense(c, name="proj")(out), w, hp, wp)
    if s:
      out = jnp.roll(out, (s, s), axis=(1, 2))
    return out[:, :h, :wd]


class SwinBlock(nn.Module):
  """Pre-norm transformer block: x + W-MSA(LN(x)), then x + MLP(LN(x))."""
  heads: int
  window: int
  shift: bool = False
  mlp_ratio: int = 2

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    c = x_BHWC.shape[-1]
    x = x_BHWC + WindowAttention(self.heads, self.window, self.shift, name="attn")(nn.LayerNorm(name="norm1")(x_BHWC))
    h = nn.Dense(self.mlp_ratio * c, name="fc1")(nn.LayerNorm(name="norm2")(x))
    return x + nn.Dense(c, name="fc2")(nn.gelu(h))


class PatchMerge(nn.Module):
  """2× downsampling: 2x2 space-to-depth, (LayerNorm,) linear to `features`."""
  features: int
  norm: bool = True

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    _, hh, ww, _ = x_BHWC.shape
    h = space_to_depth(jnp.pad(x_BHWC, ((0, 0), (0, hh % 2), (0, ww % 2), (0, 0))), 2)  # odd sizes: ceil(H/2)
    if self.norm:
      h = nn.LayerNorm(name="norm")(h)
    return nn.Dense(self.features, name="proj")(h)


class PatchSplit(nn.Module):
  """2× upsampling: LayerNorm, linear to 4·`features`, depth-to-space."""
  features: int

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return depth_to_space(nn.Dense(4 * self.features, name="proj")(nn.LayerNorm(name="norm")(x_BHWC)), 2)


def _stage(cfg: TransformerConfig, x: jax.Array, prefix: str) -> jax.Array:
  c = x.shape[-1]
  for d in range(cfg.depth):
    x = SwinBlock(num_heads(c, cfg.head_dim), cfg.window, d % 2 == 1, cfg.mlp_ratio, name=f"{prefix}_block{d}")(x)
  return x


class SwinAnalysis(nn.Module):
  """g_a: [patch merge, Swin blocks] × 4 (channels N, N, N, M): [B, H, W, 3] -> [B, H/16, W/16, M]."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BHW3: jax.Array) -> jax.Array:
    h = x_BHW3
    for k, c in enumerate((self.cfg.N,) * 3 + (self.cfg.M,)):
      h = PatchMerge(c, norm=k > 0, name=f"merge{k}")(h)
      h = _stage(self.cfg, h, f"stage{k}")
    return h


class SwinSynthesis(nn.Module):
  """g_s: [Swin blocks, patch split] × 4 (mirror of g_a): [B, h, w, M] -> [B, 16h, 16w, 3]."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, y_hat: jax.Array) -> jax.Array:
    h = y_hat
    for k, c in enumerate((self.cfg.N,) * 3 + (3,)):
      h = _stage(self.cfg, h, f"stage{k}")
      h = PatchSplit(c, name=f"split{k}")(h)
    return h


# ---- the shared hyper path + entropy models ----
class ChannelwiseHyperprior(HyperpriorParts, nn.Module):
  """Codec contract (see `codecs/registry.py`) around transforms from `make_transforms`.

  With slices > 0, `h_s` returns the hyper features (mean_feat, scale_feat) that the slice model
  turns into the per-slice Gaussians; `slice_spec()` tells the coder so. Subclasses supply the
  transforms (`make_transforms`).
  """
  cfg: TransformerConfig

  def make_transforms(self) -> tuple[nn.Module, nn.Module]:
    raise NotImplementedError

  def hyper_spec(self) -> HyperSpec:
    n, m = self.cfg.N, self.cfg.M
    if self.cfg.slices:
      return HyperSpec(((n, True), (n, True), (2 * m, False)), "leaky_relu", False, True)
    return HyperSpec(((m, True), (m * 3 // 2, True), (2 * m, False)), "leaky_relu", False, True)

  def slice_spec(self) -> SliceSpec | None:
    cfg = self.cfg
    if not cfg.slices:
      return None
    return SliceSpec(cfg.slices, cfg.M, cfg.M, cfg.context_hidden or max(cfg.M // 2, 8), cfg.lrp)

  def setup(self):
    n = self.cfg.N
    self.g_a_net, self.g_s_net = self.make_transforms()
    self.h_a_layers = [conv(n, 3, 1), conv(n), conv(n)]
    self.h_s_net = HyperSynthesis(self.hyper_spec(), self.cfg.up_kernel)
    self.entropy_bottleneck = EntropyBottleneck(n)
    if self.cfg.slices:
      self.context = ChannelwiseContext(self.slice_spec())

  def g_a(self, x_BHW3: jax.Array) -> jax.Array:
    return self.g_a_net(x_BHW3)

  def g_s(self, y_hat: jax.Array) -> jax.Array:
    return self.g_s_net(y_hat)

  def h_a(self, y: jax.Array) -> jax.Array:
    act = activation("leaky_relu")
    h = y
    for i, layer in enumerate(self.h_a_layers):
      h = layer(h)
      if i < len(self.h_a_layers) - 1:
        h = act(h)
    return h

  def __call__(self, x_BHW3: jax.Array, rng: jax.Array | None = None, train: bool = False) -> dict:
    """As `Hyperprior.__call__`; `mu` is the effective mean (with the LRP term), so y_hat − mu is the symbol."""
    y = self.g_a(x_BHW3)
    z = self.h_a(y)
    z_hat, z_lik, ry = self.quantize_z(z, rng, train)
    a, b = self.h_s(z_hat)
    if self.cfg.slices:
      out = self.context(y, a, b, ry, train, self.cfg.quantizer)
      y_hat, mu, sigma, y_lik = out["y_hat"], out["mu"], out["sigma"], out["likelihood"]
    else:
      mu, sigma = a, b
      y_hat, y_lik = self.quantize_y(y, mu, sigma, ry, train)
    x_hat = self.g_s(y_hat)
    return dict(x_hat=x_hat, y=y, z=z, y_hat=y_hat, z_hat=z_hat, mu=mu, sigma=sigma,
                likelihoods=dict(y=y_lik, z=z_lik))


class SwinTCharm(ChannelwiseHyperprior):
  """Swin-Transformer transforms + channel-wise AR entropy model."""

  def make_transforms(self):
    return SwinAnalysis(self.cfg), SwinSynthesis(self.cfg)


def check_config(cfg: TransformerConfig) -> None:
  if cfg.slices and cfg.M % cfg.slices:
    raise ValueError(f"M={cfg.M} must be divisible by slices={cfg.slices}")
  if cfg.window < 1 or cfg.depth < 1 or cfg.head_dim < 1 or cfg.mlp_ratio < 1:
    raise ValueError(f"window, depth, head_dim and mlp_ratio must be >= 1, got {cfg}")
