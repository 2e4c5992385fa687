"""Encode/decode time per Kodak image: our codecs vs CompressAI's ScaleHyperprior, same run.

  python experiments/bench_codec.py [--kodak ../shared/data/kodak] [--images 6] [--torch-python PY]

The baseline is CompressAI 1.2.8 `ScaleHyperprior(N, M)` (random init, `update()`d) run in
the PyTorch reference venv (`../shared/tools/torch-reference-env.sh`). Its state dict is
converted into our `bmshj2018` so both sides code the same model; then each side times
compress (file bytes) and decompress (x_hat) per image, after one warm-up per image shape
(jit compile, torch lazy init). The two sides alternate for --rounds rounds (each prints its
ratio; the median is the figure), and ours is then timed stage by stage. Also times the shipped
checkpoints. Prints ratios ours/theirs.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from dcic_jax.codecs import codec as codec_lib  # noqa: E402
from dcic_jax.data.images import list_images, load_rgb  # noqa: E402

TORCH_SIDE = r'''
import json, sys, time
import numpy as np, torch
from PIL import Image
from compressai.models import ScaleHyperprior
N, M, out_npz, paths = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
torch.manual_seed(0)
net = ScaleHyperprior(N, M).eval()
net.update(force=True)
np.savez(out_npz, **{k: v.detach().numpy() for k, v in net.state_dict().items()})
def load(p):
  x = torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
  h, w = x.shape[2:]
  return torch.nn.functional.pad(x, (0, (-w) % 64, 0, (-h) % 64), mode="replicate")
res = []
with torch.no_grad():
  seen = set()
  for p in paths:
    x = load(p)
    if x.shape not in seen:  # warm-up per shape
      seen.add(x.shape); o = net.compress(x); net.decompress(o["strings"], o["shape"])
    t0 = time.perf_counter(); o = net.compress(x); t1 = time.perf_counter()
    net.decompress(o["strings"], o["shape"]); t2 = time.perf_counter()
    res.append(dict(image=p, enc_s=t1 - t0, dec_s=t2 - t1, bytes=sum(len(s[0]) for s in o["strings"])))
print(json.dumps(res))
'''


def time_ours(codec, images):
  seen, rows = set(), []
  for im in images:
    if im.shape not in seen:  # warm-up per shape (jit compile)
      seen.add(im.shape)
      codec.decompress(codec.compress(im))
    t0 = time.perf_counter()
    data = codec.compress(im)
    t1 = time.perf_counter()
    codec.decompress(data)
    t2 = time.perf_counter()
    rows.append(dict(enc_s=t1 - t0, dec_s=t2 - t1, bytes=len(data)))
  return rows


def stage_times(codec, images) -> dict:
  """Median ms per image of each stage of our compress + decompress (a hyperprior codec)."""
  from dcic_jax.entropy import coder
  times = {}

  def lap(name, t0):
    times.setdefault(name, []).append(1e3 * (time.perf_counter() - t0))
    return time.perf_counter()

  for im in images:
    padded, _ = codec_lib._pad(im)
    t = time.perf_counter()
    y, z = jax.device_get(codec._analysis(codec._device_params, padded[None]))
    t = lap("g_a + h_a", t)
    z_sym = np.round(z[0] - codec.medians).astype(np.int64)
    z_hat = (z_sym.astype(np.float32) + codec.medians).astype(np.float32)
    mu, index = codec._hyper(z_hat)
    t = lap("integer h_s + indexes", t)
    y_sym = np.round(y[0] - mu).astype(np.int64)
    z_idx = np.broadcast_to(np.arange(z_sym.shape[-1]), z_sym.shape)
    enc = coder.Encoder()
    enc.encode(z_sym, z_idx, codec.z_tables)
    enc.encode(y_sym, index, codec.y_tables)
    data = enc.finish()
    t = lap("range coding", t)
    dec = coder.Decoder(data)
    dec.decode(z_idx, codec.z_tables)
    y_hat = dec.decode(index, codec.y_tables) + mu
    t = lap("range decoding", t)
    np.asarray(codec._synthesis(codec._device_params, y_hat[None].astype(np.float32)))
    lap("g_s", t)
  return {k: float(np.median(v)) for k, v in times.items()}


def mean(rows, k):
  return float(np.mean([r[k] for r in rows]))


def total(rows) -> float:
  """Mean encode + mean decode seconds per image."""
  return mean(rows, "enc_s") + mean(rows, "dec_s")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--kodak", default=str(REPO.parent / "shared" / "data" / "kodak"))
  ap.add_argument("--images", type=int, default=6, help="number of Kodak images (0 = all 24)")
  ap.add_argument("--N", type=int, default=128)
  ap.add_argument("--M", type=int, default=192)
  ap.add_argument("--torch-python", default=os.path.expanduser("~/.torch-ref-venv/bin/python"))
  ap.add_argument("--rounds", type=int, default=3, help="CompressAI / ours alternations (the ratio's median)")
  ap.add_argument("--checkpoints", default="",
                  help="comma-separated exports to time instead of the shipped *-q3 (skips the CompressAI baseline)")
  args = ap.parse_args()
  paths = list_images(args.kodak)[: args.images or None]
  images = [load_rgb(p) for p in paths]
  print(f"{len(images)} Kodak images, CPU cores: {os.cpu_count()}")

  results, ratios = {}, []
  if args.checkpoints:
    for ckpt in [c for c in args.checkpoints.split(",") if c]:
      results[f"ours {pathlib.Path(ckpt).name}"] = time_ours(codec_lib.load(ckpt), images)
  elif pathlib.Path(args.torch_python).is_file():
    with tempfile.TemporaryDirectory() as tmp:
      npz = os.path.join(tmp, "sd.npz")
      ours_codec = None
      for r in range(args.rounds):  # alternate the two sides: load changes hit both alike
        p = subprocess.run([args.torch_python, "-c", TORCH_SIDE, str(args.N), str(args.M), npz] + [str(x) for x in paths],
                           capture_output=True, text=True)
        if p.returncode:
          print("CompressAI baseline failed:\n" + p.stderr[-2000:])
          break
        theirs = json.loads(p.stdout.strip().splitlines()[-1])
        if ours_codec is None:
          from dcic_jax.codecs.compressai_import import convert_state_dict
          config, params = convert_state_dict("bmshj2018-hyperprior", dict(np.load(npz)))
          ours_codec = codec_lib.make_codec_from_params("bmshj2018", config, params)
        ours = time_ours(ours_codec, images)
        ratios.append(total(ours) / total(theirs))
        print(f"round {r + 1}: load {os.getloadavg()[0]:.1f}, CompressAI {mean(theirs, 'enc_s'):.3f} / "
              f"{mean(theirs, 'dec_s'):.3f} s, ours {mean(ours, 'enc_s'):.3f} / {mean(ours, 'dec_s'):.3f} s, "
              f"ratio {ratios[-1]:.2f}x", flush=True)
        results.setdefault(f"CompressAI ScaleHyperprior({args.N},{args.M})", []).extend(theirs)
        results.setdefault("ours bmshj2018 (same weights)", []).extend(ours)
    if ours_codec is not None:
      stages = stage_times(ours_codec, images)
      print("ours, where the time goes (median ms per image, after the rounds): "
            + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()), flush=True)
  else:
    print(f"no PyTorch reference at {args.torch_python}: baseline skipped")
  for ckpt in [] if args.checkpoints else sorted((REPO / "checkpoints").glob("*-q3/codec.json")):
    results[f"ours {ckpt.parent.name} (shipped)"] = time_ours(codec_lib.load(ckpt.parent), images)

  print("\n| codec | enc s/img | dec s/img | KB/img |\n|---|---|---|---|")
  for name, rows in results.items():
    print(f"| {name} | {mean(rows, 'enc_s'):.3f} | {mean(rows, 'dec_s'):.3f} | {mean(rows, 'bytes') / 1024:.1f} |")
  keys = list(results)
  if len(keys) >= 2 and keys[0].startswith("CompressAI"):
    t, o = results[keys[0]], results[keys[1]]
    print(f"\nratio ours/CompressAI (same model): encode {mean(o, 'enc_s') / mean(t, 'enc_s'):.2f}x, "
          f"decode {mean(o, 'dec_s') / mean(t, 'dec_s'):.2f}x, "
          f"encode+decode {total(o) / total(t):.2f}x "
          "(target <= 0.8x)")
  if len(ratios) > 1:
    print(f"encode+decode ratio per round: {', '.join(f'{x:.2f}' for x in ratios)}; median {np.median(ratios):.2f}x")


if __name__ == "__main__":
  main()
