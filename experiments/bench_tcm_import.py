"""Encode + decode time of the imported official TCM against the official code, same weights, same run.

  bash /work/shared/tools/torch-reference-env.sh
  python experiments/bench_tcm_import.py --source DIR [--N 64] [--size 256] [--rounds 5]

DIR is a git checkout of jmliu206/LIC_TCM. The official `TCM.compress` / `decompress` run in a
worker under the reference venv's python (torch 2.13 CPU, compressai 1.2.8; models/tcm.py loaded as
experiments/fixtures/make_tcm_fixtures.py does, with its seeded weights); ours run in this
process on the same weights (the worker sends its parameter names and shapes, tests/tcm_weights.py
draws the same numbers). Rounds alternate ours / official after one warm-up each (our first call
compiles), so both see the same machine load (and ours reports the time its slice loops, the
integer entropy networks, take); the official code runs with torch's default threads (one per
core, as ours uses every core; `--torch-threads N` to change it: under heavy load one thread can be
faster); the table gives medians and the ratio ours / official.
Image: a seeded smooth size×size RGB image (size a multiple of 128, at least 256: the official code's
domain).
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "experiments"))
import cpu_info  # noqa: E402
import tcm_weights  # noqa: E402

WORKER = r"""
import json, sys, time, numpy as np, torch
sys.path.insert(0, sys.argv[1])
if int(sys.argv[4]) > 0:
  torch.set_num_threads(int(sys.argv[4]))
import make_tcm_fixtures as F
mod = F.official_module(sys.argv[2])
net = F.seeded_model(mod, int(sys.argv[3]))
print(json.dumps([[k, list(p.shape)] for k, p in net.named_parameters()]), flush=True)
for line in sys.stdin:
  img = np.load(line.strip())
  x = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
  with torch.no_grad():
    t0 = time.perf_counter(); enc = net.compress(x); t1 = time.perf_counter()
    dec = net.decompress(enc["strings"], enc["shape"]); t2 = time.perf_counter()
  nbytes = sum(len(s) for part in enc["strings"] for s in part)
  print(json.dumps(dict(encode=t1 - t0, decode=t2 - t1, bytes=nbytes)), flush=True)
"""


def smooth_image(side: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (side // 16, side // 16, 3))
  up = np.kron(coarse, np.ones((16, 16, 1)))
  return np.clip(up + rng.normal(0, 12, up.shape), 0, 255).astype(np.uint8)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--source", required=True, help="git checkout of jmliu206/LIC_TCM")
  ap.add_argument("--N", type=int, default=64, choices=(64, 128))
  ap.add_argument("--size", type=int, default=256)
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--torch-threads", type=int, default=0,
                  help="torch intra-op threads of the official code; 0: torch's default (one per core, "
                       "the fair setting: ours uses every core). Under heavy load 1 can be faster")
  ap.add_argument("--ref-python", default=os.path.expanduser("~/.torch-ref-venv/bin/python"))
  args = ap.parse_args()
  if args.size % 128 or args.size < 256:
    sys.exit("error: --size must be a multiple of 128, at least 256 (the official code's domain)")
  from dcic_jax.codecs import tcm_codec, tcm_import

  worker = subprocess.Popen([args.ref_python, "-c", WORKER, str(ROOT / "experiments" / "fixtures"), args.source,
                             str(args.N), str(args.torch_threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  keys_shapes = [(k, tuple(s)) for k, s in json.loads(worker.stdout.readline())]
  config, params = tcm_import.convert_state_dict(tcm_weights.seeded_state_dict(keys_shapes, 2023), args.N)
  codec = tcm_codec.make_tcm_codec(config, params)
  img = smooth_image(args.size)
  img_path = pathlib.Path(f"/tmp/bench_tcm_{os.getpid()}.npy")
  np.save(img_path, img)

  spent = []  # seconds in the slice loop (the integer entropy networks and the range coder) per call
  slices = codec._slices  # pylint: disable=protected-access

  def timed_slices(*a):
    t0 = time.perf_counter()
    out = slices(*a)
    spent.append(time.perf_counter() - t0)
    return out
  object.__setattr__(codec, "_slices", timed_slices)

  def ours():
    spent.clear()
    t0 = time.perf_counter()
    data = codec.compress(img)
    t1 = time.perf_counter()
    codec.decompress(data)
    return dict(encode=t1 - t0, decode=time.perf_counter() - t1, bytes=len(data), slices=sum(spent))

  def official():
    worker.stdin.write(f"{img_path}\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())

  t0 = time.perf_counter()
  ours()
  warm = time.perf_counter() - t0
  official()
  runs = {"ours": [], "official": []}
  for _ in range(args.rounds):
    runs["ours"].append(ours())
    runs["official"].append(official())
  worker.stdin.close()
  worker.wait()
  img_path.unlink()
  med = {who: {k: statistics.median(r[k] for r in rs) for k in ("encode", "decode", "bytes")} for who, rs in runs.items()}
  print(f"TCM N={args.N} M=320, {args.size}x{args.size} image, {args.rounds} alternating rounds, {cpu_info.describe()}, "
        f"official with torch threads={args.torch_threads or 'default'} (our first call, compiling: {warm:.1f} s)")
  print("| code | encode s | decode s | encode+decode s | bytes |")
  print("|---|---|---|---|---|")
  for who in ("ours", "official"):
    m = med[who]
    print(f"| {who} | {m['encode']:.3f} | {m['decode']:.3f} | {m['encode'] + m['decode']:.3f} | {int(m['bytes'])} |")
  total = lambda who: med[who]["encode"] + med[who]["decode"]
  print(f"ratio ours / official (encode + decode): {total('ours') / total('official'):.3f}")
  print(f"ours: {statistics.median(r['slices'] for r in runs['ours']):.3f} s of encode + decode in the slice loops "
        "(integer entropy networks + range coder), the rest g_a, g_s, z")


if __name__ == "__main__":
  main()
