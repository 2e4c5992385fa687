"""The ε-prediction UNet of the diffusion prior (DDPM / ADM family).

Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (the UNet: sinusoidal timestep
embedding, GroupNorm residual blocks, self-attention at low resolutions, additive conditioning);
Nichol & Dhariwal 2021, "Improved DDPM" (learned σ: 2·C outputs); Dhariwal & Nichol 2021,
"Diffusion Models Beat GANs" (ADM: scale-shift conditioning `h = GN(h)·(1+s) + b`, head channels,
residual up/down-sampling blocks).

One module covers the layouts of the two common PyTorch code bases (guided-diffusion `UNetModel`
and diffusers `UNet2DModel`), so `convert.py` only renames and transposes arrays. Everything is
convolutional except the attention, so a prior trained on crops runs on whole images whose height
and width are multiples of 2**(levels-1).

Conventions: NHWC, images in [-1, 1]; convolutions use PyTorch's symmetric padding; upsampling is
nearest-neighbour + 3×3 conv (never `nn.ConvTranspose`, 4-7× slower here).
"""
import dataclasses
import functools
import math
import os
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _default_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  """DDPM's initialiser: variance scaling 1, fan_avg, uniform.

  Drawn flat and reshaped: the same numbers as a shaped draw, but XLA:CPU compiles 4-D
  threefry draws several times slower than flat ones.
  """
  receptive = math.prod(shape[:-2])
  fan_avg = 0.5 * receptive * (shape[-2] + shape[-1])
  bound = math.sqrt(3.0 / fan_avg)
  return jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)


# The last layer of every residual branch starts at zero (ADM's `zero_module`), so each block
# starts as the identity.
_zero_init = nn.initializers.zeros


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Architecture of the ε-network; built as `UNetConfig(**config.prior.unet)`."""
  in_channels: int = 3                   # image channels
  out_channels: int = 3                  # ε channels (learned σ adds as many again)
  base_channels: int = 128               # channels at level 0 (ADM `model_channels`)
  channel_mult: tuple[int, ...] = (1, 2, 2, 2)  # channels of level l = base · mult[l]
  num_res_blocks: int = 2                # residual blocks per level on the way down
  attention_levels: tuple[int, ...] = (1,)  # levels with self-attention (level l: H/2**l)
  mid_attention: bool = True             # attention in the middle block
  mid_attention_norm: bool = True        # GroupNorm before the middle attention (diffusers drops
                                         # it for scale-shift models)
  num_heads: int = 1                     # attention heads (ignored if head_channels > 0)
  head_channels: int = -1                # channels per head (ADM `num_head_channels`)
  dropout: float = 0.0                   # dropout before the 2nd conv of each residual block
  use_scale_shift_norm: bool = True      # ADM FiLM conditioning; False: additive (DDPM)
  resblock_updown: bool = False          # resample with residual blocks (ADM, BigGAN-style)
  conv_resample: bool = True             # strided / post-upsampling conv; False: avg-pool
  downsample_padding: int = 1            # 1: symmetric pad; 0: pad bottom/right (diffusers)
  norm_groups: int = 32                  # GroupNorm groups
  norm_eps: float = 1e-5                 # GroupNorm epsilon
  flip_sin_to_cos: bool = True           # embedding order [cos, sin] (ADM); False: [sin, cos]
  freq_shift: float = 0.0                # diffusers `freq_shift` (1 for the DDPM ports)
  mid_scale_factor: float = 1.0          # diffusers `mid_block_scale_factor`
  learn_sigma: bool = False              # 2·C outputs; the ε half is returned
  remat: bool = False                    # recompute blocks in the backward pass (memory)
  attention_max_scores: int = 2**24      # attention scores (queries × keys × heads) held at once;
                                         # beyond it queries go in chunks (memory). 0: never chunk
  dtype: str = "float32"                 # compute dtype of convs/matmuls; norms stay float32

  def __post_init__(self):
    # ConfigDicts hand over lists; tuples keep the config hashable.
    for name in ("channel_mult", "attention_levels"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if self.downsample_padding not in (0, 1):
      raise ValueError(f"downsample_padding must be 0 or 1, got {self.downsample_padding}")
    for level in self.attention_levels:
      if not 0 <= level < len(self.channel_mult):
        raise ValueError(f"attention level {level} outside 0..{len(self.channel_mult) - 1}")

  @property
  def num_levels(self) -> int:
    return len(self.channel_mult)

  @property
  def size_multiple(self) -> int:
    """Height and width must be multiples of this."""
    return 2 ** (self.num_levels - 1)


def timestep_embedding(t_B: jax.Array, dim: int, flip_sin_to_cos: bool = True,
                       freq_shift: float = 0.0, max_period: float = 10_000.0) -> jax.Array:
  """Transformer sinusoidal embedding of (possibly fractional) timesteps → [B, dim]."""
  half = dim // 2
  freqs_F = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
                    / (half - freq_shift))
  args_BF = t_B.astype(jnp.float32)[:, None] * freqs_F[None]
  sin, cos = jnp.sin(args_BF), jnp.cos(args_BF)
  emb_BD = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
  if dim % 2:
    emb_BD = jnp.pad(emb_BD, ((0, 0), (0, 1)))
  return emb_BD


# Convolutions whose output has at most this many pixels in the whole batch are computed as one
# patch matrix product.
SMALL_CONV_PIXELS = 64
NHWC_DIMS = ("NHWC", "HWIO", "NHWC")   # the convolutions' dimension numbers


def _patch_product_output(x_shape, w_shape, window_strides, padding, lhs_dilation=None,
                          rhs_dilation=None, feature_group_count: int = 1) -> tuple[int, int] | None:
  """(out_h, out_w) where `conv_nhwc` computes the convolution as a patch matrix product."""
  if (isinstance(padding, str) or feature_group_count != 1
      or any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ()))):
    return None
  (top, bottom), (left, right) = padding
  out_h = (x_shape[1] + top + bottom - w_shape[0]) // window_strides[0] + 1
  out_w = (x_shape[2] + left + right - w_shape[1]) // window_strides[1] + 1
  smaller_than_kernel = x_shape[1] < w_shape[0] or x_shape[2] < w_shape[1]
  if (min(top, bottom, left, right) < 0 or out_h < 1 or out_w < 1
      or not (smaller_than_kernel or x_shape[0] * out_h * out_w <= SMALL_CONV_PIXELS)):
    return None
  return out_h, out_w


def conv_nhwc(x_BHWC: jax.Array, w_HWIO: jax.Array, window_strides, padding, lhs_dilation=None,
              rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
              precision=None) -> jax.Array:
  """`lax.conv_general_dilated` for `nn.Conv` (NHWC, HWIO), as one matrix product on inputs
  smaller than the kernel and where the output has at most `SMALL_CONV_PIXELS` pixels in the
  whole batch.

  There (the 2×2 to 8×8 levels of a 6-level UNet at 64², batch 1) the convolution reads a large
  kernel to do little work, and XLA:CPU's convolution kernels do it slowly: on inputs smaller than
  the kernel it swapped the operands, reversed the whole kernel on every call and ran its generic
  path (the 14 3×3 convolutions of google/ddpm-celebahq-256's UNet at its 2×2 level took two
  thirds of its forward CPU time); a 3×3, 512-channel convolution at 4×4 took 2.5× and at 8×8
  1.2× the time of the product (with a batch, a train step's 8×8 level, the convolution is no
  slower). The patches of so small an output are at most 64·9·C floats, so gathering them and
  doing one product with the kernel as a [kh·kw·I, O] matrix reads the kernel once. Same sums, in
  another order (float rounding).
  """
  out_hw = _patch_product_output(x_BHWC.shape, w_HWIO.shape, window_strides, padding, lhs_dilation,
                                 rhs_dilation, feature_group_count)
  if out_hw is None:
    return jax.lax.conv_general_dilated(
        x_BHWC, w_HWIO, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision)
  kh, kw, cin, cout = w_HWIO.shape
  (out_h, out_w), (sh, sw) = out_hw, window_strides
  (top, bottom), (left, right) = padding
  x = jnp.pad(x_BHWC, ((0, 0), (top, bottom), (left, right), (0, 0)))
  patches = [x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
             for i in range(kh) for j in range(kw)]
  p_BHWK = jnp.concatenate(patches, axis=-1)   # K = (tap row, tap column, input channel)
  return jax.lax.dot_general(p_BHWK, w_HWIO.reshape(kh * kw * cin, cout),
                             (((3,), (0,)), ((), ())), precision=precision)


def _input_grad_padding(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> tuple[int, int]:
  """Padding of the stride-1 convolution of the (stride-dilated) output cotangent with the
  reversed kernel that gives the input's cotangent, for one spatial axis."""
  out = (size + pad[0] + pad[1] - kernel) // stride + 1
  before = kernel - 1 - pad[0]
  return before, size + kernel - 2 - (out - 1) * stride - before


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def conv_with_grad_kernel(x_BHWC: jax.Array, w_HWIO: jax.Array, w_rev_HWOI: jax.Array,
                          strides: tuple[int, int], padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """`conv_nhwc(x, w)` whose input cotangent is a plain convolution with `w_rev_HWOI`, the kernel
  reversed in H and W with I and O swapped (`grad_kernels`), made once outside the caller's loop.

  The cotangent of a convolution's input is a convolution with that reversed, transposed kernel.
  Left to autodiff, XLA:CPU reverses and relayouts every kernel on every call, even inside a
  `lax.scan` where the kernels are loop-invariant (it does not hoist reverses and transposes):
  87 copies and 0.57 of 2.0 CPU-seconds of the CelebA-HQ DDPM UNet's ∂ε/∂x at 64².
  """
  return conv_nhwc(x_BHWC, w_HWIO, strides, padding, dimension_numbers=NHWC_DIMS)


def _conv_with_grad_kernel_fwd(x_BHWC, w_HWIO, w_rev_HWOI, strides, padding):
  return conv_with_grad_kernel(x_BHWC, w_HWIO, w_rev_HWOI, strides, padding), (x_BHWC, w_HWIO,
                                                                                w_rev_HWOI)


def _conv_with_grad_kernel_bwd(strides, padding, res, g_BHWC):
  x_BHWC, w_HWIO, w_rev_HWOI = res
  conv = lambda x, w: conv_nhwc(x, w, strides, padding, dimension_numbers=NHWC_DIMS)
  g_x, g_w = jax.vjp(conv, x_BHWC, w_HWIO)[1](g_BHWC)   # XLA drops what the caller does not use
  if not _patch_product_output(x_BHWC.shape, w_HWIO.shape, strides, padding):   # a convolution
    pad = [_input_grad_padding(n, k, s, p)
           for n, k, s, p in zip(x_BHWC.shape[1:3], w_HWIO.shape[:2], strides, padding)]
    g_x = jax.lax.conv_general_dilated(g_BHWC, w_rev_HWOI, (1, 1), pad, lhs_dilation=strides,
                                       dimension_numbers=NHWC_DIMS)
  return g_x, g_w, jnp.zeros_like(w_rev_HWOI)


conv_with_grad_kernel.defvjp(_conv_with_grad_kernel_fwd, _conv_with_grad_kernel_bwd)


def reverse_kernel(w_HWIO: jax.Array) -> jax.Array:
  """The kernel of the input-gradient convolution: reversed in H and W, I and O swapped."""
  return jnp.swapaxes(w_HWIO[::-1, ::-1], 2, 3)


class Conv(nn.Module):
  """`nn.Conv` (NHWC, HWIO kernel, bias; the same parameter tree) through `conv_nhwc`, with PyTorch's
  explicit padding. Where the variables hold a `grad_kernels` collection (`prepare_for_input_grads`),
  the input's cotangent uses that prepared kernel (`conv_with_grad_kernel`)."""
  features: int
  kernel: int
  dtype: Any
  stride: int = 1
  zero: bool = False
  padding: Any = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    k = self.kernel
    w_HWIO = self.param("kernel", _zero_init if self.zero else _default_init,
                        (k, k, x_BHWC.shape[-1], self.features), jnp.float32)
    b_C = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    x_BHWC, w_HWIO, b_C = nn.dtypes.promote_dtype(x_BHWC, w_HWIO, b_C, dtype=self.dtype)
    padding = self.padding if self.padding is not None else ((k // 2, k // 2),) * 2
    strides = (self.stride, self.stride)
    if self.has_variable("grad_kernels", "kernel"):
      w_rev = self.get_variable("grad_kernels", "kernel").astype(w_HWIO.dtype)
      y = conv_with_grad_kernel(x_BHWC, w_HWIO, w_rev, strides, tuple(map(tuple, padding)))
    else:
      y = conv_nhwc(x_BHWC, w_HWIO, strides, padding, dimension_numbers=NHWC_DIMS)
    return y + b_C


def grad_kernels(params: Any) -> Any:
  """The `grad_kernels` collection for `params`: every convolution's `reverse_kernel`."""
  def walk(tree):
    out = {}
    for name, sub in tree.items():
      if name == "kernel" and getattr(sub, "ndim", 0) == 4:
        out[name] = reverse_kernel(sub)
      elif hasattr(sub, "items"):
        inner = walk(sub)
        if inner:
          out[name] = inner
    return out
  return walk(params)


def _group_mean(sum_BC: jax.Array, groups: int, count: int) -> jax.Array:
  """Per-channel sums [B, C] -> their group's mean, broadcast back to [B, 1, 1, C]."""
  b, c = sum_BC.shape
  mean_BG = jnp.sum(sum_BC.reshape(b, groups, c // groups), axis=-1) / count
  return jnp.repeat(mean_BG, c // groups, axis=1)[:, None, None, :]


def _normalise(x_BHWC: jax.Array, gamma_BC: jax.Array, beta_BC: jax.Array, groups: int,
               epsilon: float, silu: bool, keep_centred: bool) -> jax.Array:
  """act(x̂·γ + β) with each statistic a sum over H, W per channel, then over the group's channels
  (`nn.GroupNorm` reduces [B, H, W, G, C/G] over (H, W, C/G) at once, which XLA:CPU runs 2-3×
  slower, forward and backward); the variance is two-pass. `keep_centred`: x − mean is one value
  that both the variance and the output read (XLA writes it out); otherwise the variance's sum
  recomputes it and the output is x·a + (β − mean·a), PyTorch's form, and nothing the size of x
  is written before the output."""
  b, h, w, c = x_BHWC.shape
  count = h * w * (c // groups)
  mean = _group_mean(jnp.sum(x_BHWC, axis=(1, 2)), groups, count)
  gamma, beta = gamma_BC[:, None, None, :], beta_BC[:, None, None, :]
  if keep_centred:
    d = x_BHWC - mean
    z = d * (jax.lax.rsqrt(_group_mean(jnp.sum(d * d, axis=(1, 2)), groups, count) + epsilon)
             * gamma) + beta
  else:
    var = _group_mean(jnp.sum(jnp.square(x_BHWC - mean), axis=(1, 2)), groups, count)
    a = jax.lax.rsqrt(var + epsilon) * gamma
    z = x_BHWC * a + (beta - mean * a)
  return jax.nn.silu(z) if silu else z


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5))
def group_norm_act(x_BHWC: jax.Array, gamma_BC: jax.Array, beta_BC: jax.Array, groups: int,
                   epsilon: float, silu: bool) -> jax.Array:
  """act(x̂·γ + β): x normalised over each group, γ and β per image and channel, float32.

  Evaluated, it writes nothing the size of x before its output (ddpm32's forward on XLA:CPU:
  0.94-0.95× the time); differentiated, it is the form that keeps x − mean, whose derivative
  XLA:CPU runs faster (docs/benchmarks.md). The two differ by float rounding.
  """
  return _normalise(x_BHWC, gamma_BC, beta_BC, groups, epsilon, silu, keep_centred=False)


@group_norm_act.defjvp
def _group_norm_act_jvp(groups, epsilon, silu, primals, tangents):
  return jax.jvp(lambda *a: _normalise(*a, groups, epsilon, silu, keep_centred=True),
                 primals, tangents)


class GroupNorm(nn.Module):
  """GroupNorm over [B, H, W, C] with statistics in float32 and the two-pass variance (PyTorch's),
  optionally followed by a per-image scale and shift (ADM's scale-shift norm) and a SiLU, as one
  `group_norm_act`.

  `nn.GroupNorm`'s parameters (`scale`, `bias`) and numbers (to float rounding).
  """
  num_groups: int
  epsilon: float

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, scale_shift: tuple[jax.Array, jax.Array] | None = None,
               silu: bool = False) -> jax.Array:
    b, _, _, c = x_BHWC.shape
    if c % self.num_groups:
      raise ValueError(f"{c} channels do not split into {self.num_groups} groups")
    gamma_C = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    beta_C = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    gamma_BC, beta_BC = jnp.broadcast_to(gamma_C, (b, c)), jnp.broadcast_to(beta_C, (b, c))
    if scale_shift is not None:   # (x̂·γ + β)·(1 + s) + t
      s_BC, t_BC = scale_shift
      gamma_BC, beta_BC = gamma_BC * (1.0 + s_BC), beta_BC * (1.0 + s_BC) + t_BC
    return group_norm_act(x_BHWC.astype(jnp.float32), gamma_BC, beta_BC, self.num_groups,
                          self.epsilon, silu)


def _group_norm(cfg: UNetConfig, name: str) -> GroupNorm:
  return GroupNorm(num_groups=cfg.norm_groups, epsilon=cfg.norm_eps, name=name)


def upsample_nearest(x_BHWC: jax.Array) -> jax.Array:
  """2× nearest-neighbour upsampling by broadcasting (no gather, no transposed conv)."""
  b, h, w, c = x_BHWC.shape
  x = jnp.broadcast_to(x_BHWC[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


def avg_pool2(x_BHWC: jax.Array) -> jax.Array:
  return nn.avg_pool(x_BHWC, (2, 2), strides=(2, 2))


def softmax_attention(q_BTNH: jax.Array, k_BTNH: jax.Array, v_BTNH: jax.Array) -> jax.Array:
  """softmax(q·kᵀ/√H)·v as two batched matrix products over [B, N, T, H], heads leading.

  `jax.nn.dot_product_attention`'s numbers to float rounding: the softmax is applied as
  exp(s − max s) before the second product and its normalisation after it (on [T, H] instead of
  [T, T]). On XLA:CPU that one builds the scores in a [B, 1, N, T, T] layout and copies them;
  this form is 3× faster forward and 10-40% faster backward (32², 4 heads: 27 → 8 ms).
  Exponentials and sums in float32 whatever the compute dtype.
  """
  q_BNTH, k_BNTH, v_BNTH = (jnp.swapaxes(a, 1, 2) for a in (q_BTNH, k_BTNH, v_BTNH))
  scale = 1.0 / math.sqrt(q_BTNH.shape[-1])
  s_BNTT = jnp.matmul(q_BNTH * jnp.asarray(scale, q_BNTH.dtype),
                      jnp.swapaxes(k_BNTH, -1, -2)).astype(jnp.float32)
  e_BNTT = jnp.exp(s_BNTT - jax.lax.stop_gradient(jnp.max(s_BNTT, axis=-1, keepdims=True)))
  a_BNTH = jnp.matmul(e_BNTT.astype(v_BNTH.dtype), v_BNTH).astype(jnp.float32)
  a_BNTH = a_BNTH / jnp.sum(e_BNTT, axis=-1, keepdims=True)
  return jnp.swapaxes(a_BNTH, 1, 2).astype(q_BTNH.dtype)


def attention(q_BTNH: jax.Array, k_BTNH: jax.Array, v_BTNH: jax.Array,
              max_scores: int = 0) -> jax.Array:
  """softmax(q·kᵀ/√H)·v, with the queries in chunks of at most `max_scores` scores.

  Each query row's softmax is over all keys whatever the chunk, so chunking changes only the
  float rounding of the matmuls. Every chunk is rematerialised, so neither the forward nor the
  backward ever holds more than one chunk's [queries × keys × heads] matrix (at 768×512 with
  attention at 1/4 resolution the whole matrix is 9 GiB). max_scores = 0: one chunk.
  """
  b, tokens, heads, _ = q_BTNH.shape
  per_query = b * tokens * heads
  if max_scores <= 0 or tokens * per_query <= max_scores:
    return softmax_attention(q_BTNH, k_BTNH, v_BTNH)
  num_chunks = -(-tokens // max(1, max_scores // per_query))
  chunk = -(-tokens // num_chunks)                  # balanced chunks: padding < num_chunks rows
  q = jnp.pad(q_BTNH, ((0, 0), (0, num_chunks * chunk - tokens), (0, 0), (0, 0)))
  q_CBQNH = jnp.moveaxis(q.reshape(b, num_chunks, chunk, *q.shape[2:]), 1, 0)
  one_chunk = jax.checkpoint(lambda q: softmax_attention(q, k_BTNH, v_BTNH))
  a_CBQNH = jax.lax.map(one_chunk, q_CBQNH)
  a_BTNH = jnp.moveaxis(a_CBQNH, 0, 1).reshape(q.shape)
  return a_BTNH[:, :tokens]


def _call(module: nn.Module, *args):
  return module(*args)


def _remat_forward(module: nn.Module, *args):
  """The block's output, and a vjp that keeps only the block's inputs (and variables)."""
  return nn.vjp(nn.remat(_call, prevent_cse=False), module, *args)


def _remat_backward(vjp_fn, ct):
  """Recompute the block only once its output's cotangent exists.

  `jax.checkpoint` alone (`nn.remat`) leaves the recomputation depending on the block's inputs
  only. Its `optimization_barrier` stops CSE, but XLA:CPU drops the barriers before scheduling,
  and the scheduler then runs the recomputation next to the forward, keeping every activation
  alive as if there were no remat. Adding 0·ct[0] to the saved inputs is a data dependence no
  pass removes (XLA folds 0·a only for integers). It changes nothing but the sign of exact
  zeros, and spreads a non-finite ct[0] over the block (whose gradient it has spoilt anyway).
  """
  zero = 0.0 * jnp.ravel(jax.tree.leaves(ct)[0])[0]
  tie = lambda a: a + zero.astype(a.dtype) if jnp.issubdtype(a.dtype, jnp.inexact) else a
  return jax.tree.map(tie, vjp_fn)(ct)


# remat_call(module, *args) == module(*args); its backward recomputes the module (see above).
remat_call = nn.custom_vjp(_call, forward_fn=_remat_forward, backward_fn=_remat_backward)


class ResBlock(nn.Module):
  """GroupNorm-SiLU-conv ×2 residual block conditioned on the timestep embedding.

  `resample` ∈ {None, "up", "down"} moves the resolution change inside the block (ADM
  `resblock_updown`, diffusers `resnet` up/down types): after the first norm on the branch and
  on the skip path alike.
  """
  cfg: UNetConfig
  features: int
  resample: str | None = None
  output_scale: float = 1.0
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, emb_BE: jax.Array) -> jax.Array:
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    h = _group_norm(cfg, "norm_1")(x_BHWC, silu=True).astype(dtype)
    skip = x_BHWC
    if self.resample is not None:
      resample = upsample_nearest if self.resample == "up" else avg_pool2
      h, skip = resample(h), resample(skip)
    h = Conv(self.features, 3, dtype, name="conv_1")(h)

    emb_channels = 2 * self.features if cfg.use_scale_shift_norm else self.features
    emb_BE = nn.Dense(emb_channels, dtype=dtype, kernel_init=_default_init,
                      name="emb_proj")(nn.silu(emb_BE))
    if cfg.use_scale_shift_norm:
      scale_shift = jnp.split(emb_BE.astype(jnp.float32), 2, axis=-1)
      h = _group_norm(cfg, "norm_2")(h, scale_shift, silu=True)
    else:
      h = _group_norm(cfg, "norm_2")(h + emb_BE[:, None, None, :], silu=True)
    h = h.astype(dtype)
    if cfg.dropout > 0.0 and not self.deterministic:
      # Inverted dropout with a flat mask draw (as nn.Dropout, but a 4-D threefry draw
      # compiles several times slower on CPU).
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - cfg.dropout, (h.size,))
      h = jnp.where(keep.reshape(h.shape), h / (1.0 - cfg.dropout), 0.0).astype(dtype)
    h = Conv(self.features, 3, dtype, name="conv_2", zero=True)(h)

    if skip.shape[-1] != self.features:
      skip = Conv(self.features, 1, dtype, name="skip_proj")(skip)
    out = skip.astype(jnp.float32) + h.astype(jnp.float32)
    return out / self.output_scale if self.output_scale != 1.0 else out


class AttnBlock(nn.Module):
  """Multi-head self-attention over all H·W positions, residual.

  The fused `qkv` projection's outputs are ordered (3, heads, head_dim): q, k, v for all heads.
  """
  cfg: UNetConfig
  use_norm: bool = True
  output_scale: float = 1.0

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    b, height, width, c = x_BHWC.shape
    heads = c // cfg.head_channels if cfg.head_channels > 0 else cfg.num_heads
    if c % heads:
      raise ValueError(f"{c} channels do not split into {heads} attention heads")
    h = _group_norm(cfg, "norm")(x_BHWC) if self.use_norm else x_BHWC
    h_BTC = h.astype(dtype).reshape(b, height * width, c)
    qkv = nn.Dense(3 * c, dtype=dtype, kernel_init=_default_init, name="qkv")(h_BTC)
    q_BTNH, k_BTNH, v_BTNH = jnp.split(qkv.reshape(b, height * width, 3 * heads, c // heads), 3,
                                       axis=2)
    a_BTNH = attention(q_BTNH, k_BTNH, v_BTNH, cfg.attention_max_scores)
    out = nn.Dense(c, dtype=dtype, kernel_init=_zero_init,
                   name="proj_out")(a_BTNH.reshape(b, height * width, c))
    out = x_BHWC.astype(jnp.float32) + out.reshape(b, height, width, c).astype(jnp.float32)
    return out / self.output_scale if self.output_scale != 1.0 else out


class Downsample(nn.Module):
  """Halve H and W: 3×3 stride-2 conv (PyTorch padding) or 2×2 average pooling."""
  cfg: UNetConfig

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    if not self.cfg.conv_resample:
      return avg_pool2(x_BHWC)
    pad = ((1, 1), (1, 1)) if self.cfg.downsample_padding == 1 else ((0, 1), (0, 1))
    return Conv(x_BHWC.shape[-1], 3, jnp.dtype(self.cfg.dtype), stride=2, name="conv",
                 padding=pad)(x_BHWC)


class Upsample(nn.Module):
  """Double H and W: nearest neighbour, then a 3×3 conv."""
  cfg: UNetConfig

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    x_BHWC = upsample_nearest(x_BHWC)
    if not self.cfg.conv_resample:
      return x_BHWC
    return Conv(x_BHWC.shape[-1], 3, jnp.dtype(self.cfg.dtype), name="conv")(x_BHWC)


class UNet(nn.Module):
  """ε_θ(x_t, t): [B, H, W, C] noisy images and [B] timesteps → [B, H, W, C] predicted noise.

  Parameter names (used by `convert.py`): `time_embed_{0,1}`, `conv_in`, `down_{l}_res_{j}`,
  `down_{l}_attn_{j}`, `down_{l}_resample`, `mid_res_{0,1}`, `mid_attn`, `up_{l}_res_{j}`,
  `up_{l}_attn_{j}`, `up_{l}_resample`, `norm_out`, `conv_out`.
  """
  cfg: UNetConfig

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, t_B: jax.Array, train: bool = False,
               with_variance: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    b, height, width, _ = x_BHWC.shape
    if height % cfg.size_multiple or width % cfg.size_multiple:
      raise ValueError(f"image size {height}x{width} is not a multiple of {cfg.size_multiple}: "
                       "pad the image first")
    t_B = jnp.broadcast_to(jnp.asarray(t_B), (b,))
    call = remat_call if cfg.remat else _call
    res_block = lambda *a, **kw: functools.partial(call, ResBlock(*a, **kw))
    attn_block = lambda *a, **kw: functools.partial(call, AttnBlock(*a, **kw))
    det = not train

    emb = timestep_embedding(t_B, cfg.base_channels, cfg.flip_sin_to_cos, cfg.freq_shift)
    emb = nn.Dense(4 * cfg.base_channels, dtype=dtype, kernel_init=_default_init,
                   name="time_embed_0")(emb)
    emb_BE = nn.Dense(4 * cfg.base_channels, dtype=dtype, kernel_init=_default_init,
                      name="time_embed_1")(nn.silu(emb))

    h = Conv(cfg.channel_mult[0] * cfg.base_channels, 3, dtype, name="conv_in")(
        x_BHWC.astype(dtype))
    skips = [h]
    for level, mult in enumerate(cfg.channel_mult):
      for j in range(cfg.num_res_blocks):
        h = res_block(cfg, mult * cfg.base_channels, deterministic=det,
                      name=f"down_{level}_res_{j}")(h, emb_BE)
        if level in cfg.attention_levels:
          h = attn_block(cfg, name=f"down_{level}_attn_{j}")(h)
        skips.append(h)
      if level != cfg.num_levels - 1:
        if cfg.resblock_updown:
          h = res_block(cfg, h.shape[-1], resample="down", deterministic=det,
                        name=f"down_{level}_resample")(h, emb_BE)
        else:
          h = Downsample(cfg, name=f"down_{level}_resample")(h)
        skips.append(h)

    h = res_block(cfg, h.shape[-1], output_scale=cfg.mid_scale_factor, deterministic=det,
                  name="mid_res_0")(h, emb_BE)
    if cfg.mid_attention:
      h = attn_block(cfg, use_norm=cfg.mid_attention_norm, output_scale=cfg.mid_scale_factor,
                     name="mid_attn")(h)
    h = res_block(cfg, h.shape[-1], output_scale=cfg.mid_scale_factor, deterministic=det,
                  name="mid_res_1")(h, emb_BE)

    for level in reversed(range(cfg.num_levels)):
      features = cfg.channel_mult[level] * cfg.base_channels
      for j in range(cfg.num_res_blocks + 1):
        h = jnp.concatenate([h.astype(dtype), skips.pop().astype(dtype)], axis=-1)
        h = res_block(cfg, features, deterministic=det, name=f"up_{level}_res_{j}")(h, emb_BE)
        if level in cfg.attention_levels:
          h = attn_block(cfg, name=f"up_{level}_attn_{j}")(h)
      if level != 0:
        if cfg.resblock_updown:
          h = res_block(cfg, features, resample="up", deterministic=det,
                        name=f"up_{level}_resample")(h, emb_BE)
        else:
          h = Upsample(cfg, name=f"up_{level}_resample")(h)

    h = _group_norm(cfg, "norm_out")(h, silu=True).astype(dtype)
    out_channels = 2 * cfg.out_channels if cfg.learn_sigma else cfg.out_channels
    out = Conv(out_channels, 3, dtype, name="conv_out", zero=True)(h).astype(jnp.float32)
    if with_variance:  # (ε, v): v ∈ [−1, 1] interpolates log σ² between β̃ and β (learned σ)
      if not cfg.learn_sigma:
        raise ValueError("with_variance=True needs a learned-σ UNet (learn_sigma=True)")
      return out[..., :cfg.out_channels], out[..., cfg.out_channels:]
    return out[..., :cfg.out_channels]  # the ε half of a learned-σ output


def cpu_batch_parts(batch: int) -> int:
  """How many independent slices a batch of `batch` runs as on XLA:CPU: the largest divisor of
  the batch up to the cores this process may use (1 on accelerators and for a single image).

  XLA:CPU runs a convolution with few input channels (32; `bench_unet.py --mode convs`) on one
  thread, one after another, but runs independent ops concurrently: the same UNet on two halves of
  a batch of 4 is two independent chains, and on 2 cores takes 0.76× the time forward and 0.70×
  with ∂ε/∂x, with the same bits (docs/benchmarks.md).
  """
  if batch < 2 or jax.default_backend() != "cpu":
    return 1
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
  return max(d for d in range(1, min(batch, cores) + 1) if batch % d == 0)


def apply_by_parts(fn: Callable[..., Any], x_BHWC: jax.Array, t_B: jax.Array) -> Any:
  """fn(x, t, i) on the `cpu_batch_parts` slices of the batch (i: the slice's index), outputs
  concatenated; fn(x_BHWC, t_B, None) where the batch stays whole. The one place the ε-function
  and the prior's train step slice a batch."""
  parts = cpu_batch_parts(x_BHWC.shape[0])
  if parts == 1:
    return fn(x_BHWC, t_B, None)
  t_B = jnp.broadcast_to(t_B, x_BHWC.shape[:1])
  outs = [fn(x, t, i) for i, (x, t) in enumerate(zip(jnp.split(x_BHWC, parts), jnp.split(t_B, parts)))]
  return jax.tree.map(lambda *a: jnp.concatenate(a), *outs)


@flax.struct.dataclass
class GradReadyParams:
  """A UNet's parameters with their `grad_kernels`: what `eps_fn` takes where it is differentiated
  with respect to x many times over the same weights (a decoder's `lax.scan`)."""
  params: Any
  grad_kernels: Any


def prepare_for_input_grads(params: Any) -> Any:
  """Make the input-gradient kernels once, outside the loop that calls ∂ε/∂x (`Conv`).

  On a CPU only (there a UNet's ∂ε/∂x inside a `lax.scan` took 4× its time without them,
  docs/benchmarks.md); elsewhere `params` as they are: the accelerators' convolution libraries
  take the kernel as it is, and the copy would cost memory.
  """
  if jax.default_backend() != "cpu":
    return params
  return GradReadyParams(params, grad_kernels(params))


def _variables(params: Any) -> dict:
  if isinstance(params, GradReadyParams):
    return {"params": params.params, "grad_kernels": params.grad_kernels}
  return {"params": params}


def make_eps_fn(model: UNet) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """Wrap a UNet as the pure `eps_fn(params, x_t_BHWC, t_B) -> eps_BHWC` the samplers take.

  `params` is the UNet's parameter tree or `prepare_for_input_grads(params)` (same ε, a cheaper
  ∂ε/∂x); `eps_fn.prepare_for_input_grads` makes the latter. A learned-σ UNet's function also
  carries `eps_fn.eps_and_v(params, x_t, t) -> (ε, v)` (`learned_sigma.learned_variance_fn` finds
  it), so the steps that can use σ_θ do. On a CPU a batch runs as independent slices
  (`cpu_batch_parts`).
  """
  def eps_fn(params, x_t_BHWC, t_B):
    return apply_by_parts(lambda x, t, _: model.apply(_variables(params), x, t), x_t_BHWC, t_B)
  eps_fn.prepare_for_input_grads = prepare_for_input_grads
  if model.cfg.learn_sigma:
    eps_fn.eps_and_v = lambda params, x_t_BHWC, t_B: apply_by_parts(
        lambda x, t, _: model.apply(_variables(params), x, t, with_variance=True), x_t_BHWC, t_B)
  return eps_fn


def init_params(cfg: UNetConfig, key: jax.Array, image_size: int = 32) -> Any:
  """Initial parameters (they do not depend on the image size, which only has to be valid)."""
  size = max(image_size, cfg.size_multiple)
  x = jnp.zeros((1, size, size, cfg.in_channels), jnp.float32)
  return jax.jit(UNet(cfg).init)(key, x, jnp.zeros((1,), jnp.int32))["params"]


def random_params(cfg: UNetConfig, seed: int) -> Any:
  """Random parameters with no zero-initialised layer, drawn with numpy (nothing to compile).

  For tests and benchmarks, where `init_params`' zero output layers would make ε ≡ 0: kernels
  ~ N(0, 1/fan_in), biases ~ N(0, 0.1²), norm scales ~ 1 + N(0, 0.1²).
  """
  shapes = jax.eval_shape(
      UNet(cfg).init, jax.random.key(0),
      jnp.zeros((1, cfg.size_multiple, cfg.size_multiple, cfg.in_channels)),
      jnp.zeros((1,), jnp.int32))["params"]
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = path[-1].key
    if name == "kernel":
      value = rng.standard_normal(s.shape) / math.sqrt(math.prod(s.shape[:-1]))
    elif name == "scale":
      value = 1.0 + 0.1 * rng.standard_normal(s.shape)
    else:
      value = 0.1 * rng.standard_normal(s.shape)
    return jnp.asarray(value, s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)
