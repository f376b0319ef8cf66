"""Checks of a training config's numeric fields, before any work starts: each names its field."""

from __future__ import annotations

import math

from westworld_jax import cli


class ConfigError(cli.UserError, ValueError):
  """A config field has a value the run cannot use; the message names the field."""


# (path, lower bound, whether the bound itself is allowed)
_BOUNDS = (
  ("total_steps", 0, False),
  ("max_steps_per_run", 0, True),
  ("data.batch_size", 0, False),
  ("data.eval_batch_size", 0, False),
  ("data.history", 0, False),
  ("data.horizon", 0, False),
  ("data.num_threads", 0, True),
  ("data.prefetch", 0, True),
  ("optim.lr", 0, True),
  ("optim.warmup_steps", 0, True),
  ("optim.final_lr_fraction", 0, True),
  ("optim.clip_norm", 0, True),
  ("optim.weight_decay", 0, True),
  ("optim.eps", 0, False),
  ("checkpoint.every", 0, False),
  ("checkpoint.keep", 0, False),
  ("eval.every", 0, False),
  ("eval.max_batches", 0, True),
  ("log.every", 0, False),
)


def _get(cfg, path: str):
  node = cfg
  for p in path.split("."):
    if node is None or p not in node:
      return None
    node = node[p]
  return node


def check_training_config(cfg) -> None:
  """Raises ConfigError listing every numeric field out of range (e.g. `data.batch_size must be
  > 0 (got 0)`). A NaN learning rate passes: the training step reports the non-finite loss."""
  problems = []
  for path, low, inclusive in _BOUNDS:
    v = _get(cfg, path)
    if v is None or isinstance(v, bool):
      continue
    if not isinstance(v, (int, float)):
      problems.append(f"{path} must be a number (got {v!r})")
    elif v < low or (v == low and not inclusive) or v == math.inf:
      problems.append(
        f"{path} must be {'>=' if inclusive else '>'} {low}{'' if v != math.inf else ' and finite'} (got {v!r})"
      )
  for path in ("optim.b1", "optim.b2"):
    v = _get(cfg, path)
    if isinstance(v, (int, float)) and not 0 <= v < 1:
      problems.append(f"{path} must be in [0, 1) (got {v!r})")
  if problems:
    raise ConfigError("; ".join(problems))
