"""FID Inception, KID and LPIPS: parity with pytorch-fid, torch-fidelity, clean-fid and lpips.

The references ran on random weights (experiments/fixtures/make_perceptual_fixtures.py).
The fixtures hold each state dict's key order, shapes and numpy seed instead of the weights
(the Inception alone is 95 MB): `perceptual.random_state_dict` rebuilds them here without torch,
and a stored checksum catches a change of the numpy stream before any parity check runs.

Tolerances: Inception pool3 features, max |error| ≤ 1e-4 absolute on activations up to ≈11
(measured 7.6e-6 at 75×75 and 2.9e-5 through the 299×299 resize). LPIPS is ≈0.01 with random
heads, so it is compared relatively, rtol 1e-5 (measured ≤ 4e-9 absolute, 3e-7 relative).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcic_jax.errors import UserError
from dcic_jax.metrics import inception, lpips, perceptual, swd

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@functools.lru_cache(maxsize=None)
def fixture(name):
  with np.load(os.path.join(FIXTURES, f"perceptual_{name}.npz")) as f:
    return dict(f)


def rebuild_state_dict(ref, prefix=""):
  """The reference's random weights, from the stored layout and seed (numpy only)."""
  keys, shapes = ref[f"{prefix}keys"], ref[f"{prefix}shapes"]
  layout = {str(k): tuple(s[s >= 0]) for k, s in zip(keys, shapes)}
  sd = perceptual.random_state_dict(layout, int(ref[f"{prefix}seed"]))
  total = sum(np.abs(v.astype(np.float64)).sum() for v in sd.values() if v.dtype != np.int64)
  np.testing.assert_allclose(total, ref[f"{prefix}checksum"], rtol=1e-12,
                             err_msg="numpy no longer draws the fixture's weights")
  return sd


@functools.lru_cache(maxsize=None)
def inception_state_dict():
  return rebuild_state_dict(fixture("inception"))


@functools.lru_cache(maxsize=None)
def inception_features():
  """Batch 2: the 3-patch input also exercises the padded last batch. Compiled once per shape."""
  return perceptual.InceptionFeatures(perceptual.inception_variables(inception_state_dict()), 2)


# --------------------------------------------------------------------------------------------------
# FID Inception.
# --------------------------------------------------------------------------------------------------


def test_inception_matches_pytorch_fid_without_resize():
  ref = fixture("inception")
  got = inception_features()(ref["x75"], resize=False)
  assert got.shape == (2, 2048) and got.dtype == np.float32
  np.testing.assert_allclose(got, ref["pool3_75"], rtol=0, atol=1e-4)


def test_inception_matches_pytorch_fid_default_pipeline():
  # uint8 64×64 patches -> [0, 1] -> bilinear resize to 299 -> [-1, 1] -> pool3, as pytorch-fid.
  ref = fixture("inception")
  np.testing.assert_allclose(inception_features()(ref["x64"]), ref["pool3_64"], rtol=0, atol=1e-4)
  # [0, 1] floats are the same input as uint8.
  np.testing.assert_allclose(inception_features()(ref["x64"][:2] / np.float32(255.0)),
                             ref["pool3_64"][:2], rtol=0, atol=1e-4)


def test_resize_matches_torch_bilinear():
  ref = fixture("inception")
  for name, size in (("resize_a", (17, 45)), ("resize_b", (46, 20))):
    got = inception.resize_bilinear(jnp.asarray(ref["resize_in"]), size)
    np.testing.assert_allclose(np.asarray(got), ref[name], rtol=0, atol=2e-6)
  x = jnp.asarray(ref["resize_in"])
  same_size = inception.resize_bilinear(x, (23, 31))
  np.testing.assert_array_equal(np.asarray(same_size), ref["resize_in"])


def test_inception_converter_rejects_other_layouts():
  sd = dict(inception_state_dict())
  variables = perceptual.inception_variables(sd)
  assert variables["params"]["Mixed_7c"]["branch_pool"]["conv"]["kernel"].shape == (1, 1, 2048, 192)
  assert variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]["var"].shape == (32,)
  no_fc = {k: v for k, v in sd.items() if not k.startswith("fc.") and "num_batches" not in k}
  perceptual.inception_variables(no_fc)  # the classifier and counters are optional
  with pytest.raises(ValueError, match="missing: params/Mixed_6e/branch7x7_2/conv/kernel"):
    sd_missing = dict(sd)
    del sd_missing["Mixed_6e.branch7x7_2.conv.weight"]
    perceptual.inception_variables(sd_missing)
  with pytest.raises(ValueError, match="wrong shape: params/Mixed_5b/branch1x1/conv/kernel"):
    wrong = np.zeros((64, 192, 3, 3))
    perceptual.inception_variables(dict(sd, **{"Mixed_5b.branch1x1.conv.weight": wrong}))
  with pytest.raises(ValueError, match="unexpected: Mixed_5b.extra.weight"):
    perceptual.inception_variables(dict(sd, **{"Mixed_5b.extra.weight": np.zeros(3)}))


# --------------------------------------------------------------------------------------------------
# Statistics, FID and KID.
# --------------------------------------------------------------------------------------------------


def test_streaming_stats_equal_numpy_in_float64():
  ref = fixture("inception")
  a = ref["feat_a"]
  stats = perceptual.FeatureStats(a.shape[1])
  for part in np.split(a, [1, 50, 51, 130]):  # uneven batches, one of size 1
    stats.update(part)
  assert stats.n == len(a) and stats.mean.dtype == np.float64
  a64 = a.astype(np.float64)
  np.testing.assert_allclose(stats.mean, a64.mean(0), rtol=1e-13, atol=1e-15)
  np.testing.assert_allclose(stats.cov, np.cov(a64, rowvar=False), rtol=1e-12, atol=1e-14)


def test_fid_matches_pytorch_fid_and_gaussian_w2():
  ref = fixture("inception")
  a, b = ref["feat_a"], ref["feat_b"]
  stats_a = perceptual.FeatureStats(a.shape[1]).update(a)
  stats_b = perceptual.FeatureStats(b.shape[1]).update(b)
  got = perceptual.fid(stats_a, stats_b)
  np.testing.assert_allclose(got, ref["fid_ref"], rtol=1e-10)
  np.testing.assert_allclose(got, swd.w2_gaussian(stats_a.mean, stats_a.cov, stats_b.mean,
                                                  stats_b.cov, squared=True), rtol=1e-9)
  assert perceptual.fid(stats_a, stats_a) == pytest.approx(0.0, abs=1e-9)


def test_fid_from_features_equals_fid_of_the_statistics():
  ref = fixture("inception")
  a, b = ref["feat_a"], ref["feat_b"]
  np.testing.assert_allclose(perceptual.fid_from_features(a, b), ref["fid_ref"], rtol=1e-10)
  rng = np.random.default_rng(1)
  for n_a, n_b in ((7, 12), (40, 9)):  # fewer rows than dimensions: the SVD route
    x, y = rng.random((n_a, 48)), rng.random((n_b, 48)) ** 2
    stats_x = perceptual.FeatureStats(48).update(x)
    stats_y = perceptual.FeatureStats(48).update(y)
    # The eigh route takes square roots of the singular Σ's rounding-level eigenvalues (~1e-16 each,
    # √ ≈ 1e-8): ~1e-7 absolute on these covariances; the SVD route never forms them.
    np.testing.assert_allclose(perceptual.fid_from_features(x, y), perceptual.fid(stats_x, stats_y),
                               rtol=1e-6)


def test_fid_of_singular_covariances_is_finite():
  # Fewer samples than dimensions (the usual case for small sets): Σ has rank N - 1.
  rng = np.random.default_rng(0)
  a, b = rng.random((5, 64)), rng.random((6, 64)) + 0.1
  mu_a, cov_a, mu_b, cov_b = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
  got = perceptual.frechet_distance(mu_a, cov_a, mu_b, cov_b)
  want = swd.w2_gaussian(mu_a, cov_a, mu_b, cov_b, squared=True)
  assert np.isfinite(got) and got == pytest.approx(want, rel=1e-6)


def test_kid_matches_torch_fidelity_and_clean_fid():
  ref = fixture("inception")
  a, b = ref["feat_a"], ref["feat_b"]
  got = perceptual.kid(a, b, seed=123, num_subsets=20, subset_size=100)
  np.testing.assert_allclose([got.mean, got.std], [ref["kid_mean"], ref["kid_std"]], rtol=1e-10)
  whole = perceptual.kid(a[:150], b[:150], seed=5, num_subsets=1, subset_size=1000)
  assert whole.subset_size == 150  # capped to the sample count
  np.testing.assert_allclose(whole.mean, ref["kid_full"], rtol=1e-10)


def test_kid_per_subset_kernels_equal_the_whole_kernels(monkeypatch):
  ref = fixture("inception")
  cached = perceptual.kid(ref["feat_a"], ref["feat_b"], seed=4, num_subsets=6, subset_size=70)
  monkeypatch.setattr(perceptual, "KID_WHOLE_KERNEL_ROWS", 0)  # as for sets above the limit
  per_subset = perceptual.kid(ref["feat_a"], ref["feat_b"], seed=4, num_subsets=6, subset_size=70)
  np.testing.assert_allclose([per_subset.mean, per_subset.std], [cached.mean, cached.std],
                             rtol=1e-10)


def test_kid_needs_an_explicit_seed_and_is_reproducible():
  ref = fixture("inception")
  with pytest.raises(TypeError):
    perceptual.kid(ref["feat_a"], ref["feat_b"])  # pylint: disable=missing-kwoa
  one = perceptual.kid(ref["feat_a"], ref["feat_b"], seed=9, num_subsets=5, subset_size=40)
  two = perceptual.kid(ref["feat_a"], ref["feat_b"], seed=9, num_subsets=5, subset_size=40)
  other = perceptual.kid(ref["feat_a"], ref["feat_b"], seed=10, num_subsets=5, subset_size=40)
  assert one == two and one.mean != other.mean
  same = perceptual.kid(ref["feat_a"][:100], ref["feat_a"][100:], seed=0, num_subsets=10)
  assert abs(same.mean) < 0.2 * one.mean  # same law: MMD² near 0 (unbiased: can be < 0)


# --------------------------------------------------------------------------------------------------
# Patch protocol.
# --------------------------------------------------------------------------------------------------


def test_patches_are_row_major_and_drop_the_remainder():
  image = np.arange(150 * 200 * 3).reshape(150, 200, 3)
  patches = perceptual.extract_patches(image, 64)
  assert patches.shape == (2 * 3, 64, 64, 3)
  for k, (r, c) in enumerate((r, c) for r in range(2) for c in range(3)):
    np.testing.assert_array_equal(patches[k], image[64 * r:64 * (r + 1), 64 * c:64 * (c + 1)])
  shifted = perceptual.extract_patches(image, 64, offset=32)
  assert shifted.shape[0] == 1 * 2
  np.testing.assert_array_equal(shifted[1], image[32:96, 96:160])
  both = perceptual.image_patches([image, image[:64, :128]], 64, shifted=True)
  assert both.shape == (6 + 2 + 2 + 0, 64, 64, 3)
  with pytest.raises(ValueError, match="no 256x256 patch"):
    perceptual.image_patches([image], 256)


# --------------------------------------------------------------------------------------------------
# LPIPS.
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def lpips_state_dict(net):
  return rebuild_state_dict(fixture("lpips"), f"{net}_")


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_lpips_package(net):
  ref = fixture("lpips")
  detected, variables = perceptual.lpips_variables(lpips_state_dict(net))
  assert detected == net
  got = perceptual.lpips_distance(net, variables, ref["x0"], ref["x1"])
  np.testing.assert_allclose(got, ref[f"{net}_dist"], rtol=1e-5, atol=1e-9)
  x0 = 2.0 * (ref["x0"] / np.float32(255.0)) - 1.0
  x1 = 2.0 * (ref["x1"] / np.float32(255.0)) - 1.0
  per_layer = np.asarray(lpips.lpips_per_layer(net, variables, x0, x1))
  np.testing.assert_allclose(per_layer, ref[f"{net}_layers"], rtol=1e-5, atol=1e-9)
  # Identical images: zero up to float rounding (XLA may vectorise the two batch rows apart).
  assert np.all(np.abs(perceptual.lpips_distance(net, variables, ref["x0"], ref["x0"])) < 1e-12)


def test_lpips_converter_accepts_torchvision_and_module_layouts():
  sd = lpips_state_dict("alex")
  _, want = perceptual.lpips_variables(sd)
  # torchvision's features.{i} (+ its classifier) with the heads file, and the module's lins alias.
  torchvision = {("features." + k.split(".", 2)[2] if k.startswith("net.") else k): v
                 for k, v in sd.items()}
  torchvision["classifier.1.weight"] = np.zeros((4096, 9216), np.float32)
  aliased = dict(sd)
  aliased.update({k.replace("lin", "lins.", 1): v for k, v in sd.items() if k.startswith("lin")})
  for other in (torchvision, aliased):
    net, got = perceptual.lpips_variables(other)
    assert net == "alex"
    jax.tree.map(np.testing.assert_array_equal, got, want)
  heads_only = {k: v for k, v in sd.items() if k.startswith("lin")}
  with pytest.raises(ValueError, match="missing: params/net/conv0/bias"):
    perceptual.lpips_variables(heads_only)
  with pytest.raises(ValueError, match="LPIPS-vgg.*missing"):
    perceptual.lpips_variables(sd, net="vgg")


# --------------------------------------------------------------------------------------------------
# Files: missing weights, the converter command line.
# --------------------------------------------------------------------------------------------------


def test_missing_weights_say_where_to_get_them(tmp_path):
  for load, field, source in ((perceptual.load_inception, "config.metrics.inception_path",
                               "pt_inception-2015-12-05-6726825d.pth"),
                              (perceptual.load_lpips, "config.metrics.lpips_path",
                               "weights/v0.1")):
    for path in ("", str(tmp_path / "nope.npz")):
      with pytest.raises(UserError) as e:
        load(path)
      message = str(e.value)
      assert "\n" not in message and field in message and source in message
      assert "https://" in message
  (tmp_path / "bad.npz").write_bytes(b"not a zip")
  with pytest.raises(UserError, match="cannot read FID Inception weights"):
    perceptual.load_inception(tmp_path / "bad.npz")


def test_convert_lpips_command_line_merges_heads_and_backbone(tmp_path, capsys):
  sd = lpips_state_dict("vgg")
  heads = tmp_path / "heads.npz"
  backbone = tmp_path / "backbone.npz"
  np.savez(heads, **{k: v for k, v in sd.items() if k.startswith("lin")})
  np.savez(backbone, **{"features." + k.split(".", 2)[2]: v
                        for k, v in sd.items() if k.startswith("net.")})
  out = tmp_path / "lpips_vgg.npz"
  assert perceptual.main(["convert-lpips", str(heads), str(backbone), str(out)]) == 0
  net, got = perceptual.load_lpips(out)
  assert net == "vgg"
  jax.tree.map(np.testing.assert_array_equal, got, perceptual.lpips_variables(sd)[1])
  # Heads alone do not make a model: exit 2 and one line, nothing written.
  assert perceptual.main(["convert-lpips", str(heads), str(tmp_path / "x.npz")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and not (tmp_path / "x.npz").exists()
