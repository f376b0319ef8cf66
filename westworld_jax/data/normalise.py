"""Per-channel min-max normalisation to [0, 1], clipped (upstream); a constant channel (span 0) maps
to 0.5. One implementation for the input pipeline (NumPy) and for planning with a world model (jnp)."""

from __future__ import annotations

import numpy as np

MIN_SPAN = 1e-8  # a channel whose training range is narrower than this is treated as constant


def span(lo, hi) -> np.ndarray:
  """hi - lo per channel, 0 for a constant channel."""
  s = np.asarray(hi, np.float32) - np.asarray(lo, np.float32)
  return np.where(s > MIN_SPAN, s, 0.0).astype(np.float32)


def normalise(x, lo, span_, xp=np):
  """Physical units -> [0, 1] (clipped); constant channels -> 0.5. xp: numpy or jax.numpy."""
  safe = xp.where(span_ > 0, span_, 1.0)
  return xp.where(span_ > 0, xp.clip((x - lo) / safe, 0.0, 1.0), 0.5)


def denormalise(v, lo, span_):
  """[0, 1] -> physical units (a constant channel gives its value)."""
  return lo + v * span_
