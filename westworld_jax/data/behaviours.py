"""Behaviour policies that generate the corpus, vectorised over n environments.

Open-loop policies return a whole control sequence at once (so mujoco.rollout runs an episode in
one multi-threaded call); closed-loop ones ('pd_targets', 'pd_hold', 'mpc') are stepped by the
collector.
All controls are drawn in the normalised box [-1, 1] and mapped to the actuators' ctrlrange.

- random:      i.i.d. uniform actions (D4RL 'random' style)
- ou:          temporally correlated Ornstein-Uhlenbeck noise with per-episode scale and speed
- gait:        per-actuator sinusoids sharing one frequency, random phases/amplitudes (+ noise)
- pd_targets:  PD control of joints toward random targets re-drawn every 0.5-2 s (arms, hands)
- pd_hold:     holds the standing pose with model-derived feedback (joint PD, plus an LQR balance
               term where it helps), targets perturbed by OU noise, slow posture changes and
               gait-like sinusoids: legged robots move for long episodes and mostly stay upright,
               where open-loop noise topples them within a second or two
- mpc:         sampling-based MPC on the true simulator with a generic task reward: goal-directed
               but short-sighted (32 samples x 16 steps); legged robots under it still fall
               (hopper within ~70-120 steps), so it is not expert data (the policy_* levels are)
- policy_random / policy_medium / policy_expert: PPO policies trained here at D4RL's levels
               (data/train_policy.py), sampled from their Gaussian; policy_replay: the episodes the
               training run experienced up to the medium policy (D4RL's medium-replay)
"""

from __future__ import annotations

import numpy as np

from westworld_jax.robots.robot import Robot

OPEN_LOOP = ("random", "ou", "gait")
TRAINED = ("policy_random", "policy_medium", "policy_expert")  # level = the name after "policy_"
REPLAY = "policy_replay"
CLOSED_LOOP = ("pd_targets", "pd_hold", "mpc") + TRAINED
ALL = OPEN_LOOP + CLOSED_LOOP + (REPLAY,)


def to_ctrl(robot: Robot, u: np.ndarray) -> np.ndarray:
  """Normalised actions in [-1, 1] -> actuator units (clipped to ctrlrange)."""
  u = np.clip(u, -1.0, 1.0)
  return robot.act_low + (u + 1.0) * 0.5 * (robot.act_high - robot.act_low)


def open_loop(name: str, robot: Robot, rng: np.random.Generator, n: int, T: int) -> np.ndarray:
  """[n, T, nu] normalised actions of an open-loop behaviour."""
  nu, dt = robot.num_act, robot.dt
  if name == "random":
    return rng.uniform(-1, 1, (n, T, nu))
  if name == "ou":
    # Per-episode correlation time (0.05-1 s) and scale (0.2-1): from jittery to smooth sweeps.
    tau = np.exp(rng.uniform(np.log(0.05), np.log(1.0), (n, 1)))
    scale = rng.uniform(0.2, 1.0, (n, 1))
    a = np.exp(-dt / tau)
    x = np.empty((n, T, nu))
    x[:, 0] = rng.standard_normal((n, nu))
    noise = rng.standard_normal((n, T, nu)) * np.sqrt(1 - a**2)[..., None]
    for t in range(1, T):
      x[:, t] = a * x[:, t - 1] + noise[:, t]
    return np.tanh(scale[..., None] * x)
  if name == "gait":
    freq = rng.uniform(0.5, 3.0, (n, 1, 1))  # Hz, shared by all actuators: a rhythmic gait
    phase = rng.uniform(0, 2 * np.pi, (n, 1, nu))
    amp = rng.uniform(0.3, 1.0, (n, 1, nu))
    offset = rng.uniform(-0.2, 0.2, (n, 1, nu))
    t = np.arange(T)[None, :, None] * dt
    return amp * np.sin(2 * np.pi * freq * t + phase) + offset + 0.1 * rng.standard_normal((n, T, nu))
  raise ValueError(f"'{name}' is not an open-loop behaviour; open-loop: {OPEN_LOOP}")


class PDTargets:
  """PD control toward random joint targets; position servos get the target directly."""

  def __init__(self, robot: Robot, rng: np.random.Generator, n: int):
    m = robot.model
    self.robot, self.rng, self.n = robot, rng, n
    self.joint = np.array([int(m.actuator_trnid[a, 0]) for a in range(m.nu)])
    self.joint_actuated = np.array([int(m.actuator_trntype[a]) == 0 for a in range(m.nu)])  # mjTRN_JOINT
    self.qadr = np.where(self.joint_actuated, m.jnt_qposadr[self.joint], 0)
    self.vadr = np.where(self.joint_actuated, m.jnt_dofadr[self.joint], 0)
    lim = m.jnt_range[self.joint]
    limited = m.jnt_limited[self.joint].astype(bool)
    self.lo = np.where(limited, lim[:, 0], -np.pi / 2)
    self.hi = np.where(limited, lim[:, 1], np.pi / 2)
    self.servo = np.array([c.kind == "position" for c in robot.act_channels])
    self.kp = rng.uniform(2.0, 8.0, (n, 1))
    self.kd = 0.1 * self.kp
    self.period = rng.integers(max(1, int(0.5 / robot.dt)), max(2, int(2.0 / robot.dt)), n)
    self.target = self._draw()

  def _draw(self) -> np.ndarray:
    return self.rng.uniform(self.lo, self.hi, (self.n, len(self.lo)))

  def __call__(self, t: int, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Normalised [n, nu] actions at control step t from qpos [n, nq], qvel [n, nv]."""
    redraw = (t % self.period) == 0
    if redraw.any():
      self.target[redraw] = self._draw()[redraw]
    q, qd = qpos[:, self.qadr], qvel[:, self.vadr]
    span = 0.5 * (self.hi - self.lo)
    u_pd = self.kp * (self.target - q) / span - self.kd * qd
    # Servos take the target position itself, normalised into their ctrlrange.
    r = self.robot
    u_servo = 2 * (np.clip(self.target, r.act_low, r.act_high) - r.act_low) / (r.act_high - r.act_low) - 1
    u = np.where(self.servo, u_servo, u_pd)
    u = np.where(self.joint_actuated, u, self.rng.uniform(-1, 1, u.shape))  # tendons: random
    return np.clip(u + 0.05 * self.rng.standard_normal(u.shape), -1, 1)


def from_ctrl(robot: Robot, ctrl: np.ndarray) -> np.ndarray:
  """Actuator units -> normalised [-1, 1] (inverse of to_ctrl), clipped."""
  span = np.maximum(robot.act_high - robot.act_low, 1e-9)
  return np.clip(2 * (ctrl - robot.act_low) / span - 1, -1.0, 1.0)
