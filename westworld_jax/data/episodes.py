"""Generate episodes of one environment (robot x behaviour) with physics, checked and truncated."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable
import weakref
import zlib

import numpy as np

from westworld_jax.data import mpc as mpc_lib
from westworld_jax.data import behaviours, pd_hold, rl_env, shards, simulate
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


def run_closed_loop(
  sim: simulate.Simulator, act: Callable[[int, np.ndarray], np.ndarray], start: np.ndarray, T: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Steps n environments T control steps with u_t = act(t, states_t) (normalised [n, nu]).

  Returns actions [n, T, nu], states [n, T, nstate] after each step, sensordata [n, T, nsensordata]."""
  cur = start
  us, sts, sss = [], [], []
  for t in range(T):
    u_t = act(t, cur)
    st, ss = sim.run(cur, behaviours.to_ctrl(sim.robot, u_t[:, None]))
    us.append(u_t)
    sts.append(st[:, 0])
    sss.append(ss[:, 0])
    cur = np.nan_to_num(st[:, 0])  # a diverged env is rejected later; keep the batch stepping
  return np.stack(us, 1), np.stack(sts, 1), np.stack(sss, 1)


# pd_hold is calibrated per robot: how much random posture robots tolerate before toppling differs
# widely (an ant shrugs off what topples a spot), and so does which feedback keeps them up.
HOLD_LEVELS = (2.0, 1.4, 1.0, 0.7, 0.5, 0.35, 0.25)
_hold_settings: "weakref.WeakKeyDictionary[Robot, tuple[float, bool]]" = weakref.WeakKeyDictionary()


def hold_start(sim: simulate.Simulator, rng: np.random.Generator, n: int) -> np.ndarray:
  """pd_hold's start states: standing still (robots may start in the air or off balance)."""
  return sim.initial_states(rng, n, qpos=pd_hold.stand_qpos(sim.robot))


def hold_settings(sim: simulate.Simulator, per_level: int = 6, seconds: float = 5.0) -> tuple[float, bool]:
  """pd_hold's offset amplitude and feedback (balance LQR or not) for this robot: the largest of
  HOLD_LEVELS at which a feedback keeps all per_level calibration episodes up (PDHold.down never
  true) for `seconds` (ties: more steps up; with and without LQR tried where it exists); the
  smallest level if none does; (1, no LQR) without a floating base (it cannot fall).
  Deterministic (own seed), cached per robot."""
  robot = sim.robot
  if robot not in _hold_settings:
    setting = (1.0, False)
    if robot.floating:
      levels = np.asarray(HOLD_LEVELS)
      modes = (False, True) if pd_hold.can_balance(robot) else (False,)
      rng = np.random.default_rng(0)
      n = len(levels) * per_level
      start = hold_start(sim, rng, n * len(modes))
      qpos0 = sim.qpos_qvel(start)[0]
      pols = [
        pd_hold.PDHold(robot, rng, qpos0[i * n : (i + 1) * n], np.repeat(levels, per_level), lqr)
        for i, lqr in enumerate(modes)
      ]
      act = (
        lambda t, cur: np.concatenate(  # noqa: E731
          [p(t, *sim.qpos_qvel(cur[i * n : (i + 1) * n])) for i, p in enumerate(pols)]
        )
      )
      _, states, _ = run_closed_loop(sim, act, start, max(10, int(seconds / robot.dt)))
      qpos = sim.qpos_qvel(states)[0]
      best = (-1, -1.0, 0)
      for i, (p, lqr) in enumerate(zip(pols, modes)):
        down = p.down(qpos[i * n : (i + 1) * n])
        steps_up = np.where(down.any(1), down.argmax(1), down.shape[1]).reshape(len(levels), per_level)
        ok = (steps_up == down.shape[1]).all(1)
        k = int(np.argmax(ok)) if ok.any() else len(levels) - 1
        score = (int(ok.any()) * (len(levels) - k), float(steps_up[k].mean()), i)
        if score > best:
          best, setting = score, (float(levels[k]), lqr)
    _hold_settings[robot] = setting
  return _hold_settings[robot]


def trained_policy_actor(
  sim: simulate.Simulator, level: str, rng: np.random.Generator, policy_root: str | None = None
) -> Callable[[int, np.ndarray], np.ndarray]:
  """act(t, states) of the robot's trained policy at `level`, sampled from its Gaussian."""
  # train_policy imports jax: loaded only when a trained policy acts (collection is jax-free otherwise).
  from westworld_jax.data import train_policy  # pylint: disable=import-outside-toplevel

  policy, _ = train_policy.load_policy(sim.robot.name, level, policy_root)
  spec = rl_env.reward_spec(sim.robot.name)
  return lambda t, cur: policy.act(rl_env.observe(sim, spec, cur), rng)  # noqa: E731


def replay_episodes(
  robot: Robot, first: int, n: int, T: int, checks: simulate.EpisodeChecks, policy_root: str | None = None
) -> tuple[list[dict], Counts]:
  """Episodes first..first+n of the policy training run's replay.npz, in a fixed shuffled order (so
  shards never share an episode), each cut to at most T steps; episodes shorter than
  checks.min_length are left out of that order."""
  # train_policy imports jax: loaded only when replays are read.
  from westworld_jax.data import train_policy  # pylint: disable=import-outside-toplevel

  path = os.path.join(train_policy.policy_root(policy_root), robot.name, "replay.npz")
  if not os.path.exists(path):
    raise train_policy.PolicyNotFoundError(
      f"no replay episodes for {robot.name} ({path}): train its policy with "
      f"`python -m westworld_jax.data.train_policy --robot {robot.name}`"
    )
  d = np.load(path)
  ends = d["episode_ends"]
  starts = np.concatenate([[0], ends[:-1]])
  usable = np.flatnonzero(np.minimum(T, ends - starts) >= checks.min_length)
  order = usable[np.random.default_rng(zlib.crc32(robot.name.encode())).permutation(len(usable))]
  if first + n > len(order):
    raise shards.CorpusError(
      f"{path} holds {len(order)} episodes of at least {checks.min_length} steps; the collector "
      f"asks for episodes {first}..{first + n}: collect fewer episodes of {robot.name}-policy_replay"
    )
  counts, episodes = Counts(), []
  for i in order[first : first + n]:
    length = min(T, int(ends[i] - starts[i]))
    s = int(starts[i])
    obs, act = d["observations"][s : s + length], d["actions"][s : s + length]
    episodes.append({"obs": obs.astype(np.float32), "act": behaviours.to_ctrl(robot, act).astype(np.float32)})
    counts.kept += 1
    counts.steps += length
  return episodes, counts


def generate(
  sim: simulate.Simulator,
  behaviour: str,
  task: str,
  rng: np.random.Generator,
  n: int,
  T: int,
  checks: simulate.EpisodeChecks = simulate.EpisodeChecks(),
  mpc_config: mpc_lib.MPCConfig = mpc_lib.MPCConfig(),
  first_episode: int = 0,
) -> tuple[list[dict], Counts]:
  """Simulate n episodes of T control steps; returns kept episodes {'obs' [t,Co], 'act' [t,Ca]}.
  first_episode: the index of this batch's first episode in the environment (replay reads by it)."""
  robot: Robot = sim.robot
  if behaviour == behaviours.REPLAY:
    return replay_episodes(robot, first_episode, n, T, checks)
  if behaviour in behaviours.TRAINED:  # the start distribution the policy was trained on
    start = rl_env.reset_states(sim, rl_env.reward_spec(robot.name), rng, n)
  else:
    start = hold_start(sim, rng, n) if behaviour == "pd_hold" else sim.initial_states(rng, n)
  counts = Counts()
  if behaviour in behaviours.OPEN_LOOP:
    u = behaviours.open_loop(behaviour, robot, rng, n, T)
    states, sens = sim.run(start, behaviours.to_ctrl(robot, u))
    counts.sim_steps += n * T * robot.frame_skip
  elif behaviour in behaviours.CLOSED_LOOP:
    if behaviour == "mpc":
      mpc = mpc_lib.SamplingMPC(sim, task, start, rng, mpc_config)
      act = lambda t, cur: mpc(cur)  # noqa: E731
      counts.sim_steps += T * n * mpc_config.samples * mpc_config.horizon * robot.frame_skip
    elif behaviour in behaviours.TRAINED:
      act = trained_policy_actor(sim, behaviour.removeprefix("policy_"), rng)
    else:
      if behaviour == "pd_targets":
        policy = behaviours.PDTargets(robot, rng, n)
      else:
        level, lqr = hold_settings(sim)
        # Around the calibrated level: some episodes calmer, some bolder (and likelier to fall).
        policy = pd_hold.PDHold(robot, rng, sim.qpos_qvel(start)[0], level * rng.uniform(0.5, 1.25, n), lqr)
      act = lambda t, cur: policy(t, *sim.qpos_qvel(cur))  # noqa: E731
    u, states, sens = run_closed_loop(sim, act, start, T)
    counts.sim_steps += n * T * robot.frame_skip
  else:
    raise ValueError(f"unknown behaviour '{behaviour}': choose one of {behaviours.ALL}")

  ctrl = behaviours.to_ctrl(robot, u).astype(np.float32)
  # obs[t] is seen before act[t]; the state after the last action is not needed for a window.
  obs = np.concatenate([sim.observe(start)[:, None], sim.observe(states[:, :-1])], axis=1)
  episodes = []
  terminate = task == catalogue.LOCOMOTION and behaviour != "random"
  if behaviour in behaviours.TRAINED:  # a trained policy's episodes end where its own environment's do
    spec = rl_env.reward_spec(robot.name)
    terminate &= spec is None or spec.terminate_when_unhealthy
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
