"""Exact, platform-independent evaluation of the hyper-synthesis h_s at coding time.

The decoder picks each latent's CDF table from sigma = h_s(z_hat) and (mean-scale) its offset
mu. Computed in floating point, sigma and mu may differ in the last bits between CPU/GPU/TPU or
library versions, and a different table index silently corrupts the rest of the stream (the
known cross-device failure of CompressAI's float scales). Here h_s runs as an integer network in
the spirit of Ballé, Johnston & Minnen 2019 ("Integer networks for data compression"):
weights are rounded to multiples of 2**-W_FRAC, activations to multiples of 2**-A_FRAC, and every
layer is an integer dot product carried out in float64 with all values exact integers below
2**53, so the result does not depend on summation order, BLAS or hardware. The table index is
then an integer comparison against integer thresholds stored with the tables.

The rounding changes mu and sigma by ~1e-4 relative to the float network: negligible for rate,
and exactly the same in encoder and decoder, which is what matters.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.codecs.hyperprior import HyperSpec
from dcic_jax.codecs.integer_ops import to_int
from dcic_jax.codecs.layers import phase_conv, phase_kernels, same_padding, transposed_taps

W_FRAC = 14   # weights: multiples of 2**-14
A_FRAC = 12   # activations, mu and sigma: multiples of 2**-12
_EXACT = float(2**52)
_LEAKY_NUM, _LEAKY_SHIFT = 655, 16  # leaky slope 0.01 ≈ 655 / 2**16


def quantize_hyper_params(h_s_params: dict, spec: HyperSpec) -> list[tuple[np.ndarray, np.ndarray]]:
  """Float h_s params -> per layer (integer kernel [k, k, Cin, Cout], integer bias), as float64."""
  out = []
  for i in range(len(spec.layers)):
    p = h_s_params[f"layer{i}"]
    p = p["conv"] if "conv" in p else p
    out.append((to_int(p["kernel"], W_FRAC), to_int(p["bias"], W_FRAC + A_FRAC)))
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


def _rescale(acc, xp=np):
  """Accumulator at 2**-(W+A) -> activation at 2**-A, by exact floor division."""
  return xp.floor(acc / 2.0**W_FRAC)


def _act(a, name: str, xp=np):
  if name == "relu":
    return xp.maximum(a, 0.0)
  if name == "leaky_relu":
    return xp.where(a >= 0, a, xp.floor(a * _LEAKY_NUM / 2.0**_LEAKY_SHIFT))
  raise ValueError(name)


def _depth_to_space(a_HWC):
  h, w, c4 = a_HWC.shape
  c = c4 // 4
  return a_HWC.reshape(h, w, 2, 2, c).transpose(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, c)


def _layers(a, qparams, spec: HyperSpec, conv, xp):
  """The integer h_s on integer-valued float64 arrays, NumPy (xp=np) or traced jax (xp=jnp)."""
  n = len(spec.layers)
  for i, ((_, up), (w, b)) in enumerate(zip(spec.layers, qparams)):
    a = _rescale(conv(i, a, w, b), xp)
    if up:
      a = _depth_to_space(a)
    if i < n - 1 or spec.final_act:
      a = _act(a, spec.act, xp)
  return a


def hyper_synthesis_int(qparams, spec: HyperSpec, z_hat_HWC: np.ndarray) -> np.ndarray:
  """Integer h_s output (multiples of 2**-A_FRAC as integers), [4H, 4W, C_out], float64; NumPy.

  The reference for `HyperSynthesisInt`, which codecs use: the same numbers, faster.
  """
  return _layers(to_int(z_hat_HWC, A_FRAC), qparams, spec, lambda _, a, w, b: _conv_same(a, w, b), np)


@functools.partial(jax.jit, static_argnames=("spec", "phases"))
def _hyper_synthesis_xla(qparams, a_HWC, spec: HyperSpec, phases: tuple[bool, ...]):
  """`_layers` as one XLA program: (output, largest |accumulator| bound of any layer)."""
  bounds = []

  def conv(i, a, w, b):
    bounds.append(_accumulator_bound(a, w, b, jnp))
    p = same_padding(w.shape[0])
    fn = phase_conv if phases[i] else jax.lax.conv_general_dilated
    return fn(a[None], w, (1, 1), (p, p), dimension_numbers=("NHWC", "HWIO", "NHWC"),
              precision=jax.lax.Precision.HIGHEST)[0] + b

  out = _layers(a_HWC, qparams, spec, conv, jnp)
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

  def __init__(self, qparams, spec: HyperSpec):
    self.spec = spec
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
    """Like `hyper_synthesis_int`: [4H, 4W, C_out] float64 integers (units of 2**-A_FRAC)."""
    if self._cpu is None:
      return hyper_synthesis_int(self.qparams, self.spec, z_hat_HWC)
    with jax.enable_x64(True):
      a = jax.device_put(to_int(z_hat_HWC, A_FRAC), self._cpu)
      out, bound = jax.device_get(_hyper_synthesis_xla(self._qparams, a, self.spec, self.phases))
    _check_exact(bound)
    return out


def split_mu_sigma(out: np.ndarray, spec: HyperSpec):
  """(mu_int, sigma_int) from the integer h_s output (mu = 0 for the scale-only model)."""
  if spec.split_mean:
    c = out.shape[-1] // 2
    return out[..., c:], out[..., :c]
  return np.zeros_like(out), out


def to_float(a_int: np.ndarray) -> np.ndarray:
  """Exact: integers below 2**24 times a power of two are float32-representable."""
  return (a_int / 2.0**A_FRAC).astype(np.float32)
