"""Multi-process launches (TPU pod slices, SLURM, an explicit coordinator): initialising
jax.distributed, and global arrays from each process's host data."""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging


def maybe_initialize_distributed(cfg=None) -> None:
  """jax.distributed.initialize() on multi-process launches (TPU pod slices, SLURM, or an explicit
  coordinator); it must run before any other JAX call."""
  env = os.environ
  multi = (
    bool(env.get("JAX_COORDINATOR_ADDRESS"))
    or int(env.get("SLURM_NTASKS", "1")) > 1
    or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    or (cfg is not None and cfg.get("distributed", False))
  )
  if multi and not jax.distributed.is_initialized():
    jax.distributed.initialize()
    logging.info(
      "process %d of %d, %d local / %d global devices",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
    )


def to_global(host_batch: dict, sharding, per_process: bool = True) -> dict:
  """Global arrays from host data. per_process: each process holds its own slice (training);
  else every process holds the same full batch (validation)."""
  if per_process:
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in host_batch.items()}
  return {
    k: jax.make_array_from_callback(np.shape(v), sharding, lambda idx, v=v: np.asarray(v)[idx])
    for k, v in host_batch.items()
  }
