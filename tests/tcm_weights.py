"""Seeded random weights for the official TCM layout (`jmliu206/LIC_TCM` models/tcm.py), the same
numbers in the fixture script (torch reference) and in the tests (no torch): an N = 128 TCM holds
~76 M parameters (300 MB), so a fixture stores key names, shapes and the small buffers instead.

Every tensor is drawn from `np.random.default_rng([seed, crc32(key)])` (platform-independent), so
each is random and perturbed, also where the official init is zero (relative position tables,
entropy-bottleneck factors), and the distributions keep the network's activations in range:
conv / linear weights N(0, GAIN²/fan_in), biases N(0, 0.02²), LayerNorm scales 1 + N(0, 0.1²),
GDN reparametrised beta ≈ 1, gamma ≈ sqrt(0.1·I) + N(0, 0.01²), the entropy bottleneck
around CompressAI's init, quantiles around (−10, 0, 10); g_a's last layer and the scale nets'
last bias are larger so that y spans several integers and sigma ≈ 5 matches
the spread of y − mu (std ≈ 5), as in a trained model: the entropy model is roughly calibrated.
"""
import math
import zlib

import numpy as np

_EB_SCALE = 10.0 ** (1.0 / 5.0)
Y_GAIN = 25.0  # g_a's last conv: y of ±10 or so, as a trained model's, not all-zero symbols
GAIN = 0.5  # weights N(0, GAIN²/fan_in): with gain 1 the residual stacks grow y to ~250 and x_hat to ~1e14  # CompressAI EntropyBottleneck: init_scale 10, 4 filters


def seeded_tensor(key: str, shape, seed: int) -> np.ndarray:
  shape = tuple(int(s) for s in shape)
  rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
  n = rng.standard_normal(shape)
  if key.startswith("entropy_bottleneck."):
    if ".matrices." in key:
      return (math.log(math.expm1(1.0 / _EB_SCALE / shape[1])) + 0.1 * n).astype(np.float32)
    if ".biases." in key:
      return rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    if ".factors." in key:
      return (0.1 * n).astype(np.float32)
    if key.endswith("quantiles"):
      return (np.array([-10.0, 0.0, 10.0]) + 0.3 * n).astype(np.float32)
  if key.endswith(".beta"):
    return (1.0 + 0.05 * n).astype(np.float32)
  if key.endswith(".gamma"):
    return (np.sqrt(0.1 * np.eye(shape[0])) + 0.01 * n).astype(np.float32)
  if key.endswith("relative_position_params"):
    return (0.02 * n).astype(np.float32)
  if key.endswith(".weight") and len(shape) == 1:  # LayerNorm
    return (1.0 + 0.1 * n).astype(np.float32)
  if key.startswith("cc_scale_transforms.") and key.endswith(".4.bias"):  # sigma ≈ 5, the spread of y − mu
    return (5.0 + 0.3 * n).astype(np.float32)
  if key.endswith(".bias"):
    return (0.02 * n).astype(np.float32)
  fan_in = math.prod(shape[1:])
  gain = Y_GAIN if key == "g_a.9.weight" else GAIN
  return (gain * n / math.sqrt(fan_in)).astype(np.float32)


def seeded_state_dict(keys_shapes, seed: int) -> dict[str, np.ndarray]:
  """{key: float32 array} for [(key, shape), ...]."""
  return {k: seeded_tensor(k, s, seed) for k, s in keys_shapes}


def fixture_state_dict(fixture) -> dict[str, np.ndarray]:
  """The official state dict a `tcm_official_N*.npz` fixture describes: seeded parameters from its
  keys and shapes, its stored buffers."""
  shapes = [tuple(int(v) for v in s.split(",")) for s in fixture["shapes"]]
  sd = seeded_state_dict(zip(fixture["keys"], shapes), int(fixture["seed"]))
  sd.update({k[len("buffer/"):]: fixture[k] for k in fixture if k.startswith("buffer/")})
  return sd
