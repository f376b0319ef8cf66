"""The metric: MAE and MSE pooled over every valid (window, step >= history, channel) element in the
normalised [0, 1] space, in sums so that batches of any padding pool exactly; per horizon step too."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from westworld_jax.training import step as step_lib

X100 = 100.0  # the paper's tables report errors in the normalised space times 100 (apparently)


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
    """err: step.horizon_errors of one batch."""
    err = jax.device_get(err)
    self.sum_abs += float(err["sum_abs"])
    self.sum_sq += float(err["sum_sq"])
    self.count += float(err["count"])
    self.windows += int(windows)
    for k in ("sum_abs_t", "sum_sq_t", "count_t"):
      v = np.asarray(err[k], np.float64)
      setattr(self, k, v if getattr(self, k) is None else getattr(self, k) + v)

  def merge(self, other: "Pooled") -> "Pooled":
    out = Pooled(self.history)
    for p in (self, other):
      if p.count_t is not None:
        out.add(
          {k: getattr(p, k) for k in ("sum_abs", "sum_sq", "count", "sum_abs_t", "sum_sq_t", "count_t")}, p.windows
        )
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
  p.add(step_lib.horizon_errors(pred_btc, batch, history), len(pred_btc))
  return p.summary()
