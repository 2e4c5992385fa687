"""Published prior checkpoints through `load_prior`: presets, sidecars, flags and refusals.

The preset fixtures hold guided-diffusion's own `create_model` / diffusers' `UNet2DModel` at each
preset's published flags, width reduced, with seeded weights (tests/prior_weights.py) and their
outputs (experiments/fixtures/make_diffusion_fixtures.py); no torch needed here.
"""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcic_jax.diffusion import prior as prior_lib
from dcic_jax.diffusion import learned_sigma, schedules
from dcic_jax.errors import UserError
from prior_weights import seeded_state_dict

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
# Presets that share a published flag set share a fixture.
PRESET_FIXTURES = {"adm-imagenet256": "adm-imagenet256", "repaint-celebahq256": "adm-imagenet256",
                   "dps-ffhq256": "dps-ffhq256", "ddpm-celebahq256": "ddpm-celebahq256",
                   "ddpm-ema-celebahq256": "ddpm-celebahq256"}


def write_safetensors(path, tensors):
  """A float32 safetensors file (u64 header size, JSON header, raw little-endian bytes)."""
  header, blobs, offset = {}, [], 0
  for name, array in tensors.items():
    blob = np.ascontiguousarray(array, "<f4").tobytes()
    header[name] = {"dtype": "F32", "shape": list(array.shape),
                    "data_offsets": [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
  raw = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))


def preset_checkpoint(fixture: str, folder: pathlib.Path):
  """(weights path, the width flags, the fixture) of a preset fixture, weights rebuilt."""
  f = np.load(FIXTURES / f"diffusion_preset_{fixture}.npz")
  sd = seeded_state_dict(zip(f["keys"], json.loads(str(f["shapes"]))), int(f["seed"]))
  path = folder / f"{fixture}.safetensors"
  write_safetensors(path, sd)
  return str(path), json.loads(str(f["flags"])), f


def _rel(ours, ref):
  return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("preset", list(PRESET_FIXTURES))
def test_presets_match_the_upstream_code(preset, tmp_path):
  path, flags, f = preset_checkpoint(PRESET_FIXTURES[preset], tmp_path)
  prior = prior_lib.load_prior(f"{preset}:{path}", flags)
  assert prior.resolution == 256 and prior.schedule.num_train_timesteps == 1000
  x = jnp.asarray(f["x"].transpose(0, 2, 3, 1))
  t = jnp.asarray(f["t"])
  ref = f["out"].transpose(0, 2, 3, 1)
  fn = learned_sigma.learned_variance_fn(prior.eps_fn) or prior.eps_fn
  # Compiled without LLVM optimisation: half the compile time, same numbers to ~1e-7.
  out = jax.jit(fn).lower(prior.params, x, t).compile(
      compiler_options={"xla_backend_optimization_level": 0})(prior.params, x, t)
  if prior.learned_variance:
    eps, v = out
    assert _rel(v, ref[..., 3:]) <= 1e-4
  else:
    eps = out
  assert _rel(eps, ref[..., :3]) <= 1e-4
  assert prior.learned_variance == preset.startswith(("adm", "dps", "repaint"))


def _small_guided(tmp_path):
  """A small guided-diffusion checkpoint (the layout fixture made by the upstream UNetModel)."""
  f = np.load(FIXTURES / "diffusion_guided_diffusion_dps.npz")
  path = tmp_path / "small.safetensors"
  write_safetensors(path, {k[3:]: f[k].astype(np.float32) for k in f.files if k.startswith("sd/")})
  return str(path)


SMALL_FLAGS = {"num_head_channels": 16, "use_new_attention_order": False,
               "noise_schedule": "cosine", "diffusion_steps": 500}


def test_flags_and_sidecars(tmp_path):
  path = _small_guided(tmp_path)
  prior = prior_lib.load_prior(path, json.dumps(SMALL_FLAGS))
  assert prior.schedule.num_train_timesteps == 500 and prior.resolution is None
  np.testing.assert_allclose(prior.schedule.alphas_cumprod,
                             schedules.make_schedule("cosine", 500).alphas_cumprod)
  pathlib.Path(path + ".json").write_text(json.dumps(dict(SMALL_FLAGS, image_size=32)))
  prior = prior_lib.load_prior(path)  # the sidecar
  assert prior.resolution == 32
  assert prior_lib.check_image_size(prior, 32, 32) is None
  assert "64x48" in prior_lib.check_image_size(prior, 64, 48)
  assert prior_lib.variance_note(prior, "project") and not prior_lib.variance_note(prior, "dps")


@pytest.mark.parametrize("flags, message", [
    ({}, "num_head_channels or num_heads and use_new_attention_order not recorded"),
    ({"num_head_channels": 16, "use_new_attention_order": False}, "noise_schedule and "
     "diffusion_steps not known"),
    (dict(SMALL_FLAGS, num_head_channels=24), "num_head_channels=24 does not divide the 64"),
    (dict(SMALL_FLAGS, num_heads=3, num_head_channels=-1), "num_heads=3 does not divide"),
    (dict(SMALL_FLAGS, num_res_blocks=2, num_channels=64), "num_channels: 32 in the checkpoint, "
     "64 in the flags; num_res_blocks: 1 in the checkpoint, 2 in the flags"),
    (dict(SMALL_FLAGS, num_head_chanels=16), "unknown guided-diffusion flags"),
    (dict(SMALL_FLAGS, noise_schedule="sigmoid"), "noise_schedule 'sigmoid' is not supported"),
])
def test_refusals_name_what_is_missing_or_wrong(tmp_path, flags, message):
  path = _small_guided(tmp_path)
  with pytest.raises(UserError, match=message):
    prior_lib.load_prior(path, flags)


def test_preset_refusals(tmp_path):
  path = _small_guided(tmp_path)
  with pytest.raises(UserError, match="does not match its flags .preset adm-imagenet256"):
    prior_lib.load_prior(f"adm-imagenet256:{path}")
  with pytest.raises(UserError, match="describes a diffusers one"):
    prior_lib.load_prior(f"ddpm-celebahq256:{path}")
  with pytest.raises(UserError, match="unknown prior preset 'adm-imagenet'"):
    prior_lib.load_prior(f"adm-imagenet:{path}")
  with pytest.raises(UserError, match=r"not found: /nope.pt \(preset dps-ffhq256: ffhq_10m.pt"):
    prior_lib.load_prior("dps-ffhq256:/nope.pt")
  # A diffusers weights file without config.json: refused, not guessed.
  f = np.load(FIXTURES / "diffusion_diffusers_ddpm.npz")
  lone = tmp_path / "lone" / "diffusion_pytorch_model.safetensors"
  lone.parent.mkdir()
  write_safetensors(lone, {k[3:]: f[k].astype(np.float32) for k in f.files if k.startswith("sd/")})
  with pytest.raises(UserError, match="without its config.json does not record attention_head_dim"):
    prior_lib.load_prior(str(lone))
  config = json.loads(str(f["config"]))
  (lone.parent / "config.json").write_text(json.dumps(config))
  with pytest.raises(UserError, match="noise_schedule and diffusion_steps not known"):
    prior_lib.load_prior(str(lone.parent))
  (lone.parent / "scheduler_config.json").write_text(json.dumps(
      {"beta_schedule": "linear", "num_train_timesteps": 1000, "beta_start": 0.0001,
       "beta_end": 0.02}))
  prior = prior_lib.load_prior(str(lone.parent))
  assert prior.resolution == 32 and not prior.learned_variance


def test_learned_variance_step_matches_improved_ddpm():
  """ddpm_learned_step = guided-diffusion's p_mean_variance (learned range) on a respaced chain."""
  f = np.load(FIXTURES / "diffusion_learned_variance.npz")
  schedule = schedules.respace(schedules.make_schedule("linear", 1000),
                               timesteps=f["timesteps"])
  for row, index in enumerate(f["index"]):
    i = int(index) + 1
    x = jnp.asarray(f["x"][row:row + 1].transpose(0, 2, 3, 1), jnp.float32)
    out = f["out"][row:row + 1].transpose(0, 2, 3, 1)
    z = jnp.ones_like(x)
    x_s, x0 = learned_sigma.ddpm_learned_step(x, jnp.asarray(out[..., :3], jnp.float32),
                                         jnp.asarray(out[..., 3:], jnp.float32), i, z, schedule)
    mean = f["mean"][row:row + 1].transpose(0, 2, 3, 1)
    std = np.exp(0.5 * f["log_variance"][row:row + 1].transpose(0, 2, 3, 1))
    want = mean + (std if i > 1 else 0.0)   # z = 1; no noise on the last step
    np.testing.assert_allclose(np.asarray(x0), f["pred_xstart"][row:row + 1].transpose(0, 2, 3, 1),
                               atol=2e-5)
    np.testing.assert_allclose(np.asarray(x_s), want, rtol=1e-4, atol=2e-5)


def test_dps_mode_samples_with_the_learned_variance():
  """dps steps use σ_θ: v = −1 (σ² = β̃) is the fixed-variance DDIM(η=1) decode, v = +1 is not."""
  from test_dcic import EPS_FN, N, SCHEDULE, setup  # pylint: disable=g-import-not-at-top
  from dcic_jax.dcic import grid, sampler  # pylint: disable=g-import-not-at-top
  codec, fns, target, keys, _ = setup()
  cfg = sampler.DCICConfig(num_steps=N, mode="dps", step_size=0.6, w_p=1.0, eta=1.0)

  def with_v(value):
    fn = lambda p, x, t: EPS_FN(p, x, t)
    fn.eps_and_v = lambda p, x, t: (EPS_FN(p, x, t), jnp.full_like(x, value))
    return np.asarray(grid.GridDecoder(fn, fns, SCHEDULE, cfg)(
        None, codec.params, target, keys, [0.0], [1.0]))[0, 0]

  fixed = np.asarray(grid.GridDecoder(EPS_FN, fns, SCHEDULE, cfg)(
      None, codec.params, target, keys, [0.0], [1.0]))[0, 0]
  np.testing.assert_allclose(with_v(-1.0), fixed, atol=1e-4)
  assert np.abs(with_v(1.0) - fixed).max() > 1e-2


def _cli(*args, timeout=600):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                        cwd=REPO, timeout=timeout)


# Each dataset config, its dataset's layout (a stand-in image where the real files go) and the
# preset its prior is named with.
DATASET_CONFIGS = {
    "celeba": ("ddpm-ema-celebahq256", "ddpm-celebahq256", ["celeba_hq/val/female/000001.jpg"]),
    "clic": ("adm-imagenet256", "adm-imagenet256",
             ["clic2020/professional/test/a.png", "clic2020/mobile/test/b.png"]),
    "imagenet": ("adm-imagenet256", "adm-imagenet256", ["imagenet/val/ILSVRC2012_val_00000001.JPEG"]),
}


@pytest.mark.parametrize("config", list(DATASET_CONFIGS))
def test_dataset_configs_run_end_to_end_with_their_preset(config, tmp_path):
  """Each dataset config through `dcic_jax.main` on a stand-in of its dataset, with its preset's
  exact layout (width reduced, random weights) as the prior: one (K_D, K_P) point decodes. The
  images are resized and cropped as the config does, to 64² instead of the prior's 256² (a 256²
  decode costs minutes here), which the size note reports. The celeba case then decodes its
  file through `decompress --prior PRESET:PATH --prior-flags`, and refuses a lone diffusers
  weights file without its config.json."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from conftest import IMAGES  # pylint: disable=g-import-not-at-top
  from tiny_exports import export_random_codec  # pylint: disable=g-import-not-at-top
  preset, fixture, stand_ins = DATASET_CONFIGS[config]
  codec = tmp_path / "bmshj2018-q1"
  export_random_codec(codec, seed=1)
  source = Image.open(IMAGES / "kodim23_crop.png").convert("RGB").crop((0, 0, 120, 96))
  for name in stand_ins:
    (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
    source.save(tmp_path / "data" / name, format="JPEG" if name.lower().endswith(("jpg", "jpeg")) else "PNG")
  weights, flags, _ = preset_checkpoint(fixture, tmp_path)
  p = _cli("-m", "dcic_jax.main", f"--config=configs/{config}.py", f"--workdir={tmp_path / 'run'}",
           f"--config.eval.images_dir={tmp_path / 'data'}", "--config.eval.max_images=1",
           f"--config.eval.checkpoints={codec}", f"--config.dcic.prior={preset}:{weights}",
           f"--config.dcic.prior_flags={json.dumps(flags)}", "--config.dcic.num_steps=1",
           "--config.dcic.kd=0", "--config.dcic.kp=1", "--config.metrics.fid_patch=0",
           "--config.eval.resize_short=64", "--config.eval.crop=64")
  assert p.returncode == 0, p.stderr[-2000:]
  assert "images are 64x64, the prior" in p.stdout and "trained on 256x256" in p.stdout
  assert ("learned variance" in p.stdout) == preset.startswith("adm")
  originals = list((tmp_path / "run" / "originals").glob("*.png"))
  assert len(originals) == 1 and Image.open(originals[0]).size == (64, 64)
  assert len(list((tmp_path / "run" / "decoded").rglob("*.png"))) == 1
  if config != "celeba":
    return
  small = tmp_path / "small.dcic"
  assert _cli("-m", "dcic_jax", "compress", originals[0], small, "--checkpoint", codec,
              "--seed", "3").returncode == 0
  out = tmp_path / "out.png"
  p = _cli("-m", "dcic_jax", "decompress", small, out, "--checkpoint", codec, "--prior",
           f"{preset}:{weights}", "--prior-flags", json.dumps(flags), "--steps", "1", "--kp", "1")
  assert p.returncode == 0 and out.is_file(), p.stderr[-2000:]
  p = _cli("-m", "dcic_jax", "decompress", small, tmp_path / "no.png", "--checkpoint", codec,
           "--prior", weights, "--steps", "1", "--kp", "1")   # no config.json: refused
  assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error:")
  assert "config.json" in p.stderr and "Traceback" not in p.stderr
  assert not (tmp_path / "no.png").exists()


def test_import_prior_writes_a_prior_that_needs_no_flags(tmp_path, capsys):
  """`dcic import-prior PRESET:PATH --out DIR`: DIR loads with the same network, weights, schedule,
  resolution and learned σ, with no preset or flags; a second conversion is refused."""
  from dcic_jax import cli
  path, flags, _ = preset_checkpoint("dps-ffhq256", tmp_path)
  (tmp_path / "flags.json").write_text(json.dumps(flags))
  out = tmp_path / "imported"
  assert cli.main(["import-prior", f"dps-ffhq256:{path}", "--out", str(out),
                   "--prior-flags", str(tmp_path / "flags.json")]) == 0
  direct = prior_lib.load_prior(f"dps-ffhq256:{path}", flags)
  imported = prior_lib.load_prior(str(out))
  assert imported.resolution == direct.resolution == 256 and imported.learned_variance
  np.testing.assert_array_equal(imported.schedule.alphas_cumprod, direct.schedule.alphas_cumprod)
  assert jax.tree.structure(imported.params) == jax.tree.structure(direct.params)
  jax.tree.map(np.testing.assert_array_equal, imported.params, direct.params)
  capsys.readouterr()
  assert cli.main(["import-prior", str(out), "--out", str(tmp_path / "again")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and "already a dcic_jax prior" in err and err.count("\n") == 1
  assert not (tmp_path / "again").exists()
