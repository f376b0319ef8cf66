"""HL-Gauss value tokenizer: normalised scalars in [0, 1] <-> K-bin histograms.

Every scalar channel value v (already min-max normalised to [0, 1]) becomes a
histogram over K uniform bins on [0, 1]: the mass that a Gaussian N(v, sigma),
sigma = 0.75 / K, puts on each bin, renormalised to sum to one over [0, 1]
("HL-Gauss", Farebrother et al. 2024). The model embeds that histogram, is trained
with cross-entropy against the target bin index, and reads predictions out as the
expectation over bin centres.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DEFAULT_SIGMA_BINS = 0.75  # sigma in units of the bin width


def bin_edges(num_bins: int) -> jax.Array:
  """[K + 1] uniform bin edges on [0, 1]."""
  return jnp.linspace(0.0, 1.0, num_bins + 1, dtype=jnp.float32)


def bin_centers(num_bins: int) -> jax.Array:
  """[K] bin centres (i + 0.5) / K."""
  return (jnp.arange(num_bins, dtype=jnp.float32) + 0.5) / num_bins


def hl_gauss_histogram(
  values: jax.Array, num_bins: int, mask: jax.Array | None = None, sigma_bins: float = DEFAULT_SIGMA_BINS
) -> jax.Array:
  """Histogram [..., K] (float32) of N(v, sigma) over K uniform bins on [0, 1].

  Args:
      values: [...] normalised values; clipped to [0, 1] first.
      num_bins: K.
      mask: optional [...] bool, broadcastable to values; False entries (padded
          channels or steps) get an all-zero histogram, so they embed to zero.
      sigma_bins: Gaussian width in bin widths (0.75 as upstream).
  """
  v = jnp.clip(values.astype(jnp.float32), 0.0, 1.0)[..., None]
  sigma = sigma_bins / num_bins
  cdf = jax.scipy.special.erf((bin_edges(num_bins) - v) / (jnp.sqrt(2.0) * sigma))
  # erf differences are twice the bin masses (renormalised below); far tails can round to
  # tiny negatives, so clamp.
  mass = jnp.maximum(cdf[..., 1:] - cdf[..., :-1], 0.0)
  hist = mass / jnp.sum(mass, axis=-1, keepdims=True)
  if mask is not None:
    hist = jnp.where(jnp.asarray(mask)[..., None], hist, 0.0)
  return hist


def target_bins(values: jax.Array, num_bins: int) -> jax.Array:
  """int32 [...] index of the bin containing each value (1.0 falls in the last bin)."""
  v = jnp.clip(values.astype(jnp.float32), 0.0, 1.0)
  return jnp.clip(jnp.floor(v * num_bins), 0, num_bins - 1).astype(jnp.int32)


def expectation_from_probs(probs: jax.Array) -> jax.Array:
  """[...] expected value over bin centres of a [..., K] probability vector."""
  return jnp.sum(probs.astype(jnp.float32) * bin_centers(probs.shape[-1]), axis=-1)


def expectation(logits: jax.Array) -> jax.Array:
  """[...] prediction read-out: expectation over bin centres of softmax(logits [..., K])."""
  return expectation_from_probs(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
