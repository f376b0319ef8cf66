"""On-disk corpus format: per environment, ArrayRecord shards of episodes plus JSON metadata.

  CORPUS/<env>/shard-00003.array_record   one record per episode (msgpack: obs [t,Co], act [t,Ca])
  CORPUS/<env>/shard-00003.json           written last (atomically): the shard is complete
  CORPUS/<env>/metadata.json              robot, channels, structure, dt, splits, statistics

An environment is built in a staging directory next to it (CORPUS/.<env>.<tag>) and renamed into
place when complete, so CORPUS/<env> is either the old environment or the new one, never a mix.
Readers check every shard's record count against the metadata (`verify_env`) before using it.

Statistics (per-channel min/max for min-max normalisation) come from the environment's training
episodes only; validation episodes are whole held-out episodes (chosen by a hash of the episode
key, so the split does not depend on how many shards exist).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil

import numpy as np
from array_record.python import array_record_module
from flax import serialization

from westworld_jax.robots.robot import Robot
from westworld_jax import locks
from westworld_jax.errors import UserError

METADATA = "metadata.json"
FORMAT_VERSION = 1


class CorpusError(UserError, ValueError):
  """The corpus on disk is missing, incomplete or inconsistent; the message says what to do."""


def shard_path(env_dir: str, shard: int) -> str:
  return os.path.join(env_dir, f"shard-{shard:05d}.array_record")


def marker_path(env_dir: str, shard: int) -> str:
  return shard_path(env_dir, shard)[: -len(".array_record")] + ".json"


def shard_done(env_dir: str, shard: int) -> bool:
  return os.path.exists(marker_path(env_dir, shard))


def read_marker(env_dir: str, shard: int) -> dict | None:
  try:
    with open(marker_path(env_dir, shard)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}  # unreadable marker: the shard does not verify


_SHARD_FILE = re.compile(r"shard-(\d+)\.(array_record|json)")  # a shard's records or its marker


def shard_files(env_dir: str) -> dict[int, list[str]]:
  """Shard number -> its files (records and/or marker) present in env_dir."""
  out: dict[int, list[str]] = {}
  for path in glob.glob(os.path.join(env_dir, "shard-*")):
    m = _SHARD_FILE.fullmatch(os.path.basename(path))
    if m:
      out.setdefault(int(m.group(1)), []).append(path)
  return out


def num_records(env_dir: str, shard: int) -> int | None:
  """The shard's record count from its footer (cheap); None if the file is missing or unreadable.
  A truncated file may open with 0 records (and fail only on close), so callers also compare the
  count against the expected one."""
  path = shard_path(env_dir, shard)
  if not os.path.isfile(path):
    return None
  try:
    reader = array_record_module.ArrayRecordReader(path)
    try:
      return int(reader.num_records())
    finally:
      reader.close()
  except (RuntimeError, OSError, ValueError):
    return None


def shard_problem(env_dir: str, shard: int, full: bool = False) -> str | None:
  """Why the shard is not complete and intact (None if it is): marker present, records readable
  and as many as the marker's lengths; `full` also decodes every record and checks the lengths."""
  marker = read_marker(env_dir, shard)
  if marker is None:
    return "no completion marker"
  lengths = marker.get("lengths")
  if not isinstance(lengths, list):
    return "unreadable completion marker"
  n = num_records(env_dir, shard)
  if n is None:
    return "records file " + ("unreadable" if os.path.isfile(shard_path(env_dir, shard)) else "missing")
  if n != len(lengths):
    return f"{n} records but its marker lists {len(lengths)} (truncated?)"
  if full:
    try:
      got = [int(len(ep["obs"])) for ep in read_shard(env_dir, shard)]
    except CorpusError as e:
      return f"unreadable records ({e.__cause__ or e})"
    if got != lengths:
      return "episode lengths differ from its marker"
  return None


def encode_episode(ep: dict) -> bytes:
  return serialization.msgpack_serialize(
    {"obs": np.asarray(ep["obs"], np.float32), "act": np.asarray(ep["act"], np.float32)}
  )


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
  for i, ep in enumerate(episodes):
    check_finite(ep, f"{path} episode {i}")
  try:
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    for ep in episodes:
      writer.write(encode_episode(ep))
    writer.close()
  except RuntimeError as e:  # array_record reports the OS's errors as RuntimeError: the disk's one line
    if os.path.exists(tmp):
      os.remove(tmp)
    text = str(e)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
      if os.strerror(code) in text:
        raise OSError(code, os.strerror(code), tmp) from None
    raise CorpusError(f"{tmp}: writing the shard failed ({text.splitlines()[0][:300]})") from None
  os.replace(tmp, path)
  lengths = [int(len(ep["obs"])) for ep in episodes]
  marker = path[: -len(".array_record")] + ".json"
  with open(marker + ".tmp", "w") as f:
    json.dump({**info, "shard": shard, "lengths": lengths}, f)
  os.replace(marker + ".tmp", marker)


def read_shard(env_dir: str, shard: int) -> list[dict]:
  path = shard_path(env_dir, shard)
  if not os.path.isfile(path):
    raise CorpusError(f"{path} is missing")
  try:
    reader = array_record_module.ArrayRecordReader(path)
    try:
      return [decode_episode(r) for r in reader.read_all()]
    finally:
      reader.close()
  except (RuntimeError, OSError, ValueError) as e:
    raise CorpusError(f"{path} is unreadable ({str(e).splitlines()[0][:200]})") from e


def read_episodes(env_dir: str, split: str = "all", meta: dict | None = None) -> list[dict]:
  """The environment's episodes of `split` ('train', 'val' or 'all'), in metadata order, each shard
  read once. meta: its metadata (default: read)."""
  if split not in ("train", "val", "all"):
    raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
  meta = meta or load_metadata(env_dir)
  keep = [e for e in meta["episodes"] if split == "all" or bool(e["val"]) == (split == "val")]
  records = {s: read_shard(env_dir, s) for s in sorted({int(e["shard"]) for e in keep})}
  return [records[int(e["shard"])][int(e["index"])] for e in keep]


def episode_key(env_name: str, shard: int, index: int) -> float:
  """Uniform in [0, 1) per episode. A cryptographic hash: crc32 of such similar keys is so
  correlated that whole environments ended up all-validation or all-training."""
  digest = hashlib.blake2b(f"{env_name}/{shard}/{index}".encode(), digest_size=8).digest()
  return int.from_bytes(digest, "little") / 2**64


def is_validation(env_name: str, shard: int, index: int, val_fraction: float) -> bool:
  return episode_key(env_name, shard, index) < val_fraction


def episode_digest(ep: dict) -> str:
  """The episode's content (obs and act as stored, float32), whatever environment holds it: how an
  evaluation recognises the episodes a checkpoint trained on in another copy of the same data."""
  h = hashlib.blake2b(digest_size=16)
  for k in ("obs", "act"):
    x = np.ascontiguousarray(np.asarray(ep[k], np.float32))
    h.update(str(x.shape).encode())
    h.update(x.tobytes())
  return h.hexdigest()


def finalize(
  env_dir: str,
  env_name: str,
  robot: Robot,
  behaviour: str,
  split: str,
  num_shards: int,
  val_fraction: float,
  origin: str = "",
  trained: frozenset[str] = frozenset(),
) -> dict:
  """Computes statistics over the training episodes and writes metadata.json.

  `origin` ('collect', 'import' or '') picks the advice in error messages (what would fix it).
  `trained`: digests (episode_digest) of episodes a model trained on; when any episode here is one of
  them, exactly those form the training split and every other episode is held out (val), so that
  an evaluation never scores an episode the model trained on, whatever val_fraction says."""
  stray = sorted(
    os.path.basename(p)
    for p in glob.glob(os.path.join(env_dir, "shard-*"))
    if not _SHARD_FILE.fullmatch(os.path.basename(p).removesuffix(".tmp"))
  )
  if stray:
    raise CorpusError(
      f"environment '{env_name}': {', '.join(repr(x) for x in stray[:5])} in {env_dir} is not a shard of it "
      "(a copy or an edit?): move it out of the environment's directory and rerun"
    )
  markers = [p for files in shard_files(env_dir).values() for p in files if p.endswith(".json")]
  if len(markers) != num_shards:
    raise CorpusError(
      f"environment '{env_name}': {len(markers)} of {num_shards} shards are complete; "
      f"{remedy({'env': env_name, 'origin': origin})}"
    )
  episodes, ranges, counts, seen = [], [], {}, []  # ranges: per-episode (obs min, obs max, act min, act max)
  for shard in range(num_shards):
    with open(marker_path(env_dir, shard)) as f:
      info = json.load(f)
    for k, v in info.get("counts", {}).items():
      counts[k] = counts.get(k, 0) + v
    for i, ep in enumerate(read_shard(env_dir, shard)):
      val = is_validation(env_name, shard, i, val_fraction)
      seen.append(bool(trained) and episode_digest(ep) in trained)
      episodes.append({"shard": shard, "index": i, "length": int(len(ep["obs"])), "val": bool(val)})
      ranges.append((ep["obs"].min(0), ep["obs"].max(0), ep["act"].min(0), ep["act"].max(0)))
  n_seen = sum(seen)
  if n_seen and n_seen == len(episodes):
    raise CorpusError(
      f"environment '{env_name}': the model trained on all {len(episodes)} of its episodes: none is left to "
      "evaluate; pass episodes it did not train on"
    )
  if n_seen:  # the model's own split: the episodes it trained on, every other one held out
    for e, ep_seen in zip(episodes, seen):
      e["val"] = not ep_seen
  elif val_fraction > 0 and len(episodes) >= 2 and not any(e["val"] for e in episodes):
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
    if origin == "collect":
      raise CorpusError(
        f"environment '{env_name}': no episode survived the checks ({counts}); see "
        "EpisodeChecks in the data config (max_abs_qvel, fall_fraction, min_length) or the "
        "robot's stability"
      )
    raise CorpusError(f"environment '{env_name}': no usable episode ({counts})")
  if not np.isfinite(lo).all():
    more = "collect more episodes" if origin == "collect" else "use more episodes"
    raise CorpusError(
      f"environment '{env_name}': no training episodes were kept (all dropped or "
      f"validation); {more} or lower val_fraction"
    )
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
    "origin": origin,
    "episodes": episodes,
    "counts": counts,
  }
  path = os.path.join(env_dir, METADATA)
  try:
    with open(path) as f:
      unchanged = json.load(f) == json.loads(json.dumps(meta))
  except (OSError, ValueError):
    unchanged = False
  if not unchanged:  # a complete environment on a read-only disk verifies without a write
    with open(path + ".tmp", "w") as f:
      json.dump(meta, f)
    os.replace(path + ".tmp", path)
  return meta


def remedy(meta: dict) -> str:
  """What rebuilds an environment, by how it was made."""
  name = meta.get("env", "?")
  if meta.get("origin") == "import":
    return (
      f"re-import it: `python -m westworld_jax.data.importers --name {name} --overwrite ...` "
      "(same --robot/--data/--out)"
    )
  if meta.get("origin") == "collect":
    return (
      "rerun `python -m westworld_jax.data.collect --config <the data config>` with this corpus_dir "
      "(it redoes shards that do not verify)"
    )
  return "regenerate this environment with the command that wrote it"


def env_lock(corpus_dir: str, env_name: str, what: str, busy=None):
  """The lock (locks.held) of environment `env_name` in `corpus_dir`, held while it is written:
  <corpus_dir>/.<env_name>.lock, beside the environment (whose directory is swapped in whole)."""
  os.makedirs(corpus_dir, exist_ok=True)
  return locks.held(os.path.join(corpus_dir, f".{env_name}.lock"), busy, what)


def load_metadata(env_dir: str) -> dict:
  path = os.path.join(env_dir, METADATA)
  if not os.path.exists(path):
    raise CorpusError(
      f"{env_dir} has no {METADATA}: the environment was not (fully) collected; run "
      "`python -m westworld_jax.data.collect --config experiments/data.py` (it resumes), or import it "
      "with `python -m westworld_jax.data.importers`"
    )
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise CorpusError(
      f"{path} is unreadable ({e}): regenerate the environment (rerun the collector, or re-import with --overwrite)"
    ) from e
  if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
    got = meta.get("format") if isinstance(meta, dict) else None
    raise CorpusError(f"{path} has format {got}, expected {FORMAT_VERSION}: recollect it")
  return meta


def verify_env(env_dir: str, meta: dict | None = None) -> dict:
  """Checks that the shards on disk are the ones metadata.json describes: every listed shard exists,
  is readable and holds as many records as the metadata lists episodes (with indices 0..n-1 and the
  lengths its marker recorded), and no other shard file is present. Reads only shard footers and
  markers. Raises CorpusError naming the environment, the shard file and the fix; returns meta."""
  meta = load_metadata(env_dir) if meta is None else meta
  name = meta.get("env") or os.path.basename(os.path.normpath(env_dir))
  where = f"environment '{name}' ({env_dir})"

  def fail(msg):
    raise CorpusError(f"{where}: {msg}; {remedy({**meta, 'env': name})}")

  try:
    num_shards = int(meta["num_shards"])
    listed: dict[int, list[tuple[int, int]]] = {}
    for e in meta["episodes"]:
      listed.setdefault(int(e["shard"]), []).append((int(e["index"]), int(e["length"])))
  except (KeyError, TypeError, ValueError) as e:
    fail(f"{METADATA} is malformed ({type(e).__name__}: {e})")
  outside = sorted(s for s in listed if not 0 <= s < num_shards)
  if outside:
    fail(f"{METADATA} lists episodes of shard {outside[0]} but num_shards is {num_shards}")
  stray = sorted(s for s in shard_files(env_dir) if not 0 <= s < num_shards)
  if stray:
    fail(
      f"{shard_path(env_dir, stray[0])} is not part of {METADATA} ({num_shards} shards): the directory "
      "mixes two corpora"
    )
  for s in range(num_shards):
    path = shard_path(env_dir, s)
    eps = sorted(listed.get(s, []))
    if [i for i, _ in eps] != list(range(len(eps))):
      fail(f"{METADATA} lists episode indices {[i for i, _ in eps][:8]} for {path}, expected 0..{len(eps) - 1}")
    n = num_records(env_dir, s)
    if n is None:
      state = "unreadable (truncated or corrupted)" if os.path.isfile(path) else "missing"
      fail(f"shard file {path} is {state}")
    if n != len(eps):
      fail(
        f"shard file {path} holds {n} records but {METADATA} lists {len(eps)} episodes for it "
        "(truncated shard or stale metadata)"
      )
    marker = read_marker(env_dir, s)
    if marker and isinstance(marker.get("lengths"), list) and marker["lengths"] != [l for _, l in eps]:
      fail(f"episode lengths in {METADATA} for {path} differ from those written with the shard")
  return meta


def staging_dir(env_dir: str, tag: str) -> str:
  """A sibling of env_dir (same filesystem, so it can be renamed into place), hidden by its dot."""
  parent, name = os.path.split(os.path.normpath(env_dir))
  return os.path.join(parent, f".{name}.{tag}")


def swap_in(stage: str, env_dir: str) -> None:
  """Puts the complete environment `stage` at env_dir, replacing what is there. Each rename is
  atomic; between the two, env_dir is briefly absent (readers then see 'no metadata', never a mix)."""
  env_dir = os.path.normpath(env_dir)
  if not os.path.lexists(env_dir):
    os.rename(stage, env_dir)
    return
  old = staging_dir(env_dir, f"old-{os.getpid()}")
  if os.path.lexists(old):
    shutil.rmtree(old)
  os.rename(env_dir, old)
  os.rename(stage, env_dir)
  shutil.rmtree(old, ignore_errors=True)
