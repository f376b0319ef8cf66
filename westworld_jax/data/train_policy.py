"""Behaviour policies at D4RL's levels, trained here with PPO (data/ppo.py on data/rl_env.py):

  python -m westworld_jax.data.train_policy --robot hopper [--steps 1000000] [--seed 0]

Saves, under --out (default: $WESTWORLD_POLICY_DIR, else the package's westworld_jax/robots/policies/),
<robot>/<level>/ for
  random  the untrained initial policy (D4RL: a randomly initialised policy);
  medium  the training snapshot whose evaluated return is closest to a third of the way from random
          to expert (D4RL: about a third of the expert return);
  expert  the snapshot with the best evaluated return;
each an orbax checkpoint of the network parameters plus policy.json (network shape, the observation
statistics it was trained with, its evaluated return); and <robot>/replay.npz, the episodes the
training run experienced up to the medium snapshot (D4RL's medium-replay), as robot observations and
actions (a uniform sample of at most --replay_episodes of them and --replay_steps steps). Returns are of the deterministic policy (its mean action) over --eval_episodes episodes.
--results merges one row per (robot, level) into a JSON table (benchmarks/results/behaviour_policies.json).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time

from absl import flags
import jax
import numpy as np

from westworld_jax import cli
from westworld_jax.errors import UserError
from westworld_jax.data import ppo, rl_env

POLICY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "robots", "policies")
POLICY_DIR_ENV = "WESTWORLD_POLICY_DIR"  # overrides POLICY_DIR (your own policies; tests)
LEVELS = ("random", "medium", "expert")
MEDIUM_FRACTION = 1 / 3  # D4RL's medium policies reach about a third of the expert's return
META = "policy.json"
REPLAY_EPISODES = 256  # replay.npz keeps this many of the run's episodes (uniformly drawn): enough for a corpus,
REPLAY_STEPS = 50_000  # and at most this many steps (robots that never fall run 1000-step episodes): small to ship


class PolicyNotFoundError(UserError, FileNotFoundError):
  """No trained policy for a robot and level."""


class DamagedPolicyError(UserError, ValueError):
  """A saved policy whose files do not load (truncated, edited); the message names the file."""


def policy_root(root: str | None = None) -> str:
  return root or os.environ.get(POLICY_DIR_ENV) or POLICY_DIR


def policy_dir(robot: str, level: str, root: str | None = None) -> str:
  return os.path.join(policy_root(root), robot, level)


def save_policy(path: str, policy: ppo.Policy, meta: dict) -> None:
  """Atomic: written into a temporary directory next to `path`, then swapped in."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".staging-", dir=parent)
  try:
    with ocp.StandardCheckpointer() as ck:
      ck.save(os.path.join(tmp, "params"), jax.device_get(policy.params))
    net = policy.net
    with open(os.path.join(tmp, META), "w") as f:
      json.dump(
        {
          **meta,
          "num_act": net.num_act,
          "hidden": list(net.hidden),
          "init_log_std": net.init_log_std,
          "obs_clip": policy.obs_clip,
          "obs_stats": {k: np.asarray(v).tolist() for k, v in policy.obs_stats.items()},
        },
        f,
        indent=1,
      )
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a policy is package data
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def load_policy(robot: str, level: str, root: str | None = None) -> tuple[ppo.Policy, dict]:
  """(policy, its policy.json) for a robot and level."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  path = policy_dir(robot, level, root)
  if not os.path.exists(os.path.join(path, META)):
    raise PolicyNotFoundError(
      f"no {level} policy for {robot} in {os.path.dirname(path)}: train one with "
      f"`python -m westworld_jax.data.train_policy --robot {robot}`"
    )
  retrain = f"retrain it: `python -m westworld_jax.data.train_policy --robot {robot}` (or restore the file)"
  try:
    with open(os.path.join(path, META)) as f:
      meta = json.load(f)
    net = ppo.ActorCritic(meta["num_act"], tuple(meta["hidden"]), meta["init_log_std"])
    shape = (1, meta["num_obs"])
    stats = {k: np.asarray(v) if k != "count" else float(v) for k, v in meta["obs_stats"].items()}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DamagedPolicyError(f"{os.path.join(path, META)} is damaged ({type(e).__name__}: {e}): {retrain}") from None
  abstract = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), np.zeros(shape, np.float32)))
  try:
    with ocp.StandardCheckpointer() as ck:
      params = ck.restore(os.path.join(os.path.abspath(path), "params"), abstract)
  except Exception as e:  # pylint: disable=broad-exception-caught  (orbax/tensorstore raise many kinds)
    first = (str(e).strip().splitlines() or [""])[0][:200]
    raise DamagedPolicyError(
      f"{os.path.join(path, 'params')} does not restore ({type(e).__name__}: {first}): {retrain}"
    ) from None
  return ppo.Policy(net, params, stats, meta["obs_clip"]), meta


def subsample_episodes(eps: list, keep: int = 0, max_steps: int = 0, seed: int = 0) -> list:
  """A uniform random subset of episodes ((obs, act) pairs), in their order: at most `keep` of them,
  then, if they hold more than `max_steps` steps, the first of a random order that fit (0: no bound)."""
  rng = np.random.default_rng(seed)
  if keep and len(eps) > keep:
    eps = [eps[i] for i in np.sort(rng.choice(len(eps), keep, replace=False))]
  if max_steps and sum(len(e[0]) for e in eps) > max_steps:
    order, total, idx = rng.permutation(len(eps)), 0, []
    for i in order:
      if total + len(eps[i][0]) <= max_steps:
        idx.append(i)
        total += len(eps[i][0])
    eps = [eps[i] for i in sorted(idx)]
  return eps


class _Recorder:
  """The training run's episodes (robot observations and actions), for the replay level."""

  def __init__(self, env: rl_env.VecEnv):
    self.env, self.obs, self.act, self.eps = env, [[] for _ in range(env.n)], [[] for _ in range(env.n)], []

  def __call__(self, states_before: np.ndarray, action: np.ndarray, done: np.ndarray) -> None:
    o = self.env.sim.observe(states_before)
    for j in range(self.env.n):
      self.obs[j].append(o[j])
      self.act[j].append(np.clip(action[j], -1, 1).astype(np.float32))
      if done[j]:
        self.eps.append((np.stack(self.obs[j]), np.stack(self.act[j])))
        self.obs[j], self.act[j] = [], []

  def save(self, path: str, upto_episode: int, keep: int = 0, seed: int = 0, max_steps: int = 0) -> int:
    """The episodes before `upto_episode`: a uniform random subset (in order) of at most `keep`
    episodes and `max_steps` steps (0: no bound)."""
    eps = subsample_episodes(self.eps[:upto_episode], keep, max_steps, seed)
    if not eps:
      return 0
    np.savez_compressed(
      path + ".tmp.npz",
      observations=np.concatenate([e[0] for e in eps]),
      actions=np.concatenate([e[1] for e in eps]),
      episode_ends=np.cumsum([len(e[0]) for e in eps]),
    )
    os.replace(path + ".tmp.npz", path)
    return len(eps)


def _policy_name(robot: str) -> str:
  """The name a robot's policies are saved and found under: the catalogue name, or a file's model name
  (what `collect --robot FILE` looks them up by)."""
  from westworld_jax.robots import catalogue  # pylint: disable=import-outside-toplevel

  return catalogue.user_robot(robot).name


def train_levels(
  robot: str,
  cfg: ppo.PPOConfig,
  seed: int = 0,
  out: str | None = None,
  snapshots: int = 20,
  eval_episodes: int = 10,
  progress: bool = True,
  replay_episodes: int = REPLAY_EPISODES,
  replay_steps: int = REPLAY_STEPS,
  generic: rl_env.GenericReward = rl_env.GenericReward(),
) -> list[dict]:
  """Trains, evaluates `snapshots` snapshots, saves random / medium / expert and replay.npz; rows.
  `generic`: the reward of robots without a gymnasium definition."""
  out = policy_root(out)
  source, robot = robot, _policy_name(robot)  # a user's MJCF saves under its model name, never its path
  env = rl_env.VecEnv(source, cfg.num_envs, seed=seed, generic=generic)
  eval_env = rl_env.VecEnv(source, min(eval_episodes, 10), seed=seed + 10_000, generic=generic)
  recorder = _Recorder(env)
  per_update = cfg.num_envs * cfg.steps_per_env
  updates = max(1, cfg.total_steps // per_update)
  every = max(1, updates // snapshots)
  snaps, t0 = [], time.perf_counter()

  def snapshot(step: int, policy: ppo.Policy, row: dict | None) -> None:
    if row is not None and (step // per_update) % every and step // per_update != updates:
      return
    res = ppo.evaluate(policy, eval_env, eval_episodes, seed=seed)
    snaps.append(
      {
        "step": step,
        "policy": policy,
        "episodes_seen": len(recorder.eps),
        "minutes": (time.perf_counter() - t0) / 60,
        **res,
      }
    )

  env.hooks.append(recorder)  # every transition, for the replay level
  init_policy = ppo.init_policy(env.num_obs, env.num_act, cfg, seed)
  snapshot(0, init_policy, None)
  policy, _ = ppo.train(env, cfg, seed=seed, progress=progress, callback=snapshot)
  minutes = (time.perf_counter() - t0) / 60
  expert = max(snaps[1:], key=lambda s: s["return_mean"])
  target = snaps[0]["return_mean"] + MEDIUM_FRACTION * (expert["return_mean"] - snaps[0]["return_mean"])
  medium = min((s for s in snaps[1:] if s["step"] <= expert["step"]), key=lambda s: abs(s["return_mean"] - target))
  rows = []
  for level, s in (("random", snaps[0]), ("medium", medium), ("expert", expert)):
    meta = {
      "robot": robot,
      "source": source,
      "level": level,
      "num_obs": env.num_obs,
      "train_step": s["step"],
      "seed": seed,
      "return_mean": s["return_mean"],
      "return_std": s["return_std"],
      "episodes": s["episodes"],
      "length_mean": s["length_mean"],
      "ppo": dataclasses.asdict(cfg),
      "reward": "gymnasium v5" if env.spec else {"generic": dataclasses.asdict(generic)},
    }
    save_policy(policy_dir(robot, level, out), s["policy"], meta)
    rows.append(
      {k: meta[k] for k in ("robot", "level", "return_mean", "return_std", "episodes", "length_mean")}
      | {"train_step": s["step"], "train_minutes": round(s["minutes"] if level != "random" else 0.0, 2)}
    )
  n_replay = recorder.save(
    os.path.join(out, robot, "replay.npz"), medium["episodes_seen"], replay_episodes, seed, replay_steps
  )
  rows.append(
    {
      "robot": robot,
      "level": "replay",
      "episodes": n_replay,
      "buffer_episodes": medium["episodes_seen"],
      "train_step": medium["step"],
      "train_minutes": round(minutes, 2),
    }
  )
  env.close()
  eval_env.close()
  return rows


def merge_results(path: str, rows: list[dict]) -> None:
  """One row per (robot, level) in {"rows": [...]}, atomically."""
  old = []
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)["rows"]
  keys = {(r["robot"], r["level"]) for r in rows}
  merged = [r for r in old if (r["robot"], r["level"]) not in keys] + rows
  merged.sort(key=lambda r: (r["robot"], (LEVELS + ("replay",)).index(r["level"])))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump({"rows": merged}, f, indent=1)
  os.replace(path + ".tmp", path)


def main(argv):
  del argv
  cfg = ppo.PPOConfig(total_steps=_STEPS.value, num_envs=_NUM_ENVS.value)
  generic = rl_env.GenericReward(forward_weight=_FORWARD_WEIGHT.value, healthy_reward=_HEALTHY_REWARD.value)
  rows = train_levels(
    _ROBOT.value,
    cfg,
    _SEED.value,
    _OUT.value,
    eval_episodes=_EVAL_EPISODES.value,
    replay_episodes=_REPLAY_EPISODES.value,
    replay_steps=_REPLAY_STEPS.value,
    generic=generic,
  )
  if _RESULTS.value:
    merge_results(_RESULTS.value, rows)
  for r in rows:
    print(json.dumps(r))


if __name__ == "__main__":
  _ROBOT = flags.DEFINE_string(
    "robot", None, "Catalogue robot, or an MJCF/URDF path (saved under its model name), to train for.", required=True
  )
  _STEPS = flags.DEFINE_integer("steps", 1_000_000, "Environment steps of PPO.")
  _NUM_ENVS = flags.DEFINE_integer("num_envs", 16, "Environments stepped together.")
  _SEED = flags.DEFINE_integer("seed", 0, "Seed (environments, initialisation, sampling).")
  _EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 10, "Evaluation episodes per snapshot.")
  _REPLAY_EPISODES = flags.DEFINE_integer(
    "replay_episodes",
    REPLAY_EPISODES,
    "Episodes of the training run kept as the replay level (0: all up to the medium snapshot).",
  )
  _REPLAY_STEPS = flags.DEFINE_integer(
    "replay_steps", REPLAY_STEPS, "At most this many steps in the replay level (0: no bound)."
  )
  _FORWARD_WEIGHT = flags.DEFINE_float(
    "forward_weight",
    rl_env.GenericReward.forward_weight,
    "Generic reward (robots without a gymnasium reward): weight of the forward velocity.",
  )
  _HEALTHY_REWARD = flags.DEFINE_float(
    "healthy_reward", rl_env.GenericReward.healthy_reward, "Generic reward: bonus per step while the root stays up."
  )
  _OUT = flags.DEFINE_string("out", None, "Policy directory (default: westworld_jax/robots/policies).")
  _RESULTS = flags.DEFINE_string(
    "results", "", "JSON table to merge the rows into, e.g. benchmarks/results/behaviour_policies.json."
  )
  cli.run(main)
