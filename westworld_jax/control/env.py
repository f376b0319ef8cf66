"""Batched environments for the closed loop: n episodes of one task stepped together.

`EnvState` carries, per environment, the physics state and goal, the last H observations and H-1
actions (what a world-model planner conditions on), the return so far (of the task's `reward`:
-cost, or gym's reward for a `gym_return` variant; never the reference-tracking term), the
episode step and whether the episode is still alive. Before the first step the history is the
first observation repeated with the task's neutral (zero-torque) control: a world model then sees
the robot at rest.

Two physics keep that contract, so every planner and control/rollout.py work with either:
`Envs` steps MJX (one jitted call; the accelerator path) and `MujocoEnvs` C MuJoCo on the host
(the CPU path: mj_step per environment, then the same jitted bookkeeping). control/physics.py
picks one. One key gives both the same start states (`Task.episode_start`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from westworld_jax.control import mujoco_backend
from westworld_jax.control import tasks as tasks_lib


class EnvState(NamedTuple):
  d: Any  # physics state: mjx.Data (Envs) or mujoco_backend.MjState (MujocoEnvs)
  goal: jax.Array  # [GOAL_DIM]
  obs_hist: jax.Array  # [H, num_obs]; obs_hist[-1] is the current observation
  act_hist: jax.Array  # [H-1, num_act]; act_hist[i] was applied after obs_hist[i]
  robot: jax.Array  # int32 index of the task in a multi-robot world-model backend
  alive: jax.Array  # bool: no unhealthy state reached yet
  ret: jax.Array  # float32 return (sum of rewards while alive)
  steps: jax.Array  # int32 steps taken while alive: the episode step, the reference cost's phase


class Envs:
  """MJX environments: `reset(key, n) -> EnvState [n]` and `step(state, ctrl [n, num_act]) ->
  (state, reward [n])`, jitted."""

  physics = "mjx"

  def __init__(self, task: tasks_lib.Task, history: int = 1, robot_index: int = 0):
    if history < 1:
      raise ValueError(f"history must be >= 1 observation, got {history}")
    self.task, self.history, self.robot_index = task, int(history), int(robot_index)
    self.reset = jax.jit(self._reset, static_argnums=1)
    self.step = jax.jit(self._step)

  # --- bookkeeping shared by both physics (one environment, vmapped) -------------------------------
  def _start(self, d, goal, obs) -> EnvState:
    task, H = self.task, self.history
    neutral = jnp.asarray(task.neutral_ctrl())
    return EnvState(
      d,
      goal,
      jnp.broadcast_to(obs, (H, task.num_obs)),
      jnp.broadcast_to(neutral, (H - 1, task.num_act)),
      jnp.int32(self.robot_index),
      jnp.asarray(True),
      jnp.float32(0.0),
      jnp.int32(0),
    )

  def _advance(self, s: EnvState, d, obs, ctrl) -> tuple[EnvState, jax.Array]:
    """The state after ctrl (clipped) led to physics state d with observation obs; the reward."""
    task = self.task
    reward, healthy = task.reward(obs, ctrl, s.goal, s.d.qpos, d.qpos)
    reward = jnp.where(s.alive, reward, 0.0).astype(jnp.float32)
    alive = s.alive & (healthy | (not task.terminates))
    obs_hist = jnp.concatenate([s.obs_hist[1:], obs[None]], axis=0)
    act_hist = jnp.concatenate([s.act_hist[1:], ctrl[None]], axis=0) if self.history > 1 else s.act_hist
    s = EnvState(d, s.goal, obs_hist, act_hist, s.robot, alive, s.ret + reward, s.steps + s.alive.astype(jnp.int32))
    return s, reward

  def _clip(self, ctrl):
    return jnp.clip(ctrl[..., : self.task.num_act], self.task.act_low, self.task.act_high)

  # --- MJX --------------------------------------------------------------------------------------
  def _reset_one(self, key) -> EnvState:
    d, goal = self.task.reset(key)
    return self._start(d, goal, self.task.observe(d))

  def _reset(self, key, n: int) -> EnvState:
    return jax.vmap(self._reset_one)(jax.random.split(key, n))

  def _step_one(self, s: EnvState, ctrl):
    ctrl = self._clip(ctrl)
    d = self.task.step(s.d, ctrl)
    return self._advance(s, d, self.task.observe(d), ctrl)

  def _step(self, s: EnvState, ctrl):
    return jax.vmap(self._step_one)(s, ctrl)


class MujocoEnvs(Envs):
  """C MuJoCo environments with the same interface: physics on the host (exact float64 states in
  `EnvState.d`, an MjState), observations, costs and histories in one jitted call per step."""

  physics = "mujoco"

  def __init__(self, task: tasks_lib.Task, history: int = 1, robot_index: int = 0):
    super().__init__(task, history, robot_index)
    self.sim = mujoco_backend.MujocoPhysics(task, nthread=1)  # steps are per environment, serial
    self._starts = jax.jit(lambda key, n: jax.vmap(task.episode_start)(jax.random.split(key, n)), static_argnums=1)
    self._start_all = jax.jit(jax.vmap(self._start))
    self._advance_all = jax.jit(jax.vmap(self._advance))
    self.reset, self.step = self._reset_host, self._step_host

  def _state(self, x: np.ndarray):
    return mujoco_backend.MjState(mujoco_backend.to_bits(x), self.sim.qpos(x).astype(np.float32)), self.sim.observe(x)

  def _reset_host(self, key, n: int) -> EnvState:
    qpos, qvel, goal = self._starts(key, n)
    d, obs = self._state(self.sim.initial(np.asarray(qpos), np.asarray(qvel)))
    return self._start_all(d, goal, obs)

  def _step_host(self, s: EnvState, ctrl):
    ctrl = np.asarray(self._clip(ctrl))
    x = mujoco_backend.from_bits(np.asarray(s.d.bits))
    x_next = self.sim.step(x, ctrl)
    d, obs = self._state(x_next)
    obs[x_next[:, 0] <= x[:, 0]] = np.nan  # MuJoCo reset a diverged simulation (time restarted): as MJX's NaN
    return self._advance_all(s, d, obs, ctrl)
