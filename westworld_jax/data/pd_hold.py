"""The 'pd_hold' behaviour: legged robots held near their standing pose while they move.

Open-loop noise topples legged robots within a second or two; PDHold keeps them on their feet for
long episodes: joint PD around a standing pose found in simulation, with gains derived from the
model, plus (where the robot can stand still) an LQR balance term on the root's attitude and height,
while OU noise, posture changes and gait-like sinusoids move the targets. episodes.py calibrates
the offsets' amplitude per robot.
"""

from __future__ import annotations

import dataclasses
import functools

import mujoco
import numpy as np
import scipy.linalg

from westworld_jax.data.behaviours import from_ctrl, to_ctrl
from westworld_jax.data.simulate import up_in_body
from westworld_jax.robots.robot import Robot, reset_to_start

# Feedback is evaluated once per control step and held for frame_skip physics steps (h seconds).
#
# Joint PD (any robot). With damping proportional to stiffness, D = c h K, the held PD on
# M qdd = -K q - D qd decouples into modes of M^-1 K, and a mode with a = h^2 eig(M^-1 K) is stable
# for a < 2/c (c > 1/2). Gains are the actuators' strength (full force at _SAT_ERR), capped joint by
# joint at a = _A_MAX with the joint's smallest inertia, then scaled so that every mode of the whole
# free-floating robot has a <= _A_MAX. Heavier loads (a body standing on the leg) only lower a:
# stable, if lightly damped. Even so, a heavy robot on light legs (spot) is too soft to resist
# toppling: stiffness bought with joint gains alone is bounded by the legs' inertia.
_SAT_ERR = 0.3  # tracking error (rad, m) at which the PD asks for the actuator's full force
_A_MAX, _C_DAMP = 2.5, 0.6
# Balance (floating robots that can stand still): on top of the PD, whole-body state feedback from a
# discrete LQR on the control-step map with the PD in the loop, linearised (contacts included) at the
# standing pose. It reads the root's attitude and height (a leg pushes harder on the side the body
# tilts to), which joint PDs cannot: bipeds and heavy quadrupeds on light legs need it. Costs: the
# root's tilt by _TILT rad or its height by _DROP of the standing height cost 1, a joint's deviation
# by its offset scale _JOINT_W (the PD tracks joints), velocities those over _VEL_S; drift in x, y,
# yaw almost nothing; _RHO per full-range (normalised) action.
_TILT, _DROP, _JOINT_W, _VEL_S, _DRIFT, _RHO = 0.1, 0.1, 0.1, 0.2, 1e-2, 100.0
_SETTLE_S = 1.0  # seconds of standing (stiff PD at the physics rate) that find the standing pose
# One unit of target offset per joint: a quarter of its range, at most 0.35 rad.
_RANGE_FRACTION, _MAX_SCALE = 0.25, 0.35
# Reflex: target offsets fade out as the root tilts or sinks (full offsets while cos(tilt) >= _UP_FULL
# and height >= _H_FULL x standing height, none below _UP_ZERO / _H_ZERO) and come back over _RELEASE_S.
_UP_FULL, _UP_ZERO = 0.966, 0.766  # 15 and 40 degrees
_H_FULL, _H_ZERO = 0.9, 0.65
_RELEASE_S = 1.0
# Down for good (calibration): tilted beyond 60 degrees or below 60% of the standing height.
_DOWN_UP, _DOWN_H = 0.5, 0.6


@dataclasses.dataclass(frozen=True, eq=False)
class _Hold:
  """What pd_hold derives once per robot from its model: actuator roles, PD gains, the standing
  pose and load, the LQR gain, and where the root's height and attitude are read."""

  motor: np.ndarray  # [nu] bool: joint motor driven by the PD
  servo: np.ndarray  # [nu] bool: position servo (any transmission): ctrl = target length
  on_joint: np.ndarray  # [nu] bool: acts on a hinge or slide joint
  qadr: np.ndarray  # [nu] qpos/qvel addresses of an actuator's joint (0 where it has none)
  vadr: np.ndarray
  torque_per_ctrl: np.ndarray  # [nu] joint torque per unit ctrl (gear x gain) of motors
  kp: np.ndarray  # [nu] PD gains of motors
  kd: np.ndarray
  scale: np.ndarray  # [nu] one unit of PD target offset: rad/m (motors), length (servos), normalised (rest)
  y_lo: np.ndarray  # [nu] motor joint limits (PD targets are clipped to them)
  y_hi: np.ndarray
  u_zero: np.ndarray  # [nu] normalised action of zero force
  root_z: int  # qpos address of the root's height (-1: none)
  root_quat: np.ndarray | None  # qpos addresses of a free root's quaternion (w, x, y, z)
  root_angle: int  # qpos address of a planar root's pitch (-1: none)
  feedforward: np.ndarray | None = None  # [nu] motor torques that hold the standing pose (its load)
  stand_qpos: np.ndarray | None = None  # [nq] the pose the robot stands still in (None: it cannot)
  stand_height: float = 0.0  # world height of the root standing (0: unknown; use the start)
  u_eq: np.ndarray | None = None  # [nu] ctrl that holds stand_qpos
  lqr: np.ndarray | None = None  # [nu, 2 nv] balance gain on (tangent qpos error, qvel), ctrl units


def _root_readout(robot: Robot) -> tuple[int, np.ndarray | None, int]:
  by_kind: dict[str, list[int]] = {}
  for c in robot.obs_channels:
    if c.source == "qpos":
      by_kind.setdefault(c.kind, []).append(c.address)
  z = by_kind.get("root_height", [-1])[0]
  quat = np.array(by_kind["root_quat"][:4]) if len(by_kind.get("root_quat", [])) >= 4 else None
  return z, quat, by_kind.get("root_angle", [-1])[0]


def _pd_gains(
  Minv: np.ndarray, dofs: np.ndarray, tau_max: np.ndarray, sat_err: float, h: float
) -> tuple[np.ndarray, np.ndarray]:
  """kp, kd of motors acting on `dofs` for a PD held h seconds (see _A_MAX); Minv = M^-1."""
  kp = np.minimum(tau_max / sat_err, _A_MAX / (h * h * np.diag(Minv)[dofs]))
  K = np.zeros_like(Minv)
  np.add.at(K, (dofs, dofs), kp)
  a = h * h * np.abs(np.linalg.eigvals(Minv @ K)).max()  # eig(M^-1 K) is real, >= 0
  kp = kp * min(1.0, _A_MAX / max(a, 1e-12))
  return kp, _C_DAMP * h * kp


def _joint_scale(m: mujoco.MjModel, jnt: np.ndarray) -> np.ndarray:
  limited = m.jnt_limited[jnt].astype(bool)
  span = np.where(
    limited,
    m.jnt_range[jnt, 1] - m.jnt_range[jnt, 0],
    np.where(m.jnt_type[jnt] == mujoco.mjtJoint.mjJNT_SLIDE, 0.2, 1.0),
  )
  return np.minimum(_RANGE_FRACTION * span, _MAX_SCALE)


@functools.lru_cache(maxsize=32)
def _hold(robot: Robot) -> _Hold:
  m = robot.model
  hinge_slide = (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
  trn, jnt = m.actuator_trntype, m.actuator_trnid[:, 0]
  on_joint = (trn == mujoco.mjtTrn.mjTRN_JOINT) | (trn == mujoco.mjtTrn.mjTRN_JOINTINPARENT)
  jnt = np.where(on_joint, jnt, 0)
  on_joint &= np.isin(m.jnt_type[jnt], hinge_slide)
  servo = (m.actuator_biastype == mujoco.mjtBias.mjBIAS_AFFINE) & (m.actuator_biasprm[:, 1] != 0)
  gear = m.actuator_gear[:, 0]
  gain = m.actuator_gainprm[:, 0] * (m.actuator_gaintype == mujoco.mjtGain.mjGAIN_FIXED)
  motor = on_joint & ~servo & (m.actuator_biastype == mujoco.mjtBias.mjBIAS_NONE) & (np.abs(gear * gain) > 0)
  torque_per_ctrl = np.where(motor, gear * gain, 1.0)
  vadr = m.jnt_dofadr[jnt]

  d = mujoco.MjData(m)
  reset_to_start(m, d)
  mujoco.mj_fwdPosition(m, d)
  M = np.empty((m.nv, m.nv))
  mujoco.mj_fullM(m, d, M)
  Minv = np.linalg.inv(M)
  tau_max = np.abs(torque_per_ctrl) * np.maximum(np.abs(robot.act_low), np.abs(robot.act_high))
  frc = np.abs(gear) * np.abs(m.actuator_forcerange).max(1)
  tau_max = np.where(m.actuator_forcelimited.astype(bool), np.minimum(tau_max, frc), tau_max)
  kp, kd = np.zeros(m.nu), np.zeros(m.nu)
  kp[motor], kd[motor] = _pd_gains(Minv, vadr[motor], tau_max[motor], _SAT_ERR, robot.dt)

  limited = m.jnt_limited[jnt].astype(bool)
  s_joint = _joint_scale(m, jnt)
  servo_scale = np.where(on_joint, np.abs(gear) * s_joint, 0.25 * (robot.act_high - robot.act_low))
  root_z, root_quat, root_angle = _root_readout(robot)
  h = _Hold(
    motor=motor,
    servo=servo,
    on_joint=on_joint,
    qadr=m.jnt_qposadr[jnt],
    vadr=vadr,
    torque_per_ctrl=torque_per_ctrl,
    kp=kp,
    kd=kd,
    scale=np.where(motor, s_joint, np.where(servo, servo_scale, 0.3)),
    y_lo=np.where(motor & limited, m.jnt_range[jnt, 0], -np.inf),
    y_hi=np.where(motor & limited, m.jnt_range[jnt, 1], np.inf),
    u_zero=from_ctrl(robot, np.zeros(m.nu)),
    root_z=root_z,
    root_quat=root_quat,
    root_angle=root_angle,
  )
  h = _stand(robot, h, Minv, tau_max)
  if h.stand_qpos is not None and robot.floating and m.na == 0:
    h = dataclasses.replace(h, lqr=_lqr_gain(robot, h))
  return h


def _stand(robot: Robot, h: _Hold, Minv: np.ndarray, tau_max: np.ndarray) -> _Hold:
  """The standing pose, its load and the ctrl that holds it: the robot stands for _SETTLE_S under a
  stiff PD run at the physics rate (where the stability bound is frame_skip^2 times higher), from its
  start pose (robots may start in the air). Motor torques at the end are the load a held PD, with
  its stability-capped gains, gets as feedforward (it would sag under it otherwise). Unchanged when
  the robot cannot stand still (it toppled or collapsed)."""
  m = robot.model
  d = mujoco.MjData(m)
  reset_to_start(m, d)
  mujoco.mj_forward(m, d)
  q0, h0 = d.qpos.copy(), d.xpos[robot.root_body_id, 2]
  y0 = np.where(h.motor, q0[h.qadr], d.actuator_length)[None]
  kp, kd = np.zeros(m.nu), np.zeros(m.nu)
  kp[h.motor], kd[h.motor] = _pd_gains(Minv, h.vadr[h.motor], tau_max[h.motor], 0.05, m.opt.timestep)
  steps = max(8, int(_SETTLE_S / m.opt.timestep))
  taus, ctrls = [], []
  for t in range(steps):
    u, tau = _controls(robot, h, y0, d.qpos[None], d.qvel[None], kp, kd, 0.0, h.u_zero[None])
    d.ctrl[:] = to_ctrl(robot, u[0])
    mujoco.mj_step(m, d)
    if t >= steps * 3 // 4:
      taus.append(tau[0])
      ctrls.append(d.ctrl.copy())
  up, ratio = _up_and_height(h, d.qpos, q0, h0, h0)
  if not np.isfinite(d.qpos).all() or up < _UP_FULL or ratio < 0.5 or np.abs(d.qvel).max() > 0.5:
    return dataclasses.replace(h, feedforward=np.zeros(m.nu))
  return dataclasses.replace(
    h,
    feedforward=np.where(h.motor, np.mean(taus, axis=0), 0.0),
    stand_qpos=d.qpos.copy(),
    stand_height=float(d.xpos[robot.root_body_id, 2]),
    u_eq=np.mean(ctrls, axis=0),
  )


def _lqr_gain(robot: Robot, h: _Hold) -> np.ndarray | None:
  """Balance gain [nu, 2 nv]: discrete LQR of the held control step with the PD in the loop, at the
  standing pose (see _RHO); None when the Riccati equation has no stabilising solution."""
  m, fs = robot.model, robot.frame_skip
  nx = 2 * m.nv
  d = mujoco.MjData(m)
  d.qpos[:], d.ctrl[:] = h.stand_qpos, h.u_eq
  mujoco.mj_forward(m, d)
  # Chain the per-physics-step Jacobians over the frame_skip steps the control is held for.
  A, B = np.eye(nx), np.zeros((nx, m.nu))
  Ai, Bi = np.zeros((nx, nx)), np.zeros((nx, m.nu))
  for _ in range(fs):
    try:
      mujoco.mjd_transitionFD(m, d, 1e-6, True, Ai, Bi, None, None)
    except mujoco.FatalError:  # e.g. the RK4 integrator (gym's ant) has no transition derivatives
      return None
    A, B = Ai @ A, Ai @ B + Bi
    mujoco.mj_step(m, d)
  # The motor PD as state feedback, ctrl = -K_pd x (servos track their ctrl inside the physics).
  K_pd = np.zeros((m.nu, nx))
  mot = np.where(h.motor)[0]
  K_pd[mot, h.vadr[mot]] = h.kp[mot] / h.torque_per_ctrl[mot]
  K_pd[mot, m.nv + h.vadr[mot]] = h.kd[mot] / h.torque_per_ctrl[mot]
  A = A - B @ K_pd
  wq = np.zeros(m.nv)  # cost of a unit deviation of each dof, in the tangent space
  for j in range(m.njnt):
    a, t = m.jnt_dofadr[j], m.jnt_type[j]
    if t == mujoco.mjtJoint.mjJNT_FREE:  # linear (world), then angular (body frame: x, y tilt)
      wq[a : a + 6] = [_DRIFT, _DRIFT, (_DROP * h.stand_height) ** -2, _TILT**-2, _TILT**-2, _DRIFT]
    elif t == mujoco.mjtJoint.mjJNT_BALL:
      wq[a : a + 3] = _JOINT_W * _MAX_SCALE**-2
    elif m.jnt_bodyid[j] == robot.root_body_id:  # planar root: height slide, pitch hinge, x slide
      axis = int(np.argmax(np.abs(m.jnt_axis[j])))
      wq[a] = _TILT**-2 if t == mujoco.mjtJoint.mjJNT_HINGE else (_DROP * h.stand_height) ** -2 if axis == 2 else _DRIFT
    else:
      wq[a] = _JOINT_W * _joint_scale(m, np.array([j]))[0] ** -2
  Q = np.diag(np.concatenate([wq, wq * _VEL_S**2]))
  half = 0.5 * (robot.act_high - robot.act_low).astype(float)
  R = np.diag(_RHO / half**2)
  try:
    P = scipy.linalg.solve_discrete_are(A, B, Q, R)
  except (np.linalg.LinAlgError, ValueError):
    # A mode on the unit circle that no actuator moves (e.g. a planar robot's x slide) defeats the
    # solver; the Riccati recursion over a long horizon still converges on the others.
    P = Q.copy()
    for _ in range(1000):
      K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
      P_next = Q + A.T @ P @ (A - B @ K)
      done = np.abs(P_next - P).max() <= 1e-9 * np.abs(P).max()
      P = 0.5 * (P_next + P_next.T)
      if done:
        break
  K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
  if not np.isfinite(K).all() or np.abs(np.linalg.eigvals(A - B @ K)).max() > 1 + 1e-6:
    return None
  return K


def _up_and_height(
  h: _Hold, qpos: np.ndarray, qpos0: np.ndarray, height0: np.ndarray, ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """cos(root tilt from its start attitude) and root height / ref, [...] over qpos [..., nq].

  qpos0 [..., nq] and height0 [...] are the start pose and the root's world height there (its qpos
  may be a slide offset); ref [...] the standing height. No floating root: always up."""
  up, ratio = np.ones(qpos.shape[:-1]), np.ones(qpos.shape[:-1])
  if h.root_z >= 0:
    ratio = (height0 + qpos[..., h.root_z] - qpos0[..., h.root_z]) / np.maximum(ref, 1e-3)
  if h.root_quat is not None:
    # World up seen from the body, now vs at the start: right for any body axes (the CMU humanoid's
    # root has y up; its body z axis tells nothing about tipping sideways).
    up = np.sum(up_in_body(qpos[..., h.root_quat]) * up_in_body(qpos0[..., h.root_quat]), -1)
  elif h.root_angle >= 0:
    up = np.cos(qpos[..., h.root_angle] - qpos0[..., h.root_angle])
  return up, ratio


def _uprightness(h: _Hold, qpos: np.ndarray, qpos0: np.ndarray, height0: np.ndarray, ref: np.ndarray) -> np.ndarray:
  """In [0, 1]: 1 while the root is near its start attitude and standing height, 0 when well off."""
  up, ratio = _up_and_height(h, qpos, qpos0, height0, ref)
  return np.clip((up - _UP_ZERO) / (_UP_FULL - _UP_ZERO), 0, 1) * np.clip((ratio - _H_ZERO) / (_H_FULL - _H_ZERO), 0, 1)


def _controls(
  robot: Robot,
  h: _Hold,
  target: np.ndarray,
  qpos: np.ndarray,
  qvel: np.ndarray,
  kp: np.ndarray,
  kd: np.ndarray,
  ff: np.ndarray,
  free: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
  """Normalised PD actions [n, nu] (and motor torques) that track `target` (joint angles for motors,
  actuator lengths for servos); `free` is the normalised action of actuators that are neither."""
  tau = ff + kp * (target - qpos[:, h.qadr]) - kd * qvel[:, h.vadr]
  u = np.where(h.motor, from_ctrl(robot, tau / h.torque_per_ctrl), np.where(h.servo, from_ctrl(robot, target), free))
  a, b = robot.act_low * h.torque_per_ctrl, robot.act_high * h.torque_per_ctrl
  return u, np.clip(tau, np.minimum(a, b), np.maximum(a, b))


def can_balance(robot: Robot) -> bool:
  """Whether pd_hold has an LQR balance term for `robot` (floating and able to stand still)."""
  return _hold(robot).lqr is not None


def stand_qpos(robot: Robot) -> np.ndarray | None:
  """[nq] the pose `robot` stands still in under pd_hold (None if it cannot stand still)."""
  return _hold(robot).stand_qpos


class PDHold:
  """Closed-loop exploration that keeps legged robots on their feet ('pd_hold').

  The robot holds its start pose (episodes.hold_start: standing still) with targets offset by OU
  noise, slow posture changes (a new random posture every 1-4 s, approached with a 0.5 s time
  constant), in about half of the episodes a gait-like sinusoid with per-actuator phases, and a little
  white noise. Offset amplitudes (times `amplitude`, which episodes.hold_settings calibrates per
  robot), speeds and stiffness vary per episode. The offsets fade while the root tilts or sinks (a
  reflex back to the stance). Feedback, all derived from the model:
  - joint PD by actuator kind: position servos get the target length as ctrl; joint motors torque =
    ff + kp (q* - q) - kd qd (stability-capped gains, measured standing load ff); anything else
    (tendon/site motors, velocity servos) the offset itself, around zero force;
  - lqr=True (floating robots that stand still) adds balance: - K (x - x*), the discrete LQR of the
    held control step (PD in the loop) at the standing pose, x* that pose with the PD's joint targets.
  """

  def __init__(
    self, robot: Robot, rng: np.random.Generator, start_qpos: np.ndarray, amplitude: np.ndarray, lqr: bool = False
  ):
    """start_qpos: [n, nq] episode start poses; amplitude: [n] offset amplitude per episode."""
    m = robot.model
    n, nu, dt = len(start_qpos), m.nu, robot.dt
    self.robot, self.rng, self.n = robot, rng, n
    self.h = h = _hold(robot)
    if lqr and h.lqr is None:
      raise ValueError(f"{robot.name}: no LQR for pd_hold (it cannot stand still or is not floating)")
    self.lqr = lqr
    d = mujoco.MjData(m)
    length0, self.height0 = np.empty((n, nu)), np.empty(n)
    for i in range(n):
      d.qpos[:] = start_qpos[i]
      mujoco.mj_fwdPosition(m, d)
      length0[i], self.height0[i] = d.actuator_length, d.xpos[robot.root_body_id, 2]
    self.ref_height = np.full(n, h.stand_height) if h.stand_height > 0 else self.height0
    self.qpos0 = start_qpos.copy()
    self.y0 = np.where(h.motor, start_qpos[:, h.qadr], length0)  # PD targets: joint angles, servo lengths
    self.caution = np.ones(n)
    self.dq = np.zeros(m.nv)
    stiff = rng.uniform(0.9, 1.0, (n, 1))  # gains are at their stable maximum; softer ones buckle
    self.kp, self.kd = stiff * h.kp, stiff * h.kd  # damping stays proportional (stable)
    self.K = stiff[:, :, None] * h.lqr if lqr else None

    # Per-episode offset signal per actuator, in units of its offset scale.
    amp = np.asarray(amplitude, float).reshape(n, 1)
    self.ou_amp = amp * rng.uniform(0.05, 0.4, (n, 1))
    self.ou_a = np.exp(-dt / np.exp(rng.uniform(np.log(0.1), np.log(1.0), (n, 1))))
    self.ou = rng.standard_normal((n, nu))
    self.post_amp = amp * rng.uniform(0.0, 0.5, (n, 1))
    self.post_period = rng.integers(int(1.0 / dt), int(4.0 / dt) + 1, n)
    self.post_goal = np.zeros((n, nu))
    self.post = np.zeros((n, nu))
    self.post_a = np.exp(-dt / 0.5)
    self.gait_amp = amp * rng.uniform(0.1, 0.5, (n, 1)) * (rng.uniform(size=(n, 1)) < 0.5)
    self.gait_w = 2 * np.pi * rng.uniform(0.5, 2.5, (n, 1)) * dt
    self.gait_phase = rng.uniform(0, 2 * np.pi, (n, nu))

  def offset(self, t: int) -> np.ndarray:
    """[n, nu] target offset at control step t, in units of the offset scale (advances the noise)."""
    rng = self.rng
    self.ou = self.ou_a * self.ou + np.sqrt(1 - self.ou_a**2) * rng.standard_normal(self.ou.shape)
    goal = rng.uniform(-1, 1, self.post_goal.shape) * self.post_amp
    redraw = ((t % self.post_period) == 0) & (t > 0)
    self.post_goal = np.where(redraw[:, None], goal, self.post_goal)
    self.post = self.post_a * self.post + (1 - self.post_a) * self.post_goal
    return self.ou_amp * self.ou + self.post + self.gait_amp * np.sin(self.gait_w * t + self.gait_phase)

  def __call__(self, t: int, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Normalised [n, nu] actions at control step t from qpos [n, nq], qvel [n, nv]."""
    h, r = self.h, self.robot
    # The reflex acts at once and relaxes over _RELEASE_S, so a robot that caught itself settles first.
    up = _uprightness(h, qpos, self.qpos0, self.height0, self.ref_height)
    self.caution = np.minimum(up, self.caution + r.dt / _RELEASE_S)
    off = self.offset(t) * self.caution[:, None]
    off = off + 0.05 * self.rng.standard_normal(off.shape)  # in target units: torque noise would swamp a PD
    target = np.clip(self.y0 + h.scale * off, h.y_lo, h.y_hi)
    u, _ = _controls(r, h, target, qpos, qvel, self.kp, self.kd, h.feedforward, h.u_zero + h.scale * off)
    if not self.lqr:
      return np.clip(u, -1, 1)
    # Balance: feedback on the error from the standing pose with the PD's joint targets.
    m = r.model
    ref = np.repeat(h.stand_qpos[None], self.n, 0)
    joint = h.on_joint & (h.motor | h.servo)
    ref[:, h.qadr[joint]] = np.where(h.motor[joint], target[:, joint], target[:, joint] / m.actuator_gear[joint, 0])
    x = np.empty((self.n, 2 * m.nv))
    for i in range(self.n):
      mujoco.mj_differentiatePos(m, self.dq, 1.0, ref[i], qpos[i])
      x[i, : m.nv] = self.dq
    x[:, m.nv :] = qvel
    ctrl = to_ctrl(r, u) - np.einsum("nux,nx->nu", self.K, np.nan_to_num(x))
    return from_ctrl(r, ctrl)

  def down(self, qpos: np.ndarray) -> np.ndarray:
    """[n, T] bool from qpos [n, T, nq]: the robot is down (tilted past 60 deg or sunk below 60% of
    its standing height)."""
    up, ratio = _up_and_height(self.h, qpos, self.qpos0[:, None], self.height0[:, None], self.ref_height[:, None])
    return (up < _DOWN_UP) | (ratio < _DOWN_H) | ~np.isfinite(qpos).all(-1)
