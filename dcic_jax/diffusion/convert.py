"""Import PyTorch diffusion-prior checkpoints into `UNet` parameters.

Two layouts: diffusers `UNet2DModel` (the DDPM ports of Ho et al. 2020 and most community
priors; a folder with `config.json` + `diffusion_pytorch_model.safetensors` or `.bin`) and
guided-diffusion `UNetModel` (Dhariwal & Nichol 2021 ADM / Nichol & Dhariwal 2021; the `.pt`
files used by DPS and by Xu et al. 2024's idempotence decoder). Both are the same network as
`unet.UNet` up to names and array layouts, so conversion is renaming + transposing:
conv OIHW → HWIO, linear OI → IO, and ADM's per-head interleaved qkv → our (3, heads, dim) order.

The structure (channels, levels, attention levels, scale-shift, up/down blocks, learned σ) is read
from the state dict; what a state dict does not record (attention heads, and for ADM the
attention order) comes from the model's flags. Any key or shape that does not fit raises a
`ValueError` naming it. Files are read by `torch_io` (safetensors without torch; `.bin`/`.pt`
need torch).
"""
import json
import os
import re
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.diffusion.unet import UNet, UNetConfig
from dcic_jax.torch_io import conv_kernel, linear_kernel, load_state_dict

StateDict = Mapping[str, np.ndarray]


# ------------------------------------------------------------------------------------------------
# Layouts.
# ------------------------------------------------------------------------------------------------

def detect_layout(state_dict: StateDict) -> str:
  """"diffusers" or "guided_diffusion", from the key names."""
  if "conv_in.weight" in state_dict and any(k.startswith("down_blocks.") for k in state_dict):
    return "diffusers"
  if "input_blocks.0.0.weight" in state_dict and "time_embed.0.weight" in state_dict:
    return "guided_diffusion"
  keys = ", ".join(list(state_dict)[:5])
  raise ValueError(f"unknown checkpoint layout (first keys: {keys}); expected a diffusers "
                   "UNet2DModel or a guided-diffusion UNetModel state dict")


# ------------------------------------------------------------------------------------------------
# Array transforms.
# ------------------------------------------------------------------------------------------------

def _adm_qkv_to_ours(a: np.ndarray, heads: int) -> np.ndarray:
  """Legacy ADM qkv rows are ordered (heads, 3, dim); ours are (3, heads, dim)."""
  rows = a.shape[0]
  return a.reshape(heads, 3, rows // (3 * heads), *a.shape[1:]).swapaxes(0, 1).reshape(a.shape)


class _Builder:
  """Collects our params from a state dict and reports every key that does not fit."""

  def __init__(self, state_dict: StateDict, expected: Mapping[tuple[str, ...], Any]):
    self.sd = state_dict
    self.expected = expected
    self.used: set[str] = set()
    self.params: dict[tuple[str, ...], np.ndarray] = {}

  def get(self, key: str) -> np.ndarray:
    if key not in self.sd:
      raise ValueError(f"checkpoint has no {key!r} (missing key: the configuration does not "
                       "match the checkpoint)")
    self.used.add(key)
    return np.asarray(self.sd[key], np.float32)

  def has(self, key: str) -> bool:
    return key in self.sd

  def put(self, path: tuple[str, ...], value: np.ndarray, key: str) -> None:
    if path not in self.expected:
      raise ValueError(f"checkpoint key {key!r} maps to {'/'.join(path)}, which the "
                       "configured UNet does not have")
    want = tuple(self.expected[path].shape)
    if value.shape != want:
      raise ValueError(f"shape mismatch for checkpoint key {key!r}: {value.shape} after "
                       f"conversion, UNet parameter {'/'.join(path)} expects {want}")
    self.params[path] = value

  def conv(self, module: tuple[str, ...], key: str) -> None:
    self.put(module + ("kernel",), conv_kernel(self.get(key + ".weight")), key + ".weight")
    self.put(module + ("bias",), self.get(key + ".bias"), key + ".bias")

  def dense(self, module: tuple[str, ...], key: str,
            rows: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> None:
    self.put(module + ("kernel",), linear_kernel(rows(self.get(key + ".weight"))), key + ".weight")
    self.put(module + ("bias",), rows(self.get(key + ".bias")), key + ".bias")

  def norm(self, module: tuple[str, ...], key: str) -> None:
    self.put(module + ("scale",), self.get(key + ".weight"), key + ".weight")
    self.put(module + ("bias",), self.get(key + ".bias"), key + ".bias")

  def finish(self) -> Any:
    unused = sorted(set(self.sd) - self.used)
    if unused:
      raise ValueError(f"{len(unused)} checkpoint keys do not fit the configured UNet, e.g. "
                       f"{unused[:5]}")
    missing = sorted("/".join(p) for p in set(self.expected) - set(self.params))
    if missing:
      raise ValueError(f"the checkpoint leaves UNet parameters unset: {missing[:5]}")
    return flax.traverse_util.unflatten_dict(
        {p: jnp.asarray(v) for p, v in self.params.items()})


def _expected_shapes(cfg: UNetConfig) -> dict[tuple[str, ...], Any]:
  size = cfg.size_multiple
  shapes = jax.eval_shape(
      UNet(cfg).init, jax.random.key(0), jnp.zeros((1, size, size, cfg.in_channels)),
      jnp.zeros((1,), jnp.int32))["params"]
  return flax.traverse_util.flatten_dict(shapes)


def _heads(cfg: UNetConfig, channels: int) -> int:
  return channels // cfg.head_channels if cfg.head_channels > 0 else cfg.num_heads


def _block_keys(sd: StateDict, prefix: str) -> list[int]:
  """Sorted integer indexes i of the keys `prefix.i.…`."""
  pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
  return sorted({int(m.group(1)) for k in sd for m in [pattern.match(k)] if m})


def _mult(channels: int, base: int, what: str) -> int:
  if channels % base:
    raise ValueError(f"{what}: {channels} channels is not a multiple of the base {base}")
  return channels // base


# ------------------------------------------------------------------------------------------------
# diffusers UNet2DModel.
# ------------------------------------------------------------------------------------------------

def unet_config_from_diffusers(config: Mapping[str, Any], **overrides) -> UNetConfig:
  """The UNetConfig of a diffusers `UNet2DModel` config.json (as a dict)."""
  c = dict(config)
  def unsupported(what):
    raise ValueError(f"diffusers UNet2DModel with {what} is not supported")
  if c.get("_class_name", "UNet2DModel") != "UNet2DModel":
    unsupported(f"_class_name {c['_class_name']!r} (only UNet2DModel)")
  if c.get("center_input_sample", False):
    unsupported("center_input_sample=True (inputs in [0, 1])")
  if c.get("time_embedding_type", "positional") != "positional":
    unsupported(f"time_embedding_type={c['time_embedding_type']!r}")
  if c.get("class_embed_type") is not None or c.get("num_class_embeds") is not None:
    unsupported("class conditioning")
  if c.get("act_fn", "silu") not in ("silu", "swish"):
    unsupported(f"act_fn={c['act_fn']!r}")
  if c.get("mid_block_type", "UNetMidBlock2D") != "UNetMidBlock2D":
    unsupported(f"mid_block_type={c.get('mid_block_type')!r}")
  boc = list(c.get("block_out_channels", (224, 448, 672, 896)))
  base = boc[0]
  if c.get("time_embedding_dim") not in (None, 4 * base):
    unsupported(f"time_embedding_dim={c['time_embedding_dim']} (only 4·block_out_channels[0])")
  down = list(c.get("down_block_types", ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                                         "AttnDownBlock2D")))
  up = list(c.get("up_block_types", ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D",
                                     "UpBlock2D")))
  plain = {"DownBlock2D": "conv", "ResnetDownsampleBlock2D": "resnet", "UpBlock2D": "conv",
           "ResnetUpsampleBlock2D": "resnet"}
  for name in down + up:
    if name not in plain and name not in ("AttnDownBlock2D", "AttnUpBlock2D"):
      unsupported(f"block type {name!r}")
  attention_levels = tuple(l for l, name in enumerate(down) if name.startswith("Attn"))
  up_attention = tuple(len(up) - 1 - i for i, name in enumerate(up) if name.startswith("Attn"))
  if sorted(up_attention) != list(attention_levels):
    unsupported(f"attention on different levels down ({down}) and up ({up})")
  # Plain blocks fix their resampling; attention blocks follow down/upsample_type.
  down_type, up_type = c.get("downsample_type", "conv"), c.get("upsample_type", "conv")
  kinds = {plain.get(name, down_type) for name in down[:-1]} | \
      {plain.get(name, up_type) for name in up[:-1]}
  if len(kinds) > 1 or not kinds <= {"conv", "resnet"}:
    unsupported(f"resampling that mixes kinds ({down}, {up}, downsample_type={down_type!r}, "
                f"upsample_type={up_type!r})")
  resnet_resample = kinds == {"resnet"}
  shift = c.get("resnet_time_scale_shift", "default")
  if shift not in ("default", "scale_shift"):
    unsupported(f"resnet_time_scale_shift={shift!r}")
  groups = c.get("norm_num_groups", 32)
  attn_groups = c.get("attn_norm_num_groups")
  if attn_groups not in (None, groups):
    unsupported(f"attn_norm_num_groups={attn_groups} != norm_num_groups={groups}")
  head_dim = c.get("attention_head_dim", 8)
  in_channels, out_channels = c.get("in_channels", 3), c.get("out_channels", 3)
  learn_sigma = out_channels == 2 * in_channels
  kwargs = dict(
      in_channels=in_channels,
      out_channels=out_channels // 2 if learn_sigma else out_channels,
      learn_sigma=learn_sigma,
      base_channels=base,
      channel_mult=tuple(_mult(ch, base, "block_out_channels") for ch in boc),
      num_res_blocks=c.get("layers_per_block", 2),
      attention_levels=attention_levels,
      mid_attention=c.get("add_attention", True),
      mid_attention_norm=attn_groups is not None or shift == "default",
      num_heads=1,
      head_channels=-1 if head_dim is None else head_dim,
      dropout=c.get("dropout", 0.0),
      use_scale_shift_norm=shift == "scale_shift",
      resblock_updown=resnet_resample,
      conv_resample=True,
      downsample_padding=c.get("downsample_padding", 1),
      norm_groups=groups,
      norm_eps=c.get("norm_eps", 1e-5),
      flip_sin_to_cos=c.get("flip_sin_to_cos", True),
      freq_shift=float(c.get("freq_shift", 0)),
      mid_scale_factor=float(c.get("mid_block_scale_factor", 1.0)),
  )
  kwargs.update(overrides)
  return UNetConfig(**kwargs)


def diffusers_config_from_state_dict(sd: StateDict, attention_head_dim: int | None = 8
                                     ) -> dict[str, Any]:
  """The structural part of a diffusers config.json, read off the state dict's keys/shapes.

  A state dict does not record `attention_head_dim`, nor `norm_eps`/`freq_shift`/`flip_sin_to_cos`
  (their defaults are assumed): prefer the checkpoint's own config.json.
  """
  levels = _block_keys(sd, "down_blocks")
  boc = [sd[f"down_blocks.{l}.resnets.0.conv1.weight"].shape[0] for l in levels]
  attn = [any(k.startswith(f"down_blocks.{l}.attentions.") for k in sd) for l in levels]
  emb_rows = sd["down_blocks.0.resnets.0.time_emb_proj.weight"].shape[0]
  shift = "scale_shift" if emb_rows == 2 * boc[0] else "default"
  resnet_down = any(re.match(r"down_blocks\.\d+\.downsamplers\.0\.norm1\.", k) for k in sd)
  mid_attn = any(k.startswith("mid_block.attentions.") for k in sd)
  mid_norm = any(k.startswith("mid_block.attentions.0.group_norm.") for k in sd)
  return {
      "in_channels": sd["conv_in.weight"].shape[1],
      "out_channels": sd["conv_out.weight"].shape[0],
      "block_out_channels": boc,
      "layers_per_block": len(_block_keys(sd, "down_blocks.0.resnets")),
      "down_block_types": ["AttnDownBlock2D" if a else
                           "ResnetDownsampleBlock2D" if resnet_down else "DownBlock2D"
                           for a in attn],
      "up_block_types": ["AttnUpBlock2D" if a else
                         "ResnetUpsampleBlock2D" if resnet_down else "UpBlock2D"
                         for a in reversed(attn)],
      "resnet_time_scale_shift": shift,
      "downsample_type": "resnet" if resnet_down else "conv",
      "upsample_type": "resnet" if resnet_down else "conv",
      "add_attention": mid_attn,
      # diffusers drops the mid attention's norm for scale-shift models unless this is set.
      "attn_norm_num_groups": 32 if (mid_norm and shift == "scale_shift") else None,
      "attention_head_dim": attention_head_dim,
  }


def convert_diffusers(sd: StateDict, cfg: UNetConfig) -> Any:
  """Flax params of `UNet(cfg)` from a diffusers `UNet2DModel` state dict."""
  b = _Builder(sd, _expected_shapes(cfg))
  num_levels = cfg.num_levels

  def res(ours: str, key: str) -> None:
    for o, k in (("norm_1", "norm1"), ("norm_2", "norm2")):
      b.norm((ours, o), f"{key}.{k}")
    for o, k in (("conv_1", "conv1"), ("conv_2", "conv2")):
      b.conv((ours, o), f"{key}.{k}")
    b.dense((ours, "emb_proj"), f"{key}.time_emb_proj")
    if b.has(f"{key}.conv_shortcut.weight"):
      b.conv((ours, "skip_proj"), f"{key}.conv_shortcut")

  def attn(ours: str, key: str) -> None:
    old = b.has(f"{key}.query.weight")  # pre-0.15 diffusers names of the same block
    q, k, v, o = ("query", "key", "value", "proj_attn") if old else \
        ("to_q", "to_k", "to_v", "to_out.0")
    if b.has(f"{key}.group_norm.weight"):
      b.norm((ours, "norm"), f"{key}.group_norm")
    for part in ("weight", "bias"):
      stacked = np.concatenate([b.get(f"{key}.{n}.{part}") for n in (q, k, v)], axis=0)
      if part == "weight":
        b.put((ours, "qkv", "kernel"), linear_kernel(stacked), f"{key}.{{{q},{k},{v}}}.weight")
      else:
        b.put((ours, "qkv", "bias"), stacked, f"{key}.{{{q},{k},{v}}}.bias")
    b.dense((ours, "proj_out"), f"{key}.{o}")

  b.dense(("time_embed_0",), "time_embedding.linear_1")
  b.dense(("time_embed_1",), "time_embedding.linear_2")
  b.conv(("conv_in",), "conv_in")
  for l in range(num_levels):
    for j in range(cfg.num_res_blocks):
      res(f"down_{l}_res_{j}", f"down_blocks.{l}.resnets.{j}")
      if l in cfg.attention_levels:
        attn(f"down_{l}_attn_{j}", f"down_blocks.{l}.attentions.{j}")
    if l != num_levels - 1:
      if cfg.resblock_updown:
        res(f"down_{l}_resample", f"down_blocks.{l}.downsamplers.0")
      elif cfg.conv_resample:
        b.conv((f"down_{l}_resample", "conv"), f"down_blocks.{l}.downsamplers.0.conv")
  res("mid_res_0", "mid_block.resnets.0")
  if cfg.mid_attention:
    attn("mid_attn", "mid_block.attentions.0")
  res("mid_res_1", "mid_block.resnets.1")
  for l in range(num_levels):
    u = num_levels - 1 - l
    for j in range(cfg.num_res_blocks + 1):
      res(f"up_{l}_res_{j}", f"up_blocks.{u}.resnets.{j}")
      if l in cfg.attention_levels:
        attn(f"up_{l}_attn_{j}", f"up_blocks.{u}.attentions.{j}")
    if l != 0:
      if cfg.resblock_updown:
        res(f"up_{l}_resample", f"up_blocks.{u}.upsamplers.0")
      elif cfg.conv_resample:
        b.conv((f"up_{l}_resample", "conv"), f"up_blocks.{u}.upsamplers.0.conv")
  b.norm(("norm_out",), "conv_norm_out")
  b.conv(("conv_out",), "conv_out")
  return b.finish()


# ------------------------------------------------------------------------------------------------
# guided-diffusion UNetModel.
# ------------------------------------------------------------------------------------------------

def unet_config_from_guided_diffusion(
    sd: StateDict, *, num_heads: int | None = None, num_head_channels: int = -1,
    use_new_attention_order: bool = False, learn_sigma: bool | None = None,
    **overrides) -> UNetConfig:
  """The UNetConfig of a guided-diffusion state dict, given the flags it does not record.

  `num_heads` / `num_head_channels` are the checkpoint's training flags (e.g. the DPS FFHQ and
  ADM ImageNet-256 models use num_head_channels=64); they must be given when the model has
  attention. `learn_sigma` defaults to "output channels = 2 × input channels".
  `use_new_attention_order` is needed by `convert_guided_diffusion`, not by the config, and is
  accepted here so one set of flags serves both calls.
  """
  del use_new_attention_order
  base = sd["time_embed.0.weight"].shape[1]
  in_channels = sd["input_blocks.0.0.weight"].shape[1]
  out_rows = sd["out.2.weight"].shape[0]
  if learn_sigma is None:
    learn_sigma = out_rows == 2 * in_channels
  outputs = _block_keys(sd, "output_blocks")
  # Output block k holds [res, attn?, upsample?]; the upsample closes a level.
  def layers(k):
    return _block_keys(sd, f"output_blocks.{k}")
  def is_attn(k, m):
    return f"output_blocks.{k}.{m}.qkv.weight" in sd
  closers = [k for k in outputs if any(not is_attn(k, m) for m in layers(k) if m > 0)]
  if closers:
    blocks_per_level = closers[0] + 1
    num_levels = len(outputs) // blocks_per_level
  elif "channel_mult" in overrides:  # parameter-free upsampling leaves no trace in the keys
    num_levels = len(overrides["channel_mult"])
    blocks_per_level = len(outputs) // num_levels
  else:
    raise ValueError("cannot read the number of levels from the state dict (no upsampling "
                     "layer with parameters): pass channel_mult=")
  last = closers[0] if closers else None
  updown = last is not None and \
      f"output_blocks.{last}.{layers(last)[-1]}.in_layers.0.weight" in sd
  channel_mult, attention_levels = [], set()
  for level in range(num_levels):
    k = (num_levels - 1 - level) * blocks_per_level
    channels = sd[f"output_blocks.{k}.0.out_layers.3.weight"].shape[0]
    channel_mult.append(_mult(channels, base, f"output_blocks.{k}"))
    if is_attn(k, 1):
      attention_levels.add(level)
  has_attention = bool(attention_levels) or "middle_block.1.qkv.weight" in sd
  if has_attention and num_heads is None and num_head_channels <= 0:
    raise ValueError("a guided-diffusion state dict does not record the attention heads: pass "
                     "num_heads= or num_head_channels= (the flags the checkpoint was trained "
                     "with)")
  emb_rows = sd["input_blocks.1.0.emb_layers.1.weight"].shape[0]
  kwargs = dict(
      in_channels=in_channels,
      out_channels=out_rows // 2 if learn_sigma else out_rows,
      learn_sigma=learn_sigma,
      base_channels=base,
      channel_mult=tuple(channel_mult),
      num_res_blocks=blocks_per_level - 1,
      attention_levels=tuple(sorted(attention_levels)),
      mid_attention=True,
      num_heads=num_heads or 1,
      head_channels=num_head_channels,
      use_scale_shift_norm=emb_rows == 2 * sd["input_blocks.1.0.in_layers.2.weight"].shape[0],
      resblock_updown=updown,
      conv_resample=updown or (
          last is not None and f"output_blocks.{last}.{layers(last)[-1]}.conv.weight" in sd),
      norm_groups=32,
      norm_eps=1e-5,
  )
  kwargs.update(overrides)
  return UNetConfig(**kwargs)


def convert_guided_diffusion(sd: StateDict, cfg: UNetConfig,
                             use_new_attention_order: bool = False) -> Any:
  """Flax params of `UNet(cfg)` from a guided-diffusion `UNetModel` state dict."""
  b = _Builder(sd, _expected_shapes(cfg))
  num_levels = cfg.num_levels

  def res(ours: str, key: str) -> None:
    b.norm((ours, "norm_1"), f"{key}.in_layers.0")
    b.conv((ours, "conv_1"), f"{key}.in_layers.2")
    b.dense((ours, "emb_proj"), f"{key}.emb_layers.1")
    b.norm((ours, "norm_2"), f"{key}.out_layers.0")
    b.conv((ours, "conv_2"), f"{key}.out_layers.3")
    if b.has(f"{key}.skip_connection.weight"):
      key_w = f"{key}.skip_connection.weight"
      if b.sd[key_w].shape[-1] != 1:
        raise ValueError(f"{key_w}: 3×3 skip convolutions (use_conv=True) are not supported")
      b.conv((ours, "skip_proj"), f"{key}.skip_connection")

  def attn(ours: str, key: str) -> None:
    channels = sd[f"{key}.proj_out.weight"].shape[0]
    heads = _heads(cfg, channels)
    reorder = (lambda a: a) if use_new_attention_order else \
        (lambda a: _adm_qkv_to_ours(a, heads))
    b.norm((ours, "norm"), f"{key}.norm")
    b.dense((ours, "qkv"), f"{key}.qkv", rows=reorder)
    b.dense((ours, "proj_out"), f"{key}.proj_out")

  b.dense(("time_embed_0",), "time_embed.0")
  b.dense(("time_embed_1",), "time_embed.2")
  b.conv(("conv_in",), "input_blocks.0.0")
  k = 1
  for l in range(num_levels):
    for j in range(cfg.num_res_blocks):
      res(f"down_{l}_res_{j}", f"input_blocks.{k}.0")
      if l in cfg.attention_levels:
        attn(f"down_{l}_attn_{j}", f"input_blocks.{k}.1")
      k += 1
    if l != num_levels - 1:
      if cfg.resblock_updown:
        res(f"down_{l}_resample", f"input_blocks.{k}.0")
      elif cfg.conv_resample:
        b.conv((f"down_{l}_resample", "conv"), f"input_blocks.{k}.0.op")
      k += 1
  res("mid_res_0", "middle_block.0")
  attn("mid_attn", "middle_block.1")
  res("mid_res_1", "middle_block.2")
  k = 0
  for l in reversed(range(num_levels)):
    for j in range(cfg.num_res_blocks + 1):
      res(f"up_{l}_res_{j}", f"output_blocks.{k}.0")
      m = 1
      if l in cfg.attention_levels:
        attn(f"up_{l}_attn_{j}", f"output_blocks.{k}.1")
        m = 2
      if l != 0 and j == cfg.num_res_blocks:
        if cfg.resblock_updown:
          res(f"up_{l}_resample", f"output_blocks.{k}.{m}")
        elif cfg.conv_resample:
          b.conv((f"up_{l}_resample", "conv"), f"output_blocks.{k}.{m}.conv")
      k += 1
  b.norm(("norm_out",), "out.0")
  b.conv(("conv_out",), "out.2")
  return b.finish()


# ------------------------------------------------------------------------------------------------
# One call for a file or folder.
# ------------------------------------------------------------------------------------------------

def convert_state_dict(sd: StateDict, cfg: UNetConfig | None = None,
                       diffusers_config: Mapping[str, Any] | None = None,
                       **flags) -> tuple[UNetConfig, Any]:
  """(UNetConfig, params) from a state dict of either layout.

  `cfg` wins if given; else diffusers models use `diffusers_config` (their config.json) or the
  structure read off the keys, and guided-diffusion models need their attention flags in
  `flags` (num_heads / num_head_channels / use_new_attention_order).
  """
  layout = detect_layout(sd)
  if layout == "diffusers":
    if cfg is None:
      dc = diffusers_config if diffusers_config is not None else \
          diffusers_config_from_state_dict(sd, flags.pop("attention_head_dim", 8))
      cfg = unet_config_from_diffusers(dc, **flags)
    return cfg, convert_diffusers(sd, cfg)
  new_order = flags.get("use_new_attention_order", False)
  if cfg is None:
    cfg = unet_config_from_guided_diffusion(sd, **flags)
  return cfg, convert_guided_diffusion(sd, cfg, use_new_attention_order=new_order)


def _weights_and_configs(path: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
  """(weights file, diffusers config.json, diffusers scheduler config) of a file or folder."""
  folder = path
  if os.path.isdir(path):
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
      if os.path.exists(os.path.join(path, name)):
        path = os.path.join(path, name)
        break
    else:
      raise FileNotFoundError(f"no diffusion_pytorch_model.safetensors/.bin in {path}")
  else:
    folder = os.path.dirname(path)
  def read(*names):
    for name in names:
      candidate = os.path.join(folder, name)
      if os.path.isfile(candidate):
        with open(candidate) as f:
          return json.load(f)
    return {}
  return (path, read("config.json"),
          read("scheduler_config.json", os.path.join("..", "scheduler", "scheduler_config.json")))


_GUIDED_FLAG_OF = {"base_channels": "num_channels", "channel_mult": "channel_mult",
                   "num_res_blocks": "num_res_blocks", "attention_levels": "attention_resolutions",
                   "use_scale_shift_norm": "use_scale_shift_norm",
                   "resblock_updown": "resblock_updown", "learn_sigma": "learn_sigma"}


def load_pytorch_prior(path: str, spec: "presets.PriorSpec | None" = None
                       ) -> tuple[UNetConfig, Any, dict[str, Any]]:
  """(UNetConfig, params, flags) from a checkpoint file or a diffusers folder.

  The structure is read off the state dict; what it does not record comes from `spec` (preset,
  sidecar, prior flags) or, for diffusers, the checkpoint's own config.json; anything still
  missing raises a UserError naming it. Flags that contradict the state dict are refused.
  `flags` is what was used, schedule and training resolution included.
  """
  from dcic_jax.diffusion import presets  # pylint: disable=g-import-not-at-top
  from dcic_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  spec = spec or presets.resolve(path)
  weights, own_config, scheduler = _weights_and_configs(spec.path)
  sd = load_state_dict(weights)
  layout = detect_layout(sd)
  if spec.preset and presets.PRESETS[spec.preset].layout != layout:
    raise UserError(f"{weights} is a {layout} checkpoint, but preset {spec.preset} describes a "
                    f"{presets.PRESETS[spec.preset].layout} one")
  if layout == "diffusers":
    flags = spec.merged(own_config)
    if not own_config:
      missing = [k for k in presets.DIFFUSERS_UNRECORDED if k not in flags]
      if missing:
        diffusers = ", ".join(p for p, v in presets.PRESETS.items() if v.layout == "diffusers")
        raise UserError(f"{weights}: a diffusers weights file without its config.json does not "
                        f"record {', '.join(missing)} ({spec.origin}): put the model's "
                        "config.json beside it, name a preset (PRESET:PATH with one of "
                        f"{diffusers}), or pass them with --prior-flags")
    for key, ours in (("beta_schedule", "noise_schedule"),
                      ("num_train_timesteps", "diffusion_steps")):
      if key in scheduler and ours not in flags:
        flags[ours] = scheduler[key]
    if scheduler and (scheduler.get("beta_start", 1e-4), scheduler.get("beta_end", 0.02)) != \
        (1e-4, 0.02) and flags.get("noise_schedule") == "linear":
      raise UserError(f"{weights}: scheduler beta range {scheduler.get('beta_start')}.."
                      f"{scheduler.get('beta_end')} is not DDPM's 1e-4..0.02 (not supported)")
    if not own_config:  # the structure off the keys, the rest from the flags
      flags = {**diffusers_config_from_state_dict(sd, None), **flags}
    try:
      cfg = unet_config_from_diffusers(flags)
    except ValueError as e:
      raise UserError(f"{weights}: {e}") from None
  else:
    flags = presets.guided_flags(spec.merged(), spec.origin)
    cfg = unet_config_from_guided_diffusion(
        sd, num_heads=int(flags.get("num_heads", 1)),
        num_head_channels=int(flags.get("num_head_channels", -1)))
    pinned = presets.guided_structure(flags)
    wrong = [f"{_GUIDED_FLAG_OF[k]}: {getattr(cfg, k)} in the checkpoint, {v} in the flags"
             for k, v in pinned.items() if getattr(cfg, k) != v]
    if wrong:
      raise UserError(f"{weights} does not match its flags ({spec.origin}): {'; '.join(wrong)}")
  presets.check_heads(cfg, presets.attention_channels(cfg))
  if layout == "diffusers":
    return cfg, convert_diffusers(sd, cfg), flags
  return cfg, convert_guided_diffusion(
      sd, cfg, use_new_attention_order=bool(flags["use_new_attention_order"])), flags
