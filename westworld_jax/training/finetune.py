"""Fine-tuning: a pretrained run's weights, its model and training recipe, and a fresh optimizer.

`finetune_config(pretrained_workdir, env=..., corpus_dir=..., episodes=..., steps=..., lr=...,
batch_size=...)` is the training config of one fine-tuning run: the pretrained run's config (model,
windows, optimizer and its other settings) restricted to the first `episodes` training episodes of
one environment, with its own schedule, batch and seed, and `init_from` = the pretrained workdir.
`loop.train(config, workdir)` runs it: on a fresh start, `with_pretrained_params` puts the pretrained
params into the new state, whose optimizer state stays fresh (a rerun resumes the fine-tuning run's
own checkpoints). `from_pretrained=False` gives the same run from a random init (the from-scratch
reference).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from westworld_jax.data import pipeline
from westworld_jax.training import checkpoint as ckpt_lib
from westworld_jax.training import run_files
from westworld_jax.training.run_files import read_run_config


def finetune_config(
  pretrained_workdir: str,
  *,
  env: str,
  corpus_dir: str,
  episodes: int,
  steps: int,
  lr: float,
  batch_size: int,
  seed: int = 0,
  warmup_steps: int | None = None,
  final_lr_fraction: float | None = None,
  from_pretrained: bool = True,
) -> ml_collections.ConfigDict:
  """A training config for one adaptation run: the pretrained run's model and recipe, restricted to
  the first `episodes` training episodes of `env`, with `steps` steps at peak `lr` (warmup_steps and
  final_lr_fraction: the pretrained run's when None)."""
  d = copy.deepcopy(read_run_config(pretrained_workdir))
  model = d["model"]
  data = d["data"]
  data.update(
    corpus_dir=corpus_dir,
    collect=None,
    environments=[env],
    max_episodes=int(episodes),
    weights=[],
    batch_size=batch_size,
    eval_batch_size=batch_size,
    num_threads=1,
    # the robot may exceed the pretraining buckets (e.g. cassie's 39 obs channels)
    obs_buckets=list(pipeline.channel_buckets(data["obs_buckets"], model.get("max_obs_channels"))),
    act_buckets=list(pipeline.channel_buckets(data["act_buckets"], model.get("max_act_channels"))),
  )
  d.update(
    seed=int(seed),
    total_steps=int(steps),
    max_steps_per_run=0,
    init_from=os.path.abspath(pretrained_workdir) if from_pretrained else "",
  )
  d["optim"]["lr"] = float(lr)
  if warmup_steps is not None:
    d["optim"]["warmup_steps"] = int(warmup_steps)
  if final_lr_fraction is not None:
    d["optim"]["final_lr_fraction"] = float(final_lr_fraction)
  d["checkpoint"] = {"every": int(steps), "keep": 1, "async_save": False}
  d["eval"] = {"every": 10**9, "max_batches": 0}  # callers evaluate with westworld_jax.evaluation
  d["log"] = {"every": max(1, steps // 10), "tensorboard": False, "progress": False}
  return ml_collections.ConfigDict(d)


def with_pretrained_params(state: Any, pretrained_workdir: str, shardings: Any) -> Any:
  """The state with its params replaced by those of another run's latest checkpoint, or of an export
  (inference.export), restored onto `shardings`; the rest of the state (optimizer, step) stays as given."""
  if os.path.exists(os.path.join(pretrained_workdir, run_files.EXPORT_FILE)):
    abstract = ckpt_lib.with_shardings(jax.eval_shape(lambda: state["params"]), shardings["params"])
    params = run_files.restore_export_params(pretrained_workdir, abstract)
    logging.info("initialised params from the export %s", pretrained_workdir)
    return {**state, "params": params}
  src = ckpt_lib.Checkpointer(pretrained_workdir, async_save=False)
  abstract = ckpt_lib.with_shardings(jax.eval_shape(lambda: state), shardings)
  found = src.restore_latest(abstract, None, None)
  src.close()
  if found is None:
    raise ckpt_lib.NoCheckpointError(f"init_from={pretrained_workdir} has no checkpoint under {src.directory}")
  restored, step, _ = found
  logging.info("initialised params from %s (step %d)", pretrained_workdir, step)
  return {**state, "params": restored["params"]}
