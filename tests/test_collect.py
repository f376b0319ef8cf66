"""Physics collection: deterministic, resumable, bad episodes dropped and counted, never written."""

import glob
import os

import numpy as np
import pytest

from westworld_jax.data import collect, shards
from experiments import data as data_config


def _cfg(tmp_path, envs, **kw):
  c = data_config.get_config("tiny")
  c.corpus_dir = str(tmp_path)
  c.environments = envs
  c.episodes_per_env = 4
  c.episodes_per_shard = 2
  c.episode_len = 80
  c.nthread = 2
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _read_all(corpus, env):
  d = os.path.join(corpus, env)
  meta = shards.load_metadata(d)
  return meta, [ep for s in range(meta["num_shards"]) for ep in shards.read_shard(d, s)]


ENVS = ("dmc_cheetah-ou", "dmc_reacher-pd_targets", "dmc_cartpole-mpc")


def test_collect_is_deterministic_and_resumable(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  collect.collect(_cfg(a, ENVS))
  collect.collect(_cfg(b, ENVS))
  for env in ENVS:
    ma, ea = _read_all(a, env)
    mb, eb = _read_all(b, env)
    assert ma["stats"] == mb["stats"] and len(ea) == len(eb) > 0
    for x, y in zip(ea, eb):
      np.testing.assert_array_equal(x["obs"], y["obs"])
      np.testing.assert_array_equal(x["act"], y["act"])
    assert np.isfinite(ea[0]["obs"]).all()
    assert ea[0]["obs"].shape[1] == len(ma["robot"]["obs_channels"])
  # Interrupt: lose one finished shard (marker gone, as if killed mid-write) and rerun.
  victim = os.path.join(a, ENVS[0], "shard-00001.json")
  os.remove(victim)
  before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(a, ENVS[0], "shard-*.json"))}
  collect.collect(_cfg(a, ENVS))
  assert os.path.exists(victim)
  for p, t in before.items():
    assert os.path.getmtime(p) == t  # finished shards were skipped
  _, again = _read_all(a, ENVS[0])
  _, ref = _read_all(b, ENVS[0])
  for x, y in zip(again, ref):
    np.testing.assert_array_equal(x["obs"], y["obs"])


def test_unstable_episodes_are_dropped_and_counted(tmp_path):
  cfg = _cfg(tmp_path, ("dmc_cheetah-ou",))
  cfg.checks.max_abs_qvel = 1e-3  # everything "explodes"
  with pytest.raises(shards.CorpusError, match="no episode survived"):
    collect.collect(cfg)


def test_falls_end_episodes(tmp_path):
  meta = collect.collect(_cfg(tmp_path, ("hopper-gait",), episodes_per_env=6, episode_len=200))[0]
  c = meta["counts"]
  assert c["kept"] + c["too_short"] + c["unstable"] == 6
  assert c["fell"] > 0  # open-loop gaits topple a hopper
  assert all(e["length"] <= 200 for e in meta["episodes"])


def test_non_finite_episode_is_never_written(tmp_path):
  bad = {"obs": np.array([[0.0, np.nan]]), "act": np.zeros((1, 1))}
  with pytest.raises(shards.CorpusError, match="non-finite"):
    shards.write_shard(str(tmp_path), 0, [bad], {})
  assert not shards.shard_done(str(tmp_path), 0)


def test_missing_corpus_says_how_to_make_it(tmp_path):
  with pytest.raises(shards.CorpusError, match="westworld_jax.data.collect"):
    shards.load_metadata(str(tmp_path / "nothing"))


def test_root_height_of_a_state_matches_the_task_sensor():
  import mujoco
  from westworld_jax.data import simulate
  from westworld_jax.robots import catalogue

  robot = catalogue.load("quad_go1")
  with simulate.Simulator(robot) as sim:
    states = sim.initial_states(np.random.default_rng(0), 3, noise=0.2)
    d = mujoco.MjData(robot.model)
    for s in states:
      mujoco.mj_setState(robot.model, d, s, mujoco.mjtState.mjSTATE_FULLPHYSICS)
      mujoco.mj_forward(robot.model, d)
      assert sim.root_height(s) == pytest.approx(d.sensordata[robot.sensor_adr["root_pos"] + 2], abs=1e-12)


def test_a_quadruped_tipped_on_its_side_has_fallen_though_its_height_is_fine():
  """The fall check is not height-only: a free root that rolls 90 degrees ends the episode at
  that step even while its root stays high; small tilts do not."""
  from westworld_jax.data import simulate
  from westworld_jax.robots import catalogue

  robot = catalogue.load("quad_go1")
  with simulate.Simulator(robot) as sim:
    start = sim.initial_states(np.random.default_rng(0), 1, noise=0.0)[0]
    qa = sim.free_root_qposadr
    assert qa is not None
    states = np.repeat(start[None], 10, axis=0)
    states[:, 0] = start[0] + 0.01 * np.arange(1, 11)  # time moves on
    qpos = states[:, sim.layout.qpos]
    roll = np.radians(np.r_[np.zeros(3), np.full(3, 30.0), np.full(4, 90.0)])  # about body x
    qpos[:, qa + 3 : qa + 7] = np.stack([np.cos(roll / 2), np.sin(roll / 2), 0 * roll, 0 * roll], -1)
    states[:, sim.layout.qpos] = qpos
    h0 = sim.root_height(start)
    sens = np.zeros((10, robot.model.nsensordata))
    sens[:, robot.sensor_adr["root_pos"] + 2] = h0  # the height alone says "standing"
    checks = simulate.EpisodeChecks(max_abs_qvel=1e9, max_tilt_deg=80.0)
    assert simulate.episode_end(sim, start, states, sens, checks, True) == (6, "fell")
    no_tilt = simulate.EpisodeChecks(max_abs_qvel=1e9, max_tilt_deg=0.0)
    assert simulate.episode_end(sim, start, states, sens, no_tilt, True) == (10, "ok")
  assert simulate.tilt_deg(np.array([1.0, 0, 0, 0]), np.array([[np.cos(0.5), 0, np.sin(0.5), 0]]))[0] == pytest.approx(
    57.2958, abs=1e-3
  )  # 1 rad of pitch
