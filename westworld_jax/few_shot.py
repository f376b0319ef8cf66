"""Few-shot adaptation: `python -m westworld_jax.few_shot --config experiments/few_shot.py[:variant]
[--config.pretrained=westworld=DIR,trajworld=DIR,...] [--workdir OUT]`.

For every few-shot environment (held-out robots: Cassie, Unitree A1, UR5e) and every pretrained
checkpoint (WestWorld and each baseline), per seed:
  - fine-tune: the checkpoint's params, model and recipe with a fresh optimizer (training/finetune.py),
    trained by training.loop.train on EXACTLY `episodes` training episodes of the environment (the
    first N in corpus order, pipeline max_episodes; the run fails if fewer exist), `steps` steps at
    `lr` (upstream: 300, 1e-5);
  - scratch: the same model, data and steps from a random init (labels in `scratch`, `scratch_lr`);
  - zero-shot: the pretrained checkpoint as it is (no adaptation), for reference;
then evaluates each on the environment's held-out (val) episodes with westworld_jax.evaluation
(same protocol and normalisation: the environment's own training-episode min-max).
Runs live in OUT/runs/<env>/<label>-<mode>-s<seed> (a rerun skips finished ones); OUT/results.json,
results.md and plots/ compare them.

Seeds: a label given n times (westworld=DIR0,westworld=DIR1,...) is n pretraining seeds: the i-th
checkpoint is fine-tuned once per seed in `seeds` (runs ...-finetune-s<seed>-p<i> for i > 0), and
scratch runs, which use no pretrained weights, run once per seed in `scratch_seeds` (default
`seeds`). The tables pool every run of a label: mean ± std over pretraining x fine-tuning seeds.
"""

from __future__ import annotations

import collections
import os
import time

from absl import app, flags
from ml_collections import config_flags

from westworld_jax import cli
from westworld_jax import evaluation as ev
from westworld_jax.data import pipeline
from westworld_jax.training import corpus as corpus_lib
from westworld_jax.training import finetune as finetune_lib
from westworld_jax.training import loop

_CONFIG = _WORKDIR = None  # flags, defined only when run as a program


def training_episodes(cfg) -> int:
  """How many distinct episodes the run's training pipeline reads (must be exactly data.max_episodes)."""
  env = cfg.data.environments[0]
  wins = pipeline.load_env(corpus_lib.pipeline_config(cfg.data, [env], cfg.seed), 0, env).windows
  return len({(int(w[0]), int(w[1])) for w in wins})


def adapt(
  cfg, label: str, pretrained: str, env: str, mode: str, seed: int, outdir: str, pretrain_index: int = 0
) -> dict:
  """One fine-tuning ('finetune') or from-scratch ('scratch') run on env; returns its evaluated record.
  pretrain_index: which checkpoint of a label given several times (pretraining seeds) this run starts from."""
  steps = cfg.steps if mode == "finetune" else cfg.scratch_steps
  rc = finetune_lib.finetune_config(
    pretrained,
    env=env,
    corpus_dir=cfg.corpus_dir,
    episodes=cfg.episodes,
    steps=steps,
    lr=cfg.lr if mode == "finetune" else cfg.scratch_lr,
    warmup_steps=cfg.warmup_steps if mode == "finetune" else cfg.scratch_warmup_steps,
    final_lr_fraction=cfg.final_lr_fraction,
    batch_size=cfg.batch_size,
    seed=seed,
    from_pretrained=mode == "finetune",
  )
  n_eps = training_episodes(rc)
  if n_eps != cfg.episodes:
    raise AssertionError(f"{env}: the training pipeline reads {n_eps} episodes, not {cfg.episodes}")
  suffix = f"-p{pretrain_index}" if pretrain_index else ""  # index 0 keeps the one-checkpoint name
  workdir = os.path.join(outdir, "runs", ev.safe_name(env), f"{ev.safe_name(label)}-{mode}-s{seed}{suffix}")
  t0 = time.perf_counter()
  result = loop.train_to_end(rc, workdir)  # resumes / returns at once when the run is already finished
  seconds = time.perf_counter() - t0
  ckpt = ev.load_checkpoint(workdir, f"{label} {'fine-tuned' if mode == 'finetune' else 'scratch'}")
  res = _evaluate(cfg, ckpt, env, require_unseen=False, keep_examples=cfg.eval.plot_windows)
  for r in res.values():
    ev.plot_examples(outdir, ckpt.label, r, ckpt.model.history)
  last = next((r for r in reversed(result.rows) if "loss" in r), {})
  return {
    **ev.run_record(ckpt, res),
    "env": env,
    "mode": mode,
    "seed": seed,
    "pretrained": pretrained,
    "pretrain_index": pretrain_index if mode == "finetune" else None,
    "train_episodes": n_eps,
    "train_steps": steps,
    "lr": rc.optim.lr,
    "train_seconds": seconds,
    "final_loss": last.get("loss"),
  }


def _evaluate(cfg, ckpt, env: str, require_unseen: bool, keep_examples: int) -> dict:
  """The few-shot robot's held-out windows under the config's evaluation settings."""
  return ev.evaluate_checkpoint(
    ckpt,
    cfg.corpus_dir,
    [env],
    require_unseen=require_unseen,
    batch_size=cfg.eval.batch_size,
    max_windows=cfg.eval.max_windows,
    keep_examples=keep_examples,
  )


def zero_shot(cfg, label: str, pretrained: str, env: str, outdir: str) -> dict:
  ckpt = ev.load_checkpoint(pretrained, f"{label} zero-shot")
  res = _evaluate(cfg, ckpt, env, require_unseen=True, keep_examples=0)
  return {**ev.run_record(ckpt, res), "env": env, "mode": "zero_shot", "seed": None, "pretrained": pretrained}


def finetune(cfg, outdir: str) -> dict:
  pretrained = ev.parse_checkpoints(cfg.pretrained)
  if not pretrained:
    raise ValueError(
      "set --config.pretrained=label=DIR[,label=DIR...] (pretraining workdirs, e.g. from "
      "`python -m westworld_jax.scaling` or `python -m westworld_jax.train`)"
    )
  pretrained = [(lab or ev.load_checkpoint(p).label, os.path.abspath(p)) for lab, p in pretrained]
  for lab in cfg.scratch:
    if lab not in dict(pretrained):
      raise ValueError(f"scratch label {lab!r} is not among the pretrained labels {[l for l, _ in pretrained]}")
  if len(set(pretrained)) != len(pretrained):
    raise ValueError(
      f"a checkpoint is given twice under one label in --config.pretrained={cfg.pretrained!r}: "
      "a repeated label means several pretraining seeds, each its own workdir"
    )
  scratch_seeds = tuple(cfg.get("scratch_seeds") or cfg.seeds)
  envs = list(cfg.environments)
  ev.ensure_environments(cfg.corpus_dir, envs, cfg.get("collect"))
  t0, runs = time.perf_counter(), []
  for env in envs:
    seen = collections.Counter()
    for label, path in pretrained:
      index, seen[label] = seen[label], seen[label] + 1
      if cfg.include_zero_shot:
        runs.append(zero_shot(cfg, label, path, env, outdir))
      for seed in cfg.seeds:
        runs.append(adapt(cfg, label, path, env, "finetune", seed, outdir, pretrain_index=index))
      if label in cfg.scratch and index == 0:  # scratch ignores the weights: once per label and seed
        for seed in scratch_seeds:
          runs.append(adapt(cfg, label, path, env, "scratch", seed, outdir))
      ev.write_json(os.path.join(outdir, "runs.partial.json"), runs)  # progress survives an interruption
    if cfg.get("reference", True):
      ref = ev.hold_last_reference(ev.load_checkpoint(pretrained[0][1]))
      res = ev.evaluate_checkpoint(
        ref,
        cfg.corpus_dir,
        [env],
        require_unseen=True,
        batch_size=cfg.eval.batch_size,
        max_windows=cfg.eval.max_windows,
        keep_examples=0,
      )
      runs.append({**ev.run_record(ref, res), "env": env, "mode": "reference", "seed": None})
  title = f"Few-shot adaptation ({cfg.episodes} episodes per robot)"
  return ev.report(outdir, runs, envs, title, {"config": cfg.to_dict(), "seconds": time.perf_counter() - t0})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  out = finetune(_CONFIG.value, _WORKDIR.value)
  print(open(os.path.join(_WORKDIR.value, "results.md")).read().split("## Runs")[0])
  print(f"wrote {_WORKDIR.value}/results.json, results.md, plots/ ({out['seconds']:.0f}s)")


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/few_shot.py", "Few-shot config file.")
  _WORKDIR = flags.DEFINE_string("workdir", "workdirs/few_shot", "Output directory (runs, results, plots).")
  cli.run(main)
