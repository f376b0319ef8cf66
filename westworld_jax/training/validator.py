"""Validation during training: held-out episodes of the training environments, evaluated every
eval.every steps (and at the last step) by the eval runner (eval_runner.py) under the mesh; MAE/MSE
pooled over valid elements, per environment, and a plot of the first window in <workdir>/plots/."""

from __future__ import annotations

import dataclasses
import itertools
import os

import jax
from absl import logging

from westworld_jax.data import pipeline
from westworld_jax.model.metrics import Pooled, horizon_errors
from westworld_jax.model.world_model import hold_last
from westworld_jax.training import corpus as corpus_lib
from westworld_jax.training import logs
from westworld_jax.training import mesh as mesh_lib
from westworld_jax.training import step as step_lib
from westworld_jax.training.eval_runner import run_eval


class Validator:
  """Validation on held-out episodes of the training environments: the whole horizon from one
  predict call (history given, true actions), MAE/MSE pooled over valid elements."""

  def __init__(self, cfg, model, envs: list[str], mesh, params_shardings):
    self.cfg, self.model, self.mesh = cfg, model, mesh
    self.envs = corpus_lib.validation_environments(cfg.data, envs)
    self.batches: list[dict] = []
    self.last_plot = ""  # the newest validation plot (the training loop shows it in TensorBoard)
    self._plot_failed = False
    if not self.envs:
      logging.warning("no validation episodes in %s: validation is skipped", cfg.data.corpus_dir)
      return
    pcfg = dataclasses.replace(
      corpus_lib.pipeline_config(cfg.data, self.envs, cfg.seed, split="val"), process_index=0, process_count=1
    )  # every host evaluates the same windows
    ds, _ = pipeline.make_dataset(pcfg)
    self.batches = list(itertools.islice(ds, cfg.eval.max_batches))
    self.hold_last = _hold_last(self.batches, model.history)  # the reference on the same windows
    self.sharding = mesh_lib.batch_sharding(mesh, mesh_lib.config_rules(cfg.mesh))
    self.eval_step = step_lib.make_eval_step(model, params_shardings, self.sharding)

  def __call__(self, params, step: int, workdir: str | None) -> dict | None:
    self.last_plot = ""  # this validation's plot, if it makes one (never an older step's)
    if not self.batches:
      return None
    with jax.set_mesh(self.mesh):
      run = run_eval(
        self.eval_step,
        params,
        self.batches,
        self.cfg.data.eval_batch_size,
        self.model.history,
        sharding=self.sharding,
        keep_examples=1,
      )
    n = max(run.pooled.count, 1.0)
    out = {"val_mae": run.pooled.sum_abs / n, "val_mse": run.pooled.sum_sq / n}
    out["val_first_step_mae"] = _first_step_mae(run.pooled)
    out.update(self.hold_last)
    per_env = {self.envs[e]: p for e, p in run.by_env.items()}
    out.update({f"val_mae/{e}": p.sum_abs / max(p.count, 1.0) for e, p in sorted(per_env.items())})
    if workdir and jax.process_index() == 0 and run.examples:
      env_id, obs, pred = run.examples[0]
      path = os.path.join(workdir, "plots", f"val_step_{step:08d}.png")
      try:
        self.last_plot = logs.plot_predictions(
          path,
          obs,
          pred,
          self.model.history,
          corpus_lib.channel_names(self.cfg.data, self.envs[env_id]),
          f"{self.envs[env_id]}, step {step}: validation window (normalised)",
        )
      except OSError as e:  # a plot is never worth the run (a full disk: the next save says so)
        if not self._plot_failed:
          logging.warning("validation plots are not written (%s: %s)", path, e.strerror or e)
        self._plot_failed = True
    return out


def _first_step_mae(pooled: Pooled) -> float:
  """MAE of the first predicted step (window step `history`) over the evaluated windows."""
  h = pooled.history
  return float(pooled.sum_abs_t[h] / max(pooled.count_t[h], 1.0))


def _hold_last(batches: list[dict], history: int) -> dict:
  """Holding the last observation on the validation windows: its MAE over the horizon and at the first
  step, beside the model's (a learning curve below these has learned dynamics)."""
  pooled = Pooled(history)
  for b in batches:
    pooled.add(horizon_errors(hold_last(b, history), b, history), len(b["obs"]))
  if not pooled.count:
    return {}
  return {"val_hold_last_mae": pooled.sum_abs / pooled.count, "val_hold_last_first_step_mae": _first_step_mae(pooled)}
