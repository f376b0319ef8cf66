"""Behaviour-policy training: batched environments with gymnasium's rewards and PPO."""
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
