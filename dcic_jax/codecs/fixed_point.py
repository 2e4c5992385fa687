"""Exact, platform-independent evaluation of the hyper-synthesis h_s at coding time.

The decoder picks each latent's CDF table from sigma = h_s(z_hat) and (mean-scale) its offset
mu. Computed in floating point, sigma and mu may differ in the last bits between CPU/GPU/TPU or
library versions, and a different table index silently corrupts the rest of the stream (the
known cross-device failure of CompressAI's float scales). Here h_s runs as an integer network in
the spirit of Ballé, Johnston & Minnen 2019 ("Integer networks for data compression"):
weights are rounded to multiples of 2**-w, activations to multiples of 2**-a (`Grids`), and every
layer is an integer dot product carried out in float64 with all values exact integers below
2**53, so the result does not depend on summation order, BLAS or hardware. What the coder sees
(mu, sigma) is then rounded, halves up, to its coarser grid 2**-A_FRAC; the table index is an
integer comparison against integer thresholds on that grid, stored with the tables.

Why fine grids inside and the coder's grid only at the end: with activations on the coder's grid
(files of format versions 1–2, `LEGACY`) every layer's rounding reached mu, which moved by up to
1.5e-2 from the float network, and ~0.2% of an imported CompressAI model's symbols round(y − mu)
came out differently from CompressAI's own; on the fine grids mu moves by 4e-5 on average before
its final rounding, and ~7e-5 of the symbols differ, about as many as the coder grid's rounding
of CompressAI's own mu gives (docs/tcm.md). Either way encoder and decoder compute the same
integers, which is what decoding needs; the file's format version says which grids wrote it.

Grids (`GRIDS`): weights 2**-20, activations 2**-17, chosen by experiments/compressai_symbol_parity.py:
coarser activations (2**-16) left mu ~7e-5 off before its final rounding, finer ones (2**-18) gained
nothing measurable over the coder grid's own rounding and halved the exact range; coarser weights
(2**-18, 2**-19) moved mu more than the activations did.

Exactness: every accumulator is bounded by max|a| · max column sum |w| + max|b| (checked per layer,
`OverflowError` beyond 2**52). In real units that is max|a| · Σ|w| < 2**(52 − 20 − 17) = 32768 on
`GRIDS`; the largest seen was 420 (full-size N = 192, M = 320 CompressAI models, extreme images)
and 386 (the shipped codecs): a margin of ~80. The leaky ReLU's product |a| · 10486 < 2**32 · 2**14
is exact whenever the layer before it was.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.codecs.hyperprior import HyperSpec
from dcic_jax.codecs.integer_ops import to_int
from dcic_jax.codecs.layers import phase_conv, phase_kernels, same_padding, transposed_taps

A_FRAC = 12   # the coder's grid: mu and sigma (channel-wise: y_hat and r too) in units of 2**-12
_EXACT = float(2**52)


@dataclasses.dataclass(frozen=True)
class Grids:
  """Fractional bits inside the integer networks: what a file's format version fixes."""
  weights: int      # kernels on 2**-weights, biases on 2**-(weights + activations)
  activations: int  # inputs and activations on 2**-activations (>= A_FRAC)
  leaky_shift: int  # leaky ReLU slope round(0.01 · 2**leaky_shift) / 2**leaky_shift

  @property
  def leaky_num(self) -> int:
    return round(0.01 * 2**self.leaky_shift)


GRIDS = Grids(weights=20, activations=17, leaky_shift=20)   # files of format version 3 on
LEGACY = Grids(weights=14, activations=12, leaky_shift=16)  # versions 1-2: activations on the coder's grid


def grids_for(version: int) -> Grids:
  """The grids the files of a format version were written with."""
  return LEGACY if version <= 2 else GRIDS


def to_coder_grid(a_int: np.ndarray, grids: Grids) -> np.ndarray:
  """Integers on 2**-grids.activations -> on the coder's 2**-A_FRAC, rounded halves up (exact:
  a power-of-two division); `LEGACY`'s activations are already on it."""
  k = grids.activations - A_FRAC
  return np.floor((a_int + 2.0**(k - 1)) / 2.0**k) if k else a_int


def quantize_layer(p: dict, grids: Grids) -> tuple[np.ndarray, np.ndarray]:
  """Float conv params -> (integer kernel, integer bias) on `grids`, as float64."""
  return to_int(p["kernel"], grids.weights), to_int(p["bias"], grids.weights + grids.activations)


def quantize_hyper_params(h_s_params: dict, spec: HyperSpec,
                          grids: Grids = GRIDS) -> list[tuple[np.ndarray, np.ndarray]]:
  """Float h_s params -> per layer (integer kernel [k, k, Cin, Cout], integer bias), as float64."""
  out = []
  for i in range(len(spec.layers)):
    p = h_s_params[f"layer{i}"]
    out.append(quantize_layer(p["conv"] if "conv" in p else p, grids))
  return out


def _accumulator_bound(a, w, b, xp):
  """An upper bound of every |accumulator| of a conv layer: max|a| · max column sum |w| + max|b|."""
  return (xp.abs(a).max(initial=0.0) * xp.abs(w).sum(axis=(0, 1, 2)).max()
          + xp.abs(b).max(initial=0.0))


def _check_exact(bound) -> None:
  if bound >= _EXACT:
    raise OverflowError("fixed-point hyper-synthesis would exceed exact float64 range")


def _conv_same(a_HWC: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Stride-1 'same' convolution of integer-valued float64 arrays, exact (all sums < 2**53).

  A 3×3 sub-pixel kernel that holds a 5×5 transposed conv (`layers.transposed_taps`: imported
  CompressAI weights) is multiplied per output phase over its nonzero taps only, 25 of 36 of
  the products; the sums are exact either way, so the output is the same to the bit.
  """
  k = w.shape[0]
  p = same_padding(k)
  h, wd, c = a_HWC.shape
  _check_exact(_accumulator_bound(a_HWC, w, b, np))
  padded = np.pad(a_HWC, (p, p, (0, 0)))
  cols = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(0, 1))  # [H, W, C, k, k]
  cols = cols.transpose(0, 1, 3, 4, 2).reshape(h * wd, k, k, c)
  if not transposed_taps(w):
    return (cols.reshape(h * wd, -1) @ w.reshape(k * k * c, -1) + b).reshape(h, wd, -1)
  out = [cols[:, a:, b_:].reshape(h * wd, -1) @ w_ab.reshape(-1, w_ab.shape[-1])
         for (a, b_), w_ab in phase_kernels(w)]
  return (np.concatenate(out, axis=1) + b).reshape(h, wd, -1)


def _rescale(acc, grids: Grids, xp=np):
  """Accumulator at 2**-(w+a) -> activation at 2**-a, by exact floor division."""
  return xp.floor(acc / 2.0**grids.weights)


def _act(a, name: str, grids: Grids, xp=np):
  """ReLU / leaky ReLU on integers (|a| < 2**(52 − weights) after an exact layer, so a · slope is exact)."""
  if name == "relu":
    return xp.maximum(a, 0.0)
  if name == "leaky_relu":
    return xp.where(a >= 0, a, xp.floor(a * grids.leaky_num / 2.0**grids.leaky_shift))
  raise ValueError(name)


def _depth_to_space(a_HWC):
  h, w, c4 = a_HWC.shape
  c = c4 // 4
  return a_HWC.reshape(h, w, 2, 2, c).transpose(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, c)


def _layers(a, qparams, spec: HyperSpec, grids: Grids, conv, xp):
  """The integer h_s on integer-valued float64 arrays, NumPy (xp=np) or traced jax (xp=jnp)."""
  n = len(spec.layers)
  for i, ((_, up), (w, b)) in enumerate(zip(spec.layers, qparams)):
    a = _rescale(conv(i, a, w, b), grids, xp)
    if up:
      a = _depth_to_space(a)
    if i < n - 1 or spec.final_act:
      a = _act(a, spec.act, grids, xp)
  return a


def hyper_synthesis_int(qparams, spec: HyperSpec, z_hat_HWC: np.ndarray, grids: Grids = GRIDS) -> np.ndarray:
  """Integer h_s output on the fine grid (multiples of 2**-grids.activations as integers),
  [4H, 4W, C_out], float64; NumPy. `to_coder_grid` gives what the coder sees.

  The reference for `HyperSynthesisInt`, which codecs use: the same numbers, faster.
  """
  conv = lambda _, a, w, b: _conv_same(a, w, b)
  return _layers(to_int(z_hat_HWC, grids.activations), qparams, spec, grids, conv, np)


@functools.partial(jax.jit, static_argnames=("spec", "grids", "phases"))
def _hyper_synthesis_xla(qparams, a_HWC, spec: HyperSpec, grids: Grids, phases: tuple[bool, ...]):
  """`_layers` as one XLA program: (output, largest |accumulator| bound of any layer)."""
  bounds = []

  def conv(i, a, w, b):
    bounds.append(_accumulator_bound(a, w, b, jnp))
    p = same_padding(w.shape[0])
    fn = phase_conv if phases[i] else jax.lax.conv_general_dilated
    return fn(a[None], w, (1, 1), (p, p), dimension_numbers=("NHWC", "HWIO", "NHWC"),
              precision=jax.lax.Precision.HIGHEST)[0] + b

  out = _layers(a_HWC, qparams, spec, grids, conv, jnp)
  return out, jnp.max(jnp.stack(bounds))


class HyperSynthesisInt:
  """The integer h_s as one compiled float64 program on XLA's CPU device: the numbers of
  `hyper_synthesis_int` (exact integers, so summation order cannot matter), without NumPy's BLAS.

  Why: OpenBLAS's threads spin for ~0.1 s after each product and slowed the XLA transforms that
  run next on the same cores (g_s after h_s when decoding); one XLA program shares XLA's threads.
  The CPU device on every platform: a TPU has no float64, a GPU's convolution algorithms need not
  be exact, and the host is where coding happens. Where jax has no CPU backend (JAX_PLATFORMS
  without "cpu"), the NumPy reference runs instead.
  """

  def __init__(self, qparams, spec: HyperSpec, grids: Grids = GRIDS):
    self.spec = spec
    self.grids = grids
    self.qparams = qparams
    self.phases = tuple(bool(transposed_taps(np.asarray(w))) for w, _ in qparams)
    try:
      self._cpu = jax.local_devices(backend="cpu")[0]  # this process's (multi-host: devices() is global)
    except RuntimeError:
      self._cpu = None
      return
    with jax.enable_x64(True):
      self._qparams = jax.device_put([(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in qparams],
                                     self._cpu)

  def __call__(self, z_hat_HWC: np.ndarray) -> np.ndarray:
    """Like `hyper_synthesis_int`: [4H, 4W, C_out] float64 integers (units of 2**-grids.activations)."""
    if self._cpu is None:
      return hyper_synthesis_int(self.qparams, self.spec, z_hat_HWC, self.grids)
    with jax.enable_x64(True):
      a = jax.device_put(to_int(z_hat_HWC, self.grids.activations), self._cpu)
      out, bound = jax.device_get(_hyper_synthesis_xla(self._qparams, a, self.spec, self.grids, self.phases))
    _check_exact(bound)
    return out


def split_mu_sigma(out: np.ndarray, spec: HyperSpec):
  """(mu_int, sigma_int) from the integer h_s output, on its grid (mu = 0 for the scale-only model)."""
  if spec.split_mean:
    c = out.shape[-1] // 2
    return out[..., c:], out[..., :c]
  return np.zeros_like(out), out


def to_float(a_int: np.ndarray) -> np.ndarray:
  """Integers on the coder's grid -> float32. Exact: integers below 2**24 times a power of two are
  float32-representable."""
  return (a_int / 2.0**A_FRAC).astype(np.float32)
