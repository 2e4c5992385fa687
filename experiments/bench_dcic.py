"""Benchmark the DCIC decoder: step cost per mode, the compute floor, one grid call vs many, memory.

All numbers come from one run on one machine (ratios, so a shared machine's noise mostly cancels):
  1. the compute floor N·(fwd + G·(fwd+bwd)): a UNet forward and a forward+backward (∂/∂x) timed
     alone at the decode's shape; the penalty `xt` decode's wall time divided by it;
  2. seconds per decode step of the `project` mode (the default) against the penalty modes
     (`schedule` with `xt` and with `x0` gradients), timed in alternating rounds with the
     per-round ratios and their median (target: project ≤ 1.3× the penalty step it replaces),
     and the PSNR to x̂_b at K_D = K_P = 1 (a random UNet only times; quality is
     `kd_kp_check.py`'s);
  3. a 3×3 (K_D, K_P) grid in one call vs nine one-point calls of the same compiled decoder
     (target ≤ 0.8), with how many times each was traced;
  4. peak memory of a full 768×512 Kodak-size decode (project mode, and the penalty form's `xt`
     mode with and without the UNet's block-level remat, `unet.remat_call`), from XLA's buffer
     assignment of the compiled program (`memory_analysis`; on a CPU within ~15% of what a run
     adds to the process's max RSS), attention chunked as the UNet config says (target ≤ 4 GB).

The codec is a shipped checkpoint and the UNet a random one of the given shape (the timings do
not depend on the weights). Defaults take a few minutes on a 2-core CPU:

  python experiments/bench_dcic.py
  python experiments/bench_dcic.py --size 256 --steps 50 --base-channels 128   # a GPU
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
from dcic_jax.diffusion import schedules, unet  # noqa: E402


def _seconds(fn, repeats: int) -> float:
  """Median wall seconds of fn() (already compiled), blocking on its result."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _unet(args, remat: bool):
  cfg = unet.UNetConfig(base_channels=args.base_channels, channel_mult=args.channel_mult,
                        num_res_blocks=args.num_res_blocks, attention_levels=args.attention_levels,
                        num_heads=4, norm_groups=min(32, args.base_channels), remat=remat)
  return cfg, unet.make_eps_fn(unet.UNet(cfg)), unet.random_params(cfg, seed=0)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "mbt2018-mean-q3"))
  p.add_argument("--image", default=str(REPO / "data" / "images" / "kodim23_crop.png"))
  p.add_argument("--size", type=int, default=128, help="square crop decoded for the timings")
  p.add_argument("--steps", type=int, default=10, help="reverse steps N")
  p.add_argument("--inner", type=int, default=1, help="inner steps G")
  p.add_argument("--base-channels", type=int, default=32)
  p.add_argument("--channel-mult", type=lambda s: tuple(int(v) for v in s.split(",")), default=(1, 2, 2))
  p.add_argument("--num-res-blocks", type=int, default=1)
  p.add_argument("--attention-levels", type=lambda s: tuple(int(v) for v in s.split(",") if v), default=(2,))
  p.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median)")
  p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the per-mode step timing")
  p.add_argument("--grid-mode", default="project", help="decoder of the grid comparison: project, xt or x0")
  p.add_argument("--skip", default="", help="comma-separated parts to skip: decode, grid, memory")
  args = p.parse_args(argv)

  codec = codec_lib.load(args.checkpoint)
  image = load_rgb(args.image)[:args.size, :args.size]
  decoded = codec.decompress(codec.compress(image, seed=1))
  fns = constraints.CodecFns.from_module(codec.module)
  target = constraints.make_target(fns, codec.params, jnp.asarray(decoded.y_hat[None]),
                                   jnp.asarray(decoded.mu[None]), jnp.asarray(decoded.r[None]))
  keys = sampler.header_key(1)[None]
  full = schedules.make_schedule("linear", 1000)
  sched = schedules.respace(full, args.steps)
  n, g = args.steps, args.inner
  ucfg, eps_fn, params = _unet(args, remat=False)
  shape = (1, args.size, args.size, 3)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; image {args.size}x{args.size}, "
        f"N={n}, G={g}; UNet {ucfg.base_channels}x{ucfg.channel_mult}, "
        f"{sum(x.size for x in jax.tree.leaves(params)) / 1e6:.2f} M params; codec {codec.codec_id}")

  # 1. compute floor, from the UNet alone.
  x = jax.random.normal(jax.random.key(0), shape)
  t = jnp.full((1,), 500, jnp.int32)
  v = jax.random.normal(jax.random.key(1), shape)
  fwd = jax.jit(lambda x: eps_fn(params, x, t))
  ready = eps_fn.prepare_for_input_grads(params)   # as the `xt` decoder differentiates ε_θ
  fwd_bwd = jax.jit(jax.grad(lambda x: jnp.sum(eps_fn(ready, x, t) * v)))
  fwd(x).block_until_ready(), fwd_bwd(x).block_until_ready()
  t_fwd, t_fb = _seconds(lambda: fwd(x), 5 * args.repeats), _seconds(lambda: fwd_bwd(x), 5 * args.repeats)
  floor = n * (t_fwd + g * t_fb)
  print(f"UNet forward {t_fwd * 1e3:.1f} ms, forward+backward {t_fb * 1e3:.1f} ms; "
        f"floor N(fwd + G(fwd+bwd)) = {floor:.2f} s")
  # The same forward+backward as the body of a 4-step lax.scan, rolled and unrolled: with the
  # weights unprepared, XLA:CPU rebuilt every input-gradient kernel in each step of the loop
  # (2.5-3.6x the straight-line time; docs/benchmarks.md).
  for unroll in (1, 4):
    def loop(x, unroll=unroll):
      body = lambda x, _: (x - 1e-3 * jax.grad(lambda x: jnp.sum(eps_fn(ready, x, t) * v))(x), None)
      return jax.lax.scan(body, x, None, length=4, unroll=unroll)[0]
    looped = jax.jit(loop)
    looped(x).block_until_ready()
    t_loop = _seconds(lambda: looped(x), args.repeats) / 4
    print(f"  forward+backward inside lax.scan (unroll={unroll}): {t_loop * 1e3:.1f} ms per step")
    if unroll == 1:
      loop_floor = n * (t_fwd + g * t_loop)

  one_device = grid.grid_mesh(1, jax.devices()[:1])
  skip = set(args.skip.split(","))
  # 2. seconds per step of each decoder, in alternating rounds.
  variants = {"project": sampler.DCICConfig(num_steps=n),
              "schedule-xt": sampler.DCICConfig(num_steps=n, mode="schedule", inner_steps=g, grad="xt"),
              "schedule-x0": sampler.DCICConfig(num_steps=n, mode="schedule", inner_steps=g, grad="x0")}
  calls = {}
  for name, cfg in ({} if "decode" in skip else variants).items():
    dec = grid.GridDecoder(eps_fn, fns, sched, cfg)
    calls[name] = lambda dec=dec: dec(params, codec.params, target, keys, [1.0], [1.0], mesh=one_device)
    start = time.perf_counter()
    out = np.asarray(calls[name]())
    psnr = 10 * np.log10(4.0 / np.mean((out[0, 0] - np.asarray(target.x_b[0])) ** 2))
    print(f"{name}: first call with compile {time.perf_counter() - start:.1f} s; PSNR to x_b at "
          f"K_D = K_P = 1: {psnr:.2f} dB")
  if calls:
    rounds = {name: [] for name in calls}
    for _ in range(args.rounds):
      for name, call in calls.items():
        rounds[name].append(_seconds(call, args.repeats) / n)
    for name, sec in rounds.items():
      print(f"decode {name}: {np.median(sec) * 1e3:.1f} ms per step (rounds: "
            + ", ".join(f"{v * 1e3:.1f}" for v in sec) + ")")
    xt = np.median(rounds["schedule-xt"]) * n
    print(f"schedule-xt decode: {xt / floor:.3f}x the floor, {xt / loop_floor:.3f}x the floor with "
          "the in-scan forward+backward")
    for base in ("schedule-xt", "schedule-x0"):
      ratios = np.array(rounds["project"]) / np.array(rounds[base])
      print(f"project / {base} per step: " + ", ".join(f"{r:.3f}" for r in ratios)
            + f"; median {np.median(ratios):.3f}")

  # 3. a 3x3 grid in one call vs nine calls.
  cfg = sampler.DCICConfig(num_steps=n) if args.grid_mode == "project" else \
      sampler.DCICConfig(num_steps=n, mode="schedule", inner_steps=g, grad=args.grid_mode)
  k_d, k_p = np.meshgrid([0.0, 0.5, 1.0], [0.0, 0.5, 1.0], indexing="ij")
  for chunk in () if "grid" in skip else (1, 9):
    dec = grid.GridDecoder(eps_fn, fns, sched, cfg, chunk=chunk)
    grid_call = lambda: dec(params, codec.params, target, keys, k_d.ravel(), k_p.ravel(), mesh=one_device)
    grid_call()
    t_grid = _seconds(grid_call, args.repeats)
    single = grid.GridDecoder(eps_fn, fns, sched, cfg)
    points = list(zip(k_d.ravel(), k_p.ravel()))
    nine = lambda: [single(params, codec.params, target, keys, [a], [b], mesh=one_device) for a, b in points]
    nine()
    t_nine = _seconds(nine, args.repeats)
    print(f"3x3 grid, chunk {chunk}: one call {t_grid:.2f} s vs nine calls {t_nine:.2f} s -> "
          f"{t_grid / t_nine:.3f}x (grad {args.grid_mode}; traces: grid {dec.traces}, single {single.traces})")

  # 4. peak memory of a 768x512 decode (compile only).
  if "memory" not in skip:
    big = constraints.Target(*(jnp.zeros((1,) + s, jnp.float32) for s in
                               [(512, 768, 3), (512, 768, 3)] + [(32, 48, codec.module.cfg.M)] * 3))
    cases = [("project", False, sampler.DCICConfig(num_steps=n))]
    cases += [("schedule xt", remat, sampler.DCICConfig(num_steps=n, mode="schedule", inner_steps=g))
              for remat in (False, True)]
    for name, remat, cfg in cases:
      _, eps_r, params_r = _unet(args, remat)
      dec = grid.GridDecoder(eps_r, fns, sched, cfg)
      compiled = dec._compiled(one_device).lower(params_r, codec.params, big, keys,
                                                 np.ones(1, np.float32), np.ones(1, np.float32)).compile()
      mem = compiled.memory_analysis()
      total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
      print(f"768x512 {name} decode, UNet remat={remat}: peak {total / 2**30:.2f} GiB "
            f"(temporaries {mem.temp_size_in_bytes / 2**30:.2f} GiB)")


if __name__ == "__main__":
  main()
