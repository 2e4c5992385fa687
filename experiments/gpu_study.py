"""The study's cost on one accelerator: the CelebA-HQ DDPM UNet at 256², DCIC and the Idempotence decoder.

One prepared call (`experiments/gpu_session.sh` with STUDY=1), about 10 minutes on an H100/H200:
  1. seconds per image of DCIC at each N of --steps in the default `project` mode and in the
     penalty `schedule` mode with `x0` and with `xt` gradients, and of the Idempotence decoder
     (`dps`, K_D = 0, K_P = 1, ζ = 0.6 as published for 256²) at N = --idem-steps: the median of
     --repeats calls after a first, compiling one (whose time is printed too);
  2. a 5×5 (K_D, K_P) grid of one image in one call, its 25 items vmapped together: images/s;
  3. peak memory of every program (XLA's buffer assignment of the compiled call), and the
     device's own peak at the end where the backend reports one;
  4. bfloat16 against float32 (the UNet's compute dtype; norms stay float32): seconds per call
     and, for DCIC_RP (0, 1) and DCIC_RDP (1, 1) of the same file and key, the PSNR against the
     original in each dtype and the PSNR between the two decodes.
The prior is google/ddpm-ema-celebahq-256's architecture (113.7 M parameters) with random weights
(the timings do not depend on them), the codec the shipped mbt2018-mean-q3, the image a 256² crop
of a shipped Kodak crop. The train step against diffusers at this size is `bench_unet.py`'s
(gpu_session.sh runs it after this script).

  python experiments/gpu_study.py                 # the study (an accelerator)
  python experiments/gpu_study.py --tiny          # every part on a small UNet, a CPU smoke run
"""
import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dcic_jax.codecs import codec as codec_lib  # noqa: E402
from dcic_jax.data.images import load_rgb  # noqa: E402
from dcic_jax.dcic import constraints, grid, sampler  # noqa: E402
from dcic_jax.diffusion import convert, presets, schedules, unet  # noqa: E402

FULL = schedules.make_schedule("linear", 1000)


def _unet_config(args, dtype: str) -> unet.UNetConfig:
  if args.tiny:
    return unet.UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                           attention_levels=(1,), norm_groups=8, num_heads=2, dtype=dtype)
  return convert.unet_config_from_diffusers(presets._DDPM_CELEBAHQ_256, dtype=dtype)


class Study:
  """The file, its decoding target and the timing helpers shared by every part."""

  def __init__(self, args):
    self.args = args
    codec = codec_lib.load(args.checkpoint)
    image = load_rgb(args.image)[:args.size, :args.size]
    decoded = codec.decompress(codec.compress(image, seed=1))
    self.original = image.astype(np.float32) / 127.5 - 1.0       # [H, W, 3] in [−1, 1]
    self.codec, self.fns = codec, constraints.CodecFns.from_module(codec.module)
    self.target = constraints.make_target(
        self.fns, codec.params, *(jnp.asarray(a[None]) for a in (decoded.y_hat, decoded.mu, decoded.r)))
    self.keys = sampler.header_key(1)[None]
    self.mesh = grid.grid_mesh(1, jax.devices()[:1])
    self.cfg = _unet_config(args, "float32")
    self.params = unet.random_params(self.cfg, seed=0)
    self.eps = {dtype: unet.make_eps_fn(unet.UNet(_unet_config(args, dtype)))
                for dtype in ("float32", "bfloat16")}

  def decode(self, dcic: sampler.DCICConfig, k_d, k_p, chunk: int = 1, dtype: str = "float32"):
    """(x̂ [G, H, W, 3], first-call s, median s, program GiB) of one grid call."""
    dec = grid.GridDecoder(self.eps[dtype], self.fns, sampler.decode_schedule(FULL, dcic), dcic,
                           chunk=chunk)
    k_d, k_p = np.asarray(k_d, np.float32), np.asarray(k_p, np.float32)
    call = lambda: dec(self.params, self.codec.params, self.target, self.keys, k_d, k_p, mesh=self.mesh)
    start = time.perf_counter()
    out = np.asarray(jax.block_until_ready(call()))
    first = time.perf_counter() - start
    times = []
    for _ in range(self.args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(call())
      times.append(time.perf_counter() - start)
    padded = -(-len(k_d) // chunk) * chunk
    mem = dec._compiled(self.mesh).lower(
        self.params, self.codec.params, self.target, self.keys,
        np.resize(k_d, padded), np.resize(k_p, padded)).compile().memory_analysis()
    gib = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**30
    return out[:, 0], first, float(np.median(times)), gib


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "mbt2018-mean-q3"))
  p.add_argument("--image", default=str(REPO / "data" / "images" / "kodim15_crop.png"))
  p.add_argument("--size", type=int, default=256, help="square crop decoded")
  p.add_argument("--steps", default="20,50,100", help="DCIC step counts N")
  p.add_argument("--idem-steps", type=int, default=1000, help="Idempotence decoder steps (0: skip)")
  p.add_argument("--grid-steps", type=int, default=20, help="N of the 5x5 grid and the dtype part")
  p.add_argument("--repeats", type=int, default=2, help="timed calls after the compiling one")
  p.add_argument("--skip", default="", help="comma-separated parts to skip: decoders, idempotence, grid, dtype")
  p.add_argument("--tiny", action="store_true", help="a small UNet, 64² and short decodes (CPU smoke run)")
  args = p.parse_args(argv)
  if args.tiny:
    args.size, args.steps, args.idem_steps, args.grid_steps, args.repeats = 64, "4", 8, 4, 1
  if args.size % 64:
    print(f"error: --size must be a multiple of 64 (the codec's padding), got {args.size}", file=sys.stderr)
    return 2
  skip = set(args.skip.split(","))
  study = Study(args)
  n_params = sum(x.size for x in jax.tree.leaves(study.params))
  print(f"device {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
        f"UNet {n_params / 1e6:.1f} M parameters; codec {study.codec.codec_id}; image {args.size}²; "
        f"repeats {args.repeats}", flush=True)
  one = ([1.0], [1.0])

  if "decoders" not in skip:
    print("\n| decoder | N | first call s | s per image | ms per step | program GiB |\n|---|---|---|---|---|---|")
    for n in (int(v) for v in args.steps.split(",")):
      for label, dcic in (("DCIC project", sampler.DCICConfig(num_steps=n)),
                          ("DCIC schedule, x0", sampler.DCICConfig(num_steps=n, mode="schedule", grad="x0")),
                          ("DCIC schedule, xt", sampler.DCICConfig(num_steps=n, mode="schedule", grad="xt"))):
        _, first, sec, gib = study.decode(dcic, *one)
        print(f"| {label} (1, 1) | {n} | {first:.2f} | {sec:.3f} | {1e3 * sec / n:.1f} | {gib:.2f} |", flush=True)
  if "idempotence" not in skip and args.idem_steps:
    n = args.idem_steps
    dcic = sampler.DCICConfig(num_steps=n, mode="dps", step_size=0.6 * args.size / 256)
    _, first, sec, gib = study.decode(dcic, [0.0], [1.0])
    print(f"| Idempotence (dps, ζ = {dcic.step_size:g}) | {n} | {first:.2f} | {sec:.3f} | "
          f"{1e3 * sec / n:.1f} | {gib:.2f} |", flush=True)
  if "grid" not in skip:
    k_d, k_p = (a.ravel() for a in np.meshgrid(np.linspace(0, 1, 5), np.linspace(0, 1, 5), indexing="ij"))
    dcic = sampler.DCICConfig(num_steps=args.grid_steps)
    _, first, sec, gib = study.decode(dcic, k_d, k_p, chunk=len(k_d))
    print(f"\n5x5 grid, project mode, N = {args.grid_steps}, 25 items vmapped: first call {first:.2f} s, "
          f"{sec:.3f} s per call = {len(k_d) / sec:.2f} images/s; program {gib:.2f} GiB", flush=True)
  if "dtype" not in skip:
    dcic = sampler.DCICConfig(num_steps=args.grid_steps)
    points = {"DCIC_RP (0, 1)": (0.0, 1.0), "DCIC_RDP (1, 1)": (1.0, 1.0)}
    out = {}
    for dtype in ("float32", "bfloat16"):
      out[dtype], first, sec, gib = study.decode(dcic, *zip(*points.values()), dtype=dtype)
      print(f"UNet {dtype}: project, N = {args.grid_steps}, {len(points)} points: {sec:.3f} s per call "
            f"(first call {first:.2f} s), program {gib:.2f} GiB", flush=True)
    psnr = lambda a, b: 10 * np.log10(4.0 / max(float(np.mean((a - b) ** 2)), 1e-20))
    for g, label in enumerate(points):
      f32, bf16 = out["float32"][g], out["bfloat16"][g]
      print(f"{label}: PSNR to the original {psnr(f32, study.original):.2f} dB (float32), "
            f"{psnr(bf16, study.original):.2f} dB (bfloat16); between the two decodes {psnr(f32, bf16):.2f} dB")
  stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
  if stats and "peak_bytes_in_use" in stats:
    print(f"device peak memory in use: {stats['peak_bytes_in_use'] / 2**30:.2f} GiB")
  return 0


if __name__ == "__main__":
  sys.exit(main())
