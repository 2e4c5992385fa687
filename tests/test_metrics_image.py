"""PSNR / SSIM / MS-SSIM: parity with pytorch-msssim (stored fixture) and basic properties."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from dcic_jax.metrics import image

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "metrics_parity.npz")


@pytest.fixture(scope="module")
def ref():
  with np.load(FIXTURE) as f:
    return dict(f)


def test_ms_ssim_matches_pytorch_msssim(ref):
  # uint8 Kodak crops vs noisy / blurred copies, and a float pair with an odd side (padded pooling).
  got = np.asarray(image.ms_ssim(ref["img_a"], ref["img_b"]))
  assert got.shape == (4,)
  np.testing.assert_allclose(got, ref["img_ms_ssim"], rtol=0, atol=1e-5)
  got = np.asarray(image.ms_ssim(ref["rnd_a"], ref["rnd_b"]))
  np.testing.assert_allclose(got, ref["rnd_ms_ssim"], rtol=0, atol=1e-5)


def test_ssim_matches_pytorch_msssim(ref):
  np.testing.assert_allclose(np.asarray(image.ssim(ref["img_a"], ref["img_b"])), ref["img_ssim"],
                             rtol=0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(image.ssim(ref["rnd_a"], ref["rnd_b"])), ref["rnd_ssim"],
                             rtol=0, atol=1e-5)


def test_uint8_and_unit_float_inputs_agree(ref):
  a_f, b_f = ref["img_a"] / 255.0, ref["img_b"] / 255.0
  np.testing.assert_allclose(np.asarray(image.ms_ssim(a_f, b_f)),
                             np.asarray(image.ms_ssim(ref["img_a"], ref["img_b"])), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(image.psnr(a_f, b_f)),
                                np.asarray(image.psnr(ref["img_a"], ref["img_b"])))


def test_ms_ssim_identity_and_symmetry(ref):
  a, b = ref["img_a"], ref["img_b"]
  np.testing.assert_allclose(np.asarray(image.ms_ssim(a, a)), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(image.ms_ssim(b, a)), np.asarray(image.ms_ssim(a, b)),
                             atol=1e-6)


def test_ms_ssim_rejects_images_too_small_for_five_scales():
  x = jnp.zeros((1, 160, 300, 3))  # needs smaller side > (11 - 1) * 2**4 = 160
  with pytest.raises(ValueError, match="larger than 160"):
    image.ms_ssim(x, x)
  with pytest.raises(ValueError, match="same shape"):
    image.ms_ssim(x, jnp.zeros((1, 161, 300, 3)))


def test_psnr_matches_float64_reference(ref):
  got = np.asarray(image.psnr(ref["img_a"], ref["img_b"]))
  assert got.shape == (4,) and got.dtype == np.float32
  np.testing.assert_allclose(got, ref["img_psnr"], rtol=0, atol=1e-4)


def test_psnr_quantises_to_8_bit():
  a = np.full((2, 8, 8, 3), 100 / 255, np.float32)
  b = a.copy()
  b[0] += 0.4 / 255  # rounds back to the same byte: identical 8-bit images
  b[1] += 1.0 / 255  # one level everywhere: MSE = 1
  got = np.asarray(image.psnr(a, b))
  assert np.isposinf(got[0])
  np.testing.assert_allclose(got[1], 20 * np.log10(255.0), rtol=1e-6)
  # Out-of-range floats are clipped before rounding.
  np.testing.assert_allclose(np.asarray(image.psnr(a * 0 + 1.7, a * 0 + 1.0)), np.inf)


def test_psnr_is_per_image(ref):
  batch = np.asarray(image.psnr(ref["img_a"], ref["img_b"]))
  single = np.asarray(image.psnr(ref["img_a"][2:3], ref["img_b"][2:3]))
  np.testing.assert_allclose(single, batch[2:3], rtol=1e-6)
