"""Data for a training run: make sure the corpus exists, pick environments, build iterators.

With no corpus on disk the run generates it from the data config embedded in the
experiment config (`data.collect`, a variant of experiments/data.py), so the first run needs
no manual step. Collection is deterministic by seed, so on a multi-host run every process
collects: on its own disk an identical copy, on a shared one each environment once (its lock,
data/shards.env_lock, makes the others wait and then find it complete). On a shared filesystem
whose locks do not reach across hosts, `data.shared_filesystem=True` has process 0 generate while
the others watch the disk until the corpus is complete (no collective: a long generation cannot
time one out), and give up with an error when nothing in it has changed for
`data.shared_filesystem_stall_s` seconds (process 0 failed).
"""

from __future__ import annotations

import os
import time

import jax
from absl import logging

from westworld_jax.errors import ConfigError
from westworld_jax.data import pipeline, shards


def _collect_cfg(data_cfg):
  c = data_cfg.collect
  if c is None:
    return None
  c = c.copy_and_resolve_references()
  c.corpus_dir = data_cfg.corpus_dir
  return c


def _missing(corpus_dir: str, names: list[str]) -> list[str]:
  return [n for n in names if not os.path.exists(os.path.join(corpus_dir, n, shards.METADATA))]


def ensure_corpus(data_cfg) -> list[str]:
  """Generates the corpus when a training environment is missing (resumably: finished shards are
  kept); returns the training environments. Generation covers the whole data.collect selection
  (held-out environments too, for evaluation), plus any missing environment named explicitly."""
  envs = training_environments(data_cfg)
  missing = _missing(data_cfg.corpus_dir, envs)
  collect_cfg = _collect_cfg(data_cfg)
  if missing and collect_cfg is not None:
    from westworld_jax.data import collect  # the simulators only when generating

    selected = [e.name for e in collect.selected_environments(collect_cfg)]
    if not set(missing) <= set(selected):
      collect_cfg.environments = tuple(selected + [m for m in missing if m not in selected])
      collect_cfg.max_environments = 0
    leader_only = data_cfg.get("shared_filesystem", False) and jax.process_count() > 1
    if not leader_only or jax.process_index() == 0:
      logging.info(
        "corpus %s lacks %d training environments: generating it (resumable)", data_cfg.corpus_dir, len(missing)
      )
      collect.collect(collect_cfg)
    else:
      logging.warning("waiting for process 0 to generate %d environments in %s", len(missing), data_cfg.corpus_dir)
      wait_for_leader(data_cfg.corpus_dir, envs, float(data_cfg.get("shared_filesystem_stall_s", 7200)))
    missing = _missing(data_cfg.corpus_dir, envs)
  if missing:
    raise shards.CorpusError(
      f"corpus {data_cfg.corpus_dir} lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}: generate "
      "it with `python -m westworld_jax.data.collect --config experiments/data.py` or set data.collect "
      "in the experiment config so the run generates it"
    )
  return envs


def _last_change(corpus_dir: str) -> float:
  """The newest modification time of anything under corpus_dir (0 when it does not exist yet)."""
  latest = 0.0
  for root, dirs, files in os.walk(corpus_dir):
    for name in dirs + files:
      try:
        latest = max(latest, os.path.getmtime(os.path.join(root, name)))
      except OSError:  # removed while walking (an atomic rename)
        pass
  return latest


def wait_for_leader(corpus_dir: str, envs: list[str], stall_s: float, poll_s: float = 5.0) -> None:
  """Waits until every environment of `envs` is complete in corpus_dir; raises CorpusError once nothing
  under corpus_dir has changed for stall_s seconds (process 0 stopped generating)."""
  seen, since = _last_change(corpus_dir), time.monotonic()
  while _missing(corpus_dir, envs):
    time.sleep(poll_s)
    now = _last_change(corpus_dir)
    if now != seen:
      seen, since = now, time.monotonic()
    elif time.monotonic() - since > stall_s:
      missing = _missing(corpus_dir, envs)
      raise shards.CorpusError(
        f"corpus {corpus_dir}: nothing changed for {stall_s:.0f} s while waiting for process 0 to generate "
        f"{len(missing)} environments ({missing[:3]}{' ...' if len(missing) > 3 else ''}): see process 0's log, "
        "generate the corpus with `python -m westworld_jax.data.collect`, or raise data.shared_filesystem_stall_s"
      )


def training_environments(data_cfg) -> list[str]:
  """data.environments if given, else every environment of the collect config in the training split."""
  if data_cfg.environments:
    return list(data_cfg.environments)
  collect_cfg = _collect_cfg(data_cfg)
  if collect_cfg is None:
    raise ConfigError(
      "set data.environments (names of environment directories in the corpus) or "
      "data.collect (a data config whose environments are used)"
    )
  from westworld_jax.data import collect  # the simulators only when the data config is read

  envs = [e.name for e in collect.selected_environments(collect_cfg) if e.split == data_cfg.train_split]
  if not envs:
    raise ConfigError(f"the data config selects no environment of split '{data_cfg.train_split}'")
  return envs


def pipeline_config(data_cfg, environments: list[str], seed: int, split: str = "train") -> pipeline.PipelineConfig:
  train = split == "train"
  return pipeline.PipelineConfig(
    corpus_dir=data_cfg.corpus_dir,
    environments=tuple(environments),
    batch_size=data_cfg.batch_size if train else data_cfg.eval_batch_size,
    history=data_cfg.history,
    horizon=data_cfg.horizon,
    split=split,
    # Few-shot runs train on the first N episodes only; validation keeps every held-out episode.
    max_episodes=int(data_cfg.get("max_episodes", 0) or 0) if train else 0,
    weighting=data_cfg.weighting,
    weights=tuple(data_cfg.weights) if data_cfg.weights else None,
    obs_buckets=tuple(data_cfg.obs_buckets),
    act_buckets=tuple(data_cfg.act_buckets),
    seed=seed,
    shuffle=train,
    repeat=train,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    num_threads=data_cfg.num_threads,
    prefetch=data_cfg.prefetch,
  )


def validation_environments(data_cfg, environments: list[str]) -> list[str]:
  """Training environments that have held-out (validation) episodes long enough for a window."""
  out = []
  for name in environments:
    meta = shards.load_metadata(os.path.join(data_cfg.corpus_dir, name))
    if any(ep["val"] and ep["length"] > data_cfg.history for ep in meta["episodes"]):
      out.append(name)
  return out


def channel_names(data_cfg, env: str) -> list[str]:
  meta = shards.load_metadata(os.path.join(data_cfg.corpus_dir, env))
  return [c["name"] for c in meta["robot"]["obs_channels"]]
