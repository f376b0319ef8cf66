"""Run logs: DIR/metrics.jsonl (one JSON object per log step), TensorBoard events, plots.

Only process 0 writes. metrics.jsonl is appended to, so a resumed run continues the same file;
rows from steps after the resume point (written before an interruption) are dropped on
resume so every step appears once.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np


def _scalar(v: Any) -> Any:
  v = np.asarray(v)
  if v.dtype == bool:
    return bool(v)
  if np.issubdtype(v.dtype, np.integer):
    return int(v)
  return float(v)


NOT_SCALARS = ("data_crc",)  # in metrics.jsonl (exact-resume checks), not a curve to look at


def tb_tag(key: str) -> str:
  """TensorBoard's name of a metric: validation under val/ (val_mae/<env> -> val/mae/<env>), the rest under train/."""
  return "val/" + key[4:] if key.startswith("val_") else "train/" + key


class MetricsWriter:
  """metrics.jsonl rows and, with tensorboard, their scalars (grouped train/ and val/), images and text."""

  def __init__(self, workdir: str, resume_step: int = 0, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._truncate_after(resume_step)
    if tensorboard:
      from tensorboardX import SummaryWriter  # brax's dependency; no TensorFlow needed

      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)

  def _truncate_after(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    with open(self.path, "w") as f:
      f.writelines(rows)

  def write(self, step: int, metrics: dict[str, Any]) -> dict:
    row = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
      if self.tb is not None:
        for k, v in row.items():
          if k != "step" and k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool):
            self.tb.add_scalar(tb_tag(k), v, step)
    return row

  def text(self, tag: str, text: str, step: int) -> None:
    if self.tb is not None:
      self.tb.add_text(tag, text, step)

  def image(self, tag: str, png_path: str, step: int) -> None:
    """A plot written to disk (e.g. the validation predictions) as a TensorBoard image."""
    if self.tb is not None and os.path.exists(png_path):
      import matplotlib.image  # pylint: disable=import-outside-toplevel

      self.tb.add_image(tag, matplotlib.image.imread(png_path)[..., :3], step, dataformats="HWC")

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_predictions(
  path: str,
  obs_tc: np.ndarray,
  pred_tc: np.ndarray,
  history: int,
  channel_names: list[str],
  title: str,
  max_channels: int = 6,
) -> str:
  """Predicted vs true trajectories of a few channels of one window (normalised units)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  n = min(max_channels, obs_tc.shape[1])
  fig, axes = plt.subplots(n, 1, figsize=(7, 1.6 * n + 0.6), sharex=True, squeeze=False)
  t = np.arange(obs_tc.shape[0])
  for i, ax in enumerate(axes[:, 0]):
    ax.plot(t, obs_tc[:, i], color="k", lw=1.2, label="true")
    ax.plot(t[history:], pred_tc[history:, i], color="tab:red", lw=1.2, label="predicted")
    ax.axvline(history - 0.5, color="0.6", ls="--", lw=0.8)
    ax.set_ylabel(channel_names[i] if i < len(channel_names) else f"ch{i}", fontsize=7)
    ax.set_ylim(-0.05, 1.05)
  axes[0, 0].legend(loc="upper right", fontsize=7)
  axes[0, 0].set_title(title, fontsize=9)
  axes[-1, 0].set_xlabel("step (dashed: end of history)")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path
