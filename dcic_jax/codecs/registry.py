"""Codec registry: configs and files name a codec by id; every entry obeys the same contract.

Contract (what training, the coder, the bitstream and the DCIC constraints rely on): a Flax
module with methods `g_a`, `g_s`, `h_a`, `h_s`, `medians`, `aux_loss`, `hyper_spec` and
`__call__(x, rng, train) -> dict` (see `codecs/hyperprior.py`); the parameters of h_s under
`h_s_net` (a `HyperSynthesis`, coded by its exact integer twin) and of the z prior under
`entropy_bottleneck`. A codec with a channel-wise autoregressive model of y also has
`slice_spec() -> SliceSpec` and its slice networks under `context` (see `entropy/channelwise.py`);
its `h_s` then returns the hyper features of that model.
"""
import dataclasses
from typing import Callable

import flax.linen as nn

from dcic_jax.codecs.hybrid import HybridTCM
from dcic_jax.codecs.hyperprior import Hyperprior, HyperpriorConfig
from dcic_jax.codecs import tcm_official
from dcic_jax.codecs.transformer import SwinTCharm, TransformerConfig, check_config
from dcic_jax.errors import UserError

# id -> (config dataclass, constructor)
_REGISTRY: dict[str, tuple[type, Callable[..., nn.Module]]] = {
    # Ballé, Minnen, Singh, Hwang, Johnston 2018: scale hyperprior.
    "bmshj2018": (HyperpriorConfig, lambda cfg: Hyperprior(cfg, mean_scale=False)),
    # Minnen, Ballé, Toderici 2018: mean-scale hyperprior (no context model).
    "mbt2018-mean": (HyperpriorConfig, lambda cfg: Hyperprior(cfg, mean_scale=True)),
    # Zhu, Yang, Cohen 2022 (SwinT-ChARM): Swin transforms + Minnen & Singh 2020 channel-wise AR model.
    "swint-charm": (TransformerConfig, SwinTCharm),
    # Liu, Sun, Katto 2023 (TCM): mixed Transformer–CNN transforms + channel-wise AR model.
    "tcm": (TransformerConfig, HybridTCM),
}
# Import-only codecs: built by `make_codec` like the others, but coded by their own `Codec`
# subclass, not by `codec.make_codec_from_params`, so `codec_ids()` (the codecs every generic
# round-trip, fuzz and training path takes) leaves them out.
_IMPORT_ONLY: dict[str, tuple[type, Callable[..., nn.Module]]] = {
    # The official TCM (jmliu206/LIC_TCM models/tcm.py) for its published checkpoints; coded by
    # `codecs/tcm_codec.TCMCodec` (import: `codecs/tcm_import.py`).
    "tcm-official": (tcm_official.TCMOfficialConfig, tcm_official.TCMOfficial),
}


# Codecs coded by a `Codec` subclass of their own: id -> "module:Class", imported when an export of
# that id is loaded (`codec.load`). A name, not an import: those modules build on `codecs/codec.py`.
CODING_CLASSES = {"tcm-official": "dcic_jax.codecs.tcm_codec:TCMCodec"}


def codec_ids() -> list[str]:
  return sorted(_REGISTRY)


def import_only_ids() -> list[str]:
  return sorted(_IMPORT_ONLY)


def config_fields(codec_id: str) -> list[str]:
  """Names of the constructor kwargs `codec_id` accepts (its config dataclass fields)."""
  if codec_id not in _REGISTRY and codec_id not in _IMPORT_ONLY:
    raise UserError(f"unknown codec id {codec_id!r}; known: {', '.join(codec_ids() + import_only_ids())}")
  return [f.name for f in dataclasses.fields({**_REGISTRY, **_IMPORT_ONLY}[codec_id][0])]


def codec_kwargs(config) -> dict:
  """The architecture fields of a config's `codec` block (all but its id)."""
  return {k: v for k, v in config.codec.items() if k != "id"}


def make_codec(codec_id: str, **config) -> nn.Module:
  fields = set(config_fields(codec_id))
  unknown = set(config) - fields
  if unknown:
    raise UserError(f"unknown codec config field(s) {sorted(unknown)} for {codec_id!r}; known: {sorted(fields)}")
  config_cls, build = {**_REGISTRY, **_IMPORT_ONLY}[codec_id]
  cfg = config_cls(**config)
  if config_cls is TransformerConfig:
    try:
      check_config(cfg)
    except ValueError as e:
      raise UserError(f"bad config for {codec_id!r}: {e}") from None
  if config_cls is tcm_official.TCMOfficialConfig:
    try:
      tcm_official.check_config(cfg)
    except ValueError as e:
      raise UserError(f"bad config for {codec_id!r}: {e}") from None
  return build(cfg)
