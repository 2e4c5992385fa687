"""Multi-host paths on one machine: 2 processes × 2 CPU devices (gloo over loopback) against
1 process × 4 devices, plus the sweep partition API.

The two worker processes (`multihost_worker.py`) and the in-process reference run the same code:
prior training (resumed once), codec training (killed after a checkpoint and resumed on every
host) and a grid decode whose outputs each host writes for the (point, image) pairs it owns.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

import conftest
import multihost_worker
from dcic_jax import io, sharding, sweep

TIMEOUT_S = 540   # hard limit for the worker processes (~4-6 min on this shared 2-core machine)


def _gloo_available() -> bool:
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return hasattr(_jax, "make_gloo_tcp_collectives")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(num_processes: int, out_dir: pathlib.Path) -> list[subprocess.Popen]:
  port = _free_port()
  env = dict(os.environ)
  env["XLA_FLAGS"] = conftest.xla_flags_for(2)   # the reference's flags, 2 devices a process
  # No persistent compile cache in the workers: only process 0 writes it, so on a re-run process 0
  # loads a program that process 1 must compile, and process 1 comes late to gloo's 30 s rendezvous.
  env.pop("DCIC_TEST_XLA_CACHE", None)
  env["DCIC_TEST_DEADLINE_S"] = str(TIMEOUT_S + 30)
  env.pop("DCIC_DISTRIBUTED", None)
  script = pathlib.Path(multihost_worker.__file__)
  procs = []
  for i in range(num_processes):
    log = open(out_dir / f"log-{i}.txt", "w")
    procs.append(subprocess.Popen(
        [sys.executable, str(script), str(i), str(num_processes), str(port), str(out_dir)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=script.parent.parent,
        start_new_session=True))   # own process group: the finally below kills it whole
    log.close()
  return procs


def _kill(procs: list[subprocess.Popen]) -> None:
  for p in procs:
    if p.poll() is None:
      try:
        os.killpg(p.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    p.wait()


@pytest.fixture(scope="module")
def runs():
  """(2-process output dir, 1-process reference dir); workers run while the reference runs."""
  if not _gloo_available():
    pytest.skip("this jaxlib has no gloo CPU collectives: multi-process CPU runs are impossible")
  if jax.device_count() != 4 or jax.process_count() != 1:
    pytest.skip(f"the reference needs 1 process x 4 CPU devices, got {jax.device_count()} devices")
  # Not tmp_path_factory: concurrent pytest sessions on this machine prune each other's basetemp.
  with tempfile.TemporaryDirectory(prefix="dcic_multihost_") as root:
    multi, single = pathlib.Path(root) / "two_processes", pathlib.Path(root) / "one_process"
    multi.mkdir()
    single.mkdir()
    yield _run_both(multi, single)


def _run_both(multi: pathlib.Path, single: pathlib.Path):
  deadline = time.monotonic() + TIMEOUT_S
  procs = _launch(2, multi)
  try:
    # The reference runs after the workers: a third compiling process on two cores can starve a
    # worker past gloo's 30 s rendezvous.
    for i, p in enumerate(procs):
      try:
        rc = p.wait(timeout=max(deadline - time.monotonic(), 1))
      except subprocess.TimeoutExpired:
        pytest.fail(f"worker {i} still running after {TIMEOUT_S}s:\n{_tail(multi, i)}")
      if rc:
        pytest.fail(f"worker {i} exited with {rc}:\n{_tail(multi, i)}")
  finally:
    _kill(procs)
  multihost_worker.run(single)
  return multi, single


def _tail(out_dir, i, n=3000) -> str:
  return (out_dir / f"log-{i}.txt").read_text()[-n:]


def _params(out_dir, prefix):
  with np.load(out_dir / "params.npz") as f:
    return {k[len(prefix):]: f[k] for k in f.files if k.startswith(prefix + "[")}


def _max_diff(a: dict, b: dict) -> float:
  assert a.keys() == b.keys() and a
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def _info(out_dir, i):
  return json.loads((out_dir / f"written-{i}.json").read_text())


def test_two_processes_see_four_devices(runs):
  multi, _ = runs
  for i in range(2):
    info = _info(multi, i)
    assert (info["process"], info["processes"], info["devices"], info["local_devices"]) == (i, 2, 4, 2)


def test_prior_training_matches_one_process(runs, record_property):
  multi, single = runs
  diff = _max_diff(_params(multi, "prior"), _params(single, "prior"))
  record_property("prior_params_max_abs_diff", diff)
  print(f"\nprior params after {multihost_worker.PRIOR_STEPS[-1]} steps: max |2 proc - 1 proc| = {diff:.3g}")
  assert diff < 1e-5   # the same batches; only the gradient all-reduce order differs
  # One checkpoint set, written once, read back by both hosts (the resumed step 3 matches).
  steps = sorted(int(p.name) for p in (multi / "prior_run" / "prior" / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [2, 3]


def test_codec_training_and_resume_match_one_process(runs, record_property):
  multi, single = runs
  diff = _max_diff(_params(multi, "codec"), _params(single, "codec"))
  resumed = _max_diff(_params(multi, "codec"), _params(multi, "codec_first"))
  record_property("codec_params_max_abs_diff", diff)
  print(f"\ncodec params after {multihost_worker.CODEC_STEPS} steps: max |2 proc - 1 proc| = {diff:.3g};"
        f" killed+resumed vs straight (2 proc): {resumed:.3g}")
  assert resumed == 0.0
  assert diff < 1e-5


def test_grid_decode_outputs_written_once_and_match_one_process(runs, record_property):
  multi, single = runs
  infos = [_info(multi, i) for i in range(2)]
  written = [set(info["written"]) for info in infos]
  every = set(_info(single, 0)["written"])
  assert len(every) == len(multihost_worker.K_D) * multihost_worker.NUM_IMAGES
  assert written[0] and written[1] and not written[0] & written[1]   # both hosts wrote, no collision
  assert written[0] | written[1] == every
  # Who wrote what follows `owners`, which both hosts compute alike from the sharding alone.
  owners = np.array(infos[0]["owners"])
  assert infos[0]["owners"] == infos[1]["owners"]
  for i in range(2):
    assert written[i] == {f"tiny/img{b}/kd{multihost_worker.K_D[g]:g}_kp{multihost_worker.K_P[g]:g}.npy"
                          for g, b in zip(*np.nonzero(owners == i))}
  assert not list((multi / "sweep").rglob(".*"))          # no temporary file left behind
  diff = max(float(np.max(np.abs(np.load(multi / "sweep" / p) - np.load(single / "sweep" / p))))
             for p in every)
  record_property("decoded_pixels_max_abs_diff", diff)
  print(f"\ngrid decode: max |2 proc - 1 proc| over {len(every)} outputs = {diff:.3g}")
  # Not bit-identical across process counts (measured 2.7e-7: the programs XLA builds differ),
  # far below one 8-bit level (2/255 on this [-1, 1] scale).
  assert diff < 1e-5


def test_main_job_splits_its_files_over_hosts_and_resumes_what_was_lost(runs, record_property):
  multi, single = runs
  studies = [_info(multi, i)["study"] for i in range(2)]
  reference = _info(single, 0)["study"]
  every = set(reference["first"])
  # Originals, .dcic files, base images and 2 rates x 4 points x 2 images of decodes.
  assert {p.split("/")[0] for p in every} == {"originals", "files", "base", "decoded"}
  assert sum(p.startswith("decoded/") for p in every) == 16
  first = [set(s["first"]) for s in studies]
  assert not first[0] & first[1] and first[0] | first[1] == every   # each file by one host
  for kind in ("files/", "decoded/"):                                 # both hosts did work
    assert all(any(p.startswith(kind) for p in f) for f in first), kind
  # After losing one decode (a host killed mid-sweep), a re-run redoes that file alone.
  lost = [multihost_worker.STUDY_LOST]
  assert studies[0]["second"] + studies[1]["second"] == lost and reference["second"] == lost
  wd_multi, wd_single = multi / "study" / "wd", single / "study" / "wd"
  assert not [p for p in wd_multi.rglob(".*") if p.is_file()]         # no temporary file left
  from dcic_jax.data.images import load_rgb
  diff = 0
  for p in sorted(every):
    if p.endswith(".dcic"):  # encoded on another host: the same bytes
      assert (wd_multi / p).read_bytes() == (wd_single / p).read_bytes(), p
    else:
      a, b = (load_rgb(w / p).astype(int) for w in (wd_multi, wd_single))
      diff = max(diff, int(np.abs(a - b).max()))
  record_property("study_png_max_abs_diff", diff)
  print(f"\nmain job: {len(every)} files, PNGs max |2 proc - 1 proc| = {diff} (8-bit levels)")
  assert diff <= 1   # float noise of 2.7e-7 may flip a rounding, by one 8-bit level at most
  # The report is built from every host's files.
  m = json.loads((wd_multi / "measurements" / "bmshj2018-q3.json").read_text())
  assert set(m["points"]) == {"base", "kd0_kp0", "kd1_kp0", "kd0_kp1", "kd1_kp1"}
  assert (wd_multi / "report" / "report.md").is_file()


# ----------------------------------------------------------------------------- sweep API, one process

def _units():
  return [sweep.WorkUnit(f"r{r}", f"im{i}", g, path=f"r{r}/im{i}/{g}.png")
          for r in range(3) for i in range(5) for g in range(4)]


def test_assign_splits_every_unit_to_exactly_one_process():
  units = _units()
  for n in (1, 2, 3, 7):
    shares = [sweep.assign(units, i, n) for i in range(n)]
    flat = [u for s in shares for u in s]
    assert sorted(flat) == sorted(units) and len(set(flat)) == len(units)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert sweep.assign(units[::-1], 0, n) == shares[0]            # order of the input is irrelevant
  by_image = lambda u: (u.rate, u.image)
  shares = [sweep.assign(units, i, 4, group=by_image) for i in range(4)]
  homes = {}
  for i, share in enumerate(shares):
    for u in share:
      assert homes.setdefault(by_image(u), i) == i                 # a group never splits
  assert max(map(len, shares)) - min(map(len, shares)) <= 4
  with pytest.raises(ValueError):
    sweep.assign(units, 2, 2)


def test_pending_and_atomic_writes_resume_only_what_is_missing(tmp_path):
  units = _units()
  for u in units[:7]:
    io.write_bytes(sweep.output_path(tmp_path, u), b"x", make_parents=True)
  # A writer killed between writing and renaming leaves only a hidden temporary file.
  killed = sweep.output_path(tmp_path, units[7])
  (killed.parent / f".{killed.stem}.tmp-host-1{killed.suffix}").write_bytes(b"half")

  def crash(path):
    path.write_bytes(b"half")
    raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    io.atomic_write(sweep.output_path(tmp_path, units[8]), crash, make_parents=True)
  assert sweep.pending(units, tmp_path) == units[7:]
  assert io.remove_stale_temporaries(tmp_path) == 1
  assert not list(tmp_path.rglob(".*"))
  grid_units = sweep.grid_units("r0", ["im0", "im1"], [0, 1, 2, 3], [0, 0, 0, 0],
                                lambda r, im, g, kd, kp: f"{r}/{im}/{g}.png")
  assert sweep.pending_images(grid_units, tmp_path) == [1]          # im1's point 3 is units[7]
  with pytest.raises(ValueError, match="colliding"):
    sweep.grid_units("r", ["a", "b"], [0.0], [0.0], lambda r, im, g, kd, kp: "same.png")


def test_write_owned_on_one_process_writes_the_whole_call(tmp_path):
  mesh = jax.make_mesh((2, 2), ("grid", "data"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  out = jax.device_put(np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3),
                       jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("grid", "data")))
  units = sweep.grid_units("r", ["a", "b"], [0, 1, 2, 3], [0, 0, 0, 0],
                           lambda r, im, g, kd, kp: f"{im}/{g}.npy")
  assert (sweep.owners(out) == 0).all()
  assert len(sweep.write_owned(out, units, tmp_path, save=io.save_npy)) == 8
  np.testing.assert_array_equal(np.load(tmp_path / "b" / "3.npy"), np.asarray(out)[3, 1])
  assert sweep.write_owned(out, units, tmp_path, save=io.save_npy) == []   # nothing twice


def test_owners_and_host_rows_for_two_hosts_from_the_sharding_alone():
  """Fake a second host by relabelling devices: the ownership maths needs no second process."""
  class FakeDevice:
    def __init__(self, d, process):
      self.d, self.process_index = d, process

  class FakeSharding:
    def __init__(self, sharding, shape):
      self.map = {FakeDevice(d, i // 2): idx
                  for i, (d, idx) in enumerate(sharding.devices_indices_map(shape).items())}

    def devices_indices_map(self, shape):
      return self.map

  class FakeArray:
    def __init__(self, sharding, shape):
      self.shape, self.sharding = shape, FakeSharding(sharding, shape)

  mesh = jax.make_mesh((2, 2), ("grid", "data"))
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("grid", "data"))
  np.testing.assert_array_equal(sweep.owners(FakeArray(spec, (4, 2, 8))), [[0, 0], [0, 0], [1, 1], [1, 1]])
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # Replicated on both hosts: one writer each, dealt round-robin.
  np.testing.assert_array_equal(sweep.owners(FakeArray(rep, (3, 2))), [[0, 1], [0, 1], [0, 1]])
  by_grid = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("grid"))  # rows on one host
  np.testing.assert_array_equal(sweep.owners(FakeArray(by_grid, (4, 2))), [[0, 0], [0, 0], [1, 1], [1, 1]])
  data = sharding.data_mesh()
  assert sharding.process_rows(8, data, 0) == slice(0, 8)
  assert sharding.host_rows(8, data) == slice(0, 8)
  assert sharding.process_rows(8, data, 1) == slice(0, 0)
  with pytest.raises(ValueError, match="does not split"):
    sharding.process_rows(6, data, 0)


def test_host_crops_are_the_rows_of_the_global_batches():
  from dcic_jax.data.input_pipeline import load_folder, random_crops
  from dcic_jax.train import host_crops
  from conftest import PHOTOS
  full = random_crops(load_folder(PHOTOS, 32), 32, 6, seed=3, start=2)
  halves = [host_crops(PHOTOS, 32, 6, rows, seed=3, start=2) for rows in (slice(0, 3), slice(3, 6))]
  for _ in range(2):
    np.testing.assert_array_equal(next(full), np.concatenate([next(h) for h in halves]))


def test_initialize_stays_single_without_a_cluster(monkeypatch):
  for name in ("SLURM_NTASKS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
               sharding.ENV_COORDINATOR, sharding.ENV_NUM_PROCESSES, sharding.ENV_DISTRIBUTED):
    monkeypatch.delenv(name, raising=False)
  assert sharding.detected_cluster() is None
  assert sharding.initialize().count == 1
  monkeypatch.setenv("SLURM_JOB_ID", "1")
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert sharding.detected_cluster() == "slurm"
  assert sharding.initialize("off").count == 1
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "a,b")
  monkeypatch.delenv("SLURM_NTASKS")
  assert sharding.detected_cluster() == "tpu"
  with pytest.raises(ValueError, match="auto, on or off"):
    sharding.initialize("maybe")


def test_dry_run_estimate_adds_up():
  est = sweep.estimate(rates=4, images=24, points=9, steps=100, seconds_per_call=0.05,
                       devices=8, hosts=2, chunk=2,
                       calls_per_step=sweep.unet_calls_per_step("schedule", "xt", 1),
                       compile_seconds=30)
  # 8 devices, 24 images: mesh 1 grid x 8 data, 3 images per device; the grid pads to whole
  # chunks of 2: 10 points x 3 images = 30 items -> 15 chunks per device.
  assert (est.data_devices, est.padded_points, est.items_per_device) == (8, 10, 30)
  assert est.seconds_per_rate == pytest.approx(30 + 15 * 100 * 4 * 0.05)
  assert est.wall_seconds == pytest.approx(4 * est.seconds_per_rate)
  text = est.format()
  assert "864 decodes" in text and "2 host(s)" in text and "in all" in text
  assert sweep.unet_calls_per_step("dps") == 3 and sweep.unet_calls_per_step("schedule", "x0") == 1
  assert sweep.unet_calls_per_step() == 1        # the default project mode: one forward a step
