"""Sampling-based MPC on the true simulator (MPPI weighting): goal-directed behaviour data.

Short-horizon and generic, it moves robots toward their task but does not keep legged robots up
(hopper falls within ~70-120 steps at the defaults); expert locomotion comes from the trained
policies (data/train_policy.py, behaviours policy_*).

Every control step, each of the n environments samples K action sequences around its warm-started
plan, rolls them out in MuJoCo (all n*K in one multi-threaded mujoco.rollout call), weights them by
softmax(return / temperature) and executes the first action of the weighted plan. Task rewards are
generic, computed from the task sensors every Robot carries (root COM velocity, root and tip
positions), so any robot in the catalogue gets one:

- locomotion / swim: forward (+x) COM velocity, an alive bonus while the root stays up, effort cost;
- arm / hand: negative distance of the tip (end effector) to a per-episode random target;
- balance: height of the tip (swing up and hold).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from westworld_jax.data import simulate
from westworld_jax.data.behaviours import to_ctrl
from westworld_jax.robots import catalogue


@dataclasses.dataclass(frozen=True)
class MPCConfig:
  samples: int = 32
  horizon: int = 16  # control steps
  noise: float = 0.4  # std of plan perturbations, in normalised action units
  temperature: float = 0.1  # softmax temperature relative to the spread of returns
  discount: float = 0.98


class TaskReward:
  """Per-step reward of one task family, vectorised over [..., T] rollouts."""

  def __init__(self, sim: simulate.Simulator, task: str, start: np.ndarray, rng: np.random.Generator):
    self.sim, self.task = sim, task
    adr = sim.robot.sensor_adr
    self.vel, self.pos, self.tip = adr["root_vel"], adr["root_pos"], adr["tip_pos"]
    sens0 = sim.sensors_at(start)
    self.h0 = sens0[:, self.pos + 2]
    root, tip = sens0[:, self.pos : self.pos + 3], sens0[:, self.tip : self.tip + 3]
    reach = np.maximum(np.linalg.norm(tip - root, axis=-1), 0.05)
    direction = rng.standard_normal(root.shape)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    self.target = root + direction * rng.uniform(0.3, 0.9, (len(root), 1)) * reach[:, None]

  def __call__(self, sens: np.ndarray, u: np.ndarray, env: np.ndarray) -> np.ndarray:
    """sens [m, T, nsensordata], u [m, T, nu] normalised, env [m] environment index -> [m, T]."""
    effort = 0.1 * np.mean(u**2, axis=-1)
    if self.task in (catalogue.LOCOMOTION, catalogue.SWIM):
      fwd = sens[..., self.vel]
      if self.task == catalogue.SWIM or not self.sim.robot.floating:
        return fwd - effort
      alive = sens[..., self.pos + 2] > 0.7 * self.h0[env][:, None]
      return fwd + 1.0 * alive - effort
    if self.task in (catalogue.ARM, catalogue.HAND):
      tip = sens[..., self.tip : self.tip + 3]
      return -np.linalg.norm(tip - self.target[env][:, None], axis=-1) - 0.1 * effort
    if self.task == catalogue.BALANCE:
      return sens[..., self.tip + 2] - 0.1 * effort
    raise ValueError(f"no MPC reward for task '{self.task}'")


class SamplingMPC:
  """MPPI-style planner over n environments; call with current states, get normalised actions."""

  def __init__(
    self,
    sim: simulate.Simulator,
    task: str,
    start: np.ndarray,
    rng: np.random.Generator,
    config: MPCConfig = MPCConfig(),
  ):
    self.sim, self.rng, self.cfg = sim, rng, config
    self.n = len(start)
    self.reward = TaskReward(sim, task, start, rng)
    self.plan = np.zeros((self.n, config.horizon, sim.robot.num_act))

  def __call__(self, states: np.ndarray) -> np.ndarray:
    cfg, n, nu = self.cfg, self.n, self.sim.robot.num_act
    K, H = cfg.samples, cfg.horizon
    # Smooth perturbations: noise on a few knots, linearly interpolated over the horizon.
    knots = max(2, H // 4)
    eps = self.rng.standard_normal((n, K, knots, nu)) * cfg.noise
    grid = np.linspace(0, knots - 1, H)
    lo = np.floor(grid).astype(int).clip(0, knots - 2)
    frac = (grid - lo)[None, None, :, None]
    eps = eps[:, :, lo] * (1 - frac) + eps[:, :, lo + 1] * frac
    eps[:, 0] = 0.0  # keep the current plan among the candidates
    cand = np.clip(self.plan[:, None] + eps, -1, 1)  # [n, K, H, nu]
    flat = cand.reshape(n * K, H, nu)
    env = np.repeat(np.arange(n), K)
    _, sens = self.sim.run(np.repeat(states, K, axis=0), to_ctrl(self.sim.robot, flat))
    r = self.reward(sens, flat, env).reshape(n, K, H)
    ret = (r * cfg.discount ** np.arange(H)).sum(-1)
    ret = np.nan_to_num(ret, nan=-1e9, posinf=-1e9, neginf=-1e9)  # unstable samples lose
    spread = ret.std(axis=1, keepdims=True) + 1e-6
    w = np.exp((ret - ret.max(axis=1, keepdims=True)) / (cfg.temperature * spread))
    w /= w.sum(axis=1, keepdims=True)
    best = np.einsum("nk,nkhu->nhu", w, cand)
    action = best[:, 0]
    self.plan = np.concatenate([best[:, 1:], best[:, -1:]], axis=1)  # warm start: shift by one step
    return action
