"""A `Robot`: a compiled MuJoCo model with its channels, structure, control step and action range.

The vocabulary of observation and action channel kinds lives here; channels.py extracts a model's
channels, from_model.py derives the rest of a Robot from a compiled MjModel, and loading.py loads
MJCF/URDF files (or MJCF text) into one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import mujoco
import numpy as np

from westworld_jax.robots import structure
from westworld_jax.errors import UserError

# Channel kinds. Ids are stable: they index the model's kind embedding (keep < 16 per family).
OBS_KINDS = (
  "joint_pos",  # hinge angle
  "joint_vel",  # hinge angular velocity
  "slide_pos",  # prismatic joint position
  "slide_vel",
  "root_height",  # floating base height (free joint z, or planar root z slide)
  "root_quat",  # floating base orientation (w, x, y, z)
  "root_angle",  # planar base pitch (root hinge)
  "root_linvel",  # floating base linear velocity (world frame for free joints, as qvel)
  "root_angvel",  # floating base angular velocity (body frame, as qvel)
  "ball_quat",  # ball joint orientation
  "ball_angvel",
  "root_x_vel",  # planar base forward velocity (position omitted: it is global x)
)
ACT_KINDS = (
  "motor",  # direct force/torque (gain fixed, no bias)
  "position",  # position servo (affine bias)
  "velocity",  # velocity servo
  "tendon",  # acts through a tendon
  "site",  # acts through a site (e.g. a thruster)
  "other",
)
OBS_KIND_ID = {k: i for i, k in enumerate(OBS_KINDS)}
ACT_KIND_ID = {k: i for i, k in enumerate(ACT_KINDS)}

# Sensors appended to every loaded model (they read state, never change dynamics): what behaviour
# rewards and fall detection need, for any robot. (key, sensor type, which body).
TASK_SENSORS = (
  ("root_vel", mujoco.mjtSensor.mjSENS_SUBTREELINVEL, "root"),
  ("root_pos", mujoco.mjtSensor.mjSENS_FRAMEPOS, "root"),
  ("tip_pos", mujoco.mjtSensor.mjSENS_FRAMEPOS, "tip"),
)

# Keyframes that episodes start from (a standing pose), in order of preference; else qpos0.
START_KEYFRAMES = ("home", "standing", "stand")


class RobotLoadError(UserError, ValueError):
  """A robot file cannot be turned into a Robot; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Channel:
  name: str
  kind: str
  body: str  # name of the body the joint/actuator acts on
  body_id: int
  # Where an observation channel reads from: ('qpos'|'qvel', address). Unused for actions.
  source: str = ""
  address: int = -1

  @property
  def kind_id(self) -> int:
    return OBS_KIND_ID.get(self.kind, ACT_KIND_ID.get(self.kind, 0))


@dataclasses.dataclass(frozen=True, eq=False)
class Robot:
  """A robot ready for simulation and tokenisation. `model` is the compiled MjModel."""

  name: str
  source: str  # file path, or 'procedural:<name>' / 'xml:<sha>' for generated models
  model: mujoco.MjModel = dataclasses.field(repr=False)
  frame_skip: int
  bodies: tuple[structure.BodyIndex, ...]
  obs_channels: tuple[Channel, ...]
  act_channels: tuple[Channel, ...]
  act_low: np.ndarray = dataclasses.field(repr=False)
  act_high: np.ndarray = dataclasses.field(repr=False)
  floating: bool = False  # has a floating (free or planar) base whose height can signal a fall
  root_body_id: int = 1
  tip_body_id: int = 1  # deepest body of object 0 (an arm's end effector, a pendulum's tip)
  # Offsets into sensordata of the task sensors load_robot appends (see TASK_SENSORS).
  sensor_adr: dict = dataclasses.field(default_factory=dict, repr=False)
  # Actuators without a ctrlrange (MuJoCo leaves their ctrl unbounded): their action range is
  # assumed to be [-1, 1] (act_low/act_high), which may not match their real scale.
  ctrl_range_assumed: tuple[str, ...] = ()

  # --- derived views -----------------------------------------------------------------
  @property
  def dt(self) -> float:
    return float(self.model.opt.timestep) * self.frame_skip

  @property
  def num_obs(self) -> int:
    return len(self.obs_channels)

  @property
  def num_act(self) -> int:
    return len(self.act_channels)

  def body_struct(self, body_id: int) -> tuple[int, int, int, int]:
    return self.bodies[body_id - 1].as_tuple()

  def obs_struct(self) -> np.ndarray:
    """int32 [num_obs, 4]: (object, pre, in, post) of each observation channel's body."""
    return np.array([self.body_struct(c.body_id) for c in self.obs_channels], np.int32).reshape(-1, 4)

  def act_struct(self) -> np.ndarray:
    return np.array([self.body_struct(c.body_id) for c in self.act_channels], np.int32).reshape(-1, 4)

  def obs_kinds(self) -> np.ndarray:
    return np.array([c.kind_id for c in self.obs_channels], np.int32)

  def act_kinds(self) -> np.ndarray:
    return np.array([c.kind_id for c in self.act_channels], np.int32)

  def obs_from_qpos_qvel(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """[..., nq], [..., nv] -> [..., num_obs] observation channels."""
    both = np.concatenate([qpos, qvel], axis=-1)
    return both[..., self.obs_gather]

  @functools.cached_property
  def obs_gather(self) -> np.ndarray:
    """int64 [num_obs]: each observation channel's index into concatenate([qpos, qvel])."""
    nq = self.model.nq
    return np.array([c.address if c.source == "qpos" else nq + c.address for c in self.obs_channels], np.int64)

  def fingerprint(self) -> str:
    """Hash of the kinematic tree and channels: equal robots (whatever the file) collide."""
    m = self.model
    h = hashlib.sha256()
    for arr in (
      m.body_parentid,
      m.jnt_type,
      m.jnt_bodyid,
      m.actuator_trnid,
      m.body_pos.round(4),
      m.body_mass.round(4),
      m.geom_size.round(4),
    ):
      h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]

  def topology(self) -> str:
    """Hash of the tree shape and joint types only (distinct kinematic trees)."""
    m = self.model
    parts = [
      f"{int(m.body_parentid[b])}:{sorted(int(m.jnt_type[j]) for j in range(m.njnt) if m.jnt_bodyid[j] == b)}"
      for b in range(1, m.nbody)
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

  def describe(self) -> dict[str, Any]:
    """The JSON contract of `python -m westworld_jax.robots describe`."""
    return {
      "name": self.name,
      "dt": self.dt,
      "bodies": [
        {"name": b.name, "object": b.object, "pre": b.pre, "in": b.inorder, "post": b.post} for b in self.bodies
      ],
      "obs_channels": [{"name": c.name, "kind": c.kind, "body": c.body} for c in self.obs_channels],
      "act_channels": [{"name": c.name, "kind": c.kind, "body": c.body} for c in self.act_channels],
      "act_low": self.act_low.tolist(),
      "act_high": self.act_high.tolist(),
      "ctrl_range_assumed": list(self.ctrl_range_assumed),
      "source": self.source,
    }


def start_keyframe(model: mujoco.MjModel) -> int:
  """Id of the keyframe episodes start from (see START_KEYFRAMES), or -1: start from qpos0."""
  for name in START_KEYFRAMES:
    key = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, name)
    if key >= 0:
      return key
  return -1


def reset_to_start(model: mujoco.MjModel, data: mujoco.MjData) -> None:
  """Reset `data` to the start keyframe (or qpos0); no forward pass."""
  key = start_keyframe(model)
  if key >= 0:
    mujoco.mj_resetDataKeyframe(model, data, key)
  else:
    mujoco.mj_resetData(model, data)
