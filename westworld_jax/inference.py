"""Using a trained model: a training workdir's config, its model and parameters, and batches padded
to the compiled size. Evaluation, fine-tuning, the learning curve and control all load through here.

A training workdir (`python -m westworld_jax.train --workdir DIR`) holds run_config.json (the latest
run's full config), data_stats.json (the training environments and their normalisation) and
checkpoints/<step>/ (each with the config it was written with).
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from westworld_jax.model import registry, sharding
from westworld_jax.training import checkpoint as ckpt_lib
from westworld_jax.training import mesh as mesh_lib
from westworld_jax.training import state as state_lib

DATA_STATS_FILE = "data_stats.json"


def build_model(model_cfg, rules=None) -> registry.WorldModel:
  """registry.build(name, size, rules, **every other field of cfg.model); rules: the mesh rule
  table (model/sharding.py) the model runs under (None: the default table)."""
  fields = {k: v for k, v in model_cfg.to_dict().items() if k not in ("name", "size")}
  return registry.build(model_cfg.name, model_cfg.size, rules, **fields)


def read_run_config(workdir: str) -> dict:
  """The run config of a training workdir (its run_config.json), as a dict."""
  workdir = os.path.abspath(workdir)
  path = os.path.join(workdir, ckpt_lib.RUN_FILE)
  if not os.path.exists(path):
    raise ckpt_lib.NoCheckpointError(
      f"{workdir}: not a training workdir (no {ckpt_lib.RUN_FILE}); pass the "
      "--workdir of a `python -m westworld_jax.train` run"
    )
  with open(path) as f:
    return json.load(f)


def load_for_inference(workdir: str, step: int | None = None, with_step: bool = False):
  """(WorldModel, params, data_stats) from a training workdir, on the default device; with_step:
  (WorldModel, params, data_stats, step). step None: the newest step that restores (a damaged
  newer one is skipped with a warning).

  data_stats: {environment: {"robot", "stats": {obs_min, obs_max, act_min, act_max}, "obs_channels",
  "act_channels"}} of the training environments (their normalisation).
  """
  workdir = os.path.abspath(workdir)
  cfg = ml_collections.ConfigDict(read_run_config(workdir))
  # One device: every logical axis replicated, so the model runs unsharded on the same params.
  rules = sharding.replicated(mesh_lib.config_rules(cfg.get("mesh")))
  model = build_model(cfg.model, rules)
  tx, _ = state_lib.make_optimizer(cfg.optim, cfg.total_steps)
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict({"data": 1, "expert": 1}), jax.devices()[:1])
  abstract = state_lib.abstract_state(model, tx, cfg.seed, mesh, rules)
  shardings = mesh_lib.state_shardings(model, abstract, mesh, rules)
  try:
    if step is None:
      found = ckpt.restore_latest(ckpt_lib.with_shardings(abstract, shardings), None, None)
      if found is None:
        raise ckpt_lib.NoCheckpointError(f"{ckpt.directory} holds no checkpoint yet")
      state, step, _ = found
    else:
      state = ckpt.restore(step, ckpt_lib.with_shardings(abstract, shardings), None, None)
  finally:
    ckpt.close(quiet=True)
  with open(os.path.join(workdir, DATA_STATS_FILE)) as f:
    stats = json.load(f)
  return (model, state["params"], stats, step) if with_step else (model, state["params"], stats)


def pad_batch(batch: dict, size: int) -> dict:
  """Pads the batch axis with all-padding windows (masks False), which count nowhere."""
  n = len(batch["obs"])
  if n == size:
    return batch
  return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
