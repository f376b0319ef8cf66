"""What a training workdir holds beside its checkpoints and logs, and the model its config describes.

  run_config.json  the latest invocation's full config (each checkpoint keeps the config it was
                   written with);
  data_stats.json  the training environments: {environment: {"robot", "stats": {obs_min, obs_max,
                   act_min, act_max}, "obs_channels", "act_channels"}} (their normalisation).
Only process 0 writes them, atomically.
"""

from __future__ import annotations

import json
import os

from absl import logging
import jax
import orbax.checkpoint as ocp

from westworld_jax.data import shards
from westworld_jax.errors import ConfigError, UserError
from westworld_jax.model import registry
from westworld_jax.training.checkpoint import NoCheckpointError

RUN_FILE = "run_config.json"
DATA_STATS_FILE = "data_stats.json"


def build_model(model_cfg, rules=None) -> registry.WorldModel:
  """registry.build(name, size, rules, **every other field of cfg.model); rules: the mesh rule
  table (model/sharding.py) the model runs under (None: the default table). A config of another
  model's fields (`--config.model.name=trajworld` on westworld's: config_files.model_config) builds
  this model with the fields they share (registry.switch_fields); a field it lacks is warned once.
  A field the model cannot take is a ConfigError naming it."""
  cfg = model_cfg.to_dict()
  name, size = cfg.pop("name"), cfg.pop("size")
  origin = cfg.pop("fields_of", name)
  try:
    if origin != name:
      cfg, ignored = registry.switch_fields(origin, name, size, cfg)
      for k, v in ignored.items():
        if (name, k) not in _WARNED:
          _WARNED.add((name, k))
          logging.warning("config.model.%s=%r is a field of %s, not of %s: ignored", k, v, origin, name)
    return registry.build(name, size, rules, **cfg)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model (model {name}, size {size}): {e}") from None


_WARNED: set = set()


def read_run_config(workdir: str) -> dict:
  """The run config of a training workdir (its run_config.json), as a dict."""
  workdir = os.path.abspath(workdir)
  path = os.path.join(workdir, RUN_FILE)
  if not os.path.exists(path):
    raise NoCheckpointError(
      f"{workdir}: not a training workdir (no {RUN_FILE}); pass the --workdir of a `python -m westworld_jax.train` run"
    )
  with open(path) as f:
    return json.load(f)


def read_data_stats(workdir: str) -> dict:
  """The training environments of a training workdir and their statistics (its data_stats.json)."""
  with open(os.path.join(workdir, DATA_STATS_FILE)) as f:
    return json.load(f)


def write_run_files(cfg, workdir: str, envs: list[str]) -> None:
  """run_config.json and data_stats.json of the run (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  _write_atomic(os.path.join(workdir, RUN_FILE), cfg.to_json_best_effort(indent=2))
  stats = {}
  for name in envs:
    meta = shards.load_metadata(os.path.join(cfg.data.corpus_dir, name))
    stats[name] = {
      "robot": meta["robot"]["name"],
      "stats": meta["stats"],
      "obs_channels": [c["name"] for c in meta["robot"]["obs_channels"]],
      "act_channels": [c["name"] for c in meta["robot"]["act_channels"]],
    }
  _write_atomic(os.path.join(workdir, DATA_STATS_FILE), json.dumps(stats))


def _write_atomic(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


# An export (inference.export): the run's two files, the parameters alone and export.json.
EXPORT_FILE, PARAMS_DIR = "export.json", "params"


def restore_export_params(directory: str, abstract):
  """An export's parameters restored into `abstract` (shapes, dtypes and optionally shardings)."""
  try:
    with ocp.StandardCheckpointer() as ckptr:
      return ckptr.restore(os.path.join(directory, PARAMS_DIR), abstract)
  except Exception as e:  # orbax raises several types for a damaged or mismatched tree
    raise UserError(
      f"{directory}: its parameters do not restore into the model its run_config.json describes "
      f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); export it again"
    ) from None
