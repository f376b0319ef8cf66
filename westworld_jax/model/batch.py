"""The batch contract (BATCH_SPEC.md) in code: key shapes and dtypes, the all-real zero batch
that initialises and compiles any model, the check every model runs on its input, and padding a
batch to a compiled batch size."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

STRUCT_DIMS = 4  # (object id, pre-order rank, LCRS in-order rank, LCRS post-order rank)
VALUE_KEYS = ("obs", "act", "obs_mask", "act_mask", "time_mask")
STRUCTURE_KEYS = ("obs_struct", "act_struct", "obs_kind", "act_kind")
MASK_KEYS = ("obs_mask", "act_mask", "time_mask")


def batch_spec(
  batch_size: int, num_steps: int, num_obs: int, num_act: int
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{key: (shape, dtype)} of a batch of B windows of T steps, Co obs and Ca action channels."""
  b, t, co, ca = batch_size, num_steps, num_obs, num_act
  f32, i32, bool_ = np.dtype(np.float32), np.dtype(np.int32), np.dtype(bool)
  return {
    "obs": ((b, t, co), f32),
    "act": ((b, t, ca), f32),
    "obs_mask": ((b, co), bool_),
    "act_mask": ((b, ca), bool_),
    "time_mask": ((b, t), bool_),
    "obs_struct": ((b, co, STRUCT_DIMS), i32),
    "act_struct": ((b, ca, STRUCT_DIMS), i32),
    "obs_kind": ((b, co), i32),
    "act_kind": ((b, ca), i32),
    "env_id": ((b,), i32),
  }


def zeros_batch(batch_size: int, num_steps: int, num_obs: int, num_act: int) -> dict[str, np.ndarray]:
  """An all-real batch of zeros (masks all True) with the right shapes and dtypes: for init,
  eval_shape and compilation of any registry model."""
  return {
    k: (np.ones if k in MASK_KEYS else np.zeros)(shape, dtype)
    for k, (shape, dtype) in batch_spec(batch_size, num_steps, num_obs, num_act).items()
  }


def check_batch(batch: Mapping[str, Any], config: Any, structure: bool = True) -> None:
  """Raise a ValueError that says what to change when the batch does not fit the config.

  structure: also require obs_struct / act_struct / obs_kind / act_kind (models that read them).
  """
  required = VALUE_KEYS + (STRUCTURE_KEYS if structure else ())
  missing = [k for k in required if k not in batch]
  if missing:
    raise ValueError(f"batch lacks {missing} (see westworld_jax/model/BATCH_SPEC.md).")
  b, t, co = batch["obs"].shape
  ca = batch["act"].shape[2]
  spec = batch_spec(b, t, co, ca)
  for k in required[1:]:
    shape = spec[k][0]
    if tuple(batch[k].shape) != shape:
      raise ValueError(
        f"batch['{k}'] has shape {tuple(batch[k].shape)}, expected {shape} "
        f"from obs [B={b}, T={t}, Co={co}] and act [.., Ca={ca}]."
      )
  if co > config.max_obs_channels:
    raise ValueError(
      f"batch has {co} observation channels; max_obs_channels is "
      f"{config.max_obs_channels}: raise it in the model config."
    )
  if ca > config.max_act_channels:
    raise ValueError(
      f"batch has {ca} action channels; max_act_channels is {config.max_act_channels}: raise it in the model config."
    )
  if t > config.max_window_len:
    raise ValueError(f"window has {t} steps; max_window_len is {config.max_window_len}: raise it in the model config.")


def robot_batch(obs_btc, act_btc, structure: Mapping[str, Any]) -> dict:
  """The batch of B windows of ONE robot: obs [B, T, Co] / act [B, T, Ca] already normalised (zero on
  the masked channels; future observations zero too) and the robot's padded structure
  (data/padding.padded_structure: masks, struct, kind). Every step real, env_id 0. Traceable (jnp)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  b, t = obs_btc.shape[:2]
  bcast = lambda x: jnp.broadcast_to(jnp.asarray(x)[None], (b,) + jnp.shape(x))
  return {
    "obs": jnp.asarray(obs_btc, jnp.float32),
    "act": jnp.asarray(act_btc, jnp.float32),
    "obs_mask": bcast(structure["obs_mask"]),
    "act_mask": bcast(structure["act_mask"]),
    "time_mask": jnp.ones((b, t), bool),
    "obs_struct": bcast(structure["obs_struct"]),
    "act_struct": bcast(structure["act_struct"]),
    "obs_kind": bcast(structure["obs_kind"]),
    "act_kind": bcast(structure["act_kind"]),
    "env_id": jnp.zeros((b,), jnp.int32),
  }


def pad_batch(batch: dict, size: int) -> dict:
  """Pads the batch axis with all-padding windows (masks False), which count nowhere."""
  n = len(batch["obs"])
  if n == size:
    return batch
  return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
