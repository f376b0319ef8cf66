"""Control data for world-model fine-tuning: MPPI rollouts -> a corpus environment.

As the authors do, the planner's own closed-loop episodes are collected, the best ~10% by return
are kept, and they are written like any other corpus environment (shards.write_shard + finalize,
as data/collect.py), named '<robot>-mppi_<backend>', so the finetune command can read them with the
data pipeline (metadata.json carries the robot's channels, structure and normalisation stats).
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
from typing import Sequence

from absl import logging
import jax
import numpy as np

from westworld_jax.control import mppi as mppi_lib
from westworld_jax.control import physics as physics_lib
from westworld_jax.control import rollout as rollout_lib
from westworld_jax.control import tasks as tasks_lib
from westworld_jax.control.mppi_config import MPPIConfig
from westworld_jax.data import shards
from westworld_jax.robots import catalogue


def select_best(episodes: Sequence[dict], keep_fraction: float) -> list[dict]:
  """The ceil(keep_fraction * n) episodes (at least one) with the highest return, best first."""
  if not 0.0 < keep_fraction <= 1.0:
    raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
  if not episodes:
    raise ValueError("no episodes to select from: run at least one episode")
  k = max(1, math.ceil(keep_fraction * len(episodes)))
  order = sorted(range(len(episodes)), key=lambda i: -episodes[i]["return"])
  return [episodes[i] for i in order[:k]]


def write_corpus(
  task: tasks_lib.Task,
  episodes: Sequence[dict],
  corpus_dir: str,
  env_name: str | None = None,
  behaviour: str = "mppi_oracle",
  val_fraction: float = 0.1,
  episodes_per_shard: int = 16,
  overwrite: bool = False,
  info: dict | None = None,
) -> dict:
  """Writes episodes ({'obs' [t, Co], 'act' [t, Ca]}) as corpus environment `env_name`; returns its metadata."""
  env_name = env_name or f"{task.robot.name}-{behaviour}"
  env_dir = os.path.join(corpus_dir, env_name)
  old = glob.glob(os.path.join(env_dir, "shard-*")) + glob.glob(os.path.join(env_dir, shards.METADATA))
  if old:
    if not overwrite:
      raise FileExistsError(
        f"{env_dir} already holds a corpus environment; pass overwrite=True "
        "(--config.collect.overwrite=True) or choose another corpus_dir / env name"
      )
    for path in old:
      os.remove(path)
  eps = []
  for ep in episodes:
    obs, act = np.asarray(ep["obs"], np.float32), np.asarray(ep["act"], np.float32)
    if obs.shape != (len(act), task.num_obs) or act.shape[1:] != (task.num_act,):
      raise ValueError(
        f"episode shapes obs {obs.shape} / act {act.shape} do not match robot "
        f"'{task.robot.name}' ({task.num_obs} obs, {task.num_act} act channels)"
      )
    eps.append({"obs": obs, "act": act})
  num_shards = -(-len(eps) // episodes_per_shard)
  for s in range(num_shards):
    part = eps[s * episodes_per_shard : (s + 1) * episodes_per_shard]
    shards.write_shard(
      env_dir, s, part, {"counts": {"kept": len(part), "steps": sum(len(e["obs"]) for e in part)}, **(info or {})}
    )
  spec = catalogue.robot_specs().get(task.robot.name)
  split = spec.split if spec is not None else catalogue.PRETRAIN
  return shards.finalize(env_dir, env_name, task.robot, behaviour, split, num_shards, val_fraction)


def collect(
  task: tasks_lib.Task,
  config: MPPIConfig,
  corpus_dir: str,
  episodes: int,
  episode_len: int,
  n_envs: int = 8,
  keep_fraction: float = 0.1,
  seed: int = 0,
  val_fraction: float = 0.1,
  overwrite: bool = False,
  env_name: str | None = None,
  physics: str = "auto",
  expert: mppi_lib.ExpertActions | None = None,
) -> dict:
  """Runs `episodes` oracle-MPPI episodes, keeps the best keep_fraction, writes them; returns a summary.

  The oracle and its environments step `physics` (control/physics.py: C MuJoCo on a CPU, MJX on an
  accelerator). `expert`: the action statistics an MPPI config with 'expert' init or tail needs.
  """
  physics = physics_lib.resolve(physics)
  planner = mppi_lib.MPPI(physics_lib.make_oracle(task, physics), config, expert=expert)
  envs = physics_lib.make_envs(task, physics=physics)
  all_eps, key = [], jax.random.key(seed)
  for start in range(0, episodes, n_envs):
    key, sub = jax.random.split(key)
    n = min(n_envs, episodes - start)
    log = rollout_lib.run_episode(
      envs,
      planner,
      n,
      episode_len,
      sub,
      progress=f"control data {task.name}: episodes {start + 1}-{start + n}/{episodes}",
    )
    all_eps += log.episodes()
    logging.info(
      "control data %s: %d/%d episodes, returns %s",
      task.name,
      len(all_eps),
      episodes,
      np.round(log.returns, 1).tolist(),
    )
  best = select_best(all_eps, keep_fraction)
  meta = write_corpus(
    task,
    best,
    corpus_dir,
    env_name,
    val_fraction=val_fraction,
    overwrite=overwrite,
    info={"mppi": dataclasses.asdict(config), "physics": physics},
  )
  rets = np.array([e["return"] for e in all_eps])
  return {
    "env": meta["env"],
    "physics": physics,
    "episodes_run": len(all_eps),
    "episodes_kept": len(best),
    "return_mean_all": float(rets.mean()),
    "return_min_kept": float(min(e["return"] for e in best)),
    "return_max": float(rets.max()),
  }
