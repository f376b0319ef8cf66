"""Validation during training: held-out episodes of the training environments, evaluated every
eval.every steps (and at the last step); MAE/MSE pooled over valid elements, per environment, and a
plot of the first window in <workdir>/plots/."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from absl import logging

from westworld_jax.data import pipeline
from westworld_jax.model.batch import pad_batch
from westworld_jax.training import corpus as corpus_lib
from westworld_jax.training import logs
from westworld_jax.training import mesh as mesh_lib
from westworld_jax.training import step as step_lib
from westworld_jax.training.distributed import to_global


class Validator:
  """Validation on held-out episodes of the training environments: the whole horizon from one
  predict call (history given, true actions), MAE/MSE pooled over valid elements."""

  def __init__(self, cfg, model, envs: list[str], mesh, params_shardings):
    self.cfg, self.model, self.mesh = cfg, model, mesh
    self.envs = corpus_lib.validation_environments(cfg.data, envs)
    self.batches: list[dict] = []
    if not self.envs:
      logging.warning("no validation episodes in %s: validation is skipped", cfg.data.corpus_dir)
      return
    pcfg = dataclasses.replace(
      corpus_lib.pipeline_config(cfg.data, self.envs, cfg.seed, split="val"), process_index=0, process_count=1
    )  # every host evaluates the same windows
    ds, _ = pipeline.make_dataset(pcfg)
    eb = cfg.data.eval_batch_size
    for i, b in enumerate(ds):
      if i >= cfg.eval.max_batches:
        break
      self.batches.append(pad_batch(b, eb))
    self.sharding = mesh_lib.batch_sharding(mesh, mesh_lib.config_rules(cfg.mesh))
    self.eval_step = step_lib.make_eval_step(model, params_shardings, self.sharding)

  def __call__(self, params, step: int, workdir: str | None) -> dict | None:
    if not self.batches:
      return None
    tot = {"sum_abs": 0.0, "sum_sq": 0.0, "count": 0.0}
    per_env = {}
    first = None
    with jax.set_mesh(self.mesh):
      for b in self.batches:
        pred, err = self.eval_step(params, to_global(b, self.sharding, per_process=False))
        err = jax.device_get(err)
        for k in tot:
          tot[k] += float(err[k])
        for e, sa, ss, c in zip(b["env_id"], err["sum_abs_b"], err["sum_sq_b"], err["count_b"]):
          if c > 0:
            acc = per_env.setdefault(self.envs[int(e)], [0.0, 0.0, 0.0])
            acc[0] += float(sa)
            acc[1] += float(ss)
            acc[2] += float(c)
        if first is None:
          first = (b, np.asarray(jax.device_get(pred)))
    n = max(tot["count"], 1.0)
    out = {"val_mae": tot["sum_abs"] / n, "val_mse": tot["sum_sq"] / n}
    out.update({f"val_mae/{e}": a / max(c, 1.0) for e, (a, _, c) in sorted(per_env.items())})
    if workdir and jax.process_index() == 0 and first is not None:
      b, pred = first
      env = self.envs[int(b["env_id"][0])]
      t = int(b["time_mask"][0].sum())
      co = int(b["obs_mask"][0].sum())
      logs.plot_predictions(
        os.path.join(workdir, "plots", f"val_step_{step:08d}.png"),
        b["obs"][0, :t, :co],
        pred[0, :t, :co],
        self.model.history,
        corpus_lib.channel_names(self.cfg.data, env),
        f"{env}, step {step}: validation window (normalised)",
      )
    return out
