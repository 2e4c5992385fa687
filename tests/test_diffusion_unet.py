"""The ε-network (Ho et al. 2020 UNet; Dhariwal & Nichol 2021 ADM options)."""
import dataclasses
import functools
import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcic_jax.diffusion import unet

TINY = unet.UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                       attention_levels=(1,), norm_groups=8, num_heads=2, learn_sigma=True)


@functools.lru_cache
def _compiled_apply(cfg, x_shape):
  """UNet(cfg).apply compiled once per (config, input shape), without LLVM optimisation
  (about half the compile time on this CPU; same numbers within these tolerances)."""
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  t = jax.ShapeDtypeStruct(x_shape[:1], jnp.int32)
  params = jax.eval_shape(lambda: unet.random_params(cfg, 0))
  return jax.jit(lambda p, x, t: unet.UNet(cfg).apply({"params": p}, x, t)).lower(
      params, x, t).compile(compiler_options={"xla_backend_optimization_level": 0})


def _apply(cfg, params, x, t):
  return _compiled_apply(cfg, x.shape)(params, x, jnp.asarray(t, jnp.int32))


def _x(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_learned_sigma_returns_the_eps_half_and_runs_on_larger_images():
  params = unet.random_params(TINY, seed=0)
  assert params["conv_out"]["kernel"].shape == (3, 3, 16, 6)
  t = jnp.array([3, 900])
  # Trained on any size, applied to a larger non-square image (fully convolutional).
  x = _x((2, 16, 24, 3), 1)
  eps = _apply(TINY, params, x, t)
  assert eps.shape == (2, 16, 24, 3) and bool(jnp.all(jnp.isfinite(eps)))
  sigma_changed = jax.tree.map(lambda a: a, params)
  sigma_changed["conv_out"] = {
      "kernel": params["conv_out"]["kernel"].at[..., 3:].add(1.0),
      "bias": params["conv_out"]["bias"].at[3:].add(1.0)}
  np.testing.assert_array_equal(_apply(TINY, sigma_changed, x, t), eps)
  eps_other_t = _apply(TINY, params, x, jnp.array([4, 900]))
  assert float(jnp.abs(eps_other_t[0] - eps[0]).max()) > 1e-4  # conditioned on t
  np.testing.assert_allclose(eps_other_t[1], eps[1], atol=1e-6)  # per image
  with pytest.raises(ValueError, match="multiple of 2"):
    unet.UNet(TINY).apply({"params": params}, _x((1, 17, 16, 3), 2), t[:1])


def _grads(cfg, params, x, t, v):
  """(∂/∂params, ∂/∂x) of ⟨ε(x), v⟩ and the Hessian-vector product along v (forward over
  reverse, as the decoder's `step_cap` uses it)."""
  loss = lambda p, x: jnp.sum(unet.UNet(cfg).apply({"params": p}, x, t) * v)
  fn = lambda p, x: (jax.grad(loss, argnums=(0, 1))(p, x),
                     jax.jvp(lambda x: jax.grad(loss, argnums=1)(p, x), (x,), (v,))[1])
  return jax.jit(fn).lower(params, x).compile(
      compiler_options={"xla_backend_optimization_level": 0})(params, x)


def _assert_close(got, want, rel):
  """Every array of `got` within rel·max|want| of `want` (float rounding grows with scale)."""
  def check(a, b):
    assert float(jnp.abs(a - b).max()) <= rel * float(jnp.abs(b).max()), (a, b)
  jax.tree.map(check, got, want)


def _vjp_temp_bytes(cfg, size):
  """XLA:CPU's temporary buffers of ∂⟨ε(x), ε(x)⟩/∂x at size × size (compile only)."""
  params = jax.eval_shape(lambda: unet.random_params(cfg, 0))
  t = jnp.zeros((1,), jnp.int32)
  f = lambda p, x: jax.grad(lambda x: jnp.sum(unet.UNet(cfg).apply({"params": p}, x, t) ** 2))(x)
  compiled = jax.jit(f).lower(params, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)).compile(
      compiler_options={"xla_backend_optimization_level": 0})
  return compiled.memory_analysis().temp_size_in_bytes


def test_remat_changes_nothing_but_memory():
  remat = dataclasses.replace(TINY, remat=True)
  shapes = lambda cfg: jax.tree.map(
      lambda s: s.shape, jax.eval_shape(lambda: unet.init_params(cfg, jax.random.key(0), 16)))
  assert shapes(remat) == shapes(TINY)  # same parameter tree, so checkpoints interchange
  params = unet.random_params(TINY, seed=4)
  x, t = _x((2, 16, 24, 3), 3), jnp.array([10, 500])
  np.testing.assert_allclose(_apply(remat, params, x, t), _apply(TINY, params, x, t), atol=1e-6)
  # Gradients on one level (a residual block and the middle attention under remat).
  small = dataclasses.replace(TINY, channel_mult=(1,), attention_levels=())
  params, v = unet.random_params(small, seed=5), _x((2, 8, 8, 3), 5)
  got = _grads(dataclasses.replace(small, remat=True), params, x[:, :8, :8], t, v)
  _assert_close(got, _grads(small, params, x[:, :8, :8], t, v), 1e-5)
  # The recomputation waits for the backward pass: a plain jax.checkpoint is scheduled next to
  # the forward by XLA:CPU and saves nothing (same temporaries with and without it).
  convs = unet.UNetConfig(base_channels=8, channel_mult=(1,), num_res_blocks=2,
                          attention_levels=(), mid_attention=False, norm_groups=4)
  plain = _vjp_temp_bytes(convs, 32)
  assert _vjp_temp_bytes(dataclasses.replace(convs, remat=True), 32) < 0.7 * plain


def test_chunked_attention_equals_plain_attention():
  q, k, v = (_x((2, 37, 2, 8), seed) for seed in (6, 7, 8))
  loss = lambda max_scores: lambda q, k, v: jnp.sum(jnp.sin(unet.attention(q, k, v, max_scores)))
  want = unet.attention(q, k, v), jax.grad(loss(0), argnums=(0, 1, 2))(q, k, v)
  per_query = 2 * 37 * 2
  for max_scores in (per_query, 5 * per_query, 36 * per_query):  # 37 chunks; 8 (padded); 2
    got = unet.attention(q, k, v, max_scores), jax.grad(loss(max_scores), argnums=(0, 1, 2))(q, k, v)
    _assert_close(got, want, 1e-5)
  # In the UNet: 8×12 tokens at level 1, chunked when the budget is below 2·96·96·2 scores.
  chunked = dataclasses.replace(TINY, attention_max_scores=5000)
  params = unet.random_params(TINY, seed=9)
  x, t = _x((2, 16, 24, 3), 10), jnp.array([3, 700])
  np.testing.assert_allclose(_apply(chunked, params, x, t), _apply(TINY, params, x, t), atol=1e-5)


def test_timestep_embedding_in_both_conventions():
  t = jnp.array([0, 5, 999])
  dim, half = 8, 4
  adm = unet.timestep_embedding(t, dim)  # guided-diffusion: [cos, sin], freqs 10000^(-i/half)
  freqs = np.exp(-math.log(10000) * np.arange(half) / half)
  args = np.asarray(t)[:, None] * freqs
  np.testing.assert_allclose(adm, np.concatenate([np.cos(args), np.sin(args)], 1), atol=1e-5)
  ddpm = unet.timestep_embedding(t, dim, flip_sin_to_cos=False, freq_shift=1)  # DDPM/diffusers
  freqs = np.exp(-math.log(10000) * np.arange(half) / (half - 1))
  args = np.asarray(t)[:, None] * freqs
  np.testing.assert_allclose(ddpm, np.concatenate([np.sin(args), np.cos(args)], 1), atol=1e-5)


def test_config_from_a_config_dict_and_bad_values():
  cfg = unet.UNetConfig(**{"channel_mult": [1, 2, 4], "attention_levels": [2]})
  assert cfg.channel_mult == (1, 2, 4) and cfg.size_multiple == 4
  hash(cfg)
  with pytest.raises(ValueError, match="attention level"):
    unet.UNetConfig(channel_mult=(1, 2), attention_levels=(2,))
  with pytest.raises(ValueError, match="attention heads"):
    bad = dataclasses.replace(TINY, num_heads=3)
    jax.eval_shape(lambda: unet.init_params(bad, jax.random.key(0), 16))
  flat = flax.traverse_util.flatten_dict(jax.eval_shape(
      lambda: unet.init_params(dataclasses.replace(TINY, resblock_updown=True),
                               jax.random.key(0), 16)))
  assert ("down_0_resample", "conv_1", "kernel") in flat  # a residual block resamples


@pytest.mark.parametrize("hw, stride, padding", [((1, 1), 1, ((1, 1), (1, 1))), ((2, 2), 1, ((1, 1), (1, 1))),
                                                 ((2, 2), 2, ((1, 1), (1, 1))), ((2, 3), 2, ((0, 1), (0, 1))),
                                                 ((1, 1), 2, ((0, 1), (0, 1))), ((4, 4), 1, ((1, 1), (1, 1))),
                                                 ((4, 8), 2, ((0, 1), (0, 1))), ((6, 5), 1, ((1, 1), (1, 1)))])
def test_small_input_convolution_is_lax_s(hw, stride, padding):
  """`unet.conv_nhwc` (a patch matrix product where the batch's output has at most 64 pixels) gives
  lax's values and gradients, empty-output and padding edge cases included."""
  from dcic_jax.diffusion.unet import conv_nhwc
  out = unet._patch_product_output((2, *hw, 5), (3, 3, 5, 4), (stride, stride), padding)
  assert out is None or 2 * out[0] * out[1] <= unet.SMALL_CONV_PIXELS or min(hw) < 3
  assert unet._patch_product_output((1, 8, 8, 5), (3, 3, 5, 4), (1, 1), ((1, 1), (1, 1))) == (8, 8)
  assert unet._patch_product_output((1, 9, 8, 5), (3, 3, 5, 4), (1, 1), ((1, 1), (1, 1))) is None
  assert unet._patch_product_output((2, 8, 8, 5), (3, 3, 5, 4), (1, 1), ((1, 1), (1, 1))) is None
  assert unet._patch_product_output((64, 2, 2, 5), (3, 3, 5, 4), (1, 1), ((1, 1), (1, 1))) == (2, 2)
  x = jax.random.normal(jax.random.key(0), (2, *hw, 5))
  w = jax.random.normal(jax.random.key(1), (3, 3, 5, 4))
  dims = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
  ref = lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=dims)
  ours = lambda x, w: conv_nhwc(x, w, (stride, stride), padding, dimension_numbers=dims)
  np.testing.assert_allclose(ours(x, w), ref(x, w), atol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  for g_ours, g_ref in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
    np.testing.assert_allclose(g_ours, g_ref, atol=1e-4)


def test_eps_fn_runs_a_cpu_batch_as_slices_with_the_batch_s_numbers(monkeypatch):
  """make_eps_fn cuts a batch into `cpu_batch_parts` independent slices on a CPU (concurrent
  there); ε and (ε, v) are those of the whole batch, and one image stays one call."""
  assert unet.cpu_batch_parts(1) == 1 and unet.cpu_batch_parts(6) in (1, 2, 3, 6)
  monkeypatch.setattr(unet.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
  assert [unet.cpu_batch_parts(b) for b in (1, 2, 3, 4, 6)] == [1, 2, 1, 2, 2]
  params = unet.random_params(TINY, seed=0)
  x, t = _x((4, 8, 8, 3), 3), jnp.array([1, 300, 600, 999])
  eps_fn = unet.make_eps_fn(unet.UNet(TINY))
  whole = unet.UNet(TINY).apply({"params": params}, x, t)
  np.testing.assert_allclose(jax.jit(eps_fn)(params, x, t), whole, atol=1e-5)
  eps, v = jax.jit(eps_fn.eps_and_v)(params, x, t)
  np.testing.assert_allclose(eps, whole, atol=1e-5)
  assert v.shape == x.shape
  one = jax.make_jaxpr(eps_fn)(params, x[:1], t[:1])
  two = jax.make_jaxpr(eps_fn)(params, x[:2], t[:2])
  assert len(two.eqns) > len(one.eqns)   # two slices: two copies of the network


@pytest.mark.parametrize("hw, kernel, stride, padding", [
    ((7, 6), 3, 1, ((1, 1), (1, 1))), ((8, 8), 3, 2, ((0, 1), (0, 1))), ((7, 9), 3, 2, ((1, 1), (1, 1))),
    ((5, 5), 1, 1, ((0, 0), (0, 0))), ((2, 2), 3, 2, ((1, 1), (1, 1)))])
def test_convolution_with_a_prepared_grad_kernel_has_autodiff_s_gradients(hw, kernel, stride, padding):
  """`conv_with_grad_kernel`: the same values as `conv_nhwc`, and the same gradients for x and w
  (the input's through the prepared reversed kernel, strided and small-input cases included);
  the prepared kernel itself gets none."""
  x = jax.random.normal(jax.random.key(0), (2, *hw, 5))
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, 5, 4))
  dims = ("NHWC", "HWIO", "NHWC")
  ref = lambda x, w: unet.conv_nhwc(x, w, (stride, stride), padding, dimension_numbers=dims)
  ours = lambda x, w, w_rev: unet.conv_with_grad_kernel(x, w, w_rev, (stride, stride), padding)
  w_rev = unet.reverse_kernel(w)
  np.testing.assert_array_equal(ours(x, w, w_rev), ref(x, w))
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))
  g_x, g_w, g_rev = jax.grad(loss(ours), (0, 1, 2))(x, w, w_rev)
  r_x, r_w = jax.grad(loss(ref), (0, 1))(x, w)
  np.testing.assert_allclose(g_x, r_x, atol=1e-4)
  np.testing.assert_allclose(g_w, r_w, atol=1e-4)
  assert not np.any(np.asarray(g_rev))


def test_grad_ready_params_give_the_same_eps_and_no_kernel_reversal_in_a_loop():
  """eps_fn on `prepare_for_input_grads(params)`: ε bit for bit and ∂ε/∂x to float rounding, and
  inside a `lax.scan` of ∂ε/∂x the compiled loop reverses no kernel (it does with plain params:
  XLA does not hoist the reversals out of the loop)."""
  cfg = dataclasses.replace(TINY, learn_sigma=False)
  params = unet.random_params(cfg, seed=0)
  eps_fn = unet.make_eps_fn(unet.UNet(cfg))
  ready = eps_fn.prepare_for_input_grads(params)
  assert ready.grad_kernels["conv_in"]["kernel"].shape == (3, 3, 16, 3)
  x, v, t = _x((1, 16, 16, 3), 1), _x((1, 16, 16, 3), 2), jnp.array([500])   # 16²: lax convolutions
  np.testing.assert_array_equal(eps_fn(ready, x, t), eps_fn(params, x, t))
  grad = lambda p, x: jax.grad(lambda x: jnp.sum(eps_fn(p, x, t) * v))(x)
  np.testing.assert_allclose(grad(ready, x), grad(params, x), rtol=1e-5, atol=1e-6)

  def loop(p, x):
    return jax.lax.scan(lambda x, _: (x - 1e-3 * grad(p, x), None), x, None, length=2)[0]
  opts = {"xla_backend_optimization_level": 0}
  hlo = {name: jax.jit(loop).lower(p, x).compile(compiler_options=opts).as_text()
         for name, p in (("plain", params), ("ready", ready))}
  reversals = {name: sum(" reverse(" in line for line in text.splitlines()) for name, text in hlo.items()}
  assert reversals["plain"] > 0 and reversals["ready"] == 0, reversals


@pytest.mark.parametrize("silu, scale_shift", [(False, False), (True, False), (True, True)])
def test_group_norm_is_flax_s_with_its_derivatives(silu, scale_shift):
  """`GroupNorm` (optionally with ADM's scale-shift and a SiLU): nn.GroupNorm's parameters and
  values, autodiff's gradients of that reference for x and the parameters, and a
  forward-over-reverse product (the `step_cap` of the penalty modes takes one through ε_θ)."""
  b, c, groups = 2, 12, 3
  x = _x((b, 5, 7, c), 0) * 3.0 + 1.5
  s_BC, t_BC = _x((b, c), 1), _x((b, c), 2)
  ct = _x(x.shape, 3)

  def ours(p, x):
    mod = (s_BC, t_BC) if scale_shift else None
    return unet.GroupNorm(groups, 1e-5).apply({"params": p}, x, mod, silu=silu)

  def ref(p, x):
    y = nn.GroupNorm(num_groups=groups, epsilon=1e-5).apply({"params": p}, x)
    if scale_shift:
      y = y * (1.0 + s_BC[:, None, None, :]) + t_BC[:, None, None, :]
    return jax.nn.silu(y) if silu else y

  params = {"scale": 1.0 + 0.1 * _x((c,), 4), "bias": 0.1 * _x((c,), 5)}
  assert jax.tree.map(jnp.shape, unet.GroupNorm(groups, 1e-5).init(jax.random.key(0), x)["params"]) \
      == jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(ours(params, x), ref(params, x), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda p, x: jnp.sum(f(p, x) * ct)
  for got, want in zip(jax.tree.leaves(jax.grad(loss(ours), (0, 1))(params, x)),
                       jax.tree.leaves(jax.grad(loss(ref), (0, 1))(params, x))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  d = _x(x.shape, 6)
  hvp = lambda f: jax.jvp(lambda x: jax.grad(loss(f), 1)(params, x), (x,), (d,))[1]
  np.testing.assert_allclose(hvp(ours), hvp(ref), rtol=1e-4, atol=1e-4)


def test_group_norm_forward_writes_nothing_the_size_of_x_but_its_output():
  """Evaluated, `group_norm_act` recomputes x − mean inside the variance's sum instead of writing
  it out (one full-size pass fewer: 0.94× the time of a UNet forward on XLA:CPU); the form it
  differentiates does write it."""
  x, g, b = _x((2, 16, 16, 8), 0), jnp.ones((2, 8)), jnp.zeros((2, 8))

  def full_size_values(fn):
    text = jax.jit(fn).lower(x, g, b).compile().as_text()
    entry = text[text.index("ENTRY"):]
    return sum(" = f32[2,16,16,8]" in line and " parameter(" not in line for line in entry.splitlines())
  assert full_size_values(lambda x, g, b: unet.group_norm_act(x, g, b, 4, 1e-5, True)) == 1
  assert full_size_values(lambda x, g, b: unet._normalise(x, g, b, 4, 1e-5, True, keep_centred=True)) == 2
