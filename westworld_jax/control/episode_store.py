"""Finished control episodes as files: what makes a long control table resumable.

One directory per table row (robot x policy x model x recipe); episode i is `ep<i>.npz` (the
trajectory: obs, act, qpos, rewards) and `ep<i>.json` (return, length, replanning latency, extras),
each written atomically, the JSON last: an episode is finished when its JSON exists, and a rerun
never runs it again. Episode i's start state comes from `episode_keys(seed, n)[i]`, the same key
sequence `python -m westworld_jax.control` draws, so every row starts from the same states.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from westworld_jax.control import rollout as rollout_lib


def episode_keys(seed: int, n: int) -> list[jax.Array]:
  """The start-state keys of episodes 0..n-1 (control/experiment.py draws the same sequence)."""
  key, out = jax.random.key(seed), []
  for _ in range(n):
    key, sub = jax.random.split(key)
    out.append(sub)
  return out


def _replace(path: str, write) -> None:
  tmp = path + ".tmp"
  write(tmp)
  os.replace(tmp, path)


class EpisodeStore:
  """Episodes of one row under `directory`."""

  def __init__(self, directory: str):
    self.directory = directory

  def _path(self, i: int, ext: str) -> str:
    return os.path.join(self.directory, f"ep{i:03d}.{ext}")

  def done(self, i: int) -> bool:
    return os.path.exists(self._path(i, "json"))

  def missing(self, n: int) -> list[int]:
    return [i for i in range(n) if not self.done(i)]

  def save(self, i: int, log: rollout_lib.EpisodeLog, arrays: dict | None = None, **extra) -> dict:
    """Episode i from a one-environment EpisodeLog (+ JSON-able extras, + `arrays` kept in
    ep<i>.extra.npz, e.g. sampled rollouts); returns its record."""
    if log.returns.shape != (1,):
      raise ValueError(f"an EpisodeStore keeps one environment per episode, the log has {log.returns.shape[0]}")
    os.makedirs(self.directory, exist_ok=True)
    n = int(log.lengths[0])
    trajectory = {
      "obs": log.obs[:n, 0],
      "act": log.ctrl[:n, 0],
      "qpos": log.qpos[: n + 1, 0],
      "rewards": log.rewards[:n, 0],
    }

    def write_npz(tmp):
      with open(tmp, "wb") as f:
        np.savez(f, **trajectory)

    _replace(self._path(i, "npz"), write_npz)
    if arrays:

      def write_extra(tmp):
        with open(tmp, "wb") as f:
          np.savez(f, **arrays)

      _replace(self._path(i, "extra.npz"), write_extra)
    lat = log.latency_s[1:] if len(log.latency_s) > 1 else np.zeros(0)
    record = {
      "episode": i,
      "return": float(log.returns[0]),
      "length": n,
      "replan_ms_median": float(np.median(lat) * 1e3) if len(lat) else None,
      "first_replan_s": float(log.latency_s[0]) if len(log.latency_s) else None,
      **extra,
    }

    def write_json(tmp):
      with open(tmp, "w") as f:
        json.dump(record, f, indent=1)

    _replace(self._path(i, "json"), write_json)
    return record

  def record(self, i: int) -> dict:
    with open(self._path(i, "json")) as f:
      return json.load(f)

  def trajectory(self, i: int) -> dict:
    """{'obs' [t, Co], 'act' [t, Ca], 'qpos' [t + 1, nq], 'rewards' [t], 'return'}."""
    with np.load(self._path(i, "npz")) as z:
      out = {k: z[k] for k in z.files}
    out["return"] = self.record(i)["return"]
    return out

  def arrays(self, i: int) -> dict:
    """The extra arrays saved with episode i ({} if none)."""
    path = self._path(i, "extra.npz")
    if not os.path.exists(path):
      return {}
    with np.load(path) as z:
      return {k: z[k] for k in z.files}

  def records(self, n: int) -> list[dict]:
    """The finished episodes among 0..n-1."""
    return [self.record(i) for i in range(n) if self.done(i)]
