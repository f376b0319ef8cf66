"""The shipped control tasks (the contract, `Task`: control/task.py) and `make_task` by name.

Tasks (see TASKS): 'pendulum' (dm_control pendulum swing-up from hanging down), 'reacher'
(dm_control reacher to a random reachable target), 'hopper' and 'walker2d' (gym-style forward
locomotion: x velocity + healthy bonus - 1e-3 |u|^2, gym's unhealthy conditions), 'go1' (walk
forward while upright), 'franka' (Franka Panda end-effector reach).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from westworld_jax.robots import kinematics
from westworld_jax.control.task import GOAL_DIM, Task, trajectory_cost  # noqa: F401 (the task API in one import)


# --- tasks ---------------------------------------------------------------------------------------


class PendulumSwingUp(Task):
  """dm_control pendulum: swing up from hanging down (1 Nm torque vs 4.9 Nm of gravity: it must pump).

  reward = (1 + cos(angle)) / 2 (1 upright, 0 hanging) - 1e-3 u^2; dm_control's reward is a sparse
  tolerance on the same uprightness, smoothed here so sampling planners get a gradient.
  """

  name, robot_name, episode_len = "pendulum", "dmc_pendulum", 250

  def __init__(self, robot=None, start: str = "bottom", exact_physics: bool = False):
    super().__init__(robot, exact_physics)
    if start not in ("bottom", "random"):
      raise ValueError(f"pendulum start must be 'bottom' or 'random', got '{start}'")
    self.start = start
    self._angle = self.obs_index("joint_pos")[0]

  def _reset_qpos_qvel(self, key):
    ka, kv = jax.random.split(key)
    if self.start == "bottom":
      angle = jnp.pi + jax.random.uniform(ka, (1,), minval=-0.1, maxval=0.1)
    else:
      angle = jax.random.uniform(ka, (1,), minval=-jnp.pi, maxval=jnp.pi)
    return angle, 0.01 * jax.random.normal(kv, (1,))

  def _upright(self, obs):
    return 0.5 * (1.0 + jnp.cos(obs[self._angle]))

  def cost(self, obs, ctrl, goal):
    c = 1.0 - self._upright(obs) + 1e-3 * jnp.sum(ctrl**2)
    return c, jnp.asarray(True)

  def terminal_cost(self, obs, goal):
    return 1.0 - self._upright(obs)


class Reach(Task):
  """Move the end effector to a random reachable target (goal = FK of random joint angles).

  reward = -|ee - goal| - vel_cost * |qvel|^2 - 1e-3 |u/u_max|^2; terminal: -|ee - goal|.
  The end effector is computed from the observed joint positions with MJX forward kinematics, so
  the world-model backend evaluates it on predicted joint angles exactly as the oracle does.
  """

  ee_body = ""
  ee_offset = (0.0, 0.0, 0.0)  # in the end-effector body's frame
  goal_spread = 0.6  # target joint angles: home +- this (rad), within joint ranges
  vel_cost = 0.0
  episode_len = 200

  def __init__(self, robot=None, exact_physics: bool = False):
    super().__init__(robot, exact_physics)
    m = self.model
    self._ee = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, self.ee_body)
    if self._ee < 0:
      raise ValueError(f"task '{self.name}': robot '{self.robot.name}' has no body '{self.ee_body}'")
    pos_kinds = ("joint_pos", "slide_pos")
    chans = self.robot.obs_channels
    self._pos_obs = np.array([i for i, c in enumerate(chans) if c.kind in pos_kinds])
    self._pos_adr = np.array([chans[i].address for i in self._pos_obs])
    self._vel_obs = np.array([i for i, c in enumerate(chans) if c.kind in ("joint_vel", "slide_vel")])
    if len(self._pos_adr) != m.nq:
      raise ValueError(
        f"task '{self.name}' needs every qpos observed (a fixed-base robot); robot "
        f"'{self.robot.name}' observes {len(self._pos_adr)} of {m.nq}"
      )
    lo, hi = m.jnt_range[:, 0], m.jnt_range[:, 1]
    limited = m.jnt_limited.astype(bool)
    q0 = m.qpos0[m.jnt_qposadr]
    self._goal_lo = np.where(limited, np.maximum(lo, q0 - self.goal_spread), q0 - self.goal_spread)
    self._goal_hi = np.where(limited, np.minimum(hi, q0 + self.goal_spread), q0 + self.goal_spread)
    self._goal_adr = np.array(m.jnt_qposadr)
    self._u_scale = np.maximum(np.abs(self.act_low), np.abs(self.act_high))
    self._fk = kinematics.chain_fk(m, self._ee)

  def ee_from_qpos(self, qpos: jax.Array) -> jax.Array:
    pos, mat = self._fk(qpos.astype(jnp.float32))
    return pos + mat @ jnp.asarray(self.ee_offset, jnp.float32)

  def ee_from_obs(self, obs: jax.Array) -> jax.Array:
    qpos = jnp.zeros(self.model.nq, jnp.float32).at[self._pos_adr].set(obs[self._pos_obs])
    return self.ee_from_qpos(qpos)

  def sample_goal(self, key):
    q = (
      jnp.asarray(self._qpos0)
      .at[self._goal_adr]
      .set(jax.random.uniform(key, (len(self._goal_adr),), minval=self._goal_lo, maxval=self._goal_hi))
    )
    return self.ee_from_qpos(q)

  def cost(self, obs, ctrl, goal):
    dist = jnp.linalg.norm(self.ee_from_obs(obs) - goal)
    c = dist + self.vel_cost * jnp.sum(obs[self._vel_obs] ** 2) + 1e-3 * jnp.sum((ctrl / self._u_scale) ** 2)
    return c, jnp.asarray(True)

  def terminal_cost(self, obs, goal):
    return jnp.linalg.norm(self.ee_from_obs(obs) - goal)


class Reacher(Reach):
  """dm_control reacher (2 links, planar): fingertip to a random target."""

  name, robot_name = "reacher", "dmc_reacher"
  ee_body = "finger"
  goal_spread = 2.5

  def _reset_qpos_qvel(self, key):
    ka, kv = jax.random.split(key)
    return (jax.random.uniform(ka, (2,), minval=-0.5, maxval=0.5), 0.01 * jax.random.normal(kv, (2,)))


class FrankaReach(Reach):
  """Franka Panda (torque motors, gravity on): tool centre point (10.34 cm past the hand) to a target."""

  name, robot_name = "franka", "franka_panda"
  ee_body = "hand"
  ee_offset = (0.0, 0.0, 0.1034)
  goal_spread = 0.6
  vel_cost = 1e-3
  physics = {"iterations": 4, "ls_iterations": 8}


class GymLocomotion(Task):
  """gym-style planar locomotion (Hopper-v4 / Walker2d-v4 reward and termination).

  reward = x velocity + 1 (healthy bonus) - 1e-3 |u|^2; unhealthy when root height leaves
  healthy_z, the torso angle leaves healthy_angle, or any observation but height exceeds 100.
  The forward term is the root x velocity at the end of the control step (gym uses the mean
  velocity over the step, dx/dt; the world model observes velocities, not global x); a
  `gym_return` variant's environments report gym's v5 reward itself (dx/dt, the healthy bonus
  only while healthy). MJX physics
  as brax's MJX Hopper/Walker2d: Euler instead of gym's RK4 and 4 solver iterations (~20x faster
  on a CPU; exact_physics=True keeps RK4).
  """

  terminates = True
  physics = {"integrator": mujoco.mjtIntegrator.mjINT_EULER, "iterations": 4, "ls_iterations": 8}
  healthy_z = (0.7, float("inf"))
  healthy_angle = (-0.2, 0.2)
  episode_len = 1000

  def __init__(self, robot=None, exact_physics: bool = False):
    super().__init__(robot, exact_physics)
    self._z = self.obs_index("root_height")[0]
    self._angle = self.obs_index("root_angle")[0]
    self._vx = self.obs_index("root_x_vel")[0]
    vx_dof = self.robot.obs_channels[self._vx].address
    self._x = int(self.model.jnt_qposadr[self.model.dof_jntid[vx_dof]])  # the root's x in qpos

  def healthy(self, obs):
    z, a = obs[self._z], obs[self._angle]
    rest = jnp.delete(obs, self._z, assume_unique_indices=True)
    return (
      (z > self.healthy_z[0])
      & (z < self.healthy_z[1])
      & (a > self.healthy_angle[0])
      & (a < self.healthy_angle[1])
      & jnp.all(jnp.abs(rest) < 100.0)
    )

  def cost(self, obs, ctrl, goal):
    reward = obs[self._vx] + 1.0 - 1e-3 * jnp.sum(ctrl**2)
    return -reward, self.healthy(obs)

  def reward(self, obs, ctrl, goal, qpos_before, qpos_after):
    if not self.gym_return:
      return super().reward(obs, ctrl, goal, qpos_before, qpos_after)
    healthy = self.healthy(obs)
    forward = (qpos_after[self._x] - qpos_before[self._x]) / self.dt
    return forward + healthy.astype(jnp.float32) - 1e-3 * jnp.sum(ctrl**2), healthy


class Hopper(GymLocomotion):
  name, robot_name = "hopper", "hopper"


class Walker2d(GymLocomotion):
  name, robot_name = "walker2d", "walker2d"
  healthy_z = (0.8, 2.0)
  healthy_angle = (-1.0, 1.0)


class Go1Walk(Task):
  """Unitree Go1 (torque motors): walk forward (+x) at up to target_speed while staying upright.

  reward = min(vx, target_speed) + 1 (healthy) - 0.5 (1 - upright) - 1e-3 |u / 45 Nm|^2,
  upright = z component of the trunk's up axis; unhealthy (episode ends) when the trunk drops below
  60% of its standing height or tilts past ~45 degrees. Self-collisions are off in MJX (world
  contacts kept): with them the model does not fit in memory on CPU.
  """

  name, robot_name = "go1", "quad_go1"
  self_collisions = False
  terminates = True
  physics = {"iterations": 4, "ls_iterations": 8}
  target_speed = 0.5
  episode_len = 500

  def __init__(self, robot=None, exact_physics: bool = False):
    super().__init__(robot, exact_physics)
    self._z = self.obs_index("root_height")[0]
    self._quat = self.obs_index("root_quat")
    self._v = self.obs_index("root_linvel")
    key = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_KEY, "home")
    self._home = np.array(self.model.key_qpos[key] if key >= 0 else self.model.qpos0, np.float32)
    self._h0 = float(self._home[2])
    self._hinge = _hinge_qpos_mask(self.model)
    self._u_scale = np.maximum(np.abs(self.act_low), np.abs(self.act_high))

  def _reset_qpos_qvel(self, key):
    kq, kv = jax.random.split(key)
    qpos = self._home + 0.02 * jax.random.normal(kq, (self.model.nq,)) * self._hinge
    return qpos, 0.02 * jax.random.normal(kv, (self.model.nv,))

  def cost(self, obs, ctrl, goal):
    _, qx, qy, _ = (obs[i] for i in self._quat)
    upright = 1.0 - 2.0 * (qx**2 + qy**2)
    healthy = (obs[self._z] > 0.6 * self._h0) & (upright > 0.7)
    reward = (
      jnp.minimum(obs[self._v[0]], self.target_speed)
      + 1.0
      - 0.5 * (1.0 - upright)
      - 1e-3 * jnp.sum((ctrl / self._u_scale) ** 2)
    )
    return -reward, healthy


def _hinge_qpos_mask(model: mujoco.MjModel) -> np.ndarray:
  mask = np.zeros(model.nq, np.float32)
  for j in range(model.njnt):
    if int(model.jnt_type[j]) in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
      mask[model.jnt_qposadr[j]] = 1.0
  return mask


TASKS: dict[str, Callable[..., Task]] = {
  "pendulum": PendulumSwingUp,
  "reacher": Reacher,
  "hopper": Hopper,
  "walker2d": Walker2d,
  "go1": Go1Walk,
  "franka": FrankaReach,
}


@functools.lru_cache(maxsize=None)
def make_task(name: str) -> Task:
  """The task `name` (cached: the MJX model is built once per process)."""
  if name not in TASKS:
    raise ValueError(f"unknown control task '{name}'; choose one of {sorted(TASKS)}")
  return TASKS[name]()
