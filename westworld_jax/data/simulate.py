"""Batched physics rollouts with MuJoCo's multi-threaded C `mujoco.rollout`, and episode checks.

Control is applied with a zero-order hold for `robot.frame_skip` physics steps; observations are
read after each control step. Episodes end early when a legged robot falls (its root drops below
a fraction of its starting height, or, with `max_tilt_deg` set, a free-floating root tips over: its
start "up" direction turns that far from the world's up) and are rejected when the physics goes unstable (non-finite
state, exploding velocities, or a MuJoCo auto-reset, which shows as time jumping backwards).
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from westworld_jax.robots import robot as robot_lib
from westworld_jax.robots.robot import Robot

_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS
_CTRL = mujoco.mjtState.mjSTATE_CTRL


@dataclasses.dataclass(frozen=True)
class StateLayout:
  """Offsets of time/qpos/qvel inside a full-physics state vector."""

  nstate: int
  qpos: slice
  qvel: slice

  @classmethod
  def of(cls, model: mujoco.MjModel) -> "StateLayout":
    # Full physics = time, qpos, qvel, act, warmstart?, plugin, mocap... (documented order).
    n = mujoco.mj_stateSize(model, _STATE)
    return cls(n, slice(1, 1 + model.nq), slice(1 + model.nq, 1 + model.nq + model.nv))


class Simulator:
  """Rolls a robot forward for many environments at once; one thread pool per simulator.

  Not thread-safe: use one per thread. `nthread=0` runs on the calling thread. `model` replaces
  the robot's own (a copy with the same sizes, e.g. a control task's adapted model).
  """

  def __init__(self, robot: Robot, nthread: int = 0, model: mujoco.MjModel | None = None):
    self.robot = robot
    self.model = robot.model if model is None else model
    self.layout = StateLayout.of(self.model)
    self.nthread = nthread
    self._datas = [mujoco.MjData(self.model) for _ in range(max(1, nthread))]
    self._kin_data = mujoco.MjData(self.model)  # for kinematics of single states (root_height)
    self._pool = mj_rollout.Rollout(nthread=nthread)
    self._hinge_mask = self._joint_qpos_mask()
    # qpos address of the root body's free joint (its orientation quaternion follows the position).
    root = robot.root_body_id
    free = [
      j
      for j in range(self.model.njnt)
      if int(self.model.jnt_bodyid[j]) == root and int(self.model.jnt_type[j]) == mujoco.mjtJoint.mjJNT_FREE
    ]
    self.free_root_qposadr = int(self.model.jnt_qposadr[free[0]]) if free else None

  def close(self):
    self._pool.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # --- states -------------------------------------------------------------------------------
  def initial_states(
    self, rng: np.random.Generator, n: int, noise: float = 0.02, qpos: np.ndarray | None = None
  ) -> np.ndarray:
    """[n, nstate] start states: the standing keyframe (robot_lib.start_keyframe; else qpos0), or
    `qpos` [nq] if given, at rest, with small joint position and velocity noise."""
    m = self.model
    d = mujoco.MjData(m)
    out = np.empty((n, self.layout.nstate))
    for i in range(n):
      robot_lib.reset_to_start(m, d)
      if qpos is not None:
        d.qpos[:] = qpos
      d.qpos[:] += noise * rng.standard_normal(m.nq) * self._hinge_mask
      d.qvel[:] = noise * rng.standard_normal(m.nv)
      mujoco.mj_normalizeQuat(m, d.qpos)
      mujoco.mj_forward(m, d)
      mujoco.mj_getState(m, d, out[i], _STATE)
    return out

  def _joint_qpos_mask(self) -> np.ndarray:
    """1 on qpos entries of hinge/slide joints (noise must not break quaternions or heights)."""
    m = self.model
    mask = np.zeros(m.nq)
    for j in range(m.njnt):
      if int(m.jnt_type[j]) in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
        mask[m.jnt_qposadr[j]] = 1.0
    return mask

  # --- stepping -----------------------------------------------------------------------------
  def run(
    self, states: np.ndarray, ctrl_ntu: np.ndarray, substeps: bool = False, warmstart: np.ndarray | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """Holds each control for frame_skip physics steps.

    Args:
      states: [n, nstate] initial full-physics states.
      ctrl_ntu: [n, T, nu] controls in actuator units.
      warmstart: [n, nv] the solver's initial qacc_warmstart (default zeros).
    Returns:
      states [n, T, nstate] after each control step, sensordata [n, T, nsensordata].
    """
    fs = self.robot.frame_skip
    n, T, _ = ctrl_ntu.shape
    ctrl = np.repeat(ctrl_ntu, fs, axis=1) if fs > 1 else ctrl_ntu
    state, sens = self._pool.rollout(
      [self.model] * n if n > 1 else self.model,
      self._datas,
      states,
      np.ascontiguousarray(ctrl, np.float64),
      control_spec=_CTRL,
      skip_checks=False,
      initial_warmstart=warmstart,
    )
    if not substeps and fs > 1:
      state, sens = state[:, fs - 1 :: fs], sens[:, fs - 1 :: fs]
    return state, sens

  def sensors_at(self, states: np.ndarray) -> np.ndarray:
    """[n, nstate] -> [n, nsensordata] sensor readings at those states (mj_forward)."""
    m, d = self.model, mujoco.MjData(self.model)
    out = np.empty((len(states), m.nsensordata))
    for i, s in enumerate(states):
      mujoco.mj_setState(m, d, s, _STATE)
      mujoco.mj_forward(m, d)
      out[i] = d.sensordata
    return out

  def root_height(self, state: np.ndarray) -> float:
    """World height of the root body's centre of mass (what the 'root_pos' task sensor reads) at one
    [nstate] state: kinematics only, on a reused MjData."""
    m, d = self.model, self._kin_data
    mujoco.mj_setState(m, d, state, _STATE)
    mujoco.mj_kinematics(m, d)
    return float(d.xipos[self.robot.root_body_id, 2])

  def qpos_qvel(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return states[..., self.layout.qpos], states[..., self.layout.qvel]

  def observe(self, states: np.ndarray) -> np.ndarray:
    qpos, qvel = self.qpos_qvel(states)
    return self.robot.obs_from_qpos_qvel(qpos, qvel).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class EpisodeChecks:
  max_abs_qvel: float = 1e3
  fall_fraction: float = 0.4  # legged robots: the episode ends once root height < this x start height
  # ... or once a free root tips this far from its start attitude. 0 (off) by default: at 80 degrees
  # the open-loop gait/OU episodes of several quadrupeds end before min_length (go2 gait kept 6 -> 1
  # of 8, aliengo gait/ou 4/3 -> 0), which would leave those environments empty.
  max_tilt_deg: float = 0.0
  min_length: int = 60


def up_in_body(quat_wxyz: np.ndarray) -> np.ndarray:
  """[..., 4] body orientation quaternions -> [..., 3] world +z expressed in the body frame
  (the last row of the rotation matrix)."""
  w, x, y, z = np.moveaxis(np.asarray(quat_wxyz, np.float64), -1, 0)
  n2 = w * w + x * x + y * y + z * z
  n2 = np.where(n2 > 0, n2, 1.0)
  return np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z], -1) / n2[..., None]


def tilt_deg(start_quat: np.ndarray, quats_t4: np.ndarray) -> np.ndarray:
  """[T] angle between the world's up direction seen from the body at the start and at each step:
  how far the body tipped, whatever the model's body axes are."""
  cos = np.clip(np.sum(up_in_body(quats_t4) * up_in_body(start_quat), axis=-1), -1.0, 1.0)
  return np.degrees(np.arccos(cos))


def episode_end(
  sim: Simulator,
  start: np.ndarray,
  states_ts: np.ndarray,
  sens_ts: np.ndarray,
  checks: EpisodeChecks,
  terminate_on_fall: bool,
) -> tuple[int, str]:
  """How many steps of one episode to keep, and why it ended ('ok', 'fell', 'unstable').

  Args:
    start: [nstate] the episode's start state; states_ts: [T, nstate]; sens_ts: [T, nsensordata].
  """
  qvel = states_ts[:, sim.layout.qvel]
  time = states_ts[:, 0]
  finite = np.isfinite(states_ts).all(axis=1)
  sane = finite & (np.abs(qvel).max(axis=1, initial=0.0) < checks.max_abs_qvel)
  sane &= np.concatenate([[time[0] > start[0]], np.diff(time) > 0])  # auto-reset => time goes back
  if not sane.all():
    return int(np.argmin(sane)), "unstable"
  if terminate_on_fall and sim.robot.floating:
    h0 = sim.root_height(start)
    h = sens_ts[:, sim.robot.sensor_adr["root_pos"] + 2]
    fallen = h < checks.fall_fraction * h0
    qa = sim.free_root_qposadr
    if qa is not None and checks.max_tilt_deg > 0:
      q0 = start[sim.layout.qpos][qa + 3 : qa + 7]
      fallen |= tilt_deg(q0, states_ts[:, sim.layout.qpos][:, qa + 3 : qa + 7]) > checks.max_tilt_deg
    if fallen.any():
      return int(np.argmax(fallen)), "fell"
  return len(states_ts), "ok"
