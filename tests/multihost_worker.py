"""One process of the multi-host test (tests/test_multihost.py), or the single-process reference.

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

initialises `jax.distributed` on 127.0.0.1:PORT with gloo CPU collectives (XLA_FLAGS gives each
process its CPU devices), then `run(OUT_DIR)`: a few prior-training steps, a few codec-training
steps with a kill and resume, a grid decode whose outputs go through the sweep API, and the main
job (`pipeline.run`) on tiny exports, run twice: whole, then after one decoded file is lost. The
test calls `run` in its own 4-device process for the reference, so both take the same code path.
Process 0 writes `OUT_DIR/params.npz`; each process writes `OUT_DIR/written-<process>.json` (the
outputs it wrote).
"""
import itertools
import json
import os
import pathlib
import shutil
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

# The grid of the decode: K = 0, distortion only, idempotence only.
K_D = (0.0, 1.0, 0.0)
K_P = (0.0, 0.0, 1.0)
NUM_IMAGES = 2
PRIOR_STEPS = (2, 3)       # train to 2 (checkpoint), then resume to 3
CODEC_STEPS = 3


def _prior_config(num_steps: int):
  import ml_collections
  from dcic_jax.diffusion import prior_config
  prior = prior_config.default_prior_config()
  prior.unet = dict(base_channels=8, channel_mult=(1,), num_res_blocks=0, attention_levels=(),
                    mid_attention=False, norm_groups=4, dropout=0.1, remat=False)
  prior.train.update(batch_size=8, num_steps=num_steps, warmup_steps=2, log_every=1,
                     checkpoint_every=2, progress_bar=False, seed=7, ema_decay=0.9)
  return ml_collections.ConfigDict({"prior": prior})


def _prior_batches(mesh, batch_size: int, start: int):
  """This host's rows of global batch s = a pure function of s (the same for any host count)."""
  import numpy as np
  from dcic_jax import sharding
  rows = sharding.host_rows(batch_size, mesh)
  for s in itertools.count(start):
    full = np.random.default_rng([3, s]).integers(0, 256, (batch_size, 8, 8, 3), dtype=np.uint8)
    yield full[rows]


def train_prior_steps(workdir: pathlib.Path):
  from dcic_jax import sharding
  from dcic_jax.diffusion import train
  mesh = sharding.data_mesh()
  state = None
  for i, steps in enumerate(PRIOR_STEPS):  # the second call restores the checkpoint on every host
    start = 0 if i == 0 else PRIOR_STEPS[i - 1]
    state = train.train_prior(_prior_config(steps), str(workdir), _prior_batches(mesh, 8, start))
  return state


def train_codec_steps(workdir: pathlib.Path):
  import jax
  from configs import base
  from dcic_jax import sharding
  from dcic_jax.train import train_codec
  c = base.get_config()
  c.codec.id, c.codec.N, c.codec.M = "bmshj2018", 8, 12
  c.seed = 5
  tc = c.train_codec
  tc.steps, tc.batch_size, tc.crop_size = CODEC_STEPS, 4, 64
  tc.ckpt_every, tc.log_every, tc.warmup_steps = 2, 1, 1
  tc.data_dir = str(REPO / "data" / "photos")
  _, first = train_codec(c, str(workdir))
  # Kill after the step-2 checkpoint: drop the last one (once, on process 0) and run again.
  sharding.sync("codec-trained")
  if jax.process_index() == 0:
    shutil.rmtree(workdir / "checkpoints" / str(CODEC_STEPS))
  sharding.sync("codec-killed")
  _, params = train_codec(c, str(workdir))
  return first, params


def grid_decode(out_root: pathlib.Path):
  """Decode K_D × K_P × 2 images on the global mesh; each host writes the outputs it owns."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from dcic_jax import io, sweep
  from dcic_jax.codecs.registry import make_codec
  from dcic_jax.dcic import constraints, grid, sampler
  from dcic_jax.data.images import load_rgb
  from dcic_jax.diffusion import prior as prior_lib

  module = make_codec("mbt2018-mean", N=16, M=24)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3), np.float32))["params"]
  fns = constraints.CodecFns.from_module(module)
  photo = load_rgb(REPO / "data" / "images" / "kodim23_crop.png")
  x = np.stack([photo[:64, 64 * k:64 * k + 64] for k in range(NUM_IMAGES)]).astype(np.float32) / 255
  y_hat = jnp.round(fns.g_a(params, jnp.asarray(x)))
  target = constraints.make_target(fns, params, y_hat, jnp.zeros_like(y_hat))
  keys = jnp.stack([sampler.header_key(11 + k) for k in range(NUM_IMAGES)])
  prior = prior_lib.load_prior("analytic:0.5")
  cfg = sampler.DCICConfig(num_steps=4, w_p=0.05)
  decoder = grid.GridDecoder(prior.eps_fn, fns, sampler.decode_schedule(prior.schedule, cfg), cfg)
  mesh = grid.grid_mesh(NUM_IMAGES)
  out = decoder(prior.params, params, target, keys, K_D, K_P, mesh=mesh)

  stems = [f"img{k}" for k in range(NUM_IMAGES)]
  units = sweep.grid_units("tiny", stems, K_D, K_P,
                           lambda r, im, g, kd, kp: f"{r}/{im}/kd{kd:g}_kp{kp:g}.npy")
  todo = sweep.pending_images(units, out_root)
  written = sweep.write_owned(out, units, out_root, save=io.save_npy)
  return dict(todo=todo, written=[u.path for u in written], owners=sweep.owners(out).tolist(),
              mesh=dict(mesh.shape))


STUDY_LOST = "decoded/bmshj2018-q3/kd1_kp1/kodim15_crop.png"  # lost before the second run


def pipeline_study(root: pathlib.Path) -> dict:
  """The main job on 2 tiny exports × 2 images × a 2×2 (K_D, K_P) grid, on every host.

  Returns the images and .dcic files this host wrote (through `io.atomic_write`; the stage and
  setting records and the measurements are process 0's) in the first run and
  in a second run after one decoded file and the stage records were lost (a host killed
  mid-sweep): that run must redo exactly the lost file.
  """
  import jax
  from configs import base
  from dcic_jax import io, pipeline, sharding
  from tiny_exports import export_random_codec
  exports, wd = root / "exports", root / "wd"
  if jax.process_index() == 0:
    for q in (1, 3):
      export_random_codec(exports / f"bmshj2018-q{q}", seed=q)
  sharding.sync("study-exports")
  config = base.get_config()
  config.train_codec.steps = 0
  config.eval.update(images_dir=str(REPO / "data" / "images"), max_images=2, crop=64,
                     checkpoints=f"{exports / 'bmshj2018-q1'},{exports / 'bmshj2018-q3'}")
  config.dcic.update(prior="analytic:0.5", kd="0,1", kp="0,1", num_steps=3, grad="x0")
  config.report.crop = 32

  written: list[str] = []
  real_write = io.atomic_write

  def recording_write(path, write, **kwargs):
    path, root = pathlib.Path(path).absolute(), wd.absolute()
    if path.is_relative_to(root) and path.suffix in (".png", ".dcic") and path.relative_to(
        root).parts[0] in ("originals", "files", "base", "decoded"):
      written.append(str(path.relative_to(root)))
    return real_write(path, write, **kwargs)

  io.atomic_write = recording_write
  try:
    pipeline.run(config, str(wd))
    first = sorted(written)
    written.clear()
    sharding.sync("study-first-run")
    if jax.process_index() == 0:
      (wd / STUDY_LOST).unlink()
      (wd / "stages.json").unlink()
    sharding.sync("study-lost")
    pipeline.run(config, str(wd))
  finally:
    io.atomic_write = real_write
  return dict(first=first, second=sorted(written))


def run(out_dir) -> None:
  import jax
  import numpy as np
  out_dir = pathlib.Path(out_dir)
  me = jax.process_index()
  seconds = {}
  clock = time.perf_counter()

  def lap(name):
    nonlocal clock
    seconds[name] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()

  prior_state = train_prior_steps(out_dir / "prior_run")
  lap("prior")
  codec_first, codec_params = train_codec_steps(out_dir / "codec_run")
  lap("codec")
  info = grid_decode(out_dir / "sweep")
  lap("decode")
  info["study"] = pipeline_study(out_dir / "study")
  lap("pipeline")
  info["seconds"] = seconds
  info.update(process=me, processes=jax.process_count(), devices=jax.device_count(),
              local_devices=jax.local_device_count())
  flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v)
                       for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  arrays = {**{"prior" + k: v for k, v in flat(prior_state.params).items()},
            **{"codec" + k: v for k, v in flat(codec_params).items()},
            **{"codec_first" + k: v for k, v in flat(codec_first).items()}}
  if me == 0:  # replicated: every host holds the same values; one writes them
    np.savez(out_dir / "params.npz", **arrays)
  (out_dir / f"written-{me}.json").write_text(json.dumps(info))


def _watchdog(deadline_s: float) -> None:
  """Exit if the test that started us is gone or the deadline passed (a hung collective must
  not outlive the test, even when the test itself was killed before its cleanup ran)."""
  import threading
  parent, end = os.getppid(), time.monotonic() + deadline_s

  def watch():
    while True:
      if os.getppid() != parent or time.monotonic() > end:
        os._exit(3)
      time.sleep(1.0)
  threading.Thread(target=watch, daemon=True).start()


def main(argv) -> None:
  process_id, num_processes, port, out_dir = int(argv[1]), int(argv[2]), argv[3], argv[4]
  _watchdog(float(os.environ.get("DCIC_TEST_DEADLINE_S", "600")))
  from dcic_jax import sharding
  # With the suite's compile cache, process 0 compiles and the other loads its binary, so both
  # start each collective program together even on a loaded machine.
  info = sharding.initialize("on", coordinator_address=f"127.0.0.1:{port}",
                             num_processes=num_processes, process_id=process_id,
                             cpu_collectives="gloo",
                             compilation_cache_dir=os.environ.get("DCIC_TEST_XLA_CACHE") or None,
                             timeout_s=120)
  import jax
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  print(f"process {info.index}/{info.count}: {info.local_devices} of {info.global_devices} devices",
        flush=True)
  run(out_dir)
  sharding.sync("done")  # nobody leaves while another still needs the coordinator
  print(f"process {info.index} done", flush=True)


if __name__ == "__main__":
  main(sys.argv)
