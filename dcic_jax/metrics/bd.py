"""Bjøntegaard-delta metrics: BD-rate, BD-PSNR (BD-metric) and BD-FID between two RD curves.

G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves", ITU-T VCEG-M33, 2001
(cubic polynomial fit), and the piecewise-cubic Hermite (PCHIP) variant of VCEG-AL22 (2009) /
JVET-common-test-conditions that modern codec comparisons use. The numbers match the `bjontegaard`
package (Herglotz et al., 1.3) for its 'pchip' and 'cubic' methods; tests/test_bd.py pins that
through tests/fixtures/metrics_parity.npz.

Both curves are interpolated in (log10 rate, metric). BD-rate integrates log10 rate over the metric
range where the curves overlap (percent rate change of b vs. a at equal quality; negative = b needs
fewer bits). BD-metric integrates the metric over the overlapping log-rate range (average metric
change of b vs. a at equal rate; b − a: for PSNR positive = b better, for FID negative = b better).

Unlike the reference package, points may come in any order (they are sorted along the integration
variable), and a metric that falls with rate (FID, LPIPS) is handled for BD-rate as well; pass
`higher_is_better=False` for those so that a curve pointing the wrong way is an error, not a
silently flipped sign.
"""

import dataclasses
import math
import warnings

import numpy as np
import scipy.interpolate

METHODS = ("pchip", "cubic")


@dataclasses.dataclass(frozen=True)
class BDResult:
  rate_percent: float  # BD-rate: % rate change of b vs. a at equal metric (negative = b better)
  metric_delta: float  # BD-metric: mean metric_b − metric_a at equal rate


def _integral(x, y, lo, hi, method):
  """∫_lo^hi f, with f interpolating the points (x, y); x strictly increasing."""
  if method == "pchip":
    return float(scipy.interpolate.PchipInterpolator(x, y).integrate(lo, hi))
  if method == "cubic":
    # Least-squares cubic in x (exact through 4 points), as in VCEG-M33.
    antiderivative = np.polyint(np.polyfit(x, y, 3))
    return float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))
  raise ValueError(f"Unknown BD interpolation method {method!r}; use one of {METHODS}.")


def _mean_difference(x_a, y_a, x_b, y_b, method, min_overlap):
  """Mean of f_b − f_a over the overlap of the two x ranges (the Bjøntegaard average)."""
  curves = []
  for x, y in ((x_a, y_a), (x_b, y_b)):
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
      raise ValueError(f"BD needs distinct values along the integration axis, got {x}.")
    curves.append((x, y))
  (x_a, y_a), (x_b, y_b) = curves
  lo, hi = max(x_a[0], x_b[0]), min(x_a[-1], x_b[-1])
  span = max(x_a[-1], x_b[-1]) - min(x_a[0], x_b[0])
  overlap = max(hi - lo, 0.0) / span
  if overlap == 0.0:
    warnings.warn("RD curves do not overlap; the BD value is undefined (nan).", stacklevel=3)
    return float("nan")
  if overlap < min_overlap:
    warnings.warn(f"RD curves overlap on only {overlap:.0%} of their range (min_overlap = "
                  f"{min_overlap:.0%}); the BD value extrapolates little but covers little.",
                  stacklevel=3)
  integral_a = _integral(x_a, y_a, lo, hi, method)
  integral_b = _integral(x_b, y_b, lo, hi, method)
  return (integral_b - integral_a) / (hi - lo)


def _curve(rate, metric, method):
  """Validated float64 arrays (log10 rate, metric)."""
  if method not in METHODS:
    raise ValueError(f"Unknown BD interpolation method {method!r}; use one of {METHODS}.")
  rate = np.asarray(rate, dtype=np.float64).ravel()
  metric = np.asarray(metric, dtype=np.float64).ravel()
  if rate.shape != metric.shape:
    raise ValueError(
        f"rate and metric need one value per point, got {rate.size} and {metric.size}.")
  min_points = 4 if method == "cubic" else 2
  if rate.size < min_points:
    raise ValueError(f"BD with method {method!r} needs at least {min_points} points per curve, "
                     f"got {rate.size}.")
  if np.any(rate <= 0) or not np.all(np.isfinite(rate)) or not np.all(np.isfinite(metric)):
    raise ValueError("BD needs positive finite rates and finite metric values.")
  return np.log10(rate), metric


def _check_direction(log_rate, metric, higher_is_better, name):
  """BD-rate inverts the curve: the metric must move strictly one way with rate."""
  order = np.argsort(log_rate, kind="stable")
  steps = np.diff(metric[order])
  sign = 1.0 if higher_is_better else -1.0
  if np.any(sign * steps <= 0):
    direction = "rise" if higher_is_better else "fall"
    raise ValueError(
        f"BD-rate needs the metric of curve {name} to {direction} strictly with rate "
        f"(higher_is_better={higher_is_better}), got metric {metric[order]} at increasing rates.")


def bd_rate(rate_a, metric_a, rate_b, metric_b, method="pchip", higher_is_better=True,
            min_overlap=0.75):
  """Percent rate change of curve b vs. anchor a at equal quality (negative = b is better)."""
  log_rate_a, metric_a = _curve(rate_a, metric_a, method)
  log_rate_b, metric_b = _curve(rate_b, metric_b, method)
  _check_direction(log_rate_a, metric_a, higher_is_better, "a")
  _check_direction(log_rate_b, metric_b, higher_is_better, "b")
  delta_log_rate = _mean_difference(metric_a, log_rate_a, metric_b, log_rate_b, method,
                                    min_overlap)
  return (10.0**delta_log_rate - 1.0) * 100.0


def bd_metric(rate_a, metric_a, rate_b, metric_b, method="pchip", min_overlap=0.75):
  """Mean metric_b − metric_a at equal rate (BD-PSNR for PSNR, BD-FID for FID)."""
  log_rate_a, metric_a = _curve(rate_a, metric_a, method)
  log_rate_b, metric_b = _curve(rate_b, metric_b, method)
  return _mean_difference(log_rate_a, metric_a, log_rate_b, metric_b, method, min_overlap)


bd_psnr = bd_metric


def bd(rate_a, metric_a, rate_b, metric_b, method="pchip", higher_is_better=True,
       min_overlap=0.75):
  """Both BD numbers for one metric; `higher_is_better=False` for FID/KID/LPIPS-like metrics."""
  return BDResult(
      rate_percent=bd_rate(rate_a, metric_a, rate_b, metric_b, method, higher_is_better,
                           min_overlap),
      metric_delta=bd_metric(rate_a, metric_a, rate_b, metric_b, method, min_overlap))


@dataclasses.dataclass(frozen=True)
class Explained:
  """One BD number for a table: the value, or nan and why it is undefined; `note` is a caveat."""
  value: float
  why: str = ""
  note: str = ""

  def format(self, spec: str, unit: str = "") -> str:
    if math.isnan(self.value):
      return f"n/a ({self.why})"
    return f"{self.value:{spec}}{unit}" + (f" ({self.note})" if self.note else "")


def bd_explained(rate_a, metric_a, rate_b, metric_b, *, higher_is_better=True, names=("a", "b"),
                 method="pchip", min_overlap=0.75) -> tuple[Explained, Explained]:
  """(BD-rate %, BD-metric), each saying in words why it is undefined instead of being a bare nan
  (unmeasured values, too few rates, a metric not monotone in rate, no overlap).

  Points whose metric is not measured (nan) are left out; `names` label the curves in reasons.
  """
  min_points = 4 if method == "cubic" else 2
  curves = []
  for name, rate, metric in ((names[0], rate_a, metric_a), (names[1], rate_b, metric_b)):
    rate = np.asarray(rate, dtype=np.float64).ravel()
    metric = np.asarray(metric, dtype=np.float64).ravel()
    keep = np.isfinite(rate) & (rate > 0) & np.isfinite(metric)
    n, why = int(keep.sum()), ""
    if not n:
      why = f"{name}: not measured"
    elif n < min_points:
      why = f"{name}: {n} measured rate{'s' if n > 1 else ''}, needs {min_points}"
    elif np.unique(rate[keep]).size < n:
      why = f"{name}: two points at one rate"
    if why:
      return Explained(math.nan, why), Explained(math.nan, why)
    curves.append((name, rate[keep], metric[keep]))
  (_, ra, ma), (_, rb, mb) = curves
  rate = None
  for name, r, m in curves:  # BD-rate inverts each curve: its metric must move one way
    steps = np.diff(m[np.argsort(r)]) * (1.0 if higher_is_better else -1.0)
    if rate is None and np.any(steps <= 0):
      rate = Explained(math.nan, f"{name}: not monotone in rate")
  rate = rate or _explained(lambda: bd_rate(ra, ma, rb, mb, method, higher_is_better,
                                            min_overlap), "quality ranges do not overlap")
  metric = _explained(lambda: bd_metric(ra, ma, rb, mb, method, min_overlap),
                      "rate ranges do not overlap")
  return rate, metric


def _explained(fn, no_overlap: str) -> Explained:
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    value = float(fn())
  if math.isnan(value):
    return Explained(value, no_overlap)
  return Explained(value, note="little overlap" if caught else "")
