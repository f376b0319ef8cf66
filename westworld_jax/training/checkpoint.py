"""Checkpoints with orbax: train state, the grain iterator's state and the run's identity.

A checkpoint step directory holds three items:
  state  params, optimizer state and step (orbax StandardSave; restored onto the CURRENT
         mesh's shardings, so a run may resume on a different number of devices);
  data   the grain iterator's state per process (grain's orbax handler), so the data
         order after a resume is exactly the uninterrupted one;
  run    JSON: the model (name and every config field) and the data identity
         (environments, batch size, window). A rerun whose config does not match fails
         with a message that lists the differences instead of loading wrong weights.
Saving is asynchronous and atomic (orbax writes to a temporary directory and renames it).
"""
from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from westworld_jax import cli

RUN_FILE = "run_config.json"  # the full config of the run, in the workdir (for humans and inference)


class CheckpointMismatchError(cli.UserError, ValueError):
  """A checkpoint in the workdir was written by a run with a different model or data."""


def run_identity(model_name: str, model_config: Any, data_cfg, environments: list[str]) -> dict:
  import dataclasses
  data = {"environments": list(environments), "batch_size": int(data_cfg.batch_size),
          "history": int(data_cfg.history), "horizon": int(data_cfg.horizon)}
  max_episodes = int(data_cfg.get("max_episodes", 0) or 0)
  if max_episodes:  # few-shot runs: a different N is a different run (absent when 0: older ids match)
    data["max_episodes"] = max_episodes
  return {
      "model": {"name": model_name, **json.loads(json.dumps(dataclasses.asdict(model_config)))},
      "data": data,
  }


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
  diffs = _diff(saved, current)
  if diffs:
    raise CheckpointMismatchError(
        f"the checkpoint in {ckpt_dir} was written with a different config:\n  " + "\n  ".join(diffs)
        + "\nResume with the config it was written with, choose a new --workdir, or start a new "
        "run from its weights with --config.init_from=<that workdir>.")


class Checkpointer:
  """orbax CheckpointManager for (state, data iterator, run identity)."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, iterator: Any, identity: dict, force: bool = False) -> bool:
    items = {"state": ocp.args.StandardSave(state), "run": ocp.args.JsonSave(identity)}
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def read_identity(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))["run"]

  def restore(self, step: int, abstract_state: Any, iterator: Any, identity: dict | None) -> Any:
    """Restores `state` with the shardings in abstract_state (ShapeDtypeStructs with .sharding)
    and, when given, the iterator in place; checks the identity first."""
    if identity is not None:
      check_identity(self.read_identity(step), identity, self.directory)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def with_shardings(shapes: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
