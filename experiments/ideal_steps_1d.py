"""What the reverse process can reach with an *exact* conditional denoiser, on the analytic sources.

`kd_kp_check.py` finds DCIC_RP (K_P = 1) between the MMSE point and the posterior sample at fine
quantiser steps Δ, where the bound's P = 0 end is (2 D*, 0). This experiment asks whether the
constraint rule or the reverse process is the cause. It runs the same reverse process as the
decoder (linear β, T = 1000, N respaced steps, its DDIM η = 1 step) on the scalar sources of
`analytic_rdp.py`, with the toy codec's cells ((k − ½)Δ, (k + ½)Δ], but replaces DCIC's
conditional-mean step by the exact one: p(x0 | x_t, cell) of the source mixture, in closed form.

  prior-mean      x̂0 = E[x0 | x_t]            the plain sampler (DCIC's (0, 0))
  ideal-mean      x̂0 = E[x0 | x_t, cell]      the best any mean-based step can do
  ideal-draw      x̂0 ~ p(x0 | x_t, cell)      an exact ancestral step: a posterior sample at any N

Each prints (D, P) per dimension in units of D* and D / D(P) against the bound of Freirich et
al. (`analytic_rdp.py`), P the exact 1-D W2² to the source, the sampling floor of P beside it.
If the ideal mean step lands where DCIC_RP lands, the gap to (2, 0) is the reverse process's
mean steps at that N (the variance of x0 given the last coarse step is left out), not the rule
for K_P; the ideal draw shows that the bound's end is reachable by posterior sampling.

  python experiments/ideal_steps_1d.py                  # N = 100, ~1 min on a 2-core CPU
  python experiments/ideal_steps_1d.py --num-steps 1000
  # How well P resolves the bound at the posterior sample, with kd_kp_check.py's 1 and 8 images:
  python experiments/ideal_steps_1d.py --rules ideal-draw --q-steps 0.125 --seeds 4 --n 12288
  python experiments/ideal_steps_1d.py --rules ideal-draw --q-steps 0.125 --seeds 4 --n 98304
"""
import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import analytic_rdp  # noqa: E402
from dcic_jax.codecs import toy  # noqa: E402
from dcic_jax.dcic import projections  # noqa: E402
from dcic_jax.diffusion import analytic, samplers, schedules  # noqa: E402

RULES = ("prior-mean", "ideal-mean", "ideal-draw")


def posterior_components(source: analytic.Mixture, x_t: np.ndarray, ab: float):
  """p(x0 | x_t) of a scalar mixture: (log weights, means, stds), each [n, K]."""
  w, m, s = analytic._components(source)
  var_xt = ab * s**2 + 1.0 - ab
  log_w = np.log(w) - 0.5 * (x_t[:, None] - np.sqrt(ab) * m) ** 2 / var_xt - 0.5 * np.log(var_xt)
  var = 1.0 / (1.0 / s**2 + ab / (1.0 - ab))
  mean = var * (m / s**2 + np.sqrt(ab) * x_t[:, None] / (1.0 - ab))
  return log_w, mean, np.broadcast_to(np.sqrt(var), mean.shape)


def log_box_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """log(Φ(b) − Φ(a)) for a < b, without cancellation in either tail."""
  right = a > 0   # both in the upper tail: Φc(a) − Φc(b)
  a_, b_ = np.where(right, -b, a), np.where(right, -a, b)
  hi, lo = special.log_ndtr(b_), special.log_ndtr(a_)
  return hi + np.log1p(-np.exp(np.minimum(lo - hi, -1e-300)))


def pick(key, log_w: np.ndarray) -> np.ndarray:
  """[n] a component index per row, drawn with probabilities ∝ exp(log_w)."""
  return np.asarray(jax.random.categorical(key, jnp.asarray(log_w)))


def mixture_mean(log_w: np.ndarray, values: np.ndarray) -> np.ndarray:
  """[n] Σ_k w_k·values_k per row, with weights ∝ exp(log_w)."""
  p = np.exp(log_w - log_w.max(axis=1, keepdims=True))
  return np.sum(p * values, axis=1) / np.sum(p, axis=1)


def x0_step(rule: str, source, x_t, ab, lo, hi, key) -> np.ndarray:
  """x̂0 of one reverse step under a rule (see the module docstring)."""
  log_w, mean, std = posterior_components(source, x_t, ab)
  if rule == "prior-mean":
    return mixture_mean(log_w, mean)
  lo_k, hi_k = lo[:, None], hi[:, None]
  log_w = log_w + log_box_mass((lo_k - mean) / std, (hi_k - mean) / std)
  args = [jnp.asarray(v, jnp.float32) for v in (mean, std, np.broadcast_to(lo_k, mean.shape),
                                                np.broadcast_to(hi_k, mean.shape))]
  if rule == "ideal-mean":
    return mixture_mean(log_w, np.asarray(projections.truncated_normal_mean(*args), np.float64))
  k_pick, k_draw = jax.random.split(key)
  draws = np.asarray(projections.truncated_normal_sample(k_draw, *args), np.float64)
  return draws[np.arange(len(x_t)), pick(k_pick, log_w)]


def run(source: analytic.Mixture, step: float, rule: str, num_steps: int, n: int, key) -> dict:
  """(D, P) of n decoded values, in units of D*, with the bound's ratio."""
  sched = schedules.respace(schedules.make_schedule("linear", 1000), num_steps)
  k_x, k_start, k_run, k_floor = jax.random.split(key, 4)
  x0 = analytic.sample(source, k_x, (n,))
  cell = np.round(x0 / step)
  lo, hi = (cell - 0.5) * step, (cell + 0.5) * step
  x = np.asarray(jax.random.normal(k_start, (n,)), np.float64)
  for i in range(num_steps, 0, -1):
    k_step, k_noise = jax.random.split(jax.random.fold_in(k_run, i))
    u = x0_step(rule, source, x, sched.alphas_cumprod[i - 1], lo, hi, k_step)
    x = np.asarray(samplers.ddim_step_from_x0(jnp.asarray(x, jnp.float32), jnp.asarray(u, jnp.float32),
                                              i, jax.random.normal(k_noise, (n,)), sched, eta=1.0),
                   np.float64)
  d_star = toy.cell_theory(source, step).d_star
  d = float(np.mean((x - x0) ** 2)) / d_star
  p = analytic.w2_sq_to_atoms(source, x) / d_star
  floor = analytic.w2_sq_to_atoms(source, analytic.sample(source, k_floor, (n,))) / d_star
  # W2(p_X, p_X*)² = D* for interval cells (`analytic_rdp.py` checks it), so in units of D*:
  return dict(D=d, P=p, floor=floor, ratio=d / float(toy.dp_bound(p, 1.0, 1.0)))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sources", default="gauss,gmm")
  p.add_argument("--q-steps", default="0.125,0.25,0.5", help="quantiser steps Δ ([−1, 1] units)")
  p.add_argument("--rules", default=",".join(RULES), help="comma-separated, of " + ", ".join(RULES))
  p.add_argument("--num-steps", type=int, default=100, help="reverse steps N (the decoder's default)")
  p.add_argument("--n", type=int, default=20000,
                 help="scalar draws per case (kd_kp_check.py: 12288 per 64² image)")
  p.add_argument("--seeds", type=int, default=1, help="repeats of each case, for P's sampling spread")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  rules = args.rules.split(",")
  if not set(rules) <= set(RULES):
    raise SystemExit(f"error: --rules takes some of {', '.join(RULES)}; got {args.rules!r}")
  start = time.perf_counter()
  key = jax.random.key(args.seed)
  print(f"N = {args.num_steps} steps, {args.n} draws per case; (D/D*, P/D*) and D/D(P); "
        "the posterior sample is (2, 0), the MMSE point (1, 1)")
  print(f"{'source':<6} {'Δ':>6} {'seed':>4} {'P floor':>8}" + "".join(f"{r:>28}" for r in rules))
  for j, name in enumerate(args.sources.split(",")):
    source, _ = analytic_rdp.make_source(name)
    for s, step in enumerate(analytic_rdp.parse_floats(args.q_steps)):
      for r in range(args.seeds):
        case = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, j), s), r)
        rows = [run(source, step, rule, args.num_steps, args.n, case) for rule in rules]
        print(f"{name:<6} {step:6g} {r:4d} {rows[0]['floor']:8.4f}" + "".join(
            f"   ({q['D']:6.3f}, {q['P']:6.4f}) {q['ratio']:5.2f}" for q in rows), flush=True)
  print(f"total {time.perf_counter() - start:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
