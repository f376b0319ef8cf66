"""Closed loop: replan (one jitted call for all environments), step the environments, log, repeat.

`run_episode(envs, policy, n, steps, key)` runs n environments of one task for up to `steps`
control steps with an MPPI planner (any backend), `RandomPolicy` or the PPO expert
(control/expert.py), and returns an `EpisodeLog` with returns, per-step rewards, observations,
controls, qpos (for rendering) and the wall time of every replanning call (the first one includes
compilation).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from westworld_jax.control import env as env_lib
from westworld_jax.control import tasks as tasks_lib


class RandomPolicy:
  """Uniform random actions within the bounds: the baseline a planner must beat."""

  kind = "random"

  def __init__(self, task: tasks_lib.Task):
    lo, hi = task.act_low, task.act_high

    def replan(key, s):
      key, sub = jax.random.split(key)
      return jax.random.uniform(sub, (s.alive.shape[0], lo.shape[0]), minval=lo, maxval=hi), key, {}

    self.replan = jax.jit(replan)
    self.init = lambda key, s: key


class NoisyPolicy:
  """Another policy's actions plus Gaussian noise (std `fraction` x each actuator's half range), clipped:
  control data that also covers the states a planner's own path does not visit."""

  def __init__(self, policy, task: tasks_lib.Task, fraction: float):
    if fraction <= 0:
      raise ValueError(f"action noise must be > 0 (a fraction of the half range), got {fraction}")
    self.policy, self.kind = policy, f"{getattr(policy, 'kind', None) or policy.backend.kind}+noise"
    lo, hi = jnp.asarray(task.act_low), jnp.asarray(task.act_high)
    std = fraction * 0.5 * (hi - lo)

    def replan(plan, s):
      inner, key = plan
      u, inner, info = policy.replan(inner, s)
      key, sub = jax.random.split(key)
      nu = lo.shape[0]
      noisy = jnp.clip(u[:, :nu] + std * jax.random.normal(sub, u[:, :nu].shape), lo, hi)
      return u.at[:, :nu].set(noisy), (inner, key), info

    def init(key, s):
      k1, k2 = jax.random.split(key)
      return policy.init(k1, s), k2

    self.replan = jax.jit(replan)
    self.init = init


@dataclasses.dataclass
class EpisodeLog:
  task: str
  policy: str
  returns: np.ndarray  # [E]
  lengths: np.ndarray  # [E] steps before termination (or the episode length)
  rewards: np.ndarray  # [T, E] (0 after termination)
  alive: np.ndarray  # [T, E] alive before each step
  obs: np.ndarray  # [T + 1, E, num_obs]
  ctrl: np.ndarray  # [T, E, num_act] actuator units
  qpos: np.ndarray  # [T + 1, E, nq]
  goal: np.ndarray  # [E, GOAL_DIM]
  latency_s: np.ndarray  # [T] wall time of each replanning call (all envs), [0] includes compiling
  info: dict = dataclasses.field(default_factory=dict)  # planner statistics, each [T, E]

  def episodes(self) -> list[dict]:
    """Per environment {'obs' [t, Co], 'act' [t, Ca], 'return'}: obs[t] is seen before act[t].

    Terminated episodes keep their steps up to and including the one that fell.
    """
    out = []
    for e in range(self.returns.shape[0]):
      n = int(self.lengths[e])
      out.append({"obs": self.obs[:n, e], "act": self.ctrl[:n, e], "return": float(self.returns[e])})
    return out


def run_episode(
  envs: env_lib.Envs,
  policy,
  n_envs: int,
  steps: int,
  key: jax.Array,
  stop_when_done: bool = True,
  progress: str | None = None,
  observer=None,
) -> EpisodeLog:
  """Runs n_envs episodes of envs.task for up to `steps` control steps with `policy`.

  policy: MPPI (its backend must fit envs: a world-model backend needs envs.history == its history),
    RandomPolicy or expert.ExpertPolicy.
  progress: a label to show a progress bar (steps, last replan ms, environments still alive) on stderr.
  observer: called as observer(t, state, ctrl, plan) after each replan, before the step (e.g. plan_check).
  """
  task = envs.task
  kreset, kplan = jax.random.split(key)
  s = envs.reset(kreset, n_envs)
  plan = policy.init(kplan, s)
  nu = task.num_act
  obs, qpos, ctrls, rewards, alive, lat = [s.obs_hist[:, -1]], [s.d.qpos], [], [], [], []
  infos: dict[str, list] = {}
  bar = tqdm.tqdm(total=steps, desc=progress, unit="step", leave=False) if progress else None
  for t in range(steps):
    t0 = time.perf_counter()
    u, plan, info = policy.replan(plan, s)
    u = jax.block_until_ready(u)
    lat.append(time.perf_counter() - t0)
    if observer is not None:
      observer(t, s, u, plan)
    alive.append(s.alive)
    s, r = envs.step(s, u)
    u_real = u[:, :nu]
    obs.append(s.obs_hist[:, -1])
    qpos.append(s.d.qpos)
    ctrls.append(jnp.clip(u_real, task.act_low, task.act_high))
    rewards.append(r)
    for k, v in info.items():
      infos.setdefault(k, []).append(v)
    if bar is not None:
      bar.set_postfix(replan_ms=f"{1e3 * lat[-1]:.0f}", alive=f"{int(jnp.sum(s.alive))}/{n_envs}", refresh=False)
      bar.update()
    if stop_when_done and task.terminates and not bool(jnp.any(s.alive)):
      break
  if bar is not None:
    bar.close()
  stack = lambda xs: np.asarray(jnp.stack(xs))
  return EpisodeLog(
    task=task.name,
    policy=policy.backend.kind if hasattr(policy, "backend") else policy.kind,
    returns=np.asarray(s.ret),
    lengths=np.asarray(s.steps) if task.terminates else np.full(n_envs, len(rewards)),
    rewards=stack(rewards),
    alive=stack(alive),
    obs=stack(obs),
    ctrl=stack(ctrls),
    qpos=stack(qpos),
    goal=np.asarray(s.goal),
    latency_s=np.asarray(lat),
    info={k: stack(v) for k, v in infos.items()},
  )


def run_multi_robot(envs_list, planner, n_envs: int, steps: int, key: jax.Array) -> dict:
  """Environments of several robots planned together: one world-model batch per replan.

  envs_list[i] must be Envs(task_i, history=H, robot_index=i) for the backend's tasks[i]; each robot
  runs n_envs environments. Returns {'returns': [R, n_envs], 'latency_s': [steps]}.
  """
  backend = planner.backend
  keys = jax.random.split(key, len(envs_list) + 1)
  states = [e.reset(k, n_envs) for e, k in zip(envs_list, keys[1:])]
  plan = planner.init(keys[0], backend.stack_states(states))
  lat = []
  for _ in range(steps):
    t0 = time.perf_counter()
    u, plan, _ = planner.replan(plan, backend.stack_states(states))
    u = jax.block_until_ready(u)
    lat.append(time.perf_counter() - t0)
    states = [
      e.step(s, u[i * n_envs : (i + 1) * n_envs, : e.task.num_act])[0]
      for i, (e, s) in enumerate(zip(envs_list, states))
    ]
  return {"returns": np.stack([np.asarray(s.ret) for s in states]), "latency_s": np.asarray(lat)}


def summarize(logs: list[EpisodeLog]) -> dict:
  """Returns (mean, std over all episodes), lengths and replanning latency (compile excluded)."""
  rets = np.concatenate([l.returns for l in logs])
  lens = np.concatenate([l.lengths for l in logs])
  lat = np.concatenate([l.latency_s[1:] for l in logs]) if any(len(l.latency_s) > 1 for l in logs) else np.zeros(0)
  out = {
    "episodes": int(len(rets)),
    "return_mean": float(rets.mean()),
    "return_std": float(rets.std()),
    "return_min": float(rets.min()),
    "return_max": float(rets.max()),
    "length_mean": float(lens.mean()),
    "mean_reward_per_step": float(
      np.mean(
        [
          l.rewards[:, e][l.alive[:, e]].mean() if l.alive[:, e].any() else 0.0
          for l in logs
          for e in range(l.returns.shape[0])
        ]
      )
    ),
    "first_replan_s": float(logs[0].latency_s[0]) if len(logs[0].latency_s) else float("nan"),
  }
  if len(lat):
    out.update(
      {
        "replan_ms_median": float(np.median(lat) * 1e3),
        "replan_ms_mean": float(lat.mean() * 1e3),
        "replan_ms_p90": float(np.percentile(lat, 90) * 1e3),
        "replan_hz": float(1.0 / np.median(lat)),
      }
    )
  return out
