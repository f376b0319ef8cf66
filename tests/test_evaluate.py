"""Evaluation, few-shot and scaling drivers: the metric against a hand computation, no statistics of
held-out robots from pretraining, the evaluate CLI end to end (also on a user's own robot and data), the
evaluator against the public predict API, fine-tuning on exactly N episodes, and the scaling driver on a
tiny setting."""

import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import data as data_config
from experiments import few_shot as few_shot_config
from experiments import pretrain as pretrain_config
from experiments import scaling as scaling_config
from experiments import zero_shot as zero_shot_config
from westworld_jax import evaluate as evaluate_cli
from westworld_jax import evaluation as ev
from westworld_jax import few_shot as ft
from westworld_jax import scaling as scaling_lib
from westworld_jax.data import pipeline, shards
from westworld_jax.model.metrics import horizon_errors
from westworld_jax.model.registry import CapacityError
from westworld_jax.robots import catalogue
from westworld_jax.training import corpus as corpus_lib
from westworld_jax.training import loop
from tests.hang_guard import guard

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = ("dmc_cartpole-ou", "dmc_reacher-ou")
ZERO_SHOT = "franka_panda-pd_targets"  # held-out robot (no falls: every episode is full length)
FEW_SHOT = "ur5e-pd_targets"


def _collect_cfg(corpus):
  d = data_config.get_config("tiny")
  d.corpus_dir = str(corpus)
  d.environments = PRETRAIN + (ZERO_SHOT, FEW_SHOT)
  d.episodes_per_env, d.episodes_per_shard, d.episode_len, d.val_fraction = 8, 4, 64, 0.25
  return d


def _pretrain_cfg(corpus, steps=2):
  c = pretrain_config.get_config("tiny")
  c.data.corpus_dir, c.data.collect = str(corpus), _collect_cfg(corpus)
  c.data.environments = PRETRAIN
  c.data.batch_size = c.data.eval_batch_size = 8
  c.data.num_threads = 1
  c.total_steps = steps
  c.log.update(every=1, progress=False, tensorboard=False)
  c.checkpoint.update(every=steps, keep=1, async_save=False)
  c.eval.update(every=10**9, max_batches=0)
  return c


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A corpus (2 pretraining environments, a zero-shot and a few-shot robot) and a 2-step checkpoint."""
  root = tmp_path_factory.mktemp("evaluate")
  corpus = root / "corpus"
  ev.ensure_environments(str(corpus), list(_collect_cfg(corpus).environments), _collect_cfg(corpus))
  ckpt = str(root / "pretrain")
  loop.train(_pretrain_cfg(corpus), ckpt)
  return {"root": root, "corpus": str(corpus), "ckpt": ckpt}


def _batch(obs, mask_c, mask_t):
  obs = np.asarray(obs, np.float32)
  return {"obs": jnp.asarray(obs), "obs_mask": jnp.asarray(mask_c), "time_mask": jnp.asarray(mask_t)}


def test_metric_matches_hand_computation():
  # 2 windows, 4 steps, 3 channels, history 2: steps 2 and 3 are predicted.
  obs = np.zeros((2, 4, 3), np.float32)
  pred = np.zeros((2, 4, 3), np.float32)
  pred[:, :2] = 50.0  # history steps never count
  pred[0, 2] = [0.1, -0.2, 0.3]
  pred[0, 3] = [0.0, 0.4, 0.0]
  pred[1, 2] = [0.5, 0.0, 9.0]  # channel 2 of window 1 is padding
  pred[1, 3] = [7.0, 7.0, 7.0]  # step 3 of window 1 is past the episode's end
  mask_c = np.array([[True, True, True], [True, True, False]])
  mask_t = np.array([[True] * 4, [True, True, True, False]])
  out = ev.pooled_errors(jnp.asarray(pred), _batch(obs, mask_c, mask_t), history=2)
  # By hand: valid errors 0.1, 0.2, 0.3, 0, 0.4, 0 (window 0) and 0.5, 0 (window 1): 8 elements.
  assert out["count"] == 8 and out["windows"] == 2
  np.testing.assert_allclose(out["mae"], (0.1 + 0.2 + 0.3 + 0.4 + 0.5) / 8, rtol=1e-6)
  np.testing.assert_allclose(out["mse"], (0.01 + 0.04 + 0.09 + 0.16 + 0.25) / 8, rtol=1e-6)
  np.testing.assert_allclose(out["mae_x100"], 100 * out["mae"])
  # Per horizon step: step 1 (t=2) has 5 elements, step 2 (t=3) has 3.
  np.testing.assert_allclose(out["mae_by_step"], [(0.1 + 0.2 + 0.3 + 0.5) / 5, 0.4 / 3], rtol=1e-6)
  np.testing.assert_allclose(out["mse_by_step"], [(0.01 + 0.04 + 0.09 + 0.25) / 5, 0.16 / 3], rtol=1e-6)
  # Pooling over batches == one batch with every window (sums, not means of means).
  a, b = ev.Pooled(2), ev.Pooled(2)
  a.add(horizon_errors(jnp.asarray(pred[:1]), _batch(obs[:1], mask_c[:1], mask_t[:1]), 2), 1)
  b.add(horizon_errors(jnp.asarray(pred[1:]), _batch(obs[1:], mask_c[1:], mask_t[1:]), 2), 1)
  merged = a.merge(b).summary()
  for k in ("mae", "mse", "count"):
    np.testing.assert_allclose(merged[k], out[k], rtol=1e-6)


def test_report_mean_std_over_seeds(tmp_path):
  assert ev.fmt([1.0]) == "1.00" and ev.fmt([1.0, 3.0]) == "2.00 ± 1.41"
  env = {"robot": "r", "mae_x100": 1.0, "mse_x100": 2.0, "windows": 1, "mae_by_step": [0.01], "split": "val"}
  runs = [
    {
      "label": "m",
      "checkpoint": "a",
      "step": 1,
      "history": 1,
      "horizon": 1,
      "envs": {"e": {**env, "mae_x100": v}},
      "robots": {"r": {**env, "mae_x100": v}},
    }
    for v in (1.0, 3.0)
  ]
  out = ev.report(str(tmp_path), runs, ["e"], "t")
  assert out["summary"]["m"]["envs"]["e"]["mae_x100_mean"] == 2.0
  assert "2.00 ± 1.41" in open(tmp_path / "results.md").read()


@pytest.mark.parametrize("name", ["westworld", "trajworld", "tdm", "mlp_ensemble"])
def test_hold_last_reference_takes_what_its_model_takes(name):
  """The reference repeats obs[:, history - 1] and accepts the windows its checkpoint's model does,
  for every model (MLPEnsemble's config has max_* fields that bound no input)."""
  from westworld_jax.model import registry
  from westworld_jax.model.batch import zeros_batch

  model = registry.build(name, "tiny")
  ref = ev.hold_last_reference(ev.Checkpoint(name, "-", model, {}, {}, {}, 0))
  assert ref.model.capacity == model.capacity
  batch = zeros_batch(1, 12, 4, 2)
  batch["obs"] = np.arange(batch["obs"].size, dtype=np.float32).reshape(batch["obs"].shape)
  pred = ref.model.predict({}, batch)
  h = model.history
  np.testing.assert_array_equal(pred[:, h:], jnp.broadcast_to(batch["obs"][:, h - 1 : h], pred[:, h:].shape))


def test_pretraining_never_holds_heldout_robots(tiny):
  heldout = {s.name for s in catalogue.iter_robots() if s.split != catalogue.PRETRAIN}
  assert {"walker2d", "hopper", "franka_panda", "cassie", "unitree_a1", "ur5e"} <= heldout
  for variant in ("tiny", "cpu"):  # every pretraining environment list the experiments use
    envs = corpus_lib.training_environments(scaling_config.pretrain_config(variant).data)
    assert envs and not {catalogue.env_spec(e).robot for e in envs} & heldout, variant
    assert not set(scaling_config.get_config(variant).environments) & {
      e.name for e in catalogue.environments() if e.robot in heldout
    }
  # The pretraining run's statistics cover its training environments only.
  with open(os.path.join(tiny["ckpt"], "data_stats.json")) as f:
    assert set(json.load(f)) == set(PRETRAIN)


def test_heldout_normalisation_is_its_own_and_pretraining_stats_are_never_read(tiny, tmp_path):
  corpus, env_dir = tiny["corpus"], os.path.join(tiny["corpus"], ZERO_SHOT)
  meta = shards.load_metadata(env_dir)
  eps = [ep for s in range(meta["num_shards"]) for ep in shards.read_shard(env_dir, s)]
  own = np.concatenate([ep["obs"] for ep, info in zip(eps, meta["episodes"]) if not info["val"]])
  assert any(info["val"] for info in meta["episodes"])
  # What the evaluation normalises with: the environment's own training-episode min-max.
  ckpt = ev.load_checkpoint(tiny["ckpt"])
  evaluator = ev.Evaluator.for_checkpoint(ckpt, batch_size=8)
  env = pipeline.load_env(evaluator._pipeline(corpus, ZERO_SHOT, "val"), 0, ZERO_SHOT)
  np.testing.assert_allclose(env.obs_min, own.min(0), rtol=1e-6)
  span = own.max(0) - own.min(0)
  np.testing.assert_allclose(np.where(span > 1e-8, env.obs_span, 0), np.where(span > 1e-8, span, 0), rtol=1e-5)
  # Evaluated windows are from val episodes only.
  val_eps = {(i["shard"], i["index"]) for i in meta["episodes"] if i["val"]}
  assert {(int(w[0]), int(w[1])) for w in env.windows} <= val_eps
  before = ev.evaluate_checkpoint(ckpt, corpus, [ZERO_SHOT], require_unseen=True)[ZERO_SHOT].pooled.summary()
  # Garbage pretraining statistics change nothing: evaluation never reads them for normalising.
  bad = str(tmp_path / "bad_stats")
  shutil.copytree(tiny["ckpt"], bad)
  with open(os.path.join(bad, "data_stats.json")) as f:
    stats = json.load(f)
  for s in stats.values():
    s["stats"] = {k: [1e6] * len(v) for k, v in s["stats"].items()}
  with open(os.path.join(bad, "data_stats.json"), "w") as f:
    json.dump(stats, f)
  after = ev.evaluate_checkpoint(ev.load_checkpoint(bad), corpus, [ZERO_SHOT], require_unseen=True)
  assert after[ZERO_SHOT].pooled.summary()["mae"] == before["mae"]
  # A checkpoint that trained on the robot is refused for zero-shot evaluation.
  stats["somewhere-else"] = {"robot": "franka_panda", "stats": {}}
  with open(os.path.join(bad, "data_stats.json"), "w") as f:
    json.dump(stats, f)
  with pytest.raises(ev.HeldOutLeakError, match="not zero-shot"):
    ev.evaluate_checkpoint(ev.load_checkpoint(bad), corpus, [ZERO_SHOT], require_unseen=True)


@pytest.mark.timeout(200)
def test_evaluate_cli_end_to_end(tiny, tmp_path):
  out = str(tmp_path / "zs")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "westworld_jax.evaluate",
      f"--config={REPO_ROOT}/experiments/zero_shot.py:tiny",
      f"--checkpoint=westworld={tiny['ckpt']}",
      f"--workdir={out}",
      f"--config.corpus_dir={tiny['corpus']}",
      f"--config.environments=('{ZERO_SHOT}',)",
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=guard(190),
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  with open(os.path.join(out, "results.json")) as f:
    res = json.load(f)
  run = res["runs"][0]
  e = run["envs"][ZERO_SHOT]
  assert run["label"] == "westworld" and e["split"] == "val" and e["windows"] > 0
  assert 0 < e["mae"] < 1 and abs(e["mae_x100"] - 100 * e["mae"]) < 1e-9
  assert len(e["mae_by_step"]) == run["horizon"] and run["robots"]["franka_panda"]["count"] == e["count"]
  assert res["runs"][1]["label"] == "hold last obs (reference)"
  md = open(os.path.join(out, "results.md")).read()
  assert "| franka_panda |" in md and "MSE x100" in md
  pngs = os.listdir(os.path.join(out, "plots"))
  assert f"error_vs_horizon_{ZERO_SHOT}.png" in pngs and f"westworld_{ZERO_SHOT}_window0.png" in pngs


def test_evaluate_own_robot_and_data(tiny, tmp_path):
  """--robot FILE.xml --data PATH: the user's trajectories (npz) of an MJCF robot are imported and evaluated."""
  env_dir = os.path.join(tiny["corpus"], ZERO_SHOT)
  meta = shards.load_metadata(env_dir)
  eps = shards.read_shard(env_dir, 0)
  data = str(tmp_path / "my_arm.npz")
  np.savez(
    data,
    observations=np.concatenate([e["obs"] for e in eps]),
    actions=np.concatenate([e["act"] for e in eps]),
    terminals=np.concatenate([np.arange(len(e["obs"])) == len(e["obs"]) - 1 for e in eps]),
  )
  cfg = zero_shot_config.get_config("tiny")
  cfg.reference = False
  out = evaluate_cli.evaluate(
    cfg, [("westworld", tiny["ckpt"])], str(tmp_path / "own"), robot=meta["robot"]["source"], data=data
  )
  e = out["runs"][0]["envs"]["my_arm"]
  assert e["windows"] > 0 and 0 < e["mae"] < 1
  cfg.horizon = 10_000  # more than the model's window: refused before the file is imported
  with pytest.raises(CapacityError, match=r"robot .* \+ 10000 predicted steps.*shorter --config.horizon"):
    evaluate_cli.evaluate(
      cfg, [("westworld", tiny["ckpt"])], str(tmp_path / "long"), robot=meta["robot"]["source"], data=data
    )
  assert not os.path.exists(tmp_path / "long" / "imported")


@pytest.mark.timeout(200)
def test_finetune_on_exactly_n_episodes(tiny, tmp_path):
  with pytest.raises(shards.CorpusError, match="max_episodes=99"):
    pipeline.load_env(
      pipeline.PipelineConfig(tiny["corpus"], (FEW_SHOT,), max_episodes=99, history=8, horizon=24), 0, FEW_SHOT
    )
  cfg = few_shot_config.get_config("tiny")
  # The label twice = two pretraining seeds (a copy of the workdir stands in for the second).
  second = shutil.copytree(tiny["ckpt"], str(tmp_path / "pretrained_seed1"))
  cfg.pretrained = f"westworld={tiny['ckpt']},westworld={second}"
  cfg.corpus_dir, cfg.collect = tiny["corpus"], None
  cfg.environments = (FEW_SHOT,)
  cfg.episodes, cfg.steps, cfg.scratch_steps = 2, 2, 2
  cfg.reference = False  # covered by the CLI test
  out_dir = str(tmp_path / "fs")
  out = ft.finetune(cfg, out_dir)
  modes = [(r["label"], r["mode"]) for r in out["runs"]]
  assert sorted(modes) == sorted(
    [("westworld zero-shot", "zero_shot")] * 2
    + [("westworld fine-tuned", "finetune")] * 2
    + [("westworld scratch", "scratch")]
  )  # scratch: once per seed, not per checkpoint
  fine = [r for r in out["runs"] if r["mode"] == "finetune"]
  assert [os.path.basename(r["checkpoint"]) for r in fine] == ["westworld-finetune-s0", "westworld-finetune-s0-p1"]
  assert [r["pretrained"] for r in fine] == [os.path.abspath(tiny["ckpt"]), os.path.abspath(second)]
  assert out["summary"]["westworld fine-tuned"]["envs"][FEW_SHOT]["seeds"] == 2
  cfg.pretrained = f"westworld={tiny['ckpt']},westworld={tiny['ckpt']}"
  with pytest.raises(ValueError, match="given twice"):
    ft.finetune(cfg, out_dir)
  meta = shards.load_metadata(os.path.join(tiny["corpus"], FEW_SHOT))
  first_two = sorted((e["shard"], e["index"]) for e in meta["episodes"] if not e["val"])[:2]
  for r in out["runs"]:
    if r["mode"] in ("finetune", "scratch"):
      assert r["train_episodes"] == 2 and r["step"] == 2
      with open(os.path.join(r["checkpoint"], "run_config.json")) as f:
        rc = json.load(f)
      assert rc["data"]["max_episodes"] == 2 and rc["data"]["environments"] == [FEW_SHOT]
      assert rc["init_from"] == (r["pretrained"] if r["mode"] == "finetune" else "")
      # What the run's training pipeline reads: exactly the first two training episodes.
      import ml_collections

      pc = corpus_lib.pipeline_config(ml_collections.ConfigDict(rc).data, [FEW_SHOT], 0)
      wins = pipeline.load_env(pc, 0, FEW_SHOT).windows
      assert sorted({(int(w[0]), int(w[1])) for w in wins}) == first_two
      # ... while its validation keeps every held-out episode.
      assert (
        pipeline.load_env(
          corpus_lib.pipeline_config(ml_collections.ConfigDict(rc).data, [FEW_SHOT], 0, "val"), 0, FEW_SHOT
        ).windows.shape[0]
        > 0
      )
      assert r["envs"][FEW_SHOT]["windows"] > 0
  assert os.path.exists(os.path.join(out_dir, "results.md"))


@pytest.mark.timeout(250)
def test_scaling_driver_tiny(tiny, tmp_path):
  cfg = scaling_config.get_config("tiny")
  cfg.models = ("mlp_ensemble",)  # the driver is model-agnostic; this one compiles in seconds
  cfg.pretrain = _pretrain_cfg(tiny["corpus"], steps=1)
  cfg.environments = PRETRAIN
  cfg.eval_environments, cfg.eval_collect = (ZERO_SHOT,), None
  cfg.eval.max_windows = 4
  out = scaling_lib.scaling(cfg, str(tmp_path / "sc"))
  recs = {r["num_envs"]: r for r in out["records"]}
  assert sorted(recs) == [1, 2]
  assert recs[1]["environments"] == [PRETRAIN[0]] and recs[2]["environments"] == list(PRETRAIN)
  for r in recs.values():
    assert r["heldout"]["all"]["windows"] > 0 and r["anchor"]["envs"].keys() == {PRETRAIN[0]}
  assert os.path.exists(tmp_path / "sc" / "plots" / "error_vs_num_envs.png")
  # hold-last beside the models on the same windows: per N, one value per set, in the table
  hold = out["summary_mae_x100_mean_std"][scaling_lib.HOLD]
  assert set(hold["heldout"]) == {"1", "2"} and hold["anchor"]["1"] == hold["anchor"]["2"]
  assert hold["heldout"]["1"][0] > 0 and os.path.exists(tmp_path / "sc" / "hold_last" / "n002.json")
  assert scaling_lib.HOLD in (tmp_path / "sc" / "results.md").read_text()


def test_evaluation_scores_what_the_api_predicts(tiny):
  """The evaluator's batches (the data pipeline's, as training validates) and Model.predict (the public
  API, as control plans) are one computation: the same windows give the same predictions."""
  import westworld_jax as ww  # pylint: disable=import-outside-toplevel
  from westworld_jax.data import normalise  # pylint: disable=import-outside-toplevel

  ckpt = ev.load_checkpoint(tiny["ckpt"])
  h, f = ckpt.model.history, 4
  evaluator = ev.Evaluator.for_checkpoint(ckpt, batch_size=4, horizon=f)
  res = evaluator.evaluate_env(tiny["corpus"], ZERO_SHOT, keep_examples=3)
  assert res.split == "val" and len(res.examples) == 3
  env_dir = os.path.join(tiny["corpus"], ZERO_SHOT)
  robot = catalogue.load(shards.load_metadata(env_dir)["robot"]["source"])
  train = shards.read_episodes(env_dir, "train")
  data = tuple(np.concatenate([e[k] for e in train]) for k in ("obs", "act"))  # the environment's own statistics
  model = ww.load(tiny["ckpt"])
  w = ww.windows(shards.read_episodes(env_dir, "val"), h, f, stride=1)
  pred = model.predict(robot, w.obs, w.act, w.future_act, data=data)
  norm = model.normaliser(robot, data)
  lo, span = norm.obs_min, normalise.span(norm.obs_min, norm.obs_max)
  hist = normalise.normalise(w.obs, lo, span)
  for obs_tc, pred_tc in res.examples:
    i = int(np.argmin(np.abs(hist - obs_tc[None, :h]).max(axis=(1, 2))))  # the api window of this example
    np.testing.assert_allclose(hist[i], obs_tc[:h], atol=1e-5)
    np.testing.assert_allclose(normalise.normalise(pred[i], lo, span), np.clip(pred_tc[h:], 0, 1), atol=1e-4)
