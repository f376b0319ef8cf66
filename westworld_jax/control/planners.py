"""Build a control policy from a config: oracle MPPI, world-model MPPI (trained or not), or random.

World-model MPPI needs the model, its parameters and the normalisation the model was trained with
for this robot. With a checkpoint they come from `load_for_inference(workdir)` of
westworld_jax.training.loop (what westworld_jax.train exports; imported only then); without one, the
model is built untrained from the registry (useful for latency, useless for control: summaries say
so). Robots the checkpoint never saw (zero-shot) are normalised with a corpus environment's
metadata.json (cfg.stats.corpus_env) or, failing that, short OU-noise rollouts in C MuJoCo.
"""

from __future__ import annotations

import os

from absl import logging
import jax
import numpy as np

from westworld_jax.control import rollout as rollout_lib
from westworld_jax.control import backends
from westworld_jax.control import mppi as mppi_lib
from westworld_jax.control import tasks as tasks_lib
from westworld_jax.data import behaviours as behaviour
from westworld_jax.data import shards, simulate

POLICIES = ("oracle", "world_model", "random")


def stats_from_rollouts(task: tasks_lib.Task, episodes: int = 16, steps: int = 200, seed: int = 0) -> dict:
  """Per-channel min/max of OU-noise rollouts (the corpus's 'ou' behaviour) of the task's robot."""
  rng = np.random.default_rng(seed)
  with simulate.Simulator(task.robot) as sim:
    start = sim.initial_states(rng, episodes)
    ctrl = behaviour.to_ctrl(task.robot, behaviour.open_loop("ou", task.robot, rng, episodes, steps))
    states, _ = sim.run(start, ctrl)
    obs = np.concatenate([sim.observe(start)[:, None], sim.observe(states)], axis=1)
  obs = obs[np.isfinite(obs).all(axis=(1, 2))]
  if not len(obs):
    raise ValueError(f"every OU rollout of '{task.robot.name}' diverged; give stats from a corpus instead")
  return {
    "obs_min": obs.min((0, 1)).tolist(),
    "obs_max": obs.max((0, 1)).tolist(),
    "act_min": ctrl.min((0, 1)).tolist(),
    "act_max": ctrl.max((0, 1)).tolist(),
  }


def stats_from_corpus(env_dir: str) -> dict:
  return shards.load_metadata(env_dir)["stats"]


def pick_stats(data_stats: dict, task: tasks_lib.Task, env: str = "") -> tuple[str, dict]:
  """(env name, stats) for the task's robot from a checkpoint's data_stats.

  data_stats maps environment -> {"robot", "stats", "obs_channels", "act_channels"} (as
  inference.load_for_inference returns; a bare stats dict is accepted too). Picks `env` if
  given, else the robot's '-mpc' environment, else its first one; ("", {}) if the model never saw
  the robot (zero-shot: the caller falls back to other stats).
  """
  robot = task.robot.name

  def entry(name):
    v = data_stats[name]
    stats = v.get("stats", v)
    names = v.get("obs_channels")
    if names is not None and list(names) != [c.name for c in task.robot.obs_channels]:
      raise ValueError(
        f"checkpoint environment '{name}' has observation channels {names}, robot '{robot}' has "
        f"{[c.name for c in task.robot.obs_channels]}: pick stats of this robot (--config.stats.env)"
      )
    return name, stats

  if env:
    if env not in data_stats:
      raise KeyError(f"the checkpoint has no normalisation stats for environment '{env}'; it has {sorted(data_stats)}")
    return entry(env)
  mine = sorted(
    k for k, v in data_stats.items() if (isinstance(v, dict) and v.get("robot") == robot) or k.startswith(robot + "-")
  )
  for k in mine:
    if k.endswith("-mpc"):
      return entry(k)
  if mine:
    return entry(mine[0])
  return "", {}


def spec_batch(num_obs: int, num_act: int, steps: int, batch: int = 1) -> dict:
  """An all-real BATCH_SPEC batch of zeros (to initialise any registry model)."""
  from westworld_jax.model.batch import zeros_batch  # pylint: disable=import-outside-toplevel

  return zeros_batch(batch, steps, num_obs, num_act)


def world_model_parts(task: tasks_lib.Task, cfg, checkpoint: str | None):
  """(world_model, params, Normaliser, description) for the task, per cfg.model / cfg.stats."""
  desc = {}
  if checkpoint:
    from westworld_jax import inference  # pylint: disable=import-outside-toplevel

    wm, params, data_stats = inference.load_for_inference(checkpoint)
    env, stats = pick_stats(data_stats or {}, task, cfg.stats.env)
    desc.update(trained=True, checkpoint=os.path.abspath(checkpoint))
    if not stats:
      logging.warning(
        "the checkpoint has no data of robot '%s' (zero-shot): normalising with other stats", task.robot.name
      )
  else:
    from westworld_jax.model import registry  # pylint: disable=import-outside-toplevel

    wm = registry.build(cfg.model.name, cfg.model.size, **dict(cfg.model.overrides))
    T = wm.history + cfg.mppi.horizon
    params = jax.jit(wm.init)(jax.random.key(cfg.seed), spec_batch(task.num_obs, task.num_act, T))
    env, stats = "", {}
    desc.update(trained=False, note="untrained world model (random init): pass --checkpoint for real control")
    logging.warning(
      "world-model MPPI with an UNTRAINED %s/%s model: latency is meaningful, returns are not; pass --checkpoint DIR",
      cfg.model.name,
      cfg.model.size,
    )
  if not stats and cfg.stats.corpus_env:
    env, stats = cfg.stats.corpus_env, stats_from_corpus(cfg.stats.corpus_env)
  if not stats:
    env = f"ou rollouts ({cfg.stats.rollout_episodes} x {cfg.stats.rollout_steps} steps)"
    stats = stats_from_rollouts(task, cfg.stats.rollout_episodes, cfg.stats.rollout_steps, cfg.seed)
    logging.info("normalisation stats for '%s' from %s", task.robot.name, env)
  norm = backends.Normaliser.from_stats(stats, task.num_obs, task.num_act, where=f"stats of {env}")
  desc.update(model=wm.name, history=wm.history, stats_from=env)
  return wm, params, norm, desc


def make_policy(name: str, task: tasks_lib.Task, cfg, checkpoint: str | None = None, mesh=None):
  """(policy, history the environments must keep, description) for policy `name`."""
  if name == "random":
    return rollout_lib.RandomPolicy(task), 1, {}
  mcfg = mppi_lib.MPPIConfig.from_dict(cfg.mppi)
  if name == "oracle":
    return mppi_lib.MPPI(backends.OracleBackend(task), mcfg, mesh=mesh), 1, {}
  if name == "world_model":
    wm, params, norm, desc = world_model_parts(task, cfg, checkpoint)
    backend = backends.WorldModelBackend(wm, params, [task], [norm], mcfg.horizon, sample_chunk=cfg.wm_sample_chunk)
    return mppi_lib.MPPI(backend, mcfg, mesh=mesh), backend.history, desc
  raise ValueError(f"unknown policy '{name}': choose from {POLICIES}")
