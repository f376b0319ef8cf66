"""The metric of training's validation and of evaluation: MAE and MSE pooled over every valid
(window, step >= history, channel) element in the normalised [0, 1] space.

`horizon_errors` is the jittable half: error sums of one batch (sums, not means, so batches of any
padding pool exactly), in total, per step and per window. `Pooled` is the host half: it adds the
sums of many batches and summarises them (per horizon step too).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from westworld_jax.model.loss import target_mask

X100 = 100.0  # the paper's tables report errors in the normalised space times 100 (apparently)
STEP_KEYS = ("sum_abs_t", "sum_sq_t", "count_t")


def horizon_errors(pred_btc: jax.Array, batch: dict[str, jax.Array], history: int) -> dict[str, jax.Array]:
  """Pooled error sums over valid (window, step >= history, channel) elements, and per step.

  Sums (not means), so batches of any padding pool exactly: mae = sum_abs / count.
  """
  mask_btc = jnp.concatenate(
    [jnp.zeros_like(target_mask(batch, history)[:, :1]), target_mask(batch, history)], axis=1
  ).astype(jnp.float32)
  err = (pred_btc - batch["obs"].astype(jnp.float32)) * mask_btc
  abs_btc, sq_btc = jnp.abs(err), err * err
  return {
    "sum_abs": jnp.sum(abs_btc),
    "sum_sq": jnp.sum(sq_btc),
    "count": jnp.sum(mask_btc),
    # per step (error vs horizon) and per window (per-environment pooling on the host)
    "sum_abs_t": jnp.sum(abs_btc, axis=(0, 2)),
    "sum_sq_t": jnp.sum(sq_btc, axis=(0, 2)),
    "count_t": jnp.sum(mask_btc, axis=(0, 2)),
    "sum_abs_b": jnp.sum(abs_btc, axis=(1, 2)),
    "sum_sq_b": jnp.sum(sq_btc, axis=(1, 2)),
    "count_b": jnp.sum(mask_btc, axis=(1, 2)),
  }


@dataclasses.dataclass
class Pooled:
  """Error sums over batches (sums, not means, so windows of any padding pool exactly)."""

  history: int
  sum_abs: float = 0.0
  sum_sq: float = 0.0
  count: float = 0.0
  windows: int = 0
  sum_abs_t: np.ndarray | None = None  # [T] per window step
  sum_sq_t: np.ndarray | None = None
  count_t: np.ndarray | None = None

  def add(self, err: dict, windows: int) -> None:
    """err: horizon_errors of one batch, or the sums of one window (without per-step sums)."""
    err = jax.device_get(err)
    self.sum_abs += float(err["sum_abs"])
    self.sum_sq += float(err["sum_sq"])
    self.count += float(err["count"])
    self.windows += int(windows)
    for k in STEP_KEYS:
      if k in err:
        v = np.asarray(err[k], np.float64)
        setattr(self, k, v if getattr(self, k) is None else getattr(self, k) + v)

  def merge(self, other: "Pooled") -> "Pooled":
    out = Pooled(self.history)
    for p in (self, other):
      if p.count_t is not None:
        out.add({k: getattr(p, k) for k in ("sum_abs", "sum_sq", "count") + STEP_KEYS}, p.windows)
    return out

  def summary(self) -> dict:
    if not self.count:
      raise ValueError("no valid element was evaluated (no window with a step after the history)")
    mae, mse = self.sum_abs / self.count, self.sum_sq / self.count
    t = self.count_t[self.history :]  # horizon step k = t - history + 1
    ok = t > 0
    by_step = lambda s: np.where(ok, s[self.history :] / np.maximum(t, 1), np.nan)
    return {
      "mae": mae,
      "mse": mse,
      "mae_x100": X100 * mae,
      "mse_x100": X100 * mse,
      "count": self.count,
      "windows": self.windows,
      "mae_by_step": [None if np.isnan(v) else float(v) for v in by_step(self.sum_abs_t)],
      "mse_by_step": [None if np.isnan(v) else float(v) for v in by_step(self.sum_sq_t)],
    }


def pooled_errors(pred_btc, batch: dict, history: int) -> dict:
  """The metric on one batch: MAE/MSE pooled over valid (window, step >= history, channel) elements."""
  p = Pooled(history)
  p.add(horizon_errors(pred_btc, batch, history), len(pred_btc))
  return p.summary()
