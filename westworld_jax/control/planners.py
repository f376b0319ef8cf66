"""Build a control policy from a config: oracle MPPI, world-model MPPI (trained or not), the
robot's PPO expert, or random; and the task they run (`protocol_task`, `policy_task`).

The paper protocol (experiments/control.py: hopper_paper, walker2d_paper) is the config's
`reference` (an episode whose tracking cost the planners add: 'expert' = the PPO expert's cached
episode, control/expert.py, or an npz file, control/reference.py), `gym_return` (the environments
report gym's reward) and `world_model_terminates` (False: the authors' world-model runs, which
neither end an episode nor a rollout at a fall), with the MPPI options of control/mppi_config.py.

World-model MPPI needs the model, its parameters and the normalisation the model was trained with
for this robot. With a checkpoint they come from `load_for_inference(workdir)` of
westworld_jax.inference (what westworld_jax.train exports); without one, the model is built
untrained from the registry (useful for latency, useless for control: summaries say so). Robots
the checkpoint never saw (zero-shot) are normalised with a corpus environment's metadata.json
(cfg.stats.corpus_env) or, failing that, short OU-noise rollouts in C MuJoCo (data/normalise.py).
"""

from __future__ import annotations

import os

from absl import logging
import jax

from westworld_jax import inference
from westworld_jax.control import backends
from westworld_jax.control import expert as expert_lib
from westworld_jax.control import mppi as mppi_lib
from westworld_jax.control import physics as physics_lib
from westworld_jax.control import reference as reference_lib
from westworld_jax.control import rollout as rollout_lib
from westworld_jax.control import tasks as tasks_lib
from westworld_jax.control.mppi_config import MPPIConfig
from westworld_jax.data import normalise
from westworld_jax.model import registry
from westworld_jax.model.batch import zeros_batch

POLICIES = ("oracle", "world_model", "random", "expert_policy")


def protocol_task(cfg) -> tasks_lib.Task:
  """cfg.task with the config's reference-tracking cost and reported reward (as it is without them)."""
  task = tasks_lib.make_task(cfg.task)
  ref, gym_return = cfg.get("reference", ""), bool(cfg.get("gym_return", False))
  if not ref and not gym_return:
    return task
  reference = None
  if ref:
    if ref == "expert":
      e = cfg.reference_episode
      ref = expert_lib.expert_reference_file(task, e.steps, e.seed, e.cache_dir)
    c = cfg.reference_cost
    reference = reference_lib.load(ref, task, tuple(c.pos_weight), tuple(c.vel_weight), c.phase)
  return task.variant(reference=reference, gym_return=gym_return)


def policy_task(name: str, task: tasks_lib.Task, cfg) -> tasks_lib.Task:
  """The task policy `name` runs: with cfg.world_model_terminates False, the world model's episodes
  and rollouts do not end at a fall (the authors' world-model protocol); every other policy's do."""
  if name == "world_model" and task.terminates and not cfg.get("world_model_terminates", True):
    return task.variant(terminates=False)
  return task


def mppi_config(name: str, cfg) -> MPPIConfig:
  """cfg.mppi with the policy's own fields from cfg.policy_mppi[name] (e.g. a shorter world-model horizon)."""
  own = cfg.get("policy_mppi", {}).get(name, {})
  return MPPIConfig.from_dict({**dict(cfg.mppi), **dict(own)})


def expert_actions(task: tasks_lib.Task, mcfg: MPPIConfig, dim: int) -> mppi_lib.ExpertActions | None:
  """The reference episode's action statistics when the MPPI settings start or extend plans with them."""
  if not mcfg.uses_expert or task.reference is None:
    return None  # MPPI says what is missing
  return mppi_lib.ExpertActions.of(task.reference.actions, dim)


def check_checkpoint(task: tasks_lib.Task, cfg, checkpoint: str) -> None:
  """Before any episode: the checkpoint is a training workdir whose model can plan the task (its robot's
  channels and bodies, its window for the world model's horizon); one UserError otherwise."""
  import ml_collections  # pylint: disable=import-outside-toplevel

  from westworld_jax.training import run_files  # pylint: disable=import-outside-toplevel

  wm = run_files.build_model(ml_collections.ConfigDict(run_files.read_run_config(checkpoint)["model"]))
  horizon = mppi_config("world_model", cfg).horizon
  backends.check_fits(wm, task, min(cfg.get("wm_segment", 0) or horizon, horizon))


def world_model_parts(task: tasks_lib.Task, cfg, checkpoint: str | None):
  """(world_model, params, Normaliser, description) for the task, per cfg.model / cfg.stats."""
  desc = {}
  if checkpoint:
    wm, params, data_stats = inference.load_for_inference(checkpoint)
    env, stats = normalise.pick_stats(data_stats or {}, task.robot, cfg.stats.env)
    desc.update(trained=True, checkpoint=os.path.abspath(checkpoint))
    if not stats:
      logging.warning(
        "the checkpoint has no data of robot '%s' (zero-shot): normalising with other stats", task.robot.name
      )
  else:
    wm = registry.build(cfg.model.name, cfg.model.size, **dict(cfg.model.overrides))
    horizon = mppi_config("world_model", cfg).horizon
    T = wm.history + min(cfg.get("wm_segment", 0) or horizon, horizon)
    params = jax.jit(wm.init)(jax.random.key(cfg.seed), zeros_batch(1, T, task.num_obs, task.num_act))
    env, stats = "", {}
    desc.update(trained=False, note="untrained world model (random init): pass --checkpoint for real control")
    logging.warning(
      "world-model MPPI with an UNTRAINED %s/%s model: latency is meaningful, returns are not; pass --checkpoint DIR",
      cfg.model.name,
      cfg.model.size,
    )
  if not stats and cfg.stats.corpus_env:
    env, stats = cfg.stats.corpus_env, normalise.stats_from_corpus(cfg.stats.corpus_env)
  if not stats:
    env = f"ou rollouts ({cfg.stats.rollout_episodes} x {cfg.stats.rollout_steps} steps)"
    stats = normalise.stats_from_rollouts(task.robot, cfg.stats.rollout_episodes, cfg.stats.rollout_steps, cfg.seed)
    logging.info("normalisation stats for '%s' from %s", task.robot.name, env)
  norm = normalise.Normaliser.from_stats(stats, task.num_obs, task.num_act, where=f"stats of {env}")
  desc.update(model=wm.name, history=wm.history, stats_from=env)
  return wm, params, norm, desc


def make_policy(name: str, task: tasks_lib.Task, cfg, checkpoint: str | None = None, mesh=None):
  """(policy, history the environments must keep, description) for policy `name`.

  The oracle steps cfg.physics (control/physics.py): its environments must be made with the same.
  """
  if name == "random":
    return rollout_lib.RandomPolicy(task), 1, {}
  if name == "expert_policy":
    policy = expert_lib.ExpertPolicy(task)
    return policy, 1, policy.describe()
  mcfg = mppi_config(name, cfg)
  if name == "oracle":
    oracle = physics_lib.make_oracle(task, cfg.physics)
    expert = expert_actions(task, mcfg, oracle.action_dim)
    desc = {"physics": oracle.physics, "mppi": f"{mcfg.samples} x {mcfg.horizon}"}
    return mppi_lib.MPPI(oracle, mcfg, mesh=mesh, expert=expert), 1, desc
  if name == "world_model":
    wm, params, norm, desc = world_model_parts(task, cfg, checkpoint)
    backend = backends.WorldModelBackend(
      wm, params, [task], [norm], mcfg.horizon, sample_chunk=cfg.wm_sample_chunk, segment=cfg.get("wm_segment", 0)
    )
    expert = expert_actions(task, mcfg, backend.action_dim)
    desc["mppi"] = f"{mcfg.samples} x {mcfg.horizon}"
    if backend.segment < mcfg.horizon:
      desc["wm_segment"] = backend.segment
    return mppi_lib.MPPI(backend, mcfg, mesh=mesh, expert=expert), backend.history, desc
  raise ValueError(f"unknown policy '{name}': choose from {POLICIES}")
