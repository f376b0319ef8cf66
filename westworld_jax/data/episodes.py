"""Generate episodes of one environment (robot x behaviour) with physics, checked and truncated."""
from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from westworld_jax.data import mpc as mpc_lib
from westworld_jax.data import policies, simulate
from westworld_jax.robots import catalogue
from westworld_jax.robots.robot import Robot


@dataclasses.dataclass
class Counts:
  """Episodes kept and dropped (never silently): why each ended or was rejected."""
  kept: int = 0
  fell: int = 0  # kept, truncated at the fall
  unstable: int = 0  # dropped: non-finite or exploding physics
  too_short: int = 0  # dropped: shorter than checks.min_length
  steps: int = 0  # control steps kept
  sim_steps: int = 0  # physics steps simulated (MPC planning rollouts included)

  def add(self, other: "Counts") -> None:
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def episode_rng(seed: int, env_name: str, shard: int) -> np.random.Generator:
  """Deterministic per (seed, environment, shard), independent of which shards ran before."""
  return np.random.default_rng([seed, zlib.crc32(env_name.encode()), shard])


def generate(sim: simulate.Simulator, behaviour: str, task: str, rng: np.random.Generator, n: int, T: int,
             checks: simulate.EpisodeChecks = simulate.EpisodeChecks(),
             mpc_config: mpc_lib.MPCConfig = mpc_lib.MPCConfig()) -> tuple[list[dict], Counts]:
  """Simulate n episodes of T control steps; returns kept episodes {'obs' [t,Co], 'act' [t,Ca]}."""
  robot: Robot = sim.robot
  start = sim.initial_states(rng, n)
  counts = Counts()
  if behaviour in policies.OPEN_LOOP:
    u = policies.open_loop(behaviour, robot, rng, n, T)
    states, sens = sim.run(start, policies.to_ctrl(robot, u))
    counts.sim_steps += n * T * robot.frame_skip
  elif behaviour in policies.CLOSED_LOOP:
    if behaviour == "pd_targets":
      policy = policies.PDTargets(robot, rng, n)
    else:
      policy = mpc_lib.SamplingMPC(sim, task, start, rng, mpc_config)
    cur = start
    us, sts, sss = [], [], []
    for t in range(T):
      if behaviour == "pd_targets":
        qpos, qvel = sim.qpos_qvel(cur)
        u_t = policy(t, qpos, qvel)
      else:
        u_t = policy(cur)
        counts.sim_steps += n * mpc_config.samples * mpc_config.horizon * robot.frame_skip
      st, ss = sim.run(cur, policies.to_ctrl(robot, u_t[:, None]))
      us.append(u_t)
      sts.append(st[:, 0])
      sss.append(ss[:, 0])
      cur = np.nan_to_num(st[:, 0])  # a diverged env is rejected below; keep the batch stepping
    u, states, sens = np.stack(us, 1), np.stack(sts, 1), np.stack(sss, 1)
    counts.sim_steps += n * T * robot.frame_skip
  else:
    raise ValueError(f"unknown behaviour '{behaviour}': choose one of {policies.ALL}")

  ctrl = policies.to_ctrl(robot, u).astype(np.float32)
  # obs[t] is seen before act[t]; the state after the last action is not needed for a window.
  obs = np.concatenate([sim.observe(start)[:, None], sim.observe(states[:, :-1])], axis=1)
  episodes = []
  terminate = task == catalogue.LOCOMOTION and behaviour != "random"
  for i in range(n):
    end, reason = simulate.episode_end(sim, start[i], states[i], sens[i], checks, terminate)
    if reason == "unstable":
      counts.unstable += 1
      continue
    length = min(T, end + 1)  # keep the observation of the state where it fell
    if length < checks.min_length:
      counts.too_short += 1
      continue
    counts.fell += reason == "fell"
    counts.kept += 1
    counts.steps += length
    episodes.append({"obs": obs[i, :length], "act": ctrl[i, :length]})
  return episodes, counts
