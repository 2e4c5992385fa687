"""How far the integer h_s moves mu from CompressAI's float h_s, per fixed-point precision.

The CompressAI imports code with the integer hyper-synthesis of `codecs/fixed_point.py` (weights on
2**-W_FRAC, activations on 2**-A_FRAC). Its mu differs from CompressAI's float mu, and a y − mu
that lies within that difference of a half-integer rounds to another symbol than CompressAI's
`compress` gives. This prints max and mean |mu_int − mu_torch| at CompressAI's own z_hat (the
committed parity fixtures of tests/fixtures/compressai_*.npz) for the shipped precision and finer
ones, each in a fresh process (the precision is a module constant).

  python experiments/hyper_precision.py [--precisions 14/12,20/16,24/20]
"""
import argparse
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent

_CHILD = r"""
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
import numpy as np
from dcic_jax.codecs import fixed_point
fixed_point.W_FRAC, fixed_point.A_FRAC = {w}, {a}
import test_compressai_import as T
from dcic_jax.codecs import codec as codec_lib
d, o = T.fixture("mbt2018-mean"), T.ours("mbt2018-mean")
codec = codec_lib.make_codec_from_params("mbt2018-mean", o["config"], o["params"])
mu_int, _ = fixed_point.split_mu_sigma(codec._h_s_int(d["z_hat"][0]), codec.spec)
err = np.abs(mu_int / 2.0**{a} - d["means"][0])
print(f"{{err.max():.2e}} {{err.mean():.2e}}")
"""


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--precisions", default="14/12,20/16,24/20", help="W_FRAC/A_FRAC pairs")
  args = p.parse_args()
  print("mbt2018-mean fixture (N = 16, M = 24), |mu_int − mu_torch| at CompressAI's z_hat")
  print("| weights / activations | max | mean |\n|---|---|---|")
  for pair in args.precisions.split(","):
    w, a = (int(v) for v in pair.split("/"))
    code = _CHILD.format(repo=str(REPO), tests=str(REPO / "tests"), w=w, a=a)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mx, mean = out.stdout.split()[-2:]
    print(f"| 2^-{w} / 2^-{a} | {mx} | {mean} |")


if __name__ == "__main__":
  main()
