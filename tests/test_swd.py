"""Patch SWD (Karras et al. 2018) on real photos, and the exact W2 helpers against closed forms."""

import glob
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
from PIL import Image

from dcic_jax.metrics import swd

IMAGE_DIR = os.path.join(os.path.dirname(__file__), "..", "data", "images")
CROP = 256  # at most; smaller photos give a smaller common crop (and fewer pyramid levels)
# 2 × 128 directions instead of the paper's 4 × 128: half the sorting (slow in XLA on CPU), and the
# repeat loop is still exercised. Every call uses the same value so each shape compiles once.
NUM_REPEATS = 2


@pytest.fixture(scope="module")
def photos():
  """2–4 real photos from the repo, centre-cropped to a common square, float32 [B, S, S, 3]."""
  paths = sorted(p for p in glob.glob(os.path.join(IMAGE_DIR, "*"))
                 if p.lower().endswith((".png", ".jpg", ".jpeg")))[:4]
  if len(paths) < 2:
    pytest.fail(f"test_swd needs 2-4 photos in {os.path.abspath(IMAGE_DIR)}, found {len(paths)}.")
  images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
  side = min(CROP, *(min(im.shape[:2]) for im in images))
  crops = []
  for im in images:
    top, left = (im.shape[0] - side) // 2, (im.shape[1] - side) // 2
    crops.append(im[top:top + side, left:left + side])
  return np.stack(crops).astype(np.float32) / 255.0


def _blur(x, sigma):
  return scipy.ndimage.gaussian_filter(x, (0, sigma, sigma, 0)).astype(np.float32)


def _noise(x, std):
  rng = np.random.default_rng(7)
  return (x + std * rng.standard_normal(x.shape)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# SWD on photos. The same key in every call of a sweep fixes the patch positions and directions
# (common random numbers), so only the image content changes between calls.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("degrade,strengths,seed", [
    ("blur", (0.5, 1.0, 2.0, 3.0), 0),
    ("noise", (0.01, 0.03, 0.1, 0.3), 1),
])
def test_swd_grows_with_degradation(photos, degrade, strengths, seed):
  fn = {"blur": _blur, "noise": _noise}[degrade]
  key = jax.random.PRNGKey(seed)
  results = [swd.swd(key, photos, fn(photos, s), num_repeats=NUM_REPEATS) for s in strengths]
  means = [r.mean for r in results]
  finest = [r.per_level[0] for r in results]
  assert np.all(np.diff(means) > 0), means
  assert np.all(np.diff(finest) > 0), finest


def test_swd_is_deterministic_in_its_key(photos):
  blurred = _blur(photos, 1.0)
  first = swd.swd(jax.random.PRNGKey(3), photos, blurred, num_repeats=NUM_REPEATS)
  again = swd.swd(jax.random.PRNGKey(3), photos, blurred, num_repeats=NUM_REPEATS)
  other = swd.swd(jax.random.PRNGKey(4), photos, blurred, num_repeats=NUM_REPEATS)
  np.testing.assert_array_equal(first.per_level, again.per_level)
  assert not np.array_equal(first.per_level, other.per_level)
  assert first.per_level.shape == (swd.default_num_levels(*photos.shape[1:3]),)
  np.testing.assert_allclose(first.mean, first.per_level.mean())


def test_random_halves_of_one_patch_set_are_near_zero_against_blur(photos):
  """Two disjoint halves of the same patch set differ only by sampling noise.

  Measured on the repo photos: halves ≈ 0.035, vs. σ = 4 blur ≈ 0.19 (ratio ≈ 0.19).
  """
  num_levels = swd.default_num_levels(*photos.shape[1:3])
  key = jax.random.PRNGKey(5)

  def finest_descriptors(key, images, repeats):
    # Same static arguments per call: one compilation, more patches.
    return jnp.concatenate([swd.pyramid_descriptors(jax.random.fold_in(key, r), images,
                                                    num_levels)[0] for r in range(repeats)])

  # The halves still differ by sampling noise, ~1/√N: ≥ 8192 patches keep it well below the blur.
  repeats = -(-8192 // (128 * len(photos)))
  d = finest_descriptors(jax.random.fold_in(key, 0), photos, repeats)  # [N, 7, 7, 3]
  perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), d.shape[0]))
  half = d.shape[0] // 2
  d_1, d_2 = d[perm[:half]], d[perm[half:2 * half]]
  d_blur = finest_descriptors(jax.random.fold_in(key, 2), _blur(photos, 4.0), repeats)[:half]
  key_proj = jax.random.fold_in(key, 3)
  same = swd.swd_from_descriptors(key_proj, [d_1], [d_2], num_repeats=NUM_REPEATS).mean
  blurred = swd.swd_from_descriptors(key_proj, [d_1], [d_blur], num_repeats=NUM_REPEATS).mean
  assert same < 0.3 * blurred, (same, blurred)


def test_laplacian_pyramid_sums_back_to_the_image(photos):
  x = jnp.asarray(photos[:2, :67, :45])  # odd sides exercise the crops in pyr_up
  round_trip = jax.jit(lambda x: swd.reconstruct_from_pyramid(swd.laplacian_pyramid(x, 3)))
  levels = jax.eval_shape(lambda x: swd.laplacian_pyramid(x, 3), x)
  assert [l.shape[1:3] for l in levels] == [(67, 45), (34, 23), (17, 12)]
  np.testing.assert_allclose(np.asarray(round_trip(x)), np.asarray(x), atol=2e-6)


def test_descriptors_are_normalised_per_channel(photos):
  num_levels = swd.default_num_levels(*photos.shape[1:3])
  descriptors = swd.pyramid_descriptors(jax.random.PRNGKey(6), photos, num_levels)
  assert [d.shape for d in descriptors] == [(128 * len(photos), 7, 7, 3)] * num_levels
  d_NxD = np.asarray(swd.normalize_descriptors(descriptors[0])).reshape(-1, 7 * 7, 3)
  np.testing.assert_allclose(d_NxD.mean(axis=(0, 1)), 0.0, atol=1e-5)
  np.testing.assert_allclose(d_NxD.std(axis=(0, 1)), 1.0, atol=1e-4)


def test_swd_rejects_tiny_images():
  with pytest.raises(ValueError, match="at least 16x16"):
    swd.swd(jax.random.PRNGKey(0), jnp.zeros((1, 12, 40, 3)), jnp.zeros((1, 12, 40, 3)))


# --------------------------------------------------------------------------------------------------
# Exact W2 helpers.
# --------------------------------------------------------------------------------------------------


def test_w2_1d_hand_examples():
  # Q_a = 0 on (0, 1/2], 1 after; Q_b = 0, 1, 2 on thirds:
  # |Q_a − Q_b|² = 1 on (1/3, 1/2] and on (2/3, 1], 0 elsewhere.
  assert swd.w2_1d([0.0, 1.0], [2.0, 0.0, 1.0], squared=True) == pytest.approx(0.5, abs=1e-15)
  assert swd.w2_1d([0.0], [1.0, 3.0]) == pytest.approx(math.sqrt(5.0), abs=1e-15)
  assert swd.w2_1d([3.0, 1.0, 2.0], [2.0, 4.0, 3.0]) == pytest.approx(1.0, abs=1e-15)
  assert swd.w2_1d([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == 0.0


def test_w2_1d_matches_gaussian_closed_form():
  rng = np.random.default_rng(0)
  a = rng.normal(1.0, 2.0, 200_000)
  b = rng.normal(-0.5, 0.5, 150_000)  # unequal sizes
  exact = math.sqrt(1.5**2 + 1.5**2)
  assert swd.w2_1d(a, b) == pytest.approx(exact, rel=1e-2)
  assert swd.w2_gaussian(1.0, 4.0, -0.5, 0.25) == pytest.approx(exact, rel=1e-12)


def test_jax_wasserstein_1d_matches_scipy_for_unequal_sizes():
  rng = np.random.default_rng(1)
  a, b = rng.normal(0, 1, 37), rng.exponential(1.0, 53)
  w1 = float(swd.wasserstein_1d(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), p=1))
  assert w1 == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-5)
  w2 = float(swd.wasserstein_1d(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), p=2))
  assert w2 == pytest.approx(swd.w2_1d(a, b), rel=1e-5)


def test_w2_gaussian_known_cases():
  # 1-D: (m1 − m2)² + (s1 − s2)².
  assert swd.w2_gaussian(1.0, 4.0, 3.0, 9.0, squared=True) == pytest.approx(5.0, rel=1e-12)
  # Diagonal: the same, summed over coordinates.
  rng = np.random.default_rng(2)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  var1, var2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  expected = np.sum((mu1 - mu2) ** 2 + (np.sqrt(var1) - np.sqrt(var2)) ** 2)
  assert swd.w2_gaussian(mu1, np.diag(var1), mu2, np.diag(var2), squared=True) == pytest.approx(
      expected, rel=1e-10)
  # Commuting full covariances (shared eigenbasis): the diagonal formula in that basis.
  q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  assert swd.w2_gaussian(mu1, q @ np.diag(var1) @ q.T, mu2, q @ np.diag(var2) @ q.T,
                         squared=True) == pytest.approx(expected, rel=1e-8)
  # Equal covariances: only the means move.
  cov = q @ np.diag(var1) @ q.T
  assert swd.w2_gaussian(mu1, cov, mu2, cov) == pytest.approx(np.linalg.norm(mu1 - mu2), rel=1e-6)
  assert swd.w2_gaussian(mu1, cov, mu1, cov) == pytest.approx(0.0, abs=1e-6)
