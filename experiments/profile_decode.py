"""Where the demo's decode stage spends its time: one rate's DCIC grid call, taken apart.

The demo (configs/demo.py) decodes, per rate, one grid call: 3 images × 9 (K_D, K_P) points,
128² crops, the shipped prior, 10 late-start steps of the project mode. This script makes that
call for one rate (mbt2018-mean-q3) and reports, in one run:
  1. the first call (trace + compile + run; the pipeline builds a new `GridDecoder` per rate,
     so it pays this once per rate) and the median of later calls (run only), per `--chunks`
     (items vmapped together; the demo's `config.dcic.chunk` is 1);
  2. the UNet's share: the same decoder with ε_θ replaced by a network-free ε (zeros; the
     projections' CG iterations are fixed, so their cost is unchanged), and the UNet forward
     alone at the decode's batch times the number of calls the decode makes;
  3. with `--codec-options`, the full call compiled with the codec's XLA:CPU options
     (`codec.XLA_CONV_OPTIONS`: XLA's own convolutions, YNNPACK's matrix products), the
     GridDecoder's own jit using the defaults;
  4. with `--trace`, XLA:CPU's per-op CPU time of one call split by where the op comes from
     (the UNet's modules by name, the rest: codec g_a and its vjp, CG, sampler arithmetic).

  python experiments/profile_decode.py
  python experiments/profile_decode.py --chunks 1,9,27 --trace
"""
import argparse
import collections
import glob
import pathlib
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from configs import demo  # noqa: E402
from dcic_jax import pipeline  # noqa: E402
from dcic_jax.codecs import codec as codec_lib  # noqa: E402
from dcic_jax.data.images import center_crop, load_rgb  # noqa: E402
from dcic_jax.dcic import constraints, decode, grid, sampler  # noqa: E402
from dcic_jax.diffusion import prior as prior_lib  # noqa: E402

# HLO metadata of ops traced inside the UNet's Flax modules names one of these.
UNET_MODULES = re.compile(r"/(conv_in|time_embed_\d|down_\d+_\w+|mid_\w+|up_\d+_\w+|norm_out|"
                          r"conv_out)/")


def _median(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _op_split(compiled, call) -> dict[str, float]:
  """CPU ms of one call per origin ('unet' / 'other'), from a jax.profiler trace of it."""
  origin = {}
  for line in compiled.as_text().splitlines():
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*op_name=\"([^\"]*)\"", line)
    if m:
      origin.setdefault(m.group(1), "unet" if UNET_MODULES.search(m.group(2)) else "other")
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp):
      jax.block_until_ready(call())
    data = jax.profiler.ProfileData.from_file(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)[0])
  ms = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if "Eigen" not in line.name and "PjRtCpuClient" not in line.name:
        continue
      for ev in line.events:
        if ev.name.startswith(("ThunkExecutor", "end:", "Slinky")):
          continue
        # Fused ops inherit the origin of their root; unknown names (runtime work) are "other".
        ms[origin.get(ev.name, "other")] += ev.duration_ns / 1e6
  return dict(ms)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "mbt2018-mean-q3"))
  p.add_argument("--chunks", default="1", help="comma-separated chunk sizes to time")
  p.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
  p.add_argument("--codec-options", action="store_true",
                 help="also time the call compiled with codec.XLA_CONV_OPTIONS")
  p.add_argument("--trace", action="store_true", help="per-op CPU time by origin (chunk 1st)")
  args = p.parse_args(argv)

  config = demo.get_config()
  cfg = pipeline.dcic_config(config)
  points = pipeline.grid_points(config)
  k_d = np.array([q.k_d for q in points], np.float32)
  k_p = np.array([q.k_p for q in points], np.float32)
  codec = codec_lib.load(args.checkpoint)
  paths = sorted((REPO / "data" / "images").glob("*.png"))
  decoded = [codec.decompress(codec.compress(center_crop(load_rgb(f), config.eval.crop), seed=i))
             for i, f in enumerate(paths)]
  prior = prior_lib.load_prior(None)
  target, keys = decode.targets_and_keys(codec, decoded)
  items, steps = len(points) * len(decoded), cfg.start_step or cfg.num_steps
  h, w = decoded[0].x_hat.shape[:2]
  print(f"device {jax.devices()[0].device_kind}; {len(points)} points x {len(decoded)} images "
        f"of {h}x{w}, {steps} steps, mode {cfg.mode}, codec {codec.codec_id}")
  mesh = grid.grid_mesh(len(decoded))
  zero_eps = lambda params, x_t, t: jnp.zeros_like(x_t)

  for chunk in [int(c) for c in args.chunks.split(",")]:
    rows = {}
    for name, eps_fn in (("full", prior.eps_fn), ("no UNet", zero_eps)):
      dec = grid.GridDecoder(eps_fn, constraints.CodecFns.from_module(codec.module),
                             sampler.decode_schedule(prior.schedule, cfg), cfg, chunk)
      call = lambda dec=dec: dec(prior.params, codec.params, target, keys, k_d, k_p, mesh=mesh)
      start = time.perf_counter()
      jax.block_until_ready(call())
      first = time.perf_counter() - start
      rows[name] = (first, _median(call, args.repeats), call, dec)
    fwd = jax.jit(prior.eps_fn)
    x = jax.random.normal(jax.random.key(0), (chunk, h, w, 3))
    t = jnp.full((chunk,), 500, jnp.int32)
    fwd(prior.params, x, t).block_until_ready()
    unet_alone = _median(lambda: fwd(prior.params, x, t), 5) * steps * items / chunk
    full, bare = rows["full"], rows["no UNet"]
    print(f"chunk {chunk}: first call {full[0]:.1f} s (compile ≈ {full[0] - full[1]:.1f} s), "
          f"then {full[1]:.2f} s = {full[1] / steps * 1e3:.0f} ms per step for {items} items")
    print(f"  without the UNet {bare[1]:.2f} s (first call {bare[0]:.1f} s); UNet share "
          f"{full[1] - bare[1]:.2f} s; UNet forward alone at batch {chunk} x {steps * items // chunk} "
          f"calls: {unet_alone:.2f} s")
    if args.codec_options:
      lowered = full[3]._compiled(mesh).lower(  # pylint: disable=protected-access
          prior.params, codec.params, target, keys, k_d, k_p)
      runs = {}
      for name, options in (("default", None), ("codec options", codec_lib.XLA_CONV_OPTIONS)):
        compiled = lowered.compile(compiler_options=options)
        runs[name] = lambda c=compiled: c(prior.params, codec.params, target, keys, k_d, k_p)
        jax.block_until_ready(runs[name]())
      seconds = {name: [] for name in runs}
      for _ in range(args.repeats):  # alternating
        for name, run in runs.items():
          seconds[name].append(_median(run, 1))
      ratios = [a / b for a, b in zip(seconds["codec options"], seconds["default"])]
      print("  compiled with the defaults / codec options: " + ", ".join(
          f"{a:.2f} / {b:.2f} s" for a, b in zip(seconds["default"], seconds["codec options"]))
            + f"; median ratio {np.median(ratios):.3f}")
    if args.trace:
      dec = full[3]
      compiled = dec._compiled(mesh).lower(  # pylint: disable=protected-access
          prior.params, codec.params, target, keys, k_d, k_p).compile()
      split = _op_split(compiled, full[2])
      total = sum(split.values())
      print("  per-op CPU time of one call: " + ", ".join(
          f"{k} {v / 1e3:.2f} s ({v / total:.0%})" for k, v in sorted(split.items())))


if __name__ == "__main__":
  main()
