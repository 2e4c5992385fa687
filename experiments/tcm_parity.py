"""Parity of `tcm-official` with the official TCM code, live, at any size the official code runs.

  bash /work/shared/tools/torch-reference-env.sh
  python experiments/tcm_parity.py --source DIR [--sizes 64,128] [--size 384x256]

Runs experiments/fixtures/make_tcm_fixtures.py under the reference venv into a temporary folder
(the official code at both published sizes, seeded weights, one HxW image), then the comparisons of
tests/test_tcm_official.py on it, and prints the table: maximum error relative to the largest value
of each part at the official inputs, and the fraction of y symbols our float forward rounds
differently from the official `compress`. The committed fixtures are 256×256; a non-square size
also checks the window order along each axis.
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import tcm_weights  # noqa: E402
import test_tcm_official as checks  # noqa: E402

PARTS = ("y", "z", "means", "scales", "y_likelihoods", "z_likelihoods", "x_hat")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--source", required=True, help="git checkout of jmliu206/LIC_TCM")
  ap.add_argument("--sizes", default="64,128", help="N values")
  ap.add_argument("--size", default="384x256", help="HxW, multiples of 128, at least 256")
  ap.add_argument("--ref-python", default=os.path.expanduser("~/.torch-ref-venv/bin/python"))
  args = ap.parse_args()
  from dcic_jax.codecs import tcm_import
  from dcic_jax.codecs.registry import make_codec
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([args.ref_python, str(ROOT / "experiments" / "fixtures" / "make_tcm_fixtures.py"),
                    "--source", args.source, "--sizes", args.sizes, "--size", args.size, "--out-dir", tmp],
                   check=True)
    print(f"\n{args.size} image; max relative error at the official inputs, and y symbols our float "
          "forward rounds differently from the official compress:\n")
    print("| N | " + " | ".join(PARTS) + " | symbols differing |")
    print("|---" * (len(PARTS) + 2) + "|")
    for n in map(int, args.sizes.split(",")):
      f = dict(np.load(pathlib.Path(tmp) / f"tcm_official_N{n}.npz"))
      config, params = tcm_import.convert_state_dict(tcm_weights.fixture_state_dict(f), n)
      m = make_codec("tcm-official", **config)
      ours = checks._teacher_forced(m, params, f)  # pylint: disable=protected-access
      errors = [checks._rel(ours[k], f[k]) for k in PARTS]  # pylint: disable=protected-access
      out = jax.jit(lambda p, x: m.apply({"params": p}, x))(params, jnp.asarray(f["image"][None], jnp.float32) / 255.0)
      sym = np.round(np.asarray(out["y"])[0] - np.asarray(out["means"])[0])
      differ = int(np.sum(sym != f["symbols"]))
      print(f"| {n} | " + " | ".join(f"{e:.1e}" for e in errors) + f" | {differ} of {sym.size} ({differ / sym.size:.1e}) |")


if __name__ == "__main__":
  main()
