"""What K_D and K_P do: the boundary curves, monotonicity and the Pareto front, checked in one run.

Default decoder settings throughout (the demo config's for the images, `DCICConfig`'s for the
analytic sources); nothing is tuned per case. Prints the measurements and one PASS/FAIL line per
check:

  Demo set: the three shipped crops at the demo's size and the demo's three mbt2018-mean rates,
  with the shipped prior and the demo's decoder settings (configs/demo.py). Each rate decodes the
  K_D axis {0, .25, .5, .75, 1} × {0}, the K_P axis {0} × {0, .25, .5, .75, 1} and the demo's grid
  in one call. PSNR (8-bit, mean over images), patch SWD (set level, mean over `--swd-seeds`
  seeds: one seed's estimate of three 128² crops varies by ±0.003, more than the differences
  between neighbouring grid points) and the re-encoding error ‖Q(g_a(x̂)) − ŷ‖ of the saved 8-bit
  image (mean over images).
    1. DCIC_RD (1, 0): PSNR ≥ base − 0.3 dB.
    2. K_P = 0: PSNR non-decreasing in K_D (tolerance 0.05 dB); K_D = 0: re-encoding error
       non-increasing in K_P (tolerance 1%).
    3. DCIC_RP (0, 1): re-encoding error ≤ x̂_b's and patch SWD < the base codec's.
    4. DCIC_RDP (1, 1) and at least one interior point on the Pareto front (PSNR up, SWD down) of
       the demo's grid.
  Analytic sources (`analytic_rdp.py`: Gaussian, Gaussian mixture, 3-D Gaussian; toy MMSE codec,
  exact prior, D and P in units of D*, P = W2² to the source; eight 64² images per source and
  step, `--analytic-images`, because with one the sampling noise of P alone fails an exact
  posterior sampler on check 4 at Δ = 0.125, see `ideal_steps_1d.py`): the same four checks with D
  for PSNR and W2 for SWD — (1, 0): D ≤ 1.05 D*; monotone D in K_D and re-encoding error in K_P;
  (0, 1): P ≤ 0.25 D*, D ≤ 2.3 D* (the bound's P = 0 end is the posterior sample at 2 D*);
  gauss and gmm: worst D / D(P) over the grid's Pareto front ≤ 1.10.
  Step cost (criterion 6 of the design issue) is `bench_dcic.py`'s; the Idempotence comparison is
  `dp_sweep.py --idempotence`.

  python experiments/kd_kp_check.py                     # ~7 min on a 2-core CPU
  python experiments/kd_kp_check.py --skip analytic     # the demo set only
  python experiments/kd_kp_check.py --set dcic.ball=0   # K_D = 1 lands on x̂_b itself
  python experiments/kd_kp_check.py --skip demo --analytic-set eta=0   # another analytic decoder
  python experiments/kd_kp_check.py --set dcic.mode=schedule --set dcic.grad=x0 \
      --set dcic.step_size=0.1 --analytic-mode schedule  # the penalty form (the former demo)
"""
import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import analytic_rdp  # noqa: E402
from configs import demo  # noqa: E402
from dcic_jax import pipeline, score  # noqa: E402
from dcic_jax.codecs import codec as codec_lib  # noqa: E402
from dcic_jax.dcic import calibrate, constraints  # noqa: E402
from dcic_jax.dcic.decode import dcic_decode, targets_and_keys  # noqa: E402
from dcic_jax.diffusion.prior import load_prior  # noqa: E402

AXIS = (0.0, 0.25, 0.5, 0.75, 1.0)
TOL_DB, TOL_REL = 0.05, 0.01


class Checks:
  """PASS/FAIL lines, printed as they come and summed up at the end."""

  def __init__(self):
    self.lines = []

  def __call__(self, ok: bool, text: str) -> None:
    line = f"{'PASS' if ok else 'FAIL'}  {text}"
    self.lines.append(line)
    print(line, flush=True)


def pareto_front(d_lower: np.ndarray, p_lower: np.ndarray) -> np.ndarray:
  """[G] bool, not dominated when both arrays are lower-is-better."""
  return analytic_rdp.pareto_front(np.asarray(d_lower), np.asarray(p_lower))


def monotone(values, increasing: bool, tol_abs: float = 0.0, tol_rel: float = 0.0) -> bool:
  v = np.asarray(values, np.float64)
  step = np.diff(v) if increasing else -np.diff(v)
  return bool(np.all(step >= -(tol_abs + tol_rel * np.abs(v[:-1]))))


def axis_points(grid_kd, grid_kp):
  """The K_D axis, the K_P axis and the demo grid, without repeats, in that order."""
  points = [(a, 0.0) for a in AXIS] + [(0.0, b) for b in AXIS[1:]]
  points += [(a, b) for a in grid_kd for b in grid_kp if (a, b) not in points]
  return points


# ---- the demo set ------------------------------------------------------------------------------


def demo_config(overrides: list[str]):
  """configs/demo.py with `--set key=value` overrides (e.g. dcic.ball=0, dcic.mode=schedule)."""
  config = demo.get_config()
  for item in overrides:
    key, _, text = item.partition("=")
    *path, leaf = key.split(".")
    block = config
    for part in path:
      block = block[part]
    old = block[leaf]
    block[leaf] = type(old)(text) if not isinstance(old, bool) else text.lower() in ("1", "true")
  return config


def demo_part(args, check: Checks) -> dict:
  config = demo_config(args.set)
  prior = load_prior(None if config.dcic.prior == "shipped" else config.dcic.prior)
  images = pipeline.eval_images(config)
  names = [n for n, _ in images]
  originals = np.stack([x for _, x in images])
  grid_kd = pipeline.parse_values(config.dcic.kd, "dcic.kd")
  grid_kp = pipeline.parse_values(config.dcic.kp, "dcic.kp")
  points = axis_points(grid_kd, grid_kp)
  rates = [c for c in config.eval.checkpoints.split(",")
           if pathlib.Path(c).name in config.dcic.rates.split(",")]
  print(f"demo set: {len(names)} crops {originals.shape[1]}x{originals.shape[2]} ({', '.join(names)}), "
        f"rates {', '.join(pathlib.Path(r).name for r in rates)}, prior {prior.name}")

  def psnr(x):
    mse = np.mean((x.astype(np.float64) - originals) ** 2, axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0**2 / mse)))

  def swd(x):
    return float(np.mean([score.set_swd(jax.random.fold_in(jax.random.PRNGKey(s), 0), list(originals), list(x))
                          for s in range(args.swd_seeds)]))

  results = {}
  for path in rates:
    rate = pathlib.Path(path).name
    codec = codec_lib.load(REPO / path)
    cfg = pipeline.dcic_config(config, calibrate.weights(json.loads((REPO / path / "codec.json").read_text()),
                                                         config.dcic.variant))
    files = [codec.compress(x, seed=pipeline._file_seed(config.eval.seed, k)) for k, x in enumerate(originals)]
    decoded = [codec.decompress(f) for f in files]
    target, _ = targets_and_keys(codec, decoded)
    fns = constraints.CodecFns.from_module(codec.module)

    def reencode(x):
      u = jnp.asarray(x, jnp.float32) / 127.5 - 1.0
      return float(np.mean(np.asarray(constraints.reencode_error(fns, codec.params, u, target))))

    base = np.stack([d.image for d in decoded])
    start = time.perf_counter()
    out = dcic_decode(codec, prior, decoded, cfg, [p[0] for p in points], [p[1] for p in points])
    seconds = time.perf_counter() - start
    rows = {"base": dict(psnr=psnr(base), swd=swd(base), reenc=reencode(base))}
    for (a, b), x in zip(points, out):
      rows[(a, b)] = dict(psnr=psnr(x), swd=swd(x), reenc=reencode(x))
    results[rate] = rows
    print(f"\n{rate}: {np.mean([8 * len(f) / x[..., 0].size for f, x in zip(files, originals)]):.4f} bpp, "
          f"{len(points)} points x {len(names)} images decoded in {seconds:.0f} s "
          f"(N={cfg.num_steps}, start step {cfg.start_step}, mode {cfg.mode})")
    print(f"{'point':>12} {'PSNR dB':>8} {'SWD':>7} {'re-enc':>7}")
    for key, r in rows.items():
      label = key if key == "base" else f"({key[0]:g}, {key[1]:g})"
      print(f"{label:>12} {r['psnr']:8.2f} {r['swd']:7.4f} {r['reenc']:7.3f}")

  print()
  for rate, rows in results.items():
    b, rd, rp = rows["base"], rows[(1.0, 0.0)], rows[(0.0, 1.0)]
    check(rd["psnr"] >= b["psnr"] - 0.3,
          f"1 demo {rate}: DCIC_RD PSNR {rd['psnr']:.2f} >= base {b['psnr']:.2f} - 0.3 dB")
    kd_psnr = [rows[(a, 0.0)]["psnr"] for a in AXIS]
    check(monotone(kd_psnr, True, tol_abs=TOL_DB),
          f"2 demo {rate}: PSNR over K_D at K_P=0 non-decreasing: " + ", ".join(f"{v:.2f}" for v in kd_psnr))
    kp_err = [rows[(0.0, b)]["reenc"] for b in AXIS]
    check(monotone(kp_err, False, tol_rel=TOL_REL),
          f"2 demo {rate}: re-encoding error over K_P at K_D=0 non-increasing: " + ", ".join(f"{v:.3f}" for v in kp_err))
    check(rp["reenc"] <= b["reenc"] and rp["swd"] < b["swd"],
          f"3 demo {rate}: DCIC_RP re-encoding error {rp['reenc']:.3f} <= base {b['reenc']:.3f}, "
          f"SWD {rp['swd']:.4f} < base {b['swd']:.4f}")
    grid = [(a, c) for a in grid_kd for c in grid_kp]
    front = pareto_front(-np.array([rows[g]["psnr"] for g in grid]), np.array([rows[g]["swd"] for g in grid]))
    on = [g for g, f in zip(grid, front) if f]
    interior = [g for g in on if 0 < g[0] < 1 or 0 < g[1] < 1]
    check((1.0, 1.0) in on and bool(interior),
          f"4 demo {rate}: Pareto front of the demo grid: " + ", ".join(f"({a:g}, {c:g})" for a, c in on))
  return results


# ---- the analytic sources ----------------------------------------------------------------------


def analytic_part(args, check: Checks) -> dict:
  grid_points = [(a, b) for a in AXIS for b in AXIS]
  ns = analytic_rdp.main_args(["--mode", args.analytic_mode,   # the experiment's own defaults
                               "--images", str(args.analytic_images)]
                              + [f"--set={s}" for s in args.analytic_set])
  ns.idem_steps = 0
  all_results = {}
  for j, name in enumerate(("gauss", "gmm", "vec")):
    res = analytic_rdp.run_source(name, ns, grid_points, jax.random.fold_in(jax.random.key(ns.seed), j))
    all_results[name] = res
    print("\n".join(analytic_rdp.report(name, res, grid_points)))
  print()
  idx = {g: k for k, g in enumerate(grid_points)}
  for name, res in all_results.items():
    pk = analytic_rdp.p_kinds(res)[0]
    for step, r in res.items():
      ds = r["d_star"]
      pts = r["points"]
      d = np.array([q["D"] for q in pts]) / ds
      p = np.array([q[pk] for q in pts]) / ds
      out = np.array([q["outside"] for q in pts])
      tag = f"{name} Δ={step}"
      rd, rp = idx[(1.0, 0.0)], idx[(0.0, 1.0)]
      check(d[rd] <= 1.05, f"1 analytic {tag}: DCIC_RD D = {d[rd]:.3f} D* <= 1.05 D*")
      kd = [d[idx[(a, 0.0)]] for a in AXIS]
      check(monotone(kd, False, tol_rel=TOL_REL),
            f"2 analytic {tag}: D over K_D at K_P=0 non-increasing: " + ", ".join(f"{v:.3f}" for v in kd))
      kp = [out[idx[(0.0, b)]] for b in AXIS]
      check(monotone(kp, False, tol_rel=TOL_REL, tol_abs=1e-4),
            f"2 analytic {tag}: share of coefficients outside their cells over K_P at K_D=0 "
            "non-increasing: " + ", ".join(f"{v:.4f}" for v in kp))
      check(p[rp] <= 0.25 and d[rp] <= 2.3,
            f"3 analytic {tag}: DCIC_RP (D, P) = ({d[rp]:.3f}, {p[rp]:.4f}) D*, P <= 0.25, D <= 2.3")
      if name in ("gauss", "gmm"):
        ratio = np.array([q["ratio" + pk[1:]] for q in pts])
        front = pareto_front(d, p)
        worst = grid_points[int(np.argmax(np.where(front, ratio, -np.inf)))]
        check(ratio[front].max() <= 1.10,
              f"4 analytic {tag}: worst D/D(P) on the front {ratio[front].max():.3f} at "
              f"({worst[0]:g}, {worst[1]:g}) <= 1.10 ({front.sum()} points on the front)")
        # For information, not a check: the front of the points that use the file. (0, 0) is a draw
        # of the prior; its P ties with an exact posterior sample's (docs/dcic.md, Known limits).
        uses = np.array([a + b > 0 for a, b in grid_points])
        front_u = np.zeros_like(front)
        front_u[uses] = pareto_front(d[uses], p[uses])
        worst_u = grid_points[int(np.argmax(np.where(front_u, ratio, -np.inf)))]
        print(f"info  4 analytic {tag}: without (0, 0), worst D/D(P) on the front "
              f"{ratio[front_u].max():.3f} at ({worst_u[0]:g}, {worst_u[1]:g})")
  return all_results


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--skip", default="", help="comma-separated parts to skip: demo, analytic")
  p.add_argument("--swd-seeds", type=int, default=8, help="seeds the demo's patch SWD is averaged over")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a field of configs/demo.py, e.g. dcic.ball=0 (repeatable)")
  p.add_argument("--analytic-set", action="append", default=[], metavar="FIELD=VALUE",
                 help="a DCICConfig field of the analytic part's decoder, e.g. eta=0 (repeatable)")
  p.add_argument("--analytic-images", type=int, default=8,
                 help="64² images per analytic source and step Δ (P's sampling noise falls as 1/images)")
  p.add_argument("--analytic-mode", default="project", choices=("project", "schedule"),
                 help="decoder of the analytic part (schedule: the penalty form)")
  args = p.parse_args(argv)
  skip = set(args.skip.split(","))
  check = Checks()
  start = time.perf_counter()
  if "demo" not in skip:
    demo_part(args, check)
  if "analytic" not in skip:
    analytic_part(args, check)
  failed = [line for line in check.lines if line.startswith("FAIL")]
  print(f"\n{len(check.lines) - len(failed)} of {len(check.lines)} checks pass "
        f"({time.perf_counter() - start:.0f} s)" + "".join(f"\n  {line}" for line in failed))
  return 0


if __name__ == "__main__":
  sys.exit(main())
