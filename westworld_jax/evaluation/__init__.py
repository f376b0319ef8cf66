"""Evaluation as in the paper (the protocol below, as the authors' code computes it); the command is
`python -m westworld_jax.evaluate` (westworld_jax/evaluate.py).

Protocol, per evaluated environment:
  - windows of history + horizon steps (the checkpoint's history; 50 + 100 at base), cut without
    overlap from the environment's held-out episodes (split "val": whole episodes that were used
    neither for training nor for statistics). A zero-shot environment without val episodes falls
    back to its other episodes (the model never saw the robot at all); results say so.
  - normalised to [0, 1] with the min-max of that environment's OWN training episodes (its corpus
    metadata), never with statistics of the pretraining run (its data_stats.json is not read here).
  - one model.predict call per batch predicts the whole horizon from the history and the true
    actions (baselines roll out inside predict).
  - MAE and MSE pooled over every valid (window, step >= history, channel) element in the normalised
    space (padded channels and steps past an episode's end never count), also x100 (the scale of the
    paper's tables); per horizon step; per environment and per robot (its environments pooled).
  - zero-shot (`require_unseen`): refuses a checkpoint trained on the robot (name or MJCF fingerprint).
  - otherwise (after fine-tuning), a user's file imported for evaluation holds out exactly the
    episodes no checkpoint trained on (by content: checkpoints.trained_episodes), never a training one.

Modules: checkpoints (loading, the hold-last reference, the leak check), evaluator (one checkpoint
on environments), report (tables, plots, JSON). The metric is model/metrics.py, and the eval step
and its runner are training's (training/step.py, training/eval_runner.py), so that validation
during training and evaluation after it measure alike.
"""

from westworld_jax.evaluation.checkpoints import (
  Checkpoint,
  HeldOutLeakError,
  check_unseen,
  HOLD_LAST_LABEL,
  hold_last_reference,
  load_checkpoint,
  parse_checkpoints,
  trained_episodes,
)
from westworld_jax.evaluation.evaluator import (
  EnvResult,
  Evaluator,
  ensure_environments,
  env_summaries,
  evaluate_checkpoint,
)
from westworld_jax.evaluation.report import (
  PROTOCOL,
  first_step_mae_x100,
  fmt,
  markdown_table,
  mean_std,
  plot_error_vs_horizon,
  plot_examples,
  report,
  run_record,
  safe_name,
  save_figure,
  write_json,
)
from westworld_jax.model.metrics import X100, Pooled, pooled_errors
