"""Importing PyTorch priors: diffusers UNet2DModel and guided-diffusion UNetModel.

The fixtures hold randomly initialised PyTorch models (made by
experiments/fixtures/make_diffusion_fixtures.py) and their outputs; no torch needed here.
"""
import json
import pathlib
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcic_jax import torch_io
from dcic_jax.diffusion import convert, unet

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
LAYOUTS = ["diffusers_ddpm", "diffusers_adm", "guided_diffusion_dps", "guided_diffusion_iddpm"]


def _fixture(name):
  f = np.load(FIXTURES / f"diffusion_{name}.npz")
  sd = {k[3:]: f[k].astype(np.float32) for k in f.files if k.startswith("sd/")}
  return sd, json.loads(str(f["config"])), f


def _gd_flags(config):
  return dict(num_heads=config.get("num_heads"),
              num_head_channels=config.get("num_head_channels", -1),
              use_new_attention_order=config.get("use_new_attention_order", False))


def _convert(name):
  sd, config, _ = _fixture(name)
  if name.startswith("diffusers"):
    return convert.convert_state_dict(sd, diffusers_config=config)
  return convert.convert_state_dict(sd, **_gd_flags(config))


@pytest.mark.parametrize("name", LAYOUTS)
def test_matches_the_pytorch_reference(name):
  _, _, f = _fixture(name)
  cfg, params = _convert(name)
  x_BHWC = jnp.asarray(f["x"].transpose(0, 2, 3, 1))
  t = jnp.asarray(f["t"])
  # Compiled without LLVM optimisation: half the compile time here, same numbers to ~1e-7.
  apply = jax.jit(lambda p, x, t: unet.UNet(cfg).apply({"params": p}, x, t)).lower(
      params, x_BHWC, t).compile(compiler_options={"xla_backend_optimization_level": 0})
  eps = apply(params, x_BHWC, t)
  ref = f["out"].transpose(0, 2, 3, 1)[..., :3]  # the ε half of learned-σ models
  assert float(np.abs(np.asarray(eps) - ref).max()) <= 1e-4


def test_configs_read_off_the_state_dicts():
  sd, config, _ = _fixture("diffusers_adm")
  from_json = convert.unet_config_from_diffusers(config)
  from_keys = convert.unet_config_from_diffusers(convert.diffusers_config_from_state_dict(
      sd, config["attention_head_dim"]), mid_scale_factor=config["mid_block_scale_factor"])
  assert from_keys == from_json
  assert from_json.resblock_updown and from_json.use_scale_shift_norm
  assert not from_json.mid_attention_norm and from_json.learn_sigma
  cfg, _ = _convert("guided_diffusion_dps")
  assert (cfg.channel_mult, cfg.num_res_blocks, cfg.attention_levels) == ((1, 2), 1, (1,))
  assert cfg.resblock_updown and cfg.use_scale_shift_norm and cfg.learn_sigma
  assert cfg.head_channels == 16
  cfg, _ = _convert("guided_diffusion_iddpm")
  assert (cfg.num_res_blocks, cfg.num_heads, cfg.use_scale_shift_norm) == (2, 2, False)


def test_errors_name_the_problem():
  sd, config, _ = _fixture("guided_diffusion_dps")
  with pytest.raises(ValueError, match="num_head_channels"):
    convert.convert_state_dict(sd)  # heads are not in a state dict
  bad = dict(sd)
  bad["middle_block.0.in_layers.2.weight"] = bad["middle_block.0.in_layers.2.weight"][:, :-1]
  with pytest.raises(ValueError, match=r"middle_block\.0\.in_layers\.2\.weight"):
    convert.convert_state_dict(bad, **_gd_flags(config))
  extra = dict(sd, **{"label_emb.weight": np.zeros((10, 128), np.float32)})
  with pytest.raises(ValueError, match="label_emb.weight"):
    convert.convert_state_dict(extra, **_gd_flags(config))
  with pytest.raises(ValueError, match="unknown checkpoint layout"):
    convert.detect_layout({"encoder.weight": np.zeros(3)})
  with pytest.raises(ValueError, match="class conditioning"):
    convert.unet_config_from_diffusers({"num_class_embeds": 10})


def _write_safetensors(path, tensors):
  """A minimal safetensors writer (the format: u64 header size, JSON header, raw bytes)."""
  header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name, (dtype, array) in tensors.items():
    blob = array.tobytes()
    header[name] = {"dtype": dtype, "shape": list(array.shape),
                    "data_offsets": [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
  raw = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def test_safetensors_reader_and_diffusers_folder(tmp_path):
  rng = np.random.default_rng(0)
  a32 = rng.standard_normal((3, 4)).astype(np.float32)
  bf16 = (a32.view(np.uint32) >> 16).astype(np.uint16)  # truncated to bfloat16
  _write_safetensors(tmp_path / "t.safetensors", {
      "a": ("F32", a32), "h": ("F16", a32.astype(np.float16)), "b": ("BF16", bf16)})
  got = torch_io.read_safetensors(str(tmp_path / "t.safetensors"))
  np.testing.assert_array_equal(got["a"], a32)
  np.testing.assert_array_equal(got["h"], a32.astype(np.float16))
  np.testing.assert_array_equal(got["b"], (bf16.astype(np.uint32) << 16).view(np.float32))
  assert np.abs(got["b"] - a32).max() < 0.02 * np.abs(a32).max()
  (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 16)
  with pytest.raises(ValueError, match="not a safetensors file"):
    torch_io.read_safetensors(str(tmp_path / "bad.safetensors"))

  # A diffusers model folder: config.json + diffusion_pytorch_model.safetensors.
  sd, config, _ = _fixture("diffusers_ddpm")
  folder = tmp_path / "ddpm"
  folder.mkdir()
  (folder / "config.json").write_text(json.dumps(config))
  _write_safetensors(folder / "diffusion_pytorch_model.safetensors",
                     {k: ("F32", v) for k, v in sd.items()})
  cfg, params, _ = convert.load_pytorch_prior(str(folder))
  want_cfg, want = _convert("diffusers_ddpm")
  assert cfg == want_cfg and not cfg.flip_sin_to_cos and cfg.freq_shift == 1
  jax.tree.map(np.testing.assert_array_equal, params, want)


def test_torch_files_need_torch_and_say_so(tmp_path):
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    pytest.skip("torch is installed")
  except ImportError:
    pass
  path = tmp_path / "model.pt"
  path.write_bytes(b"")
  with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
    torch_io.load_state_dict(str(path))
