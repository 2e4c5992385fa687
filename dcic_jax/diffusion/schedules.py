"""Variance-preserving noise schedules and timestep respacing, in float64 numpy.

Ho et al. 2020 (DDPM): linear β_t from 1e-4 to 0.02 over T = 1000 steps, ᾱ_t = Π_{s≤t} (1 − β_s).
Nichol & Dhariwal 2021 (Improved DDPM): cosine ᾱ(t) = cos²(((t/T + s)/(1 + s))·π/2), β ≤ 0.999;
"respacing": a subset τ_1 < … < τ_N of the T steps is a diffusion of its own, with
β_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}} (ᾱ at τ_0 := 1), which is how DDIM (Song et al. 2021) and ADM
(Dhariwal & Nichol 2021) sample in N ≪ T steps.

Computed once on the host in float64 (the samplers cast to float32 on use), so the schedule never
depends on the accelerator's precision.
"""
import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
  """ᾱ at the N timesteps a sampler visits, in increasing order.

  Row i−1 holds step i of docs/design.md §2: `timesteps[i-1]` = τ_i (the t the network sees),
  `alphas_cumprod[i-1]` = ᾱ_{τ_i}, `alphas_cumprod_prev[i-1]` = ᾱ_{τ_{i−1}} (1 for i = 1).
  """
  timesteps: np.ndarray            # [N] int64, increasing, in 0..T−1
  alphas_cumprod: np.ndarray       # [N] float64
  alphas_cumprod_prev: np.ndarray  # [N] float64
  num_train_timesteps: int         # T of the schedule the network was trained with

  @property
  def num_steps(self) -> int:
    return len(self.timesteps)

  @property
  def betas(self) -> np.ndarray:
    """[N] β_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}: the β of the respaced chain."""
    return 1.0 - self.alphas_cumprod / self.alphas_cumprod_prev


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> np.ndarray:
  """[T] DDPM's linear β, rescaled so any T spans the same total noise as T = 1000 (as ADM)."""
  scale = 1000.0 / num_timesteps
  return np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)


def cosine_betas(num_timesteps: int = 1000, s: float = 0.008,
                 max_beta: float = 0.999) -> np.ndarray:
  """[T] Improved-DDPM cosine β, clipped at `max_beta` to avoid a singular last step."""
  def alpha_bar(u):
    return math.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2
  t = np.arange(num_timesteps)
  return np.array([min(1.0 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps),
                       max_beta) for i in t], dtype=np.float64)


def make_schedule(kind: str = "linear", num_timesteps: int = 1000) -> Schedule:
  """The full T-step schedule of kind "linear" or "cosine"."""
  if kind == "linear":
    betas = linear_betas(num_timesteps)
  elif kind == "cosine":
    betas = cosine_betas(num_timesteps)
  else:
    raise ValueError(f"unknown noise schedule {kind!r}: expected 'linear' or 'cosine'")
  alphas_cumprod = np.cumprod(1.0 - betas)
  return Schedule(timesteps=np.arange(num_timesteps, dtype=np.int64),
                  alphas_cumprod=alphas_cumprod,
                  alphas_cumprod_prev=np.concatenate([[1.0], alphas_cumprod[:-1]]),
                  num_train_timesteps=num_timesteps)


def space_timesteps(num_timesteps: int, num_steps: int, power: float = 1.0) -> np.ndarray:
  """[N] steps of 0..T−1, always including 0 and T−1: evenly spaced (ADM's rounding rule), or for
  `power` p > 1 at (T−1)·(i/(N−1))^p, denser at low noise (p = 2: DDIM's "quad" spacing), each
  moved up to at least one above the step before.

  Keeping T−1 makes the first sampler step start from pure noise, as the DCIC decoder assumes.
  """
  if not 1 <= num_steps <= num_timesteps:
    raise ValueError(f"cannot respace {num_timesteps} timesteps to {num_steps} steps")
  if not power >= 1.0:
    raise ValueError(f"spacing power {power} is not >= 1")
  if num_steps == 1:
    return np.array([num_timesteps - 1], dtype=np.int64)
  if power == 1.0:
    stride = (num_timesteps - 1) / (num_steps - 1)
    steps = np.array([round(i * stride) for i in range(num_steps)], dtype=np.int64)
  else:
    steps = np.round((num_timesteps - 1) * (np.arange(num_steps) / (num_steps - 1)) ** power)
    steps = steps.astype(np.int64)
    for i in range(1, num_steps):
      steps[i] = max(steps[i], steps[i - 1] + 1)
    if steps[-1] != num_timesteps - 1:
      raise ValueError(f"cannot space {num_steps} steps over {num_timesteps} with power {power}")
  assert len(np.unique(steps)) == num_steps
  return steps


def respace(schedule: Schedule, num_steps: int | None = None,
            timesteps: np.ndarray | None = None, power: float = 1.0) -> Schedule:
  """Restrict a full schedule to N steps spaced by `space_timesteps` (or to the given increasing
  `timesteps`)."""
  if schedule.num_steps != schedule.num_train_timesteps:
    raise ValueError("respace() takes the full schedule from make_schedule()")
  if timesteps is None:
    if num_steps is None:
      raise ValueError("respace() needs num_steps or timesteps")
    timesteps = space_timesteps(schedule.num_train_timesteps, num_steps, power)
  timesteps = np.asarray(timesteps, dtype=np.int64)
  if np.any(np.diff(timesteps) <= 0) or timesteps[0] < 0 or \
      timesteps[-1] >= schedule.num_train_timesteps:
    raise ValueError("timesteps must increase strictly within "
                     f"0..{schedule.num_train_timesteps - 1}")
  alphas_cumprod = schedule.alphas_cumprod[timesteps]
  return Schedule(timesteps=timesteps, alphas_cumprod=alphas_cumprod,
                  alphas_cumprod_prev=np.concatenate([[1.0], alphas_cumprod[:-1]]),
                  num_train_timesteps=schedule.num_train_timesteps)
