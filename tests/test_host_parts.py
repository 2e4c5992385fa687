"""A batch as concurrent calls of one compiled program on one CPU device (dcic_jax/host_parts)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcic_jax import host_parts


def _conv(w, x_BHWC, scale_B):
  """A convolution and a per-item scale: items independent, as a UNet's ε over a batch."""
  y = jax.lax.conv_general_dilated(x_BHWC, w, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.tanh(y) * scale_B[:, None, None, None], jnp.sum(y, axis=(1, 2, 3))


def _inputs(batch):
  rng = np.random.default_rng(0)
  return (rng.standard_normal((3, 3, 4, 8)).astype(np.float32),
          rng.standard_normal((batch, 16, 16, 4)).astype(np.float32),
          np.arange(1, batch + 1, dtype=np.float32))


def test_split_batch_runs_equal_parts_concurrently_and_gives_each_item_its_own_output(monkeypatch):
  calls = []
  real = host_parts.run_concurrently
  monkeypatch.setattr(host_parts, "run_concurrently",
                      lambda c, args: calls.append([a[1].shape for a in args]) or real(c, args))
  w, x, s = _inputs(4)
  cpu0 = jax.devices()[0]
  args = jax.device_put((w, x, s), cpu0)
  split = host_parts.split_batch(_conv, 2, batch_argnums=(1, 2))
  out, total = split(*args)
  assert calls == [[(2, 16, 16, 4)] * 2]
  whole, whole_total = jax.jit(_conv)(*args)
  assert out.shape == whole.shape and total.shape == (4,)
  np.testing.assert_allclose(out, whole, rtol=0, atol=1e-6)
  np.testing.assert_allclose(total, whole_total, rtol=1e-5)
  for i in range(4):  # item i is the function of item i alone
    np.testing.assert_allclose(out[i], _conv(w, x[i:i + 1], s[i:i + 1])[0][0], rtol=0, atol=1e-5)
  split(*args)
  assert len(calls) == 2 and len(calls[1]) == 2   # a second call splits the same way


@pytest.mark.parametrize("batch,sharded", [(3, False), (4, True)])
def test_split_batch_is_one_call_for_an_uneven_batch_or_a_batch_over_several_devices(
    monkeypatch, batch, sharded):
  monkeypatch.setattr(host_parts, "run_concurrently", lambda *a: pytest.fail("split"))
  w, x, s = _inputs(batch)
  if sharded:
    mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
    x = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  out, _ = host_parts.split_batch(_conv, 2, batch_argnums=(1, 2))(w, x, s)
  np.testing.assert_allclose(out, jax.jit(_conv)(w, x, s)[0], rtol=0, atol=1e-6)


def test_parts_for_only_splits_on_one_cpu_device():
  cpu = jax.devices()
  assert host_parts.parts_for(2, 5, cpu[:1]) == 2
  assert host_parts.parts_for(4, 3, cpu[:1]) == 3     # at most one part per unit
  assert host_parts.parts_for(2, 5, cpu[:2]) == 1     # a mesh: XLA lays the work out itself
