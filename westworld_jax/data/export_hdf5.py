"""A corpus environment as one HDF5 file in D4RL's layout, to take generated data elsewhere.

  python -m westworld_jax.data.export_hdf5 --corpus corpus/cpu --env hopper-policy_expert \
      --out hopper-policy_expert.hdf5 [--split val|train|all]

Writes `observations` [N, Co] and `actions` [N, Ca] (float32, the robot's channel order, physical
units; act[t] is taken at obs[t]), `terminals` [N] (all False: the corpus does not record why an
episode ended) and `timeouts` [N] (True at each episode's last step), the episodes one after the
other; attributes name the robot, behaviour, split and channel names. The importer
(data/importers.py) and westworld_jax.read_episodes read it back episode for episode. `--split`
picks the environment's held-out episodes (val, the default: what evaluation scores), its
training episodes or all. Written to a temporary file and renamed into place.
"""

from __future__ import annotations

import os

from absl import flags
import numpy as np

from westworld_jax import cli
from westworld_jax.data import shards

SPLITS = ("val", "train", "all")


def export(env_dir: str, out: str, split: str = "val") -> dict:
  """Writes the environment's episodes of `split` to `out` (D4RL layout); returns a summary."""
  import h5py  # pylint: disable=import-outside-toplevel

  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  meta = shards.verify_env(env_dir)
  eps = shards.read_episodes(env_dir, split, meta)
  if not eps:
    raise shards.CorpusError(f"{env_dir} has no {split} episodes (it has {len(meta['episodes'])} in all)")
  obs = [np.asarray(ep["obs"], np.float32) for ep in eps]
  act = [np.asarray(ep["act"], np.float32) for ep in eps]
  ends = np.cumsum([len(o) for o in obs])
  n = int(ends[-1])
  timeouts = np.zeros(n, bool)
  timeouts[ends - 1] = True
  tmp = out + ".tmp"
  with h5py.File(tmp, "w") as f:
    f["observations"] = np.concatenate(obs)
    f["actions"] = np.concatenate(act)
    f["terminals"] = np.zeros(n, bool)
    f["timeouts"] = timeouts
    robot = meta["robot"]
    f.attrs.update(
      robot=robot["name"],
      env=meta["env"],
      behaviour=str(meta.get("behaviour", "")),
      split=split,
      dt=float(robot.get("dt", 0.0)),
      obs_channels=[c["name"] for c in robot["obs_channels"]],
      act_channels=[c["name"] for c in robot["act_channels"]],
    )
  os.replace(tmp, out)
  return {"episodes": len(eps), "steps": n, "robot": meta["robot"]["name"], "out": out}


def main(argv):
  del argv
  env_dir = os.path.join(_CORPUS.value, _ENV.value)
  s = export(env_dir, _OUT.value or f"{_ENV.value}.hdf5", _SPLIT.value)
  print(f"wrote {s['episodes']} episodes ({s['steps']} steps) of robot '{s['robot']}' to {s['out']}")


if __name__ == "__main__":
  _CORPUS = flags.DEFINE_string("corpus", "corpus/cpu", "Corpus directory.")
  _ENV = flags.DEFINE_string("env", None, "Environment name (directory under --corpus).", required=True)
  _OUT = flags.DEFINE_string("out", "", "Output .hdf5 (default: <env>.hdf5).")
  _SPLIT = flags.DEFINE_enum("split", "val", list(SPLITS), "Which episodes: held-out (val), train or all.")
  cli.run(main)
