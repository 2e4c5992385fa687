"""Export storage: int8 hyper-transform kernels, float16 other kernels, exact reload."""
import flax
import numpy as np
import pytest

from dcic_jax import checkpointing
from tests.tiny_exports import export_random_codec


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {"g_a_layers_0": {"kernel": rng.normal(size=(5, 5, 3, 8)).astype(np.float32),
                           "bias": rng.normal(size=(8,)).astype(np.float32)},
          "h_s_net": {"layer0": {"conv": {"kernel": rng.normal(size=(3, 3, 8, 32)).astype(np.float32),
                                          "bias": rng.normal(size=(32,)).astype(np.float32)}}},
          "h_a_layers_1": {"kernel": np.zeros((5, 5, 8, 8), np.float32)},  # an all-zero channel
          "norm": {"scale": np.ones(8, np.float32)}}


def test_storage_form_rounds_each_kind_of_parameter_as_documented():
  p = _params()
  stored = checkpointing.storage_form(p)
  back = checkpointing.from_storage(stored)
  assert _keys(back) == _keys(p)
  k = stored["h_s_net"]["layer0"]["conv"]["kernel"]
  assert k[checkpointing.INT8_CODES].dtype == np.int8 and k[checkpointing.INT8_SCALE].shape == (32,)
  w, w8 = p["h_s_net"]["layer0"]["conv"]["kernel"], back["h_s_net"]["layer0"]["conv"]["kernel"]
  err = np.abs(w - w8).reshape(-1, 32).max(axis=0)
  step = np.abs(w).reshape(-1, 32).max(axis=0) / 127
  assert np.all(err <= step / 2 * (1 + 1e-5)) and np.all(err > 0)
  assert np.abs(k[checkpointing.INT8_CODES]).max() == 127
  assert stored["g_a_layers_0"]["kernel"].dtype == np.float16
  np.testing.assert_array_equal(back["g_a_layers_0"]["kernel"], p["g_a_layers_0"]["kernel"].astype(np.float16))
  np.testing.assert_array_equal(back["h_a_layers_1"]["kernel"], 0)
  for path in [("g_a_layers_0", "bias"), ("norm", "scale")]:  # non-kernels stay float32, exactly
    got, want = back[path[0]][path[1]], p[path[0]][path[1]]
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_storage_form_is_idempotent():
  stored = checkpointing.storage_form(_params())
  again = flax.traverse_util.flatten_dict(checkpointing.storage_form(stored))
  for k, v in flax.traverse_util.flatten_dict(stored).items():
    assert again[k].dtype == v.dtype and np.array_equal(again[k], v), k


def _keys(tree):
  return sorted(flax.traverse_util.flatten_dict(tree))


def test_an_export_reloads_the_exact_codec_it_was_written_as(tmp_path):
  from dcic_jax.codecs import codec as codec_lib
  path = export_random_codec(tmp_path / "c", "mbt2018-mean", N=8, M=8)
  loaded = codec_lib.load(path)  # raises if the fingerprint of the reloaded parameters differs
  with checkpointing.local_checkpointer() as ckptr:
    raw = ckptr.restore(path / "state")["params"]
  stored = flax.traverse_util.flatten_dict(raw)
  hyper = [k for k in stored if k[0].startswith(("h_a", "h_s")) and k[-1] == checkpointing.INT8_CODES]
  assert hyper and all(stored[k].dtype == np.int8 for k in hyper)
  assert all(v.dtype == np.float16 for k, v in stored.items() if k[-1] == "kernel")
  flat = flax.traverse_util.flatten_dict(loaded.params)
  assert all(v.dtype == np.float32 for v in flat.values())
  # the int8 kernels are what the codec computes with: re-rounding them changes nothing
  again = checkpointing.from_storage(checkpointing.storage_form(loaded.params))
  for k, v in flax.traverse_util.flatten_dict(again).items():
    np.testing.assert_allclose(v, flat[k], rtol=1e-6, atol=0)


def test_storage_form_refuses_non_finite_kernels():
  p = _params()
  p["h_s_net"]["layer0"]["conv"]["kernel"][0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    checkpointing.storage_form(p)
