"""Full-reference distortion metrics: PSNR on 8-bit RGB, SSIM and MS-SSIM.

* SSIM: Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to
  structural similarity", IEEE TIP 2004.
* MS-SSIM: Wang, Simoncelli, Bovik, "Multi-scale structural similarity for image quality
  assessment", Asilomar 2003.

Conventions (docs/design.md §4): images are NHWC, float in [0, 1] or uint8. The SSIM family follows the
`pytorch-msssim` package (v1.0) that learned-compression papers report with: 11-tap Gaussian window
(σ = 1.5) applied separably with "valid" borders, K1 = 0.01, K2 = 0.03, the five Wang et al.
weights, 2×2 average pooling between scales (an odd side is zero-padded by one pixel on both ends
and the zeros count in the average), negative contrast-structure terms clipped to 0, and per-image
values averaged over channels. tests/test_metrics_image.py pins parity with that package through a
stored fixture (max |error| ≈ 1e-6 for MS-SSIM, 5e-6 for SSIM, float32).

PSNR is reported on the quantised 8-bit image (what a decoder writes to a PNG), not on the float
reconstruction, so that codecs that emit floats and codecs that emit bytes are measured alike.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def quantize_8bit(x):
  """Float image in [0, 1] -> the 8-bit values a PNG would hold (as float32 in 0..255)."""
  x = jnp.asarray(x)
  if x.dtype == jnp.uint8:
    return x.astype(jnp.float32)
  return jnp.round(jnp.clip(x.astype(jnp.float32), 0.0, 1.0) * 255.0)


def _as_unit_float(x):
  """uint8 -> float32 in [0, 1]; floats pass through unclipped, as in the reference."""
  x = jnp.asarray(x)
  if x.dtype == jnp.uint8:
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)


def _check_pair(a, b):
  if a.shape != b.shape:
    raise ValueError(f"Images must have the same shape, got {a.shape} and {b.shape}.")
  if a.ndim != 4:
    raise ValueError(f"Images must be NHWC (4-D), got shape {a.shape}.")


@jax.jit
def _psnr_8bit(a_BxHxWxC, b_BxHxWxC):
  a, b = quantize_8bit(a_BxHxWxC), quantize_8bit(b_BxHxWxC)
  mse_B = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))  # on 0..255
  return 10.0 * jnp.log10(255.0**2 / mse_B)


def psnr(a, b):
  """Per-image PSNR in dB on 8-bit RGB, shape [B]; +inf for identical images.

  Both images are quantised with round(clip(x, 0, 1) * 255) first (uint8 passes unchanged), and the
  MSE is taken in float32 on the 0..255 scale.
  """
  a, b = jnp.asarray(a), jnp.asarray(b)
  _check_pair(a, b)
  return _psnr_8bit(a, b)


def gaussian_window(size=11, sigma=1.5):
  """Normalised 1-D Gaussian taps, shape [size]: built in float64, rounded once to float32.

  Rounding the exact taps (rather than normalising in float32) keeps the float32 SSIM within a few
  1e-6 of references that build the window in float32 with their own summation order.
  """
  coords = np.arange(size, dtype=np.float64) - size // 2
  g = np.exp(-(coords**2) / (2.0 * sigma**2))
  return (g / g.sum()).astype(np.float32)


def separable_filter_valid(x_BxHxWxC, g_K):
  """Separable 1-D filter g_K along H then W (the reference's order), valid borders.

  Each pass accumulates the K shifted slices in a `fori_loop`: O(K) work per pixel, a small
  graph to compile, and ~5× faster on CPU than XLA's depthwise convolution. A side shorter than
  the window is left unfiltered, as pytorch-msssim does for small single-scale SSIM inputs
  (MS-SSIM never gets there: its size check comes first).
  """
  k = g_K.shape[0]
  out = x_BxHxWxC
  for axis in (1, 2):
    n = out.shape[axis] - k + 1
    if n < 1:
      continue
    src = out

    def add_tap(i, acc, src=src, axis=axis, n=n):
      return acc + g_K[i] * jax.lax.dynamic_slice_in_dim(src, i, n, axis=axis)

    shape = src.shape[:axis] + (n,) + src.shape[axis + 1:]
    out = jax.lax.fori_loop(0, k, add_tap, jnp.zeros(shape, src.dtype))
  return out


def _ssim_terms(x, y, g_K, data_range, k1, k2):
  """Per-channel SSIM and contrast-structure means, each [B, C]."""
  c1 = (k1 * data_range) ** 2
  c2 = (k2 * data_range) ** 2
  # One blur over the five stacked maps keeps the traced graph (and compile time) small.
  moments = separable_filter_valid(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), g_K)
  mu_x, mu_y, e_xx, e_yy, e_xy = jnp.split(moments, 5, axis=-1)
  # Moments as E[xy] - E[x]E[y] (the reference's form; keeps float32 parity).
  var_x = e_xx - mu_x * mu_x
  var_y = e_yy - mu_y * mu_y
  cov_xy = e_xy - mu_x * mu_y
  cs_map = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
  luminance_map = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
  ssim_BxC = jnp.mean(luminance_map * cs_map, axis=(1, 2))
  cs_BxC = jnp.mean(cs_map, axis=(1, 2))
  return ssim_BxC, cs_BxC


def _avg_pool_2x2(x_BxHxWxC):
  """2×2 mean pooling; an odd side gets one zero row/column on both ends, counted in the mean."""
  _, h, w, _ = x_BxHxWxC.shape
  pad = ((0, 0), (h % 2, h % 2), (w % 2, w % 2), (0, 0))
  summed = jax.lax.reduce_window(x_BxHxWxC, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), pad)
  return summed / 4.0


@functools.partial(jax.jit, static_argnames=("win_size", "win_sigma", "k1", "k2"))
def _ssim_jit(x, y, data_range, win_size, win_sigma, k1, k2):
  g_K = jnp.asarray(gaussian_window(win_size, win_sigma))
  ssim_BxC, _ = _ssim_terms(x, y, g_K, data_range, k1, k2)
  return jnp.mean(ssim_BxC, axis=-1)


def ssim(a, b, data_range=1.0, win_size=11, win_sigma=1.5, k1=0.01, k2=0.03):
  """Per-image single-scale SSIM, shape [B] (pytorch-msssim `ssim`, size_average=False)."""
  a, b = _as_unit_float(a), _as_unit_float(b)
  _check_pair(a, b)
  if win_size % 2 != 1:
    raise ValueError(f"win_size must be odd, got {win_size}.")
  return _ssim_jit(a, b, data_range, win_size, win_sigma, k1, k2)


@functools.partial(jax.jit, static_argnames=("win_size", "win_sigma", "weights", "k1", "k2"))
def _ms_ssim_jit(x, y, data_range, win_size, win_sigma, weights, k1, k2):
  g_K = jnp.asarray(gaussian_window(win_size, win_sigma))
  factors = []  # one [B, C] term per scale: cs at the fine scales, full SSIM at the coarsest
  for scale in range(len(weights)):
    ssim_BxC, cs_BxC = _ssim_terms(x, y, g_K, data_range, k1, k2)
    if scale < len(weights) - 1:
      factors.append(jax.nn.relu(cs_BxC))
      x, y = _avg_pool_2x2(x), _avg_pool_2x2(y)
  factors.append(jax.nn.relu(ssim_BxC))
  factors_SxBxC = jnp.stack(factors)
  w_S = jnp.asarray(weights, dtype=x.dtype)
  ms_ssim_BxC = jnp.prod(factors_SxBxC ** w_S[:, None, None], axis=0)
  return jnp.mean(ms_ssim_BxC, axis=-1)


def ms_ssim(a, b, data_range=1.0, win_size=11, win_sigma=1.5, weights=MS_SSIM_WEIGHTS,
            k1=0.01, k2=0.03):
  """Per-image MS-SSIM, shape [B] (pytorch-msssim `ms_ssim`, size_average=False).

  Inputs are used as given (no 8-bit rounding, so it can also serve as a differentiable loss);
  quantise with `quantize_8bit(x) / 255` first to score decoded images. Raises ValueError when the
  smaller side is not larger than (win_size - 1) * 2**(scales - 1): the coarsest scale would be
  smaller than the window.
  """
  a, b = _as_unit_float(a), _as_unit_float(b)
  _check_pair(a, b)
  if win_size % 2 != 1:
    raise ValueError(f"win_size must be odd, got {win_size}.")
  weights = tuple(float(w) for w in weights)
  min_side = (win_size - 1) * 2 ** (len(weights) - 1)
  smaller_side = min(a.shape[1], a.shape[2])
  if smaller_side <= min_side:
    raise ValueError(
        f"MS-SSIM with {len(weights)} scales and a {win_size}-tap window needs the smaller image "
        f"side to be larger than {min_side}, got {a.shape[1]}x{a.shape[2]}.")
  return _ms_ssim_jit(a, b, data_range, win_size, win_sigma, weights, k1, k2)


def quality(original_HW3: np.ndarray, recon_HW3: np.ndarray) -> tuple[float, float]:
  """(PSNR, MS-SSIM) of one uint8 image pair; MS-SSIM is nan below 161 pixels a side (its five
  scales need that much)."""
  a, b = original_HW3[None], recon_HW3[None]
  p = float(np.asarray(psnr(a, b))[0])
  m = float(np.asarray(ms_ssim(a, b))[0]) if min(a.shape[1:3]) > 160 else float("nan")
  return p, m
