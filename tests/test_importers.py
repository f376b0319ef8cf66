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
  with pytest.raises(ValueError, match="no 'actions' array"):
    importers.import_file("hopper", str(path), str(tmp_path), "x")
  np.savez(path, obs=obs, actions=act)
  with pytest.raises(ValueError, match="no 'observations' array and no qpos/qvel"):
    importers.import_file("hopper", str(path), str(tmp_path), "x")


def test_minari_episode_groups_and_raw_qpos_qvel_read_as_the_flat_layout(tmp_path):
  r = catalogue.load("hopper")
  rng = np.random.default_rng(1)
  lengths = (30, 45)
  qpos = [rng.normal(size=(t + 1, r.model.nq)) for t in lengths]
  qvel = [rng.normal(size=(t + 1, r.model.nv)) for t in lengths]
  act = [rng.uniform(-1, 1, (t, r.num_act)) for t in lengths]
  minari = tmp_path / "minari.hdf5"
  with h5py.File(minari, "w") as f:
    for i in (1, 0):  # group order on disk is not episode order
      g = f.create_group(f"episode_{i}")
      g["observations"], g["actions"] = r.obs_from_qpos_qvel(qpos[i], qvel[i]), act[i]
      g["rewards"] = np.zeros(lengths[i])
  eps = importers.split_episodes(importers.read_arrays(str(minari)), r, "minari")
  assert [len(e["obs"]) for e in eps] == list(lengths)  # the final observation (no action after it) dropped
  for e, q, v, a in zip(eps, qpos, qvel, act):
    np.testing.assert_allclose(e["obs"], r.obs_from_qpos_qvel(q, v)[:-1], rtol=1e-6)
    np.testing.assert_allclose(e["act"], a, rtol=1e-6)
  raw = tmp_path / "d4rl_infos.hdf5"  # D4RL keeps the simulator state under infos/
  with h5py.File(raw, "w") as f:
    f["infos/qpos"] = np.concatenate([q[:-1] for q in qpos])
    f["infos/qvel"] = np.concatenate([v[:-1] for v in qvel])
    f["actions"] = np.concatenate(act)
    f["timeouts"] = np.isin(np.arange(sum(lengths)), np.cumsum(lengths) - 1)
  eps_raw = importers.split_episodes(importers.read_arrays(str(raw)), r, "raw")
  for a, b in zip(eps, eps_raw):
    np.testing.assert_allclose(a["obs"], b["obs"], rtol=1e-6)
  with h5py.File(raw, "a") as f:
    del f["infos/qvel"]
    f["infos/qvel"] = np.zeros((sum(lengths), r.model.nv + 1))
  with pytest.raises(ValueError, match=r"must be \[N, 6\] / \[N, 6\]"):
    importers.split_episodes(importers.read_arrays(str(raw)), r, "raw")


def test_the_datas_control_period_sets_the_robots_frame_skip(tmp_path):
  obs, act, timeouts = _d4rl_like(n_eps=2)
  r = catalogue.load("hopper")
  path = tmp_path / "data.hdf5"
  with h5py.File(path, "w") as f:
    f["observations"], f["actions"], f["timeouts"] = obs, act, timeouts
    f.attrs["dt"] = 2 * r.dt  # recorded at half the robot's default control rate
  meta = importers.import_file("hopper", str(path), str(tmp_path / "c"), "a", history=10)
  assert meta["robot"]["dt"] == pytest.approx(2 * r.dt)
  with pytest.raises(ValueError, match="states dt=.* but --dt="):
    importers.import_file("hopper", str(path), str(tmp_path / "c"), "b", history=10, dt=r.dt)
  np.savez(tmp_path / "d.npz", observations=obs, actions=act, timeouts=timeouts)  # says nothing: --dt decides
  meta = importers.import_file("hopper", str(tmp_path / "d.npz"), str(tmp_path / "c"), "c", history=10, dt=3 * r.dt)
  assert meta["robot"]["dt"] == pytest.approx(3 * r.dt)
  with pytest.raises(ValueError, match="not a whole number of robot 'hopper''s simulation steps"):
    importers.import_file("hopper", str(tmp_path / "d.npz"), str(tmp_path / "c"), "e", history=10, dt=1.5 * r.dt / 4)
