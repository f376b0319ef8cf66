"""Checks of a training config before any work starts, each naming the field to change: its numeric
fields (check_training_config), its data windows and batches against the model and the mesh
(check_data_config), and the corpus against the model's tables (check_corpus_fits_model; the
capacity check itself is WorldModel.check_robot, model/world_model.py)."""

from __future__ import annotations

import math
import os

import jax

from westworld_jax.data import shards
from westworld_jax.errors import ConfigError
from westworld_jax.training import mesh as mesh_lib


# (path, lower bound, whether the bound itself is allowed)
_BOUNDS = (
  ("total_steps", 0, False),
  ("max_steps_per_run", 0, True),
  ("data.batch_size", 0, False),
  ("data.eval_batch_size", 0, False),
  ("data.history", 0, False),
  ("data.horizon", 0, False),
  ("data.num_threads", 0, True),
  ("data.prefetch", 0, True),
  ("optim.lr", 0, True),
  ("optim.warmup_steps", 0, True),
  ("optim.final_lr_fraction", 0, True),
  ("optim.clip_norm", 0, True),
  ("optim.weight_decay", 0, True),
  ("optim.eps", 0, False),
  ("checkpoint.every", 0, False),
  ("checkpoint.keep", 0, False),
  ("eval.every", 0, False),
  ("eval.max_batches", 0, True),
  ("log.every", 0, False),
)


def _get(cfg, path: str):
  node = cfg
  for p in path.split("."):
    if node is None or p not in node:
      return None
    node = node[p]
  return node


def check_training_config(cfg) -> None:
  """Raises ConfigError listing every numeric field out of range (e.g. `data.batch_size must be
  > 0 (got 0)`). A NaN learning rate passes: the training step reports the non-finite loss."""
  problems = []
  for path, low, inclusive in _BOUNDS:
    v = _get(cfg, path)
    if v is None or isinstance(v, bool):
      continue
    if not isinstance(v, (int, float)):
      problems.append(f"{path} must be a number (got {v!r})")
    elif v < low or (v == low and not inclusive) or v == math.inf:
      problems.append(
        f"{path} must be {'>=' if inclusive else '>'} {low}{'' if v != math.inf else ' and finite'} (got {v!r})"
      )
  for path in ("optim.b1", "optim.b2"):
    v = _get(cfg, path)
    if isinstance(v, (int, float)) and not 0 <= v < 1:
      problems.append(f"{path} must be in [0, 1) (got {v!r})")
  envs, corpus = _get(cfg, "data.environments"), _get(cfg, "data.corpus_dir")
  if envs is not None and (not isinstance(envs, (tuple, list)) or not all(isinstance(x, str) for x in envs)):
    problems.append(f"data.environments must be a tuple of environment names, e.g. \"('hopper-ou',)\" (got {envs!r})")
  if corpus is not None and not isinstance(corpus, str):
    problems.append(f"data.corpus_dir must be a path (got {corpus!r})")
  if problems:
    raise ConfigError("; ".join(problems))


def check_data_config(cfg, model, mesh) -> None:
  """data.history is the model's, a window fits model.max_window_len, and the batches divide over
  the mesh's batch shards and the processes."""
  d = cfg.data
  if d.history != model.history:
    raise ConfigError(
      f"data.history={d.history} but the model's history is {model.history}: set "
      "--config.model.history to match (or the other way round)"
    )
  model.check_fits(
    f"a window of data.history + data.horizon = {d.history + d.horizon} steps",
    "raise --config.model.max_window_len",
    max_window_len=d.history + d.horizon,
  )
  shards_n = mesh_lib.batch_shards(mesh, mesh_lib.config_rules(cfg.mesh))
  for name, b in (("data.batch_size", d.batch_size), ("data.eval_batch_size", d.eval_batch_size)):
    if b % shards_n or b % jax.process_count():
      raise ConfigError(
        f"{name}={b} must be divisible by the {shards_n} batch shards of the mesh "
        f"{dict(mesh.shape)} and by the {jax.process_count()} processes"
      )


def check_env_fits(model, meta: dict, who: str, hint: str) -> None:
  """WorldModel.check_robot on a corpus environment's robot, from its metadata (shards.py)."""
  model.check_robot(
    who,
    hint,
    obs_struct=meta["obs_struct"],
    act_struct=meta["act_struct"],
    obs_kind=meta["obs_kind"],
    act_kind=meta["act_kind"],
  )


def check_corpus_fits_model(data_cfg, envs: list[str], model) -> None:
  """Each environment's channels, structural indices and kinds fit the model's tables (an index
  past one would silently read NaN from an embedding)."""
  for name in envs:
    meta = shards.load_metadata(os.path.join(data_cfg.corpus_dir, name))
    check_env_fits(model, meta, f"environment '{name}'", "raise --config.model.{field}")
