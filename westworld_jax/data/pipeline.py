"""grain input pipeline: normalised, padded batches of fixed-length windows from many environments.

- Windows: non-overlapping `history + horizon` steps (150 by default) from each episode, as
  upstream; an episode's tail shorter than that is kept when it has more than `history` steps,
  padded in time (time_mask False).
- Normalisation: per environment and channel, min-max from that environment's training episodes
  to [0, 1], clipped (upstream); constant channels map to 0.5.
- Padding and bucketing: every environment is put in the smallest (obs, act) channel bucket that
  holds it; a batch holds windows of one bucket only and is padded to the bucket's size, so padding
  stays small and the number of distinct shapes (compilations) is the number of buckets.
- Mixture: environments are sampled with weights ('uniform' or by number of windows); buckets are
  interleaved with the summed weights of their environments.
- Multi-host: every process indexes the same global stream and loads only its own rows of each
  global batch (process p: rows p*b..(p+1)*b-1, b = global_batch / process_count), so the global
  batches, and the training run, are the same for any number of processes.
- Deterministic by seed; the iterator's state (grain) is checkpointable and restorable exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Sequence

import grain
import numpy as np

from westworld_jax.errors import ConfigError
from westworld_jax.data import normalise, padding, shards

DEFAULT_OBS_BUCKETS = (8, 16, 32, 64, 128)
DEFAULT_ACT_BUCKETS = (4, 8, 16, 32, 64)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  corpus_dir: str
  environments: Sequence[str]
  batch_size: int = 16  # global batch
  history: int = 50
  horizon: int = 100
  split: str = "train"  # 'train' or 'val' episodes
  max_episodes: int = 0  # > 0: only the split's first N episodes (shard, index order), e.g. few-shot
  weighting: str = "uniform"  # 'uniform' per environment, or 'windows' (proportional to data)
  weights: Sequence[float] | None = None  # explicit per-environment weights (override weighting)
  obs_buckets: Sequence[int] = DEFAULT_OBS_BUCKETS
  act_buckets: Sequence[int] = DEFAULT_ACT_BUCKETS
  seed: int = 0
  shuffle: bool = True
  repeat: bool = True  # infinite stream for training; False: one pass (evaluation)
  process_index: int = 0
  process_count: int = 1
  num_threads: int = 2
  prefetch: int = 4

  @property
  def window(self) -> int:
    return self.history + self.horizon


@dataclasses.dataclass(frozen=True)
class EnvData:
  """One environment's metadata, normalisation and windows (shard, index, start, length)."""

  env_id: int
  name: str
  env_dir: str
  meta: dict
  windows: np.ndarray  # int64 [n, 4]
  obs_min: np.ndarray
  obs_span: np.ndarray  # max - min per channel, 0 for a constant channel (data/normalise.py)
  act_min: np.ndarray
  act_span: np.ndarray

  @property
  def num_obs(self) -> int:
    return len(self.obs_min)

  @property
  def num_act(self) -> int:
    return len(self.act_min)


def load_env(cfg: PipelineConfig, env_id: int, name: str) -> EnvData:
  env_dir = os.path.join(cfg.corpus_dir, name)
  # Shards that disagree with the metadata would be read as other episodes (or crash in grain later).
  meta = shards.verify_env(env_dir)
  want_val = cfg.split == "val"
  if cfg.split not in ("train", "val"):
    raise ConfigError(f"split must be 'train' or 'val', got '{cfg.split}'")
  eps = [ep for ep in meta["episodes"] if ep["val"] == want_val]
  if cfg.max_episodes:
    if len(eps) < cfg.max_episodes:  # few-shot promises exactly N episodes: never silently fewer
      raise shards.CorpusError(
        f"{name}: max_episodes={cfg.max_episodes} but only {len(eps)} {cfg.split} "
        "episodes exist: collect more episodes for this environment"
      )
    eps = sorted(eps, key=lambda ep: (ep["shard"], ep["index"]))[: cfg.max_episodes]
  wins = []
  for ep in eps:
    for start in range(0, ep["length"], cfg.window):
      length = min(cfg.window, ep["length"] - start)
      if length > cfg.history:  # at least one step to predict
        wins.append((ep["shard"], ep["index"], start, length))
  wins = np.array(wins, np.int64).reshape(-1, 4)
  st = meta["stats"]
  omin, omax = np.array(st["obs_min"], np.float32), np.array(st["obs_max"], np.float32)
  amin, amax = np.array(st["act_min"], np.float32), np.array(st["act_max"], np.float32)
  return EnvData(env_id, name, env_dir, meta, wins, omin, normalise.span(omin, omax), amin, normalise.span(amin, amax))


def bucket_of(n: int, buckets: Sequence[int], what: str, env: str) -> int:
  for b in sorted(buckets):
    if n <= b:
      return b
  raise ConfigError(
    f"environment '{env}' has {n} {what} channels; the largest bucket is {max(buckets)}: "
    f"add a bigger one to {what}_buckets (and the model's max channels) in the config"
  )


def channel_buckets(configured: Sequence[int], model_max: int | None) -> tuple[int, ...]:
  """The run's buckets plus the model's channel capacity, so every robot that fits the model fits."""
  bs = {int(b) for b in configured if model_max is None or b <= model_max}
  if model_max:
    bs.add(int(model_max))
  return tuple(sorted(bs))


@functools.lru_cache(maxsize=64)
def _episode_reader(env_dir: str, num_shards: int, stamp: tuple) -> grain.sources.ArrayRecordDataSource:
  del stamp  # part of the key only: a replaced environment directory gets a fresh reader
  paths = [shards.shard_path(env_dir, s) for s in range(num_shards)]
  return grain.sources.ArrayRecordDataSource(paths)


class WindowLoader:
  """Maps a window reference to a normalised, padded example (a grain map transform)."""

  def __init__(self, env: EnvData, cfg: PipelineConfig, obs_cap: int, act_cap: int):
    self.env, self.cfg, self.obs_cap, self.act_cap = env, cfg, obs_cap, act_cap
    meta = env.meta
    st = os.stat(os.path.join(env.env_dir, shards.METADATA))
    self.stamp = (os.stat(env.env_dir).st_ino, st.st_ino, st.st_mtime_ns)
    # Global record index of (shard, index): shards are concatenated by the data source.
    counts = np.bincount([e["shard"] for e in meta["episodes"]], minlength=meta["num_shards"])
    self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    self.static = padding.padded_structure(
      meta["obs_struct"], meta["act_struct"], meta["obs_kind"], meta["act_kind"], obs_cap, act_cap
    )
    self.static["env_id"] = np.int32(env.env_id)

  def __call__(self, window: np.ndarray) -> dict:
    shard, index, start, length = (int(v) for v in window)
    src = _episode_reader(self.env.env_dir, self.env.meta["num_shards"], self.stamp)
    ep = shards.decode_episode(src[int(self.offsets[shard]) + index])
    T = self.cfg.window
    obs = ep["obs"][start : start + length]
    act = ep["act"][start : start + length]
    e = self.env
    obs = normalise.normalise(obs, e.obs_min, e.obs_span).astype(np.float32)
    act = normalise.normalise(act, e.act_min, e.act_span).astype(np.float32)
    out = dict(self.static)
    out["obs"] = np.zeros((T, self.obs_cap), np.float32)
    out["obs"][:length, : e.num_obs] = obs
    out["act"] = np.zeros((T, self.act_cap), np.float32)
    out["act"][:length, : e.num_act] = act
    out["time_mask"] = np.arange(T) < length
    return out


def _stack(examples: Sequence[dict]) -> dict:
  return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


def make_dataset(cfg: PipelineConfig) -> tuple[grain.MapDataset, list[EnvData]]:
  """A MapDataset of this process's batches (dicts as in model/BATCH_SPEC.md) and the environments."""
  if cfg.batch_size % cfg.process_count:
    raise ConfigError(f"global batch {cfg.batch_size} is not divisible by {cfg.process_count} processes")
  if not cfg.environments:
    raise ConfigError("no environments given to the pipeline")
  local_batch = cfg.batch_size // cfg.process_count
  envs = [load_env(cfg, i, n) for i, n in enumerate(cfg.environments)]
  empty = [e.name for e in envs if len(e.windows) == 0]
  if empty:
    raise shards.CorpusError(
      f"no {cfg.split} windows (> {cfg.history} steps) for {empty}: collect more or longer episodes"
    )
  if cfg.weights is not None:
    if len(cfg.weights) != len(envs):
      raise ConfigError(f"{len(cfg.weights)} weights for {len(envs)} environments")
    weights = np.asarray(cfg.weights, np.float64)
  elif cfg.weighting == "uniform":
    weights = np.ones(len(envs))
  elif cfg.weighting == "windows":
    weights = np.array([len(e.windows) for e in envs], np.float64)
  else:
    raise ConfigError(f"weighting must be 'uniform' or 'windows', got '{cfg.weighting}'")

  if (weights < 0).any() or not weights.any():
    raise ConfigError(f"mixture weights must be >= 0 and not all zero, got {weights.tolist()}")

  buckets: dict[tuple[int, int], list[int]] = {}
  for e in envs:
    if weights[e.env_id] == 0:  # listed but not sampled (keeps env ids stable)
      continue
    key = (bucket_of(e.num_obs, cfg.obs_buckets, "obs", e.name), bucket_of(e.num_act, cfg.act_buckets, "act", e.name))
    buckets.setdefault(key, []).append(e.env_id)

  per_bucket, bucket_w = [], []
  for b, (key, ids) in enumerate(sorted(buckets.items())):
    parts = []
    for i in ids:
      ds = grain.MapDataset.source(envs[i].windows)
      if cfg.shuffle:
        ds = ds.shuffle(seed=cfg.seed * 1000003 + i)
      if cfg.repeat:
        ds = ds.repeat()
      parts.append(ds.map(WindowLoader(envs[i], cfg, *key)))
    mixed = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, [weights[i] for i in ids])
    batches = mixed.batch(local_batch, drop_remainder=cfg.repeat, batch_fn=_stack)
    if cfg.process_count > 1:  # this process's part of each global batch (lazy: other rows never load)
      batches = batches[cfg.process_index :: cfg.process_count]
    per_bucket.append(batches)
    bucket_w.append(sum(weights[i] for i in ids))
  if len(per_bucket) == 1:
    return per_bucket[0], envs
  if not cfg.repeat:  # one pass: every bucket's batches in turn
    return grain.MapDataset.concatenate(per_bucket), envs
  return grain.MapDataset.mix(per_bucket, bucket_w), envs


def make_iterator(cfg: PipelineConfig):
  """A checkpointable grain iterator over batches (`get_state()` / `set_state()`)."""
  ds, _ = make_dataset(cfg)
  opts = grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch)
  return iter(ds.to_iter_dataset(opts))
