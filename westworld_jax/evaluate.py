"""The evaluation command:

  python -m westworld_jax.evaluate --config experiments/zero_shot.py[:tiny] --checkpoint DIR [--workdir OUT]
  python -m westworld_jax.evaluate --config experiments/zero_shot.py --checkpoint DIR \
      --robot my_robot.xml --data my_trajectories.hdf5          (your own robot and data)

--checkpoint takes training workdirs, comma-separated, optionally labelled: `westworld=A,westworld=B,
trajworld=C` (a label given twice = seeds: tables show mean ± std). Unlabelled: the model's name.
Every checkpoint is evaluated on every environment of the config with the protocol of
westworld_jax/evaluation (held-out episodes, each environment's own normalisation, the whole horizon
from one predict call), beside the hold-last-observation reference.
Writes OUT/results.json, OUT/results.md, OUT/plots/*.png.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from westworld_jax import cli
from westworld_jax import evaluation as ev
from westworld_jax.data import importers
from westworld_jax.robots import catalogue
from westworld_jax.errors import UserError


class EvaluationError(UserError, ValueError):
  """The evaluation command was given inputs that do not go together; the message says what to pass."""


def evaluate(
  cfg, checkpoints: Sequence[tuple[str | None, str]], outdir: str, robot: str | None = None, data: str | None = None
) -> dict:
  """The whole evaluation command: every checkpoint on every environment; writes the report."""
  if not checkpoints:
    raise EvaluationError("no checkpoint: pass --checkpoint DIR (a training workdir), or set config.checkpoints")
  corpus_dir, envs = cfg.corpus_dir, list(cfg.environments)
  if bool(robot) != bool(data):
    raise EvaluationError("--robot and --data go together: the robot's MJCF and its trajectories (HDF5/npz)")
  ckpts = [ev.load_checkpoint(path, label) for label, path in checkpoints]  # a bad --checkpoint fails before any work
  if robot:  # the user's own robot: import it as a corpus environment first
    name = ev.safe_name(os.path.splitext(os.path.basename(data))[0])
    corpus_dir = os.path.join(outdir, "imported")
    # Imported anew each time (overwrite): the same outdir may be reused with other data.
    history = min(c.model.history for c in ckpts)
    user_robot = catalogue.load(robot)
    for c in ckpts:  # before the import: a robot the model cannot take is one line, not an imported corpus
      horizon = int(cfg.horizon or c.run_config["data"]["horizon"])
      c.model.check_robot_of(
        user_robot,
        f"robot '{user_robot.name}' ({c.model.history} history + {horizon} predicted steps) for {c.workdir}",
        "evaluate a model pretrained with a larger model.{field} (or, for max_window_len, a shorter --config.horizon)",
        window_len=c.model.history + horizon,
      )
    trained = frozenset()
    if not cfg.require_unseen:  # episodes a checkpoint trained on (e.g. fine-tuning on this file) are never scored
      robot_name = user_robot.name
      for c in ckpts:
        digests, unread = ev.trained_episodes(c, robot_name)
        trained |= digests
        for env_dir in unread:
          logging.warning(
            "%s trained on %s, which is not readable here: episodes of %s it trained on cannot be told apart "
            "and may be scored",
            c.workdir,
            env_dir,
            data,
          )
    importers.import_file(
      robot,
      data,
      corpus_dir,
      name,
      split="zero_shot",
      val_fraction=cfg.import_val_fraction,
      overwrite=True,
      history=history,
      trained=trained,
    )
    envs = [name]
  else:
    ev.ensure_environments(corpus_dir, envs, cfg.get("collect"))
  runs, t0 = [], time.perf_counter()
  for ckpt in ckpts:
    res = ev.evaluate_checkpoint(
      ckpt,
      corpus_dir,
      envs,
      require_unseen=cfg.require_unseen,
      batch_size=cfg.batch_size,
      horizon=cfg.horizon,
      max_windows=cfg.max_windows,
      keep_examples=cfg.plot_windows,
    )
    for r in res.values():
      ev.plot_examples(outdir, ckpt.label, r, ckpt.model.history)
    runs.append(ev.run_record(ckpt, res, cfg.horizon))
  if cfg.get("reference", True):
    ref = ev.hold_last_reference(ckpt)
    res = ev.evaluate_checkpoint(
      ref,
      corpus_dir,
      envs,
      require_unseen=True,
      batch_size=cfg.batch_size,
      horizon=cfg.horizon,
      max_windows=cfg.max_windows,
      keep_examples=0,
    )
    runs.append(ev.run_record(ref, res, cfg.horizon))
  seen = sorted({e for c in ckpts for e in c.trained_envs} & set(envs))
  title = cfg.get("title", "Zero-shot trajectory prediction")
  if seen:  # require_unseen=False: not zero-shot, and the page says so
    title = f"Prediction on held-out episodes of environments a model trained on ({', '.join(seen)}): not zero-shot"
  return ev.report(
    outdir,
    runs,
    envs,
    title,
    {"config": cfg.to_dict(), "corpus_dir": os.path.abspath(corpus_dir), "seconds": time.perf_counter() - t0},
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cfg = _CONFIG.value
  checkpoints = ev.parse_checkpoints(_CHECKPOINT.value or cfg.checkpoints)
  out = evaluate(cfg, checkpoints, _WORKDIR.value, _ROBOT.value, _DATA.value)
  print(open(os.path.join(_WORKDIR.value, "results.md")).read().split("## Runs")[0])
  print(f"wrote {_WORKDIR.value}/results.json, results.md, plots/ ({out['seconds']:.0f}s)")


if __name__ == "__main__":
  # Flags only when run as a program: importing this module defines none.
  _ROBOT = flags.DEFINE_string(
    "robot",
    None,
    "Your robot's MJCF/URDF (or a catalogue name): evaluate on "
    "its trajectories (--data), imported as a zero-shot environment.",
  )
  _DATA = flags.DEFINE_string("data", None, "Trajectories of --robot: HDF5 (D4RL/Minari layout) or .npz.")
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/zero_shot.py", "Evaluation config file.")
  _CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    "",
    "Training workdir(s): DIR or label=DIR, comma-separated (a label twice = seeds). Default: config.checkpoints.",
  )
  _WORKDIR = flags.DEFINE_string("workdir", "workdirs/evaluate", "Output directory (results.json, results.md, plots).")
  cli.run(main)
