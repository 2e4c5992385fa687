"""Peak RSS of decoding an 8K (7680 x 4320) .dcic file to its base reconstruction, per shipped codec.

  python experiments/bench_memory_decode.py [--size 4320x7680] [--codecs bmshj2018-q1,...] [--untiled]

The file is built from the decoder's side, without running g_a on an 8K image: the latent symbols
of the repo's 256x384 photo crop, repeated over the 8K latent grid, coded with the tables the
decoder will use (z, then y under the scales h_s gives that z) — a valid file of the right size
and rate. Each decode runs in a fresh process (`Codec.decompress`, as `python -m dcic_jax
decompress` without --kd/--kp does) that prints its peak RSS (VmHWM, the whole process: Python,
JAX, the checkpoint and the decode) and its peak before decoding. (Not ru_maxrss: Linux carries it
over fork + exec, so a child would report this script's own peak.) --untiled lifts the tiling
threshold, for comparison. The bound quoted in docs/reliability.md comes from this script.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
def hwm_mib():
  for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024
from dcic_jax.codecs import codec as codec_lib
if sys.argv[4] == "untiled":
  codec_lib.TILE_ABOVE = 1 << 40
codec = codec_lib.load(sys.argv[2])
data = open(sys.argv[3], "rb").read()
before = hwm_mib()
t = time.time()
decoded = codec.decompress(data, max_pixels=1 << 30)
print(json.dumps(dict(before_mib=before, peak_mib=hwm_mib(),
                      seconds=time.time() - t, shape=list(decoded.image.shape))))
'''


def synthetic_file(codec, height: int, width: int) -> bytes:
  """A valid file of a height x width image: the photo crop's symbols tiled over the latent grid."""
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.data.images import load_rgb
  from dcic_jax.entropy import bitstream, coder
  photo = load_rgb(REPO / "data" / "images" / "kodim23_crop.png")
  _, z_small, y_small, _ = codec.encode_latents(photo)
  hp, wp = codec_lib._padded_size(height, width)
  reps = lambda a, s: np.tile(a, (-(-hp // (s * a.shape[0])), -(-wp // (s * a.shape[1])), 1))[:hp // s, :wp // s]
  z_sym, y_sym = reps(z_small, 64), reps(y_small, 16)
  z_hat = (z_sym.astype(np.float32) + codec.medians).astype(np.float32)
  enc = coder.Encoder()
  enc.encode(z_sym, np.broadcast_to(np.arange(z_sym.shape[-1]), z_sym.shape), codec.z_tables)
  if codec.slice_spec is not None:
    parts = codec._y_parts(y_sym)
    _, _, index, _, _ = codec._slices(z_hat, lambda i, _mu, _idx: parts[i])
  else:
    _, index = codec._hyper(z_hat)
  for s, i in zip(codec._y_parts(y_sym), codec._y_parts(index)):
    enc.encode(s, i, codec.y_tables)
  header = bitstream.Header(codec.codec_id, codec.fingerprint, height, width, hp, wp, 0, codec_lib.PRNG_IMPL)
  return bitstream.pack(header, [enc.finish()])


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--size", default="4320x7680", help="HEIGHTxWIDTH")
  ap.add_argument("--codecs", default="bmshj2018-q1,mbt2018-mean-q1,swint-charm-q1,tcm-q1")
  ap.add_argument("--untiled", action="store_true", help="also decode with g_s in one call")
  args = ap.parse_args()
  from dcic_jax.codecs import codec as codec_lib
  height, width = (int(v) for v in args.size.split("x"))
  print(f"decode of a {width}x{height} file (base reconstruction), peak RSS of a fresh process")
  print("| checkpoint | file bytes | g_s | RSS before decode MiB | peak RSS MiB | decode s |")
  print("|---|---|---|---|---|---|")
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.codecs.split(","):
      ckpt = REPO / "checkpoints" / name
      path = pathlib.Path(tmp) / f"{name}.dcic"
      path.write_bytes(synthetic_file(codec_lib.load(ckpt), height, width))
      for mode in ("tiled", "untiled") if args.untiled else ("tiled",):
        p = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(ckpt), str(path), mode],
                           capture_output=True, text=True)
        if p.returncode:
          print(f"| {name} | {path.stat().st_size} | {mode} | failed: {p.stderr.strip().splitlines()[-1]} | | |")
          continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"| {name} | {path.stat().st_size} | {mode} | {r['before_mib']:.0f} | {r['peak_mib']:.0f} | "
              f"{r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
  main()
