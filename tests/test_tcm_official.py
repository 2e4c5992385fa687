"""The official TCM import (`codecs/tcm_official.py`, `codecs/tcm_import.py`, `codecs/tcm_codec.py`)
against fixtures made by the official code (experiments/fixtures/make_tcm_fixtures.py: jmliu206/LIC_TCM
models/tcm.py at N = 64 and N = 128, M = 320, every parameter seeded, one 256×256 image).

Each part is checked at the official code's own inputs (g_a at the image, h_a at its y, the slice
networks at its z_hat and decoded slices, g_s at its y_hat), so a rounding that lands on the other
side of .5 in one place cannot hide or fake an error elsewhere; the free-running forward and our
coder (`TCMCodec`, integer entropy networks: tests/test_tcm_integer.py) then report how many y
symbols round differently from the official `compress`.
"""
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tcm_weights
from dcic_jax.codecs import tcm_codec, tcm_import
from dcic_jax.codecs.compressai_import import IncompatibleStateDict
from dcic_jax.codecs.registry import make_codec
from dcic_jax.entropy.models import gaussian_likelihood

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TOL = 1e-4


@functools.cache
def _fixture(n: int):
  return dict(np.load(FIXTURES / f"tcm_official_N{n}.npz"))


@functools.cache
def _imported(n: int):
  f = _fixture(n)
  return tcm_import.convert_state_dict(tcm_weights.fixture_state_dict(f), n)


def _rel(ours, theirs) -> float:
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def _teacher_forced(module, params, f):
  """Our numbers at the official inputs (module docstring), NHWC, batch 1."""
  def run(m, x, y, y_hat_official):
    z = m.h_a(y)
    z_hat = jnp.round(z - m.medians()) + m.medians()
    mean_feat, scale_feat = m.h_s(z_hat)
    cs = m.tcm.M // m.tcm.num_slices
    support = [y_hat_official[..., i * cs:(i + 1) * cs] for i in range(m.tcm.num_slices)]
    means, scales = [], []
    for i in range(m.tcm.num_slices):
      mu, sigma, _ = m.slice_params(i, mean_feat, scale_feat, support[:i])
      means.append(mu)
      scales.append(sigma)
    return dict(y=m.g_a(x), z=z, means=jnp.concatenate(means, -1), scales=jnp.concatenate(scales, -1),
                z_likelihoods=m.entropy_bottleneck(z_hat), x_hat=m.g_s(y_hat_official))
  x = jnp.asarray(f["image"][None], jnp.float32) / 255.0
  out = jax.jit(lambda p, *a: module.apply({"params": p}, *a, method=run))(
      params, x, jnp.asarray(f["y"][None]), jnp.asarray(f["y_hat"][None]))
  out = {k: np.asarray(v)[0] for k, v in out.items()}
  sym = f["symbols"].astype(np.float32)
  out["y_likelihoods"] = np.asarray(gaussian_likelihood(sym + out["means"], out["means"], out["scales"]))
  return out


@pytest.mark.parametrize("n", [64, 128])
def test_every_part_matches_the_official_code(n):
  f = _fixture(n)
  config, params = _imported(n)
  assert config == dict(N=n, M=320)
  ours = _teacher_forced(make_codec("tcm-official", **config), params, f)
  errors = {k: _rel(ours[k], f[k]) for k in ("y", "z", "means", "scales", "y_likelihoods", "z_likelihoods", "x_hat")}
  print(f"N={n} max relative error: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
  assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("n", [64, 128])
def test_free_running_forward_rounds_like_the_official_compress(n):
  """Our own forward (no official inputs): the fraction of y symbols round(y − mu) that differ."""
  f = _fixture(n)
  config, params = _imported(n)
  m = make_codec("tcm-official", **config)
  out = jax.jit(lambda p, x: m.apply({"params": p}, x))(params, jnp.asarray(f["image"][None], jnp.float32) / 255.0)
  sym = np.round(np.asarray(out["y"])[0] - np.asarray(out["means"])[0])
  frac = float(np.mean(sym != f["symbols"]))
  print(f"N={n}: {frac:.2e} of {sym.size} y symbols round differently from the official compress")
  assert frac < 1e-4


def test_strict_keys_and_shapes():
  sd = tcm_weights.fixture_state_dict(_fixture(64))
  with pytest.raises(IncompatibleStateDict, match="missing 1 parameter"):
    tcm_import.convert_state_dict({k: v for k, v in sd.items() if k != "g_s.2.conv1_2.bias"})
  with pytest.raises(IncompatibleStateDict, match="unexpected key 'g_s.99.weight'"):
    tcm_import.convert_state_dict({**sd, "g_s.99.weight": np.zeros((3, 3, 1, 1), np.float32)})
  bad = dict(sd)
  bad["atten_mean.2.0.in_conv.weight"] = np.zeros((128, 400, 1, 1), np.float32)
  with pytest.raises(IncompatibleStateDict, match="atten_mean.2.0.in_conv.weight"):
    tcm_import.convert_state_dict(bad)
  with pytest.raises(IncompatibleStateDict, match="--N 128 but the weights hold N=64"):
    tcm_import.convert_state_dict(sd, 128)
  with pytest.raises(IncompatibleStateDict, match="not an official TCM state dict"):
    tcm_import.convert_state_dict({"g_a.0.weight": np.zeros((128, 3, 5, 5), np.float32)})
  prefixed = {f"module.{k}": v for k, v in sd.items()}  # DataParallel checkpoints
  assert tcm_import.convert_state_dict(prefixed)[0] == dict(N=64, M=320)
  bent = dict(sd)
  bent["g_a.0.gdn.beta_reparam.pedestal"] = np.array(1e-3, np.float32)
  with pytest.raises(IncompatibleStateDict, match="pedestal"):
    tcm_import.convert_state_dict(bent)


def test_cli_wrong_file_is_one_error_line(tmp_path, capsys):
  bogus = tmp_path / "w.pth.tar"
  bogus.write_bytes(b"not a checkpoint")
  assert tcm_import.main(["--weights", str(bogus), "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ")
  assert not (tmp_path / "out").exists()
  # A state dict of another model, as .safetensors (read without torch), through `dcic import-tcm`.
  from dcic_jax import cli
  from test_priors import write_safetensors
  write_safetensors(tmp_path / "other.safetensors", {"g_a.0.weight": np.zeros((8, 3, 5, 5), np.float32)})
  assert cli.main(["import-tcm", "--weights", str(tmp_path / "other.safetensors"), "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "g_a" in err[0]
  assert not (tmp_path / "out").exists()


def test_round_trip_is_bit_exact_and_rounds_like_the_official_code():
  f = _fixture(64)
  config, params = _imported(64)
  codec = tcm_codec.make_tcm_codec(config, params)
  data, z_sym, y_sym = codec.compress_with_symbols(f["image"], seed=3)
  dec = codec.decompress(data)
  assert np.array_equal(dec.y_hat - dec.mu, np.round(dec.y_hat - dec.mu))  # y_hat − mu is the symbol, exactly
  assert np.array_equal((dec.y_hat - dec.mu).astype(np.int64), y_sym)
  again = codec.decompress(data)
  assert np.array_equal(again.y_hat, dec.y_hat) and np.array_equal(again.image, dec.image)
  frac = float(np.mean(y_sym != f["symbols"]))
  ratio = len(data) / float(f["official_bytes"])
  print(f"integer coder: {frac:.2e} of y symbols differ from the official compress; file {len(data)} bytes, "
        f"official strings {int(f['official_bytes'])} bytes (ratio {ratio:.4f})")
  assert frac < 1e-4
  assert abs(ratio - 1.0) < 0.02


def test_export_loads_back_as_the_same_codec(tmp_path, monkeypatch):
  """tables + save_export + codec.load, which builds a TCMCodec for this id (the DCIC calibration itself is stubbed: it runs the
  same compress/decompress as the round trip above, for minutes on this CPU)."""
  from dcic_jax.dcic import calibrate
  monkeypatch.setattr(calibrate, "calibrate_codec", lambda codec, images: {"w_d": 1.0, "stub": True})
  config, params = _imported(64)
  codec = tcm_import.write_export(tmp_path / "tcm", config, params, source="seeded", calibration_images=[None])
  from dcic_jax.codecs import codec as codec_lib
  loaded = codec_lib.load(tmp_path / "tcm")
  assert isinstance(loaded, tcm_codec.TCMCodec) and loaded.fingerprint == codec.fingerprint
  assert loaded.config == dict(N=64, M=320)
