"""From a workdir's measurements to the curves the report plots and tabulates.

`measurements` is {rate name: measurements/<rate>.json}; every number here is recomputed from
them. A *family* is the rate points of one codec (export names `<codec id>-q<k>`); a *curve* is
(bpp, metric) over the rates of a family for one decoder: the base codec, or one (K_D, K_P)
setting of DCIC (DCIC_RD: K_P = 0 and the largest K_D; DCIC_RP: K_D = 0 and the largest K_P;
DCIC_RDP: K_D = K_P = 1).
"""
import dataclasses
import math
import re

import numpy as np

# (column title, key in a point's "mean" or "set", higher is better)
METRICS = (("PSNR dB", "psnr", True), ("MS-SSIM", "ms_ssim", True),
           ("patch SWD", "swd", False), ("LPIPS", "lpips", False), ("FID", "fid", False),
           ("KID", "kid", False))


def metric(point: dict, key: str) -> float:
  v = point.get("mean", {}).get(key, point.get("set", {}).get(key))
  return float("nan") if v is None else float(v)


def available_metrics(measurements: dict) -> list[tuple[str, str, bool]]:
  """The METRICS that at least one measured point has (FID etc. need user-given weights)."""
  return metrics_of([p for m in measurements.values() for p in m["points"].values()])


def metrics_of(points) -> list[tuple[str, str, bool]]:
  """The METRICS that at least one of `points` has."""
  return [m for m in METRICS if any(not math.isnan(metric(p, m[1])) for p in points)]


def family(rate_name: str) -> str:
  return re.sub(r"-q\d+$", "", rate_name)


def families(measurements: dict) -> dict[str, list[str]]:
  """{family: rate names sorted by bpp}."""
  out: dict[str, list[str]] = {}
  for name in measurements:
    out.setdefault(family(name), []).append(name)
  return {f: sorted(names, key=lambda n: measurements[n]["bpp"]) for f, names in out.items()}


@dataclasses.dataclass(frozen=True)
class Curve:
  label: str
  bpp: tuple[float, ...]
  points: tuple[dict, ...]    # the measured points along the curve, same order as bpp

  def values(self, key: str) -> np.ndarray:
    return np.array([metric(p, key) for p in self.points])


def boundary_points(points: dict) -> dict[str, str]:
  """{"DCIC_RD" | "DCIC_RP" | "DCIC_RDP": point name} among a rate's measured grid points."""
  grid = {n: p for n, p in points.items() if n != "base"}
  if not grid:
    return {}
  out = {}
  rd = [n for n, p in grid.items() if p["k_p"] == 0 and p["k_d"] > 0]
  if rd:
    out["DCIC_RD"] = max(rd, key=lambda n: grid[n]["k_d"])
  rp = [n for n, p in grid.items() if p["k_d"] == 0 and p["k_p"] > 0]
  if rp:
    out["DCIC_RP"] = max(rp, key=lambda n: grid[n]["k_p"])
  rdp = [n for n, p in grid.items() if p["k_d"] == 1 and p["k_p"] == 1]
  if rdp:
    out["DCIC_RDP"] = rdp[0]
  return out


def curves(measurements: dict) -> list[Curve]:
  """The base curve of every family and the DCIC_RD/RP/RDP curves of families with a grid."""
  out = []
  for fam, names in families(measurements).items():
    ms = [measurements[n] for n in names]
    out.append(Curve(f"{fam} (base)", tuple(m["bpp"] for m in ms),
                     tuple(m["points"]["base"] for m in ms)))
    with_grid = [m for m in ms if len(m["points"]) > 1]
    for label in ("DCIC_RD", "DCIC_RP", "DCIC_RDP"):
      pts = [(m["bpp"], m["points"][boundary_points(m["points"])[label]]) for m in with_grid
             if label in boundary_points(m["points"])]
      if pts:
        out.append(Curve(f"{fam} {label}", tuple(b for b, _ in pts), tuple(p for _, p in pts)))
  return out


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
  """Non-dominated (perception, distortion, name) points, lower both better, sorted by P."""
  front = []
  for p, d, name in sorted(points):
    if math.isnan(p) or math.isnan(d):
      continue
    if not front or d < front[-1][1]:
      front.append((p, d, name))
  return front


def bd_table(curve_list: list[Curve], metrics, anchor: Curve) -> list[list[str]]:
  """BD-rate / BD-metric of every other curve against `anchor`, one cell per metric; a cell
  that is undefined says why."""
  from dcic_jax.metrics import bd
  rows = []
  for c in curve_list:
    if c is anchor:
      continue
    row = [c.label]
    for _, key, higher in metrics:
      rate, delta = bd.bd_explained(anchor.bpp, anchor.values(key), c.bpp, c.values(key),
                                    higher_is_better=higher, names=(anchor.label, c.label))
      if rate.why and rate.why == delta.why:  # one reason for both: say it once
        row.append(f"n/a ({rate.why})")
      else:
        digits = "+.4f" if key in ("ms_ssim", "swd", "lpips", "kid") else "+.3f"
        row.append(f"{rate.format('+.1f', '%')} / {delta.format(digits)}")
    rows.append(row)
  return rows


def perception_metric(metrics) -> tuple[str, str]:
  """(title, key) of the realism axis of the D–P plane: the first measured lower-is-better
  set metric (patch SWD, else FID / KID), not LPIPS (a distortion between pairs)."""
  return next(((t, k) for t, k, h in metrics if not h and k != "lpips"), ("patch SWD", "swd"))
