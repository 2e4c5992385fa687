"""Entropy models: the factorized prior of z and the Gaussian conditional of y.

* `EntropyBottleneck` — Ballé et al. 2018 ("Variational image compression with a scale
  hyperprior", appendix 6.1): a per-channel learned CDF c(x) built from monotone
  1-D layers; the likelihood of the unit bin is c(x + 1/2) - c(x - 1/2). Three learned
  quantiles per channel (tail_mass/2, median, 1 - tail_mass/2) fix the coding range; they are
  trained by an auxiliary loss that does not touch the density.
* `gaussian_likelihood` — the mass of N(mu, sigma) on the unit bin around y.

Parameter shapes follow CompressAI so its checkpoints import one to one.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dcic_jax.codecs.layers import lower_bound

LIKELIHOOD_BOUND = 1e-9
SCALE_BOUND = 0.11


def _std_normal_cdf(x):
  return 0.5 * jax.scipy.special.erfc(-x / math.sqrt(2.0))


def gaussian_likelihood(y: jax.Array, mu: jax.Array, sigma: jax.Array) -> jax.Array:
  """P(round-bin of y) under N(mu, sigma); symmetric form avoids the 1 - cdf cancellation."""
  sigma = lower_bound(sigma, SCALE_BOUND)
  v = jnp.abs(y - mu)
  lik = _std_normal_cdf((0.5 - v) / sigma) - _std_normal_cdf((-0.5 - v) / sigma)
  return lower_bound(lik, LIKELIHOOD_BOUND)


class EntropyBottleneck(nn.Module):
  """Factorized (non-parametric, per channel) density for the hyper-latent z."""
  channels: int
  filters: tuple[int, ...] = (3, 3, 3, 3)
  init_scale: float = 10.0
  tail_mass: float = 1e-9

  def setup(self):
    dims = (1,) + tuple(self.filters) + (1,)
    scale = self.init_scale ** (1.0 / (len(self.filters) + 1))
    c = self.channels
    mats, biases, factors = [], [], []
    for i in range(len(dims) - 1):
      init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
      mats.append(self.param(f"matrix{i}", lambda _, s, v=init: jnp.full(s, v), (c, dims[i + 1], dims[i])))
      biases.append(self.param(f"bias{i}", lambda k, s: jax.random.uniform(k, (math.prod(s),), minval=-0.5,
                                                                              maxval=0.5).reshape(s),
                               (c, dims[i + 1], 1)))
      if i < len(self.filters):
        factors.append(self.param(f"factor{i}", nn.initializers.zeros, (c, dims[i + 1], 1)))
    self.matrices, self.biases, self.factors = mats, biases, factors
    self.quantiles = self.param(
        "quantiles", lambda _, s: jnp.tile(jnp.array([-self.init_scale, 0.0, self.init_scale]), (s[0], 1, 1)),
        (c, 1, 3))

  def logits_cumulative(self, x_C1K: jax.Array, stop_gradient: bool = False) -> jax.Array:
    """Logit of the learned CDF at every point of x_C1K ([C, 1, K])."""
    sg = jax.lax.stop_gradient if stop_gradient else (lambda a: a)
    logits = x_C1K
    for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
      logits = jnp.matmul(jax.nn.softplus(sg(m)), logits) + sg(b)
      if i < len(self.factors):
        logits = logits + jnp.tanh(sg(self.factors[i])) * jnp.tanh(logits)
    return logits

  @property
  def medians(self) -> jax.Array:  # [C]
    return self.quantiles[:, 0, 1]

  def likelihood(self, z_BHWC: jax.Array) -> jax.Array:
    """Mass of the unit bin around each value of z under the channel's density."""
    shape = z_BHWC.shape
    v = jnp.moveaxis(z_BHWC, -1, 0).reshape(shape[-1], 1, -1)  # [C, 1, B*H*W]
    lower = self.logits_cumulative(v - 0.5)
    upper = self.logits_cumulative(v + 0.5)
    sign = -jnp.sign(lower + upper)  # evaluate in the tail where sigmoid is accurate
    lik = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
    lik = lower_bound(lik, LIKELIHOOD_BOUND)
    return jnp.moveaxis(lik.reshape((shape[-1],) + shape[:-1]), 0, -1)

  def aux_loss(self) -> jax.Array:
    """Pulls the quantiles to c^-1(tail/2), the median and c^-1(1 - tail/2); density frozen."""
    t = math.log(2.0 / self.tail_mass - 1.0)
    target = jnp.array([-t, 0.0, t])
    logits = self.logits_cumulative(self.quantiles, stop_gradient=True)
    return jnp.sum(jnp.abs(logits - target))

  def __call__(self, z_BHWC: jax.Array) -> jax.Array:
    return self.likelihood(z_BHWC)


def gaussian_pmf_np(sigma: float, support: np.ndarray) -> np.ndarray:
  """float64 mass of N(0, sigma) on the unit bins centred at the integers `support`."""
  s = np.abs(support.astype(np.float64))
  erfc = np.vectorize(math.erfc, otypes=[np.float64])
  k = sigma * math.sqrt(2.0)
  return 0.5 * erfc((s - 0.5) / k) - 0.5 * erfc((s + 0.5) / k)
