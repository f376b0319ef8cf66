"""Import outside trajectories (D4RL/Minari-style HDF5 or .npz) plus the robot's MJCF into a corpus.

  python -m westworld_jax.data.importers --robot my_robot.xml --data hopper-medium.hdf5 \
      --out corpus/mine --name hopper-medium [--split pretrain] [--overwrite] [--dt 0.008]

The file holds flat arrays `observations` [N, Co], `actions` [N, Ca] and episode ends `terminals`
and/or `timeouts` [N] (D4RL layout; `episode_ends` indices are accepted too), or Minari's layout (a
group `episode_<i>` per episode with `observations` [T+1, Co] and `actions` [T, Ca]). Columns must be
the robot's channels in the robot's order (`python -m westworld_jax.robots describe FILE` prints
them; D4RL's gym locomotion observations match); raw `qpos` [N, nq] and `qvel` [N, nv] arrays (top
level or D4RL's `infos/`) instead of `observations` are turned into the robot's channels here. The
robot is stepped at the data's control period: the file's `dt` (HDF5 attribute or .npz array), else
--dt, else the robot's own (DEFAULT_CONTROL_DT of its MJCF); it must be a whole number of the MJCF's
simulation steps. Episodes with NaN/inf are dropped and
counted; nothing is silently padded or cut. Episodes too short for a training window (history + 1
steps) are kept but reported; if none is long enough the import fails.

The environment is written into a staging directory next to it and renamed into place when
complete: a failed import leaves nothing behind, and an existing environment is replaced only
with --overwrite (never partly: its old shards and metadata go with it).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

from absl import app, flags, logging
import numpy as np

from westworld_jax.data import shards
from westworld_jax.robots import catalogue
from westworld_jax.robots.robot import Robot
from westworld_jax import cli


DEFAULT_HISTORY = 50  # the data configs' history: a window needs more steps than this


def read_arrays(path: str) -> dict[str, np.ndarray]:
  """The file's arrays by path ('infos/qpos' for nested ones). A Minari file (one group per episode,
  `episode_<i>` with `observations` [T+1, Co] and `actions` [T, Ca]) comes back in the flat layout:
  its episodes concatenated, each without its final observation (no action follows it), and
  `episode_ends`."""
  if not os.path.exists(path):
    raise shards.CorpusError(f"data file '{path}' does not exist")
  try:
    if path.endswith((".hdf5", ".h5")):
      import h5py

      with h5py.File(path, "r") as f:
        arrays: dict[str, np.ndarray] = {}
        f.visititems(lambda k, v: arrays.__setitem__(k, np.asarray(v)) if isinstance(v, h5py.Dataset) else None)
        episodes = sorted((k for k in f.keys() if k.startswith("episode_")), key=lambda k: int(k.split("_")[-1]))
      if episodes and "actions" not in arrays:
        return _minari(arrays, episodes, path)
      return arrays
    if path.endswith(".npz"):
      with np.load(path) as z:
        return {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise shards.CorpusError(f"data file '{path}' is unreadable ({e}); is it a complete HDF5/.npz file?") from e
  raise shards.CorpusError(f"'{path}': expected an .hdf5/.h5 (D4RL/Minari style) or .npz file")


def read_dt(path: str) -> float | None:
  """The control period the file states: an HDF5 root attribute or an .npz array `dt` (None if it says none)."""
  try:
    if path.endswith((".hdf5", ".h5")):
      import h5py

      with h5py.File(path, "r") as f:
        dt = f.attrs.get("dt")
    elif path.endswith(".npz"):
      with np.load(path) as z:
        dt = z["dt"] if "dt" in z.files else None
    else:
      return None
  except (OSError, ValueError):
    return None  # read_arrays reports an unreadable file
  return None if dt is None else float(np.asarray(dt).reshape(-1)[0])


def robot_at_dt(robot: Robot, dt: float | None, where: str) -> Robot:
  """The robot stepped every `dt` seconds (its frame skip changed; None: as it is). dt must be a whole
  number of its simulation steps."""
  if dt is None or abs(dt - robot.dt) <= 1e-9 * max(dt, 1.0):
    return robot
  step = float(robot.model.opt.timestep)
  skip = dt / step
  if dt <= 0 or round(skip) < 1 or abs(skip - round(skip)) > 1e-6:
    raise shards.CorpusError(
      f"{where}: dt={dt} s is not a whole number of robot '{robot.name}''s simulation steps ({step} s): "
      "pass the data's true control period (--dt) or fix the MJCF's <option timestep>"
    )
  return dataclasses.replace(robot, frame_skip=int(round(skip)))


def _minari(arrays: dict, episodes: list[str], path: str) -> dict[str, np.ndarray]:
  obs, act = [], []
  for ep in episodes:
    o, a = arrays.get(f"{ep}/observations"), arrays.get(f"{ep}/actions")
    if o is None or a is None:
      nested = sorted(k for k in arrays if k.startswith(f"{ep}/observations/"))
      raise shards.CorpusError(
        f"{path}: Minari episode '{ep}' has no flat `observations` and `actions` arrays"
        + (f" (its observations are a dict: {nested[:4]}): flatten them into the robot's channels" if nested else "")
      )
    if len(o) not in (len(a), len(a) + 1):
      raise shards.CorpusError(f"{path}: episode '{ep}' has {len(o)} observations for {len(a)} actions")
    obs.append(o[: len(a)])
    act.append(a)
  ends = np.cumsum([len(a) for a in act])
  return {"observations": np.concatenate(obs), "actions": np.concatenate(act), "episode_ends": ends}


def _observations(arrays: dict[str, np.ndarray], robot: Robot, where: str) -> np.ndarray:
  """`observations`, else the robot's channels of raw `qpos` / `qvel` (top level or D4RL's infos/)."""
  if "observations" in arrays:
    return np.asarray(arrays["observations"])
  for prefix in ("", "infos/"):
    qpos, qvel = arrays.get(prefix + "qpos"), arrays.get(prefix + "qvel")
    if qpos is not None and qvel is not None:
      nq, nv = robot.model.nq, robot.model.nv
      if qpos.ndim != 2 or qvel.ndim != 2 or qpos.shape[1] != nq or qvel.shape[1] != nv or len(qpos) != len(qvel):
        raise shards.CorpusError(
          f"{where}: {prefix}qpos {qpos.shape} / {prefix}qvel {qvel.shape} must be [N, {nq}] / [N, {nv}] "
          f"for robot '{robot.name}' (nq={nq}, nv={nv})"
        )
      return robot.obs_from_qpos_qvel(qpos, qvel)
  raise shards.CorpusError(
    f"{where} has no 'observations' array and no qpos/qvel (found {sorted(arrays)[:12]}); D4RL layout expected"
  )


def split_episodes(arrays: dict[str, np.ndarray], robot: Robot, where: str) -> list[dict]:
  if "actions" not in arrays:
    raise shards.CorpusError(f"{where} has no 'actions' array (found {sorted(arrays)[:12]}); D4RL layout expected")
  obs, act = _observations(arrays, robot, where), np.asarray(arrays["actions"])
  if obs.ndim != 2 or act.ndim != 2 or len(obs) != len(act):
    raise shards.CorpusError(f"{where}: observations {obs.shape} and actions {act.shape} must be [N, C] with equal N")
  if obs.shape[1] != robot.num_obs:
    raise shards.CorpusError(
      f"{where} has {obs.shape[1]} observation columns but robot '{robot.name}' has "
      f"{robot.num_obs} observation channels; reorder/select columns to match "
      "`python -m westworld_jax.robots describe` (positions without global x/y, then "
      "velocities), or give raw `qpos` and `qvel` arrays (the library orders the channels)"
    )
  if act.shape[1] != robot.num_act:
    raise shards.CorpusError(
      f"{where} has {act.shape[1]} action columns but robot '{robot.name}' has {robot.num_act} actuators"
    )
  n = len(obs)
  if n == 0:
    raise shards.CorpusError(f"{where} has no episodes (its observations and actions are empty): nothing to import")
  if "episode_ends" in arrays:
    ends = np.asarray(arrays["episode_ends"], np.int64)
  else:
    done = np.zeros(n, bool)
    for key in ("terminals", "timeouts", "dones"):
      if key in arrays:
        flags_n = np.asarray(arrays[key]).reshape(-1)
        if len(flags_n) != n:
          raise shards.CorpusError(
            f"{where}: `{key}` has {len(flags_n)} entries for {n} steps (one per step expected): fix the file's "
            "episode ends"
          )
        done |= flags_n.astype(bool)
    ends = np.flatnonzero(done) + 1
  ends = np.unique(np.concatenate([ends[(ends > 0) & (ends < n)], [n]]))
  starts = np.concatenate([[0], ends[:-1]])
  obs32, act32 = (
    _float32(obs, "observations", where, robot.obs_channels),
    _float32(act, "actions", where, robot.act_channels),
  )
  return [{"obs": obs32[s:e], "act": act32[s:e]} for s, e in zip(starts, ends)]


def _float32(x: np.ndarray, what: str, where: str, channels) -> np.ndarray:
  """x as float32; a finite value beyond float32's range is an error naming it (not NaN/inf later)."""
  with np.errstate(over="ignore"):
    out = np.asarray(x).astype(np.float32)
  over = np.isinf(out) & np.isfinite(np.asarray(x, np.float64))
  if over.any():
    row, col = (int(i[0]) for i in np.nonzero(over))
    raise shards.CorpusError(
      f"{where}: {what} hold {int(over.sum())} finite values beyond float32's range (+-3.4e38), e.g. "
      f"{float(np.asarray(x)[row, col]):.3g} at row {row}, channel {channels[col].name}: rescale or drop them"
    )
  return out


def check_action_range(robot: Robot, episodes: list[dict], where: str, strict: bool = False) -> None:
  """Actions outside the robot's control range (its actuators' ctrlrange; the simulator clips them) are a
  warning naming each such channel, its range and what the data holds (an error with `strict`):
  min-max normalisation would otherwise hide a unit or scale mismatch."""
  if not episodes:
    return
  act = np.concatenate([e["act"] for e in episodes])
  lo, hi = act.min(0), act.max(0)
  span = np.maximum(robot.act_high - robot.act_low, 1e-6)
  out = np.flatnonzero((lo < robot.act_low - 0.05 * span) | (hi > robot.act_high + 0.05 * span))
  if not len(out):
    return
  parts = [
    f"{robot.act_channels[i].name} [{lo[i]:.3g}, {hi[i]:.3g}] (range [{robot.act_low[i]:.3g}, {robot.act_high[i]:.3g}])"
    for i in out[:6]
  ]
  msg = (
    f"{where}: {len(out)} of {robot.num_act} action channels leave the control range of robot '{robot.name}': "
    f"{'; '.join(parts)}{' ...' if len(out) > 6 else ''}; are they in the actuators' units?"
  )
  if strict:
    raise shards.CorpusError(msg + " (--strict refuses them)")
  logging.warning("%s", msg)


def _describe(env_dir: str) -> str:
  try:
    meta = shards.load_metadata(env_dir)
    return f" ({len(meta['episodes'])} episodes, behaviour '{meta.get('behaviour')}')"
  except (shards.CorpusError, KeyError, TypeError):
    return ""


def _check_free(env_dir: str, overwrite: bool) -> None:
  if os.path.lexists(env_dir) and not overwrite:
    raise shards.CorpusError(
      f"{env_dir} already exists{_describe(env_dir)}: pass --overwrite to replace it "
      "(its shards and metadata are removed) or choose another --name"
    )


def import_file(
  robot_source: str,
  data_path: str,
  out_dir: str,
  name: str,
  split: str = "pretrain",
  behaviour: str = "imported",
  episodes_per_shard: int = 64,
  min_length: int = 2,
  val_fraction: float = 0.1,
  overwrite: bool = False,
  history: int = DEFAULT_HISTORY,
  dt: float | None = None,
  trained: frozenset[str] = frozenset(),
  strict: bool = False,
) -> dict:
  """Writes `out_dir/name/` in the corpus format and returns its metadata. `dt`: the data's control
  period when the file does not state one (an HDF5 attribute or .npz array `dt`); None: the file's,
  else the robot's.

  Refuses an existing `out_dir/name` unless `overwrite`; episodes of at most `history` steps (no
  training window) are kept with a warning, and the import fails if no episode is longer. `trained`:
  shards.finalize's (the episodes a model trained on are its training split, the rest held out)."""
  if split not in catalogue.SPLITS:
    raise shards.CorpusError(f"split must be one of {catalogue.SPLITS}, got '{split}'")
  _check_free(os.path.join(out_dir, name), overwrite)  # before reading the data; again under the lock
  file_dt = read_dt(data_path)
  if dt and file_dt and abs(dt - file_dt) > 1e-9 * max(dt, 1.0):
    raise shards.CorpusError(f"{data_path} states dt={file_dt} s but --dt={dt}: drop --dt or fix the file")
  robot = robot_at_dt(catalogue.load(robot_source), dt or file_dt, data_path)
  episodes = split_episodes(read_arrays(data_path), robot, data_path)
  check_action_range(robot, episodes, data_path, strict)
  return import_episodes(
    robot,
    episodes,
    out_dir,
    name,
    data_path,
    split=split,
    behaviour=behaviour,
    episodes_per_shard=episodes_per_shard,
    min_length=min_length,
    val_fraction=val_fraction,
    history=history,
    trained=trained,
    overwrite=overwrite,
  )


def import_episodes(
  robot: Robot,
  episodes: list[dict],
  out_dir: str,
  name: str,
  source: str,
  split: str = "pretrain",
  behaviour: str = "imported",
  episodes_per_shard: int = 64,
  min_length: int = 2,
  val_fraction: float = 0.1,
  history: int = DEFAULT_HISTORY,
  trained: frozenset[str] = frozenset(),
  overwrite: bool = True,
) -> dict:
  """Writes episodes ({"obs" [T, Co], "act" [T, Ca]} of `robot`) as `out_dir/name/` (replacing it whole,
  or refusing an existing one unless `overwrite`); `source` names them in messages and the shard markers.
  Drops and counts NaN/inf and too-short episodes. Holds the environment's lock while it writes: a second
  import of the same name at once is refused with one line naming the first."""
  data_path, env_dir = source, os.path.join(out_dir, name)
  counts = {"kept": 0, "unstable": 0, "too_short": 0}
  good = []
  for ep in episodes:
    if not (np.isfinite(ep["obs"]).all() and np.isfinite(ep["act"]).all()):
      counts["unstable"] += 1
    elif len(ep["obs"]) < min_length:
      counts["too_short"] += 1
    else:
      counts["kept"] += 1
      good.append(ep)
  lengths = sorted(len(ep["obs"]) for ep in episodes)
  if not good:
    raise shards.CorpusError(
      f"{data_path}: none of its {len(episodes)} episodes is usable ({counts['unstable']} "
      f"with NaN/inf values, {counts['too_short']} shorter than {min_length} steps; "
      f"lengths {_lengths(lengths)}): nothing imported"
    )
  short = sorted(len(ep["obs"]) for ep in good if len(ep["obs"]) <= history)
  if len(short) == len(good):
    raise shards.CorpusError(
      f"{data_path}: all {len(good)} usable episodes are too short for a training window "
      f"(more than history={history} steps needed; lengths {_lengths(short)}): nothing "
      "imported; import longer episodes (check the episode ends: terminals/timeouts/"
      "episode_ends) or pass a smaller --history to match the model"
    )
  if short:
    logging.warning(
      "%s: %d of %d episodes have at most history=%d steps and give no training window "
      "(lengths %s); they are imported but only longer episodes are trained on",
      data_path,
      len(short),
      len(good),
      history,
      _lengths(short),
    )
  if counts["unstable"] or counts["too_short"]:
    logging.warning(
      "%s: dropped %d episodes with NaN/inf values and %d shorter than %d steps",
      data_path,
      counts["unstable"],
      counts["too_short"],
      min_length,
    )
  made_out = not os.path.exists(out_dir)

  def busy(holder: str) -> shards.CorpusError:
    return shards.CorpusError(
      f"{env_dir} is being written by another import or collection ({holder}): wait for it to end, "
      "or import under another --name"
    )

  with shards.env_lock(out_dir, name, f"importing {name}", busy):
    _check_free(env_dir, overwrite)
    stage = tempfile.mkdtemp(prefix=f".{name}.import-", dir=out_dir)
    try:
      umask = os.umask(0)
      os.umask(umask)
      os.chmod(stage, 0o777 & ~umask)  # mkdtemp's 0700 would stay on the environment directory
      num_shards = -(-len(good) // episodes_per_shard)
      source = os.path.abspath(data_path) if os.path.exists(data_path) else data_path
      for s in range(num_shards):
        part = good[s * episodes_per_shard : (s + 1) * episodes_per_shard]
        shards.write_shard(stage, s, part, {"counts": counts if s == 0 else {}, "source": source})
      meta = shards.finalize(
        stage, name, robot, behaviour, split, num_shards, val_fraction, origin="import", trained=trained
      )
      shards.verify_env(stage, meta)
      shards.swap_in(stage, env_dir)
    except BaseException:
      shutil.rmtree(stage, ignore_errors=True)
      if made_out and os.listdir(out_dir) == [f".{name}.lock"]:  # leave no directory this import made
        os.remove(os.path.join(out_dir, f".{name}.lock"))
        os.rmdir(out_dir)
      raise
  return meta


def _lengths(lengths: list[int], n: int = 10) -> str:
  return ", ".join(map(str, lengths[:n])) + (f", ... ({len(lengths)} in all)" if len(lengths) > n else "")


def main(argv):
  del argv
  for f in (_ROBOT, _DATA, _NAME):
    if not f.value:
      raise app.UsageError(f"--{f.name} is required")
  meta = import_file(
    _ROBOT.value,
    _DATA.value,
    _OUT.value,
    _NAME.value,
    _SPLIT.value,
    overwrite=_OVERWRITE.value,
    history=_HISTORY.value,
    dt=_DT.value or None,
    strict=_STRICT.value,
  )
  print(f"imported {meta['counts']} episodes into {os.path.join(_OUT.value, _NAME.value)}")


if __name__ == "__main__":
  # Flags only when run as a program: importing this module (evaluate does) defines none.
  _ROBOT = flags.DEFINE_string("robot", None, "Robot: catalogue name or MJCF/URDF path.")
  _DATA = flags.DEFINE_string("data", None, "HDF5 (D4RL/Minari layout) or .npz file.")
  _OUT = flags.DEFINE_string("out", "corpus/imported", "Corpus directory to write into.")
  _NAME = flags.DEFINE_string("name", None, "Environment name (directory under --out).")
  _SPLIT = flags.DEFINE_enum("split", "pretrain", list(catalogue.SPLITS), "Which split the data belongs to.")
  _OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing environment of that name.")
  _STRICT = flags.DEFINE_bool("strict", False, "Refuse actions outside the robot's control range (default: a warning).")
  _DT = flags.DEFINE_float(
    "dt",
    0.0,
    "The data's control period in seconds where the file states none (default: the file's, else the robot's).",
  )
  _HISTORY = flags.DEFINE_integer(
    "history",
    DEFAULT_HISTORY,
    "Model history: episodes of at most this many steps give no training window (reported; an error if all are).",
  )
  cli.run(main)
