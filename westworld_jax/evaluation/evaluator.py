"""The Evaluator: one checkpoint on an environment's held-out windows, per the protocol
(evaluation/__init__.py), with training's eval step and runner (training/step.py, eval_runner.py)."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

import ml_collections
from absl import logging

from westworld_jax.data import pipeline, shards
from westworld_jax.evaluation.checkpoints import Checkpoint, check_unseen
from westworld_jax.model.metrics import Pooled
from westworld_jax.training import corpus as corpus_lib
from westworld_jax.training import eval_runner, validate
from westworld_jax.training import step as step_lib


@dataclasses.dataclass
class EnvResult:
  env: str
  robot: str
  pooled: Pooled
  split: str  # which episodes were evaluated
  episodes: int
  examples: list  # [(obs_tc, pred_tc)] of the first windows, for plots
  channel_names: list[str]


class Evaluator:
  """One checkpoint's jitted (predict + error sums): the whole horizon from ONE predict call."""

  def __init__(
    self,
    model,
    params,
    batch_size: int,
    history: int,
    horizon: int,
    obs_buckets: Sequence[int] = (),
    act_buckets: Sequence[int] = (),
  ):
    if history != model.history:
      raise ValueError(f"history {history} differs from the model's {model.history}")
    model.check_fits(
      f"history {history} + horizon {horizon}", "evaluate a shorter horizon", max_window_len=history + horizon
    )
    self.model, self.params = model, params
    self.batch_size, self.history, self.horizon = batch_size, history, horizon
    self.max_obs = model.capacity.max_obs_channels
    self.max_act = model.capacity.max_act_channels
    self.obs_buckets = pipeline.channel_buckets(obs_buckets or pipeline.DEFAULT_OBS_BUCKETS, self.max_obs)
    self.act_buckets = pipeline.channel_buckets(act_buckets or pipeline.DEFAULT_ACT_BUCKETS, self.max_act)
    self._step = step_lib.make_eval_step(model)

  @classmethod
  def for_checkpoint(cls, ckpt: Checkpoint, batch_size: int, horizon: int = 0) -> "Evaluator":
    d = ckpt.run_config["data"]
    return cls(
      ckpt.model,
      ckpt.params,
      batch_size,
      int(d["history"]),
      int(horizon or d["horizon"]),
      d.get("obs_buckets", ()),
      d.get("act_buckets", ()),
    )

  def _pipeline(self, corpus_dir: str, env: str, split: str) -> pipeline.PipelineConfig:
    return pipeline.PipelineConfig(
      corpus_dir,
      (env,),
      batch_size=self.batch_size,
      history=self.history,
      horizon=self.horizon,
      split=split,
      obs_buckets=self.obs_buckets,
      act_buckets=self.act_buckets,
      shuffle=False,
      repeat=False,
      num_threads=0,
    )

  def evaluate_env(
    self, corpus_dir: str, env: str, max_windows: int = 0, keep_examples: int = 3, allow_train_fallback: bool = False
  ) -> EnvResult:
    env_dir = os.path.join(corpus_dir, env)
    meta = shards.load_metadata(env_dir)
    validate.check_env_fits(self.model, meta, env, "this robot needs a model pretrained with a larger model.{field}")
    split = "val"
    if not len(pipeline.load_env(self._pipeline(corpus_dir, env, "val"), 0, env).windows):
      if not allow_train_fallback:
        raise shards.CorpusError(
          f"{env} has no held-out (val) episodes longer than {self.history} steps: collect more episodes for it"
        )
      logging.warning(
        "%s has no val episodes: evaluating its training-split episodes (the model never trained on this robot)", env
      )
      split = "train"
    cfg = self._pipeline(corpus_dir, env, split)
    env_data = pipeline.load_env(cfg, 0, env)
    ds, _ = pipeline.make_dataset(cfg)
    run = eval_runner.run_eval(
      self._step,
      self.params,
      ds,
      self.batch_size,
      self.history,
      max_windows=max_windows,
      keep_examples=keep_examples,
    )
    done = run.pooled.windows
    episodes = len({(int(w[0]), int(w[1])) for w in env_data.windows[:done]})  # unshuffled: in order
    return EnvResult(
      env,
      meta["robot"]["name"],
      run.pooled,
      "val" if split == "val" else "train (no val episodes; robot unseen by the model)",
      episodes,
      [(obs, pred) for _, obs, pred in run.examples],
      [c["name"] for c in meta["robot"]["obs_channels"]],
    )


def evaluate_checkpoint(
  ckpt: Checkpoint,
  corpus_dir: str,
  environments: Sequence[str],
  *,
  require_unseen: bool,
  batch_size: int = 8,
  horizon: int = 0,
  max_windows: int = 0,
  keep_examples: int = 3,
) -> dict[str, EnvResult]:
  ev = Evaluator.for_checkpoint(ckpt, batch_size, horizon)
  out = {}
  for env in environments:
    if require_unseen:
      check_unseen(ckpt, os.path.join(corpus_dir, env))
    t0 = time.perf_counter()
    out[env] = ev.evaluate_env(corpus_dir, env, max_windows, keep_examples, allow_train_fallback=require_unseen)
    logging.info(
      "%s on %s: MAE %.4f (%d windows, %.1fs)",
      ckpt.label,
      env,
      out[env].pooled.summary()["mae"],
      out[env].pooled.windows,
      time.perf_counter() - t0,
    )
  return out


def env_summaries(results: dict[str, EnvResult]) -> dict:
  """{"envs": {env: summary}, "robots": {robot: pooled summary}, "all": pooled summary}."""
  envs = {
    e: {**r.pooled.summary(), "robot": r.robot, "split": r.split, "episodes": r.episodes} for e, r in results.items()
  }
  by_robot: dict[str, Pooled] = {}
  for r in results.values():
    by_robot[r.robot] = by_robot[r.robot].merge(r.pooled) if r.robot in by_robot else r.pooled
  total = None
  for r in results.values():
    total = r.pooled if total is None else total.merge(r.pooled)
  return {
    "envs": envs,
    "robots": {k: v.summary() for k, v in by_robot.items()},
    "all": total.summary() if total is not None else None,
  }


def ensure_environments(corpus_dir: str, environments: Sequence[str], collect_cfg) -> None:
  """Generates missing environments with the data collector (as training.corpus.ensure_corpus does)."""
  if collect_cfg is not None:
    collect_cfg = collect_cfg.copy_and_resolve_references()
    collect_cfg.environments, collect_cfg.max_environments = tuple(environments), 0
  corpus_lib.ensure_corpus(
    ml_collections.ConfigDict(
      {
        "corpus_dir": corpus_dir,
        "environments": tuple(environments),
        "collect": collect_cfg,
        "shared_filesystem": False,
      }
    )
  )
