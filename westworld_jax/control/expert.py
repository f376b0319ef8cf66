"""The robot's trained PPO expert as a control policy, and its episode as the default reference.

`ExpertPolicy` acts in the closed loop like the other policies (control/rollout.py): the
deterministic mean action of the policy that data/train_policy.py trained (level 'expert' by
default), on the observation it was trained with (data/rl_env.observe: gym's for gym robots, qpos
without x and clipped qvel, gathered from the environments' observation channels; the robot's own
channels otherwise). `expert_episode` runs it for one episode in C MuJoCo, stepping the control
task's model (the physics every policy is evaluated on), and `expert_reference_file` caches that
episode as a reference npz (control/reference.py: qpos, qvel, actions, rewards), named by the
policy, the physics, the length and the seed, so a rerun reuses it.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from westworld_jax import cache_dirs
from westworld_jax.control import mujoco_backend
from westworld_jax.control import tasks as tasks_lib
from westworld_jax.data import rl_env, train_policy


def _actor(task: tasks_lib.Task, policy) -> Callable:
  """obs [E, num_obs] (the task robot's channels) -> ctrl [E, nu], jittable."""
  spec = rl_env.reward_spec(task.robot.name)
  gather, vel, clip = np.arange(task.num_obs), np.zeros(task.num_obs, bool), None
  if spec is not None:  # gym's observation: qpos[skip:], then qvel (clipped)
    nq, nv = task.model.nq, task.model.nv
    want = list(range(spec.skip_qpos, nq)) + list(range(nq, nq + nv))
    where = {int(g): i for i, g in enumerate(task.robot.obs_gather)}
    if any(w not in where for w in want):
      raise ValueError(f"robot '{task.robot.name}' does not observe all of gym's observation entries {want}")
    gather, vel, clip = np.array([where[w] for w in want]), np.array(want) >= nq, spec.qvel_clip
  mean = jnp.asarray(policy.obs_stats["mean"], jnp.float32)
  scale = jnp.asarray(1.0 / np.sqrt(np.asarray(policy.obs_stats["var"]) + 1e-8), jnp.float32)
  lo, hi = jnp.asarray(task.act_low), jnp.asarray(task.act_high)

  def act(obs):
    x = obs[:, gather]
    if clip is not None:
      x = jnp.where(vel, jnp.clip(x, -clip, clip), x)
    x = jnp.clip((x - mean) * scale, -policy.obs_clip, policy.obs_clip)
    a = jnp.clip(policy.net.apply(policy.params, x)[0], -1.0, 1.0)
    return lo + (a + 1.0) * 0.5 * (hi - lo)  # data/behaviours.to_ctrl

  return act


class ExpertPolicy:
  """The trained PPO policy of the task's robot: `replan(plan, env_state) -> (ctrl, plan, {})`."""

  kind = "expert_policy"

  def __init__(self, task: tasks_lib.Task, level: str = "expert", policy_root: str | None = None):
    policy, self.meta = train_policy.load_policy(task.robot.name, level, policy_root)
    self.level = level
    act = _actor(task, policy)
    self.act = jax.jit(act)  # obs [E, num_obs] -> ctrl [E, nu]
    self.trace_count = 0

    def replan(plan, s):
      self.trace_count += 1  # Python side effect: runs only while tracing
      return act(s.obs_hist[:, -1]), plan, {}

    self.replan = jax.jit(replan)
    self.init = lambda key, s: key

  def describe(self) -> dict:
    return {"policy": f"PPO {self.level}", "policy_train_return": self.meta.get("return_mean")}


def expert_episode(
  task: tasks_lib.Task, steps: int = 1000, seed: int = 0, level: str = "expert", policy_root: str | None = None
) -> dict:
  """One episode of the expert from Task.episode_start(key(seed)) in C MuJoCo: qpos, qvel [T, .]
  (the states before each action), actions [T, nu], rewards [T] (gym's, for gym locomotion).
  It ends after `steps` steps or, for a task that terminates, at the first unhealthy state."""
  expert = ExpertPolicy(task, level, policy_root)
  sim = mujoco_backend.MujocoPhysics(task, nthread=1)
  reward = jax.jit(task.variant(gym_return=True).reward)
  qpos0, qvel0, goal = task.episode_start(jax.random.key(seed))
  x = sim.initial(np.asarray(qpos0)[None], np.asarray(qvel0)[None])
  out = {"qpos": [], "qvel": [], "actions": [], "rewards": []}
  for _ in range(steps):
    qpos, qvel = sim.sim.qpos_qvel(x)
    u = np.asarray(expert.act(sim.observe(x)))
    x_next = sim.step(x, u)
    r, healthy = reward(sim.observe(x_next)[0], u[0], goal, qpos[0], sim.qpos(x_next)[0])
    for k, v in (("qpos", qpos[0]), ("qvel", qvel[0]), ("actions", u[0]), ("rewards", float(r))):
      out[k].append(v)
    x = x_next
    if task.terminates and not bool(healthy):
      break
  sim.close()
  return {k: np.asarray(v, np.float64 if k in ("qpos", "qvel") else np.float32) for k, v in out.items()}


def cache_dir() -> str:
  return cache_dirs.cache_dir("references")


def expert_reference_file(
  task: tasks_lib.Task,
  steps: int = 1000,
  seed: int = 0,
  directory: str = "",
  level: str = "expert",
  policy_root: str | None = None,
) -> str:
  """The path of the expert's reference episode for `task`, generated (a few seconds) if missing."""
  meta = os.path.join(train_policy.policy_dir(task.robot.name, level, policy_root), train_policy.META)
  if not os.path.exists(meta):
    train_policy.load_policy(task.robot.name, level, policy_root)  # raises PolicyNotFoundError
  with open(meta, "rb") as f:
    h = hashlib.sha256(f.read())
  opt = task.model.opt
  h.update(repr((task.robot.fingerprint(), int(opt.integrator), int(opt.iterations), int(opt.ls_iterations))).encode())
  h.update(repr((float(opt.timestep), task.frame_skip, steps, seed)).encode())
  directory = directory or cache_dir()
  path = os.path.join(directory, f"{task.robot.name}-{level}-{steps}steps-seed{seed}-{h.hexdigest()[:12]}.npz")
  if os.path.exists(path):
    return path
  ep = expert_episode(task, steps, seed, level, policy_root)
  os.makedirs(directory, exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp.npz"
  np.savez(tmp, **ep)
  os.replace(tmp, path)
  logging.info(
    "reference: %s %s episode of %d steps, return %.1f -> %s",
    task.robot.name,
    level,
    len(ep["actions"]),
    float(ep["rewards"].sum()),
    path,
  )
  return path
