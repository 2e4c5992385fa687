"""What a published prior checkpoint needs beyond its weights: named presets, sidecars, flags.

A state dict records shapes, not every training flag: guided-diffusion `.pt` files do not record
their attention heads (nor the QKV split order), a diffusers weights file without its
`config.json` records neither its timestep-embedding convention nor its head size, and neither
records the noise schedule or the training resolution. A wrong guess runs and gives a wrong ε,
so every such flag comes from one of, in increasing precedence:

  1. a preset, named in the spec as `PRESET:PATH` (PRESETS below, the published flag sets),
  2. a sidecar JSON next to the weights, `<weights file>.json` (it may name a "preset" too),
  3. explicit flags: `--prior-flags` / `config.dcic.prior_flags` (a JSON object or a JSON file).

Flags use the upstream code's own vocabulary: guided-diffusion's `script_util` flags
(num_channels, attention_resolutions, num_head_channels, ...) or a diffusers `config.json`,
plus `noise_schedule`, `diffusion_steps` and `image_size` (the training resolution) for both.
What no source gives is refused (`resolve` raises a UserError naming it), never guessed.
"""
import dataclasses
import json
import os
from typing import Any, Mapping

from dcic_jax.errors import UserError

# guided-diffusion flag sets as published (guided-diffusion README, DPS configs/model_config.yaml,
# RePaint confs/*.yml, the Idempotence repo's configs): dropout and use_fp16 do not change ε.
_ADM_256 = dict(
    image_size=256, num_channels=256, num_res_blocks=2, channel_mult="",
    attention_resolutions="32,16,8", num_heads=4, num_head_channels=64,
    use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=False,
    learn_sigma=True, noise_schedule="linear", diffusion_steps=1000)

# diffusers ports of Ho et al.'s CelebA-HQ 256 DDPM (google/ddpm-celebahq-256 and its EMA weights).
_DDPM_CELEBAHQ_256 = {
    "_class_name": "UNet2DModel", "sample_size": 256, "in_channels": 3, "out_channels": 3,
    "block_out_channels": [128, 128, 256, 256, 512, 512], "layers_per_block": 2,
    "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    "attention_head_dim": None, "downsample_padding": 0, "flip_sin_to_cos": False,
    "freq_shift": 1, "mid_block_scale_factor": 1, "norm_eps": 1e-6, "norm_num_groups": 32,
    "resnet_time_scale_shift": "default", "act_fn": "silu", "center_input_sample": False,
    "time_embedding_type": "positional", "add_attention": True,
    "noise_schedule": "linear", "diffusion_steps": 1000}


@dataclasses.dataclass(frozen=True)
class Preset:
  layout: str                  # "guided_diffusion" or "diffusers"
  flags: Mapping[str, Any]     # the upstream code's flags (see the module docstring)
  weights: str                 # the published file this describes, for messages and docs


PRESETS: dict[str, Preset] = {
    "adm-imagenet256": Preset("guided_diffusion", _ADM_256,
                              "256x256_diffusion_uncond.pt (openai/guided-diffusion)"),
    "dps-ffhq256": Preset("guided_diffusion", dict(
        _ADM_256, num_channels=128, num_res_blocks=1, attention_resolutions="16"),
        "ffhq_10m.pt (DPS; the Idempotence decoder's FFHQ prior)"),
    "repaint-celebahq256": Preset("guided_diffusion", _ADM_256,
                                  "celeba256_250000.pt (RePaint)"),
    "ddpm-celebahq256": Preset("diffusers", _DDPM_CELEBAHQ_256,
                               "google/ddpm-celebahq-256 diffusion_pytorch_model.*"),
    "ddpm-ema-celebahq256": Preset("diffusers", _DDPM_CELEBAHQ_256,
                                   "google/ddpm-ema-celebahq-256 diffusion_pytorch_model.*"),
}

# guided-diffusion flags a state dict does not record (the heads change no weight's shape).
GUIDED_UNRECORDED = ("num_head_channels", "num_heads", "use_new_attention_order")
GUIDED_FLAGS = GUIDED_UNRECORDED + (
    "image_size", "num_channels", "num_res_blocks", "channel_mult", "attention_resolutions",
    "use_scale_shift_norm", "resblock_updown", "learn_sigma", "num_heads_upsample", "dropout",
    "use_fp16", "class_cond", "use_checkpoint", "model_path", "timestep_respacing",
    "predict_xstart", "rescale_learned_sigmas", "rescale_timesteps", "use_kl", "sigma_small",
    "noise_schedule", "diffusion_steps", "preset")
# diffusers config.json fields a state dict does not record (shapes are the same either way).
DIFFUSERS_UNRECORDED = ("attention_head_dim", "flip_sin_to_cos", "freq_shift", "norm_eps",
                        "downsample_padding", "mid_block_scale_factor")


@dataclasses.dataclass(frozen=True)
class PriorSpec:
  """A checkpoint path with the flags `resolve` found for it, by precedence."""
  path: str
  preset: str | None
  preset_flags: dict[str, Any]   # lowest precedence (a checkpoint's own config.json beats it)
  flags: dict[str, Any]          # sidecar, then explicit flags (highest)
  origin: str                    # where the flags came from, for messages

  def merged(self, own_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {**self.preset_flags, **(own_config or {}), **self.flags}


def split_preset(spec: str) -> tuple[str | None, str]:
  """"adm-imagenet256:/w/model.pt" → ("adm-imagenet256", "/w/model.pt"); a plain path → (None, path)."""
  name, sep, rest = spec.partition(":")
  if sep and name in PRESETS:
    return name, rest
  if sep and not os.path.exists(spec) and "/" not in name and "\\" not in name and len(name) > 1:
    raise UserError(f"unknown prior preset {name!r}: expected one of {', '.join(PRESETS)} "
                    "(PRESET:PATH), or a path")
  return None, spec


def parse_flags(flags: Any, what: str) -> dict[str, Any]:
  """Flags as given on the command line or in a config: a dict, a JSON object, or a JSON file."""
  if flags is None or flags == "" or flags == {}:
    return {}
  if hasattr(flags, "to_dict"):
    flags = flags.to_dict()
  if isinstance(flags, Mapping):
    return dict(flags)
  text = str(flags)
  if not text.lstrip().startswith("{"):
    if not os.path.isfile(text):
      raise UserError(f"{what}: {text!r} is neither a JSON object nor a JSON file")
    with open(text) as f:
      text = f.read()
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise UserError(f"{what}: not valid JSON ({e})") from None
  if not isinstance(value, dict):
    raise UserError(f"{what}: expected a JSON object of flags, got {type(value).__name__}")
  return value


def sidecar_path(weights: str) -> str:
  return weights.rstrip("/") + ".json"


def resolve(spec: str, flags: Any = None) -> PriorSpec:
  """The checkpoint of `spec` ([PRESET:]PATH) with its preset, sidecar and explicit flags."""
  name, path = split_preset(spec)
  sidecar = sidecar_path(path)
  side = parse_flags(sidecar, f"sidecar {sidecar}") if os.path.isfile(sidecar) else {}
  given = parse_flags(flags, "prior flags")
  for source in (side, given):
    if "preset" in source:
      if source["preset"] not in PRESETS:
        raise UserError(f"unknown prior preset {source['preset']!r}: expected one of "
                        f"{', '.join(PRESETS)}")
      name = name or source["preset"]
  origin = ([f"preset {name}"] if name else []) + ([f"sidecar {sidecar}"] if side else []) + \
      (["prior flags"] if given else [])
  rest = {k: v for k, v in {**side, **given}.items() if k != "preset"}
  return PriorSpec(path, name, dict(PRESETS[name].flags) if name else {}, rest,
                   " + ".join(origin) or "no preset, sidecar or prior flags")


def _ints(text: Any) -> list[int]:
  if isinstance(text, (list, tuple)):
    return [int(v) for v in text]
  return [int(v) for v in str(text).split(",") if v.strip()]


def default_channel_mult(image_size: int) -> tuple[float, ...] | None:
  """guided-diffusion's channel_mult for channel_mult="" at a training resolution (None: none)."""
  return {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4),
          64: (1, 2, 3, 4)}.get(image_size)


def guided_flags(flags: Mapping[str, Any], origin: str) -> dict[str, Any]:
  """Checked guided-diffusion flags; refuses when the unrecorded ones are missing."""
  unknown = sorted(set(flags) - set(GUIDED_FLAGS))
  if unknown:
    raise UserError(f"unknown guided-diffusion flags {unknown} ({origin})")
  heads_given = int(flags.get("num_head_channels", -1)) > 0 or "num_heads" in flags
  missing = ([] if heads_given else ["num_head_channels or num_heads"]) + \
      [k for k in ("use_new_attention_order",) if k not in flags]
  if missing:
    guided = ", ".join(p for p, v in PRESETS.items() if v.layout == "guided_diffusion")
    raise UserError(f"guided-diffusion checkpoint: {' and '.join(missing)} not recorded in the "
                    f"state dict and not given ({origin}); name a preset (PRESET:PATH with one "
                    f"of {guided}), write them to a sidecar <weights>.json, or pass --prior-flags")
  if flags.get("class_cond"):
    raise UserError("class-conditional guided-diffusion models (class_cond) are not supported")
  heads_up = int(flags.get("num_heads_upsample", -1))
  if heads_up not in (-1, int(flags.get("num_heads", heads_up))):
    raise UserError("num_heads_upsample different from num_heads is not supported")
  return dict(flags)


def guided_structure(flags: Mapping[str, Any]) -> dict[str, Any]:
  """The UNetConfig fields that the given guided-diffusion flags pin (as `create_model` builds
  them), to check against what the state dict shows."""
  out = {}
  names = {"num_channels": ("base_channels", int), "num_res_blocks": ("num_res_blocks", int),
           "use_scale_shift_norm": ("use_scale_shift_norm", bool),
           "resblock_updown": ("resblock_updown", bool), "learn_sigma": ("learn_sigma", bool)}
  for flag, (field, kind) in names.items():
    if flag in flags:
      out[field] = kind(flags[flag])
  mult = _ints(flags.get("channel_mult") or "")
  if not mult and "image_size" in flags:
    mult = list(default_channel_mult(int(flags["image_size"])) or ())
  if mult:
    out["channel_mult"] = tuple(mult)
  if "attention_resolutions" in flags and "image_size" in flags and mult:
    ds = {int(flags["image_size"]) // r for r in _ints(flags["attention_resolutions"])}
    out["attention_levels"] = tuple(l for l in range(len(mult)) if 2 ** l in ds)
  return out


def check_heads(cfg, channels_per_level: list[int]) -> None:
  """Refuse head flags that cannot split the attention channels (all that a state dict can show:
  the number of heads does not change any weight's shape, so a wrong but divisible value runs)."""
  for channels in channels_per_level:
    if cfg.head_channels > 0 and channels % cfg.head_channels:
      raise UserError(f"num_head_channels={cfg.head_channels} does not divide the {channels} "
                      "attention channels: wrong head flags for this checkpoint")
    if cfg.head_channels <= 0 and channels % cfg.num_heads:
      raise UserError(f"num_heads={cfg.num_heads} does not divide the {channels} attention "
                      "channels: wrong head flags for this checkpoint")


def attention_channels(cfg) -> list[int]:
  """Channels of every attention block of a UNetConfig (levels with attention, and the middle)."""
  out = [cfg.base_channels * cfg.channel_mult[l] for l in cfg.attention_levels]
  if cfg.mid_attention:
    out.append(cfg.base_channels * cfg.channel_mult[-1])
  return out
