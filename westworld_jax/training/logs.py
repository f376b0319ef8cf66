"""Run logs: DIR/metrics.jsonl (one JSON object per log step), TensorBoard events, plots.

Only process 0 writes. metrics.jsonl is appended to, so a resumed run continues the same file;
rows from steps after the resume point (written before an interruption) are dropped on
resume so every step appears once.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import threading
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import logging


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


class _Background:
  """TensorBoard events written by a thread of this module, fed through a bounded queue that the
  training loop never waits on, with tensorboardX's synchronous EventsWriter (its SummaryWriter queues
  events for a thread of its own, which dies on a full disk and leaves every later call, and its exit
  hook, blocked for ever). A write that fails or hangs costs the events and one warning, never the run."""

  def __init__(self, logdir: str, purge_step: int, maxsize: int = 2000):
    self._queue: queue.Queue = queue.Queue(maxsize)
    self._failed = False
    self._thread = threading.Thread(target=self._run, args=(logdir, purge_step), daemon=True, name="tensorboard")
    self._thread.start()

  def _run(self, logdir: str, purge_step: int) -> None:
    try:
      from tensorboardX import event_file_writer  # pylint: disable=import-outside-toplevel
      from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel

      os.makedirs(logdir, exist_ok=True)
      events = event_file_writer.EventsWriter(os.path.join(logdir, "events"))
      # As SummaryWriter(purge_step=...): TensorBoard drops the steps >= purge_step an interrupted run wrote.
      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      events.write_event(event_pb2.Event(step=purge_step, wall_time=time.time(), session_log=start))
      while (item := self._queue.get()) is not None:
        make_summary, step = item
        events.write_event(event_pb2.Event(step=step, wall_time=time.time(), summary=make_summary()))
        if self._queue.empty():
          events.flush()
      events.close()
    except Exception as e:  # pylint: disable=broad-exception-caught
      self._fail(f"{type(e).__name__}: {e}")

  def _fail(self, why: str) -> None:
    if not self._failed:
      self._failed = True
      logging.warning("TensorBoard events are no longer written (%s); metrics.jsonl and checkpoints go on", why)

  def put(self, make_summary: Callable[[], Any], step: int) -> None:
    """Queues the Summary proto `make_summary()` builds (in the writer's thread) for `step`."""
    if self._failed:
      return
    try:
      self._queue.put_nowait((make_summary, int(step)))
    except queue.Full:
      self._fail("its writer is stuck")

  def close(self, timeout: float = 10.0) -> None:
    try:
      self._queue.put_nowait(None)
    except queue.Full:
      pass
    self._thread.join(timeout)  # a hung writer is left behind (a daemon thread): the run still ends
    if self._thread.is_alive():
      self._fail("it did not finish writing")


def _scalars(row: dict):
  from tensorboardX import summary  # pylint: disable=import-outside-toplevel
  from tensorboardX.proto import summary_pb2  # pylint: disable=import-outside-toplevel

  values = [
    v
    for k, x in row.items()
    if k != "step" and k not in NOT_SCALARS and isinstance(x, (int, float)) and not isinstance(x, bool)
    for v in summary.scalar(tb_tag(k), x).value
  ]
  return summary_pb2.Summary(value=values)


def _image(tag: str, png_path: str):
  import matplotlib.image  # pylint: disable=import-outside-toplevel
  from tensorboardX import summary  # pylint: disable=import-outside-toplevel

  return summary.image(tag, matplotlib.image.imread(png_path)[..., :3], dataformats="HWC")


def _text(tag: str, text: str):
  from tensorboardX import summary  # pylint: disable=import-outside-toplevel

  return summary.text(tag, text)


class MetricsWriter:
  """metrics.jsonl rows and, with tensorboard, their scalars (grouped train/ and val/), images and text.
  Neither can stop or block training: a failed write is one warning (checkpoints report a full disk)."""

  def __init__(self, workdir: str, resume_step: int = 0, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb: _Background | None = None
    self._failed = False
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._truncate_after(resume_step)
    if tensorboard:
      self.tb = _Background(os.path.join(workdir, "tensorboard"), resume_step + 1)

  def _truncate_after(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    rows = []
    with open(self.path) as f:
      for line in f:
        try:
          if line.strip() and json.loads(line).get("step", 0) <= step:
            rows.append(line)
        except ValueError:  # a row cut short (a full disk, a kill mid-write): dropped
          logging.warning("%s: dropped a damaged row (%r)", self.path, line[:80])
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(rows)
    os.replace(tmp, self.path)

  def write(self, step: int, metrics: dict[str, Any]) -> dict:
    row = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
    if self.enabled:
      try:
        with open(self.path, "a") as f:
          f.write(json.dumps(row) + "\n")
      except OSError as e:
        if not self._failed:
          self._failed = True
          logging.warning("%s: rows from step %d on are not written (%s)", self.path, step, e)
      if self.tb is not None:
        self.tb.put(functools.partial(_scalars, row), step)
    return row

  def text(self, tag: str, text: str, step: int) -> None:
    if self.tb is not None:
      self.tb.put(functools.partial(_text, tag, text), step)

  def image(self, tag: str, png_path: str, step: int) -> None:
    """A plot written to disk (e.g. the validation predictions) as a TensorBoard image."""
    if self.tb is not None and png_path and os.path.exists(png_path):
      self.tb.put(functools.partial(_image, tag, png_path), step)

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
