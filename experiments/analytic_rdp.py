"""Analytic check of DCIC against the distortion–perception bound on sources with a known optimum.

Freirich, Michaeli & Meir (NeurIPS 2021): for MSE distortion and W2 perception, at a fixed encoder
the least distortion at perception P = W2²(p_X, p_X̂) is

  D(P) = D* + [(W2(p_X, p_X*) − √P)₊]²,   X* = E[X | Ŷ], D* = E‖X − X*‖².

Sources (every pixel an independent draw, decoded as [B, H, W, 3] images in [−1, 1]):
  gauss: scalar N(0, 0.25²), i.i.d. over pixels and channels;            codec transform W = I
  gmm:   scalar 0.3·N(−0.45, 0.1²) + 0.7·N(0.2, 0.15²), i.i.d.;          W = I
  vec:   3-D N(0, Σ) over the channels of a pixel (correlation 0.8/0.6);  W = KLT of Σ
The toy codec (`codecs/toy.py`: y = Wᵀu/Δ, ŷ = round(y), centroid decoder = MMSE) and the exact
analytic prior (`diffusion/analytic.py`) plug into the real `GridDecoder` unchanged, with the
decoder's default settings (`--mode project`) or the penalty form (`--mode schedule`). Per step Δ it
prints D*, W2(p_X, p_X*) (= √D* for interval cells, checked), the rate H(Ŷ), then per (K_D, K_P)
grid point the measured D and P (per dimension, in units of D*), the bound D(P) and the ratio
D / D(P), with the grid's Pareto front starred; then the base codec, the Idempotence decoder
(`dps`, K_D = 0, K_P = 1, w_P = 1, ζ = 0.6·side/256: the published 0.6 at 256²) and where
DCIC_RD / _RP / _RDP land against the bound's end points (MMSE point (D*, D*), posterior sample
(2D*, 0)).

P is exact for the scalar sources: the semi-discrete 1-D W2² between the true source law and the
empirical law of every decoded value (`analytic.w2_sq_to_atoms`), so its only error is the finite
sample (the `floor` line: the same number for exact source draws). For `vec`, the per-channel sum
of exact 1-D W2² misses the dependence between channels and only bounds P from below; the joint
estimate is the exact optimal assignment between decoded pixels and as many fresh source draws,
which is biased upward by sampling (its floor is printed). Ratios are given for both: the truth lies
between them.

The penalty form needs w_P, calibrated per codec as `dcic/calibrate.py` does for a codec export
(median ‖∇ℓ_D‖/‖∇ℓ_P‖ at x̂_b + N(0, 0.1²)); it enters that decoder as the traced product K_P·w_P
(cfg.w_p = 1), so one compiled program serves every step Δ. The project form needs none.

  nice -n 10 python experiments/analytic_rdp.py                 # default run (≤ 10 min, 2 CPU cores)
  nice -n 10 python experiments/analytic_rdp.py --quick         # ~1 min smoke run
"""
import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dcic_jax.codecs import toy  # noqa: E402
from dcic_jax.dcic import calibrate, constraints, grid, sampler  # noqa: E402
from dcic_jax.diffusion import analytic, schedules  # noqa: E402

SIGMA = 0.25
VEC_COV = SIGMA**2 * np.array([[1.0, 0.8, 0.6], [0.8, 1.0, 0.8], [0.6, 0.8, 1.0]])
NAMED = {"DCIC_RD": (1.0, 0.0), "DCIC_RP": (0.0, 1.0), "DCIC_RDP": (1.0, 1.0)}


def make_source(name: str) -> tuple[analytic.Mixture, np.ndarray]:
  """(source, orthonormal transform W) for a source name."""
  if name == "gauss":
    return analytic.gaussian(SIGMA), np.eye(3)
  if name == "gmm":
    return analytic.mixture_1d([0.3, 0.7], [-0.45, 0.2], [0.1, 0.15]), np.eye(3)
  if name == "vec":
    _, klt = np.linalg.eigh(VEC_COV)
    return analytic.correlated_gaussian(VEC_COV), klt[:, ::-1].copy()
  raise ValueError(f"unknown source {name!r}")


def pareto_front(d: np.ndarray, p: np.ndarray) -> np.ndarray:
  """[G] bool: not dominated (another point no worse in both D and P, better in one)."""
  le = (d[None, :] <= d[:, None]) & (p[None, :] <= p[:, None])
  lt = (d[None, :] < d[:, None]) | (p[None, :] < p[:, None])
  return ~np.any(le & lt, axis=1)


def joint_w2_sq(key, source: analytic.Mixture, pixels_NC: np.ndarray, n: int, repeats: int) -> float:
  """W2² per dimension between n decoded pixels and n fresh source draws (optimal assignment)."""
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint64))
  out = []
  for r in range(repeats):
    a = pixels_NC[rng.choice(len(pixels_NC), n, replace=False)]
    b = analytic.sample(source, jax.random.fold_in(key, r), (n, source.dim))
    cost = np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    out.append(cost[rows, cols].mean() / source.dim)
  return float(np.mean(out))


# P estimates: the first of a source's list is the primary one (Pareto front, plot, named points).
P_KINDS = {"scalar": ("P",), "vector": ("P_klt", "P_ch", "P_ot")}
P_LABELS = {"P": "exact 1-D", "P_klt": "KLT coefs", "P_ch": "per-channel", "P_ot": "joint OT"}


class Measure:
  """D and P (per dimension) of decoded samples x̂ against the source samples x.

  Scalar source: P = exact W2² of the pooled values. Vector source: `P_ch` sums exact 1-D W2² of
  the pixel channels (blind to their dependence); `P_klt` does the same for the coordinates in the
  KLT basis, where the source's coordinates are independent (exact if the decoded ones are too: the
  Gaussian prior, ℓ_D and the per-coefficient ℓ_P all factorise in that basis, so only clipping
  couples them); `P_ot` is the optimal assignment to fresh source draws (biased upward).
  """

  def __init__(self, source: analytic.Mixture, transform: np.ndarray, x: np.ndarray, key,
               joint_n: int, joint_repeats: int):
    self.source, self.transform, self.x, self.key = source, transform, x, key
    self.joint_n, self.joint_repeats = joint_n, joint_repeats
    c = x.shape[-1]
    self.channel = [source.marginal(np.eye(c)[i]) for i in range(c)] if source.dim > 1 else None
    self.klt = [source.marginal(transform[:, i]) for i in range(c)] if source.dim > 1 else None

  def __call__(self, x_hat: np.ndarray) -> dict:
    out = {"D": float(np.mean((x_hat - self.x) ** 2))}
    w2 = lambda margs, v: float(np.mean([analytic.w2_sq_to_atoms(m, v[..., i]) for i, m in enumerate(margs)]))
    if self.source.dim == 1:
      out["P"] = analytic.w2_sq_to_atoms(self.source, x_hat)
      return out
    out["P_klt"] = w2(self.klt, x_hat @ self.transform)
    out["P_ch"] = w2(self.channel, x_hat)
    out["P_ot"] = joint_w2_sq(self.key, self.source, x_hat.reshape(-1, self.source.dim),
                              self.joint_n, self.joint_repeats)
    return out


def decoder_config(args) -> sampler.DCICConfig:
  """The decoder under test: the default `project` mode, or the penalty form it replaced, with
  any `--set` fields over it."""
  if args.mode == "project":
    return sampler.config_from({"num_steps": args.num_steps, "eta": 1.0, **args.set})
  return sampler.config_from({"num_steps": args.num_steps, "mode": "schedule", "grad": "xt",
                              "eta": 1.0, "variant": args.variant, "w_p": 1.0, **args.set})


def run_source(name: str, args, grid_points, key) -> dict:
  source, transform = make_source(name)
  codec = toy.ToyCodec(source, transform)
  prior = analytic.make_prior(source, f"analytic-{name}")
  fns = codec.fns
  shape = (args.images, args.size, args.size, 3)
  # Header seeds with a nonzero high word: their keys differ from every key derived from key(seed).
  keys = jnp.stack([sampler.header_key(((args.seed + 1) << 32) + b) for b in range(args.images)])
  kd = np.array([g[0] for g in grid_points])
  kp = np.array([g[1] for g in grid_points])
  cfg = decoder_config(args)
  dcic = grid.GridDecoder(prior.eps_fn, fns, sampler.decode_schedule(prior.schedule, cfg), cfg,
                          chunk=args.images)
  idem = grid.GridDecoder(prior.eps_fn, fns, schedules.respace(prior.schedule, args.idem_steps),
                          sampler.DCICConfig(num_steps=args.idem_steps, mode="dps", eta=1.0,
                                             step_size=args.idem_zeta, w_p=1.0),
                          chunk=args.images) if args.idem_steps else None
  results = {}
  for s, step in enumerate(args.q_steps):
    t0 = time.time()
    params = codec.params(step)
    theory = codec.theory(step)
    d_star = float(np.mean([c.d_star for c in theory]))
    w2_star_sq = float(np.mean([analytic.w2_sq_to_atoms(codec.coefficient_source(i), c.centroid, c.mass)
                                for i, c in enumerate(theory)]))
    # One key per purpose: JAX's split(k)[i] equals fold_in(k, i), so keys are never derived twice.
    k_x, k_cal, k_measure, k_floor = jax.random.split(jax.random.fold_in(key, s), 4)
    x = analytic.sample(source, k_x, shape)
    y_hat, mu = toy.encode(params, jnp.asarray(x, jnp.float32))
    target = constraints.make_target(fns, params, y_hat, mu)
    w_p = float(np.median(calibrate.gradient_ratio(fns, params, target, k_cal,
                                                   args.variant)))
    measure = Measure(source, transform, x, k_measure, args.joint_n, args.joint_repeats)
    floor = measure(analytic.sample(source, k_floor, shape))
    floor["D"] = float("nan")
    # The penalty form takes its calibration as the traced product K_P·w_P (one compiled program
    # for every Δ); the project form needs none.
    out = np.asarray(dcic(None, params, target, keys, kd, kp * (w_p if args.mode == "schedule" else 1.0)))
    # Idempotence: the share of coefficients that re-encode to another cell than ŷ's.
    outside = [float(np.mean(np.asarray(toy.encode(params, jnp.asarray(o, jnp.float32))[0]) != np.asarray(y_hat)))
               for o in out]
    points = [dict(k_d=float(a), k_p=float(b), outside=o_frac, **measure(o))
              for a, b, o, o_frac in zip(kd, kp, out, outside)]
    base = measure(np.asarray(target.x_b))
    idem_point = None
    if idem is not None:
      idem_point = measure(np.asarray(idem(None, params, target, keys, [0.0], [1.0]))[0])
    w2_star = np.sqrt(w2_star_sq)
    for r in points + [base, floor] + ([idem_point] if idem_point else []):
      for pk in P_KINDS["scalar" if source.dim == 1 else "vector"]:
        r["bound" + pk[1:]] = float(toy.dp_bound(r[pk], d_star, w2_star))
        r["ratio" + pk[1:]] = r["D"] / r["bound" + pk[1:]]
    results[str(step)] = dict(step=step, d_star=d_star, w2_star_sq=w2_star_sq, w_p=w_p,
                              rate_bits=float(np.mean([c.entropy_bits for c in theory])),
                              points=points, base=base, floor=floor, idempotence=idem_point,
                              seconds=time.time() - t0)
    print(f"  [{name} Δ={step}: {time.time() - t0:.1f} s]", flush=True)
  return results


def _fmt(v, width=7, digits=3):
  return f"{v:{width}.{digits}f}" if np.isfinite(v) else f"{'nan':>{width}}"


def p_kinds(results: dict) -> tuple[str, ...]:
  return P_KINDS["vector" if "P_klt" in next(iter(results.values()))["base"] else "scalar"]


def report(name: str, results: dict, grid_points) -> list[str]:
  """The printed tables of one source; returns its lines."""
  kinds = p_kinds(results)
  steps = list(results)
  width = 8 + 16 * len(kinds)
  lines = [f"\n=== source {name} ===  D, P per dimension in units of D*; ratio = D / D(P); "
           "* = on the grid's Pareto front (w.r.t. " + P_LABELS[kinds[0]] + " P)"]
  if len(kinds) > 1:
    lines.append("P estimates: " + ", ".join(f"{k} = {P_LABELS[k]}" for k in kinds))
  info = (("step Δ", lambda r: f"{r['step']}"), ("H(Ŷ) b/dim", lambda r: f"{r['rate_bits']:.3f}"),
          ("D*", lambda r: f"{r['d_star']:.3e}"), ("W2*²/D*", lambda r: f"{r['w2_star_sq'] / r['d_star']:.4f}"),
          ("w_P", lambda r: f"{r['w_p']:.3f}"))
  for label, f in info:
    lines.append(f"{label:<11}" + "".join(f"{f(results[s]):>{width}}" for s in steps))
  lines.append(f"{'K_D':>5} {'K_P':>5}" + "".join(
      f"{'D/D*':>8}" + "".join(f"{k + '/D*':>9} {'ratio':>5} " for k in kinds) for _ in steps))
  fronts = {s: pareto_front(np.array([q["D"] for q in results[s]["points"]]),
                            np.array([q[kinds[0]] for q in results[s]["points"]])) for s in steps}

  def cells(q, s, star):
    ds = results[s]["d_star"]
    row = _fmt(q["D"] / ds, 8, 3)
    for j, k in enumerate(kinds):
      row += _fmt(q[k] / ds, 9, 4) + " " + _fmt(q["ratio" + k[1:]], 5, 2) + ("*" if star and j == 0 else " ")
    return row

  for g, (a, b) in enumerate(grid_points):
    lines.append(f"{a:5.2f} {b:5.2f}" + "".join(cells(results[s]["points"][g], s, fronts[s][g]) for s in steps))
  for label, field in (("base codec", "base"), ("Idempotence", "idempotence"), ("exact X", "floor")):
    if results[steps[0]][field] is not None:
      lines.append(f"{label:<11}" + "".join(cells(results[s][field], s, False) for s in steps))
  lines.append("(exact X: fresh source draws, i.e. the sampling floor of each P estimate)")
  lines.append("ratio D/D(P), worst / median: over the grid's Pareto front | over all grid points")
  for s in steps:
    pts = results[s]["points"]
    for k in kinds:
      r = np.array([q["ratio" + k[1:]] for q in pts])
      f = fronts[s]
      lines.append(f"  Δ={s:<6} P {P_LABELS[k]:<12} front ({f.sum():2d} pts): {r[f].max():6.3f} / "
                   f"{np.median(r[f]):6.3f}  | all: {r.max():8.3f} / {np.median(r):6.3f}")
  lines.append("named points (D/D*, P/D*) vs the bound's ends: MMSE point (1, W2*²/D*), posterior sample (2, 0)")
  for s in steps:
    ds = results[s]["d_star"]
    for label, point in NAMED.items():
      if point in grid_points:
        q = results[s]["points"][grid_points.index(point)]
        k = kinds[0]
        lines.append(f"  Δ={s:<6} {label:<9} ({q['D'] / ds:6.3f}, {q[k] / ds:7.4f})  ratio {q['ratio' + k[1:]]:6.3f}")
  return lines


def plot(all_results: dict, grid_points, path: str) -> str:
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return "matplotlib is not installed: no plot (pip install matplotlib)"
  names = list(all_results)
  steps = list(next(iter(all_results.values())))
  fig, axes = plt.subplots(len(names), len(steps), figsize=(4.2 * len(steps), 3.6 * len(names)), squeeze=False)
  p_curve = np.linspace(0, 1.6, 400)
  cmap = plt.get_cmap("viridis")
  kp_values = sorted({b for _, b in grid_points})
  for r, name in enumerate(names):
    for c, s in enumerate(steps):
      ax = axes[r][c]
      res = all_results[name][s]
      ds = res["d_star"]
      w2n = np.sqrt(res["w2_star_sq"] / ds)
      ax.plot(p_curve, toy.dp_bound(p_curve, 1.0, w2n), "k-", lw=1.5, label="bound D(P)")
      ymax = 3.0
      k0 = p_kinds(all_results[name])[0]
      pts = res["points"]
      d = np.array([q["D"] for q in pts]) / ds
      p = np.array([q[k0] for q in pts]) / ds
      front = pareto_front(d, p)
      for g, (a, b) in enumerate(grid_points):
        color = cmap(kp_values.index(b) / max(len(kp_values) - 1, 1))
        clipped = d[g] > ymax or p[g] > 1.55
        ax.scatter(min(p[g], 1.55), min(d[g], ymax * 0.98), s=18 + 40 * a, color=color,
                   marker="^" if clipped else "o", edgecolors="r" if front[g] else "none",
                   linewidths=1.0, zorder=3)
      base = res["base"]
      ax.scatter(base[k0] / ds, base["D"] / ds, marker="x", color="k", s=50, label="base codec", zorder=4)
      if res["idempotence"] is not None:
        idem = res["idempotence"]
        ax.scatter(min(idem[k0] / ds, 1.55), min(idem["D"] / ds, ymax * 0.98), marker="*", color="m", s=80,
                   label="Idempotence (dps)", zorder=4)
      ax.scatter([0.0], [2.0], marker="D", facecolors="none", edgecolors="k", s=40, label="posterior sample")
      ax.set_xlim(-0.03, 1.6)
      ax.set_ylim(0.8, ymax)
      ax.set_title(f"{name}, Δ={s} ({res['rate_bits']:.2f} b/dim)", fontsize=9)
      ax.set_xlabel("P / D*  (P = W2²(p_X, p_X̂))", fontsize=8)
      ax.set_ylabel("D / D*", fontsize=8)
      ax.grid(alpha=0.3)
      if r == 0 and c == 0:
        ax.legend(fontsize=6, loc="upper right")
  fig.suptitle("DCIC (K_D, K_P) grid vs the D–P bound (colour: K_P, size: K_D, red edge: Pareto front, "
               "▲: off-chart; vec: P over KLT coefficients)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return f"plot: {path}"


def parse_floats(text: str) -> list[float]:
  return [float(v) for v in text.split(",") if v]


def field(text: str) -> tuple[str, object]:
  """"eta=0" -> ("eta", 0.0), typed like the DCICConfig field it names."""
  name, sep, value = text.partition("=")
  defaults = sampler.DCICConfig()
  if not sep or not hasattr(defaults, name):
    raise SystemExit(f"error: --set wants FIELD=VALUE with a DCICConfig field, got {text!r}")
  kind = type(getattr(defaults, name))
  return name, value.lower() in ("1", "true") if kind is bool else kind(value)


def main_args(argv=None) -> argparse.Namespace:
  """The experiment's settings from the command line (its defaults for argv = [])."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sources", default="gauss,gmm,vec")
  p.add_argument("--q-steps", default="0.125,0.25,0.5", help="quantiser steps Δ ([−1, 1] units)")
  p.add_argument("--kd", default="0,0.25,0.5,0.75,1", help="K_D values (the grid is K_D × K_P)")
  p.add_argument("--kp", default="0,0.25,0.5,0.75,1", help="K_P values")
  p.add_argument("--num-steps", type=int, default=100, help="DCIC reverse steps N")
  p.add_argument("--idem-steps", type=int, default=500, help="Idempotence decoder steps (0: skip)")
  p.add_argument("--idem-zeta", type=float, default=None,
                 help="Idempotence step ζ (default 0.6·size/256: the published 0.6 at 256², whose "
                 "unsquared-norm pull per pixel scales like 1/√pixels)")
  p.add_argument("--mode", default="project", choices=("project", "schedule"),
                 help="DCIC decoder: project (default) or the penalty form (schedule, xt gradients)")
  p.add_argument("--variant", default="reconstruction", choices=constraints.VARIANTS)
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="a DCICConfig field of the decoder under test, e.g. eta=0 (repeatable)")
  p.add_argument("--images", type=int, default=1)
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--joint-n", type=int, default=1000, help="pixels per joint-W2 assignment (vec)")
  p.add_argument("--joint-repeats", type=int, default=2)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--quick", action="store_true", help="~1 minute smoke run")
  p.add_argument("--plot", default=str(REPO / "docs" / "analytic_rdp.png"))
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  if args.quick:
    args.sources, args.q_steps, args.kd, args.kp = "gauss,vec", "0.25,0.5", "0,0.2,1", "0,0.5,1"
    args.num_steps, args.idem_steps, args.images, args.size, args.joint_n = 50, 100, 1, 32, 500
  args.q_steps = parse_floats(args.q_steps)
  args.set = dict(field(text) for text in args.set)
  if args.idem_zeta is None:
    args.idem_zeta = 0.6 * args.size / 256
  return args


def main(argv=None) -> int:
  args = main_args(argv)
  grid_points = [(a, b) for a in parse_floats(args.kd) for b in parse_floats(args.kp)]
  print(f"settings: {vars(args)}", flush=True)
  key = jax.random.key(args.seed)
  t0 = time.time()
  all_results, lines = {}, []
  for j, name in enumerate(args.sources.split(",")):
    all_results[name] = run_source(name, args, grid_points, jax.random.fold_in(key, j))
    lines += report(name, all_results[name], grid_points)
  print("\n".join(lines))
  pathlib.Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
  print(plot(all_results, grid_points, args.plot))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(dict(settings={k: v for k, v in vars(args).items()},
                                                       results=all_results), indent=1))
  print(f"total {time.time() - t0:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
