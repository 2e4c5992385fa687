"""Hybrid Transformer–CNN codec, in the spirit of Liu, Sun & Katto, CVPR 2023 ("TCM").

Each transform stage holds mixed Transformer–CNN blocks: a 1×1 conv, then the channels split in
two halves, one through a convolutional residual block (local texture), the other through a
(shifted-)window attention block (non-local structure); a 1×1 conv recombines them, with a
residual connection around the whole block. g_a downsamples by stride-2 3×3 convs, g_s upsamples
by sub-pixel convs (conv + depth-to-space). Hyper path and channel-wise entropy model are those of
`codecs/transformer.py` (`ChannelwiseHyperprior`).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from dcic_jax.codecs.layers import Upsample, conv
from dcic_jax.codecs.transformer import ChannelwiseHyperprior, SwinBlock, TransformerConfig, num_heads


class ConvTransBlock(nn.Module):
  """x + 1x1([ResBlock(a) ‖ SwinBlock(b)]), with [a ‖ b] = 1x1(x) split along channels."""
  cfg: TransformerConfig
  shift: bool = False

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    c = x_BHWC.shape[-1]
    half = c // 2
    a, b = jnp.split(conv(c, 1, 1, name="in")(x_BHWC), [half], axis=-1)
    r = nn.leaky_relu(conv(half, 3, 1, name="res0")(a), 0.01)
    a = a + conv(half, 3, 1, name="res1")(r)
    b = SwinBlock(num_heads(c - half, self.cfg.head_dim), self.cfg.window, self.shift, self.cfg.mlp_ratio,
                  name="swin")(b)
    # Zero-initialised recombination: every block starts as the identity, so the untrained stack of
    # un-normalised residual blocks does not blow the activations up (training diverged without it).
    out = nn.Conv(c, (1, 1), kernel_init=nn.initializers.zeros, name="out")
    return x_BHWC + out(jnp.concatenate([a, b], -1))


def _stage(cfg: TransformerConfig, x: jax.Array, prefix: str) -> jax.Array:
  for d in range(cfg.depth):
    x = ConvTransBlock(cfg, d % 2 == 1, name=f"{prefix}_block{d}")(x)
  return x


class HybridAnalysis(nn.Module):
  """g_a: [stride-2 conv, mixed blocks] × 3, stride-2 conv to M: [B, H, W, 3] -> [B, H/16, W/16, M]."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BHW3: jax.Array) -> jax.Array:
    h = x_BHW3
    for k in range(3):
      h = _stage(self.cfg, conv(self.cfg.N, 3, 2, name=f"down{k}")(h), f"stage{k}")
    return conv(self.cfg.M, 3, 2, name="down3")(h)


class HybridSynthesis(nn.Module):
  """g_s: [sub-pixel up, mixed blocks] × 3, sub-pixel up to RGB: [B, h, w, M] -> [B, 16h, 16w, 3]."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, y_hat: jax.Array) -> jax.Array:
    h = y_hat
    for k in range(3):
      h = _stage(self.cfg, Upsample(self.cfg.N, self.cfg.up_kernel, name=f"up{k}")(h), f"stage{k}")
    return Upsample(3, self.cfg.up_kernel, name="up3")(h)


class HybridTCM(ChannelwiseHyperprior):
  """Mixed Transformer–CNN transforms + channel-wise AR entropy model."""

  def make_transforms(self):
    return HybridAnalysis(self.cfg), HybridSynthesis(self.cfg)
