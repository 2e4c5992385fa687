"""A toy transform codec with a known optimum: orthonormal transform + uniform scalar quantiser.

  y = Wᵀ·u / Δ  (u = 2·x01 − 1 per pixel, W: [C, C] orthonormal),   ŷ = round(y)  (μ = 0),
  g_s(ŷ) = (W·c(ŷ) + 1) / 2,  c_i(k) = E[Y_i·Δ | Y_i·Δ ∈ cell k]  (centroid decoder)  or  k·Δ (midpoint).

It obeys the contract the DCIC constraints use (`constraints.CodecFns`: pure `g_a`, `g_s` of
(params, array), latents [B, H, W, C] with the decoded means μ = 0), so the real decoder runs on it
unchanged. With a source whose transform coefficients are independent (a scalar source and W = I,
or a Gaussian and W its KLT) the centroid decoder is the MMSE decoder X* = E[X | Ŷ], so its
distortion D* and its output law p_X* are computable exactly cell by cell (`cell_theory`), and so
is the distortion–perception bound of Freirich, Michaeli & Meir (NeurIPS 2021):

  D(P) = D* + [(W2(p_X, p_X*) − √P)₊]²,    P = W2²(p_X, p_X̂).

For ordered interval cells the monotone coupling between p_X and p_X* sends each centroid to its
own cell, so W2²(p_X, p_X*) = Σ_k ∫_cell (x − c_k)² p = D*: the bound's P = 0 end is the posterior
sample X̂ ~ p(X | Ŷ), at D = 2·D*.

The centroids are a float64 table over a fixed range of cell indexes (`MAX_INDEX`, the same for
every Δ so one compiled decoder serves all steps), linearly interpolated between indexes: exact at
integers (what the straight-through rounding feeds forward) with slope c(k+1) − c(k) (what it
feeds back). Not in the codec registry: it has no entropy model or bitstream.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.dcic.constraints import CodecFns, from_codec, to_codec
from dcic_jax.diffusion import analytic

DECODERS = ("centroid", "midpoint")


@dataclasses.dataclass(frozen=True)
class CellTheory:
  """One 1-D quantiser on one 1-D source: everything the bound needs, per scalar coefficient."""
  index: np.ndarray      # [J] cell indexes k (cells ((k − ½)Δ, (k + ½)Δ])
  mass: np.ndarray       # [J] P(cell)
  centroid: np.ndarray   # [J] E[X | cell]
  d_star: float          # E[(X − E[X|Ŷ])²]
  entropy_bits: float    # H(Ŷ): the ideal rate, bits per coefficient


def cell_theory(source_1d: analytic.Mixture, step: float, tail: float = 12.0) -> CellTheory:
  """Cells carrying all but ~1e-30 of the mass, their centroids and D*, by exact partial moments."""
  w, m, s = analytic._components(source_1d)
  lo = math.floor(((m - tail * s).min()) / step - 0.5)
  hi = math.ceil(((m + tail * s).max()) / step + 0.5)
  k = np.arange(lo, hi + 1)
  a, b = (k - 0.5) * step, (k + 0.5) * step
  a[0], b[-1] = -np.inf, np.inf          # the end cells take the (negligible) rest of the line
  mass, m1, _ = analytic.partial_moments(source_1d, a, b)
  keep = mass > 0
  k, a, b, mass, m1 = k[keep], a[keep], b[keep], mass[keep], m1[keep]
  centroid = m1 / mass
  d_star = float(np.sum(analytic.partial_moments(source_1d, a, b, centroid)[2]))
  p = mass / mass.sum()
  return CellTheory(k, mass, centroid, d_star, float(-np.sum(p * np.log2(p))))


def dp_bound(p, d_star: float, w2_star: float) -> np.ndarray:
  """D(P) = D* + [(W2(p_X, p_X*) − √P)₊]², elementwise in P (the same units as D*)."""
  return d_star + np.square(np.maximum(w2_star - np.sqrt(np.maximum(np.asarray(p, np.float64), 0.0)), 0.0))


@dataclasses.dataclass(frozen=True, eq=False)
class ToyCodec:
  """The codec for one source and transform; `params(step)` picks the quantiser step."""
  source: analytic.Mixture     # the source it is the MMSE codec for (coefficients independent)
  transform: np.ndarray        # [C, C] orthonormal W (columns: basis vectors)
  channels: int = 3            # C of the images (a scalar source is i.i.d. over them)
  decoder: str = "centroid"    # "centroid" (MMSE) or "midpoint" (k·Δ)
  max_index: int = 64          # centroid table covers k in [−max_index, max_index]

  def __post_init__(self):
    w = np.asarray(self.transform, np.float64)
    if w.shape != (self.channels, self.channels) or not np.allclose(w.T @ w, np.eye(self.channels), atol=1e-9):
      raise ValueError(f"transform must be an orthonormal {self.channels}x{self.channels} matrix")
    if self.source.dim not in (1, self.channels):
      raise ValueError(f"a {self.source.dim}-D source does not fit {self.channels} channels")
    if self.decoder not in DECODERS:
      raise ValueError(f"unknown toy decoder {self.decoder!r}; expected one of {DECODERS}")
    object.__setattr__(self, "transform", w)

  def coefficient_source(self, i: int) -> analytic.Mixture:
    """The 1-D law of coefficient i, Δ·y_i = (Wᵀx)_i (for a scalar source: the source itself)."""
    if self.source.dim == 1:
      if not np.allclose(self.transform, np.eye(self.channels)):
        raise ValueError("a scalar i.i.d. source keeps independent coefficients only with W = I")
      return self.source
    return self.source.marginal(self.transform[:, i])

  def theory(self, step: float) -> list[CellTheory]:
    """Per coefficient: the exact cells, centroids and D* at step Δ."""
    return [cell_theory(self.coefficient_source(i), step) for i in range(self.channels)]

  def params(self, step: float) -> dict:
    """Traced codec params: W, Δ and the [C, 2·max_index + 1] centroid table (float32)."""
    k = np.arange(-self.max_index, self.max_index + 1)
    table = np.tile(k * step, (self.channels, 1)).astype(np.float64)
    if self.decoder == "centroid":
      for i, cells in enumerate(self.theory(step)):
        inside = (k >= cells.index[0]) & (k <= cells.index[-1])
        table[i, inside] = cells.centroid[np.searchsorted(cells.index, k[inside])]
    return {"w": jnp.asarray(self.transform, jnp.float32), "step": jnp.asarray(step, jnp.float32),
            "table": jnp.asarray(table, jnp.float32)}

  @property
  def fns(self) -> CodecFns:
    return _FNS


def _g_a(params, x01_BHWC):
  """x01 -> y = Wᵀu/Δ per pixel."""
  return jnp.einsum("...c,cd->...d", from_codec(x01_BHWC), params["w"]) / params["step"]


def _centroids(table_CJ, y_hat):
  """c(ŷ) per coefficient: table value at integer ŷ, linear in between (clamped at the ends)."""
  j = table_CJ.shape[1]
  s = jnp.clip(y_hat + (j - 1) // 2, 0.0, j - 1.0)
  i0 = jnp.clip(jax.lax.stop_gradient(jnp.floor(s)), 0, j - 2).astype(jnp.int32)
  frac = s - i0
  cols = jnp.arange(table_CJ.shape[0])
  lo, hi = table_CJ[cols, i0], table_CJ[cols, i0 + 1]
  return lo + frac * (hi - lo)


def _g_s(params, y_hat_BHWC):
  """ŷ -> x01 = (W·c(ŷ) + 1)/2 (unclipped, as the contract wants)."""
  c = _centroids(params["table"], y_hat_BHWC)
  return to_codec(jnp.einsum("...d,cd->...c", c, params["w"]))


_FNS = CodecFns(g_a=_g_a, g_s=_g_s)  # one object: jit caches keyed on it are shared


def encode(params, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Source samples in [−1, 1] units -> (ŷ, μ = 0), what a decoded file would give."""
  y = _g_a(params, to_codec(x_BHWC))
  return jnp.round(y), jnp.zeros_like(y)
