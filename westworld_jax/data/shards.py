"""On-disk corpus format: per environment, ArrayRecord shards of episodes plus JSON metadata.

  CORPUS/<env>/shard-00003.array_record   one record per episode (msgpack: obs [t,Co], act [t,Ca])
  CORPUS/<env>/shard-00003.json           written last (atomically): the shard is complete
  CORPUS/<env>/metadata.json              robot, channels, structure, dt, splits, statistics

Statistics (per-channel min/max for min-max normalisation) come from the environment's training
episodes only; validation episodes are whole held-out episodes (chosen by a hash of the episode
key, so the split does not depend on how many shards exist).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os

import numpy as np
from array_record.python import array_record_module
from flax import serialization

from westworld_jax.robots.robot import Robot
from westworld_jax import cli

METADATA = "metadata.json"
FORMAT_VERSION = 1


class CorpusError(cli.UserError, ValueError):
  """The corpus on disk is missing, incomplete or inconsistent; the message says what to do."""


def shard_path(env_dir: str, shard: int) -> str:
  return os.path.join(env_dir, f"shard-{shard:05d}.array_record")


def shard_done(env_dir: str, shard: int) -> bool:
  return os.path.exists(shard_path(env_dir, shard)[: -len(".array_record")] + ".json")


def encode_episode(ep: dict) -> bytes:
  return serialization.msgpack_serialize({"obs": np.asarray(ep["obs"], np.float32),
                                          "act": np.asarray(ep["act"], np.float32)})


def decode_episode(record: bytes) -> dict:
  return serialization.msgpack_restore(record)


def check_finite(ep: dict, where: str) -> None:
  for k in ("obs", "act"):
    if not np.isfinite(ep[k]).all():
      raise CorpusError(f"{where}: episode has non-finite {k} values; drop or fix it before writing")


def write_shard(env_dir: str, shard: int, episodes: list[dict], info: dict) -> None:
  """Writes the records, then the shard's JSON marker; a crash leaves no marker, so it is redone."""
  os.makedirs(env_dir, exist_ok=True)
  path = shard_path(env_dir, shard)
  tmp = path + ".tmp"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  for i, ep in enumerate(episodes):
    check_finite(ep, f"{path} episode {i}")
    writer.write(encode_episode(ep))
  writer.close()
  os.replace(tmp, path)
  lengths = [int(len(ep["obs"])) for ep in episodes]
  marker = path[: -len(".array_record")] + ".json"
  with open(marker + ".tmp", "w") as f:
    json.dump({**info, "shard": shard, "lengths": lengths}, f)
  os.replace(marker + ".tmp", marker)


def read_shard(env_dir: str, shard: int) -> list[dict]:
  reader = array_record_module.ArrayRecordReader(shard_path(env_dir, shard))
  try:
    return [decode_episode(r) for r in reader.read_all()]
  finally:
    reader.close()


def episode_key(env_name: str, shard: int, index: int) -> float:
  """Uniform in [0, 1) per episode. A cryptographic hash: crc32 of such similar keys is so
  correlated that whole environments ended up all-validation or all-training."""
  digest = hashlib.blake2b(f"{env_name}/{shard}/{index}".encode(), digest_size=8).digest()
  return int.from_bytes(digest, "little") / 2**64


def is_validation(env_name: str, shard: int, index: int, val_fraction: float) -> bool:
  return episode_key(env_name, shard, index) < val_fraction


def finalize(env_dir: str, env_name: str, robot: Robot, behaviour: str, split: str, num_shards: int,
             val_fraction: float) -> dict:
  """Computes statistics over the training episodes and writes metadata.json."""
  markers = sorted(glob.glob(os.path.join(env_dir, "shard-*.json")))
  if len(markers) != num_shards:
    raise CorpusError(f"{env_dir}: {len(markers)} of {num_shards} shards are complete; rerun the collector")
  episodes, ranges, counts = [], [], {}  # ranges: per-episode (obs min, obs max, act min, act max)
  for shard in range(num_shards):
    with open(os.path.join(env_dir, f"shard-{shard:05d}.json")) as f:
      info = json.load(f)
    for k, v in info.get("counts", {}).items():
      counts[k] = counts.get(k, 0) + v
    for i, ep in enumerate(read_shard(env_dir, shard)):
      val = is_validation(env_name, shard, i, val_fraction)
      episodes.append({"shard": shard, "index": i, "length": int(len(ep["obs"])), "val": bool(val)})
      ranges.append((ep["obs"].min(0), ep["obs"].max(0), ep["act"].min(0), ep["act"].max(0)))
  if val_fraction > 0 and len(episodes) >= 2 and not any(e["val"] for e in episodes):
    # Few episodes and none hashed below val_fraction: hold out the smallest key, not nothing.
    min(episodes, key=lambda e: episode_key(env_name, e["shard"], e["index"]))["val"] = True
  lo = np.full(robot.num_obs, np.inf)
  hi = np.full(robot.num_obs, -np.inf)
  alo = np.full(robot.num_act, np.inf)
  ahi = np.full(robot.num_act, -np.inf)
  for e, (omin, omax, amin, amax) in zip(episodes, ranges):
    if not e["val"]:  # statistics from training episodes only
      lo, hi = np.minimum(lo, omin), np.maximum(hi, omax)
      alo, ahi = np.minimum(alo, amin), np.maximum(ahi, amax)
  if not episodes:
    raise CorpusError(f"{env_dir}: no episode survived the checks ({counts}); see EpisodeChecks in the "
                      "data config (max_abs_qvel, fall_fraction, min_length) or the robot's stability")
  if not np.isfinite(lo).all():
    raise CorpusError(f"{env_dir}: no training episodes were kept (all dropped or validation); collect "
                      "more episodes or lower val_fraction")
  meta = {
      "format": FORMAT_VERSION,
      "env": env_name,
      "behaviour": behaviour,
      "split": split,
      "robot": robot.describe(),
      "fingerprint": robot.fingerprint(),
      "obs_struct": robot.obs_struct().tolist(),
      "act_struct": robot.act_struct().tolist(),
      "obs_kind": robot.obs_kinds().tolist(),
      "act_kind": robot.act_kinds().tolist(),
      "stats": {"obs_min": lo.tolist(), "obs_max": hi.tolist(), "act_min": alo.tolist(), "act_max": ahi.tolist()},
      "num_shards": num_shards,
      "episodes": episodes,
      "counts": counts,
  }
  with open(os.path.join(env_dir, METADATA + ".tmp"), "w") as f:
    json.dump(meta, f)
  os.replace(os.path.join(env_dir, METADATA + ".tmp"), os.path.join(env_dir, METADATA))
  return meta


def load_metadata(env_dir: str) -> dict:
  path = os.path.join(env_dir, METADATA)
  if not os.path.exists(path):
    raise CorpusError(f"{env_dir} has no {METADATA}: the environment was not (fully) collected; run "
                      "`python -m westworld_jax.data.collect --config experiments/data.py` (it resumes)")
  with open(path) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT_VERSION:
    raise CorpusError(f"{path} has format {meta.get('format')}, expected {FORMAT_VERSION}: recollect it")
  return meta
