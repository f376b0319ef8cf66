"""The paper authors' control protocol (docs/upstream.md, "Control protocol"): the reference-tracking
cost, the expert's episode and policy, their MPPI variant (AR(2) noise, expert initialisation and
tails, step size, control cost, fall penalty) and the experiments/control.py variants.

Everything here runs in process: C MuJoCo and small jitted functions (no MJX program is run).
"""

import os
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from westworld_jax.control import backends, expert, mppi, planners, reference, tasks
from westworld_jax.control.backends import Backend

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
from experiments import control as control_cfg  # noqa: E402


def _episode(tmp_path, task, steps=6, seed=0, name="ref.npz", **extra):
  rng = np.random.default_rng(seed)
  d = {
    "qpos": rng.normal(size=(steps, task.model.nq)),
    "qvel": rng.normal(size=(steps, task.model.nv)),
    "actions": rng.uniform(-1, 1, size=(steps, task.num_act)).astype(np.float32),
  }
  d.update(extra)
  path = str(tmp_path / name)
  np.savez(path, **d)
  return path, d


@pytest.mark.timeout(120)
def test_reference_cost_is_zero_on_the_reference_state_at_its_phase(tmp_path):
  hopper = tasks.make_task("hopper")
  path, d = _episode(tmp_path, hopper)
  ref = reference.load(path, hopper)  # 0.15 on every qpos and qvel entry; root x is not observed
  assert ref.obs.shape == (6, hopper.num_obs) and np.allclose(ref.weights, 0.15)
  cost = jax.jit(ref.cost)
  for p in range(6):
    assert float(cost(jnp.asarray(ref.obs[p]), p)) == 0.0
    assert float(cost(jnp.asarray(ref.obs[(p + 1) % 6]), p)) > 0.1  # another phase's state
  assert float(cost(jnp.asarray(ref.obs[1]), 7)) == 0.0  # 'wrap': phase 7 of 6 rows is row 1
  held = reference.load(path, hopper, phase="hold")
  assert float(jax.jit(held.cost)(jnp.asarray(ref.obs[5]), 40)) == 0.0  # 'hold': the last row
  # The same through the planners' costs: rollout step t from episode step n is compared with row n + t.
  task = hopper.variant(reference=ref)
  obs, u, goal = jnp.asarray(ref.obs[2:5])[None], jnp.zeros((1, 3, 3)), jnp.zeros(tasks.GOAL_DIM)
  base, _, _ = backends.observation_costs(hopper, obs, u, goal)
  at_phase, _, _ = backends.observation_costs(task, obs, u, goal, step=2)
  off_phase, _, _ = backends.observation_costs(task, obs, u, goal, step=3)
  assert np.array_equal(np.asarray(at_phase), np.asarray(base))
  assert bool(jnp.all(off_phase > base + 0.1))
  # Walker2d: the authors' per-entry position weights (root x first, not observed) and the
  # authors' export format (x_ref = [qpos, qvel]).
  walker = tasks.make_task("walker2d")
  wpath, wd = _episode(tmp_path, walker, name="w.npz")
  x_path = str(tmp_path / "x_ref.npz")
  np.savez(x_path, x_ref=np.concatenate([wd["qpos"], wd["qvel"]], 1), actions=wd["actions"])
  pos = (0.0, 10.0, 10.0, 10.0, 1.0, 1.0, 10.0, 1.0, 1.0)
  w = reference.load(x_path, walker, pos_weight=pos, vel_weight=(0.01,), phase="hold")
  assert np.allclose(w.weights, list(pos[1:]) + [0.01] * 9)
  assert np.allclose(w.obs, reference.load(wpath, walker).obs)
  with pytest.raises(reference.ReferenceError, match="do not fit robot 'walker2d'"):
    reference.load(path, walker)  # a hopper episode
  with pytest.raises(reference.ReferenceError, match="give 1 \\(all\\) or 6"):
    reference.load(path, hopper, pos_weight=(1.0, 2.0))


@pytest.mark.timeout(180)
def test_every_backend_plans_from_the_environments_episode_step(tmp_path):
  """The step count travels from the environments into the MJX oracle's, the C oracle's and the
  world model's contexts, and each adds the reference cost at phase step + t."""
  from westworld_jax.control import mujoco_backend, physics
  from westworld_jax.data import normalise
  from westworld_jax.model.world_model import WorldModel

  hopper = tasks.make_task("hopper")
  path, _ = _episode(tmp_path, hopper, steps=50)
  ref = reference.load(path, hopper)
  task = hopper.variant(reference=ref)
  envs = physics.make_envs(task, history=2, physics="mujoco")
  s = envs.reset(jax.random.key(0), 2)
  for _ in range(3):
    s, _ = envs.step(s, jnp.zeros((2, 3)))
  assert np.asarray(s.steps).tolist() == [3, 3]
  u = jax.random.uniform(jax.random.key(1), (2, 4, 5, 3), minval=-1.0, maxval=1.0)  # [env, plan, step, act]
  phase = 3 + np.arange(5)
  # C oracle: the rollouts' own observations, compared with rows 3..7.
  c_ref, c_base = mujoco_backend.MujocoOracle(task, nthread=1), mujoco_backend.MujocoOracle(hopper, nthread=1)
  ctx = jax.vmap(c_ref.context)(s)
  assert np.asarray(ctx.step).tolist() == [3, 3]
  with_ref = np.asarray(jax.vmap(c_ref.step_costs)(ctx, u)[0])
  base = np.asarray(jax.vmap(c_base.step_costs)(jax.vmap(c_base.context)(s), u)[0])
  obs = c_ref.sim.rollout_obs(mujoco_backend.from_bits(np.asarray(s.d.bits)), np.asarray(u))
  tracking = np.sum(ref.weights * (obs - ref.obs[phase]) ** 2, axis=-1)
  assert np.allclose(with_ref - base, tracking, rtol=1e-4, atol=1e-4)

  # World model (a stub predicting its normalised minimum: constant observations).
  class Cfg:
    history, max_window_len = 2, 16

  stub = WorldModel("stub", Cfg(), None, None, lambda params, batch: jnp.zeros_like(batch["obs"]), None)
  stats = {"obs_min": [-1.0] * 11, "obs_max": [1.0] * 11, "act_min": [-1.0] * 3, "act_max": [1.0] * 3}
  norm = normalise.Normaliser.from_stats(stats, 11, 3)
  wm_ref = backends.WorldModelBackend(stub, None, [task], [norm], horizon=5)
  wm_base = backends.WorldModelBackend(stub, None, [hopper], [norm], horizon=5)
  wctx = jax.vmap(wm_ref.context)(s)
  assert np.asarray(wctx.step).tolist() == [3, 3]
  diff = jax.vmap(wm_ref.step_costs)(wctx, u)[0] - jax.vmap(wm_base.step_costs)(wctx, u)[0]
  want = np.sum(ref.weights * (-1.0 - ref.obs[phase]) ** 2, axis=-1)
  assert np.allclose(np.asarray(diff), np.broadcast_to(want, (2, 4, 5)), rtol=1e-4, atol=1e-4)
  # MJX oracle: the same context field (its costs go through the same observation_costs).
  m_state = physics.make_envs(task, physics="mjx").reset(jax.random.key(0), 2)._replace(steps=jnp.full(2, 3))
  assert np.asarray(jax.vmap(backends.OracleBackend(task).context)(m_state).step).tolist() == [3, 3]


class _Flat(Backend):
  """Every plan costs the same: MPPI then averages its samples with equal weights."""

  kind, history, action_dim = "flat", 1, 3

  def context(self, env_state):
    return env_state.steps

  def bounds(self, ctx):
    return -jnp.ones(3), jnp.ones(3)

  def step_costs(self, ctx, u_kha):
    k, h = u_kha.shape[:2]
    return jnp.zeros((k, h)), jnp.ones((k, h), bool), jnp.zeros(k)


class _State(NamedTuple):
  steps: jax.Array


_PAPER = mppi.MPPIConfig(**dict(control_cfg.PAPER_MPPI, samples=4096, horizon=6))


@pytest.mark.timeout(120)
def test_expert_initialisation_centres_the_first_plan_on_the_experts_actions():
  actions = np.random.default_rng(0).normal([0.3, -0.5, 0.1], [0.2, 0.5, 0.05], size=(1000, 3))
  ex = mppi.ExpertActions.of(actions)
  mean, std = actions.mean(0), actions.std(0) * np.sqrt(0.8)
  with pytest.raises(ValueError, match="needs the expert's action statistics"):
    mppi.MPPI(_Flat(), _PAPER)
  planner = mppi.MPPI(_Flat(), _PAPER, expert=ex)
  envs = _State(jnp.zeros(2048, jnp.int32))
  plan = planner.init(jax.random.key(0), envs)
  assert np.allclose(np.asarray(plan.mean), mean, atol=1e-6)  # every step of every plan
  lo, hi = -jnp.ones(3), jnp.ones(3)
  sigma = mppi.noise_std(_PAPER, lo, hi, ex)
  assert np.allclose(np.asarray(sigma), std, rtol=1e-4)
  u = plan.mean[0] + mppi.perturbations(jax.random.key(1), _PAPER, (4096, 6, 3), sigma, 0.5 * (hi - lo), 1.0)
  first = np.asarray(u[:, 0])  # before the AR(2) filter acts (from step 2 on)
  assert np.allclose(first.mean(0), mean, atol=0.03) and np.allclose(first.std(0), std, rtol=0.05)
  # A shift's free slot is a fresh draw of the same distribution (tail 'expert'), per environment.
  _, plan, _ = planner.replan(plan, envs)
  tail = np.asarray(plan.mean[:, -1])
  assert np.allclose(tail.mean(0), mean, atol=0.03) and np.allclose(tail.std(0), std, rtol=0.08)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("coeffs", [(0.5, 0.5, 0.0), (0.4, 0.6, 0.0), (0.5, 0.3, 0.2)])
def test_ar2_noise_has_the_filters_autocorrelation(coeffs):
  b0, b1, b2 = coeffs
  rho1 = b1 / (1 - b2)  # Yule-Walker for x_t = b1 x_{t-1} + b2 x_{t-2} + b0 n_t
  rho2 = b1 * rho1 + b2
  var = b0**2 / (1 - b1 * rho1 - b2 * rho2)
  cfg = mppi.MPPIConfig(noise_kind="ar2", filter_coeffs=coeffs)
  eps = np.asarray(mppi.sample_noise(jax.random.key(0), cfg, (8192, 40, 2)))
  assert abs(eps[:, :2].std() - 1.0) < 0.02  # steps 0 and 1 as drawn
  x = eps[:, 20:]  # stationary
  assert abs(x.var() - var) < 0.03 * var + 0.005
  assert abs(np.mean(x[:, 1:] * x[:, :-1]) / x.var() - rho1) < 0.02
  assert abs(np.mean(x[:, 2:] * x[:, :-2]) / x.var() - rho2) < 0.02


@pytest.mark.timeout(120)
def test_step_size_unclipped_update_fall_penalty_and_control_cost():
  # Equal weights: the plan moves step_size of the way to the mean of the UNCLIPPED samples.
  cfg = _PAPER.replace(init="zero", tail="repeat", samples=512, control_cost=False)
  planner = mppi.MPPI(_Flat(), cfg)
  envs = _State(jnp.zeros(1, jnp.int32))
  plan = planner.init(jax.random.key(0), envs)
  plan = plan._replace(mean=jnp.full_like(plan.mean, 0.9))  # near the bound: clipping would matter
  _, new, _ = planner.replan(plan, envs)
  key = jax.random.split(jax.random.split(plan.key[0])[1], 1)[0]
  sigma = jnp.full(3, np.sqrt(0.3))
  eps = mppi.perturbations(key, cfg, (512, 6, 3), sigma, jnp.ones(3), 1.0)
  want = 0.6 * 0.9 + 0.4 * (0.9 + eps.mean(0))
  assert np.allclose(np.asarray(new.mean[0, :-1]), np.asarray(want[1:]), atol=1e-5)
  # Falls at step 1 of 4: that step costs 10 per remaining step more, and later steps repeat it.
  c, h, term = jnp.array([[1.0, 2.0, 4.0, 8.0]]), jnp.array([[True, False, True, True]]), jnp.array([5.0])
  held = mppi.fall_costs(c, h, term, mppi.MPPIConfig(fall_penalty=10.0, hold_after_fall=True))
  assert float(held[0]) == 1.0 + 3 * (2.0 + 10.0 * 2)
  dropped = mppi.fall_costs(c, h, term, mppi.MPPIConfig(fall_penalty=10.0))
  assert float(dropped[0]) == 1.0 + 2.0 + 20.0
  assert float(mppi.fall_costs(c, jnp.ones_like(h), term, mppi.MPPIConfig(hold_after_fall=True))[0]) == 15.0 + 5.0
  # Control cost: 0.5 sum_t mean_t' Sigma^-1 (mean_t + 2 eps_t).
  mean, eps, std = jnp.array([[1.0, -2.0]]), jnp.array([[[0.5, 1.0]]]), jnp.array([1.0, 2.0])
  assert float(mppi.control_costs(mean, eps, std)[0]) == pytest.approx(0.5 * (1.0 * 2.0 + (-2.0 / 4) * 0.0))


@pytest.mark.timeout(120)
def test_gym_return_and_termination_variants():
  hopper = tasks.make_task("hopper")
  names = [c.name for c in hopper.robot.obs_channels]
  obs = np.zeros(hopper.num_obs, np.float32)
  obs[0], obs[names.index("rootx:vel")] = 1.25, 0.5
  u, goal = jnp.array([1.0, -1.0, 0.0]), jnp.zeros(3)
  qpos0, qpos1 = jnp.zeros(6), jnp.zeros(6).at[0].set(0.02)
  r, healthy = hopper.reward(jnp.asarray(obs), u, goal, qpos0, qpos1)
  assert bool(healthy) and float(r) == -float(hopper.cost(jnp.asarray(obs), u, goal)[0])  # the default: -cost
  gym = hopper.variant(gym_return=True)
  r, _ = gym.reward(jnp.asarray(obs), u, goal, qpos0, qpos1)
  assert float(r) == pytest.approx(0.02 / hopper.dt + 1.0 - 2e-3)  # gym's dx/dt, not the end velocity
  obs[0] = 0.5  # fallen: no healthy bonus
  assert float(gym.reward(jnp.asarray(obs), u, goal, qpos0, qpos1)[0]) == pytest.approx(0.02 / hopper.dt - 2e-3)
  assert gym.mx is hopper.mx and not hopper.gym_return  # a copy sharing the models
  with pytest.raises(ValueError, match="not \\['episode_len'\\]"):
    hopper.variant(episode_len=3)
  # Termination: every policy's by default; the authors' world-model runs go on after a fall.
  cfg = control_cfg.get_config("hopper_paper")
  assert all(planners.policy_task(p, hopper, cfg).terminates for p in planners.POLICIES)
  cfg.world_model_terminates = False
  assert not planners.policy_task("world_model", hopper, cfg).terminates
  assert planners.policy_task("oracle", hopper, cfg).terminates
  no_end = hopper.variant(terminates=False)
  fallen = jnp.asarray(obs)[None, None]
  assert not bool(backends.observation_costs(hopper, fallen, u[None, None], goal)[1][0, 0])
  assert bool(backends.observation_costs(no_end, fallen, u[None, None], goal)[1][0, 0])


@pytest.mark.timeout(180)
def test_expert_policy_and_its_cached_reference_episode(tmp_path):
  from westworld_jax.data import rl_env, train_policy

  hopper = tasks.make_task("hopper")
  policy, _ = train_policy.load_policy("hopper", "expert")
  obs = np.random.default_rng(0).normal(size=(5, hopper.num_obs)).astype(np.float32)
  gym_obs = np.concatenate([obs[:, :5], np.clip(obs[:, 5:], -10, 10)], 1)  # qpos[1:], clipped qvel
  assert rl_env.reward_spec("hopper").skip_qpos == 1
  acted = np.asarray(expert.ExpertPolicy(hopper).act(jnp.asarray(obs)))
  assert np.allclose(acted, policy.act(gym_obs), atol=1e-5)  # hopper's ctrlrange is gym's [-1, 1]
  path = expert.expert_reference_file(hopper, steps=1000, seed=0, directory=str(tmp_path))
  mtime = os.path.getmtime(path)
  assert expert.expert_reference_file(hopper, steps=1000, seed=0, directory=str(tmp_path)) == path
  assert os.path.getmtime(path) == mtime  # reused
  with np.load(path) as d:
    assert d["qpos"].shape == (1000, 6) and d["actions"].shape == (1000, 3)
    assert d["rewards"].sum() > 3000.0  # the expert hops for the whole episode (~3320)
  ref = reference.load(path, hopper)
  assert float(ref.cost(jnp.asarray(ref.obs[10]), 10)) == 0.0


@pytest.mark.timeout(300)
def test_paper_variants_load_and_run_a_few_closed_loop_steps(tmp_path):
  from westworld_jax.control import experiment

  for v in ("hopper_paper", "walker2d_paper", "hopper_paper_cpu", "walker2d_paper_cpu"):
    c = control_cfg.get_config(v)
    m = planners.mppi_config("oracle", c)
    assert c.reference == "expert" and c.gym_return and c.episode_len == 1000 and c.world_model_terminates
    assert m.noise_kind == "ar2" and m.init == m.tail == "expert" and not m.update_clipped and m.control_cost
    assert c.policies == ("expert_policy", "oracle", "world_model", "random")
    if v.endswith("_cpu"):
      assert (m.samples, m.horizon) == control_cfg.PAPER_CPU_SIZES["oracle"]
      wm = planners.mppi_config("world_model", c)
      assert (wm.samples, wm.horizon) == control_cfg.PAPER_CPU_SIZES["world_model"] and wm.horizon <= 24
    else:
      assert (m.samples, m.horizon) == (256, 100)
  assert control_cfg.get_config("walker2d_paper").mppi.fall_penalty == 100.0
  cfg = control_cfg.get_config("hopper_paper")
  cfg.policies = ("expert_policy", "oracle", "random")
  cfg.mppi.samples, cfg.mppi.horizon = 16, 8
  cfg.episode_len, cfg.render.enabled, cfg.physics = 6, False, "mujoco"
  cfg.reference_episode.cache_dir = str(tmp_path / "refs")
  summary = experiment.run(cfg, str(tmp_path / "run"))
  assert summary["task"]["gym_return"] and summary["task"]["reference"]["steps"] == 1000
  for name in cfg.policies:
    s = summary["policies"][name]
    assert s["episodes"] == 1 and s["length_mean"] == 6 and np.isfinite(s["return_mean"]), (name, s)
  assert summary["policies"]["oracle"]["trace_count"] == 1 and summary["policies"]["oracle"]["mppi"] == "16 x 8"
  assert summary["policies"]["expert_policy"]["policy"] == "PPO expert"
  with open(tmp_path / "run" / "summary.md") as f:
    assert "returns: gym's reward" in f.read()
