"""Behaviour-policy training: batched environments with gymnasium's rewards and PPO."""

import json

import numpy as np
import pytest

from westworld_jax.data import ppo, rl_env


def test_hopper_reward_and_termination_follow_gymnasium_v5():
  env = rl_env.VecEnv("hopper", 4, seed=0)
  obs = env.reset()
  assert obs.shape == (4, 11) and env.dt == pytest.approx(0.008)
  x0 = env.states[:, env.sim.layout.qpos][:, 0].copy()
  a = np.full((4, 3), 0.5)
  _, r, term, trunc, _ = env.step(a)
  x1 = env.states[:, env.sim.layout.qpos][:, 0]
  np.testing.assert_allclose(r, (x1 - x0) / 0.008 + 1.0 - 1e-3 * 3 * 0.25, rtol=1e-4, atol=1e-5)
  assert not term.any() and not trunc.any()
  # Falling over ends the episode (height below 0.7) and resets that copy.
  for _ in range(200):
    _, _, term, _, final = env.step(np.zeros((4, 3)))
    if term.any():
      break
  assert term.any()


@pytest.mark.parametrize("robot", ["dmc_walker", "dmc_hopper"])
def test_generic_reward_moves_along_world_x(robot):
  """The generic locomotion reward pays for the root's x velocity, whatever the order of the planar
  root's slide joints (dm_control's walker lists rootz first, its hopper rootx)."""
  env = rl_env.VecEnv(robot, 1, seed=0)
  env.reset()
  x = next(env.model.jnt_qposadr[j] for j in range(env.model.njnt) if env.model.joint(j).name == "rootx")
  x0 = env.states[0, env.sim.layout.qpos][x]
  _, r, _, _, _ = env.step(np.zeros((1, env.num_act)))
  x1 = env.states[0, env.sim.layout.qpos][x]
  np.testing.assert_allclose(r[0], (x1 - x0) / env.dt + 1.0, rtol=1e-4, atol=1e-5)
  env.close()


def test_same_seed_same_episodes():
  runs = []
  for _ in range(2):
    env = rl_env.VecEnv("gym_half_cheetah", 3, seed=7)
    rng = np.random.default_rng(0)
    obs = [env.reset()] + [env.step(rng.uniform(-1, 1, (3, 6)))[0] for _ in range(20)]
    runs.append(np.stack(obs))
  np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.timeout(240)
def test_ppo_learns_to_balance_the_inverted_pendulum():
  """16k steps of PPO: random actions keep the pole up ~5 steps; the trained policy far longer."""
  cfg = ppo.PPOConfig(total_steps=16384, num_envs=8)
  policy, rows = ppo.train(rl_env.VecEnv("gym_inverted_pendulum", 8, seed=0), cfg, seed=0, progress=False)
  assert len(rows) == 16 and rows[-1]["step"] == 16384
  random = rl_env.VecEnv("gym_inverted_pendulum", 8, seed=1)
  rng, rets, ret = np.random.default_rng(0), [], np.zeros(8)
  random.reset()
  while len(rets) < 16:
    _, r, term, trunc, _ = random.step(rng.uniform(-1, 1, (8, 1)))
    ret += r
    rets += list(ret[term | trunc])
    ret[term | trunc] = 0
  trained = ppo.evaluate(policy, rl_env.VecEnv("gym_inverted_pendulum", 8, seed=1), 8)
  assert trained["return_mean"] > 10 * np.mean(rets) and trained["return_mean"] > 100


@pytest.fixture(scope="module")
def pendulum_policies(tmp_path_factory):
  """random / medium / expert / replay of the inverted pendulum, trained in a few seconds."""
  from westworld_jax.data import train_policy

  root = str(tmp_path_factory.mktemp("policies"))
  rows = train_policy.train_levels(
    "gym_inverted_pendulum",
    ppo.PPOConfig(total_steps=8192, num_envs=8),
    seed=0,
    out=root,
    snapshots=8,
    eval_episodes=8,
    progress=False,
  )
  return root, {r["level"]: r for r in rows}


def test_levels_are_ordered_and_saved(pendulum_policies, tmp_path):
  from westworld_jax.data import train_policy

  root, rows = pendulum_policies
  assert rows["random"]["return_mean"] < rows["medium"]["return_mean"] <= rows["expert"]["return_mean"]
  assert rows["replay"]["episodes"] > 0
  policy, meta = train_policy.load_policy("gym_inverted_pendulum", "expert", root)
  assert meta["return_mean"] == rows["expert"]["return_mean"]
  again = ppo.evaluate(policy, rl_env.VecEnv("gym_inverted_pendulum", 8, seed=10_000), 8, seed=0)
  assert again["return_mean"] == pytest.approx(meta["return_mean"])  # the saved policy is the evaluated one
  with pytest.raises(train_policy.PolicyNotFoundError, match="train_policy --robot hopper"):
    train_policy.load_policy("hopper", "expert", str(tmp_path))
  train_policy.merge_results(str(tmp_path / "r.json"), list(rows.values()))
  train_policy.merge_results(str(tmp_path / "r.json"), [rows["expert"]])
  with open(tmp_path / "r.json") as f:
    assert [r["level"] for r in json.load(f)["rows"]] == ["random", "medium", "expert", "replay"]


def test_collection_with_a_saved_policy_is_deterministic(pendulum_policies, monkeypatch):
  from westworld_jax.data import episodes, simulate, train_policy
  from westworld_jax.robots import catalogue

  root, _ = pendulum_policies
  monkeypatch.setenv(train_policy.POLICY_DIR_ENV, root)
  checks = simulate.EpisodeChecks(min_length=5)
  out = []
  for _ in range(2):
    with simulate.Simulator(catalogue.load("gym_inverted_pendulum")) as sim:
      eps, counts = episodes.generate(
        sim, "policy_expert", catalogue.BALANCE, episodes.episode_rng(0, "x", 0), 4, 60, checks
      )
    out.append(eps)
  assert counts.kept == 4
  for a, b in zip(*out):
    np.testing.assert_array_equal(a["obs"], b["obs"])
    np.testing.assert_array_equal(a["act"], b["act"])
  # replay: shards read disjoint episodes of the training run
  with simulate.Simulator(catalogue.load("gym_inverted_pendulum")) as sim:
    first, _ = episodes.generate(sim, "policy_replay", catalogue.BALANCE, None, 3, 60, checks, first_episode=0)
    second, _ = episodes.generate(sim, "policy_replay", catalogue.BALANCE, None, 3, 60, checks, first_episode=3)
  keys = {e["obs"].tobytes() for e in first}
  assert len(keys) == 3 and not keys & {e["obs"].tobytes() for e in second}


def test_policy_episodes_end_where_their_environment_does():
  """gymnasium's HalfCheetah never terminates, so its policies' episodes run whole even where the
  cheetah ends up on its back (below the collector's fall height); a hopper policy's episodes end
  when the hopper falls, as in its environment."""
  from westworld_jax.data import episodes, simulate
  from westworld_jax.robots import catalogue

  checks = simulate.EpisodeChecks(min_length=1, fall_fraction=0.4)
  with simulate.Simulator(catalogue.load("gym_half_cheetah")) as sim:
    eps, counts = episodes.generate(sim, "policy_expert", catalogue.LOCOMOTION, np.random.default_rng(0), 2, 96, checks)
  assert counts.fell == 0 and [len(e["obs"]) for e in eps] == [96, 96]
  with simulate.Simulator(catalogue.load("hopper")) as sim:
    _, counts = episodes.generate(sim, "policy_random", catalogue.LOCOMOTION, np.random.default_rng(0), 4, 300, checks)
  assert counts.fell > 0


def test_held_out_policy_environments_never_reach_pretraining():
  from westworld_jax.robots import catalogue

  names = {e.name for e in catalogue.environments_in(catalogue.PRETRAIN)}
  held = {e.name for e in catalogue.environments() if e.robot in ("hopper", "walker2d")}
  assert {"hopper-policy_expert", "walker2d-policy_medium", "hopper-policy_replay"} <= held
  assert not names & held
  assert all(e.split == catalogue.ZERO_SHOT for e in catalogue.environments() if e.name in held)


def test_replay_subsample_bounds_episodes_and_steps_and_keeps_order():
  from westworld_jax.data.train_policy import subsample_episodes

  eps = [(np.full((n, 2), i, np.float32), np.zeros((n, 1), np.float32)) for i, n in enumerate([30, 5, 50, 20, 40, 10])]
  sub = subsample_episodes(eps, keep=4, max_steps=60, seed=3)
  ids = [int(e[0][0, 0]) for e in sub]
  assert len(sub) <= 4 and sum(len(e[0]) for e in sub) <= 60 and ids == sorted(ids) and ids
  assert [int(e[0][0, 0]) for e in subsample_episodes(eps, keep=4, max_steps=60, seed=3)] == ids
  assert subsample_episodes(eps) == eps  # no bounds: every episode
