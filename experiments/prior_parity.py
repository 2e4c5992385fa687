"""Every prior preset at its full published width against the upstream code, through dcic_jax's
entry points: `load_prior("PRESET:PATH")` and `dcic import-prior` (then `load_prior(DIR)`).

The upstream models (guided-diffusion's `script_util.create_model`, diffusers' `UNet2DModel`) are
built at each preset's published flags with seeded random weights in the PyTorch reference venv
(experiments/fixtures/make_diffusion_fixtures.py --full-width); their weights and output on a
1x3x64x64 input come back here as files. Prints one row per preset: parameters, max relative
error of ε (and of the learned-variance half v) through both entry points.

  python experiments/prior_parity.py --torch-python ~/.torch-ref-venv/bin/python
  python experiments/prior_parity.py --torch-python ... --presets dps-ffhq256   # one preset

Needs ~3x the largest model's size in memory (adm: 554 M parameters, 2.2 GB per copy) and disk.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dcic_jax.diffusion import learned_sigma, presets  # noqa: E402
from dcic_jax.diffusion import prior as prior_lib  # noqa: E402


def _rel(ours, ref) -> float:
  return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


def _errors(prior, f) -> tuple[float, float | None]:
  x, t = f["x"].transpose(0, 2, 3, 1), f["t"]
  ref = f["out"].transpose(0, 2, 3, 1)
  fn = learned_sigma.learned_variance_fn(prior.eps_fn) or prior.eps_fn
  out = jax.jit(fn)(prior.params, x, t)
  if prior.learned_variance:
    return _rel(out[0], ref[..., :3]), _rel(out[1], ref[..., 3:])
  return _rel(out, ref[..., :3]), None


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--torch-python", required=True, help="python of the PyTorch reference venv")
  ap.add_argument("--presets", default=",".join(presets.PRESETS))
  args = ap.parse_args()
  from dcic_jax import cli
  rows = []
  for preset in args.presets.split(","):
    with tempfile.TemporaryDirectory(prefix="prior-parity-") as tmp:
      subprocess.run([args.torch_python, os.path.join(ROOT, "experiments", "fixtures",
                                                      "make_diffusion_fixtures.py"),
                      "--full-width", tmp, "--presets", preset], check=True)
      f = dict(np.load(os.path.join(tmp, f"{preset}.npz")))
      weights = os.path.join(tmp, f"{preset}.safetensors")
      t0 = time.perf_counter()
      direct = _errors(prior_lib.load_prior(f"{preset}:{weights}"), f)
      seconds = time.perf_counter() - t0
      os.remove(os.path.join(tmp, f"{preset}.npz"))
      out = os.path.join(tmp, "imported")
      if cli.main(["import-prior", f"{preset}:{weights}", "--out", out]) != 0:
        raise SystemExit(f"import-prior failed for {preset}")
      os.remove(weights)
      imported = _errors(prior_lib.load_prior(out), f)
    rows.append((preset, int(f["params"]), direct, imported, seconds))
    print(f"{preset}: done", flush=True)
  fmt = lambda e: "-" if e is None else f"{e:.1e}"
  print("\n| preset | parameters | ε (load_prior) | v (load_prior) | ε (import-prior) | v (import-prior) | load + forward s |")
  print("|---|---|---|---|---|---|---|")
  for preset, n, (e1, v1), (e2, v2), s in rows:
    print(f"| {preset} | {n / 1e6:.1f} M | {fmt(e1)} | {fmt(v1)} | {fmt(e2)} | {fmt(v2)} | {s:.0f} |")
  worst = max(e for _, _, d, i, _ in rows for e in (*d, *i) if e is not None)
  print(f"\nworst relative error {worst:.1e} (bound 1e-4): {'ok' if worst <= 1e-4 else 'FAIL'}")
  return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
  sys.exit(main())
