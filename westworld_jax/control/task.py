"""The control-task contract: `Task`, a catalogue robot simulated in MJX or C MuJoCo with the costs a
planner minimises, and `trajectory_cost`, a rollout's total cost. The shipped tasks: tasks.py.

A `Task` bundles the robot (catalogue.load), its model adapted for MJX (data/mjx_model.py;
`model`, which C MuJoCo steps too, control/mujoco_backend.py) and its MJX copy (`mx`);
`episode_start(key)` (an episode's qpos, qvel and goal), and `reset` / `step` / `observe` on MJX
states (jittable, vmappable); a running cost `cost(obs, ctrl, goal) -> (cost, healthy)` and
`terminal_cost(obs, goal)` on the robot's observation vector (the world model's channels, in
physical units): written once, on observations, so the simulator-oracle and world-model planners
optimise the very same objective and differ only in where the observations come from; the
environments' `reward` (-cost, or gym's reward for a `gym_return` variant); action bounds
(actuator units) and the control step dt. `variant(...)` is a copy sharing the models with a
reference-tracking term for the planners (control/reference.py), termination switched, or gym's
reward reported.

`healthy` False marks a terminal (fallen) state: an episode ends after the step that produced it
(gym's `terminate_when_unhealthy`), and a planner stops accumulating cost from there on (see
MPPIConfig's fall options). `goal` is a float32 [GOAL_DIM] per episode (a reach target; else zeros).
"""

from __future__ import annotations

import abc
import copy

from absl import logging
import jax
import jax.numpy as jnp
from mujoco import mjx
import numpy as np

from westworld_jax.data import mjx_model
from westworld_jax.robots import catalogue
from westworld_jax.robots.robot import Robot

GOAL_DIM = 3


class Task(abc.ABC):
  """A robot simulated in MJX and the cost a planner minimises: subclasses define `cost`.

  Optional hooks a subclass may override:
    terminal_cost(obs, goal)  cost of the last observation of a rollout (default 0);
    sample_goal(key)          the episode's goal [GOAL_DIM] (default zeros);
    _reset_qpos_qvel(key)     an episode's start state (default: gym-style qpos0 and zero velocity,
                              each entry + U(-0.005, 0.005)).
  Class attributes name the robot (`robot_name`, catalogue.load) and set `terminates`,
  `episode_len`, `self_collisions` and the MJX speed `physics`; `variant` sets `terminates`,
  `reference` and `gym_return` per instance.
  """

  name = "task"
  robot_name = ""
  self_collisions = True
  terminates = False  # episodes end at the first unhealthy state
  episode_len = 1000  # default control steps per episode
  # MjOption overrides for speed in MJX (environment and oracle alike), e.g. brax's MJX Hopper:
  # Euler instead of RK4 and 4 solver iterations. Task(exact_physics=True) keeps the robot's own.
  physics: dict = {}
  reference = None  # a reference.Reference: its tracking cost is added to `cost` when planning
  gym_return = False  # GymLocomotion: the environments report gym's reward instead of -cost

  def __init__(self, robot: Robot | None = None, exact_physics: bool = False):
    self.robot = robot if robot is not None else catalogue.load(self.robot_name)
    r = self.robot
    self.model, adaptations = mjx_model.mjx_compatible_model(r.model, r.name, self.self_collisions)
    self.adaptations = list(adaptations)
    if not exact_physics:
      for field, value in self.physics.items():
        old = getattr(self.model.opt, field)
        if int(old) != int(value):
          setattr(self.model.opt, field, value)
          self.adaptations.append(f"opt.{field} {int(old)} -> {int(value)} (speed)")
    if self.adaptations:
      logging.info("task '%s': MJX model adaptations: %s", self.name, "; ".join(self.adaptations))
    try:
      self.mx = mjx_model.put_model(self.model)
      self._d0 = mjx_model.make_data(self.mx)
    except (NotImplementedError, ValueError, TypeError, KeyError) as e:
      raise ValueError(
        f"task '{self.name}': robot '{r.name}' does not run in MJX ({e}); choose another "
        "robot or adapt its MJCF (see westworld_jax/data/mjx_model.py)"
      ) from e
    self.act_low = np.asarray(r.act_low, np.float32)
    self.act_high = np.asarray(r.act_high, np.float32)
    self._gather = jnp.asarray(r.obs_gather)
    self._qpos0 = np.array(self.model.qpos0, np.float32)

  # --- sizes and channels -----------------------------------------------------------------
  @property
  def num_obs(self) -> int:
    return self.robot.num_obs

  @property
  def num_act(self) -> int:
    return self.robot.num_act

  @property
  def dt(self) -> float:
    return self.robot.dt

  @property
  def frame_skip(self) -> int:
    return self.robot.frame_skip

  def obs_index(self, kind: str) -> list[int]:
    """Indices of the observation channels of one kind (e.g. 'root_height'), in channel order."""
    idx = [i for i, c in enumerate(self.robot.obs_channels) if c.kind == kind]
    if not idx:
      raise ValueError(
        f"task '{self.name}' needs a '{kind}' observation channel but robot "
        f"'{self.robot.name}' has none (channels: {[c.kind for c in self.robot.obs_channels]})"
      )
    return idx

  def neutral_ctrl(self) -> np.ndarray:
    """The control assumed before an episode starts (zero torque, inside the bounds)."""
    return np.clip(0.0, self.act_low, self.act_high).astype(np.float32)

  # --- simulation (jittable, vmappable) --------------------------------------------------------
  def _reset_qpos_qvel(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """gym-style start: qpos0 and zero velocity, each entry + U(-0.005, 0.005)."""
    kq, kv = jax.random.split(key)
    qpos = self._qpos0 + jax.random.uniform(kq, (self.model.nq,), minval=-5e-3, maxval=5e-3)
    qvel = jax.random.uniform(kv, (self.model.nv,), minval=-5e-3, maxval=5e-3)
    return qpos, qvel

  def sample_goal(self, key: jax.Array) -> jax.Array:
    del key
    return jnp.zeros(GOAL_DIM, jnp.float32)

  def episode_start(self, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(qpos [nq], qvel [nv], goal [GOAL_DIM]) of a new episode: MJX and C MuJoCo environments
    start from these, so one key gives both the same start state."""
    kstate, kgoal = jax.random.split(key)
    qpos, qvel = self._reset_qpos_qvel(kstate)
    return qpos.astype(jnp.float32), qvel.astype(jnp.float32), self.sample_goal(kgoal)

  def reset(self, key: jax.Array) -> tuple[mjx.Data, jax.Array]:
    """(MJX state, goal [GOAL_DIM]) of a new episode.

    Only qpos/qvel are set: mjx.step runs forward first, and costs read observations, so an extra
    mjx.forward here would only add compile time (~15 s on a CPU core even for a pendulum).
    """
    qpos, qvel, goal = self.episode_start(key)
    d = self._d0.replace(qpos=qpos.astype(self._d0.qpos.dtype), qvel=qvel.astype(self._d0.qvel.dtype))
    return d, goal

  def step(self, d: mjx.Data, ctrl: jax.Array) -> mjx.Data:
    """Holds ctrl (actuator units, clipped to the bounds) for frame_skip physics steps."""
    ctrl = jnp.clip(ctrl, self.act_low, self.act_high).astype(d.ctrl.dtype)
    d = d.replace(ctrl=ctrl)
    return jax.lax.fori_loop(0, self.frame_skip, lambda _, dd: mjx.step(self.mx, dd), d)

  def observe(self, d: mjx.Data) -> jax.Array:
    """float32 [num_obs]: the robot's observation channels (catalogue order) of an MJX state."""
    return jnp.concatenate([d.qpos, d.qvel])[self._gather].astype(jnp.float32)

  # --- costs -----------------------------------------------------------------------------------
  @abc.abstractmethod
  def cost(self, obs: jax.Array, ctrl: jax.Array, goal: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(running cost, healthy) of reaching observation obs [num_obs] by applying ctrl [num_act]."""

  def terminal_cost(self, obs: jax.Array, goal: jax.Array) -> jax.Array:
    del obs, goal
    return jnp.zeros((), jnp.float32)

  def reward(self, obs, ctrl, goal, qpos_before, qpos_after) -> tuple[jax.Array, jax.Array]:
    """(reward, healthy) the environments report for the step qpos_before -> qpos_after that
    reached obs: -cost (the reference-tracking term is the planners' alone)."""
    del qpos_before, qpos_after
    cost, healthy = self.cost(obs, ctrl, goal)
    return -cost, healthy

  def variant(self, **attrs) -> "Task":
    """A copy sharing the models with some of `terminates`, `reference`, `gym_return` replaced."""
    unknown = set(attrs) - {"terminates", "reference", "gym_return"}
    if unknown:
      raise ValueError(f"Task.variant sets terminates, reference, gym_return; not {sorted(unknown)}")
    task = copy.copy(self)
    task.__dict__.update(attrs)
    return task

  def describe(self) -> dict:
    return {
      "task": self.name,
      "robot": self.robot.name,
      "dt": self.dt,
      "num_obs": self.num_obs,
      "num_act": self.num_act,
      "act_low": self.act_low.tolist(),
      "act_high": self.act_high.tolist(),
      "terminates": self.terminates,
      "reference": None if self.reference is None else self.reference.describe(),
      "gym_return": self.gym_return,
      "episode_len": self.episode_len,
      "mjx_adaptations": list(self.adaptations),
    }


def trajectory_cost(costs_t: jax.Array, healthy_t: jax.Array, terminal: jax.Array, discount: float = 1.0) -> jax.Array:
  """Total cost of one rollout: sum_t g^t alive_t c_t + g^T alive_T terminal.

  alive_t = every state before step t was healthy: a step that falls still counts (as gym's reward
  on the terminating step), later ones do not, and neither does the terminal cost.
  """
  horizon = costs_t.shape[0]
  healthy = healthy_t.astype(jnp.float32)
  alive_after = jnp.cumprod(healthy)
  alive_before = jnp.concatenate([jnp.ones((1,), jnp.float32), alive_after[:-1]])
  g = jnp.asarray(discount, jnp.float32) ** jnp.arange(horizon + 1, dtype=jnp.float32)
  return jnp.sum(g[:-1] * alive_before * costs_t) + g[-1] * alive_after[-1] * terminal
