"""Per-channel min-max normalisation to [0, 1], clipped (upstream); a constant channel (span 0) maps
to 0.5. One implementation for the input pipeline (NumPy) and for predicting and planning with a
world model (jnp).

`Normaliser` holds the min-max a world model was trained with for one robot. Its stats come from a
checkpoint's data_stats (`pick_stats`), a corpus environment's metadata.json (`stats_from_corpus`),
the user's own trajectories (`stats_of`) or, for a robot nothing was recorded for, short OU-noise
rollouts in C MuJoCo (`stats_from_rollouts`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

MIN_SPAN = 1e-8  # a channel whose training range is narrower than this is treated as constant


def span(lo, hi) -> np.ndarray:
  """hi - lo per channel, 0 for a constant channel."""
  s = np.asarray(hi, np.float32) - np.asarray(lo, np.float32)
  return np.where(s > MIN_SPAN, s, 0.0).astype(np.float32)


def normalise(x, lo, span_, xp=np):
  """Physical units -> [0, 1] (clipped); constant channels -> 0.5. xp: numpy or jax.numpy."""
  safe = xp.where(span_ > 0, span_, 1.0)
  return xp.where(span_ > 0, xp.clip((x - lo) / safe, 0.0, 1.0), 0.5)


def denormalise(v, lo, span_):
  """[0, 1] -> physical units (a constant channel gives its value)."""
  return lo + v * span_


@dataclasses.dataclass(frozen=True)
class Normaliser:
  """The per-channel min-max a world model was trained with (data/normalise.py, as the input pipeline)."""

  obs_min: np.ndarray
  obs_max: np.ndarray
  act_min: np.ndarray
  act_max: np.ndarray

  @classmethod
  def from_stats(
    cls, stats: dict, num_obs: int | None = None, num_act: int | None = None, where: str = "stats"
  ) -> "Normaliser":
    missing = {"obs_min", "obs_max", "act_min", "act_max"} - set(stats)
    if missing:
      raise ValueError(
        f"{where}: normalisation stats lack {sorted(missing)} (expected a corpus metadata['stats'] dict)"
      )
    n = cls(*(np.asarray(stats[k], np.float32) for k in ("obs_min", "obs_max", "act_min", "act_max")))
    if num_obs is not None and (len(n.obs_min) != num_obs or len(n.act_min) != num_act):
      raise ValueError(
        f"{where}: stats have {len(n.obs_min)} obs / {len(n.act_min)} act channels but the "
        f"robot has {num_obs} / {num_act}: the stats belong to another robot"
      )
    return n


def stats_from_rollouts(robot, episodes: int = 16, steps: int = 200, seed: int = 0) -> dict:
  """Per-channel min/max of OU-noise rollouts (the corpus's 'ou' behaviour) of a Robot."""
  from westworld_jax.data import behaviours as behaviour  # pylint: disable=import-outside-toplevel
  from westworld_jax.data import simulate  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  with simulate.Simulator(robot) as sim:
    start = sim.initial_states(rng, episodes)
    ctrl = behaviour.to_ctrl(robot, behaviour.open_loop("ou", robot, rng, episodes, steps))
    states, _ = sim.run(start, ctrl)
    obs = np.concatenate([sim.observe(start)[:, None], sim.observe(states)], axis=1)
  obs = obs[np.isfinite(obs).all(axis=(1, 2))]
  if not len(obs):
    raise ValueError(f"every OU rollout of '{robot.name}' diverged; give stats from a corpus instead")
  return stats_of(obs, ctrl)


def stats_from_corpus(env_dir: str) -> dict:
  from westworld_jax.data import shards  # pylint: disable=import-outside-toplevel

  return shards.load_metadata(env_dir)["stats"]


def pick_stats(data_stats: dict, robot, env: str = "") -> tuple[str, dict]:
  """(env name, stats) for a Robot from a checkpoint's data_stats.

  data_stats maps environment -> {"robot", "stats", "obs_channels", "act_channels"} (as
  inference.load_for_inference returns; a bare stats dict is accepted too). Picks `env` if
  given, else the robot's '-mpc' environment, else its first one; ("", {}) if the model never saw
  the robot (zero-shot: the caller falls back to other stats).
  """
  obs_names, robot = [c.name for c in robot.obs_channels], robot.name

  def entry(name):
    v = data_stats[name]
    stats = v.get("stats", v)
    names = v.get("obs_channels")
    if names is not None and list(names) != obs_names:
      raise ValueError(
        f"checkpoint environment '{name}' has observation channels {names}, robot '{robot}' has "
        f"{obs_names}: pick stats of this robot (--config.stats.env)"
      )
    return name, stats

  if env:
    if env not in data_stats:
      raise KeyError(f"the checkpoint has no normalisation stats for environment '{env}'; it has {sorted(data_stats)}")
    return entry(env)
  mine = sorted(
    k for k, v in data_stats.items() if (isinstance(v, dict) and v.get("robot") == robot) or k.startswith(robot + "-")
  )
  for k in mine:
    if k.endswith("-mpc"):
      return entry(k)
  if mine:
    return entry(mine[0])
  return "", {}


def stats_of(obs_nc, act_nc) -> dict:
  """Min-max stats of trajectories: obs [..., Co] and act [..., Ca] (any leading axes)."""
  obs, act = np.asarray(obs_nc, np.float64), np.asarray(act_nc, np.float64)
  obs, act = obs.reshape(-1, obs.shape[-1]), act.reshape(-1, act.shape[-1])
  if not (np.isfinite(obs).all() and np.isfinite(act).all()):
    raise ValueError("normalisation data holds NaN or inf: pass finite trajectories")
  return {
    "obs_min": obs.min(0).tolist(),
    "obs_max": obs.max(0).tolist(),
    "act_min": act.min(0).tolist(),
    "act_max": act.max(0).tolist(),
  }
