"""Checkpoints with orbax: train state, the grain iterator's state and the run's record.

A checkpoint step directory holds three items:
  state  params, optimizer state and step (orbax StandardSave; restored onto the CURRENT
         mesh's shardings, so a run may resume on a different number of devices);
  data   the grain iterator's state per process (grain's orbax handler), so the data
         order after a resume is exactly the uninterrupted one;
  run    JSON: the checkpoint format, the package version, the run identity (the model: name
         and every config field; the data: environments, batch size, window) and the whole
         config the step was written with. A rerun whose identity does not match fails with a
         message that lists the differences instead of loading wrong weights; other changes
         (optimizer, schedule, intervals) are reported field by field.
Saving is asynchronous and atomic (orbax writes to a temporary directory and renames it).
Restoring the latest step falls back to the newest step that restores when a newer one is
damaged (truncated or missing files); the damaged steps are moved to checkpoints_damaged/.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import threading
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

import westworld_jax
from westworld_jax.errors import UserError

# Layout of a step directory. 0: the run item held only the identity; 1: format, version, identity
# and config. Bump when a step directory of an older format can no longer be read.
FORMAT = 1
READABLE_FORMATS = (0, 1)
DAMAGED_DIR = "checkpoints_damaged"
# Fields that may differ on every invocation of the same run without changing what it computes.
PER_INVOCATION = (
  "max_steps_per_run",
  "init_from",
  "distributed",
  "mesh",
  "log.progress",
  "data.num_threads",
  "data.prefetch",
  "data.shared_filesystem",
  "data.shared_filesystem_stall_s",
  "model.fields_of",  # whose fields model.* holds (config_files.model_config): the built model is checked
)
# Changes on resume that make it another run (refused); every other change is reported and allowed.
REFUSED_PREFIXES = (
  "model.",
  "data.environments",
  "data.batch_size",
  "data.history",
  "data.horizon",
  "data.max_episodes",
  "data.weighting",
  "data.weights",
  "data.train_split",
)
# Files of a step directory that orbax writes as JSON (checked first so damage names its file).
_JSON_NAMES = ("_CHECKPOINT_METADATA", "metadata", "_METADATA", "_sharding")


class CheckpointMismatchError(UserError, ValueError):
  """A checkpoint in the workdir was written by a run with a different model or data, or by a
  project version whose checkpoints this one cannot read."""


class CheckpointDamagedError(UserError, ValueError):
  """No checkpoint step of the workdir restores; the message lists each step and why."""


class CheckpointSaveError(UserError, OSError):
  """Writing a checkpoint failed (e.g. the disk is full); the earlier checkpoints are intact."""


class NoCheckpointError(UserError, FileNotFoundError):
  """A directory given as a training workdir is not one, or holds no checkpoint."""


class _Damaged(Exception):
  """A step directory that cannot be read (internal: the restore falls back to an older step)."""


def run_identity(model_name: str, model_config: Any, data_cfg, environments: list[str]) -> dict:
  data = {
    "environments": list(environments),
    "batch_size": int(data_cfg.batch_size),
    "history": int(data_cfg.history),
    "horizon": int(data_cfg.horizon),
  }
  max_episodes = int(data_cfg.get("max_episodes", 0) or 0)
  if max_episodes:  # few-shot runs: a different N is a different run (absent when 0: older ids match)
    data["max_episodes"] = max_episodes
  return {
    "model": {"name": model_name, **json.loads(json.dumps(dataclasses.asdict(model_config)))},
    "data": data,
  }


def run_record(identity: dict, config: dict | None) -> dict:
  """What the run item of each step holds: format, version, identity and the whole config."""
  return {"format": FORMAT, "version": westworld_jax.__version__, **identity, "config": config}


def config_dict(cfg) -> dict:
  """The config as plain JSON values (tuples as lists), as run_config.json and the records hold it."""
  return json.loads(cfg.to_json_best_effort())


def _diff(saved: Any, current: Any, prefix: str = "") -> list[str]:
  if isinstance(saved, dict) and isinstance(current, dict):
    out = []
    for k in sorted(set(saved) | set(current)):
      out += _diff(saved.get(k, "<missing>"), current.get(k, "<missing>"), f"{prefix}{k}.")
    return out
  if saved != current:
    s, c = json.dumps(saved), json.dumps(current)
    return [f"{prefix[:-1]}: checkpoint {s[:80]} vs config {c[:80]}"]
  return []


def check_identity(saved: dict, current: dict, ckpt_dir: str) -> None:
  diffs = _diff({k: saved.get(k) for k in ("model", "data")}, current)
  if diffs:
    raise CheckpointMismatchError(
      f"the checkpoint in {ckpt_dir} was written with a different config:\n  "
      + "\n  ".join(diffs)
      + "\nResume with the config it was written with, choose a new --workdir, or start a new "
      "run from its weights with --config.init_from=<that workdir>."
    )


def config_changes(saved: dict | None, current: dict | None) -> list[tuple[str, Any, Any]]:
  """(path, old, new) for each field that differs, except the per-invocation ones."""
  if not saved or not current:
    return []
  out = []

  def walk(a, b, path):
    if path in PER_INVOCATION:
      return
    if isinstance(a, dict) and isinstance(b, dict):
      for k in sorted(set(a) | set(b)):
        walk(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}" if path else k)
    elif a != b:
      out.append((path, a, b))

  walk(saved, current, "")
  return out


def check_resume_config(saved: dict | None, current: dict, step: int, ckpt_dir: str) -> list[str]:
  """Compares the config a step was written with to the resuming run's. Raises
  CheckpointMismatchError for a change to what the model is or which data it reads in which
  order (model.*, data selection, seed); returns 'path: old -> new' for the other changes
  (optimizer, schedule, intervals, logging), which the run reports and goes ahead with."""
  refused, allowed = [], []
  for path, a, b in config_changes(saved, current):
    line = f"{path}: {json.dumps(a)[:80]} -> {json.dumps(b)[:80]}"
    (refused if path == "seed" or path.startswith(REFUSED_PREFIXES) else allowed).append(line)
  if refused:
    raise CheckpointMismatchError(
      f"checkpoint step {step} in {ckpt_dir} was written with a different model, data or seed:\n  "
      + "\n  ".join(refused)
      + "\nResume with the config it was written with, choose a new --workdir, or "
      "start a new run from its weights with --config.init_from=<that workdir>."
    )
  return allowed


def _keystr(path) -> str:
  return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _tree_differences(saved_meta: Any, abstract: Any) -> list[str]:
  saved = {_keystr(p): tuple(m.shape) for p, m in jax.tree_util.tree_flatten_with_path(saved_meta)[0]}
  wanted = {_keystr(p): tuple(a.shape) for p, a in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  out = [f"{k}: in the checkpoint, not in this model" for k in sorted(set(saved) - set(wanted))]
  out += [f"{k}: in this model, not in the checkpoint" for k in sorted(set(wanted) - set(saved))]
  out += [
    f"{k}: shape {saved[k]} in the checkpoint, {wanted[k]} in this model"
    for k in sorted(set(saved) & set(wanted))
    if saved[k] != wanted[k]
  ]
  return sorted(out, key=lambda d: not d.startswith("params"))  # params first: opt_state mirrors them


def _first_line(e: BaseException) -> str:
  """The root cause's first line (orbax wraps tensorstore's precise error in a generic one)."""
  while e.__cause__ is not None:
    e = e.__cause__
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:500] if text else ''}"


def _check_json_files(step_dir: str) -> None:
  """Raises _Damaged naming the first JSON file of the step that is missing or does not parse."""
  for root, _, files in os.walk(step_dir):
    for name in files:
      if name in _JSON_NAMES or name.endswith(".json") or os.path.basename(root) == "array_metadatas":
        path = os.path.join(root, name)
        try:
          with open(path) as f:
            json.load(f)
        except (OSError, ValueError) as e:
          raise _Damaged(f"{path} is not valid JSON (truncated?): {e}") from e


class Checkpointer:
  """orbax CheckpointManager for (state, data iterator, run record)."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    # Registered handlers: item metadata (the param tree) is readable before a restore, and a step
    # whose save was interrupted (a *.orbax-checkpoint-tmp directory) is removed at start.
    self.manager = ocp.CheckpointManager(
      self.directory,
      item_handlers=self._handlers(),
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=async_save
      ),
    )
    self._saving: int | None = None  # the step an asynchronous save may still be writing

  @staticmethod
  def _handlers() -> dict:
    return {
      "state": ocp.StandardCheckpointHandler(),
      "run": ocp.JsonCheckpointHandler(),
      "data": grain.checkpoint.CheckpointHandler(),
    }

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: Any, iterator: Any, record: dict, force: bool = False) -> bool:
    """Raises CheckpointSaveError (once, cleanly) when this or the previous asynchronous save fails."""
    self.wait()  # orbax waits for the previous save anyway; its failure is reported for its step
    items = {"state": ocp.args.StandardSave(state), "run": ocp.args.JsonSave(record)}
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(iterator)
    self._saving = step
    before = set(threading.enumerate())
    try:
      return self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # pylint: disable=broad-except
      # The items that did start keep writing in orbax's threads: let them end before anything
      # else (closing the manager, a retry's cleanup of the temporary directory) happens.
      from orbax.checkpoint._src.futures import future as ocp_future  # pylint: disable=import-outside-toplevel

      for t in set(threading.enumerate()) - before:
        if isinstance(t, getattr(ocp_future, "_SignalingThread", ())):
          t.join(timeout=60)
      raise self._save_error(step, e) from e

  def _save_error(self, step: int | None, e: BaseException) -> CheckpointSaveError:
    self._saving = None
    good = [s for s in self.manager.all_steps() if s != step and os.path.isdir(self.step_dir(s))]
    where = (
      f"the earlier checkpoints are intact (latest: step {max(good)}); rerunning the same command resumes from it"
      if good
      else "no earlier checkpoint exists"
    )
    return CheckpointSaveError(
      f"saving checkpoint step {step} in {self.directory} failed ({_first_line(e)}); "
      f"{where}. Free disk space (or fix the cause) and rerun."
    )

  def read_record(self, step: int) -> dict:
    """The run item of the step (identity, and when written by this format the config)."""
    try:
      return self.manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))["run"]
    except Exception as e:  # pylint: disable=broad-except
      raise _Damaged(_first_line(e)) from e

  def read_identity(self, step: int) -> dict:
    return self.read_record(step)

  def _check_format(self, step: int, record: dict) -> None:
    fmt = record.get("format", 0)
    if fmt not in READABLE_FORMATS:
      raise CheckpointMismatchError(
        f"checkpoint step {step} in {self.directory} has format {fmt!r} (written by westworld_jax "
        f"{record.get('version', '?')}); this version ({westworld_jax.__version__}) reads formats "
        f"{list(READABLE_FORMATS)}. Resume it with the version that wrote it, or choose a new --workdir."
      )

  def _check_tree(self, step: int, abstract_state: Any, record: dict) -> None:
    try:
      saved = self.manager.item_metadata(step)["state"]
    except Exception as e:  # pylint: disable=broad-except
      raise _Damaged(_first_line(e)) from e
    if saved is None:
      raise _Damaged("no state item")
    diffs = _tree_differences(saved, abstract_state)
    if diffs:
      hint = (
        "the optimizer state differs: a changed optimizer field (e.g. optim.clip_norm) changes it; resume "
        "with the optimizer config it was written with, or "
        if all(d.startswith("opt_state") for d in diffs)
        else f"it was written by another version of westworld_jax ({record.get('version', 'before 0.1.0')}; "
        f"this is {westworld_jax.__version__}): resume it with that version, or "
      )
      raise CheckpointMismatchError(
        f"checkpoint step {step} in {self.directory} holds a state this run cannot restore into:\n  "
        + "\n  ".join(diffs[:8])
        + (f"\n  ... and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        + f"\n{hint[0].upper() + hint[1:]}choose a new --workdir."
      )

  def _restore_step(self, step: int, abstract_state: Any, iterator: Any, identity: dict | None) -> tuple[Any, dict]:
    _check_json_files(self.step_dir(step))
    record = self.read_record(step)
    self._check_format(step, record)
    if identity is not None:
      check_identity(record, identity, self.directory)
    self._check_tree(step, abstract_state, record)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    try:
      return self.manager.restore(step, args=ocp.args.Composite(**items))["state"], record
    except Exception as e:  # pylint: disable=broad-except
      gc.collect()  # the orphaned reads' reports now, while they are recognisable
      raise _Damaged(_first_line(e)) from e

  def restore(self, step: int, abstract_state: Any, iterator: Any, identity: dict | None) -> Any:
    """Restores `state` of one step with the shardings in abstract_state (ShapeDtypeStructs with
    .sharding) and, when given, the iterator in place; checks the identity first."""
    try:
      return self._restore_step(step, abstract_state, iterator, identity)[0]
    except _Damaged as e:
      raise CheckpointDamagedError(f"checkpoint step {self.step_dir(step)} cannot be restored: {e}") from e

  def restore_latest(self, abstract_state: Any, iterator: Any, identity: dict | None):
    """(state, step, record) of the newest step that restores, or None when there is none.

    A damaged step is skipped with a warning and moved to <workdir>/checkpoints_damaged/ (so
    new saves of that step number do not collide with it); a mismatch (another model, data or
    version) raises CheckpointMismatchError at once. When no step restores, raises
    CheckpointDamagedError listing every step and why.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    skipped: list[tuple[int, str]] = []
    for step in steps:
      try:
        state, record = self._restore_step(step, abstract_state, iterator, identity)
      except _Damaged as e:
        skipped.append((step, str(e)))
        continue
      for s, why in skipped:
        logging.warning(
          "checkpoint step %d (%s) cannot be restored, resuming from step %d instead: %s; moved it to %s",
          s,
          self.step_dir(s),
          step,
          why,
          os.path.join(self.workdir, DAMAGED_DIR),
        )
      self._move_damaged([s for s, _ in skipped])
      return state, step, record
    raise CheckpointDamagedError(
      f"no checkpoint in {self.directory} can be restored:\n  "
      + "\n  ".join(f"step {s} ({self.step_dir(s)}): {why}" for s, why in skipped)
      + "\nMove the damaged step directories away (or restore them from a backup) and rerun; without "
      "any the run starts from scratch."
    )

  def _move_damaged(self, steps: list[int]) -> None:
    if not steps:
      return
    if jax.process_index() == 0:
      dst_root = os.path.join(self.workdir, DAMAGED_DIR)
      os.makedirs(dst_root, exist_ok=True)
      for s in steps:
        dst, n = os.path.join(dst_root, str(s)), 1
        while os.path.exists(dst):
          dst, n = os.path.join(dst_root, f"{s}.{n}"), n + 1
        shutil.move(self.step_dir(s), dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("damaged checkpoints moved")
    self.manager.reload()

  def wait(self) -> None:
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(self._saving, e) from e
    self._saving = None

  def close(self, quiet: bool = False) -> None:
    """Waits for a pending save; quiet: errors are dropped (an error is already propagating)."""
    try:
      self.wait()
    except CheckpointSaveError:
      if not quiet:
        raise
    finally:
      try:
        self.manager.close()
      except Exception:  # pylint: disable=broad-except
        if not quiet:
          raise


def with_shardings(shapes: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
