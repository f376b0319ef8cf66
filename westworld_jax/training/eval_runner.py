"""The runner of the eval step (step.make_eval_step) over host batches, pooling the metric
(model/metrics.py): training's Validator (validator.py) and evaluation's Evaluator
(evaluation/evaluator.py) both evaluate through `run_eval`."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import jax
import numpy as np

from westworld_jax.model.batch import pad_batch
from westworld_jax.model.metrics import Pooled
from westworld_jax.training.distributed import to_global


@dataclasses.dataclass
class EvalRun:
  pooled: Pooled  # every evaluated window, per horizon step too
  by_env: dict[int, Pooled]  # per env_id: the sums of its windows (no per-step sums)
  examples: list[tuple[int, np.ndarray, np.ndarray]]  # (env_id, obs_tc, pred_tc): first windows, real steps/channels


def run_eval(
  eval_step: Callable,
  params: Any,
  batches: Iterable[dict],
  batch_size: int,
  history: int,
  *,
  sharding: Any = None,
  max_windows: int = 0,
  keep_examples: int = 0,
) -> EvalRun:
  """Evaluates the batches (each padded to batch_size; padding windows count nowhere).

  sharding: put each batch on the mesh with it, every process holding the same full batch (the
  caller sets the mesh); None: pass host arrays to the step. max_windows: stop after that many
  windows (0: all).
  """
  run = EvalRun(Pooled(history), {}, [])
  for b in batches:
    if max_windows:
      b = {k: v[: max_windows - run.pooled.windows] for k, v in b.items()}
    n = len(b["obs"])
    padded = pad_batch(b, batch_size)
    pred, err = eval_step(params, padded if sharding is None else to_global(padded, sharding, per_process=False))
    err = jax.device_get(err)
    run.pooled.add(err, n)
    for e, sa, ss, c in zip(b["env_id"], err["sum_abs_b"], err["sum_sq_b"], err["count_b"]):
      if c > 0:
        run.by_env.setdefault(int(e), Pooled(history)).add({"sum_abs": sa, "sum_sq": ss, "count": c}, 1)
    if len(run.examples) < keep_examples:
      pred = np.asarray(jax.device_get(pred))
      for i in range(min(n, keep_examples - len(run.examples))):
        t, co = int(b["time_mask"][i].sum()), int(b["obs_mask"][i].sum())
        run.examples.append((int(b["env_id"][i]), b["obs"][i, :t, :co], pred[i, :t, :co]))
    if max_windows and run.pooled.windows >= max_windows:
      break
  return run
