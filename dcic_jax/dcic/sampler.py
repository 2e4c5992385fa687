"""The DCIC decoder: reverse diffusion pulled toward the distortion and idempotence constraints.

For one image (everything here is per image; `grid.py` vmaps it over images and over (K_D, K_P)
pairs), with N respaced steps and the key from the header seed:

  x = N(fold_in(key, N+1))                       (or a late start from x̂_b at step `start_step`)
  for i = N … 1 (one jax.lax.scan), t = τ_i, z_i = N(fold_in(key, i)):
    project mode (default; `projections.py` has the two sets):
      u = x̂0(x_t)                                              the prior's estimate
      u ← u + K_D·(Π_B(u) − u)                                   distortion: toward the ball B
      u ← u + K_P·(E[u0 | Q(g_a(u0)) = ŷ, u0 ~ N(u, v_t·I)] − u)   idempotence: toward the cells
                                                    (`idem_draw`: a draw of u0 instead of its mean)
      then the DDIM(η) step from x_t with x̂0 = u.
    schedule mode: G inner optax steps on
        L(x) = K_D·w_D·ℓ_D(x̂0(x)) + K_P·w_P·ℓ_P(x̂0(x)) + λ·‖x − x⁰‖²,   step η₀·√ᾱ_t
        (with `step_cap`, at most the step to the minimum of the constraint term's quadratic model)
      grad="xt": x is x_t and the gradient runs through ε_θ (memory: the UNet's block-level
                 `remat` trades one extra forward for activations of one block at a time);
      grad="x0": x is x̂0 itself, the gradient runs through the codec only, ε is re-derived;
      then the DDIM(η) step from the result with z_i.
    dps mode (Chung et al. 2023; the Idempotence decoder of Xu et al. 2024 when K_D = 0):
      x' = DDIM(η) step from x_t, then x ← x' − ζ·∇_{x_t}[K_D·w_D·‖x̂0 − x̂_b‖ + K_P·w_P·‖r_P‖].
  project mode, after the last step (t = 0): u ← u + K_D·(Π_B(u) − u), u ← u + K_P·(Π_I(u) − u).
  return x̂0 of the last step (= x_0, since ᾱ_{τ_0} = 1).

In project mode K_D and K_P are fractions of the way to each constraint's set, so they mean the
same for every codec, prior, image size and step count, with no step size: K = 0 leaves the
constraint off, K = 1 puts every step's x̂0 in the distortion ball / at the idempotent mean and
makes the output idempotent (re-encoding it gives ŷ). v_t = Var[x0 | x_t] is the variance for
N(0, σ²) data, σ²(1−ᾱ_t)/(ᾱ_t·σ² + 1−ᾱ_t), σ = `data_std` (`x0_var="gaussian"`), or the prior's
own estimate for the image, √((1−ᾱ_t)/ᾱ_t)·mean(ε̂·x̂0) (`x0_var="eps"`). docs/dcic.md explains
the choices. The penalty modes keep the calibrated weights w_D, w_P (`calibrate.py`) for comparison.

With K_D = K_P = 0 the updates are exactly zero, so the result is the plain DDIM(η) sampler with
the same key (bit for bit in the penalty modes; in the project mode to a few ulps, as XLA fuses
that larger program differently: docs/dcic.md, Determinism). K_D and K_P are traced values: any
grid of them reuses one compiled program.

Noise is threefry2x32 with `jax_threefry_partitionable` pinned on (the header's PRNG tag), so the
noise does not depend on the device count or on a future change of JAX defaults. Keys:
fold_in(key, N+1) start noise, fold_in(key, i) step i's noise, fold_in(key, N+2) and N+3 the
probes of `projections.latent_gain` and `projections.quantisation_error`, fold_in(key, N+3+i)
step i's latent draws (`idem_draw` only).
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dcic_jax.dcic import constraints, projections
from dcic_jax.diffusion import learned_sigma
from dcic_jax.dcic.constraints import CodecFns, Target
from dcic_jax.diffusion.samplers import (EpsFn, StepCoefs, ddim_step, ddim_step_from_x0,
                                         predict_x0, step_coefs, step_noise)
from dcic_jax.diffusion.schedules import Schedule, respace
from dcic_jax.errors import BitstreamError, UserError

PRNG_IMPL = "threefry2x32"   # the only tag this decoder reads (partitionable threefry, see above)
MODES = ("project", "schedule", "dps")
X0_VARS = ("eps", "gaussian")
GRADS = ("xt", "x0")
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class DCICConfig:
  """Static settings of a decode (everything but K_D, K_P, which are traced)."""
  num_steps: int = 100          # N: respaced reverse steps
  mode: str = "project"         # "project" (K = fraction of the way to each constraint's set),
                                # "schedule" (penalty, CoPaint-style inner loop) or "dps" (penalty,
                                # one gradient step after the sampler step)
  eta: float = 1.0              # DDIM η of the sampler step (1: DDPM posterior variance, 0: deterministic)
  start_step: int = 0           # 0: start from pure noise at τ_N; k in 1..N: start at τ_k from x̂_b (late start)
  spacing_power: float = 1.0    # p: the N steps at (T−1)·(i/(N−1))^p; 1 evenly spaced, 2 quadratic (denser at low noise)
  # project mode:
  ball: float = 0.02            # κ: the distortion set is ‖u − x̂_b‖² ≤ κ·D_q (0: the point x̂_b)
  margin: float = 0.05          # the final idempotence projection aims this far inside each cell (latent units)
  cg_iters: int = 4             # conjugate-gradient iterations of each idempotence step
  x0_var: str = "gaussian"      # v_t = Var[x0 | x_t] of the idempotence step: "gaussian", the
                                # variance for N(0, data_std²) data; "eps", the prior's own
                                # estimate per image and step, from ε̂ and x̂0 (docs/dcic.md)
  data_std: float = 0.5         # σ of the data in [−1, 1] units, for x0_var="gaussian"
  idem_draw: bool = False       # idempotence step: draw the latents from their truncated normals
                                # (posterior sampling) instead of taking their mean (docs/dcic.md)
  # schedule and dps modes (penalty form):
  inner_steps: int = 1          # G: optax steps per outer step (schedule mode)
  grad: str = "xt"              # "xt": gradient through ε_θ; "x0": through the codec only (schedule mode)
  optimizer: str = "sgd"        # inner optimiser, state reset every outer step: "sgd" or "adam"
  step_size: float = 0.5        # η₀ (schedule: step η₀·√ᾱ_t) or ζ (dps: fixed)
  step_cap: bool = False        # schedule: cap each inner step at the minimum of the constraint
                                # term's quadratic model along the update (one Hessian-vector
                                # product more per inner step)
  prox: float = 1.0             # λ: weight of ‖x − x⁰‖², which keeps G > 1 inner steps near the sampler's x
  variant: str = "reconstruction"  # ℓ_P variant: "reconstruction" or "latent"
  hinge: float | None = None    # δ: hinge ℓ_D allowing a per-pixel MSE of δ ([−1, 1] units); None: plain
  w_d: float = 1.0              # calibration of ℓ_D (K_D = 1 is full strength for this codec/prior pair)
  w_p: float = 1.0              # calibration of ℓ_P

  def __post_init__(self):
    for name, value, allowed in (("mode", self.mode, MODES), ("grad", self.grad, GRADS),
                                 ("x0_var", self.x0_var, X0_VARS),
                                 ("optimizer", self.optimizer, OPTIMIZERS),
                                 ("variant", self.variant, constraints.VARIANTS)):
      if value not in allowed:
        raise UserError(f"unknown DCIC {name} {value!r}; expected one of {', '.join(allowed)}")
    if self.num_steps < 1 or self.inner_steps < 0:
      raise UserError(f"DCIC needs num_steps >= 1 and inner_steps >= 0, got {self.num_steps}, "
                      f"{self.inner_steps}")
    if not 0 <= self.start_step <= self.num_steps:
      raise UserError(f"start_step {self.start_step} is outside 0..{self.num_steps}")
    if not self.spacing_power >= 1.0:
      raise UserError(f"spacing_power must be >= 1, got {self.spacing_power}")
    if self.mode == "dps" and self.grad != "xt":
      raise UserError("dps mode differentiates through ε_θ: it needs grad='xt'")
    if self.ball < 0 or not 0 <= self.margin < 0.5 or self.cg_iters < 1 or not self.data_std > 0:
      raise UserError(f"project mode needs ball >= 0, 0 <= margin < 0.5, cg_iters >= 1 and "
                      f"data_std > 0, got {self.ball}, {self.margin}, {self.cg_iters}, {self.data_std}")


def decode_schedule(full: Schedule, cfg: DCICConfig) -> Schedule:
  """The prior's full schedule restricted to a decode's steps: `num_steps` of them, spaced by
  `spacing_power`. The one place a decode's steps are chosen."""
  return respace(full, cfg.num_steps, power=cfg.spacing_power)


def config_from(fields, **overrides) -> DCICConfig:
  """A DCICConfig from any mapping that names its fields (a config block, parsed flags); other keys
  are ignored, `overrides` win. The one place a study's or a command line's settings become one."""
  names = {f.name for f in dataclasses.fields(DCICConfig)}
  return DCICConfig(**{**{k: v for k, v in dict(fields).items() if k in names}, **overrides})


def check_factors(cfg: DCICConfig, values) -> None:
  """One clear line for factors outside their meaningful range: [0, 1] in the project mode (a
  fraction of the way to a constraint), ≥ 0 in the penalty modes (a weight)."""
  values = [float(v) for v in values]
  high = 1.0 if cfg.mode == "project" else float("inf")
  bad = [v for v in values if not 0.0 <= v <= high]
  if bad:
    meaning = ("fractions of the way to each constraint, in [0, 1]" if cfg.mode == "project"
               else "penalty weights, finite and >= 0")
    raise UserError(f"K_D and K_P are {meaning} in {cfg.mode} mode; got {bad[0]:g}")


def header_key(seed: int, prng_impl: str = PRNG_IMPL) -> jax.Array:
  """The decoder key from a header's 64-bit seed: raw threefry key data (hi, lo), no hashing."""
  if prng_impl != PRNG_IMPL:
    raise BitstreamError(f"file asks for PRNG {prng_impl!r}; this decoder implements {PRNG_IMPL!r}")
  seed = int(seed)
  if not 0 <= seed < 2**64:
    raise BitstreamError(f"seed {seed} is not a 64-bit unsigned integer")
  return jnp.asarray(np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32))


def x0_variance(schedule: Schedule, data_std: float) -> np.ndarray:
  """[N] float64 v_t = Var[x0 | x_t] = σ²(1−ᾱ_t)/(ᾱ_t·σ² + 1−ᾱ_t) for N(0, σ²) data, per step."""
  ab = np.asarray(schedule.alphas_cumprod, np.float64)
  return data_std**2 * (1.0 - ab) / (ab * data_std**2 + 1.0 - ab)


def x0_variance_from_eps(x_t: jax.Array, eps: jax.Array, c: StepCoefs) -> jax.Array:
  """[B, 1, …, 1] Var[x0 | x_t] averaged over each image's values, from the prior's own ε̂.

  With x̂0, ε̂ the MMSE estimates (x_t = √ᾱ·x̂0 + √(1−ᾱ)·ε̂ exactly), E⟨ε̂, x_t⟩ = E⟨ε, x_t⟩ =
  √(1−ᾱ)·d, so E‖ε − ε̂‖² = d − E‖ε̂‖² = √ᾱ/√(1−ᾱ)·E⟨ε̂, x̂0⟩, and the variance per value is
  √((1−ᾱ)/ᾱ)·⟨ε̂, x̂0⟩/d: the quantity Analytic-DPM (Bao et al., ICLR 2022) estimates over a data
  set, here from one image at one step, at no cost. Written with ⟨ε̂, x̂0⟩ rather than 1 − ‖ε̂‖²/d,
  one image's estimate is within a few per cent at every noise level (the latter is the small
  difference of two numbers near 1 at high noise). For Gaussian data it is `x0_variance` in
  expectation; for photos it is what the prior knows, far below the white-Gaussian formula's at
  mid and low noise. Clamped at 0.
  """
  x0 = predict_x0(x_t, eps, c, clip=False)
  dot = jnp.mean(eps * x0, axis=tuple(range(1, eps.ndim)), keepdims=True)
  return jnp.maximum(c.sqrt_1m_ab_t * c.inv_sqrt_ab_t * dot, 0.0)


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
  v_gauss = jnp.asarray(x0_variance(schedule, cfg.data_std), jnp.float32)   # [N], step i at i − 1

  def decode(prior_params, codec_params, target: Target, key_data, k_d, k_p):
    key = jax.random.wrap_key_data(key_data, impl=PRNG_IMPL)
    if cfg.mode == "dps" or (cfg.mode == "schedule" and cfg.grad == "xt"):
      # These steps differentiate ε_θ with respect to x: its kernels are prepared once, here.
      prior_params = getattr(eps_fn, "prepare_for_input_grads", lambda p: p)(prior_params)
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
      """The Idempotence decoder's step: an ancestral step (with the prior's learned variance
      where it has one, as its authors sample), then x ← x' − ζ·∇_{x_t} constraint."""
      t_B = jnp.full((1,), timesteps[i - 1], jnp.int32)
      z = step_noise(key, i, shape)
      eps_and_v = learned_sigma.learned_variance_fn(eps_fn)

      def guided(x):
        if eps_and_v is None:
          x_s, u = ddim_step(x, eps_fn(prior_params, x, t_B), i, z, schedule, cfg.eta)
        else:
          x_s, u = learned_sigma.ddpm_learned_step(x, *eps_and_v(prior_params, x, t_B), i, z,
                                                   schedule)
        return constraint(u, False), x_s

      grad, x_s = jax.grad(guided, has_aux=True)(x_t)
      return x_s - cfg.step_size * grad

    def project(u, k_p_step):
      """The two constraint steps on x̂0 = u, in this order; `k_p_step(u)` is the idempotence target.
      A factor of 0 leaves u untouched whatever its target holds (0·NaN would not)."""
      u = jnp.where(k_d > 0, u + k_d * (projections.ball_projection(u, target.x_b, radius_sq) - u), u)
      return jnp.where(k_p > 0, u + k_p * (k_p_step(u) - u), u)

    def project_step(x_t, i):
      t_B = jnp.full((1,), timesteps[i - 1], jnp.int32)
      c = step_coefs(schedule, i)
      z = step_noise(key, i, shape)
      eps = eps_fn(prior_params, x_t, t_B)
      u = predict_x0(x_t, eps, c)
      var = x0_variance_from_eps(x_t, eps, c) if cfg.x0_var == "eps" else v_gauss[i - 1]
      draw_key = jax.random.fold_in(key, n + 3 + i) if cfg.idem_draw else None
      u = project(u, lambda v: projections.conditional_mean(codec, codec_params, v, target, var,
                                                            gain, cfg.cg_iters, draw_key))
      return ddim_step_from_x0(x_t, jnp.clip(u, -1.0, 1.0), i, z, schedule, cfg.eta)

    if cfg.mode == "project":
      radius_sq = cfg.ball * projections.quantisation_error(codec, codec_params, target,
                                                            jax.random.fold_in(key, n + 3))
      gain = projections.latent_gain(codec, codec_params, target, jax.random.fold_in(key, n + 2))
    step = {"project": project_step, "schedule": schedule_step, "dps": dps_step}[cfg.mode]
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
    if cfg.mode == "project":   # t = 0: the last step's x̂0 into the sets, idempotence exactly
      x = jnp.clip(project(x, lambda v: projections.projection(codec, codec_params, v, target,
                                                               cfg.margin, cg_iters=cfg.cg_iters)),
                   -1.0, 1.0)
    return x[0]

  return decode
