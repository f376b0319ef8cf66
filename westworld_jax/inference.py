"""Using a trained model: a training workdir's model, parameters and data statistics, on one device.
Evaluation, the learning curve and control load through here.

A training workdir (`python -m westworld_jax.train --workdir DIR`) holds run_config.json (the latest
run's full config), data_stats.json (the training environments and their normalisation) and
checkpoints/<step>/ (each with the config it was written with); training/run_files.py reads the two
files. `export` writes a model for others to load: the two files and params/ (the parameters alone,
an orbax checkpoint, no optimizer state) with export.json (source and step); `load_for_inference`
reads that layout too (westworld_jax/pretrained/<name>/ are such exports).
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import ml_collections
import orbax.checkpoint as ocp

from westworld_jax.model import sharding
from westworld_jax.training import checkpoint as ckpt_lib
from westworld_jax.training import mesh as mesh_lib
from westworld_jax.training import state as state_lib
from westworld_jax.training.run_files import EXPORT_FILE, PARAMS_DIR, restore_export_params
from westworld_jax.training.run_files import DATA_STATS_FILE, RUN_FILE
from westworld_jax.training.run_files import build_model, read_data_stats, read_run_config


def load_for_inference(workdir: str, step: int | None = None, with_step: bool = False):
  """(WorldModel, params, data_stats) from a training workdir, on the default device; with_step:
  (WorldModel, params, data_stats, step). step None: the newest step that restores (a damaged
  newer one is skipped with a warning).

  data_stats: {environment: {"robot", "stats": {obs_min, obs_max, act_min, act_max}, "obs_channels",
  "act_channels"}} of the training environments (their normalisation).
  """
  workdir = os.path.abspath(workdir)
  if os.path.exists(os.path.join(workdir, EXPORT_FILE)):
    return _load_export(workdir, with_step)
  cfg = ml_collections.ConfigDict(read_run_config(workdir))
  model, abstract, mesh, rules = _one_device_state(cfg)
  shardings = mesh_lib.state_shardings(model, abstract, mesh, rules)
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
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


def _one_device_state(cfg):
  """(model, abstract train state, mesh, rules) of a run's config on one device: every logical axis
  replicated, so the model runs unsharded on the same params."""
  rules = sharding.replicated(mesh_lib.config_rules(cfg.get("mesh")))
  model = build_model(cfg.model, rules)
  tx, _ = state_lib.make_optimizer(cfg.optim, cfg.total_steps)
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict({"data": 1, "expert": 1}), jax.devices()[:1])
  return model, state_lib.abstract_state(model, tx, cfg.seed, mesh, rules), mesh, rules


def _load_export(directory: str, with_step: bool):
  with open(os.path.join(directory, EXPORT_FILE)) as f:
    info = json.load(f)
  cfg = ml_collections.ConfigDict(read_run_config(directory))
  model, abstract, _, _ = _one_device_state(cfg)
  params = restore_export_params(directory, abstract["params"])
  stats = read_data_stats(directory)
  return (model, params, stats, info.get("step")) if with_step else (model, params, stats)


def export(workdir: str, out: str, step: int | None = None, card: str = "") -> dict:
  """A training workdir's model (newest step, or `step`) as a loadable export in `out`: run_config.json,
  data_stats.json, params/ (orbax, parameters only), export.json and, if given, MODEL_CARD.md.
  Written beside `out` and renamed into place (atomic: a reader never sees half an export)."""
  _, params, _, at = load_for_inference(workdir, step, with_step=True)
  out = os.path.abspath(out)
  tmp = out + ".tmp-export"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  for name in (RUN_FILE, DATA_STATS_FILE):
    shutil.copy(os.path.join(os.path.abspath(workdir), name), os.path.join(tmp, name))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(tmp, PARAMS_DIR), params)
  info = {
    "source": os.path.basename(os.path.abspath(workdir)),  # the run's directory name, no local path
    "step": int(at),
    "params": int(sum(x.size for x in jax.tree.leaves(params))),
  }
  with open(os.path.join(tmp, EXPORT_FILE), "w") as f:
    json.dump(info, f, indent=1)
  if card:
    with open(os.path.join(tmp, "MODEL_CARD.md"), "w") as f:
      f.write(card)
  if os.path.exists(out):
    shutil.rmtree(out)
  os.replace(tmp, out)
  return info
