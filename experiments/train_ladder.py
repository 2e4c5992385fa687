"""Train every rate point of one codec in one process (one compile), then export each.

The shipped CNN codecs (checkpoints/<id>-q1..q4) come from this script on a GPU:

  python experiments/half_photos.py ../shared/data/photos runs/photos_half
  python experiments/train_ladder.py --codec bmshj2018 --qualities 1,2,3,4 --N 64 --M 64 \\
      --data-dir runs/photos_half --minutes 2.5 --out checkpoints

λ and the learning rate are traced arguments of the train step (dcic_jax/train.py), so the four
rate points share one compiled step. With --minutes the step count is chosen on this machine:
the step is compiled, timed, and every rate point gets the same number of steps, as many as fit.
Each rate point trains from scratch with the same seed, so all see the same batches.

  --params-npz FILE   also writes every rate point's parameters, in the exports' storage form
                      (`checkpointing.storage_form`), to one .npz, e.g. to carry them off a GPU;
  --from-npz FILE     exports from such a file, no training (the coding tables are built here).
"""
import argparse
import io
import json
import pathlib
import sys
import time

import flax
import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from configs import train_codec as train_codec_config  # noqa: E402
from dcic_jax import checkpointing, sharding, train  # noqa: E402
from dcic_jax.codecs import codec as codec_lib  # noqa: E402
from dcic_jax.codecs.registry import codec_kwargs, make_codec  # noqa: E402
from dcic_jax.data.images import load_rgb  # noqa: E402
from dcic_jax.io import write_bytes  # noqa: E402
from dcic_jax.metrics.image import psnr  # noqa: E402

EVAL_CROPS = sorted((REPO / "data" / "images").glob("kodim*_crop.png"))  # a quick look only


def make_config(args, quality: int, steps: int):
  config = train_codec_config.get_config(f"{args.codec},{quality}")
  config.codec.N, config.codec.M, config.codec.up_kernel = args.N, args.M, args.up_kernel
  tc = config.train_codec
  tc.steps, tc.batch_size, tc.crop_size = steps, args.batch, args.crop
  tc.lr, tc.warmup_steps, tc.data_dir = args.lr, args.warmup, args.data_dir
  tc.log_every, tc.ckpt_every = 100, max(steps // 4, 100)
  config.export_dir = str(pathlib.Path(args.out) / f"{args.codec}-q{quality}")
  return config


def seconds_per_step(config) -> float:
  """Wall seconds of one train step here: the compiled step (the one `train_codec` will reuse)
  on a random batch, and the host's crop of the next batch, whichever is slower."""
  tc = config.train_codec
  module = make_codec(config.codec.id, **codec_kwargs(config))
  mesh = sharding.data_mesh()
  state = train.initial_state(module, tc, jax.random.PRNGKey(0), mesh)
  step = train._jitted_train_step(module, tc.grad_clip, tc.aux_lr, tc.aux_weight, mesh, train.rd_loss)
  batches = train.host_crops(tc.data_dir, tc.crop_size, tc.batch_size, sharding.host_rows(tc.batch_size, mesh), seed=1)
  batch = sharding.global_batch(next(batches), mesh)
  args = (np.float32(tc.lmbda), np.float32(tc.lr))
  start = time.perf_counter()
  state, m = step(state, batch, jax.random.PRNGKey(1), *args)
  jax.block_until_ready(m)
  print(f"compiled the train step in {time.perf_counter() - start:.1f} s", flush=True)
  for i in range(3):  # the first calls after a compile can still be slow (autotuning, thread pools)
    state, m = step(state, batch, jax.random.PRNGKey(i), *args)
  jax.block_until_ready(m)
  n = 20
  start = time.perf_counter()
  for i in range(n):
    state, m = step(state, batch, jax.random.PRNGKey(i), *args)
  jax.block_until_ready(m)
  t_dev = (time.perf_counter() - start) / n
  for _ in range(40):  # decode every photo once first (the loader caches them)
    next(batches)
  start = time.perf_counter()
  for _ in range(n):
    sharding.global_batch(next(batches), mesh)
  t_host = (time.perf_counter() - start) / n
  print(f"train step {t_dev * 1e3:.1f} ms on {jax.devices()[0].device_kind}, host batch {t_host * 1e3:.1f} ms",
        flush=True)
  return max(t_dev, t_host)


def quick_eval(codec) -> str:
  """File bpp and PSNR on the repository's three Kodak crops (a first look; the real numbers come
  from experiments/kodak_rd.py on all 24 images)."""
  bpp, db = [], []
  for path in EVAL_CROPS:
    image = load_rgb(path)
    data = codec.compress(image)
    bpp.append(8 * len(data) / image[..., 0].size)
    db.append(float(psnr(image[None], codec.decompress(data).image[None])[0]))
  return f"Kodak crops: {np.mean(bpp):.3f} bpp, {np.mean(db):.2f} dB"


def flat_params(params) -> dict:
  """The parameters in the exports' storage form (int8 h_a/h_s kernels, float16 others), flat."""
  stored = checkpointing.storage_form(jax.tree.map(np.asarray, params))
  return {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(stored).items()}


def npz_params(data, quality: int) -> dict:
  """One rate point's parameter tree from a --params-npz file, as stored (float16, or int8 codes +
  scales: `checkpointing.from_storage` gives the float32 codec)."""
  prefix = f"q{quality}/"
  return flax.traverse_util.unflatten_dict(
      {tuple(k[len(prefix):].split("/")): data[k] for k in data.files if k.startswith(prefix)})


def save_npz(path, arrays: dict) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_bytes(path, buf.getvalue())


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--codec", required=True, help="registry id, e.g. bmshj2018 or mbt2018-mean")
  p.add_argument("--qualities", default="1,2,3,4", help="rate points (λ of configs/train_codec.py)")
  p.add_argument("--N", type=int, default=64)
  p.add_argument("--M", type=int, default=64)
  p.add_argument("--up-kernel", type=int, default=3, help="sub-pixel kernel: 3 (CompressAI's 5x5 "
                 "transposed conv) or 2 (4x4, 16/36 of the weights: N=M=64 fits 8 exports in ~16 MB)")
  p.add_argument("--data-dir", default="../shared/data/photos")
  p.add_argument("--crop", type=int, default=256)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--lr", type=float, default=5e-4)
  p.add_argument("--warmup", type=int, default=200)
  p.add_argument("--steps", type=int, default=0, help="steps per rate point (0: from --minutes)")
  p.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget of the whole ladder")
  p.add_argument("--overhead", type=float, default=8.0, help="seconds per rate point reserved for "
                 "set-up and export when --minutes picks the step count")
  p.add_argument("--workdir", default="runs/ladder", help="training workdirs (resume) go under it")
  p.add_argument("--out", default="checkpoints", help="exports go to OUT/<codec>-q<quality>")
  p.add_argument("--no-export", action="store_true", help="train only (e.g. with --params-npz)")
  p.add_argument("--params-npz", default="", help="also write all rate points' parameters here")
  p.add_argument("--from-npz", default="", help="export from this .npz instead of training")
  args = p.parse_args(argv)
  start = time.perf_counter()
  qualities = [int(q) for q in args.qualities.split(",")]

  if args.from_npz:
    data = np.load(args.from_npz)
    meta = json.loads(str(data["meta"]))
    trained = {**vars(args), **meta["args"]}  # the training flags; --out (and --data-dir) from here
    if args.data_dir != p.get_default("data_dir"):  # where the photos were, if not meta's path
      trained["data_dir"] = args.data_dir
    for q in qualities:
      params = npz_params(data, q)
      config = make_config(argparse.Namespace(**trained), q, meta["steps"])
      codec = train.export_trained(config, params, config.export_dir)
      print(f"exported {config.export_dir} ({meta['steps']} steps); {quick_eval(codec)}", flush=True)
    return

  steps = args.steps
  if not steps:
    if not args.minutes:
      p.error("give --steps or --minutes")
    t_step = seconds_per_step(make_config(args, qualities[0], 1000))
    left = args.minutes * 60 - (time.perf_counter() - start) - args.overhead * len(qualities)
    # 1.25: the loop's own per-step host work (key, bookkeeping) is not in t_step.
    steps = int(left / (len(qualities) * t_step * 1.25)) // 100 * 100
    if steps < 100:
      raise SystemExit(f"--minutes {args.minutes}: only {steps} steps per rate point would fit")
    print(f"{steps} steps per rate point fit in {args.minutes} min", flush=True)

  arrays = {}
  for q in qualities:
    config = make_config(args, q, steps)
    t0 = time.perf_counter()
    _, params = train.train_codec(config, str(pathlib.Path(args.workdir) / f"{args.codec}-q{q}"))
    line = f"{args.codec} q{q} (λ={config.train_codec.lmbda}): {steps} steps in {time.perf_counter() - t0:.0f} s"
    if not args.no_export:
      codec = train.export_trained(config, params, config.export_dir)
      line += f"; exported {config.export_dir}; {quick_eval(codec)}"
    print(line, flush=True)
    arrays.update({f"q{q}/{k}": v for k, v in flat_params(params).items()})
    if args.params_npz:  # after every rate point: a cut-off run keeps what it finished
      keep = ("codec", "N", "M", "up_kernel", "data_dir", "crop", "batch", "lr", "warmup")
      meta = dict(steps=steps, args={k: getattr(args, k) for k in keep}, qualities=qualities[:qualities.index(q) + 1])
      save_npz(args.params_npz, {**arrays, "meta": np.asarray(json.dumps(meta))})
  print(f"ladder done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
  main()
