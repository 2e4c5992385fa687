"""How many y symbols the CompressAI imports round differently from CompressAI's own `compress`.

  python experiments/compressai_symbol_parity.py [--shapes 128/192,192/320] [--seeds 2018,7] [--grids 20/16]

A worker under the PyTorch reference venv (`--ref-python`, torch 2.13 CPU + compressai 1.2.8)
builds, for each architecture (bmshj2018-hyperprior, mbt2018-mean), size N/M (128/192: the zoo's
qualities 1–5, 192/320: qualities 6–8 of mbt2018-mean) and seed, the seeded random model of
experiments/fixtures/make_compressai_fixtures.py with its perturbation (y over several bins, scales
of y's order), runs CompressAI's `compress` on the three shipped Kodak crops (256×384 each) and
records the y symbols it codes (what `EntropyModel.compress` rounds), its z symbols and means_hat.
Here its state dict goes through our importer (`compressai_import.convert_state_dict`), and our
codec encodes the same images with the integer networks of format version 2 (`fixed_point.LEGACY`:
weights 2**-14, activations 2**-12) and version 3 (`fixed_point.GRIDS`), and with any `--grids`
W/A given. Two more rows per model bound what any grids can reach: our float h_s (the floor set by
float32 g_a and h_s), and CompressAI's own mu rounded to the coder's 2**-12 grid (the floor set by
that grid, which y_hat = symbol + mu needs). Counts are summed over the seeds (a few dozen symbols
per model: one seed's count is noisy). The markdown table gives the y symbols that differ, max / mean
|mu − mu_torch| of the coder's mu (2**-12 grid) and of the h_s output before that rounding, and the
exactness margin: the largest max|a| · Σ|w| of any layer (real units; the integer network checks
it against 2**(52 − w − a), the limit beside it).
"""
import argparse
import os
import pathlib
import subprocess
import tempfile

import numpy as np
import tqdm

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGES = ["kodim04_crop.png", "kodim15_crop.png", "kodim23_crop.png"]
ARCHS = ("bmshj2018-hyperprior", "mbt2018-mean")

WORKER = r"""
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
import make_compressai_fixtures as F
from PIL import Image
out_dir, seed, images = sys.argv[2], int(sys.argv[3]), sys.argv[6:]
arch, (n, m) = sys.argv[4], map(int, sys.argv[5].split("/"))
torch.manual_seed(seed)
model = F.ARCHS[arch](n, m)
F.perturb(model, torch.Generator().manual_seed(seed + 1))
model.eval()
model.update(force=True)
seen = {}
for name in ("entropy_bottleneck", "gaussian_conditional"):  # record what `compress` rounds
  em = getattr(model, name)
  def compress(inputs, *a, _em=em, _orig=em.compress, _name=name, **k):
    if _name == "gaussian_conditional":
      seen["y"], seen["means"] = inputs, k.get("means")
    out = _orig(inputs, *a, **k)
    if _name == "entropy_bottleneck":  # EntropyBottleneck.compress -> EntropyModel.compress(z, idx, medians)
      seen["z_sym"] = _em.quantize(inputs, "symbols", _em._get_medians().detach().reshape(1, -1, 1, 1))
    return out
  em.compress = compress
nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)[0]
res = {f"state_dict.{k}": v.numpy() for k, v in model.state_dict().items()}
with torch.no_grad():
  for i, path in enumerate(images):
    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).float().permute(2, 0, 1)[None] / 255.0
    model.compress(x)
    means = seen["means"] if seen["means"] is not None else torch.zeros_like(seen["y"])
    res[f"y_sym{i}"] = nhwc(model.gaussian_conditional.quantize(seen["y"], "symbols", seen["means"]))
    res[f"z_sym{i}"], res[f"means{i}"] = nhwc(seen["z_sym"]), nhwc(means)
np.savez(f"{out_dir}/ref.npz", **res)
"""


def reference(ref_python: str, arch: str, shape: str, seed: int, images: list[pathlib.Path]) -> dict:
  """CompressAI's symbols, means and state dict for one model (the worker's .npz)."""
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([ref_python, "-c", WORKER, str(ROOT / "experiments" / "fixtures"), tmp, str(seed), arch, shape,
                    *map(str, images)], check=True)
    with np.load(f"{tmp}/ref.npz") as f:
      return {k: f[k] for k in f.files}


def rows(arch: str, ref: dict, images: list[np.ndarray], extra) -> list[tuple]:
  """(label, y symbols differing, total, max |Δmu|, mean |Δmu|, mean |Δmu| before the coder's grid,
  z symbols differing, largest max|a|·Σ|w|, its limit) per way of computing mu."""
  from dcic_jax.codecs import codec as codec_lib, fixed_point
  from dcic_jax.codecs import compressai_import as ci
  sd = {k[len("state_dict."):]: v for k, v in ref.items() if k.startswith("state_dict.")}
  config, params = ci.convert_state_dict(arch, sd)
  codec = codec_lib.make_codec_from_params(ci.ARCHS[arch], config, params)
  g = lambda grids: f"2^-{grids.weights} / 2^-{grids.activations}"
  ways = [("float h_s", "float"), ("CompressAI's mu on 2^-12", "torch"),
          (f"v2 {g(fixed_point.LEGACY)}", fixed_point.LEGACY),
          (f"v3 {g(fixed_point.GRIDS)}", fixed_point.GRIDS)]
  ways += [(g(grids), grids) for grids in extra]
  bounds = []  # every layer's accumulator bound (integer units), as the integer network checks it
  check = fixed_point._check_exact
  fixed_point._check_exact = lambda b: (bounds.append(float(b)), check(b))
  try:
    return [_row(codec, ref, images, label, grids, bounds) for label, grids in ways]
  finally:
    fixed_point._check_exact = check


def _row(codec, ref: dict, images: list[np.ndarray], label: str, grids, bounds: list) -> tuple:
  """One row of `rows`; grids: `fixed_point.Grids`, "float" (our float h_s) or "torch" (CompressAI's
  mu on the coder's grid)."""
  import jax.numpy as jnp
  from dcic_jax.codecs import fixed_point
  bounds.clear()
  diff = total = z_diff = 0
  errs, fine_errs = [], []
  for i, image in enumerate(images):
    mu_torch = ref[f"means{i}"]
    if isinstance(grids, str):  # our float g_a; our float h_s, or torch's mu on the coder's grid
      y, z = (np.asarray(a)[0] for a in codec._analysis(codec._device_params, image[None]))
      z_sym = np.round(z - codec.medians)
      z_hat = (z_sym + codec.medians).astype(np.float32)
      if grids == "float":
        mu = fine = np.asarray(codec.module.apply({"params": codec.params}, jnp.asarray(z_hat[None]),
                                                  method="h_s")[0])[0]
      else:
        mu, fine = np.floor(mu_torch * 2.0**12 + 0.5) / 2.0**12, mu_torch  # halves up, as the coder
      y_sym = np.round(y - mu)
    else:
      c = codec.with_grids(grids)
      _, z_sym, y_sym, _ = c.encode_latents(image)
      z_hat = (z_sym + codec.medians).astype(np.float32)
      mu, _ = c._hyper(z_hat)
      fine = fixed_point.split_mu_sigma(c._h_s_int(z_hat), c.spec)[0] / 2.0**grids.activations
    diff += int(np.sum(y_sym != ref[f"y_sym{i}"]))
    total += y_sym.size
    z_diff += int(np.sum(z_sym != ref[f"z_sym{i}"]))
    errs.append(np.abs(mu - mu_torch).ravel())
    fine_errs.append(np.abs(fine - mu_torch).ravel())
  e, f = np.concatenate(errs), np.concatenate(fine_errs)
  if isinstance(grids, str):
    margin = (np.nan, np.nan)
  else:
    frac = grids.weights + grids.activations
    margin = (max(bounds) / 2.0**frac, 2.0**(52 - frac))
  return (label, diff, total, e.max(), e.mean(), f.mean(), z_diff, *margin)


def _sum_seeds(runs):
  """One row from the same row of every seed: counts summed, maxima and (equal-weight) means."""
  col = lambda j: [r[j] for r in runs]
  mean = lambda j: float(np.mean(col(j)))
  return (runs[0][0], sum(col(1)), sum(col(2)), max(col(3)), mean(4), mean(5), sum(col(6)), max(col(7)), runs[0][8])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--shapes", default="128/192,192/320", help="N/M sizes")
  ap.add_argument("--archs", default=",".join(ARCHS))
  ap.add_argument("--grids", default="", help="more W/A grids to compare, e.g. 24/16,20/18")
  ap.add_argument("--seeds", default="2018,7", help="model seeds; counts are summed over them")
  ap.add_argument("--ref-python", default=os.path.expanduser("~/.torch-ref-venv/bin/python"))
  args = ap.parse_args()
  from dcic_jax.codecs import fixed_point
  from dcic_jax.data.images import load_rgb
  paths = [ROOT / "data" / "images" / name for name in IMAGES]
  images = [load_rgb(p) for p in paths]
  extra = [fixed_point.Grids(int(w), int(a), int(w)) for w, a in (p.split("/") for p in args.grids.split(",") if p)]
  seeds = [int(v) for v in args.seeds.split(",")]
  print(f"CompressAI 1.2.8 `compress` against our import, 3 Kodak crops 256x384, seeds {args.seeds}")
  print("| model | N / M | mu from (weights / activations) | y symbols differing | fraction "
        "| max abs(Δmu) | mean abs(Δmu) | mean before the 2^-12 rounding | z symbols differing "
        "| largest max abs(a)·Σ abs(w) (limit) |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  models = tqdm.tqdm(total=len(args.archs.split(",")) * len(args.shapes.split(",")) * len(seeds),
                     desc="models", unit="model")  # each: CompressAI's run in the worker, then ours
  for arch in args.archs.split(","):
    for shape in args.shapes.split(","):
      per_seed = []
      for seed in seeds:
        per_seed.append(rows(arch, reference(args.ref_python, arch, shape, seed, paths), images, extra))
        models.update()
      for runs in zip(*per_seed):
        label, diff, total, mx, mean, fine, z_diff, bound, limit = _sum_seeds(runs)
        margin = "" if np.isnan(bound) else f"{bound:,.0f} ({limit:,.0f})"
        print(f"| {arch} | {shape} | {label} | {diff:,} of {total:,} | {diff / total:.1e} | {mx:.2e} | {mean:.2e} "
              f"| {fine:.2e} | {z_diff} | {margin} |", flush=True)
  models.close()


if __name__ == "__main__":
  main()
