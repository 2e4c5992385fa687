"""Perceptual metrics with pretrained networks: FID and KID on Inception-v3 pool3, and LPIPS.

* FID: Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter, "GANs trained by a two time-scale update
  rule converge to a local Nash equilibrium", NeurIPS 2017. The squared Fréchet (W2) distance
  between Gaussians fitted to the pool3 features of the FID Inception (`inception.py`), with
  pytorch-fid's preprocessing: [0, 1] images, bilinear resize to 299 (align_corners=False), then
  [-1, 1]. Means and covariances (ddof 1, as `np.cov`) are accumulated in float64 by a streaming
  `FeatureStats`. The trace term uses symmetric eigendecompositions (tr √(Σ₁^½ Σ₂ Σ₁^½)), equal to
  pytorch-fid's tr √(Σ₁Σ₂) but fast for d = 2048 and exact for the singular covariances of small
  sets; `swd.w2_gaussian` gives the same number through two `sqrtm` calls, minutes at d = 2048.
* KID: Bińkowski, Sutherland, Arbel, Gretton, "Demystifying MMD GANs", ICLR 2018. The unbiased MMD²
  with the kernel k(x, y) = (x·y/d + 1)³, averaged over random subsets (defaults of clean-fid and
  torch-fidelity: 100 subsets of 1000, capped here to the smaller set). Subsets are drawn exactly
  as torch-fidelity does (`np.random.RandomState(seed)`, set a then set b, without replacement),
  so the same seed gives its numbers; the seed has no default.
* LPIPS: Zhang et al., CVPR 2018, the `lpips` package v0.1 (`lpips.py`), on [-1, 1] inputs.

Patch protocol for small test sets. FID needs thousands of samples; a test set of 24 Kodak images
has 24. Following Mentzer et al., "High-fidelity generative image compression" (HiFiC), NeurIPS
2020, and Xu et al., "Idempotence and perceptual image compression", ICLR 2024, both sets are cut
into non-overlapping P×P patches on the same grid (row-major from the top-left corner; a remainder
narrower than P at the right/bottom edge is dropped) and FID/KID are computed between the two patch
sets. Xu et al. use P = 64 with one grid (`image_patches(..., 64)`); HiFiC uses P = 256 and adds a
second grid shifted by P/2 in both directions (`shifted=True`). Each patch is then resized to 299
like any FID input, so a 64×64 patch is upsampled about 4.7×: the numbers are only comparable
between runs with the same P.

Weights cannot be downloaded on this machine: they load from user paths (`config.metrics.*_path`),
either as the PyTorch files or as .npz files of their state dicts, and a missing file raises a
`UserError` that says where to get it. `python -m dcic_jax.metrics.perceptual convert-inception
IN.pth OUT.npz` and `convert-lpips HEADS.pth BACKBONE.pth OUT.npz` make those .npz files (torch is
needed for that step only). tests/test_perceptual.py pins every network against pytorch-fid and
lpips on randomly initialised weights (fixtures: experiments/fixtures/make_perceptual_fixtures.py).
"""

import dataclasses
import functools
import io
import os
import re
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax import torch_io
from dcic_jax.argtypes import Parser
from dcic_jax.errors import UserError, exit_code
from dcic_jax.metrics import inception
from dcic_jax.metrics import lpips as lpips_lib

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
LPIPS_HEADS_URL = ("https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/"
                   "v0.1/{net}.pth")
TORCHVISION_URLS = {"alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth"}

INCEPTION_HINT = (f"download pt_inception-2015-12-05-6726825d.pth from {FID_WEIGHTS_URL} and set "
                  "config.metrics.inception_path (or --inception) to it")
LPIPS_HINT = (f"get the lpips v0.1 heads ({LPIPS_HEADS_URL.format(net='{alex,vgg}')}) and the "
              f"torchvision backbone ({TORCHVISION_URLS['alex']} or {TORCHVISION_URLS['vgg']}), "
              "merge them with `python -m dcic_jax.metrics.perceptual convert-lpips HEADS.pth "
              "BACKBONE.pth OUT.npz` and set config.metrics.lpips_path (or --lpips) to OUT.npz")


# --------------------------------------------------------------------------------------------------
# State dicts: reading, random ones for tests, and mapping onto the Flax variables.
# --------------------------------------------------------------------------------------------------


def read_state_dict(path, what, hint):
  """A .npz of a state dict, or a PyTorch file (.pth/.pt/.bin, needs torch), as numpy arrays."""
  path = os.fspath(path)
  if not path:
    raise UserError(f"{what} weights are not set: {hint}")
  if not os.path.isfile(path):
    raise UserError(f"{what} weights not found: {path}: {hint}")
  try:
    if path.endswith(".npz"):
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
    from dcic_jax.torch_io import load_state_dict  # pylint: disable=g-import-not-at-top
    return load_state_dict(path)
  except ImportError:
    raise UserError(f"{path}: reading PyTorch files needs torch; convert it to .npz where torch is "
                    "installed (python -m dcic_jax.metrics.perceptual --help)") from None
  except Exception as e:  # pylint: disable=broad-except  (zip, pickle and torch errors alike)
    raise UserError(f"{path}: cannot read {what} weights ({type(e).__name__}: {e})") from None


def random_state_dict(shapes, seed):
  """Reproducible random weights for a PyTorch state-dict layout, from numpy alone.

  Used by the parity fixtures: the fixture script loads these weights into the PyTorch reference
  and stores only the key order, shapes, seed, inputs and outputs; the tests rebuild the same
  weights without torch. `np.random.RandomState` streams are frozen across numpy versions. Scales
  keep activations near unit size through deep stacks: He-normal convolutions, batch-norm
  statistics near the identity, non-negative single-output 1×1 heads (as trained LPIPS heads are).
  """
  rng = np.random.RandomState(seed)
  out = {}
  for key, shape in shapes.items():
    key, shape = str(key), tuple(int(s) for s in shape)  # numpy str keys would pickle as objects
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
      a = np.zeros(shape, np.int64)
    elif leaf == "running_mean":
      a = 0.1 * rng.standard_normal(shape)
    elif leaf == "running_var":
      a = rng.uniform(0.5, 1.5, shape)
    elif leaf == "bias":
      a = rng.uniform(-0.1, 0.1, shape)
    elif len(shape) == 1:  # batch-norm scale
      a = rng.uniform(0.5, 1.5, shape)
    else:
      a = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
      if shape[0] == 1:
        a = np.abs(a)
    out[key] = a if a.dtype == np.int64 else a.astype(np.float32)
  return out


def _conv_kernel(w_OxIxHxW):
  return torch_io.conv_kernel(np.asarray(w_OxIxHxW, np.float32))


def _check_variables(got, expected_shapes, what, unexpected):
  """Every variable present with the right shape, nothing left over, or a ValueError naming it."""
  flat = {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(got).items()}
  missing = sorted(set(expected_shapes) - set(flat))
  extra = sorted(set(flat) - set(expected_shapes)) + list(unexpected)
  wrong = [f"{k} {flat[k].shape} != {expected_shapes[k]}" for k in sorted(flat)
           if k in expected_shapes and flat[k].shape != expected_shapes[k]]
  for problem, names in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
    if names:
      more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
      raise ValueError(f"not a {what} state dict: {problem}: {', '.join(names[:3])}{more}")


def _shapes(module, *inputs):
  abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
  return {"/".join(k): tuple(v.shape)
          for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract)).items()}


@functools.lru_cache(maxsize=None)
def _inception_shapes():
  return _shapes(inception.InceptionV3(), jnp.zeros((1, 75, 75, 3)))


@functools.lru_cache(maxsize=None)
def _lpips_shapes(net):
  x = jnp.zeros((1, 64, 64, 3))
  return _shapes(lpips_lib.LPIPS(net), x, x)


def inception_variables(state_dict):
  """pytorch-fid / torchvision `Inception3` state dict -> {"params", "batch_stats"} of InceptionV3.

  `Mixed_5b.branch1x1.conv.weight` becomes params/Mixed_5b/branch1x1/conv/kernel (OIHW -> HWIO),
  `*.bn.{weight,bias}` the batch norm's scale/bias and `*.bn.running_{mean,var}` its batch_stats.
  The classifier (`fc.*`, `AuxLogits.*`) and `num_batches_tracked` are not used.
  """
  params, stats, unexpected = {}, {}, []
  for key, value in state_dict.items():
    *path, layer, leaf = key.split(".")
    if key.startswith(("fc.", "AuxLogits.")) or leaf == "num_batches_tracked":
      continue
    if (layer, leaf) == ("conv", "weight"):
      tree, name, value = params, "kernel", _conv_kernel(value)
    elif layer == "bn" and leaf in ("weight", "bias"):
      tree, name = params, {"weight": "scale", "bias": "bias"}[leaf]
    elif layer == "bn" and leaf in ("running_mean", "running_var"):
      tree, name = stats, leaf[len("running_"):]
    else:
      unexpected.append(key)
      continue
    node = tree
    for part in (*path, layer):
      node = node.setdefault(part, {})
    node[name] = np.asarray(value, np.float32)
  variables = {"params": params, "batch_stats": stats}
  _check_variables(variables, _inception_shapes(), "FID Inception", unexpected)
  return variables


_BACKBONE_KEY = re.compile(r"^(?:features|net\.slice\d)\.(\d+)\.(weight|bias)$")
_HEAD_KEY = re.compile(r"^(?:lin|lins\.)(\d)\.model\.[01]\.weight$")  # lins.{k}: same modules


def _detect_lpips_net(state_dict):
  """alex or vgg, from the backbone's layer indices or else from the heads' widths."""
  indices = {int(m.group(1)) for m in map(_BACKBONE_KEY.match, state_dict) if m}
  if 2 in indices:
    return "vgg"
  if 3 in indices:
    return "alex"
  lin1 = state_dict.get("lin1.model.1.weight", state_dict.get("lin1.model.0.weight"))
  for net, channels in lpips_lib.CHANNELS.items():
    if lin1 is not None and np.shape(lin1)[1] == channels[1]:
      return net
  raise ValueError("not an LPIPS state dict: neither an AlexNet nor a VGG16 backbone or head")


def lpips_variables(state_dict, net=None):
  """LPIPS weights -> (net, {"params"}) for `lpips.LPIPS(net)`.

  Accepts torchvision `features.{i}.*` backbone keys, the lpips module's `net.slice{k}.{i}.*`
  (same indices) and heads `lin{k}.model.1.weight` (`model.0` without dropout; its alias
  `lins.{k}.*` in a whole-module state dict), in one dict:
  merge the heads file with the backbone file first. The torchvision classifier and the
  ScalingLayer buffers (constants here) are not used. `net` ("alex"/"vgg") is detected if None.
  """
  net = net or _detect_lpips_net(state_dict)
  if net not in lpips_lib.BACKBONES:
    raise ValueError(f"unknown LPIPS backbone {net!r}; expected 'alex' or 'vgg'")
  params, unexpected = {"net": {}}, []
  for key, value in state_dict.items():
    if m := _BACKBONE_KEY.match(key):
      conv = params["net"].setdefault(f"conv{m.group(1)}", {})
      if m.group(2) == "weight":
        conv["kernel"] = _conv_kernel(value)
      else:
        conv["bias"] = np.asarray(value, np.float32)
    elif m := _HEAD_KEY.match(key):
      params[f"lin{m.group(1)}"] = {"kernel": _conv_kernel(value)}
    elif not key.startswith(("classifier.", "scaling_layer.")):
      unexpected.append(key)
  variables = {"params": params}
  _check_variables(variables, _lpips_shapes(net), f"LPIPS-{net}", unexpected)
  return net, variables


def load_inception(path):
  """Variables of the FID Inception from a .pth or .npz state dict; UserError if unusable."""
  state_dict = read_state_dict(path, "FID Inception", INCEPTION_HINT)
  try:
    return inception_variables(state_dict)
  except ValueError as e:
    raise UserError(f"{path}: {e}") from None


def load_lpips(path, net=None):
  """(net, variables) of LPIPS from a merged .npz (or .pth) state dict; UserError if unusable."""
  state_dict = read_state_dict(path, "LPIPS", LPIPS_HINT)
  try:
    return lpips_variables(state_dict, net)
  except ValueError as e:
    raise UserError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------------
# Features and their statistics.
# --------------------------------------------------------------------------------------------------


class InceptionFeatures:
  """pool3 features of uint8 or [0, 1] images, in fixed-size batches (one compilation)."""

  def __init__(self, variables, batch_size=16):
    self.variables = jax.tree.map(jnp.asarray, variables)
    self.batch_size = int(batch_size)

  def __call__(self, images_BxHxWx3, resize=True):
    """[B, 2048] float32; resize=False feeds the images as they are (at least 75×75)."""
    images = np.asarray(images_BxHxWx3)
    out = []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)  # pad the last batch: the network compiles once
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      x = inception.fid_input(jnp.asarray(chunk), resize)
      out.append(np.asarray(inception.pool3(self.variables, x))[:len(chunk) - pad])
    return np.concatenate(out) if out else np.zeros((0, inception.POOL3_DIM), np.float32)


class FeatureStats:
  """Streaming mean and covariance of feature vectors, in float64.

  Batches are merged with Chan et al.'s pairwise update (means and centred scatter matrices), so
  the result equals np.mean / np.cov(ddof=1) of all rows at once, without keeping the rows.
  """

  def __init__(self, dim):
    self.n = 0
    self.mean = np.zeros(dim, np.float64)
    self._scatter = np.zeros((dim, dim), np.float64)

  def update(self, f_NxD):
    f = np.asarray(f_NxD, np.float64)
    if f.ndim != 2 or f.shape[1] != self.mean.shape[0]:
      raise ValueError(f"expected features [N, {self.mean.shape[0]}], got {f.shape}")
    m = f.shape[0]
    if m == 0:
      return self
    mean_b = f.mean(axis=0)
    centred = f - mean_b
    delta = mean_b - self.mean
    total = self.n + m
    self._scatter += centred.T @ centred + np.outer(delta, delta) * (self.n * m / total)
    self.mean = self.mean + delta * (m / total)
    self.n = total
    return self

  @property
  def cov(self):
    if self.n < 2:
      raise ValueError(f"a covariance needs at least 2 samples, got {self.n}")
    return self._scatter / (self.n - 1)


def _psd_sqrt(a):
  """Symmetric square root through eigh (eigenvalues clipped at 0)."""
  lam, v = np.linalg.eigh(0.5 * (a + a.T))
  return (v * np.sqrt(np.clip(lam, 0.0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2):
  """|μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁^½ Σ₂ Σ₁^½), float64 (the FID formula)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
    raise ValueError(f"shapes do not match: mu {mu1.shape}, {mu2.shape}, cov {cov1.shape}, "
                     f"{cov2.shape}")
  root1 = _psd_sqrt(cov1)
  cross = np.linalg.eigvalsh(root1 @ (0.5 * (cov2 + cov2.T)) @ root1)
  tr_sqrt = float(np.sum(np.sqrt(np.clip(cross, 0.0, None))))
  d2 = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt)
  return max(d2, 0.0)  # rounding can leave a tiny negative for equal statistics


def fid(stats_a, stats_b):
  """FID between two `FeatureStats` (of pool3 features)."""
  return frechet_distance(stats_a.mean, stats_a.cov, stats_b.mean, stats_b.cov)


def fid_from_features(features_a, features_b):
  """FID of two feature sets [N_a, D], [N_b, D]: `fid` of their statistics, up to rounding.

  With A, B the centred rows over √(N − 1), Σ_a = AᵀA and Σ_b = BᵀB, so tr √(Σ_a^½ Σ_b Σ_a^½) is
  the nuclear norm of A Bᵀ. When a set has at most D rows (the patch protocol on a small test
  set) that is one SVD of an N_a × N_b matrix instead of two D × D eigendecompositions.
  """
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  stats_a = FeatureStats(a.shape[1]).update(a)
  stats_b = FeatureStats(b.shape[1]).update(b)
  if min(len(a), len(b)) > a.shape[1]:
    return fid(stats_a, stats_b)
  root_a = (a - stats_a.mean) / np.sqrt(len(a) - 1)
  root_b = (b - stats_b.mean) / np.sqrt(len(b) - 1)
  tr_sqrt = float(np.linalg.svd(root_a @ root_b.T, compute_uv=False).sum())
  d2 = float(np.sum((stats_a.mean - stats_b.mean) ** 2) + np.sum(root_a**2) + np.sum(root_b**2)
             - 2.0 * tr_sqrt)
  return max(d2, 0.0)


@dataclasses.dataclass(frozen=True)
class KIDResult:
  mean: float        # KID: mean of the subsets' unbiased MMD²
  std: float         # their standard deviation (ddof 0, as torch-fidelity)
  subset_size: int   # after capping to the smaller set
  num_subsets: int


KID_WHOLE_KERNEL_ROWS = 4096  # up to this many rows per set, kid() builds the kernels once


def _poly_kernel(x, y):
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(k_xx, k_yy, k_xy):
  m = k_xx.shape[0]
  off_diagonal = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return off_diagonal - 2.0 * k_xy.sum() / (m * m)


def kid(features_a, features_b, *, seed, num_subsets=100, subset_size=1000):
  """KID between two feature sets [N_a, D], [N_b, D], float64.

  Each subset draws `min(subset_size, N_a, N_b)` rows from a, then from b, without replacement,
  with `np.random.RandomState(seed)`. Up to KID_WHOLE_KERNEL_ROWS rows per set the three kernel
  matrices are computed once and indexed per subset (same values, far fewer flops).
  """
  a = np.asarray(features_a, np.float64)
  b = np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"kid wants features [N, D] of the same D, got {a.shape} and {b.shape}")
  m = min(int(subset_size), len(a), len(b))
  if m < 2:
    raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
  rng = np.random.RandomState(seed)
  whole = max(len(a), len(b)) <= KID_WHOLE_KERNEL_ROWS
  if whole:
    k_aa, k_bb, k_ab = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
  mmd2 = np.empty(int(num_subsets))
  for s in range(int(num_subsets)):
    i = rng.choice(len(a), m, replace=False)
    j = rng.choice(len(b), m, replace=False)
    if whole:
      mmd2[s] = _mmd2_unbiased(k_aa[np.ix_(i, i)], k_bb[np.ix_(j, j)], k_ab[np.ix_(i, j)])
    else:
      x, y = a[i], b[j]
      mmd2[s] = _mmd2_unbiased(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y))
  return KIDResult(float(mmd2.mean()), float(mmd2.std()), m, int(num_subsets))


# --------------------------------------------------------------------------------------------------
# Patch protocol.
# --------------------------------------------------------------------------------------------------


def extract_patches(image_HxWxC, patch_size, offset=0):
  """Non-overlapping P×P patches of one image on a grid starting at (offset, offset): [N, P, P, C].

  Row-major order (as torch's `nn.Unfold`); an edge remainder narrower than P is dropped.
  """
  p = int(patch_size)
  image = np.asarray(image_HxWxC)
  h, w, c = image.shape
  rows, cols = max(h - offset, 0) // p, max(w - offset, 0) // p
  x = image[offset:offset + rows * p, offset:offset + cols * p]
  return x.reshape(rows, p, cols, p, c).transpose(0, 2, 1, 3, 4).reshape(rows * cols, p, p, c)


def image_patches(images, patch_size, shifted=False):
  """The patch protocol over a list of HWC images (sizes may differ): [N, P, P, C].

  shifted=True adds HiFiC's second grid, offset by P/2 in both directions.
  """
  offsets = (0, patch_size // 2) if shifted else (0,)
  parts = [extract_patches(im, patch_size, o) for im in images for o in offsets]
  if not parts or sum(len(p) for p in parts) == 0:
    raise ValueError(f"no {patch_size}x{patch_size} patch fits in the images")
  return np.concatenate(parts)


# --------------------------------------------------------------------------------------------------
# LPIPS on images.
# --------------------------------------------------------------------------------------------------


def _to_signed_unit(x):
  """uint8 or [0, 1] float -> [-1, 1] float32 (what the lpips package's normalize=True does)."""
  x = jnp.asarray(x)
  x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
  return 2.0 * x - 1.0


def lpips_distance(net, variables, images_a, images_b):
  """Per-image LPIPS [B] of two NHWC batches of uint8 or [0, 1] images of the same shape."""
  a, b = _to_signed_unit(images_a), _to_signed_unit(images_b)
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f"LPIPS wants two NHWC batches of the same shape, got {a.shape} and {b.shape}")
  return np.asarray(lpips_lib.lpips_per_layer(net, variables, a, b)).sum(axis=-1)


# --------------------------------------------------------------------------------------------------
# Converter command line.
# --------------------------------------------------------------------------------------------------


def save_state_dict_npz(path, state_dict):
  """Write a state dict as an uncompressed .npz, atomically (a failed write leaves no file)."""
  from dcic_jax.io import write_bytes  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in state_dict.items()})
  write_bytes(path, buffer.getvalue())


def _convert_inception(args):
  state_dict = read_state_dict(args.input, "FID Inception", INCEPTION_HINT)
  try:
    inception_variables(state_dict)  # refuse a file that does not map before writing it
  except ValueError as e:
    raise UserError(f"{args.input}: {e}") from None
  save_state_dict_npz(args.output, state_dict)
  print(f"{args.output}: FID Inception state dict ({len(state_dict)} arrays)")


def _convert_lpips(args):
  merged = {}
  for path in args.inputs:
    merged.update(read_state_dict(path, "LPIPS", LPIPS_HINT))
  try:
    net, _ = lpips_variables(merged, args.net)
  except ValueError as e:
    raise UserError(f"{', '.join(args.inputs)}: {e}") from None
  merged = {k: v for k, v in merged.items() if not k.startswith("classifier.")}
  save_state_dict_npz(args.output, merged)
  print(f"{args.output}: LPIPS-{net} state dict ({len(merged)} arrays)")


def build_parser():
  p = Parser(prog="python -m dcic_jax.metrics.perceptual",
                              description="Convert FID Inception / LPIPS PyTorch weights to .npz.")
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("convert-inception", help="pt_inception-2015-12-05-6726825d.pth -> .npz")
  c.add_argument("input")
  c.add_argument("output")
  c.set_defaults(fn=_convert_inception)
  c = sub.add_parser("convert-lpips", help="lpips v0.1 heads + torchvision backbone -> one .npz")
  c.add_argument("inputs", nargs="+", help="state-dict files to merge (heads, backbone)")
  c.add_argument("output")
  c.add_argument("--net", choices=sorted(lpips_lib.BACKBONES), default=None,
                 help="backbone (default: detected from the keys)")
  c.set_defaults(fn=_convert_lpips)
  return p


def main(argv=None):
  def go():
    args = build_parser().parse_args(argv)
    args.fn(args)
  return exit_code(go)


if __name__ == "__main__":
  sys.exit(main())
