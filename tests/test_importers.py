"""Import of D4RL-style HDF5 / .npz trajectories for a user's robot."""

import h5py
import numpy as np
import pytest

from westworld_jax.data import importers, pipeline, shards
from westworld_jax.robots import catalogue


def _d4rl_like(n_eps=5, T=80, seed=0):
  r = catalogue.load("hopper")
  rng = np.random.default_rng(seed)
  obs = rng.normal(size=(n_eps * T, r.num_obs)).astype(np.float32)
  act = rng.uniform(-1, 1, (n_eps * T, r.num_act)).astype(np.float32)
  timeouts = np.zeros(n_eps * T, bool)
  timeouts[T - 1 :: T] = True
  return obs, act, timeouts


def test_hdf5_import_roundtrip(tmp_path):
  obs, act, timeouts = _d4rl_like()
  obs[100, 3] = np.nan  # episode 1 is bad: dropped and counted
  path = tmp_path / "data.hdf5"
  with h5py.File(path, "w") as f:
    f["observations"], f["actions"], f["timeouts"], f["terminals"] = obs, act, timeouts, np.zeros_like(timeouts)
  meta = importers.import_file("hopper", str(path), str(tmp_path / "corpus"), "hopper-mine", split="zero_shot")
  assert meta["counts"] == {"kept": 4, "unstable": 1, "too_short": 0}
  eps = shards.read_shard(str(tmp_path / "corpus" / "hopper-mine"), 0)
  np.testing.assert_array_equal(eps[0]["obs"], obs[:80])
  np.testing.assert_array_equal(eps[1]["obs"], obs[160:240])
  ds, _ = pipeline.make_dataset(
    pipeline.PipelineConfig(str(tmp_path / "corpus"), ["hopper-mine"], batch_size=2, history=50, horizon=30)
  )
  assert ds[0]["obs"].shape == (2, 80, 16)


def test_npz_with_wrong_channel_count_is_a_clear_error(tmp_path):
  obs, act, timeouts = _d4rl_like()
  path = tmp_path / "data.npz"
  np.savez(path, observations=obs[:, :-1], actions=act, timeouts=timeouts)
  with pytest.raises(ValueError, match="10 observation columns but robot 'hopper' has 11"):
    importers.import_file("hopper", str(path), str(tmp_path), "x")
  np.savez(path, obs=obs)
  with pytest.raises(ValueError, match="no 'observations' array"):
    importers.import_file("hopper", str(path), str(tmp_path), "x")
