"""Checkpoints under evaluation: loading a training workdir, the hold-last reference, and the
zero-shot leak check (a checkpoint must not have trained on the evaluated robot)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable

from westworld_jax import inference
from westworld_jax.data import shards
from westworld_jax.errors import UserError
from westworld_jax.model import registry
from westworld_jax.model.world_model import hold_last
from westworld_jax.training.run_files import read_run_config


class HeldOutLeakError(UserError, ValueError):
  """A zero-shot evaluation of a robot the checkpoint was trained on."""


@dataclasses.dataclass
class Checkpoint:
  label: str
  workdir: str
  model: Any  # registry.WorldModel
  params: Any
  data_stats: dict  # the training run's environments and their statistics (read for leak checks only)
  run_config: dict
  step: int

  @property
  def trained_envs(self) -> list[str]:
    return list(self.data_stats)


def parse_checkpoints(spec: str) -> list[tuple[str | None, str]]:
  """'A,label=B' -> [(None, 'A'), ('label', 'B')]."""
  out = []
  for part in (p.strip() for p in (spec or "").split(",")):
    if not part:
      continue
    label, sep, path = part.partition("=")
    out.append((label.strip(), path.strip()) if sep else (None, part))
  return out


def load_checkpoint(workdir: str, label: str | None = None) -> Checkpoint:
  """The newest restorable checkpoint of a training workdir, labelled (default: the model's name)."""
  workdir = os.path.abspath(workdir)
  run_cfg = read_run_config(workdir)
  model, params, stats, step = inference.load_for_inference(workdir, None, with_step=True)
  return Checkpoint(label or run_cfg["model"]["name"], workdir, model, params, stats, run_cfg, step)


HOLD_LAST_LABEL = "hold last obs (reference)"  # the reference's label in every report


def hold_last_reference(ckpt: Checkpoint) -> Checkpoint:
  """A reference 'model' that repeats the last history observation over the horizon: errors well
  below it mean a model learned dynamics, not just the current state."""
  h = ckpt.model.history

  def predict(params, batch):
    return hold_last(batch, h)

  model = registry.WorldModel("hold_last", ckpt.model.config, None, None, predict, None, ckpt.model.capacity)
  return Checkpoint(HOLD_LAST_LABEL, "-", model, {}, {}, ckpt.run_config, 0)


def _fingerprints(corpus_dir: str, envs: Iterable[str]) -> dict[str, str]:
  out = {}
  for e in envs:
    path = os.path.join(corpus_dir, e, shards.METADATA)
    if os.path.exists(path):
      with open(path) as f:
        out[e] = json.load(f).get("fingerprint")
  return out


def trained_episodes(ckpt: Checkpoint, robot: str) -> tuple[frozenset[str], list[str]]:
  """Digests (shards.episode_digest) of the training episodes of every environment of `robot` the
  checkpoint trained on, and the environments whose corpus is not readable here (unchecked)."""
  corpus = ckpt.run_config.get("data", {}).get("corpus_dir", "")
  digests, unread = set(), []
  for env, s in ckpt.data_stats.items():
    if s.get("robot") != robot:
      continue
    env_dir = os.path.join(corpus, env)
    try:
      digests.update(shards.episode_digest(e) for e in shards.read_episodes(env_dir, "train"))
    except shards.CorpusError:
      unread.append(env_dir)
  return frozenset(digests), unread


def check_unseen(ckpt: Checkpoint, env_dir: str) -> None:
  """Raises HeldOutLeakError when the checkpoint trained on the environment or on its robot (same
  catalogue name, or same MJCF fingerprint when the training corpus is readable)."""
  meta = shards.load_metadata(env_dir)
  env, robot = os.path.basename(os.path.normpath(env_dir)), meta["robot"]["name"]
  hits = [e for e, s in ckpt.data_stats.items() if e == env or s.get("robot") == robot]
  corpus = ckpt.run_config.get("data", {}).get("corpus_dir", "")
  hits += [
    e
    for e, fp in _fingerprints(corpus, ckpt.data_stats).items()
    if fp and fp == meta.get("fingerprint") and e not in hits
  ]
  if hits:
    raise HeldOutLeakError(
      f"zero-shot evaluation of {env} (robot {robot}) with {ckpt.workdir}, which trained on "
      f"{hits}: not zero-shot. Evaluate a checkpoint pretrained without this robot, or set "
      "--config.require_unseen=False (e.g. after fine-tuning on it)"
    )
