"""Import the official TCM checkpoints (Liu, Sun & Katto, CVPR 2023; `jmliu206/LIC_TCM`,
models/tcm.py; published at N = 64 and N = 128, M = 320, six λ each) into `tcm-official`.

    python -m dcic_jax.codecs.tcm_import --weights mse_lambda_0.05.pth.tar --out checkpoints/tcm-n64-q5 [--N 64]

Mapping (every tensor copied exactly): a key's numeric components join the name before them
(`g_a.1.trans_block.mlp.0.weight` -> `g_a_1/trans_block/mlp_0/kernel`, see `tcm_official.py`);
Conv2d weights [out, in, kh, kw] -> [kh, kw, in, out]; Linear weights [out, in] -> [in, out];
LayerNorm weight -> scale; GDN beta / gamma, relative position tables, the entropy bottleneck and
its quantiles copied. The checkpoints wrap the model's dict in "state_dict" (training script)
and may carry DataParallel's `module.` prefix; both are accepted. CompressAI's coding buffers
(CDFs, offsets, scale table) are dropped and rebuilt (`codec.build_tables`); buffers holding
constants our layers hard-code (GDN pedestal and bounds, likelihood and scale bounds, quantile
targets) are checked. Strict both ways: an unknown, missing or misshapen key is one `error:` line
naming it, exit status 2.
"""
import math
import pathlib
import re
import sys

import flax
import jax
import numpy as np

from dcic_jax import torch_io
from dcic_jax.codecs import compressai_import
from dcic_jax.codecs.compressai_import import IncompatibleStateDict
from dcic_jax.errors import UserError

CODEC_ID = "tcm-official"
SIZES = (64, 128)  # the published N
_PEDESTAL = 2.0**-36
_GDN_BUFFER = re.compile(r"\.(beta|gamma)_reparam\.(pedestal|lower_bound\.bound)$")
_EB_FLAX = {"matrices": "matrix", "biases": "bias", "factors": "factor"}


def flax_path(key: str, ndim: int) -> tuple[str, ...]:
  """Canonical official key -> our parameter path (module docstring)."""
  parts = key.split(".")
  if parts[0] == "entropy_bottleneck":
    if parts[1] in _EB_FLAX:
      return ("entropy_bottleneck", f"{_EB_FLAX[parts[1]]}{parts[2]}")
    return tuple(parts)
  path: list[str] = []
  for p in parts:
    if p.isdigit() and path:
      path[-1] += f"_{p}"
    else:
      path.append(p)
  if path[-1] == "weight":
    path[-1] = "kernel" if ndim in (2, 4) else "scale"
  return tuple(path)


def _convert(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  """Layouts: conv and linear kernels transposed; everything else (GDN's [C_out, C_in] gamma too) as is."""
  if path[-1] == "kernel":
    return torch_io.conv_kernel(value) if value.ndim == 4 else torch_io.linear_kernel(value)
  return value


def _constant(key: str):
  """The value our layers hard-code for a dropped buffer; None: any value; KeyError: unknown."""
  hit = _GDN_BUFFER.search(key)
  if hit:
    if hit.group(2) == "pedestal":
      return _PEDESTAL
    return math.sqrt((1e-6 if hit.group(1) == "beta" else 0.0) + _PEDESTAL)
  table = compressai_import._constant_buffers()  # pylint: disable=protected-access
  if key.startswith(("entropy_bottleneck.", "gaussian_conditional.")) and key in table:
    return table[key]
  raise KeyError(key)


def infer_n(sd: dict[str, np.ndarray]) -> int:
  """N from g_a's first conv (3 -> 2N channels)."""
  w = sd.get("g_a.0.conv1.weight")
  if w is None or w.ndim != 4 or w.shape[1] != 3 or w.shape[0] % 2:
    raise IncompatibleStateDict("no key 'g_a.0.conv1.weight' of shape (2N, 3, 3, 3): not an official TCM state dict")
  return int(w.shape[0]) // 2


def _infer_m(sd: dict[str, np.ndarray]) -> int:
  w = sd.get("g_a.9.weight")
  if w is None or w.ndim != 4:
    raise IncompatibleStateDict("no key 'g_a.9.weight' (g_a's last conv, 2N -> M): not an official TCM state dict")
  return int(w.shape[0])


def _our_shapes(config: dict) -> dict[tuple[str, ...], tuple[int, ...]]:
  from dcic_jax.codecs.registry import make_codec
  module = make_codec(CODEC_ID, **config)
  x = jax.ShapeDtypeStruct((1, 256, 256, 3), np.float32)
  tree = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)["params"]
  return {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(tree).items()}


def convert_state_dict(state_dict: dict[str, np.ndarray], n: int | None = None) -> tuple[dict, dict]:
  """Official TCM state dict -> (config kwargs, Flax params) for `make_codec("tcm-official", **config)`.

  `n`: the N the caller expects (refused if the weights say otherwise); None: read from the weights.
  """
  sd: dict[str, np.ndarray] = {}
  given: dict[str, str] = {}
  for key, value in state_dict.items():
    canon = compressai_import._canonical_key(key)  # pylint: disable=protected-access
    if canon in sd:
      raise IncompatibleStateDict(f"key {key!r} duplicates {given[canon]!r}")
    sd[canon], given[canon] = np.asarray(value), key
  n_found, m = infer_n(sd), _infer_m(sd)
  if n is not None and n != n_found:
    raise IncompatibleStateDict(f"--N {n} but the weights hold N={n_found} (g_a.0.conv1.weight)")
  config = dict(N=n_found, M=m)
  shapes = _our_shapes(config)
  flat = {}
  for key, value in sd.items():
    name = given[key]
    try:
      expected = _constant(key)
    except KeyError:
      pass
    else:
      compressai_import._check_constant(name, value, expected)  # pylint: disable=protected-access
      continue
    path = flax_path(key, value.ndim)
    if path not in shapes:
      raise IncompatibleStateDict(f"unexpected key {name!r} in an official TCM state dict (N={n_found}, M={m})")
    if not np.issubdtype(value.dtype, np.floating):
      raise IncompatibleStateDict(f"key {name!r} has dtype {value.dtype}, expected floating point")
    converted = _convert(path, value.astype(np.float32))
    if converted.shape != shapes[path]:
      raise IncompatibleStateDict(f"key {name!r} has shape {tuple(value.shape)}, which does not fit "
                                  f"N={n_found}, M={m} (our {'/'.join(path)} is {shapes[path]})")
    if not np.all(np.isfinite(converted)):
      raise IncompatibleStateDict(f"key {name!r} holds non-finite values")
    flat[path] = converted
  missing = sorted(set(shapes) - set(flat))
  if missing:
    raise IncompatibleStateDict(f"missing {len(missing)} parameter(s) in an official TCM state dict, first "
                                f"{'/'.join(missing[0])}")
  return config, flax.traverse_util.unflatten_dict(flat)


def load_tcm_file(path, n: int | None = None) -> tuple[dict, dict]:
  """(config, params) from an official `.pth.tar` (the `{"state_dict": ...}` wrapper or a bare dict;
  torch reads it) or the same dict as `.safetensors` (read without torch)."""
  what = "reading official TCM weights"
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"no such weights file: {path}")
  try:
    sd = torch_io.load_state_dict(path, wrappers=("state_dict",), strict=True, what=what)
  except ValueError as e:
    raise IncompatibleStateDict(str(e)) from None
  try:
    return convert_state_dict(sd, n)
  except IncompatibleStateDict as e:
    raise IncompatibleStateDict(f"{path}: {e}") from None


def write_export(out_dir, config: dict, params: dict, source: str = "", calibration_images: list | None = None):
  """`compressai_import.save_imported` of the TCM model with its coder (`tcm_codec.TCMCodec`)."""
  from dcic_jax.codecs import tcm_codec
  return compressai_import.save_imported(out_dir, tcm_codec.make_tcm_codec(config, params), "lic_tcm:tcm",
                                         source, calibration_images)


def main(argv=None) -> int:
  from dcic_jax.argtypes import Parser
  from dcic_jax.errors import exit_code
  ap = Parser(prog="python -m dcic_jax.codecs.tcm_import",
              description="Convert an official TCM checkpoint (jmliu206/LIC_TCM) into a dcic_jax codec export.")
  ap.add_argument("--weights", required=True, help="official .pth.tar ({'state_dict': ...}) or bare state dict")
  ap.add_argument("--out", required=True, help="export directory to write (codec.json + state/)")
  ap.add_argument("--N", type=int, choices=SIZES, default=None, help="expected N (default: read from the weights)")

  def run(args):
    config, params = load_tcm_file(args.weights, args.N)
    compressai_import.said_written(args.out, write_export(args.out, config, params,
                                                          source=pathlib.Path(args.weights).name))
  return exit_code(lambda: run(ap.parse_args(argv)))


if __name__ == "__main__":
  sys.exit(main())
