"""The control table command (control/table.py): per-episode files that make it resumable, its
report, the noisy-action collection policy and the plan check (predicted vs simulated plan cost).

Everything runs in process on C MuJoCo with small planners; the world-model rows' training and
planning are covered by the pieces they call (training/finetune, control/backends) and by
`python -m westworld_jax.control.table --config experiments/control_table.py:tiny`.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from westworld_jax.control import episode_store, mppi, physics, plan_check, planners, rollout, sampled_rollouts
from westworld_jax.control import table, table_report
from westworld_jax.control.mppi_config import MPPIConfig
from westworld_jax.errors import UserError

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
from experiments import control_table as table_cfg  # noqa: E402


def _cfg(policies=("expert_policy", "random")):
  c = table_cfg.get_config("tiny")
  c.policies = policies
  c.episodes, c.episode_len = 2, 15
  return c


@pytest.mark.timeout(300)
def test_table_saves_each_episode_and_a_rerun_runs_only_the_missing_ones(tmp_path, monkeypatch):
  cfg, wd = _cfg(), str(tmp_path)
  calls = []
  real = rollout.run_episode
  monkeypatch.setattr(rollout, "run_episode", lambda *a, **k: calls.append(k["progress"]) or real(*a, **k))
  out = table.run(cfg, wd)
  assert len(calls) == 4  # 2 policies x 2 episodes
  rows = {r["policy"]: r for r in out["rows"]}
  assert set(rows) == {"expert_policy", "random"} and all(r["episodes"] == 2 for r in rows.values())
  assert rows["expert_policy"]["return_mean"] > rows["random"]["return_mean"]
  saved = json.load(open(os.path.join(wd, "results.json")))
  assert saved["rows"] == json.loads(json.dumps(out["rows"]))
  assert os.path.exists(os.path.join(wd, "plots", "returns.png")) and os.path.exists(os.path.join(wd, "results.md"))
  ep = os.path.join(wd, "hopper", "rows", "random", "ep001.json")
  before = json.load(open(ep))
  calls.clear()
  table.run(cfg, wd)
  assert calls == []  # every episode finished: nothing reruns
  os.remove(ep)  # an interrupted episode leaves no JSON
  table.run(cfg, wd)
  assert calls == ["hopper random episode 2/2"]
  assert json.load(open(ep))["return"] == pytest.approx(before["return"])  # the same start state and actions' seed
  store = episode_store.EpisodeStore(os.path.join(wd, "hopper", "rows", "random"))
  traj = store.trajectory(1)
  assert traj["obs"].shape == (before["length"], 11) and traj["act"].shape == (before["length"], 3)
  assert traj["rewards"].sum() == pytest.approx(before["return"], rel=1e-5)
  assert store.arrays(1) == {} and not os.path.exists(os.path.join(store.directory, "ep001.extra.npz"))


def test_episode_store_keeps_extra_arrays_beside_the_trajectory(tmp_path):
  log = rollout.EpisodeLog(
    "t", "p", np.array([1.5]), np.array([2]), np.ones((2, 1)), np.ones((2, 1), bool), np.zeros((3, 1, 4)),
    np.zeros((2, 1, 2)), np.zeros((3, 1, 5)), np.zeros((1, 3)), np.array([0.5, 0.01, 0.02]),
  )  # fmt: skip
  store = episode_store.EpisodeStore(str(tmp_path))
  windows = np.arange(24.0).reshape(2, 3, 4)
  rec = store.save(0, log, arrays={"window_obs": windows}, note="x")
  assert rec["note"] == "x" and rec["return"] == 1.5 and rec["replan_ms_median"] == pytest.approx(15.0)
  np.testing.assert_array_equal(store.arrays(0)["window_obs"], windows)
  assert set(store.trajectory(0)) == {"obs", "act", "qpos", "rewards", "return"}
  assert store.trajectory(0)["obs"].shape == (2, 4)


def test_episode_keys_are_the_control_commands_sequence():
  keys = episode_store.episode_keys(3, 4)
  key = jax.random.key(3)
  for k in keys:
    key, sub = jax.random.split(key)  # control/experiment.py's draw
    assert np.array_equal(jax.random.key_data(k), jax.random.key_data(sub))
  assert len({tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in keys}) == 4


def test_report_parses_rows_and_relates_them_to_the_oracle(tmp_path):
  assert table_report._parse("wm-mlp_ensemble-pretrained") == {
    "policy": "world_model",
    "model": "mlp_ensemble",
    "finetuned": False,
    "recipe": None,
  }
  assert table_report._parse("wm-westworld-best")["recipe"] == "best"
  cfg = _cfg()
  for row, rets in (("oracle", [100.0, 200.0]), ("wm-westworld-pretrained", [30.0, 45.0])):
    d = tmp_path / "hopper" / "rows" / row
    d.mkdir(parents=True)
    for i, r in enumerate(rets):
      (d / f"ep{i:03d}.json").write_text(
        json.dumps({"return": r, "length": 10, "replan_ms_median": 5.0, "mppi": "8 x 8"})
      )
  rows = {r["policy"]: r for r in table_report.rows(cfg, str(tmp_path))}
  assert rows["oracle"]["return_mean"] == 150.0 and rows["oracle"]["return_std"] == 50.0
  assert rows["world_model"]["pct_of_oracle"] == 25.0 and rows["world_model"]["finetuned"] is False


def test_a_pretrained_run_that_has_not_finished_is_refused(tmp_path, monkeypatch):
  monkeypatch.setattr("westworld_jax.training.run_files.read_run_config", lambda d: {"total_steps": 3000})
  with pytest.raises(UserError, match="is at step None of 3000"):
    table._check_finished(str(tmp_path), "westworld")


@pytest.mark.timeout(120)
def test_a_corpus_environment_is_reused_only_for_the_same_episodes(tmp_path):
  cfg = _cfg()
  rng = np.random.default_rng(0)
  ep = lambda: {"obs": rng.normal(size=(12, 11)).astype(np.float32), "act": rng.uniform(-1, 1, (12, 3))}
  eps = [ep() for _ in range(3)]
  first = table._data_env(cfg, "hopper", cfg.control.hopper, str(tmp_path), eps, "t")
  assert table._data_env(cfg, "hopper", cfg.control.hopper, str(tmp_path), eps, "t") == first
  assert table._data_env(cfg, "hopper", cfg.control.hopper, str(tmp_path), eps[::-1], "t") == first  # same set
  for other in (eps[:2], eps[:2] + [ep()]):  # fewer episodes; as many, but different ones
    with pytest.raises(UserError, match="holds other episodes than this config collects"):
      table._data_env(cfg, "hopper", cfg.control.hopper, str(tmp_path), other, "t")


@pytest.mark.timeout(120)
def test_noisy_policy_perturbs_the_executed_actions_within_the_bounds():
  task = planners.protocol_task(_cfg().control.hopper)
  envs = physics.make_envs(task)
  s = envs.reset(jax.random.key(0), 256)
  zero = rollout.RandomPolicy(task)
  zero.replan = lambda plan, s: (jnp.zeros((s.alive.shape[0], task.num_act)), plan, {})
  noisy = rollout.NoisyPolicy(zero, task, 0.1)
  u, _, _ = noisy.replan(noisy.init(jax.random.key(1), s), s)
  u = np.asarray(u)
  half = 0.5 * (task.act_high - task.act_low)
  assert np.all(u >= task.act_low) and np.all(u <= task.act_high)
  assert np.allclose(u.std(axis=0), 0.1 * half, rtol=0.2) and np.allclose(u.mean(axis=0), 0.0, atol=0.05)
  with pytest.raises(ValueError, match="must be > 0"):
    rollout.NoisyPolicy(zero, task, 0.0)


def _oracle_planner():
  """Hopper under the paper protocol with a small C-MuJoCo oracle MPPI (8 x 6)."""
  ccfg = _cfg().control.hopper
  task = planners.protocol_task(ccfg)
  cfg = MPPIConfig.from_dict({**dict(ccfg.mppi), "samples": 8, "horizon": 6})
  return task, mppi.MPPI(
    physics.make_oracle(task, "mujoco"), cfg, expert=planners.expert_actions(task, cfg, task.num_act)
  )


@pytest.mark.timeout(180)
def test_plan_check_is_exact_when_the_planner_plans_with_the_simulator():
  """The planner's backend is the simulator itself: predicted and simulated plan costs agree."""
  task, planner = _oracle_planner()
  check = plan_check.PlanCheck(planner, task, "mujoco", every=3)
  rollout.run_episode(physics.make_envs(task, physics="mujoco"), planner, 1, 7, jax.random.key(0), observer=check)
  assert [r["step"] for r in check.rows] == [0, 3, 6]
  for r in check.rows:
    assert r["predicted_total"] == pytest.approx(r["simulated_total"], rel=1e-5, abs=1e-4)
    assert r["step_cost_mae"] < 1e-4
  s = check.summary()
  assert s["plans"] == 3 and s["total_abs_error"] < 1e-3
  # candidates drawn around each plan: the simulator orders them as the simulator does
  ranked = plan_check.PlanCheck(planner, task, "mujoco", every=3, candidates=6)
  rollout.run_episode(physics.make_envs(task, physics="mujoco"), planner, 1, 4, jax.random.key(0), observer=ranked)
  s = ranked.summary()
  assert s["rank_corr"] == pytest.approx(1.0) and s["pick_quantile"] == 0.0
  assert [r["predicted_total"] for r in ranked.rows] == [r["predicted_total"] for r in check.rows[:2]]


def test_rank_agreement_of_predicted_and_simulated_costs():
  sim = np.array([3.0, 1.0, 2.0, 4.0])
  assert plan_check.rank_agreement(sim * 2 + 1, sim) == (pytest.approx(1.0), 0.0)
  corr, pick = plan_check.rank_agreement(-sim, sim)  # the model's favourite is the physics' worst
  assert corr == pytest.approx(-1.0) and pick == 0.75


@pytest.mark.timeout(180)
def test_sampled_rollouts_are_the_real_history_then_simulated_candidate_plans():
  task, planner = _oracle_planner()
  sampler = sampled_rollouts.SampledRollouts(planner, task, history=3, horizon=4, every=2, count=5)
  log = rollout.run_episode(
    physics.make_envs(task, physics="mujoco"), planner, 1, 7, jax.random.key(0), observer=sampler
  )
  a = sampler.arrays()
  assert a["window_obs"].shape == (15, 7, task.num_obs) and a["window_act"].shape == (
    15,
    7,
    task.num_act,
  )  # t = 2, 4, 6
  for j, t in enumerate((2, 4, 6)):
    w_obs, w_act = a["window_obs"][5 * j : 5 * j + 5], a["window_act"][5 * j : 5 * j + 5]
    np.testing.assert_allclose(
      w_obs[:, :3], np.broadcast_to(log.obs[t - 2 : t + 1, 0], (5, 3, task.num_obs)), atol=1e-6
    )
    np.testing.assert_allclose(w_act[:, :2], np.broadcast_to(log.ctrl[t - 2 : t, 0], (5, 2, task.num_act)), atol=1e-6)
    assert np.all(w_act >= task.act_low - 1e-6) and np.all(w_act <= task.act_high + 1e-6)
    assert np.ptp(w_act[:, 2], axis=0).max() > 0  # the candidates differ
    assert not np.allclose(w_obs[0, 3:], w_obs[1, 3:])  # and so do their simulated futures
  sampler.close()


def test_a_training_run_stopped_by_a_signal_ends_the_table(monkeypatch):
  """No world-model row may plan with a half-trained model, and no driver goes on to its next run after
  a signal: the rerun resumes the training."""
  from westworld_jax.errors import Interrupted
  from westworld_jax.training import loop

  monkeypatch.setattr(loop, "train", lambda cfg, wd: loop.TrainResult(None, 300, [], None, stopped_early=False))
  assert loop.train_to_end(None, "wd").step == 300
  monkeypatch.setattr(loop, "train", lambda cfg, wd: loop.TrainResult(None, 29, [], None, stopped_early=True))
  with pytest.raises(Interrupted, match="stopped at step 29: rerun the same command"):
    loop.train_to_end(None, "wd")


def test_per_env_equals_vmap_for_one_environment_and_many():
  f = lambda a, b: (a * b.sum(), jnp.tanh(a))
  for n in (1, 3):
    a, b = jnp.arange(n * 2.0).reshape(n, 2), jnp.ones((n, 4))
    for x, y in zip(mppi.per_env(f, a, b), jax.vmap(f)(a, b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.timeout(120)
def test_control_refuses_a_bad_checkpoint_before_any_episode(tmp_path):
  from experiments import control as control_cfg  # noqa: PLC0415
  from westworld_jax.control import experiment  # noqa: PLC0415

  cfg = control_cfg.get_config("hopper")
  cfg.policies = ("oracle", "world_model")
  with pytest.raises(UserError, match="not a training workdir"):
    experiment.run(cfg, str(tmp_path / "out"), str(tmp_path / "no_such_run"))
  assert not os.path.exists(tmp_path / "out" / "returns.json")
  # a model whose window cannot hold the planned horizon: refused before the oracle's episodes, too
  cfg.mppi.horizon = 500
  shipped = os.path.join(os.path.dirname(experiment.__file__), "..", "pretrained", "westworld-cpu")
  with pytest.raises(UserError, match=r"robot 'hopper'.*history 16 \+ 500 planned steps.*shorter mppi.horizon"):
    experiment.run(cfg, str(tmp_path / "out"), shipped)
  assert not os.path.exists(tmp_path / "out" / "returns.json")
