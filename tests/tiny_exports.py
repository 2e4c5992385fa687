"""Randomly initialised codec exports for the tests (the shipped N=48 codecs compile slowly at the
tests' XLA optimisation level). No import-time side effects, so the multi-host worker can use it."""
import pathlib


def export_random_codec(path, codec_id: str = "bmshj2018", seed: int = 0, N: int = 16,
                        M: int = 24) -> pathlib.Path:
  """Write an export directory of a random `codec_id` codec at `path`; returns the path."""
  import jax
  import numpy as np
  from configs import base
  from dcic_jax.train import export_trained
  from dcic_jax.codecs.registry import make_codec
  config = base.get_config()
  config.codec.id, config.codec.N, config.codec.M = codec_id, N, M
  module = make_codec(codec_id, N=N, M=M)
  params = jax.jit(module.init)(jax.random.key(seed), np.zeros((1, 64, 64, 3), np.float32))
  # Calibrated on one small crop (the default, the three shipped crops, costs ~4 s more per export).
  crop = np.asarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3)), np.uint8)
  export_trained(config, params["params"], path, calibration_images=[crop])
  return pathlib.Path(path)
