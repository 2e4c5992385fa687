"""Calibration constants w_D, w_P of the penalty modes (`schedule`, `dps`): what "K = 1" means there.

The default `project` mode needs none: its factors are fractions of the way to each constraint.

ℓ_D and ℓ_P are sums of squares of very different residuals (pixels vs re-decoded pixels or
latents), so their raw gradients differ by orders of magnitude between codecs and variants. We fix
w_D = 1 (with the default step η₀ = 0.5, K_D = 1 moves x̂0 onto x̂_b in one step at small t: the
full-strength distortion constraint) and choose w_P so that, near x̂_b, the idempotence gradient
is as strong as the distortion gradient:

  w_P = median over images of ‖∇ℓ_D(u)‖ / ‖∇ℓ_P(u)‖,   u = x̂_b + N(0, σ²),  σ = 0.1 ([−1, 1] units).

The ratio is a property of the codec alone (in `xt` mode both gradients pass through the same
ε_θ Jacobian), so the constants are stored with each codec export (`codec.json`, key "dcic") and
hold for any prior paired with it. `python -m dcic_jax.dcic.calibrate CHECKPOINT_DIR [IMAGES_DIR]`
(re)computes them; the noise comes from an explicit seed.
"""
import functools
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.dcic import constraints
from dcic_jax.dcic.constraints import CodecFns, Target

SIGMA = 0.1
CALIBRATION_IMAGES = "data/images"  # the shipped crops: every export path calibrates on these three


@functools.partial(jax.jit, static_argnames=("codec", "variant"))
def _gradient_norms(codec: CodecFns, codec_params, targets: Target, u: jax.Array, variant: str):
  """([B] ‖∇ℓ_D(u)‖, [B] ‖∇ℓ_P(u)‖): one compilation per codec, variant and image size."""
  g_d = jax.grad(lambda v: jnp.sum(constraints.distortion_loss(v, targets)))(u)
  g_p = jax.grad(lambda v: jnp.sum(constraints.idempotence_loss(codec, codec_params, v, targets,
                                                                variant)))(u)
  axes = tuple(range(1, u.ndim))
  return jnp.sqrt(jnp.sum(g_d**2, axes)), jnp.sqrt(jnp.sum(g_p**2, axes))


def gradient_ratio(codec: CodecFns, codec_params, targets: Target, key: jax.Array,
                   variant: str, sigma: float = SIGMA) -> np.ndarray:
  """[B] ‖∇ℓ_D‖/‖∇ℓ_P‖ at x̂_b + N(0, σ²), per image."""
  u = targets.x_b + sigma * jax.random.normal(key, targets.x_b.shape)
  n_d, n_p = _gradient_norms(codec, codec_params, targets, u, variant)
  return np.asarray(n_d) / np.maximum(np.asarray(n_p), 1e-30)


def ratios_of_decoded(codec, decoded: list, variant: str, seed: int = 0, salt: int = 0) -> list[float]:
  """‖∇ℓ_D‖/‖∇ℓ_P‖ of each decoded file (`Codec.decompress` results), noise key (seed, salt + k)."""
  fns = CodecFns.from_module(codec.module)
  ratios = []
  for k, d in enumerate(decoded):
    target = constraints.make_target(fns, codec.params, jnp.asarray(d.y_hat[None]),
                                     jnp.asarray(d.mu[None]), jnp.asarray(d.r[None]))
    key = jax.random.fold_in(jax.random.key(seed), salt + k)
    ratios.append(float(gradient_ratio(fns, codec.params, target, key, variant)[0]))
  return ratios


def calibrate_codec(codec, images: list[np.ndarray] | None = None, seed: int = 0) -> dict:
  """{"w_d", "w_p_reconstruction", "w_p_latent", "method"} for a `codecs.codec.Codec`, on `images`
  (default: the shipped crops, which every export path uses)."""
  images = images or folder_images(CALIBRATION_IMAGES)
  decoded = [codec.decompress(codec.compress(image)) for image in images]
  result = {"w_d": 1.0}
  for j, variant in enumerate(constraints.VARIANTS):
    result[f"w_p_{variant}"] = float(np.median(ratios_of_decoded(codec, decoded, variant, seed, 1000 * j)))
  result["method"] = (f"median |grad l_D| / |grad l_P| at x_b + N(0, {SIGMA}^2) over "
                      f"{len(images)} images, seed {seed}")
  return result


def folder_images(folder: str) -> list[np.ndarray]:
  """The images of `folder` (a relative path: the user's if it exists, else the shipped one)."""
  from dcic_jax.assets import resolve
  from dcic_jax.data.images import list_images, load_rgb
  return [load_rgb(f) for f in list_images(resolve(folder))]


def weights(info: dict, variant: str) -> tuple[float, float]:
  """(w_D, w_P) from a codec export's codec.json, or (1, 1) if it was never calibrated."""
  cal = info.get("dcic", {})
  return float(cal.get("w_d", 1.0)), float(cal.get(f"w_p_{variant}", 1.0))


def weights_or_calibrate(info: dict, variant: str, mode: str, codec, decoded: list,
                         name: str) -> tuple[tuple[float, float], str | None]:
  """((w_D, w_P), note): `weights`, except that a penalty mode meeting a codec without stored
  constants calibrates it on the files being decoded (their own x̂_b, seed 0) and says so, since
  w_P = 1 would give K_P another meaning for every codec. The `project` mode uses neither, and
  gets (1, 1), so that codecs of one architecture share one compiled decoder (`decode.py`)."""
  if mode == "project":
    return (1.0, 1.0), None
  if f"w_p_{variant}" in info.get("dcic", {}):
    return weights(info, variant), None
  w_p = float(np.median(ratios_of_decoded(codec, decoded, variant)))
  return (1.0, w_p), (f"note: {name} has no DCIC calibration; w_P = {w_p:.4g} from the "
                      f"{len(decoded)} file(s) being decoded (to store one: python -m "
                      f"dcic_jax.dcic.calibrate EXPORT_DIR)")


def _run(args) -> None:
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.io import write_json
  codec = codec_lib.load(args.checkpoint)
  cal = calibrate_codec(codec, folder_images(args.images or CALIBRATION_IMAGES), args.seed)
  info_path = pathlib.Path(args.checkpoint) / "codec.json"
  info = json.loads(info_path.read_text())
  info["dcic"] = cal
  write_json(info_path, info, indent=2, sort_keys=True)
  print(f"{info_path}: {cal}")


def main(argv=None) -> int:
  from dcic_jax.errors import exit_code
  from dcic_jax.argtypes import Parser
  p = Parser(prog="python -m dcic_jax.dcic.calibrate", description="compute the DCIC calibration constants of a codec export")
  p.add_argument("checkpoint")
  p.add_argument("images", nargs="?", default=None,
                 help="folder of images (default: the shipped crops, as every export path uses)")
  p.add_argument("--seed", type=int, default=0)
  return exit_code(lambda: _run(p.parse_args(argv)))


if __name__ == "__main__":
  sys.exit(main())
