"""Using a trained model: a training workdir's model, parameters and data statistics, on one device.
Evaluation, the learning curve and control load through here.

A training workdir (`python -m westworld_jax.train --workdir DIR`) holds run_config.json (the latest
run's full config), data_stats.json (the training environments and their normalisation) and
checkpoints/<step>/ (each with the config it was written with); training/run_files.py reads the two
files.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from westworld_jax.model import sharding
from westworld_jax.training import checkpoint as ckpt_lib
from westworld_jax.training import mesh as mesh_lib
from westworld_jax.training import state as state_lib
from westworld_jax.training.run_files import build_model, read_data_stats, read_run_config


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
  stats = read_data_stats(workdir)
  return (model, state["params"], stats, step) if with_step else (model, state["params"], stats)
