"""LPIPS in Flax Linen: the `lpips` package's v0.1 metric with AlexNet or VGG16 features.

Zhang, Isola, Efros, Shechtman, Wang, "The unreasonable effectiveness of deep features as a
perceptual metric", CVPR 2018. For images x0, x1 in [-1, 1]:

  d(x0, x1) = Σ_l mean_hw( w_l · (f̂_l(x0) − f̂_l(x1))² ),   f̂ = f / (‖f‖_channels + 1e-10)

where f_l are five ReLU outputs of the backbone applied to (x − shift) / scale (the ScalingLayer,
the ImageNet statistics mapped to [-1, 1]) and w_l ≥ 0 are the learned 1×1 heads `lin0..lin4`
(no bias; their dropout is off at evaluation).

Backbones are torchvision's `features` stacks. Every convolution is named `conv{i}` after its
index in that Sequential, so `features.{i}.weight` (torchvision) and `net.slice{k}.{i}.weight`
(the lpips module, whose slices keep those indices) both map onto it by renaming
(`perceptual.lpips_variables`). Taps, as in `lpips.pretrained_networks`:
  alex: relu1..relu5, after each of the five convolutions (max pools 3×3/2 after conv0 and conv3);
  vgg:  relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, the last ReLU before each 2×2 max pool.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# lpips.ScalingLayer: (x - shift) / scale, per RGB channel.
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)

# Layers of torchvision's `features`: ("conv", index, out channels, kernel, stride, padding, tap)
# or ("pool", index, window, stride). `tap` marks the ReLU outputs LPIPS compares.
ALEX_LAYERS = (
    ("conv", 0, 64, 11, 4, 2, True), ("pool", 2, 3, 2),
    ("conv", 3, 192, 5, 1, 2, True), ("pool", 5, 3, 2),
    ("conv", 6, 384, 3, 1, 1, True),
    ("conv", 8, 256, 3, 1, 1, True),
    ("conv", 10, 256, 3, 1, 1, True),
)


def _vgg16_layers():
  layers, index = [], 0
  for stage, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
    if stage:
      layers.append(("pool", index, 2, 2))
      index += 1
    for j in range(convs):
      layers.append(("conv", index, width, 3, 1, 1, j == convs - 1))
      index += 2  # conv + ReLU
  return tuple(layers)


VGG16_LAYERS = _vgg16_layers()
BACKBONES = {"alex": ALEX_LAYERS, "vgg": VGG16_LAYERS}
# Widths of the five taps: alex (64, 192, 384, 256, 256), vgg (64, 128, 256, 512, 512).
CHANNELS = {net: tuple(l[2] for l in layers if l[0] == "conv" and l[6])
            for net, layers in BACKBONES.items()}


class Backbone(nn.Module):
  """torchvision `features` up to the last tap; returns the five tapped ReLU outputs."""
  layers: tuple

  @nn.compact
  def __call__(self, x):
    taps = []
    for layer in self.layers:
      if layer[0] == "pool":
        _, _, window, stride = layer
        x = nn.max_pool(x, (window, window), (stride, stride))
        continue
      _, index, features, kernel, stride, pad, tap = layer
      x = nn.relu(nn.Conv(features, (kernel, kernel), strides=stride,
                          padding=((pad, pad), (pad, pad)), name=f"conv{index}")(x))
      if tap:
        taps.append(x)
    return taps


def _unit_normalize(f_BxHxWxC, eps=1e-10):
  """lpips.normalize_tensor: divide by the channel L2 norm (+ eps outside the square root)."""
  return f_BxHxWxC / (jnp.sqrt(jnp.sum(f_BxHxWxC**2, axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
  """LPIPS v0.1: x0, x1 [B, H, W, 3] in [-1, 1] -> per-layer distances [B, 5] (sum = LPIPS)."""
  net: str = "alex"

  @nn.compact
  def __call__(self, x0_BxHxWx3, x1_BxHxWx3):
    b = x0_BxHxWx3.shape[0]
    x = jnp.concatenate([x0_BxHxWx3, x1_BxHxWx3], axis=0)
    x = (x - SHIFT) / SCALE
    per_layer = []
    for k, f in enumerate(Backbone(BACKBONES[self.net], name="net")(x)):
      f = _unit_normalize(f)
      diff = (f[:b] - f[b:]) ** 2
      weighted = nn.Conv(1, (1, 1), use_bias=False, name=f"lin{k}")(diff)
      per_layer.append(jnp.mean(weighted, axis=(1, 2, 3)))
    return jnp.stack(per_layer, axis=-1)


@functools.partial(jax.jit, static_argnums=(0,))
def lpips_per_layer(net, variables, x0_BxHxWx3, x1_BxHxWx3):
  """Jitted per-layer LPIPS [B, 5] of inputs in [-1, 1]; sum over the last axis for LPIPS."""
  return LPIPS(net).apply(variables, x0_BxHxWx3, x1_BxHxWx3)
