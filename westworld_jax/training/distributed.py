"""Multi-process launches (TPU pod slices, SLURM, an explicit coordinator): initialising
jax.distributed, and global arrays from each process's host data."""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging

from westworld_jax.errors import UserError


def maybe_initialize_distributed(cfg=None) -> None:
  """jax.distributed.initialize() on multi-process launches; it must run before any other JAX call.

  A launch is multi-process when JAX's own variables say so (JAX_COORDINATOR_ADDRESS host:port with
  JAX_NUM_PROCESSES and JAX_PROCESS_ID, as launch/ sets them), when a cluster JAX detects runs
  several tasks (SLURM, a TPU pod slice), or when the config sets `distributed`. On CPU the
  processes' collectives go through gloo."""
  env = os.environ
  coordinator = env.get("JAX_COORDINATOR_ADDRESS", "")
  multi = (
    bool(coordinator)
    or int(env.get("SLURM_NTASKS", "1")) > 1
    or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    or (cfg is not None and cfg.get("distributed", False))
  )
  if not multi or jax.distributed.is_initialized():
    return
  kwargs = {}
  if coordinator:
    missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not env.get(k, "").strip().isdigit()]
    if missing and not int(env.get("SLURM_NTASKS", "1")) > 1:
      raise UserError(
        f"JAX_COORDINATOR_ADDRESS={coordinator} is set but {' and '.join(missing)} is not (an integer): set "
        "JAX_NUM_PROCESSES (how many processes) and JAX_PROCESS_ID (this one's, 0..N-1) on every process"
      )
    if not missing:
      kwargs = {
        "coordinator_address": coordinator,
        "num_processes": int(env["JAX_NUM_PROCESSES"]),
        "process_id": int(env["JAX_PROCESS_ID"]),
      }
      if not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
        raise UserError(
          f"JAX_PROCESS_ID={kwargs['process_id']} must be in 0..JAX_NUM_PROCESSES-1 ({kwargs['num_processes']})"
        )
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices only; no effect elsewhere
  jax.distributed.initialize(**kwargs)
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
