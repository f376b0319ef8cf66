"""Import outside trajectories (D4RL/Minari-style HDF5 or .npz) plus the robot's MJCF into a corpus.

  python -m westworld_jax.data.importers --robot my_robot.xml --data hopper-medium.hdf5 \
      --out corpus/mine --name hopper-medium [--split pretrain]

The file holds flat arrays `observations` [N, Co], `actions` [N, Ca] and episode ends `terminals`
and/or `timeouts` [N] (D4RL layout; Minari-style `episode_ends` indices are accepted too). Columns
must be the robot's channels in the robot's order (`python -m westworld_jax.robots describe FILE`
prints them; D4RL's gym locomotion observations match). Episodes with NaN/inf are dropped and
counted; nothing is silently padded or cut.
"""
from __future__ import annotations

import os

from absl import app, flags
import numpy as np

from westworld_jax.data import shards
from westworld_jax.robots import catalogue
from westworld_jax.robots.robot import Robot
from westworld_jax import cli


def read_arrays(path: str) -> dict[str, np.ndarray]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"data file '{path}' does not exist")
  if path.endswith((".hdf5", ".h5")):
    import h5py
    with h5py.File(path, "r") as f:
      return {k: np.asarray(f[k]) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
  if path.endswith(".npz"):
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  raise ValueError(f"'{path}': expected an .hdf5/.h5 (D4RL/Minari style) or .npz file")


def split_episodes(arrays: dict[str, np.ndarray], robot: Robot, where: str) -> list[dict]:
  for key in ("observations", "actions"):
    if key not in arrays:
      raise ValueError(f"{where} has no '{key}' array (found {sorted(arrays)}); D4RL layout expected")
  obs, act = np.asarray(arrays["observations"]), np.asarray(arrays["actions"])
  if obs.ndim != 2 or act.ndim != 2 or len(obs) != len(act):
    raise ValueError(f"{where}: observations {obs.shape} and actions {act.shape} must be [N, C] with equal N")
  if obs.shape[1] != robot.num_obs:
    raise ValueError(f"{where} has {obs.shape[1]} observation columns but robot '{robot.name}' has "
                     f"{robot.num_obs} observation channels; reorder/select columns to match "
                     "`python -m westworld_jax.robots describe` (positions without global x/y, then velocities)")
  if act.shape[1] != robot.num_act:
    raise ValueError(f"{where} has {act.shape[1]} action columns but robot '{robot.name}' has "
                     f"{robot.num_act} actuators")
  n = len(obs)
  if "episode_ends" in arrays:
    ends = np.asarray(arrays["episode_ends"], np.int64)
  else:
    done = np.zeros(n, bool)
    for key in ("terminals", "timeouts", "dones"):
      if key in arrays:
        done |= np.asarray(arrays[key]).astype(bool).reshape(-1)[:n]
    ends = np.flatnonzero(done) + 1
  ends = np.unique(np.concatenate([ends[(ends > 0) & (ends < n)], [n]]))
  starts = np.concatenate([[0], ends[:-1]])
  return [{"obs": obs[s:e].astype(np.float32), "act": act[s:e].astype(np.float32)} for s, e in zip(starts, ends)]


def import_file(robot_source: str, data_path: str, out_dir: str, name: str, split: str = "pretrain",
                behaviour: str = "imported", episodes_per_shard: int = 64, min_length: int = 2,
                val_fraction: float = 0.1) -> dict:
  """Writes `out_dir/name/` in the corpus format and returns its metadata."""
  if split not in catalogue.SPLITS:
    raise ValueError(f"split must be one of {catalogue.SPLITS}, got '{split}'")
  robot = catalogue.load(robot_source)
  episodes = split_episodes(read_arrays(data_path), robot, data_path)
  counts = {"kept": 0, "unstable": 0, "too_short": 0}
  good = []
  for ep in episodes:
    if not (np.isfinite(ep["obs"]).all() and np.isfinite(ep["act"]).all()):
      counts["unstable"] += 1
    elif len(ep["obs"]) < min_length:
      counts["too_short"] += 1
    else:
      counts["kept"] += 1
      good.append(ep)
  env_dir = os.path.join(out_dir, name)
  num_shards = max(1, -(-len(good) // episodes_per_shard))
  for s in range(num_shards):
    part = good[s * episodes_per_shard:(s + 1) * episodes_per_shard]
    shards.write_shard(env_dir, s, part, {"counts": counts if s == 0 else {}, "source": os.path.abspath(data_path)})
  return shards.finalize(env_dir, name, robot, behaviour, split, num_shards, val_fraction)


def main(argv):
  del argv
  for f in (_ROBOT, _DATA, _NAME):
    if not f.value:
      raise app.UsageError(f"--{f.name} is required")
  meta = import_file(_ROBOT.value, _DATA.value, _OUT.value, _NAME.value, _SPLIT.value)
  print(f"imported {meta['counts']} episodes into {os.path.join(_OUT.value, _NAME.value)}")


if __name__ == "__main__":
  # Flags only when run as a program: importing this module (evaluate does) defines none.
  _ROBOT = flags.DEFINE_string("robot", None, "Robot: catalogue name or MJCF/URDF path.")
  _DATA = flags.DEFINE_string("data", None, "HDF5 (D4RL/Minari layout) or .npz file.")
  _OUT = flags.DEFINE_string("out", "corpus/imported", "Corpus directory to write into.")
  _NAME = flags.DEFINE_string("name", None, "Environment name (directory under --out).")
  _SPLIT = flags.DEFINE_enum("split", "pretrain", list(catalogue.SPLITS), "Which split the data belongs to.")
  cli.run(main)
