"""How far the integer h_s moves mu from CompressAI's float h_s, per fixed-point precision.

The CompressAI imports code with the integer hyper-synthesis of `codecs/fixed_point.py` (weights on
2**-w, activations on 2**-a, `fixed_point.Grids`; mu then rounded to the coder's 2**-12 grid). Its
mu differs from CompressAI's float mu, and a y − mu that lies within that difference of a
half-integer rounds to another symbol than CompressAI's `compress` gives. This prints max and mean
|mu_int − mu_torch| at CompressAI's own z_hat (the committed parity fixture
tests/fixtures/compressai_mbt2018-mean.npz), of the h_s output and of the coder's mu, for the grids
of format versions 2 (14/12) and 3 (20/17) and any others. At full size, against CompressAI's
`compress` itself: experiments/compressai_symbol_parity.py.

  python experiments/hyper_precision.py [--precisions 14/12,20/16,20/17,20/18,24/20]
"""
import argparse
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--precisions", default="14/12,20/16,20/17,20/18,24/20",
                 help="weights/activations fractional bits, comma-separated")
  args = p.parse_args()
  sys.path.insert(0, str(REPO / "tests"))
  import test_compressai_import as T  # pylint: disable=g-import-not-at-top
  from dcic_jax.codecs import codec as codec_lib, fixed_point
  d, o = T.fixture("mbt2018-mean"), T.ours("mbt2018-mean")
  codec = codec_lib.make_codec_from_params("mbt2018-mean", o["config"], o["params"])
  z_hat, mu_torch = d["z_hat"][0], d["means"][0]
  print("mbt2018-mean fixture (N = 16, M = 24), |mu_int − mu_torch| at CompressAI's z_hat")
  print("| weights / activations | h_s output: max | mean | coder's mu (2^-12): max | mean |\n|---|---|---|---|---|")
  for pair in args.precisions.split(","):
    w, a = (int(v) for v in pair.split("/"))
    c = codec.with_grids(fixed_point.Grids(w, a, 16 if (w, a) == (14, 12) else w))
    out = c._h_s_int(z_hat)
    fine = np.abs(fixed_point.split_mu_sigma(out, c.spec)[0] / 2.0**a - mu_torch)
    coder = np.abs(c._hyper(z_hat)[0] - mu_torch)
    print(f"| 2^-{w} / 2^-{a} | {fine.max():.2e} | {fine.mean():.2e} | {coder.max():.2e} | {coder.mean():.2e} |")


if __name__ == "__main__":
  main()
