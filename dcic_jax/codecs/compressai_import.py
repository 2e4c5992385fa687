"""Import CompressAI hyperprior weights into our Flax codecs.

Two architectures, in the layout of CompressAI 1.2.8 (Bégaint et al. 2020, "CompressAI: a
PyTorch library and evaluation platform for end-to-end compression research") and its model zoo:

* `bmshj2018-hyperprior` -> codec "bmshj2018": the scale hyperprior of Ballé, Minnen, Singh,
  Hwang & Johnston 2018, "Variational image compression with a scale hyperprior" (ICLR);
  CompressAI's `ScaleHyperprior`.
* `mbt2018-mean` -> codec "mbt2018-mean": the mean-scale hyperprior of Minnen, Ballé &
  Toderici 2018, "Joint autoregressive and hierarchical priors for learned image compression"
  (NeurIPS), without the context model; CompressAI's `MeanScaleHyperprior`.

Mapping (every tensor is copied exactly, no retraining):

* `Conv2d` weight [out, in, kh, kw] -> Flax kernel [kh, kw, in, out] (both cross-correlate and
  pad k // 2, see `layers.conv`).
* `ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1)` weight [in, out, 5, 5] ->
  `layers.Upsample` (3x3 stride-1 'same' conv to 4·out channels, then depth-to-space). Output
  row o = 2m + a receives input row i through tap t = o + 2 - 2i. A 3x3 conv reads rows
  i = m + d - 1 (d = 0, 1, 2), so phase a needs tap t = a + 4 - 2d: taps 4, 2, 0 for a = 0 and
  (none), 3, 1 for a = 1. Columns likewise; the bias is repeated for the 4 phases. The two
  layers are equal functions, borders included (zero padding on both sides).
* GDN `beta`, `gamma`: the same non-negative reparametrisation, stored values copied.
* EntropyBottleneck `matrices.i` / `biases.i` / `factors.i` (older zoo files: `_matrix{i}`,
  `_bias{i}`, `_factor{i}`) and `quantiles`: same shapes, copied.

CompressAI's coding buffers (CDF tables, offsets, scale table) are dropped: our coder rebuilds
its own tables (`codec.build_tables`) and runs h_s in fixed point, so files are not
bitstream-compatible with CompressAI, only the model is. Buffers holding constants that our
model hard-codes (GDN pedestal and bounds, likelihood bound, scale bound 0.11, quantile targets)
are checked instead: a checkpoint trained with other values would decode differently.

    python -m dcic_jax.codecs.compressai_import --arch mbt2018-mean \\
        --weights mbt2018-mean-3-e9ae7b4f.pth.tar --out checkpoints/mbt2018-mean-q3
"""
import functools
import math
import pathlib
import re
import sys

import flax
import jax
import numpy as np

from dcic_jax import torch_io
from dcic_jax.errors import UserError

ARCHS = {"bmshj2018-hyperprior": "bmshj2018", "mbt2018-mean": "mbt2018-mean"}  # CompressAI name -> our codec id

_PEDESTAL = 2.0**-36          # CompressAI NonNegativeParametrizer: reparam_offset**2
_BETA_MIN = 1e-6
_TAIL_MASS = 1e-9
_LIKELIHOOD_BOUND = 1e-9
_SCALE_BOUND = 0.11


class IncompatibleStateDict(UserError, ValueError):
  """The state dict does not describe the requested architecture (key, shape or constant)."""


# ---- the layout -------------------------------------------------------------------------------
def _layer_map() -> dict[str, tuple[str, str]]:
  """CompressAI module prefix -> (our param path, kind: conv, deconv or gdn); same in both models."""
  m = {}
  for i in range(7):
    if i % 2 == 0:
      m[f"g_a.{i}"] = (f"g_a_layers_{i}", "conv")
      m[f"g_s.{i}"] = (f"g_s_layers_{i}/conv", "deconv")
    else:
      m[f"g_a.{i}"] = (f"g_a_layers_{i}", "gdn")
      m[f"g_s.{i}"] = (f"g_s_layers_{i}", "gdn")
  for j, i in enumerate((0, 2, 4)):  # activations sit at 1 and 3 in both models
    m[f"h_a.{i}"] = (f"h_a_layers_{j}", "conv")
  m["h_s.0"] = ("h_s_net/layer0/conv", "deconv")
  m["h_s.2"] = ("h_s_net/layer1/conv", "deconv")
  m["h_s.4"] = ("h_s_net/layer2", "conv")
  return m


def _constant_buffers() -> dict[str, float | np.ndarray | None]:
  """Buffers we rebuild ourselves: key -> the value our model assumes (None: any value)."""
  out: dict[str, float | np.ndarray | None] = {}
  for t in ("g_a", "g_s"):
    for i in (1, 3, 5):
      for p in ("beta", "gamma"):
        out[f"{t}.{i}.{p}_reparam.pedestal"] = _PEDESTAL
      out[f"{t}.{i}.beta_reparam.lower_bound.bound"] = math.sqrt(_BETA_MIN + _PEDESTAL)
      out[f"{t}.{i}.gamma_reparam.lower_bound.bound"] = math.sqrt(_PEDESTAL)
  t = math.log(2.0 / _TAIL_MASS - 1.0)
  for em in ("entropy_bottleneck", "gaussian_conditional"):
    for b in ("_quantized_cdf", "_offset", "_cdf_length"):
      out[f"{em}.{b}"] = None
    out[f"{em}.likelihood_lower_bound.bound"] = _LIKELIHOOD_BOUND
  out["entropy_bottleneck.target"] = np.array([-t, 0.0, t])
  out["gaussian_conditional.scale_table"] = None
  out["gaussian_conditional.scale_bound"] = _SCALE_BOUND
  out["gaussian_conditional.lower_bound_scale.bound"] = _SCALE_BOUND
  return out


# Entropy-bottleneck names across versions: `matrices.0` (1.2.x modules), `_matrices.0` and
# `_matrix0` (zoo files, before / after `compressai.zoo.pretrained.load_pretrained`).
_EB_KEY = re.compile(r"^entropy_bottleneck\.(?:_?(matrices|biases|factors)\.|_(matrix|bias|factor))(\d+)$")
_EB_PLURAL = {"matrix": "matrices", "bias": "biases", "factor": "factors"}


def _canonical_key(key: str) -> str:
  """One name per tensor: strip DataParallel's `module.`, unify entropy-bottleneck names."""
  if key.startswith("module."):
    key = key[len("module."):]
  hit = _EB_KEY.match(key)
  if hit:
    kind = hit.group(1) or _EB_PLURAL[hit.group(2)]
    return f"entropy_bottleneck.{kind}.{int(hit.group(3))}"
  return key


@functools.lru_cache(maxsize=8)
def _our_shapes(codec_id: str, n: int, m: int) -> dict[str, tuple[int, ...]]:
  """Parameter shapes of our module, traced abstractly (no compilation, no memory)."""
  from dcic_jax.codecs.registry import make_codec
  module = make_codec(codec_id, N=n, M=m, up_kernel=3)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
  tree = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)["params"]
  return {"/".join(k): tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(tree).items()}


def _torch_shape(kind: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  """The CompressAI tensor shape that maps onto a given Flax parameter shape."""
  if kind == "conv_kernel":
    kh, kw, cin, cout = flax_shape
    return (cout, cin, kh, kw)
  if kind == "deconv_kernel":
    _, _, cin, c4 = flax_shape
    return (cin, c4 // 4, 5, 5)
  if kind == "deconv_bias":
    return (flax_shape[0] // 4,)
  return flax_shape


def _plan(arch: str, n: int, m: int) -> dict[str, tuple[str, str, tuple[int, ...]]]:
  """CompressAI parameter key -> (our flat param path, conversion kind, expected torch shape)."""
  shapes = _our_shapes(ARCHS[arch], n, m)
  plan = {}
  for prefix, (path, kind) in _layer_map().items():
    if kind == "gdn":
      items = [("beta", "beta", "copy"), ("gamma", "gamma", "copy")]
    else:
      items = [("weight", "kernel", f"{kind}_kernel"),
               ("bias", "bias", "deconv_bias" if kind == "deconv" else "copy")]
    for src, dst, conv_kind in items:
      p = f"{path}/{dst}"
      plan[f"{prefix}.{src}"] = (p, conv_kind, _torch_shape(conv_kind, shapes[p]))
  for p, shape in shapes.items():
    if p.startswith("entropy_bottleneck/"):
      name = p.split("/", 1)[1]
      hit = re.match(r"^(matrix|bias|factor)(\d+)$", name)
      src = f"entropy_bottleneck.{_EB_PLURAL[hit.group(1)]}.{hit.group(2)}" if hit else f"entropy_bottleneck.{name}"
      plan[src] = (p, "copy", shape)
  covered = {v[0] for v in plan.values()}
  assert covered == set(shapes), f"importer does not cover {sorted(set(shapes) - covered)}"
  return plan


# ---- conversions ------------------------------------------------------------------------------
def deconv_kernel(w_IO55: np.ndarray) -> np.ndarray:
  """ConvTranspose2d(5, stride 2, pad 2, output_pad 1) weight -> sub-pixel 3x3 kernel [3, 3, in, 4·out].

  Output channel (a*2 + b)*out + c (phase a, b; see `layers.depth_to_space`) at conv tap (dh, dw)
  holds transposed-conv tap (a + 4 - 2dh, b + 4 - 2dw); tap index 5 does not exist and is 0.
  """
  cin, cout = w_IO55.shape[:2]
  w = np.pad(w_IO55, ((0, 0), (0, 0), (0, 1), (0, 1)))  # index 5 -> 0
  taps = np.array([[a + 4 - 2 * d for d in range(3)] for a in range(2)])  # [phase, d]
  # k[dh, dw, i, a, b, c] = w[i, c, taps[a, dh], taps[b, dw]]
  k = w[:, :, taps[:, :, None, None], taps[None, None, :, :]]  # [i, c, a, dh, b, dw]
  k = k.transpose(3, 5, 0, 2, 4, 1)  # [dh, dw, i, a, b, c]
  return np.ascontiguousarray(k.reshape(3, 3, cin, 4 * cout))


def deconv_bias(b: np.ndarray) -> np.ndarray:
  return np.tile(b, 4)


_CONVERT = {"conv_kernel": torch_io.conv_kernel, "deconv_kernel": deconv_kernel, "deconv_bias": deconv_bias,
            "copy": lambda a: a}


def _infer_sizes(sd: dict[str, np.ndarray]) -> tuple[int, int]:
  """N = g_a's first conv's outputs, M = g_a's last conv's outputs (CompressAI's own rule)."""
  out = []
  for key in ("g_a.0.weight", "g_a.6.weight"):
    if key not in sd:
      raise IncompatibleStateDict(f"missing key {key!r} (needed to infer N and M)")
    if sd[key].ndim != 4:
      raise IncompatibleStateDict(f"key {key!r} has shape {tuple(sd[key].shape)}, expected a 4-D conv weight")
    out.append(int(sd[key].shape[0]))
  return out[0], out[1]


def _check_constant(key: str, value: np.ndarray, expected) -> None:
  """A dropped buffer must hold the constant our model hard-codes (empty: not yet built, fine)."""
  if expected is None or value.size == 0:
    return
  exp = np.asarray(expected, np.float64)
  if value.size != exp.size:
    raise IncompatibleStateDict(f"buffer {key!r} has shape {tuple(value.shape)}, expected {exp.size} value(s)")
  if not np.allclose(value.astype(np.float64).ravel(), exp.ravel(), rtol=1e-5, atol=0.0):
    raise IncompatibleStateDict(f"buffer {key!r} = {value.ravel().tolist()} but our codecs fix it at "
                                f"{exp.ravel().tolist()} (not trained with CompressAI's defaults)")


def convert_state_dict(arch: str, state_dict: dict[str, np.ndarray]) -> tuple[dict, dict]:
  """CompressAI state dict -> (codec config kwargs, Flax params tree) for `make_codec(ARCHS[arch], **config)`.

  Strict both ways (every parameter used, every key known, every shape exact) so that a
  wrong architecture or quality level fails here, naming the key, instead of decoding garbage.
  """
  if arch not in ARCHS:
    raise IncompatibleStateDict(f"unknown CompressAI architecture {arch!r}; supported: {', '.join(ARCHS)}")
  sd: dict[str, np.ndarray] = {}
  given: dict[str, str] = {}  # canonical -> the caller's name, for error messages
  for key, value in state_dict.items():
    canon = _canonical_key(key)
    if canon in sd:
      raise IncompatibleStateDict(f"key {key!r} duplicates {given[canon]!r}")
    sd[canon], given[canon] = np.asarray(value), key
  n, m = _infer_sizes(sd)
  plan = _plan(arch, n, m)
  constants = _constant_buffers()
  flat = {}
  for key, value in sd.items():
    name = given[key]
    if key in constants:
      _check_constant(name, value, constants[key])
      continue
    if key not in plan:
      raise IncompatibleStateDict(f"unexpected key {name!r} in a {arch} state dict (N={n}, M={m})")
    path, kind, shape = plan[key]
    if tuple(value.shape) != shape:
      raise IncompatibleStateDict(f"key {name!r} has shape {tuple(value.shape)}, expected {shape} for {arch} "
                                  f"with N={n}, M={m}")
    if not np.issubdtype(value.dtype, np.floating):
      raise IncompatibleStateDict(f"key {name!r} has dtype {value.dtype}, expected floating point")
    value = value.astype(np.float32)
    if not np.all(np.isfinite(value)):
      raise IncompatibleStateDict(f"key {name!r} holds non-finite values")
    flat[tuple(path.split("/"))] = _CONVERT[kind](value)
  missing = [k for k, (path, _, _) in plan.items() if tuple(path.split("/")) not in flat]
  if missing:
    raise IncompatibleStateDict(f"missing key {missing[0]!r} in a {arch} state dict"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
  return dict(N=n, M=m, up_kernel=3), flax.traverse_util.unflatten_dict(flat)


# ---- files ------------------------------------------------------------------------------------
def load_compressai_file(path, arch: str) -> tuple[dict, dict]:
  """(config, params) from a CompressAI `.pth` / `.pth.tar` (zoo file or training checkpoint)."""
  what = "reading CompressAI weights"
  torch_io.import_torch(what)   # before the path check: without torch no file can be read
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"no such weights file: {path}")
  try:   # CompressAI's examples/train.py checkpoints wrap the model's dict in "state_dict"
    sd = torch_io.load_state_dict(path, wrappers=("state_dict",), strict=True, what=what)
  except ValueError as e:
    raise IncompatibleStateDict(str(e)) from None
  try:
    return convert_state_dict(arch, sd)
  except IncompatibleStateDict as e:
    raise IncompatibleStateDict(f"{path}: {e}") from None


def write_export(out_dir, arch: str, config: dict, params: dict, source: str = "",
                 calibration_images: list | None = None):
  """`save_imported` of the CompressAI model `arch` (tables from its params)."""
  from dcic_jax.codecs import codec as codec_lib
  codec = codec_lib.make_codec_from_params(ARCHS[arch], config, params)
  return save_imported(out_dir, codec, f"compressai:{arch}", source, calibration_images)


def save_imported(out_dir, codec, origin: str, source: str = "", calibration_images: list | None = None):
  """Export directory of an imported codec (every importer's): its tables, its DCIC calibration
  (`dcic.calibrate`, on `calibration_images` or the shipped crops), kernels kept float32 (an
  import is the reference model).

  The export is read back and must reproduce the imported model's fingerprint; otherwise it is
  removed again rather than left on disk as a "damaged" checkpoint.
  """
  import shutil
  from dcic_jax import checkpointing
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.dcic import calibrate
  meta = dict(source=origin, weights=str(source),
              dcic=calibrate.calibrate_codec(codec, calibration_images))
  checkpointing.save_export(out_dir, codec.codec_id, dict(codec.config), codec.params, codec.tables,
                            meta, codec.fingerprint.hex())
  try:
    codec_lib.load(out_dir)
  except UserError as e:
    shutil.rmtree(out_dir, ignore_errors=True)
    raise UserError(f"the export does not load back as the imported model ({e})") from None
  return codec


def main(argv=None) -> int:
  from dcic_jax.argtypes import Parser
  from dcic_jax.errors import exit_code
  ap = Parser(prog="python -m dcic_jax.codecs.compressai_import",
                               description="Convert a CompressAI hyperprior checkpoint into a dcic_jax codec export.")
  ap.add_argument("--arch", required=True, choices=sorted(ARCHS))
  ap.add_argument("--weights", required=True, help="CompressAI .pth / .pth.tar state dict")
  ap.add_argument("--out", required=True, help="export directory to write (codec.json + state/)")

  def run(args):
    config, params = load_compressai_file(args.weights, args.arch)
    said_written(args.out, write_export(args.out, args.arch, config, params,
                                        source=pathlib.Path(args.weights).name))
  return exit_code(lambda: run(ap.parse_args(argv)))


def said_written(out, codec) -> None:
  """Every importer's last line: what it wrote."""
  print(f"wrote {out}: codec {codec.codec_id} N={codec.config['N']} M={codec.config['M']} "
        f"fingerprint {codec.fingerprint.hex()}")


if __name__ == "__main__":
  sys.exit(main())
