"""Parity of `tcm-official` with the official TCM code, live, at any size the official code runs.

  bash /work/shared/tools/torch-reference-env.sh
  python experiments/tcm_parity.py --source DIR [--sizes 64,128] [--size 384x256 | --image PHOTO]
  python experiments/tcm_parity.py            # the committed 256×256 fixtures, no official code

Runs experiments/fixtures/make_tcm_fixtures.py under the reference venv into a temporary folder
(the official code at both published sizes, seeded weights, one HxW image), then the comparisons of
tests/test_tcm_official.py on it, and prints the table: maximum error relative to the largest value
of each part at the official inputs, and the fraction of y symbols our float forward rounds
differently from the official `compress`. The committed fixtures are 256×256; a non-square size
also checks the window order along each axis; `--image` takes a photo instead (cropped at its
top-left corner to multiples of 128). Then the coder (`TCMCodec`, integer entropy
networks): the y symbols it rounds differently from the official `compress`, and its decoded mu
against the float networks run at the same decoded inputs (max |mu_int − mu_float|, which holds the
coder's rounding of mu to the 2**-12 grid, up to 2**-13 = 1.2e-4), whether its file decodes to
the z and y symbols it coded, bit for bit, and its file size against the official `compress` strings.
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
from dcic_jax.errors import UserError, exit_code  # noqa: E402

PARTS = ("y", "z", "means", "scales", "y_likelihoods", "z_likelihoods", "x_hat")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--source", help="git checkout of jmliu206/LIC_TCM; without it, the committed fixtures")
  ap.add_argument("--sizes", default="64,128", help="N values")
  ap.add_argument("--size", default="384x256", help="HxW, multiples of 128, at least 256")
  ap.add_argument("--image", help="an image file instead of the seeded image of --size")
  ap.add_argument("--ref-python", default=os.path.expanduser("~/.torch-ref-venv/bin/python"))
  args = ap.parse_args()
  if args.image and not args.source:
    raise UserError("--image needs --source (the official code codes the photo)")
  from dcic_jax.codecs import tcm_import
  from dcic_jax.codecs.registry import make_codec
  with tempfile.TemporaryDirectory() as tmp:
    if args.source:
      image = ["--image", os.path.abspath(args.image)] if args.image else ["--size", args.size]
      subprocess.run([args.ref_python, str(ROOT / "experiments" / "fixtures" / "make_tcm_fixtures.py"),
                      "--source", args.source, "--sizes", args.sizes, "--out-dir", tmp, *image], check=True)
    else:
      tmp, args.size = ROOT / "tests" / "fixtures", "256x256"
    first = np.load(pathlib.Path(tmp) / f"tcm_official_N{args.sizes.split(',')[0]}.npz")["image"]
    what = f"{args.image} ({first.shape[0]}x{first.shape[1]} crop)" if args.image else f"{args.size} image"
    print(f"\n{what}; max relative error at the official inputs, and y symbols our float "
          "forward rounds differently from the official compress:\n")
    print("| N | " + " | ".join(PARTS) + " | symbols differing |")
    print("|---" * (len(PARTS) + 2) + "|")
    coded = {}
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
      coded[n] = coder_parity(config, params, f)
    print("\nthe coder (integer entropy networks):\n")
    print("| N | y symbols differing from the official compress | max abs(mu_int − mu_float) | mean | "
          "max before the grid rounding | decodes to its symbols | bytes, ours / official |")
    print("|---|---|---|---|---|---|---|")
    for n, c in coded.items():
      print(f"| {n} | {c['differ']} of {c['size']} ({c['differ'] / c['size']:.1e}) | {c['worst']:.2e} | "
            f"{c['mean']:.2e} | {c['own']:.2e} | {'yes' if c['exact'] else 'NO'} | "
            f"{c['bytes']} / {c['official_bytes']} ({c['bytes'] / c['official_bytes']:.4f}) |")


def coder_parity(config, params, f) -> dict:
  """The coder against the official code: y symbols rounding differently from its `compress`, the
  coder's mu (without the LRP term) against the float slice networks at the decoded inputs, whether
  the file decodes to the symbols coded (y − mu of the decode is exactly the symbol), file bytes."""
  from dcic_jax.codecs import tcm_codec
  codec = tcm_codec.make_tcm_codec(config, params)
  data, z_sym, y_sym = codec.compress_with_symbols(f["image"])
  dec = codec.decompress(data)
  mu, _ = jax.jit(lambda p, z, y: codec.module.apply({"params": p}, z, y, method="slice_params_at"))(
      params, dec.z_hat[None], dec.y_hat[None])
  mu = np.asarray(mu, np.float64)[0]
  delta = np.abs(dec.mu.astype(np.float64) - dec.r - mu)
  own = np.abs(integer_means(codec, dec) - mu)
  exact = (np.array_equal(np.round(dec.z_hat - codec.medians), z_sym)
           and np.array_equal(dec.y_hat.astype(np.float64) - dec.mu.astype(np.float64), y_sym))
  return dict(differ=int(np.sum(y_sym != f["symbols"])), size=y_sym.size, worst=float(delta.max()),
              mean=float(delta.mean()), own=float(own.max()), exact=exact, bytes=len(data),
              official_bytes=int(f["official_bytes"]))


def integer_means(codec, dec) -> np.ndarray:
  """The integer networks' means before the coder's grid rounding, at the decoded inputs."""
  from dcic_jax.codecs import integer_ops as iops
  from dcic_jax.codecs import tcm_codec
  q, t = codec._integer_state  # pylint: disable=protected-access
  cfg, cs = codec.module.tcm, codec.slice_spec.slice_channels

  @jax.jit
  def means(q, t, z, y_hat):
    mean_feat, _ = tcm_codec._hyper_int(q["hyper"]["mean"], t, z, cfg=cfg)  # pylint: disable=protected-access
    support = [y_hat[..., i * cs:(i + 1) * cs] for i in range(cfg.num_slices)]
    net = lambda: tcm_codec.IntegerTCM(cfg, t)
    return [net().slice_branch(q["slices"][i]["mean"], mean_feat, support[:i])[0] for i in range(cfg.num_slices)]
  with jax.enable_x64(True), jax.default_device(codec._cpu):  # pylint: disable=protected-access
    out = means(q, t, iops.to_int(dec.z_hat, iops.ACT), iops.to_int(dec.y_hat, iops.ACT))
    return np.concatenate([np.asarray(m) for m in out], -1) / 2.0**iops.ACT


if __name__ == "__main__":
  sys.exit(exit_code(main))
