"""Exact integer versions of the ops of attention networks, for platform-independent coding.

`fixed_point.py` runs a CNN h_s as an integer network (Ballé, Johnston & Minnen 2019, "Integer
networks for data compression"). The TCM entropy-parameter networks (`tcm_codec.py`) also hold
LayerNorm, window attention with a softmax, exact GELU, sigmoid gating and tanh. Here each of them
is a function of integers that any machine computes to the same bits:

* values are integers in float64 arrays: activations in units of 2**-ACT, weights of 2**-WGT,
  table values and probabilities of 2**-TAB; every product and sum stays an exact integer below
  2**53, so neither summation order, nor BLAS, nor fused multiply-adds can change a result. Every
  op appends a bound of its largest intermediate to `bounds`, and the caller checks the largest
  against 2**53 after the run (`check_exact`), as `fixed_point._check_exact` does.
* rescaling is rounding by a power of two (exact); division and square root are the exact integer
  quotient and integer square root: the float64 estimate (within one of the answer for operands
  below 2**52, however the platform rounds) corrected by its remainder, so not even IEEE's
  correctly-rounded division and sqrt are relied on.
* transcendentals are lookup tables over the fixed-point input grid: exp(−x) as the product of two
  tables (the high and the low bits of x), Φ(x) (for GELU = x·Φ(x)) on a 2**-10 grid, linearly
  interpolated; outside their range the functions are constant (exp, Φ) to table precision.
  sigmoid and tanh are exact integer divisions of exp values, softmax an exact integer sum and
  division.

Why stored tables and not tables computed at run time (`make_tables`): the tables are made once,
in float64 numpy, when an export is written, and stored with its coding tables (fingerprinted).
A decoder then evaluates no transcendental at all: libm / XLA exp and erf differ between builds
in the last bit, and a software evaluation (Python's `decimal`) of the ~21k entries on every load
would cost seconds. The table values need not be correctly rounded, only the same everywhere.
"""
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

ACT = 16       # activations: multiples of 2**-16
WGT = 20       # weights, LayerNorm scales, constants: multiples of 2**-20
TAB = 24       # table values (exp, Φ), sigmoid, softmax probabilities: multiples of 2**-24
EXACT = 2.0**53
EXP_LOW_BITS = 8      # exp(−x) = exp(−x_high)·exp(−x_low), x_low = the low 8 bits of x in 2**-ACT units
EXP_RANGE = 18        # exp(−x)·2**TAB < 1/2 beyond: 0
PHI_STEP = 10         # Φ tabulated on the 2**-10 grid over [−PHI_RANGE, PHI_RANGE]
PHI_RANGE = 8         # Φ(−8)·2**TAB rounds to 0 and Φ(8)·2**TAB to 2**TAB
LN_VAR_FRAC = 12      # LayerNorm's variance from values on the 2**-12 grid (units of 2**-24)
LN_STD_FRAC = 20      # ... and its standard deviation on the 2**-20 grid


def make_tables() -> dict[str, np.ndarray]:
  """The lookup tables (int64): exp_high[j] = exp(−j·2**(8−ACT)), exp_low[k] = exp(−k·2**−ACT),
  phi[i] = Φ(−PHI_RANGE + i·2**−PHI_STEP), all in units of 2**-TAB."""
  high = np.arange(EXP_RANGE * 2**(ACT - EXP_LOW_BITS) + 1) * 2.0**(EXP_LOW_BITS - ACT)
  low = np.arange(2**EXP_LOW_BITS) * 2.0**-ACT
  x = np.arange(-PHI_RANGE * 2**PHI_STEP, PHI_RANGE * 2**PHI_STEP + 1) * 2.0**-PHI_STEP
  to_int = lambda v: np.round(v * 2.0**TAB).astype(np.int64)
  return {"exp_high": to_int(np.exp(-high)), "exp_low": to_int(np.exp(-low)), "phi": to_int(special.ndtr(x))}


def to_int(x, frac: int) -> np.ndarray:
  """Float values -> integers in units of 2**-frac (float64; NumPy, exact scaling); also the
  quantiser of `fixed_point.py` and `entropy/channelwise.py`."""
  return np.round(np.asarray(x, np.float64) * 2.0**frac)


def check_exact(bound) -> None:
  if not float(bound) < EXACT:
    raise OverflowError(f"an integer network value reached {float(bound):.3g} >= 2**53: not exact in float64")


def _amax(x):
  return jnp.max(jnp.abs(x))


# ---- exact integer arithmetic ----
def shift_round(x, k: int):
  """round(x / 2**k), halves up: exact (a power-of-two division)."""
  return jnp.floor((x + 2.0**(k - 1)) / 2.0**k) if k > 0 else x * 2.0**-k


def div_round(n, d, bounds: list):
  """round(n / d), halves up, for integers n and d > 0: the float quotient, corrected by its
  remainder so that it is the exact integer answer on any platform."""
  num, den = 2 * n + d, 2 * d
  bounds.append(2 * _amax(n) + 3 * _amax(d))
  q = jnp.floor(num / den)
  r = num - q * den
  return q - (r < 0) + (r >= den)


def isqrt(n, bounds: list):
  """floor(sqrt(n)) for integers n >= 0, exact (the float root corrected by its square)."""
  bounds.append(4 * _amax(n) + 4)
  s = jnp.floor(jnp.sqrt(n))
  s = s - (s * s > n)
  return s + ((s + 1) * (s + 1) <= n)


def mul_shift(x, c, k: int, bounds: list):
  """round(x·c / 2**k) for integer arrays (c broadcast), exact."""
  bounds.append(_amax(x) * _amax(c))
  return shift_round(x * c, k)


# ---- layers ----
def column_bound(w) -> np.ndarray:
  """max over outputs of Σ abs(w) over the inputs of a kernel [..., K, F]: with max abs(x), a bound
  of every accumulator. Computed once per layer (`w_bound` of `dense`, `conv_same`), not per call."""
  w = np.asarray(w)
  return np.abs(w).reshape(-1, w.shape[-1]).sum(0).max(initial=0.0)


def dense(x, w, b, bounds: list, w_bound):
  """x @ w + b rescaled to 2**-ACT: x [..., K] (ACT), w [K, F] (WGT), b [F] (ACT + WGT);
  w_bound = `column_bound(w)`."""
  bounds.append(_amax(x) * w_bound + _amax(b))
  acc = jnp.matmul(x, w, precision=jax.lax.Precision.HIGHEST) + b
  return shift_round(acc, WGT)


def conv_same(x_HWC, w, b, bounds: list, w_bound):
  """Stride-1 'same' (k // 2 padding) convolution, rescaled to 2**-ACT; 1×1 kernels as `dense`;
  w_bound = `column_bound(w)`."""
  k = w.shape[0]
  if k == 1:
    return dense(x_HWC, w[0, 0], b, bounds, w_bound)
  bounds.append(_amax(x_HWC) * w_bound + _amax(b))
  p = (k // 2, k // 2)
  acc = jax.lax.conv_general_dilated(x_HWC[None], w, (1, 1), (p, p), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)[0] + b
  return shift_round(acc, WGT)


def exp_neg(x, tables: dict, bounds: list):
  """exp(−x) for integers x >= 0 (units 2**-ACT), in units 2**-TAB: two table look-ups and one
  exact product; 0 beyond EXP_RANGE."""
  high = jnp.floor(x / 2.0**EXP_LOW_BITS)
  low = x - high * 2.0**EXP_LOW_BITS
  n = tables["exp_high"].shape[0]
  e = jnp.take(tables["exp_high"], jnp.clip(high, 0, n - 1).astype(jnp.int32)) * \
      jnp.take(tables["exp_low"], low.astype(jnp.int32))
  bounds.append(jnp.asarray(2.0**(2 * TAB)))
  return jnp.where(high < n, shift_round(e, TAB), 0.0)


def sigmoid(x, tables: dict, bounds: list):
  """1 / (1 + exp(−x)) in units 2**-TAB, x in 2**-ACT: exp(−|x|) from the tables, an exact division."""
  e = exp_neg(jnp.abs(x), tables, bounds)
  s = div_round(jnp.full_like(e, 2.0**(2 * TAB)), 2.0**TAB + e, bounds)
  return jnp.where(x >= 0, s, 2.0**TAB - s)


def half_tanh(x, tables: dict, bounds: list):
  """0.5·tanh(x) = sigmoid(2x) − 1/2, in units 2**-TAB."""
  return sigmoid(2 * x, tables, bounds) - 2.0**(TAB - 1)


def gelu(x, tables: dict, bounds: list):
  """Exact GELU x·Φ(x), Φ from its table, linearly interpolated between grid points (exact integer
  interpolation); x and the result in units 2**-ACT."""
  step = ACT - PHI_STEP
  n = tables["phi"].shape[0]
  xc = jnp.clip(x, -PHI_RANGE * 2.0**ACT, PHI_RANGE * 2.0**ACT - 1)
  i = jnp.floor(xc / 2.0**step)
  frac = xc - i * 2.0**step
  idx = (i + PHI_RANGE * 2**PHI_STEP).astype(jnp.int32)
  lo, hi = jnp.take(tables["phi"], idx), jnp.take(tables["phi"], jnp.minimum(idx + 1, n - 1))
  phi = lo + shift_round((hi - lo) * frac, step)
  return mul_shift(x, phi, TAB, bounds)


def softmax(logits, tables: dict, bounds: list, axis: int = -1):
  """softmax in units 2**-TAB from logits in 2**-ACT: exp(logit − max) from the tables, an exact
  integer sum and exact divisions."""
  e = exp_neg(jnp.max(logits, axis, keepdims=True) - logits, tables, bounds)
  total = jnp.sum(e, axis, keepdims=True)
  return div_round(e * 2.0**TAB, total, bounds)


def layer_norm(x, scale, bias, eps: float, bounds: list):
  """LayerNorm over the last axis: scale (WGT), bias (ACT + WGT); x and the result in 2**-ACT.

  mean: exact sum, exact division; variance: exact sum of squares of the centred values on the
  2**-LN_VAR_FRAC grid; std: exact integer square root on the 2**-LN_STD_FRAC grid; the
  normalised value: an exact division.
  """
  c = x.shape[-1]
  bounds.append(_amax(x) * c)
  centred = x - div_round(jnp.sum(x, -1, keepdims=True), float(c), bounds)
  coarse = shift_round(centred, ACT - LN_VAR_FRAC)
  bounds.append(_amax(coarse) ** 2 * c)
  eps_int = round(eps * 2.0**(2 * LN_VAR_FRAC))
  var = div_round(jnp.sum(coarse * coarse, -1, keepdims=True), float(c), bounds) + eps_int  # units 2**-24
  scale_up = 2.0**(2 * (LN_STD_FRAC - LN_VAR_FRAC))
  bounds.append(_amax(var) * scale_up)
  std = isqrt(var * scale_up, bounds)  # units 2**-LN_STD_FRAC
  normed = div_round(centred * 2.0**LN_STD_FRAC, std, bounds)
  bounds.append(_amax(normed) * _amax(scale) + _amax(bias))
  return shift_round(normed * scale + bias, WGT)
