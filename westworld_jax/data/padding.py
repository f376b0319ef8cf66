"""A robot's static batch fields padded to a channel count (model/BATCH_SPEC.md).

The training pipeline pads each environment to its channel bucket (data/pipeline.py) and the
world-model control backend pads each robot to the largest robot it plans for
(control/backends.py); both build these fields here, from the per-channel arrays a robot or a
corpus environment's metadata gives.
"""

from __future__ import annotations

import numpy as np


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
  a = np.asarray(a, np.int32)
  return np.pad(a, [(0, n - len(a))] + [(0, 0)] * (a.ndim - 1))


def padded_structure(obs_struct, act_struct, obs_kind, act_kind, obs_pad: int, act_pad: int) -> dict[str, np.ndarray]:
  """obs/act masks (True on the robot's channels) and int32 struct [pad, 4] / kind [pad] (padding 0).

  obs_struct / act_struct: [C, 4] (object, pre, in, post) per channel (any shape reshapable to it);
  obs_kind / act_kind: [C] channel kind ids; obs_pad / act_pad: the padded channel counts (>= C).
  """
  obs_kind, act_kind = np.asarray(obs_kind, np.int32), np.asarray(act_kind, np.int32)
  return {
    "obs_mask": np.arange(obs_pad) < len(obs_kind),
    "act_mask": np.arange(act_pad) < len(act_kind),
    "obs_struct": _pad_rows(np.reshape(obs_struct, (-1, 4)), obs_pad),
    "act_struct": _pad_rows(np.reshape(act_struct, (-1, 4)), act_pad),
    "obs_kind": _pad_rows(obs_kind, obs_pad),
    "act_kind": _pad_rows(act_kind, act_pad),
  }
