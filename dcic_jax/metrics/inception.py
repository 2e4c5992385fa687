"""The FID Inception-v3 in Flax Linen: the network behind FID and KID, and its input pipeline.

FID (Heusel et al. 2017) is defined on the 2048-d "pool3" features of the TensorFlow Inception-v3
graph `inception-2015-12-05` (Szegedy et al., "Rethinking the Inception architecture", CVPR 2016).
pytorch-fid ports that graph as torchvision's `Inception3` with four patched block types, and
clean-fid and torch-fidelity load the same weights file, `pt_inception-2015-12-05-6726825d.pth`.
This module is that network, module for module and with the same names, so a state dict maps onto
it by renaming alone (`perceptual.inception_variables`):

* BasicConv2d = convolution without bias, batch norm (eps 1e-3, running statistics), ReLU.
* The TF graph's patches over torchvision: the 3×3 average pools in the A, C and first E blocks
  leave the padded zeros out of the mean (count_include_pad=False); the second E block (Mixed_7c)
  max-pools instead.
* Input: pytorch-fid resizes to 299×299 with `F.interpolate(mode="bilinear", align_corners=False)`
  (no antialiasing, unlike `jax.image.resize`), then maps [0, 1] to [-1, 1]. `fid_input` does
  exactly that. The network runs on any size of at least 75×75 when the resize is skipped.

Images are NHWC here; the pool3 output is the spatial mean of Mixed_7c, [B, 2048].
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FID_INPUT_SIZE = 299  # pytorch-fid's resize target
POOL3_DIM = 2048


# --------------------------------------------------------------------------------------------------
# Input pipeline.
# --------------------------------------------------------------------------------------------------


def _bilinear_taps(in_size, out_size):
  """Source rows and weights of torch's bilinear resize (align_corners=False, no antialias).

  Output pixel i samples the input at (i + ½)·in/out − ½, clamped at 0; the right neighbour is
  clamped to the last pixel. Built in float32, as torch does for float32 images.
  """
  scale = np.float32(in_size / out_size)
  src = np.maximum((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale
                   - np.float32(0.5), np.float32(0.0))
  lo = np.minimum(src.astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  w_hi = (src - lo.astype(np.float32)).astype(np.float32)
  return lo, hi, np.float32(1.0) - w_hi, w_hi


def resize_bilinear(x_BxHxWxC, size_HW):
  """`F.interpolate(x, size, mode="bilinear", align_corners=False)` on NHWC images.

  Width first, then height: the same products and sums as torch's kernel, which weights the two
  rows' width-interpolated values. Sizes are static.
  """
  out_h, out_w = size_HW
  _, h, w, _ = x_BxHxWxC.shape
  lo, hi, w_lo, w_hi = _bilinear_taps(w, out_w)
  x = x_BxHxWxC[:, :, lo] * w_lo[:, None] + x_BxHxWxC[:, :, hi] * w_hi[:, None]
  lo, hi, w_lo, w_hi = _bilinear_taps(h, out_h)
  return x[:, lo] * w_lo[:, None, None] + x[:, hi] * w_hi[:, None, None]


@functools.partial(jax.jit, static_argnums=(1,))
def fid_input(images_BxHxWx3, resize=True):
  """uint8 or [0, 1] float images -> the network's input: 299×299 (if resize), in [-1, 1]."""
  x = images_BxHxWx3
  x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
  if resize:
    x = resize_bilinear(x, (FID_INPUT_SIZE, FID_INPUT_SIZE))
  return 2.0 * x - 1.0


# --------------------------------------------------------------------------------------------------
# Network.
# --------------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
  """Convolution (no bias) -> batch norm with running statistics (eps 1e-3) -> ReLU."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  """3×3, stride 1, padding 1, padded zeros not counted (the TF graph's pooling)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x, stride, pad):
  return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
  """Mixed_5b..5d: 1×1, 5×5, double 3×3 and pooled branches."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a: grid reduction 35 -> 17."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..6e: factorised 7×7 branches with c7 inner channels."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a: grid reduction 17 -> 8."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv2d(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b / 7c: expanded 1×3 + 3×1 branches; Mixed_7c's pool branch max-pools (TF graph)."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
    b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    pooled = _max_pool_3x3(x, 1, 1) if self.max_pool else _avg_pool_3x3(x)
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """FID Inception-v3 up to pool3: x [B, H, W, 3] in [-1, 1] (H, W ≥ 75) -> features [B, 2048]."""

  @nn.compact
  def __call__(self, x_BxHxWx3):
    x = BasicConv2d(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x_BxHxWx3)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3(x, 2, 0)
    x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3(x, 2, 0)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))  # adaptive average pool to 1×1


@jax.jit
def pool3(variables, x_BxHxWx3):
  """Jitted pool3 features of network inputs (already in [-1, 1]); compiled once per shape."""
  return InceptionV3().apply(variables, x_BxHxWx3)
