"""The stages behind `dcic_jax.main`, each resumable from the workdir.

  train_codec → train_prior → encode → decode → evaluate → report

Workdir layout (every file written to a temporary name and renamed, so a killed run leaves no
half-written output and a re-run redoes only what is missing):

  codec/                        codec training (train.py), when train_codec.steps > 0
  prior/                        prior training (diffusion/train.py), when dcic.prior == "train"
  originals/<image>.png         the evaluated images (after the optional centre crop)
  files/<rate>/<image>.dcic     real bitstreams; their sizes are the rates of every table
  base/<rate>/<image>.png       x̂_b, the base codec's reconstruction
  decoded/<rate>/<point>/<image>.png   DCIC decodes, <point> = kd<K_D>_kp<K_P>
  measurements/<rate>.json      metrics of the base codec and of every grid point of one rate
  report/                       report.md, report.html and the PNG figures
  stages.json                   finished stages with the fingerprint of the config they ran with

A stage whose fingerprint matches is skipped outright; changing a field a stage depends on
re-runs that stage (its per-file outputs are still reused where they exist, except that a new
DCIC setting writes to fresh `decoded/` folders, see `_decode_fingerprint`).
"""
import dataclasses
import hashlib
import json
import os
import pathlib
import time
from typing import Any

import ml_collections
import numpy as np
import tqdm

from dcic_jax import io
from dcic_jax.assets import resolve
from dcic_jax.errors import UserError

STAGES = ("train_codec", "train_prior", "encode", "decode", "evaluate", "report")


@dataclasses.dataclass(frozen=True)
class Rate:
  """One rate point of the study: a codec export directory."""
  name: str      # folder name of the export (e.g. mbt2018-mean-q2): the rate's id in the workdir
  path: str


@dataclasses.dataclass(frozen=True)
class GridPoint:
  k_d: float
  k_p: float

  @property
  def name(self) -> str:
    from dcic_jax.sweep import point_name
    return point_name(self.k_d, self.k_p)


def parse_values(text: str, what: str) -> list[float]:
  try:
    values = [float(v) for v in str(text).split(",") if v.strip()]
  except ValueError:
    raise UserError(f"{what} must be comma-separated numbers, got {text!r}") from None
  if not values or any(v < 0 for v in values):
    raise UserError(f"{what} must be one or more numbers >= 0, got {text!r}")
  return values


def grid_points(config) -> list[GridPoint]:
  return [GridPoint(a, b) for a in parse_values(config.dcic.kd, "dcic.kd")
          for b in parse_values(config.dcic.kp, "dcic.kp")]


def _fingerprint(*parts: Any) -> str:
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class Workdir:
  """Paths of the workdir and the record of finished stages."""

  def __init__(self, root):
    self.root = pathlib.Path(root).absolute()
    self.root.mkdir(parents=True, exist_ok=True)
    self._stages_path = self.root / "stages.json"

  def done(self) -> dict:
    return json.loads(self._stages_path.read_text()) if self._stages_path.is_file() else {}

  def is_done(self, stage: str, fingerprint: str) -> bool:
    return self.done().get(stage, {}).get("fingerprint") == fingerprint

  def mark_done(self, stage: str, fingerprint: str, seconds: float) -> None:
    done = self.done()
    done[stage] = {"fingerprint": fingerprint, "seconds": round(seconds, 2),
                   "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    io.write_json(self._stages_path, done)

  def __truediv__(self, other):
    return self.root / other


# ---------------------------------------------------------------------------------------------
# Stages


def stage_train_codec(config, wd: Workdir) -> list[Rate]:
  """Train one codec (train_codec.steps > 0) or take the exports listed in eval.checkpoints."""
  rates = [Rate(pathlib.Path(c).name, str(resolve(c))) for c in str(config.eval.checkpoints).split(",") if c]
  if config.train_codec.steps > 0:
    export_dir = config.export_dir or str(wd / "codec_export")
    if not (pathlib.Path(export_dir) / "codec.json").is_file() or not wd.is_done(
        "train_codec", _fingerprint(config.codec.to_dict(), config.train_codec.to_dict())):
      from dcic_jax.train import train_and_export
      t0 = time.perf_counter()
      train_and_export(config, str(wd / "codec"), export_dir)
      if _is_writer():
        print(f"exported codec to {export_dir}")
      if _is_writer():
        wd.mark_done("train_codec", _fingerprint(config.codec.to_dict(),
                                                 config.train_codec.to_dict()),
                     time.perf_counter() - t0)
    rates.append(Rate(pathlib.Path(export_dir).name, export_dir))
  if not rates:
    raise UserError("nothing to evaluate: set eval.checkpoints (codec export dirs) or "
                    "train_codec.steps > 0")
  for r in rates:
    if not (pathlib.Path(r.path) / "codec.json").is_file():
      raise UserError(f"no codec export at {r.path} (expected {r.path}/codec.json)")
  names = [r.name for r in rates]
  if len(set(names)) != len(names):
    raise UserError(f"two rate points share a folder name: {names}")
  return rates


def stage_train_prior(config, wd: Workdir) -> str | None:
  """The prior spec the decode stage loads: trained here (dcic.prior == "train") or given."""
  if not _dcic_enabled(config):
    return None
  spec = config.dcic.prior
  if spec == "shipped":
    from dcic_jax.diffusion.prior import shipped_prior
    if not os.path.isdir(shipped_prior()):
      raise UserError(f"no shipped prior at {shipped_prior()}; set dcic.prior to a prior path, "
                      "'train', or analytic:STD")
    return None  # load_prior(None): checkpoints/prior
  if spec != "train":
    from dcic_jax.diffusion.presets import PRESETS, split_preset
    preset, path = (None, spec) if spec.startswith("analytic:") else split_preset(spec)
    if not spec.startswith("analytic:") and not os.path.exists(path):
      want = f" ({PRESETS[preset].weights})" if preset else ""
      raise UserError(f"dcic.prior {spec!r} does not exist: put the prior at {path}{want} (a "
                      "diffusers UNet2DModel folder, a guided-diffusion .pt, or a prior "
                      "workdir/export), or set dcic.prior to 'shipped' or 'train'")
    return spec
  from dcic_jax.diffusion.prior_files import latest_step
  from dcic_jax.diffusion.train import folder_crops, train_prior
  tc = config.prior.train
  fp = _fingerprint(config.prior.to_dict())
  if not wd.is_done("train_prior", fp):
    t0 = time.perf_counter()
    import jax
    # Each host reads its own share of every global batch (its own crop stream).
    train_prior(config, str(wd.root), folder_crops(
        tc.data_dir, tc.crop_size, tc.batch_size // jax.process_count(),
        tc.seed + jax.process_index(), start=latest_step(str(wd.root))))
    if _is_writer():
      wd.mark_done("train_prior", fp, time.perf_counter() - t0)
  return str(wd.root)


def _dcic_enabled(config) -> bool:
  return bool(config.dcic.enabled)


def eval_images(config) -> list[tuple[str, np.ndarray]]:
  """(name, uint8 [H, W, 3]) of the evaluation set, centre-cropped to eval.crop if set."""
  from dcic_jax.data import datasets
  from dcic_jax.data.images import center_crop, resize_short
  images_dir = config.eval.images_dir and str(resolve(config.eval.images_dir))
  images = datasets.eval_images(config.eval.dataset, images_dir,
                                split=config.eval.split, max_images=config.eval.max_images)
  out = []
  for im in images:
    x = im.load()
    if config.eval.resize_short:
      x = resize_short(x, config.eval.resize_short)
    if config.eval.crop:
      x = center_crop(x, config.eval.crop, "eval.crop")
    out.append((im.name, x))
  return out


def stage_encode(config, wd: Workdir, rates: list[Rate]) -> list[str]:
  """Write the originals, then one real .dcic file and its base reconstruction per rate.

  On several hosts the (rate, image) pairs are dealt out (`sweep.assign`): each host encodes and
  writes its own share, every file exactly once.
  """
  import jax
  from dcic_jax import sweep
  from dcic_jax.codecs import codec as codec_lib
  images = eval_images(config)
  if not images:
    raise UserError(f"no evaluation image in {config.eval.images_dir}")
  names = [n for n, _ in images]
  fp = _fingerprint([r.name for r in rates], names, config.eval.crop, config.eval.resize_short,
                    config.eval.seed)
  if wd.is_done("encode", fp):
    return names
  t0 = time.perf_counter()
  pixels = dict(images)
  me, hosts = jax.process_index(), jax.process_count()
  for unit in sweep.assign([sweep.WorkUnit("", n, path=f"originals/{n}.png") for n in names],
                           me, hosts):
    if not (wd / unit.path).is_file():
      io.save_png(wd / unit.path, pixels[unit.image], make_parents=True)
  units = [sweep.WorkUnit(r.name, n, path=f"files/{r.name}/{n}.dcic") for r in rates for n in names]
  paths = {r.name: r.path for r in rates}
  codec, loaded = None, None
  for unit in tqdm.tqdm(sweep.assign(units, me, hosts), desc="encode", disable=me > 0):
    base_path = wd / "base" / unit.rate / f"{unit.image}.png"
    if (wd / unit.path).is_file() and base_path.is_file():
      continue
    if loaded != unit.rate:  # units come sorted by rate: each export loads once
      codec, loaded = codec_lib.load(paths[unit.rate]), unit.rate
    data = codec.compress(pixels[unit.image], seed=_file_seed(config.eval.seed,
                                                              names.index(unit.image)))
    io.write_bytes(wd / unit.path, data, make_parents=True)
    io.save_png(base_path, codec.decompress(data).image, make_parents=True)
  _barrier("encode-files")
  if _is_writer():
    wd.mark_done("encode", fp, time.perf_counter() - t0)
  return names


def _file_seed(seed: int, index: int) -> int:
  """The header seed of the index-th image: distinct per image, a pure function of eval.seed."""
  return (int(seed) * 1_000_003 + index) % 2**64


def dcic_config(config, weights: tuple[float, float] = (1.0, 1.0)):
  """The DCICConfig of the study with a codec's calibration constants (w_D, w_P) (penalty modes)."""
  from dcic_jax.dcic.sampler import config_from
  return config_from(config.dcic.to_dict(), w_d=weights[0], w_p=weights[1])


def _decode_fingerprint(config, prior_spec) -> str:
  fields = {k: v for k, v in config.dcic.to_dict().items() if k not in ("chunk", "rates")}
  return _fingerprint(fields, prior_spec)


def stage_decode(config, wd: Workdir, rates: list[Rate], names: list[str],
                 prior_spec: str | None) -> None:
  """Decode every (K_D, K_P) grid point of every file of the DCIC rates: one compiled call per
  rate and image size (all grid points and all images of that size together).

  Collective: every host makes the same calls, and each writes the outputs its own devices
  decoded (`sweep.write_owned`). Only image columns with an output missing are decoded again.
  """
  if not _dcic_enabled(config):
    return
  points = grid_points(config)
  setting = _decode_fingerprint(config, prior_spec)
  fp = _fingerprint(setting, [r.name for r in rates], names)
  if wd.is_done("decode", fp):
    return
  t0 = time.perf_counter()
  from dcic_jax import sweep
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.dcic.calibrate import weights_or_calibrate
  from dcic_jax.dcic.decode import dcic_decode_to_files
  from dcic_jax.diffusion.prior import load_prior, notes as prior_notes
  prior = None
  k_d = np.array([p.k_d for p in points], np.float32)
  k_p = np.array([p.k_p for p in points], np.float32)
  for rate in dcic_rates(config, rates):
    out_root = wd / "decoded" / rate.name
    _check_setting(out_root, setting, config, prior_spec)
    units = sweep.grid_units(rate.name, names, k_d, k_p,
                             lambda r, n, g, kd, kp: f"{points[g].name}/{n}.png")
    missing = [names[b] for b in sweep.pending_images(units, out_root)]
    if not missing:
      continue
    codec = codec_lib.load(rate.path)
    decoded = {n: codec.decompress((wd / "files" / rate.name / f"{n}.dcic").read_bytes())
               for n in missing}
    if prior is None:
      prior = load_prior(prior_spec, config.dcic.prior_flags)
      header = decoded[missing[0]].header
      for note in prior_notes(prior, header.height, header.width, config.dcic.mode) if _is_writer() else ():
        print(note)
    weights, note = weights_or_calibrate(json.loads((pathlib.Path(rate.path) / "codec.json").read_text()),
                                         config.dcic.variant, config.dcic.mode, codec,
                                         list(decoded.values()), rate.name)
    if note and _is_writer():
      print(note)
    cfg = dcic_config(config, weights)
    by_size: dict[tuple[int, int], list[str]] = {}
    for n in missing:
      by_size.setdefault(decoded[n].x_hat.shape[:2], []).append(n)
    for group in by_size.values():
      for start in range(0, len(group), config.dcic.batch):
        batch = group[start:start + config.dcic.batch]
        if _is_writer():
          print(f"decode {rate.name}: {len(points)} grid points x {len(batch)} images "
                f"({decoded[batch[0]].header.height}x{decoded[batch[0]].header.width})")
        columns = [names.index(n) for n in batch]
        dcic_decode_to_files(codec, prior, [decoded[n] for n in batch], cfg, k_d, k_p,
                             [[row[b] for b in columns] for row in units], out_root,
                             chunk=config.dcic.chunk, progress=_is_writer())
  _barrier("decode-files")
  if _is_writer():
    wd.mark_done("decode", fp, time.perf_counter() - t0)


def _check_setting(out_root: pathlib.Path, setting: str, config, prior_spec) -> None:
  """decoded/<rate>/ holds decodes of one DCIC setting; a different setting starts afresh."""
  marker = out_root / "setting.json"
  if not _is_writer():
    _barrier(f"setting:{out_root.name}")
    return
  if marker.is_file() and json.loads(marker.read_text())["fingerprint"] != setting:
    import shutil
    shutil.rmtree(out_root)
  if not marker.is_file():
    out_root.mkdir(parents=True, exist_ok=True)
    info = {"fingerprint": setting, "prior": prior_spec or "shipped",
            "dcic": config.dcic.to_dict()}
    io.write_json(marker, info)
  _barrier(f"setting:{out_root.name}")


def dcic_rates(config, rates: list[Rate]) -> list[Rate]:
  """The rates that get the (K_D, K_P) grid: dcic.rates (names), or all of them."""
  wanted = [n for n in str(config.dcic.rates).split(",") if n]
  if not wanted:
    return rates
  known = {r.name: r for r in rates}
  unknown = [n for n in wanted if n not in known]
  if unknown:
    raise UserError(f"dcic.rates names {unknown}, which are not among the evaluated rates "
                    f"{sorted(known)}")
  return [known[n] for n in wanted]


def stage_evaluate(config, wd: Workdir, rates: list[Rate], names: list[str]) -> dict:
  """Metrics of the base codec and of every grid point, one JSON file per rate."""
  from dcic_jax import score
  from dcic_jax.data.images import load_rgb
  points = grid_points(config) if _dcic_enabled(config) else []
  with_grid = {r.name for r in dcic_rates(config, rates)} if points else set()
  fp = _fingerprint(wd.done().get("decode", {}).get("fingerprint"),
                    wd.done().get("encode", {}).get("fingerprint"), config.metrics.to_dict(),
                    config.eval.seed, sorted(with_grid))
  t0 = time.perf_counter()
  results = {}
  done = wd.is_done("evaluate", fp)
  originals = lpips = inception = None  # loaded once, and only if some rate is measured
  for rate in tqdm.tqdm(rates, desc="evaluate rates"):
    path = wd / "measurements" / f"{rate.name}.json"
    if done and path.is_file():
      results[rate.name] = json.loads(path.read_text())
      continue
    if originals is None:
      originals = [load_rgb(wd / "originals" / f"{n}.png") for n in names]
      lpips, inception = _perceptual_nets(config)
    sizes = [(wd / "files" / rate.name / f"{n}.dcic").stat().st_size for n in names]
    bpp = [8 * s / (im.shape[0] * im.shape[1]) for s, im in zip(sizes, originals)]
    entries = {"base": _score_folder(score, wd / "base" / rate.name, names, originals,
                                     config, lpips, inception)}
    if rate.name in with_grid:
      for p in points:
        e = _score_folder(score, wd / "decoded" / rate.name / p.name, names, originals, config,
                          lpips, inception)
        entries[p.name] = {**e, "k_d": p.k_d, "k_p": p.k_p}
    results[rate.name] = {"rate": rate.name, "path": rate.path, "bpp": float(np.mean(bpp)),
                          "bpp_per_image": dict(zip(names, bpp)), "points": entries}
    io.write_json(path, results[rate.name], make_parents=True)
  if not done:
    wd.mark_done("evaluate", fp, time.perf_counter() - t0)
  return results


def _score_folder(score, folder: pathlib.Path, names, originals, config, lpips, inception):
  from dcic_jax.data.images import load_rgb
  recons = [load_rgb(folder / f"{n}.png") for n in names]
  r = score.score(originals, recons, seed=config.eval.seed, names=names, lpips=lpips,
                  inception=inception, patch_size=config.metrics.fid_patch)
  return {"mean": r["mean"], "set": r["set"],
          "per_image": {row["image"]: {k: v for k, v in row.items() if k != "image"}
                        for row in r["images"]}}


def _perceptual_nets(config):
  """LPIPS and Inception weights when the config names them (they cannot be downloaded)."""
  lpips = inception = None
  if config.metrics.lpips_path:
    from dcic_jax.metrics import perceptual
    lpips = perceptual.load_lpips(config.metrics.lpips_path)
  if config.metrics.inception_path:
    from dcic_jax.metrics import perceptual
    inception = perceptual.load_inception(config.metrics.inception_path)
  return lpips, inception


def stage_report(config, wd: Workdir, results: dict) -> pathlib.Path:
  from dcic_jax.report import baselines, build
  fp = _fingerprint(wd.done().get("evaluate", {}).get("fingerprint"), config.report.to_dict(),
                    baselines.stamp(config.report.baselines))
  report = wd / "report" / "report.md"
  if not (wd.is_done("report", fp) and report.is_file()):
    t0 = time.perf_counter()
    report = build.build_report(wd.root, results, config, stage_order=STAGES)
    wd.mark_done("report", fp, time.perf_counter() - t0)
  return report


# ---------------------------------------------------------------------------------------------


def validate(config) -> None:
  """One-line errors for config values that would otherwise fail deep inside a stage."""
  if config.train_codec.steps < 0:
    raise UserError(f"train_codec.steps must be >= 0, got {config.train_codec.steps}")
  if config.eval.crop < 0 or config.eval.max_images < 0:
    raise UserError("eval.crop and eval.max_images must be >= 0")
  from dcic_jax.report import baselines
  baselines.load(config.report.baselines)  # a bad file fails now, not after the decode
  if _dcic_enabled(config):
    grid_points(config)
    if config.dcic.batch < 1 or config.dcic.chunk < 1:
      raise UserError("dcic.batch and dcic.chunk must be >= 1")
    from dcic_jax.diffusion.presets import parse_flags
    parse_flags(config.dcic.prior_flags, "dcic.prior_flags")
    from dcic_jax.dcic.sampler import check_factors
    check_factors(dcic_config(config),  # DCICConfig validates mode/grad/optimizer/variant/steps
                  [v for p in grid_points(config) for v in (p.k_d, p.k_p)])


def _is_writer() -> bool:
  """On several hosts (jax.distributed) process 0 writes the workdir; the others compute along
  in the collective stages (training, decoding) and wait at a barrier after each stage."""
  import jax
  return jax.process_index() == 0


def _barrier(name: str) -> None:
  from dcic_jax import sharding
  sharding.sync(f"pipeline:{name}")


def run(config: ml_collections.ConfigDict, workdir: str) -> pathlib.Path | None:
  """Run every stage; each skips the work a previous run of this workdir already did.

  Multi-host (one process per host, the workdir on a shared file system): the training stages
  and the grid decode are collective calls over all devices, and each host writes the decodes
  its devices made; encode deals its files out over the hosts; evaluate and report run on
  process 0 while the others wait. Returns the report path (None on
  the other hosts).
  """
  validate(config)
  wd = Workdir(workdir)
  writer = _is_writer()
  times = {}
  if writer:   # temporaries of writers killed in an earlier run, before anyone writes again
    io.remove_stale_temporaries(wd.root)
  _barrier("clean")

  def timed(name, fn, *args, collective=True):
    t0 = time.perf_counter()
    out = fn(*args) if (collective or writer) else None
    _barrier(name)
    times[name] = time.perf_counter() - t0
    return out

  rates = timed("train_codec", stage_train_codec, config, wd)
  prior_spec = timed("train_prior", stage_train_prior, config, wd)
  names = timed("encode", stage_encode, config, wd, rates)
  timed("decode", stage_decode, config, wd, rates, names, prior_spec)
  results = timed("evaluate", stage_evaluate, config, wd, rates, names, collective=False)
  report = timed("report", stage_report, config, wd, results, collective=False)
  if not writer:
    return None
  from dcic_jax.report.build import headline_markdown
  print(headline_markdown(results))
  print("stage times (this run): " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
  print(f"report: {report} (and report.html beside it)")
  return report


def dry_run(config: ml_collections.ConfigDict) -> None:
  """Print the size of the study and a wall-time estimate of its decode stage on this job's
  devices (docs/scaling.md): ε_θ timed once at the study's image size."""
  from dcic_jax import sweep
  validate(config)
  rates = [c for c in str(config.eval.checkpoints).split(",") if c]
  rates = rates + (["(trained codec)"] if config.train_codec.steps > 0 else [])
  images = eval_images(config)
  if not _dcic_enabled(config) or not images:
    print(f"{len(rates)} rates x {len(images)} images; DCIC disabled or no image: no decode stage")
    return
  wanted = [n for n in str(config.dcic.rates).split(",") if n]
  n_rates = len(wanted) or len(rates)
  points = grid_points(config)
  from dcic_jax.diffusion.prior import load_prior, notes as prior_notes
  spec = config.dcic.prior
  prior = load_prior(None if spec == "shipped" else (None if spec == "train" else spec),
                     None if spec in ("shipped", "train") else config.dcic.prior_flags)
  h, w = images[0][1].shape[:2]
  for note in prior_notes(prior, h, w, config.dcic.mode):
    print(note)
  pad = lambda v: -(-v // 64) * 64  # the codec pads to multiples of 64
  seconds = sweep.measure_seconds_per_call(prior.eps_fn, prior.params, pad(h), pad(w),
                                           config.dcic.chunk)
  steps = config.dcic.start_step or config.dcic.num_steps
  est = sweep.estimate(n_rates, len(images), len(points), steps, seconds,
                       chunk=config.dcic.chunk,
                       calls_per_step=sweep.unet_calls_per_step(config.dcic.mode, config.dcic.grad,
                                                                config.dcic.inner_steps))
  sweep.print_estimate(est)
