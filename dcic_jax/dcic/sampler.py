"""The DCIC decoder: reverse diffusion pulled toward the distortion and idempotence constraints.

DESIGN §2 is the specification. For one image (everything here is per image; `grid.py` vmaps it
over images and over (K_D, K_P) pairs), with N respaced steps and the key from the header seed:

  x = N(fold_in(key, N+1))                       (or a late start from x̂_b at step `start_step`)
  for i = N … 1 (one jax.lax.scan), t = τ_i, z_i = N(fold_in(key, i)):
    schedule mode: G inner optax steps on
        L(x) = K_D·w_D·ℓ_D(x̂0(x)) + K_P·w_P·ℓ_P(x̂0(x)) + λ·‖x − x⁰‖²,   step η₀·√ᾱ_t
        (with `step_cap`, at most the step to the minimum of the constraint term's quadratic model)
      grad="xt": x is x_t and the gradient runs through ε_θ (memory: the UNet's block-level
                 `remat` trades one extra forward for activations of one block at a time);
      grad="x0": x is x̂0 itself, the gradient runs through the codec only, ε is re-derived;
      then the DDIM(η) step from the result with z_i.
    dps mode (Chung et al. 2023; the Idempotence decoder of Xu et al. 2024 when K_D = 0):
      x' = DDIM(η) step from x_t, then x ← x' − ζ·∇_{x_t}[K_D·w_D·‖x̂0 − x̂_b‖ + K_P·w_P·‖r_P‖].
  return x̂0 of the last step (= x_0, since ᾱ_{τ_0} = 1).

With K_D = K_P = 0 the inner updates are exactly zero, so the result equals the plain DDIM(η)
sampler with the same key bit for bit (a test pins it). K_D and K_P are traced values: any grid
of them reuses one compiled program.

Noise is threefry2x32 with `jax_threefry_partitionable` pinned on (the header's PRNG tag), so a
decode is independent of the device count and of a future change of JAX defaults.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dcic_jax.dcic import constraints
from dcic_jax.dcic.constraints import CodecFns, Target
from dcic_jax.diffusion.samplers import (EpsFn, ddim_step, ddim_step_from_x0, predict_x0,
                                         step_coefs, step_noise)
from dcic_jax.diffusion.schedules import Schedule
from dcic_jax.errors import BitstreamError, UserError

PRNG_IMPL = "threefry2x32"   # the only tag this decoder reads (partitionable threefry, see above)
MODES = ("schedule", "dps")
GRADS = ("xt", "x0")
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class DCICConfig:
  """Static settings of a decode (everything but K_D, K_P, which are traced)."""
  num_steps: int = 100          # N: respaced reverse steps
  inner_steps: int = 1          # G: optax steps per outer step (schedule mode)
  mode: str = "schedule"        # "schedule" (CoPaint-style inner loop) or "dps" (one step after the sampler step)
  grad: str = "xt"              # "xt": gradient through ε_θ; "x0": through the codec only (schedule mode)
  optimizer: str = "sgd"        # inner optimiser, state reset every outer step: "sgd" or "adam"
  step_size: float = 0.5        # η₀ (schedule: step η₀·√ᾱ_t) or ζ (dps: fixed)
  step_cap: bool = False        # schedule: cap each inner step at the minimum of the constraint
                                # term's quadratic model along the update (one Hessian-vector
                                # product more per inner step)
  prox: float = 1.0             # λ: weight of ‖x − x⁰‖², which keeps G > 1 inner steps near the sampler's x
  eta: float = 1.0              # DDIM η of the sampler step (1: DDPM posterior variance, 0: deterministic)
  variant: str = "reconstruction"  # ℓ_P variant: "reconstruction" or "latent"
  hinge: float | None = None    # δ: hinge ℓ_D allowing a per-pixel MSE of δ ([−1, 1] units); None: plain
  start_step: int = 0           # 0: start from pure noise at τ_N; k in 1..N: start at τ_k from x̂_b (late start)
  w_d: float = 1.0              # calibration of ℓ_D (K_D = 1 is full strength for this codec/prior pair)
  w_p: float = 1.0              # calibration of ℓ_P

  def __post_init__(self):
    for name, value, allowed in (("mode", self.mode, MODES), ("grad", self.grad, GRADS),
                                 ("optimizer", self.optimizer, OPTIMIZERS),
                                 ("variant", self.variant, constraints.VARIANTS)):
      if value not in allowed:
        raise UserError(f"unknown DCIC {name} {value!r}; expected one of {', '.join(allowed)}")
    if self.num_steps < 1 or self.inner_steps < 0:
      raise UserError(f"DCIC needs num_steps >= 1 and inner_steps >= 0, got {self.num_steps}, "
                      f"{self.inner_steps}")
    if not 0 <= self.start_step <= self.num_steps:
      raise UserError(f"start_step {self.start_step} is outside 0..{self.num_steps}")
    if self.mode == "dps" and self.grad != "xt":
      raise UserError("dps mode differentiates through ε_θ: it needs grad='xt'")

def header_key(seed: int, prng_impl: str = PRNG_IMPL) -> jax.Array:
  """The decoder key from a header's 64-bit seed: raw threefry key data (hi, lo), no hashing."""
  if prng_impl != PRNG_IMPL:
    raise BitstreamError(f"file asks for PRNG {prng_impl!r}; this decoder implements {PRNG_IMPL!r}")
  seed = int(seed)
  if not 0 <= seed < 2**64:
    raise BitstreamError(f"seed {seed} is not a 64-bit unsigned integer")
  return jnp.asarray(np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32))


DecodeFn = Callable[[Any, Any, Target, jax.Array, jax.Array, jax.Array], jax.Array]


def make_decode_one(eps_fn: EpsFn, codec: CodecFns, schedule: Schedule, cfg: DCICConfig,
                    on_step: Callable[[Any], None] | None = None) -> DecodeFn:
  """`decode(prior_params, codec_params, target, key_data[2], k_d, k_p) -> x̂ [H, W, 3]` for ONE image.

  `target` holds one image's arrays (no batch axis), `key_data` the uint32 pair from `header_key`.
  Pure and unjitted: `grid.py` vmaps and jits it. `on_step(i)`, if given, is called on the host
  after every outer step (for progress bars).
  """
  n = schedule.num_steps
  first = cfg.start_step or n
  timesteps = jnp.asarray(schedule.timesteps, jnp.int32)
  inner_opt = optax.sgd(1.0) if cfg.optimizer == "sgd" else optax.adam(1.0)

  def decode(prior_params, codec_params, target: Target, key_data, k_d, k_p):
    key = jax.random.wrap_key_data(key_data, impl=PRNG_IMPL)
    target = jax.tree.map(lambda a: a[None], target)           # batch of one: [1, ...]
    shape = target.x_b.shape

    def constraint(u, squared: bool):
      """K_D·w_D·ℓ_D + K_P·w_P·ℓ_P at x̂0 = u (scalar, one image)."""
      if squared:
        l_d = constraints.distortion_loss(u, target, cfg.hinge)
        l_p = constraints.idempotence_loss(codec, codec_params, u, target, cfg.variant)
      else:
        l_d = constraints.safe_norm(constraints.distortion_residual(u, target))
        l_p = constraints.safe_norm(
            constraints.idempotence_residual(codec, codec_params, u, target, cfg.variant))
      return (k_d * cfg.w_d * l_d + k_p * cfg.w_p * l_p)[0]

    def inner(constraint_fn, x0, lr):
      """G optax steps on constraint_fn(x) + λ‖x − x0‖² from x0 (optimizer state reset here,
      every outer step)."""
      loss_fn = lambda x: constraint_fn(x) + cfg.prox * jnp.sum(jnp.square(x - x0))
      def body(_, carry):
        x, state = carry
        d, state = inner_opt.update(jax.grad(loss_fn)(x), state, x)
        step = capped_step(constraint_fn, x, d, lr) if cfg.step_cap else lr
        return x + step * d, state
      return jax.lax.fori_loop(0, cfg.inner_steps, body, (x0, inner_opt.init(x0)))[0]

    def capped_step(constraint_fn, x, d, lr):
      """min(lr, α*), α* = −⟨∇C, d⟩ / dᵀ∇²C d: the step to the minimum of the constraint term's
      quadratic model along the update d. A fixed η₀ that suits ℓ_D (curvature 2: η₀ = ½ lands
      on x̂_b, so K_D = 1 keeps its meaning) overshoots along a stiffer ℓ_P, and over the outer
      steps the overshoot grows into noise; a capped step cannot overshoot. Uncapped where the
      model has no minimum (dᵀ∇²C d ≤ 0) or d is not a descent direction."""
      g, hd = jax.jvp(jax.grad(constraint_fn), (x,), (d,))
      slope, curvature = jnp.vdot(g, d), jnp.vdot(d, hd)
      ok = (curvature > 0) & (slope < 0)
      return jnp.where(ok, jnp.minimum(lr, -slope / jnp.where(ok, curvature, 1.0)), lr)

    def schedule_step(x_t, i):
      t_B = jnp.full((1,), timesteps[i - 1], jnp.int32)
      c = step_coefs(schedule, i)
      z = step_noise(key, i, shape)
      lr = cfg.step_size * c.sqrt_ab_t
      if cfg.grad == "xt":
        x = inner(lambda x: constraint(predict_x0(x, eps_fn(prior_params, x, t_B), c), True),
                  x_t, lr)
        x_s, _ = ddim_step(x, eps_fn(prior_params, x, t_B), i, z, schedule, cfg.eta)
        return x_s
      u0 = predict_x0(x_t, eps_fn(prior_params, x_t, t_B), c)
      u = inner(lambda u: constraint(u, True), u0, lr)
      return ddim_step_from_x0(x_t, jnp.clip(u, -1.0, 1.0), i, z, schedule, cfg.eta)

    def dps_step(x_t, i):
      t_B = jnp.full((1,), timesteps[i - 1], jnp.int32)
      z = step_noise(key, i, shape)

      def guided(x):
        x_s, u = ddim_step(x, eps_fn(prior_params, x, t_B), i, z, schedule, cfg.eta)
        return constraint(u, False), x_s

      grad, x_s = jax.grad(guided, has_aux=True)(x_t)
      return x_s - cfg.step_size * grad

    step = schedule_step if cfg.mode == "schedule" else dps_step
    noise = step_noise(key, n + 1, shape)
    if first == n:
      x = noise
    else:
      c = step_coefs(schedule, first)
      x = c.sqrt_ab_t * target.x_b + c.sqrt_1m_ab_t * noise
    def body(x, i):
      x = step(x, i)
      if on_step is not None:
        jax.debug.callback(on_step, i)
      return x, None

    x, _ = jax.lax.scan(body, x, jnp.arange(first, 0, -1, dtype=jnp.int32))
    return x[0]

  return decode
