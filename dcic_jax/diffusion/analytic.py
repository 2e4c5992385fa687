"""Analytic diffusion priors: Gaussian-mixture data with the exact ε*(x_t, t) at every t.

For data x0 ~ Σ_k π_k N(m_k, S_k) (over the channel axis, or i.i.d. per element when the event
dimension is 1), x_t = √ᾱ·x0 + √(1−ᾱ)·ε is again a mixture, Σ_k π_k N(√ᾱ·m_k, ᾱ·S_k + (1−ᾱ)·I),
and Tweedie's formula gives the network-free optimum of the ε-prediction loss

  ε*(x_t, t) = E[ε | x_t] = −√(1−ᾱ)·∇ log p_t(x_t)
             = √(1−ᾱ)·Σ_k r_k(x_t)·(ᾱ·S_k + (1−ᾱ)·I)⁻¹·(x_t − √ᾱ·m_k),

with r_k the posterior responsibilities. With this ε the DCIC decoder's only approximations are
its own (respacing, guidance), which is what the analytic rate–distortion–perception check needs
(`experiments/analytic_rdp.py`). `gaussian(std)` reproduces `samplers.gaussian_eps_fn`.

The 1-D helpers (float64 numpy) give exact partial moments, quantiles and W2 against discrete
distributions for a 1-D mixture: the reference side of every perception number in that check.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from dcic_jax.diffusion import prior as prior_lib
from dcic_jax.diffusion import schedules
from dcic_jax.diffusion.samplers import EpsFn


@dataclasses.dataclass(frozen=True, eq=False)
class Mixture:
  """Σ_k π_k N(m_k, S_k) in C dimensions (float64). C = 1: every array element is one i.i.d. draw."""
  weights: np.ndarray  # [K], sums to 1
  means: np.ndarray    # [K, C]
  covs: np.ndarray     # [K, C, C], symmetric positive definite

  def __post_init__(self):
    w, m, s = (np.asarray(a, np.float64) for a in (self.weights, self.means, self.covs))
    if w.ndim != 1 or m.shape != (w.size, m.shape[-1]) or s.shape != m.shape + (m.shape[-1],):
      raise ValueError(f"mixture shapes do not match: {w.shape}, {m.shape}, {s.shape}")
    if np.any(w <= 0) or abs(w.sum() - 1.0) > 1e-9:
      raise ValueError(f"mixture weights must be positive and sum to 1, got {w}")
    if np.any(np.linalg.eigvalsh(s) <= 0):
      raise ValueError("mixture covariances must be positive definite")
    for name, a in (("weights", w), ("means", m), ("covs", 0.5 * (s + np.swapaxes(s, 1, 2)))):
      object.__setattr__(self, name, a)

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  def marginal(self, direction: np.ndarray) -> "Mixture":
    """The 1-D mixture of vᵀx (v: [C]); a coordinate when v is a unit vector."""
    v = np.asarray(direction, np.float64)
    return Mixture(self.weights, (self.means @ v)[:, None],
                   np.einsum("i,kij,j->k", v, self.covs, v)[:, None, None])

  @property
  def mean(self) -> np.ndarray:
    return self.weights @ self.means

  @property
  def cov(self) -> np.ndarray:
    """[C, C] total covariance."""
    d = self.means - self.mean
    return np.einsum("k,kij->ij", self.weights, self.covs) + np.einsum("k,ki,kj->ij", self.weights, d, d)


def gaussian(std: float) -> Mixture:
  """Scalar N(0, std²), i.i.d. per element (`analytic:STD` of `diffusion/prior.py`)."""
  return Mixture(np.ones(1), np.zeros((1, 1)), np.full((1, 1, 1), float(std) ** 2))


def mixture_1d(weights, means, stds) -> Mixture:
  """Scalar Σ_k π_k N(m_k, s_k²), i.i.d. per element."""
  w, m, s = (np.asarray(a, np.float64).reshape(-1) for a in (weights, means, stds))
  return Mixture(w / w.sum(), m[:, None], (s**2)[:, None, None])


def correlated_gaussian(cov) -> Mixture:
  """N(0, cov) over the channel axis (one draw per pixel)."""
  cov = np.asarray(cov, np.float64)
  return Mixture(np.ones(1), np.zeros((1, cov.shape[0])), cov[None])


def eps_fn(mixture: Mixture, full_schedule: schedules.Schedule) -> EpsFn:
  """The exact ε*(x_t, t) of the mixture; `params` is ignored, t indexes `full_schedule`.

  x_t is [B, H, W, C] with C = mixture.dim, or any channel count for a scalar mixture.
  """
  ab_T = jnp.asarray(full_schedule.alphas_cumprod, jnp.float32)
  lam, u = np.linalg.eigh(mixture.covs)            # S_k = U_k diag(λ_k) U_kᵀ
  lam_KC = jnp.asarray(lam, jnp.float32)
  u_KCC = jnp.asarray(u, jnp.float32)
  m_KC = jnp.asarray(mixture.means, jnp.float32)
  log_w_K = jnp.asarray(np.log(mixture.weights), jnp.float32)
  c = mixture.dim

  def eps(params, x_t, t_B):
    del params
    shape = x_t.shape
    x = x_t[..., None] if c == 1 else x_t           # [B, ..., C]
    if x.shape[-1] != c:
      raise ValueError(f"the mixture has {c} channels, x_t has shape {shape}")
    ab = ab_T[t_B].reshape((-1,) + (1,) * (x.ndim - 1))[..., None]  # [B, 1, …, 1, 1]
    # Coordinates of x_t − √ᾱ·m_k in the eigenbasis of S_k: [B, ..., K, C].
    z = jnp.einsum("...kc,kcd->...kd", x[..., None, :] - jnp.sqrt(ab) * m_KC, u_KCC)
    var = ab * lam_KC + (1.0 - ab)                    # [B, 1, …, K, C]
    log_r = log_w_K - 0.5 * jnp.sum(jnp.log(var) + z**2 / var, axis=-1)
    r = jax.nn.softmax(log_r, axis=-1)                # [B, ..., K]
    score = jnp.einsum("...k,...kd,kcd->...c", r, z / var, u_KCC)
    return (jnp.sqrt(1.0 - ab[..., 0]) * score).reshape(shape)

  return eps


def make_prior(mixture: Mixture, name: str = "analytic-mixture") -> prior_lib.Prior:
  """A `Prior` (linear β, T = 1000, like `analytic:STD`) for the DCIC decoder, unchanged."""
  full = schedules.make_schedule("linear", 1000)
  return prior_lib.Prior(name, eps_fn(mixture, full), None, full)


def sample(mixture: Mixture, key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
  """Exact float64 draws of shape [..., C] (scalar mixture: any shape, i.i.d. elements)."""
  c = mixture.dim
  n = int(np.prod(shape)) // c
  key_k, key_z = jax.random.split(key)
  k = np.asarray(jax.random.choice(key_k, len(mixture.weights), (n,), p=jnp.asarray(mixture.weights)))
  z = np.asarray(jax.random.normal(key_z, (n, c)), np.float64)
  chol = np.linalg.cholesky(mixture.covs)
  x = mixture.means[k] + np.einsum("nij,nj->ni", chol[k], z)
  return x.reshape(shape)


# ---- 1-D mixtures: exact moments, quantiles and W2 (float64) ------------------------------------


def _components(mix: Mixture):
  if mix.dim != 1:
    raise ValueError("1-D helpers need a scalar mixture (use Mixture.marginal)")
  return mix.weights, mix.means[:, 0], np.sqrt(mix.covs[:, 0, 0])


def cdf(mix: Mixture, x) -> np.ndarray:
  w, m, s = _components(mix)
  x = np.asarray(x, np.float64)
  return np.sum(w * scipy.special.ndtr((x[..., None] - m) / s), axis=-1)


def _upper_tail_sums(mix: Mixture, x) -> np.ndarray:
  """1 − F(x), accurate in the upper tail."""
  w, m, s = _components(mix)
  x = np.asarray(x, np.float64)
  return np.sum(w * scipy.special.ndtr(-(x[..., None] - m) / s), axis=-1)


def quantile(mix: Mixture, q) -> np.ndarray:
  """F⁻¹(q) by bisection (±inf at q = 0, 1)."""
  w, m, s = _components(mix)
  q = np.asarray(q, np.float64)
  x = np.empty(q.shape)
  # Bisect in whichever tail is accurate: F for q < ½, 1 − F for q ≥ ½ (64 halvings of a bracket
  # of ±40 standard deviations reach float64 resolution).
  for lower in (True, False):
    sel = (q < 0.5) if lower else (q >= 0.5)
    target = q[sel] if lower else 1.0 - q[sel]
    lo = np.full(target.shape, (m - 40 * s).min())
    hi = np.full(target.shape, (m + 40 * s).max())
    for _ in range(64):
      mid = 0.5 * (lo + hi)
      below = cdf(mix, mid) < target if lower else _upper_tail_sums(mix, mid) > target
      lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    x[sel] = 0.5 * (lo + hi)
  return np.where(q <= 0, -np.inf, np.where(q >= 1, np.inf, x))


def partial_moments(mix: Mixture, a, b, center=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(∫_a^b p, ∫_a^b (x−c)·p, ∫_a^b (x−c)²·p) for intervals [a, b] (±inf allowed), elementwise.

  Per component N(m, s²), with α, β the standardised ends and d = m − c:
  M0 = Φ(β) − Φ(α), M1 = d·M0 + s·(φ(α) − φ(β)), M2 = (d² + s²)·M0 + 2ds·(φ(α) − φ(β)) + s²·(αφ(α) − βφ(β)).
  Φ differences are taken in whichever tail keeps them accurate.
  """
  w, m, s = _components(mix)
  a, b, c = (np.asarray(v, np.float64)[..., None] for v in (a, b, center))
  alpha, beta = (a - m) / s, (b - m) / s
  upper = alpha > 0
  m0 = np.where(upper, scipy.special.ndtr(-alpha) - scipy.special.ndtr(-beta),
                scipy.special.ndtr(beta) - scipy.special.ndtr(alpha))
  phi = lambda v: np.where(np.isfinite(v), np.exp(-0.5 * np.square(np.where(np.isfinite(v), v, 0.0))),
                           0.0) / np.sqrt(2 * np.pi)
  v_phi = lambda v: np.where(np.isfinite(v), np.where(np.isfinite(v), v, 0.0) * phi(v), 0.0)
  dphi = phi(alpha) - phi(beta)
  d = m - c
  m1 = d * m0 + s * dphi
  m2 = (d**2 + s**2) * m0 + 2 * d * s * dphi + s**2 * (v_phi(alpha) - v_phi(beta))
  return tuple(np.sum(w * v, axis=-1) for v in (m0, m1, m2))


def w2_sq_to_atoms(mix: Mixture, atoms, masses=None) -> float:
  """Exact W2²(p, Σ_j m_j δ_{a_j}) for the 1-D mixture p (atoms: samples, masses default 1/n).

  The monotone coupling sends atom j (in sorted order) to the quantile slice
  (F⁻¹(F_{j−1}), F⁻¹(F_j)] of p, F_j the cumulative atom mass; the cost is a partial moment.
  """
  atoms = np.asarray(atoms, np.float64).reshape(-1)
  masses = np.full(atoms.size, 1.0 / atoms.size) if masses is None else \
      np.asarray(masses, np.float64).reshape(-1)
  order = np.argsort(atoms, kind="stable")
  atoms, masses = atoms[order], masses[order] / masses.sum()
  cum = np.concatenate([[0.0], np.cumsum(masses)])
  cum[-1] = 1.0
  edges = quantile(mix, cum)
  return float(np.sum(partial_moments(mix, edges[:-1], edges[1:], atoms)[2]))
