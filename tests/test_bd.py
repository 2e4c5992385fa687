"""Bjøntegaard metrics: parity with the `bjontegaard` package (stored fixture) and exact cases."""

import os
import numpy as np
import pytest

from dcic_jax.metrics import bd

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "metrics_parity.npz")
METHODS = ("pchip", "cubic")

RATE = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
PSNR = np.array([27.2, 29.9, 32.4, 34.6, 36.5])
FID = np.array([52.0, 33.1, 21.4, 14.8, 10.9])


@pytest.fixture(scope="module")
def ref():
  with np.load(FIXTURE) as f:
    return dict(f)


def _curves(ref, prefix):
  return tuple(ref[f"{prefix}_{k}"] for k in ("rate_a", "metric_a", "rate_b", "metric_b"))


@pytest.mark.parametrize("method", METHODS)
def test_matches_bjontegaard_package(ref, method):
  # Same interpolants and integrals as the package: agreement is to rounding (1e-12 relative);
  # 1e-9 leaves room for a different BLAS in np.polyfit.
  for i in range(4):
    curves = _curves(ref, f"bd{i}")
    np.testing.assert_allclose(bd.bd_rate(*curves, method=method, min_overlap=0),
                               ref[f"bd{i}_rate_{method}"], rtol=1e-9)
    np.testing.assert_allclose(bd.bd_metric(*curves, method=method, min_overlap=0),
                               ref[f"bd{i}_psnr_{method}"], rtol=1e-9)
  np.testing.assert_allclose(bd.bd_metric(*_curves(ref, "bdfid"), method=method, min_overlap=0),
                             ref[f"bdfid_psnr_{method}"], rtol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_identical_curves_give_zero(method):
  result = bd.bd(RATE, PSNR, RATE, PSNR, method=method)
  assert result.rate_percent == 0.0 and result.metric_delta == 0.0
  assert bd.bd(RATE, FID, RATE, FID, method=method, higher_is_better=False).rate_percent == 0.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("offset", [-1.25, 0.3, 2.0])
def test_metric_offset_is_the_bd_metric(method, offset):
  np.testing.assert_allclose(bd.bd_metric(RATE, PSNR, RATE, PSNR + offset, method=method), offset,
                             rtol=0, atol=1e-10)
  np.testing.assert_allclose(bd.bd_metric(RATE, FID, RATE, FID + offset, method=method), offset,
                             rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("factor", [0.7, 0.95, 1.3])
def test_rate_factor_is_the_bd_rate(method, factor):
  expected = (factor - 1.0) * 100.0
  np.testing.assert_allclose(bd.bd_rate(RATE, PSNR, factor * RATE, PSNR, method=method), expected,
                             rtol=1e-10)
  np.testing.assert_allclose(
      bd.bd_rate(RATE, FID, factor * RATE, FID, method=method, higher_is_better=False), expected,
      rtol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_bd_rate_on_a_falling_metric_mirrors_a_rising_one(method):
  rate_b, fid_b = RATE * 0.9, FID * np.array([0.97, 0.95, 0.96, 0.98, 0.99])
  falling = bd.bd_rate(RATE, FID, rate_b, fid_b, method=method, higher_is_better=False)
  rising = bd.bd_rate(RATE, -FID, rate_b, -fid_b, method=method)
  np.testing.assert_allclose(falling, rising, rtol=1e-12)
  assert falling < 0  # b: fewer bits and lower FID


def test_wrong_direction_is_an_error():
  with pytest.raises(ValueError, match="fall strictly"):
    bd.bd_rate(RATE, PSNR, RATE, PSNR, higher_is_better=False)
  with pytest.raises(ValueError, match="rise strictly"):
    bd.bd(RATE, FID, RATE, FID)


def test_point_order_does_not_matter():
  perm = np.array([3, 0, 4, 2, 1])
  rate_b, psnr_b = RATE * 0.8, PSNR + 0.2
  for method in METHODS:
    sorted_result = bd.bd(RATE, PSNR, rate_b, psnr_b, method=method)
    shuffled = bd.bd(RATE[perm], PSNR[perm], rate_b[::-1], psnr_b[::-1], method=method)
    assert sorted_result == shuffled


def test_bad_inputs():
  with pytest.warns(UserWarning, match="do not overlap"):
    assert np.isnan(bd.bd_metric(RATE, PSNR, RATE * 100, PSNR))
  with pytest.warns(UserWarning, match="overlap on only"):
    bd.bd_metric(RATE, PSNR, RATE * 4, PSNR)
  with pytest.raises(ValueError, match="at least 4 points"):
    bd.bd_rate(RATE[:3], PSNR[:3], RATE[:3], PSNR[:3], method="cubic")
  with pytest.raises(ValueError, match="Unknown BD interpolation"):
    bd.bd_rate(RATE, PSNR, RATE, PSNR, method="akima")
  with pytest.raises(ValueError, match="positive"):
    bd.bd_rate(RATE - 0.1, PSNR, RATE, PSNR)
