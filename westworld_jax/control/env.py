"""Batched environments for the closed loop: n episodes of one task stepped together in MJX.

`EnvState` carries, per environment, the MJX state and goal, the last H observations and H-1
actions (what a world-model planner conditions on), the return so far and whether the episode
is still alive. Before the first step the history is the first observation repeated with the
task's neutral (zero-torque) control: a world model then sees the robot at rest.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from westworld_jax.control import tasks as tasks_lib


class EnvState(NamedTuple):
  d: Any  # mjx.Data
  goal: jax.Array  # [GOAL_DIM]
  obs_hist: jax.Array  # [H, num_obs]; obs_hist[-1] is the current observation
  act_hist: jax.Array  # [H-1, num_act]; act_hist[i] was applied after obs_hist[i]
  robot: jax.Array  # int32 index of the task in a multi-robot world-model backend
  alive: jax.Array  # bool: no unhealthy state reached yet
  ret: jax.Array  # float32 return (sum of rewards while alive)
  steps: jax.Array  # int32 steps taken while alive


class Envs:
  """`reset(key, n) -> EnvState [n]` and `step(state, ctrl [n, num_act]) -> (state, reward [n])`, jitted."""

  def __init__(self, task: tasks_lib.Task, history: int = 1, robot_index: int = 0):
    if history < 1:
      raise ValueError(f"history must be >= 1 observation, got {history}")
    self.task, self.history, self.robot_index = task, int(history), int(robot_index)
    self.reset = jax.jit(self._reset, static_argnums=1)
    self.step = jax.jit(self._step)

  def _reset_one(self, key) -> EnvState:
    task, H = self.task, self.history
    d, goal = task.reset(key)
    obs = task.observe(d)
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

  def _reset(self, key, n: int) -> EnvState:
    return jax.vmap(self._reset_one)(jax.random.split(key, n))

  def _step_one(self, s: EnvState, ctrl):
    task = self.task
    ctrl = jnp.clip(ctrl[: task.num_act], task.act_low, task.act_high)
    d = task.step(s.d, ctrl)
    cost, healthy = task.state_cost(d, ctrl, s.goal)
    reward = jnp.where(s.alive, -cost, 0.0).astype(jnp.float32)
    alive = s.alive & (healthy | (not task.terminates))
    obs = task.observe(d)
    obs_hist = jnp.concatenate([s.obs_hist[1:], obs[None]], axis=0)
    act_hist = jnp.concatenate([s.act_hist[1:], ctrl[None]], axis=0) if self.history > 1 else s.act_hist
    s = EnvState(d, s.goal, obs_hist, act_hist, s.robot, alive, s.ret + reward, s.steps + s.alive.astype(jnp.int32))
    return s, reward

  def _step(self, s: EnvState, ctrl):
    return jax.vmap(self._step_one)(s, ctrl)
