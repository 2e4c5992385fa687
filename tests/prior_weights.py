"""Seeded random weights for a checkpoint layout: the same numbers in the fixture script (torch
reference) and in the tests (no torch), so a fixture stores key names and shapes, not weights.

Every parameter is random, also where the layouts zero-initialise, so every layer matters:
1-D weights (norm scales) 1 + N(0, 0.1²), other 1-D tensors N(0, 0.1²), ≥2-D N(0, 1/fan_in).
"""
import math

import numpy as np


def seeded_state_dict(keys_shapes, seed: int) -> dict[str, np.ndarray]:
  """{key: float32 array} for [(key, shape), ...], drawn in the given order from one seed."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in keys_shapes:
    shape = tuple(int(s) for s in shape)
    draw = rng.standard_normal(shape)
    if len(shape) == 1:
      value = (1.0 if key.endswith("weight") else 0.0) + 0.1 * draw
    else:
      value = draw / math.sqrt(math.prod(shape[1:]))
    out[key] = value.astype(np.float32)
  return out
