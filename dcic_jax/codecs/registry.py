"""Codec registry: configs and files name a codec by id; every entry obeys the same contract.

Contract (what training, the coder, the bitstream and the DCIC constraints rely on): a Flax
module with methods `g_a`, `g_s`, `h_a`, `h_s -> (mu, sigma)`, `medians`, `aux_loss`,
`hyper_spec` and `__call__(x, rng, train) -> dict` (see `codecs/hyperprior.py`).
"""
import dataclasses
from typing import Callable

import flax.linen as nn

from dcic_jax.codecs.hyperprior import Hyperprior, HyperpriorConfig
from dcic_jax.errors import UserError

_REGISTRY: dict[str, Callable[[HyperpriorConfig], nn.Module]] = {
    # Ballé, Minnen, Singh, Hwang, Johnston 2018: scale hyperprior.
    "bmshj2018": lambda cfg: Hyperprior(cfg, mean_scale=False),
    # Minnen, Ballé, Toderici 2018: mean-scale hyperprior (no context model).
    "mbt2018-mean": lambda cfg: Hyperprior(cfg, mean_scale=True),
}


def codec_ids() -> list[str]:
  return sorted(_REGISTRY)


def make_codec(codec_id: str, **config) -> nn.Module:
  if codec_id not in _REGISTRY:
    raise UserError(f"unknown codec id {codec_id!r}; known: {', '.join(codec_ids())}")
  fields = {f.name for f in dataclasses.fields(HyperpriorConfig)}
  unknown = set(config) - fields
  if unknown:
    raise UserError(f"unknown codec config field(s) {sorted(unknown)} for {codec_id!r}; known: {sorted(fields)}")
  return _REGISTRY[codec_id](HyperpriorConfig(**config))
