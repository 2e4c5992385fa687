"""CompressAI weights in our codecs: parity with CompressAI 1.2.8 itself, strict key checks, coding.

The references in tests/fixtures/compressai_<arch>.npz come from
experiments/fixtures/make_compressai_fixtures.py (torch + compressai, not needed here): small
perturbed random models (N=16, M=24) run in eval mode on a 128x128 Kodak crop.
"""
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcic_jax.codecs import compressai_import as ci
from dcic_jax.codecs.layers import depth_to_space
from dcic_jax.codecs.registry import make_codec
from dcic_jax.entropy.models import gaussian_likelihood
from dcic_jax.errors import UserError

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
ARCHS = sorted(ci.ARCHS)
TOL = 1e-4
SD = "state_dict."


@functools.lru_cache(maxsize=None)
def fixture(arch: str) -> dict:
  with np.load(FIXTURES / f"compressai_{arch}.npz") as f:
    return {k: f[k] for k in f.files}


def state_dict(arch: str) -> dict:
  d = fixture(arch)
  return {k[len(SD):]: v for k, v in d.items() if k.startswith(SD)}


@functools.lru_cache(maxsize=None)
def ours(arch: str) -> dict:
  """Converted params and every quantity we compare, from one jitted call (compiling dominates)."""
  d = fixture(arch)
  config, params = ci.convert_state_dict(arch, state_dict(arch))
  module = make_codec(ci.ARCHS[arch], **config)

  def run(p, x, y_hat, z_hat):
    ap = lambda *a, method: module.apply({"params": p}, *a, method=method)
    mu, sigma = ap(z_hat, method="h_s")  # at torch's z_hat / y_hat: isolates each part from rounding
    return dict(mu=mu, sigma=sigma,
                lik_z=ap(z_hat, method=lambda m, v: m.entropy_bottleneck(v)),
                lik_y=gaussian_likelihood(y_hat, mu, sigma),
                g_s=ap(y_hat, method="g_s"),
                forward=module.apply({"params": p}, x))  # eval mode: y = g_a(x), z = h_a(y), hard rounding

  out = jax.device_get(jax.jit(run)(params, d["x"], d["y_hat"], d["z_hat"]))
  return dict(config=config, params=params, module=module, **out)


def max_err(a, b) -> float:
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b).max())


# ---- parity --------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_config_is_inferred(arch):
  assert ours(arch)["config"] == dict(N=int(fixture(arch)["N"]), M=int(fixture(arch)["M"]), up_kernel=3)


@pytest.mark.parametrize("arch", ARCHS)
def test_analysis_matches(arch):
  d, o = fixture(arch), ours(arch)
  assert max_err(o["forward"]["y"], d["y"]) <= TOL
  assert max_err(o["forward"]["z"], d["z"]) <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_entropy_models_match(arch):
  """h_s, the factorized prior and the Gaussian conditional, all at torch's rounded latents."""
  d, o = fixture(arch), ours(arch)
  assert max_err(o["sigma"], d["scales"]) <= TOL
  assert max_err(o["mu"], d["means"]) <= TOL
  assert max_err(o["lik_z"], d["lik_z"]) <= TOL
  assert max_err(o["lik_y"], d["lik_y"]) <= TOL
  # The fixture is informative: few likelihoods sit at the 1e-9 floor.
  assert np.mean(d["lik_y"] <= 1.01e-9) < 0.1 and np.mean(d["lik_z"] <= 1.01e-9) < 0.1


@pytest.mark.parametrize("arch", ARCHS)
def test_synthesis_matches(arch):
  d, o = fixture(arch), ours(arch)
  assert max_err(o["g_s"], d["x_hat"]) <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_forward_matches(arch):
  """Full forward with our own rounding: every symbol must agree, so x_hat is compared everywhere.

  Our y and mu differ from torch's by ~1e-6, so a symbol could only flip where y - mu (or
  z - median) lies within ~1e-5 of a half-integer; the fixture has no such tie (checked first),
  hence exact symbol agreement is required rather than a masked comparison.
  """
  d, o = fixture(arch), ours(arch)
  med = d[SD + "entropy_bottleneck.quantiles"][:, 0, 1]
  tie = lambda v: np.abs(np.abs(v - np.floor(v)) - 0.5).min()
  assert tie(d["y"] - d["means"]) > 1e-5 and tie(d["z"] - med) > 1e-5, "regenerate the fixture: rounding tie"
  f = o["forward"]
  np.testing.assert_array_equal(np.round(f["z_hat"] - med), np.round(d["z_hat"] - med))
  np.testing.assert_array_equal(np.round(f["y_hat"] - f["mu"]), np.round(d["y_hat"] - d["means"]))
  assert max_err(f["y_hat"], d["y_hat"]) <= TOL
  assert max_err(f["x_hat"], d["x_hat"]) <= TOL
  assert max_err(f["likelihoods"]["y"], d["lik_y"]) <= TOL
  assert max_err(f["likelihoods"]["z"], d["lik_z"]) <= TOL


def _transposed_conv_reference(x_HWI, w_IO55, b_O):
  """ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1) by its definition (scatter)."""
  h, w, _ = x_HWI.shape
  full = np.zeros((2 * h + 4, 2 * w + 4, w_IO55.shape[1]))  # index o + 2, before cropping padding
  for t in range(5):
    for u in range(5):
      full[t:t + 2 * h:2, u:u + 2 * w:2] += x_HWI @ w_IO55[:, :, t, u]
  return full[2:2 * h + 2, 2:2 * w + 2] + b_O


def test_deconv_is_a_subpixel_conv():
  """The kernel rearrangement alone, against the transposed conv's definition (odd sizes, in != out)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 7, 3))
  w, b = rng.normal(size=(3, 4, 5, 5)), rng.normal(size=(4,))
  k, bias = ci.deconv_kernel(w), ci.deconv_bias(b)
  conv = jax.lax.conv_general_dilated(jnp.asarray(x[None]), jnp.asarray(k), (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=jax.lax.Precision.HIGHEST)
  ours_ = np.asarray(depth_to_space(conv + bias, 2))[0]
  np.testing.assert_allclose(ours_, _transposed_conv_reference(x, w, b), rtol=0, atol=1e-5)


# ---- strictness ----------------------------------------------------------------------------------
def test_old_zoo_names_and_wrappers_import_the_same():
  """Zoo files name the bottleneck `_matrix0`/`_matrices.0`; DataParallel adds `module.`; buffers optional."""
  arch = "mbt2018-mean"
  sd = state_dict(arch)
  renamed = {}
  for k, v in sd.items():
    if k.endswith(("._offset", "._quantized_cdf", "._cdf_length", ".pedestal", ".bound")):
      continue
    k = k.replace("entropy_bottleneck.matrices.", "entropy_bottleneck._matrix")
    k = k.replace("entropy_bottleneck.biases.", "entropy_bottleneck._biases.")
    renamed["module." + k] = v
  _, a = ci.convert_state_dict(arch, sd)
  _, b = ci.convert_state_dict(arch, renamed)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  renamed["module.entropy_bottleneck._biases.0"] = renamed["module.entropy_bottleneck._biases.0"][:, :1]
  with pytest.raises(ValueError, match=r"'module\.entropy_bottleneck\._biases\.0' has shape"):  # the caller's name
    ci.convert_state_dict(arch, renamed)


def test_unknown_key_is_named():
  sd = state_dict("bmshj2018-hyperprior")
  sd["h_s.6.weight"] = np.zeros((3, 3), np.float32)
  with pytest.raises(ValueError, match=r"'h_s\.6\.weight'"):
    ci.convert_state_dict("bmshj2018-hyperprior", sd)


def test_missing_key_is_named():
  sd = state_dict("bmshj2018-hyperprior")
  del sd["g_s.3.gamma"]
  with pytest.raises(ValueError, match=r"missing key 'g_s\.3\.gamma'"):
    ci.convert_state_dict("bmshj2018-hyperprior", sd)


def test_wrong_shape_is_named():
  sd = state_dict("mbt2018-mean")
  sd["g_s.2.weight"] = sd["g_s.2.weight"][:, :-1]
  with pytest.raises(ValueError, match=r"'g_s\.2\.weight' has shape \(16, 15, 5, 5\), expected \(16, 16, 5, 5\)"):
    ci.convert_state_dict("mbt2018-mean", sd)


def test_wrong_architecture_is_refused():
  """bmshj2018's h_s (N -> N -> M) is not mbt2018-mean's (N -> M -> 3M/2 -> 2M)."""
  with pytest.raises(ValueError, match=r"'h_s\.0\.weight' has shape"):
    ci.convert_state_dict("mbt2018-mean", state_dict("bmshj2018-hyperprior"))
  with pytest.raises(ValueError, match="unknown CompressAI architecture"):
    ci.convert_state_dict("cheng2020-anchor", state_dict("mbt2018-mean"))


def test_constants_we_hard_code_are_checked():
  sd = state_dict("mbt2018-mean")
  sd["gaussian_conditional.scale_bound"] = np.array([0.2], np.float32)
  with pytest.raises(ValueError, match=r"'gaussian_conditional\.scale_bound'"):
    ci.convert_state_dict("mbt2018-mean", sd)


def test_loading_pth_without_torch_is_a_one_line_user_error(monkeypatch, tmp_path):
  import sys
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  with pytest.raises(UserError, match=r"pip install torch==2\.13\.0"):
    ci.load_compressai_file(tmp_path / "w.pth.tar", "mbt2018-mean")


# ---- coding --------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_imported_model_codes_bit_exact(arch):
  from dcic_jax.codecs import codec as codec_lib
  d, o = fixture(arch), ours(arch)
  image = np.round(d["x"][0] * 255.0).astype(np.uint8)
  np.testing.assert_array_equal(image.astype(np.float32) / 255.0, d["x"][0])
  codec = codec_lib.make_codec_from_params(ci.ARCHS[arch], o["config"], o["params"])
  data = codec.compress(image)
  (hp, wp), z_sym, y_sym, index = codec.encode_latents(image)
  dec = codec.decompress(data)
  np.testing.assert_array_equal(np.round(dec.z_hat - codec.medians), z_sym)
  np.testing.assert_array_equal(np.round(dec.y_hat - dec.mu), y_sym)
  np.testing.assert_array_equal(dec.scale_index, index)
  assert (hp, wp) == image.shape[:2] and dec.image.shape == image.shape
  # Fixed-point h_s moves mu by ~1e-4, so a rare symbol may differ from CompressAI's float path.
  agree = np.mean(np.round(dec.y_hat - dec.mu) == np.round(d["y_hat"][0] - d["means"][0]))
  assert agree > 0.99
  assert np.abs(dec.x_hat - np.clip(d["x_hat"][0], 0, 1)).mean() < 1e-3
  # Imported upsampling kernels are transposed convs: decoding skips their zero taps, same x_hat.
  assert codec._coding_module.transposed_up and not codec.module.transposed_up
  dense = codec.module.apply({"params": codec.params}, jnp.asarray(dec.y_hat[None]), method="g_s")
  assert max_err(dec.x_hat, np.clip(np.asarray(dense)[0], 0, 1)) <= 1e-5


def test_export_loads_back_exact(tmp_path):
  from dcic_jax.codecs import codec as codec_lib
  o = ours("mbt2018-mean")
  codec = ci.write_export(tmp_path / "exp", "mbt2018-mean", o["config"], o["params"], "fixture")
  assert codec_lib.load(tmp_path / "exp").fingerprint == codec.fingerprint
  # The import is calibrated for the penalty modes like a trained export (the shipped crops).
  import json
  cal = json.loads((tmp_path / "exp" / "codec.json").read_text())["dcic"]
  assert cal["w_d"] == 1.0 and cal["w_p_latent"] > 0 and cal["w_p_reconstruction"] > 0
  assert "over 3 images, seed 0" in cal["method"]
