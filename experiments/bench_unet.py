"""Benchmark the diffusion prior: training throughput against diffusers, and DDIM-50 sampling.

Measures, in one run and on the same machine:
  1. train-step images/s of our UNet (L_simple loss + grad + AdamW, one jitted step) and of
     diffusers' `UNet2DModel` built from the same configuration (PyTorch, same loss and
     optimiser), and their ratio;
  2. DDIM sampling time per image (50 respaced steps, η = 0) at 64×64 with our UNet.

The defaults are small enough for a few minutes on a 2-core CPU:

  python experiments/bench_unet.py
  python experiments/bench_unet.py --torch-python ~/.torch-ref-venv/bin/python  # baseline from
                                                              # another interpreter with torch
  python experiments/bench_unet.py --base-channels 128 --channel-mult 1,2,2,2 --image-size 64 \
      --batch 32 --num-res-blocks 2 --attention-levels 2,3  # a realistic prior (GPU)

When neither this interpreter nor --torch-python can import torch and diffusers, the baseline is
reported as unavailable.

`--mode eps` times ε_θ(x, t) (forward) and ∂⟨ε_θ(x, t), v⟩/∂x (the gradient the `xt` and `dps`
decoders take, with the weights prepared once as those decoders do: `unet.prepare_for_input_grads`;
`ours/call` prepares them in every call) against diffusers on the same weights: a torch worker process builds
`UNet2DModel` from the architecture's config.json with random weights, hands its state dict over,
and ours is converted from it by `convert.convert_state_dict` (ε is compared once). The two sides
alternate for `--rounds` rounds (each the median of `--repeats` calls), printing each round's
ratio and their median, in wall time and in each process's CPU time (all its threads; under other
jobs' load the wall ratio moves, PyTorch's OpenMP suffering more, the CPU ratio much less), with
the load average at each round. Architectures (`--arch`): `celebahq` is google/ddpm-ema-celebahq-256's
(113.7 M parameters) at 1×64×64, `ddpm32` a DDPM-flag UNet with channels 32/32/64/64 at 4×128×128,
`shipped` the shipped prior's architecture (1.14 M) at the demo's 1×128×128.
Where the batch has several images (ddpm32), `ours/parts2` also times ours with the batch cut
into `--host-parts` concurrent calls (`dcic_jax/host_parts.py`, as the grid decoder runs its
items on one CPU device; XLA:CPU does not overlap the slices of one call as well).
`--ref REV` also times unet.py as of git revision REV (same weights) in the same rounds:

  python experiments/bench_unet.py --mode eps --torch-python ~/.torch-ref-venv/bin/python
  python experiments/bench_unet.py --mode eps --torch-python ~/.torch-ref-venv/bin/python --ref HEAD~1

`--mode convs` times single 3×3 convolutions (XLA:CPU, batch 1 and 2 at `--image-size` squared,
default here 128, input and output channels from {32, 64, 96, 128}) and prints each one's wall
time, threads busy (CPU time / wall time) and GFLOP per CPU-second: it shows which convolutions
XLA:CPU's library spreads over the cores and which it runs on one.

  python experiments/bench_unet.py --mode convs --image-size 128
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
import cpu_info  # noqa: E402  (experiments/)


def _diffusers_config(args) -> dict:
  """The diffusers UNet2DModel config.json equivalent to the flags (the source of truth for
  both networks: ours is built from it with `convert.unet_config_from_diffusers`)."""
  levels = len(args.channel_mult)
  attn = [l in args.attention_levels for l in range(levels)]
  return dict(
      _class_name="UNet2DModel", sample_size=args.image_size, in_channels=3, out_channels=3,
      block_out_channels=[args.base_channels * m for m in args.channel_mult],
      layers_per_block=args.num_res_blocks,
      down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
      up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
      attention_head_dim=args.head_channels, norm_num_groups=32,
      resnet_time_scale_shift="scale_shift" if args.scale_shift else "default",
      attn_norm_num_groups=32 if args.scale_shift else None)


def _timed(fn, steps: int, warmup: int) -> float:
  """Seconds per call of `fn` after `warmup` untimed calls (compilation included there)."""
  for _ in range(warmup):
    fn()
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return (time.perf_counter() - start) / steps


# ------------------------------------------------------------------------------------------------
# PyTorch / diffusers baseline.
# ------------------------------------------------------------------------------------------------

def torch_train_step_seconds(args) -> tuple[float, int, str]:
  """(seconds per diffusers train step, parameter count, device); ImportError without
  torch/diffusers. On a GPU it runs there, with TF32 allowed for convolutions and matmuls, as
  XLA's default precision does for float32 on the same GPU (PyTorch's own default allows it
  for convolutions only)."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import UNet2DModel  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  config = {k: v for k, v in _diffusers_config(args).items() if not k.startswith("_")}
  model = UNet2DModel(**config).to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
  alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0).to(device)
  x0 = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device) * 2 - 1

  def step():
    t = torch.randint(0, 1000, (args.batch,), device=device)
    eps = torch.randn_like(x0)
    a = alphas_cumprod[t][:, None, None, None]
    loss = torch.mean((model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t).sample - eps) ** 2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if device == "cuda":
      torch.cuda.synchronize()

  seconds = _timed(step, args.steps, args.warmup)
  return seconds, sum(p.numel() for p in model.parameters()), device


def _baseline(args) -> tuple[float | None, str]:
  """(seconds per step or None, where it ran + parameter count / why not)."""
  if args.torch_python:
    cmd = [args.torch_python, os.path.abspath(__file__), "--baseline-only"] + sys.argv[1:]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode or not lines:
      return None, f"{args.torch_python} failed: {out.stderr.strip().splitlines()[-1:]}"
    result = json.loads(lines[-1])
    return result["seconds"], (f"torch {result['torch']} via {args.torch_python} on "
                               f"{result['device']}, {result['n_params'] / 1e6:.2f} M parameters")
  try:
    import torch  # pylint: disable=g-import-not-at-top
    seconds, n_params, device = torch_train_step_seconds(args)
    return seconds, f"torch {torch.__version__} on {device}, {n_params / 1e6:.2f} M parameters"
  except ImportError as e:
    return None, f"baseline unavailable: {e} (pass --torch-python PATH of an interpreter " \
        "with torch and diffusers)"


# ------------------------------------------------------------------------------------------------
# Ours.
# ------------------------------------------------------------------------------------------------

def jax_benchmarks(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  # pylint: disable-next=g-import-not-at-top
  from dcic_jax.diffusion import convert, prior_config, samplers, schedules, train, unet

  cfg = convert.unet_config_from_diffusers(_diffusers_config(args))
  tc = prior_config.default_prior_config().train
  tc.update(learning_rate=1e-4, warmup_steps=1, weight_decay=0.0)
  tx = train.make_optimizer(tc)
  schedule = schedules.make_schedule("linear", 1000)
  step_fn = jax.jit(train.make_train_step(unet.UNet(cfg), tx, schedule, 0.9999),
                    donate_argnums=(0,))
  state = jax.jit(lambda k: train.create_train_state(cfg, tx, k))(jax.random.key(0))
  x0 = jnp.asarray(np.random.default_rng(0).uniform(
      -1, 1, (args.batch, args.image_size, args.image_size, 3)), jnp.float32)
  key = jax.random.key(1)
  holder = [state]

  def step():
    holder[0], metrics = step_fn(holder[0], x0, key)
    jax.block_until_ready(metrics)

  train_s = _timed(step, args.steps, args.warmup)

  params = unet.random_params(cfg, seed=0)
  sample = jax.jit(samplers.make_ddim_sampler(unet.make_eps_fn(unet.UNet(cfg)),
                                              schedules.respace(schedule, args.ddim_steps)),
                   static_argnums=2)
  shape = (args.sample_batch, args.sample_size, args.sample_size, 3)
  sample_s = _timed(lambda: jax.block_until_ready(sample(params, key, shape)), 1, 1)
  n_params = sum(a.size for a in jax.tree.leaves(params))
  return dict(train_s=train_s, sample_s_per_image=sample_s / args.sample_batch,
              n_params=n_params, device=str(jax.devices()[0]), cfg=cfg)


# ------------------------------------------------------------------------------------------------
# ε_θ forward and ∂ε/∂x against diffusers, same weights.
# ------------------------------------------------------------------------------------------------

T_EPS = 500  # the timestep of every ε call (the cost does not depend on it)


def _eps_archs() -> dict[str, tuple[dict, int, int]]:
  """name -> (diffusers config.json, batch, image size)."""
  # google/ddpm-ema-celebahq-256's config.json (as presets._DDPM_CELEBAHQ_256; this file also
  # runs under a torch-only interpreter, so it does not import the package).
  celebahq = dict(
      _class_name="UNet2DModel", sample_size=256, in_channels=3, out_channels=3,
      block_out_channels=[128, 128, 256, 256, 512, 512], layers_per_block=2,
      down_block_types=["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
      up_block_types=["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
      attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
      mid_block_scale_factor=1, norm_eps=1e-6, norm_num_groups=32,
      resnet_time_scale_shift="default", act_fn="silu", add_attention=True)
  # The same DDPM flags at 32/32/64/64 channels, attention at 16² for 128² inputs.
  ddpm32 = dict(celebahq, sample_size=128, block_out_channels=[32, 32, 64, 64],
                down_block_types=["DownBlock2D"] * 3 + ["AttnDownBlock2D"],
                up_block_types=["AttnUpBlock2D"] + ["UpBlock2D"] * 3)
  # The shipped prior (checkpoints/prior: scale-shift, 4 heads in the middle only) at the demo's
  # call: one 128² crop.
  shipped = dict(
      _class_name="UNet2DModel", sample_size=128, in_channels=3, out_channels=3,
      block_out_channels=[32, 64, 64], layers_per_block=1, down_block_types=["DownBlock2D"] * 3,
      up_block_types=["UpBlock2D"] * 3, attention_head_dim=16, downsample_padding=1,
      flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1, norm_eps=1e-5,
      norm_num_groups=16, attn_norm_num_groups=16, resnet_time_scale_shift="scale_shift",
      act_fn="silu", add_attention=True)
  return {"celebahq": (celebahq, 1, 64), "ddpm32": (ddpm32, 4, 128), "shipped": (shipped, 1, 128)}


def _eps_inputs(arch: str, seed: int):
  """(x, v) in NCHW, float32: the input and the cotangent of the gradient mode."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  _, batch, size = _eps_archs()[arch]
  rng = np.random.default_rng(seed)
  shape = (batch, 3, size, size)
  return (rng.standard_normal(shape).astype(np.float32),
          rng.standard_normal(shape).astype(np.float32))


def _median_seconds(fn, repeats: int) -> float:
  return _median_wall_cpu(fn, repeats)[0]


def _median_wall_cpu(fn, repeats: int) -> tuple[float, float]:
  """(median wall seconds, median CPU seconds of this process) of one call.

  On a shared machine the wall time carries the other jobs' load; the CPU time (all threads,
  spinning included) moves much less with it, so it is the steadier before/after measure.
  """
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return sorted(wall)[len(wall) // 2], sorted(cpu)[len(cpu) // 2]


def torch_eps_worker() -> None:
  """Serve the torch side of `--mode eps`: one JSON request per stdin line, one JSON reply.

  {"op": "build", "arch", "seed", "path"}: build diffusers' UNet2DModel with random weights
  (torch.manual_seed), write its state dict and ε(x, T_EPS) to `path` (.npz), warm up.
  {"op": "time", "arch", "what": "fwd" | "grad", "repeats"}: median seconds of one call.
  The forward runs under `torch.inference_mode`, the gradient is autograd's ∂⟨ε, v⟩/∂x with
  the parameters frozen (as ours: neither side computes parameter gradients).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import UNet2DModel  # pylint: disable=g-import-not-at-top
  calls = {}
  for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "build":
      config, batch, _ = _eps_archs()[req["arch"]]
      torch.manual_seed(req["seed"])
      model = UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
      model.requires_grad_(False)
      x, v = (torch.from_numpy(a) for a in _eps_inputs(req["arch"], req["seed"]))
      t = torch.full((batch,), T_EPS, dtype=torch.long)

      def fwd(model=model, x=x, t=t):
        with torch.inference_mode():
          return model(x, t).sample

      def grad(model=model, x=x, t=t, v=v):
        xg = x.clone().requires_grad_(True)
        return torch.autograd.grad((model(xg, t).sample * v).sum(), xg)[0]

      calls[req["arch"]] = {"fwd": fwd, "grad": grad}
      sd = {k: a.numpy() for k, a in model.state_dict().items()}
      np.savez(req["path"], eps=fwd().numpy(), **{"sd/" + k: a for k, a in sd.items()})
      grad()
      reply = {"n_params": sum(p.numel() for p in model.parameters()),
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    else:
      wall, cpu = _median_wall_cpu(calls[req["arch"]][req["what"]], req["repeats"])
      reply = {"seconds": wall, "cpu": cpu}
    print(json.dumps(reply), flush=True)


def _load_unet_module(rev: str):
  """dcic_jax/diffusion/unet.py as of git revision `rev`, as a module (for before/after)."""
  import types  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  source = subprocess.run(["git", "-C", repo, "show", f"{rev}:dcic_jax/diffusion/unet.py"],
                          capture_output=True, text=True, check=True).stdout
  module = types.ModuleType(f"unet_at_{rev}")
  exec(compile(source, f"unet.py@{rev}", "exec"), module.__dict__)  # pylint: disable=exec-used
  return module


def eps_benchmarks(args) -> None:
  """Forward and ∂ε/∂x, ours (and unet.py at --ref) against diffusers, alternating rounds."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  python = args.torch_python or sys.executable
  worker = subprocess.Popen([python, os.path.abspath(__file__), "--torch-eps-worker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

  def ask(**req):
    worker.stdin.write(json.dumps(req) + "\n")
    worker.stdin.flush()
    line = worker.stdout.readline()
    if not line:
      raise SystemExit(f"the torch worker ({python}) died: pass --torch-python PATH of an "
                       "interpreter with torch and diffusers")
    return json.loads(line)

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from dcic_jax import host_parts  # pylint: disable=g-import-not-at-top
  from dcic_jax.diffusion import convert, unet  # pylint: disable=g-import-not-at-top
  variants = {"ours": unet}
  if args.ref:
    variants[f"ours@{args.ref}"] = _load_unet_module(args.ref)
  print(f"JAX {jax.__version__} on {jax.devices()[0]} ({cpu_info.describe()}); rounds {args.rounds}, "
        f"median of {args.repeats} calls each")
  for arch in args.arch:
    config, batch, size = _eps_archs()[arch]
    with tempfile.TemporaryDirectory() as tmp:
      info = ask(op="build", arch=arch, seed=0, path=os.path.join(tmp, "sd.npz"))
      f = np.load(os.path.join(tmp, "sd.npz"))
      sd = {k[3:]: f[k] for k in f.files if k.startswith("sd/")}
      eps_torch = f["eps"].transpose(0, 2, 3, 1)
    cfg, params = convert.convert_state_dict(sd, diffusers_config=config)
    x_nchw, v_nchw = _eps_inputs(arch, 0)
    x, v = jnp.asarray(x_nchw.transpose(0, 2, 3, 1)), jnp.asarray(v_nchw.transpose(0, 2, 3, 1))
    t = jnp.full((batch,), T_EPS, jnp.int32)
    calls = {}
    for name, module in variants.items():
      fields = {f.name for f in dataclasses.fields(module.UNetConfig)}
      eps_fn = module.make_eps_fn(module.UNet(module.UNetConfig(
          **{k: val for k, val in dataclasses.asdict(cfg).items() if k in fields})))
      fwd = jax.jit(eps_fn)
      grad = jax.jit(jax.grad(lambda p, x, t, v, eps_fn=eps_fn: jnp.sum(eps_fn(p, x, t) * v),
                              argnums=1))
      # A decoder differentiates ε_θ many times over the same weights: it prepares them once.
      prepare = getattr(eps_fn, "prepare_for_input_grads", lambda p: p)
      grad_params = jax.block_until_ready(jax.jit(prepare)(params))
      err = float(jnp.max(jnp.abs(fwd(params, x, t) - eps_torch)) / np.max(np.abs(eps_torch)))
      grad(grad_params, x, t, v).block_until_ready()
      calls[name] = {"fwd": lambda fwd=fwd: fwd(params, x, t).block_until_ready(),
                     "grad": lambda grad=grad, gp=grad_params: grad(gp, x, t, v).block_until_ready()}
      if grad_params is not params:   # the same ∂ε/∂x with the kernels made in every call
        grad(params, x, t, v).block_until_ready()
        calls[f"{name}/call"] = {"grad": lambda grad=grad: grad(params, x, t, v).block_until_ready()}
      parts = host_parts.parts_for(args.host_parts, batch)
      if name == "ours" and parts > 1 and batch % parts == 0:
        # The batch as `parts` concurrent calls (dcic_jax/host_parts.py, as the grid decoder
        # runs its items on one CPU device); the same ε, item by item.
        fwd_p = host_parts.split_batch(eps_fn, parts, batch_argnums=(1, 2))
        grad_p = host_parts.split_batch(
            jax.grad(lambda p, x, t, v, eps_fn=eps_fn: jnp.sum(eps_fn(p, x, t) * v), argnums=1),
            parts, batch_argnums=(1, 2, 3))
        err_p = float(jnp.max(jnp.abs(fwd_p(params, x, t) - fwd(params, x, t))))
        grad_p(grad_params, x, t, v).block_until_ready()
        calls[f"{name}/parts{parts}"] = {
            "fwd": lambda f=fwd_p: f(params, x, t).block_until_ready(),
            "grad": lambda g=grad_p, gp=grad_params: g(gp, x, t, v).block_until_ready()}
        print(f"{arch}: {name}/parts{parts} (the batch as {parts} concurrent calls) vs one call: "
              f"max |Δε| = {err_p:.1e}")
      print(f"{arch}: {info['n_params'] / 1e6:.1f} M parameters, {batch}x{size}x{size}; {name} ε "
            f"vs diffusers: max |Δ| / max |ε| = {err:.1e}")
    print(f"  diffusers: torch {info['torch']}, {info['threads']} threads ({python})")
    for what in ("fwd", "grad"):
      seconds = {name: [] for name in ["diffusers", *(n for n, c in calls.items() if what in c)]}
      cpu = {name: [] for name in seconds}
      load = []
      for _ in range(args.rounds):
        load.append(os.getloadavg()[0])
        reply = ask(op="time", arch=arch, what=what, repeats=args.repeats)
        seconds["diffusers"].append(reply["seconds"])
        cpu["diffusers"].append(reply["cpu"])
        for name, call in calls.items():
          if what not in call:
            continue
          time.sleep(0.2)  # let the other side's spinning threads go idle
          wall_s, cpu_s = _median_wall_cpu(call[what], args.repeats)
          seconds[name].append(wall_s)
          cpu[name].append(cpu_s)
      label = "forward" if what == "fwd" else "∂ε/∂x"
      print(f"  {label}: 1-minute load at each round " + " ".join(f"{l:.1f}" for l in load))
      for kind, table in (("wall", seconds), ("cpu", cpu)):
        for name, sec in table.items():
          line = f"  {label:7s} {kind:4s} {name:14s} " + " ".join(f"{s:7.3f}" for s in sec) + " s"
          if name != "diffusers":
            ratios = [a / b for a, b in zip(sec, table["diffusers"])]
            line += ("; / diffusers: " + " ".join(f"{r:.2f}" for r in ratios)
                     + f", median {sorted(ratios)[len(ratios) // 2]:.2f}x")
          print(line, flush=True)
        for name, sec in table.items():
          if name.startswith("ours@"):
            ratios = [a / b for a, b in zip(table["ours"], sec)]
            print(f"  {label:7s} {kind:4s} ours / {name}: " + " ".join(f"{r:.2f}" for r in ratios)
                  + f", median {sorted(ratios)[len(ratios) // 2]:.2f}x", flush=True)
  worker.stdin.close()
  worker.wait()


def conv_thread_table(args) -> None:
  """Wall time, threads busy and GFLOP per CPU-second of lone 3×3 convolutions."""
  import itertools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  size = args.image_size
  print(f"JAX {jax.__version__} on {jax.devices()[0]} ({cpu_info.describe()}); 3x3 convolutions "
        f"at {size}x{size}, SAME padding, median of {args.repeats} calls")
  print("batch  in  out   wall ms  threads busy  GFLOP/CPU-s")
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  for batch, c_in, c_out in itertools.product((1, 2), (32, 64, 96, 128), (32, 64, 128)):
    x = jnp.ones((batch, size, size, c_in), jnp.float32)
    w = jnp.full((3, 3, c_in, c_out), 0.01, jnp.float32)
    conv(x, w).block_until_ready()
    wall, cpu = _median_wall_cpu(lambda: conv(x, w).block_until_ready(), args.repeats)
    flop = 2 * batch * size * size * 9 * c_in * c_out
    print(f"{batch:5d} {c_in:3d} {c_out:4d}  {wall * 1e3:8.2f}  {cpu / wall:12.2f}  {flop / cpu / 1e9:11.0f}",
          flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ints = lambda s: [int(v) for v in s.split(",") if v]
  p.add_argument("--image-size", type=int, default=32, help="training crop size")
  p.add_argument("--batch", type=int, default=8, help="training batch")
  p.add_argument("--base-channels", type=int, default=32)
  p.add_argument("--channel-mult", type=ints, default=[1, 2, 2])
  p.add_argument("--num-res-blocks", type=int, default=1)
  p.add_argument("--attention-levels", type=ints, default=[2])
  p.add_argument("--head-channels", type=int, default=32)
  p.add_argument("--scale-shift", type=int, default=1, help="1: ADM scale-shift; 0: additive")
  p.add_argument("--steps", type=int, default=5, help="timed train steps")
  p.add_argument("--warmup", type=int, default=2, help="untimed train steps (compilation)")
  p.add_argument("--ddim-steps", type=int, default=50)
  p.add_argument("--sample-size", type=int, default=64)
  p.add_argument("--sample-batch", type=int, default=2)
  p.add_argument("--torch-python", default="",
                 help="interpreter with torch + diffusers for the baseline (default: this one)")
  p.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--mode", choices=("train", "eps", "convs"), default="train",
                 help="train: train step + DDIM sampling; eps: forward and ∂ε/∂x vs diffusers; "
                 "convs: which lone convolutions XLA:CPU spreads over the cores")
  p.add_argument("--arch", type=lambda s: s.split(","), default=["celebahq", "ddpm32", "shipped"],
                 help="eps mode: architectures (celebahq, ddpm32, shipped)")
  p.add_argument("--rounds", type=int, default=3, help="eps mode: alternating rounds")
  p.add_argument("--repeats", type=int, default=3, help="eps mode: timed calls per round")
  p.add_argument("--ref", default="", help="eps mode: also time unet.py at this git revision")
  p.add_argument("--host-parts", type=int, default=2,
                 help="eps mode: also time ours with a batch of several images cut into this many "
                 "concurrent calls (dcic_jax/host_parts.py; 1: not)")
  p.add_argument("--torch-eps-worker", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.torch_eps_worker:
    torch_eps_worker()
    return
  if args.mode == "eps":
    eps_benchmarks(args)
    return
  if args.mode == "convs":
    conv_thread_table(args)
    return

  if args.baseline_only:  # child process of --torch-python
    import torch  # pylint: disable=g-import-not-at-top
    seconds, n_params, device = torch_train_step_seconds(args)
    print(json.dumps({"seconds": seconds, "n_params": n_params, "torch": torch.__version__,
                      "device": device}))
    return

  # The baseline runs first, before JAX starts its thread pool, so neither competes with the
  # other's (idle but present) threads.
  torch_s, where = _baseline(args)
  ours = jax_benchmarks(args)
  print(f"UNet: {ours['n_params'] / 1e6:.2f} M parameters, {args.image_size}x{args.image_size} "
        f"crops, batch {args.batch}, on {ours['device']} ({cpu_info.describe()})")
  ours_ips = args.batch / ours["train_s"]
  print(f"  ours (JAX/Flax)      train step {ours['train_s'] * 1e3:8.1f} ms  "
        f"{ours_ips:8.1f} images/s")
  if torch_s is None:
    print(f"  diffusers baseline: {where}")
  else:
    print(f"  diffusers UNet2DModel train step {torch_s * 1e3:8.1f} ms  "
          f"{args.batch / torch_s:8.1f} images/s  ({where})")
    print(f"  ratio ours/diffusers: {ours_ips / (args.batch / torch_s):.2f}x images/s")
  print(f"DDIM-{args.ddim_steps} sampling, {args.sample_size}x{args.sample_size}, batch "
        f"{args.sample_batch}: {ours['sample_s_per_image']:.2f} s per image")


if __name__ == "__main__":
  main()
