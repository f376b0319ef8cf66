"""Batched MuJoCo environments for training behaviour policies, with gymnasium's v5 rewards.

`VecEnv(robot, n)` steps n copies of a catalogue robot together in MuJoCo's C simulator
(data/simulate.Simulator: one multi-threaded mujoco.rollout call per control step), resets each copy
when its episode ends and reports gymnasium-style (obs, reward, terminated, truncated).

Rewards (`RewardSpec`): for gym's Hopper, Walker2d, HalfCheetah, Ant, Swimmer and InvertedPendulum
the v5 definitions
(forward velocity of qpos[0] over one control step, healthy bonus, control and contact costs,
health ranges, observation = qpos without the x(y) position plus clipped qvel, reset noise,
1000-step episodes); for every other locomotion robot `GenericReward`: data/mpc.py's (forward velocity
of the root, an alive bonus while the root stays above 70% of its start height, effort), with weights.
"""

from __future__ import annotations

import dataclasses
import math

import mujoco
import numpy as np

from westworld_jax.data import simulate
from westworld_jax.data.behaviours import to_ctrl
from westworld_jax.robots import catalogue


@dataclasses.dataclass(frozen=True)
class RewardSpec:
  forward_weight: float = 1.0
  ctrl_cost_weight: float = 1e-3
  healthy_reward: float = 1.0
  contact_cost_weight: float = 0.0
  contact_force_range: tuple[float, float] = (-1.0, 1.0)
  terminate_when_unhealthy: bool = True
  z_index: int | None = 1  # qpos index of the root height (None: no height check)
  healthy_z: tuple[float, float] = (0.7, math.inf)
  angle_index: int | None = 2  # qpos index of the root pitch (None: no angle check)
  healthy_angle: tuple[float, float] = (-math.inf, math.inf)
  state_bound: float | None = None  # |qpos[2:]|, |qvel| below this (Hopper)
  skip_qpos: int = 1  # leading qpos entries (x, y positions) left out of the observation
  qvel_clip: float | None = 10.0
  reset_noise: float = 5e-3  # uniform(-a, a) on qpos and qvel
  reset_noise_qvel_normal: bool = False  # HalfCheetah, Ant: qvel noise is normal(0, a)
  max_steps: int = 1000


# gymnasium 1.x mujoco/*_v5.py defaults.
GYM_V5 = {
  "hopper": RewardSpec(healthy_z=(0.7, math.inf), healthy_angle=(-0.2, 0.2), state_bound=100.0),
  "walker2d": RewardSpec(healthy_z=(0.8, 2.0), healthy_angle=(-1.0, 1.0)),
  "gym_half_cheetah": RewardSpec(
    ctrl_cost_weight=0.1,
    healthy_reward=0.0,
    terminate_when_unhealthy=False,
    z_index=None,
    angle_index=None,
    qvel_clip=None,
    reset_noise=0.1,
    reset_noise_qvel_normal=True,
  ),
  "gym_ant": RewardSpec(
    ctrl_cost_weight=0.5,
    contact_cost_weight=5e-4,
    z_index=2,
    healthy_z=(0.2, 1.0),
    angle_index=None,
    skip_qpos=2,
    qvel_clip=None,
    reset_noise=0.1,
    reset_noise_qvel_normal=True,
  ),
  "gym_swimmer": RewardSpec(
    ctrl_cost_weight=1e-4,
    healthy_reward=0.0,
    terminate_when_unhealthy=False,
    z_index=None,
    angle_index=None,
    skip_qpos=2,
    qvel_clip=None,
    reset_noise=0.1,
  ),
  "gym_inverted_pendulum": RewardSpec(
    forward_weight=0.0,
    ctrl_cost_weight=0.0,
    z_index=None,
    angle_index=1,
    healthy_angle=(-0.2, 0.2),
    skip_qpos=0,
    qvel_clip=None,
    reset_noise=0.01,
  ),
}


@dataclasses.dataclass(frozen=True)
class GenericReward:
  """The locomotion reward of robots without a gymnasium definition (data/mpc.py's, with weights):
  forward_weight * root x velocity + healthy_reward while the root's centre of mass stays above
  min_height_fraction of its start height (the episode ends when it does not) - ctrl_cost_weight *
  mean(action^2). A robot without a floating base gets no healthy reward and never terminates."""

  forward_weight: float = 1.0
  healthy_reward: float = 1.0
  ctrl_cost_weight: float = 0.1
  min_height_fraction: float = 0.7


def reward_spec(robot_name: str) -> RewardSpec | None:
  """gymnasium's v5 reward for gym robots; None: the generic locomotion reward."""
  return GYM_V5.get(robot_name)


def observe(sim: simulate.Simulator, spec: RewardSpec | None, states: np.ndarray) -> np.ndarray:
  """The policy's observation of [..., nstate] states: gymnasium's for gym robots (qpos without the
  x(y) position, clipped qvel), else the robot's own observation channels."""
  if spec is None:
    return sim.observe(states)
  qpos, qvel = sim.qpos_qvel(states)
  if spec.qvel_clip is not None:
    qvel = np.clip(qvel, -spec.qvel_clip, spec.qvel_clip)
  return np.concatenate([qpos[..., spec.skip_qpos :], qvel], -1).astype(np.float32)


def reset_states(sim: simulate.Simulator, spec: RewardSpec | None, rng: np.random.Generator, n: int) -> np.ndarray:
  """[n, nstate] episode starts: gymnasium's reset for gym robots (qpos0 plus uniform or normal noise),
  else the collector's (simulate.Simulator.initial_states)."""
  if spec is None:
    return sim.initial_states(rng, n)
  m, d = sim.model, mujoco.MjData(sim.model)
  out = np.empty((n, sim.layout.nstate))
  for i in range(n):
    mujoco.mj_resetData(m, d)
    d.qpos[:] = m.qpos0 + rng.uniform(-spec.reset_noise, spec.reset_noise, m.nq)
    d.qvel[:] = (
      spec.reset_noise * rng.standard_normal(m.nv)
      if spec.reset_noise_qvel_normal
      else rng.uniform(-spec.reset_noise, spec.reset_noise, m.nv)
    )
    mujoco.mj_forward(m, d)
    mujoco.mj_getState(m, d, out[i], mujoco.mjtState.mjSTATE_FULLPHYSICS)
  return out


class VecEnv:
  """n environments of one robot; actions in [-1, 1] (scaled to the actuators' ranges)."""

  def __init__(
    self,
    robot_name: str,
    n: int,
    seed: int = 0,
    nthread: int = 0,
    max_steps: int = 0,
    generic: GenericReward = GenericReward(),
  ):
    self.robot = catalogue.load(robot_name)
    self.n = n
    self.spec = reward_spec(robot_name)
    self.generic = generic  # used where spec is None
    self.sim = simulate.Simulator(self.robot, nthread=nthread)
    self.model = self.sim.model
    self.dt = float(self.model.opt.timestep) * self.robot.frame_skip
    self.max_steps = max_steps or (self.spec.max_steps if self.spec else 1000)
    self.rng = np.random.default_rng(seed)
    self.num_act = self.model.nu
    self._x_adr = self._forward_qpos()
    self._h0 = np.zeros(n)
    self._data = mujoco.MjData(self.model)
    self.states = np.zeros((n, self.sim.layout.nstate))
    self.t = np.zeros(n, np.int64)
    self.hooks = []  # fn(states_before [n, nstate], action [n, nu], done [n]) after every step
    self.num_obs = self.observe(self._reset(np.arange(n))[:1]).shape[-1]

  def close(self) -> None:
    self.sim.close()

  def reseed(self, seed: int) -> None:
    """The start states of later resets come from `seed`."""
    self.rng = np.random.default_rng(seed)

  # --- physics helpers ----------------------------------------------------------------------
  def _forward_qpos(self) -> int:
    """qpos address of the root's x position: the free joint's x, else the slide joint along world x
    (planar roots order rootx/rootz differently: gym's hopper starts with rootx, dm_control's walker
    with rootz)."""
    if self.sim.free_root_qposadr is not None:
      return self.sim.free_root_qposadr
    m = self.model
    for j in range(m.njnt):
      if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_SLIDE and np.allclose(m.jnt_axis[j], (1.0, 0.0, 0.0)):
        return int(m.jnt_qposadr[j])
    raise ValueError(
      f"{self.robot.name}: no free joint and no slide joint along x, so no forward velocity for the locomotion reward"
    )

  def _reset(self, idx: np.ndarray) -> np.ndarray:
    new = reset_states(self.sim, self.spec, self.rng, len(idx))
    self.states[idx] = new
    self.t[idx] = 0
    if self.spec is None:  # the generic alive check compares with the start height
      self._h0[idx] = [self.sim.root_height(x) for x in new]
    return new

  def observe(self, states: np.ndarray) -> np.ndarray:
    return observe(self.sim, self.spec, states)

  def _healthy(self, qpos: np.ndarray, qvel: np.ndarray, states: np.ndarray) -> np.ndarray:
    s = self.spec
    ok = np.all(np.isfinite(qpos), -1) & np.all(np.isfinite(qvel), -1)
    if s is None:
      h = np.array([self.sim.root_height(x) for x in states])
      return ok & (h > self.generic.min_height_fraction * self._h0) if self.robot.floating else ok
    if s.z_index is not None:
      z = qpos[:, s.z_index]
      ok &= (z > s.healthy_z[0]) & (z < s.healthy_z[1])
    if s.angle_index is not None:
      a = qpos[:, s.angle_index]
      ok &= (a > s.healthy_angle[0]) & (a < s.healthy_angle[1])
    if s.state_bound is not None:
      ok &= np.all(np.abs(qpos[:, 2:]) < s.state_bound, -1) & np.all(np.abs(qvel) < s.state_bound, -1)
    return ok

  def _contact_cost(self, states: np.ndarray) -> np.ndarray:
    m, d = self.model, self._data
    lo, hi = self.spec.contact_force_range
    out = np.empty(len(states))
    for i, x in enumerate(states):
      mujoco.mj_setState(m, d, x, mujoco.mjtState.mjSTATE_FULLPHYSICS)
      mujoco.mj_forward(m, d)
      mujoco.mj_rnePostConstraint(m, d)
      out[i] = np.sum(np.clip(d.cfrc_ext, lo, hi) ** 2)
    return self.spec.contact_cost_weight * out

  # --- the gym API --------------------------------------------------------------------------
  def reset(self) -> np.ndarray:
    return self.observe(self._reset(np.arange(self.n)))

  def step(self, action: np.ndarray):
    """action [n, nu] in [-1, 1] -> (obs [n, d] (reset where done), reward [n], terminated [n],
    truncated [n], final_obs [n, d] (the observation before a reset))."""
    a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
    ctrl = to_ctrl(self.robot, a)
    x0 = self.states[:, self.sim.layout.qpos][:, self._x_adr].copy()
    states, _ = self.sim.run(self.states, ctrl[:, None])
    states = states[:, -1]
    qpos, qvel = self.sim.qpos_qvel(states)
    fwd = (qpos[:, self._x_adr] - x0) / self.dt
    healthy = self._healthy(qpos, qvel, states)
    s = self.spec
    if s is None:
      g = self.generic
      reward = (
        g.forward_weight * fwd
        + (g.healthy_reward * healthy if self.robot.floating else 0.0)
        - g.ctrl_cost_weight * np.mean(a**2, -1)
      )
      terminated = ~healthy
    else:
      reward = (
        s.forward_weight * fwd
        + s.healthy_reward * (healthy | (not s.terminate_when_unhealthy))
        - s.ctrl_cost_weight * np.sum(a**2, -1)
      )
      if s.contact_cost_weight:
        reward = reward - self._contact_cost(states)
      terminated = ~healthy if s.terminate_when_unhealthy else np.zeros(self.n, bool)
    before, self.states = self.states, states
    self.t += 1
    truncated = (self.t >= self.max_steps) & ~terminated
    for hook in self.hooks:
      hook(before, a, terminated | truncated)
    final_obs = self.observe(states)
    obs = final_obs.copy()
    done = np.flatnonzero(terminated | truncated)
    if len(done):
      obs[done] = self.observe(self._reset(done))
    return obs, reward.astype(np.float32), terminated, truncated, final_obs
