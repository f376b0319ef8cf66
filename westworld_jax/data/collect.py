"""Corpus collector: `python -m westworld_jax.data.collect --config experiments/data.py[:tiny]`;
with `--robot FILE [--behaviours ou,gait] [--task locomotion]`, a robot outside the catalogue under every
behaviour that applies (its trained policies' levels too: `python -m westworld_jax.data.train_policy --robot FILE`),
as environments <model name>-<behaviour> in the config's corpus_dir.

For every environment (robot x behaviour) it simulates episodes shard by shard, drops and counts
bad episodes, and writes ArrayRecord shards plus metadata (see shards.py). Deterministic by seed
(each shard has its own RNG stream) and resumable: finished shards are skipped on a rerun, but
only those that verify (marker, readable records, as many as the marker lists); others are redone
with a warning. Shards are written into a staging directory next to the environment, which
replaces it when complete. An environment collected with other settings (shard count, seed,
episode length, checks) is refused unless --overwrite, which replaces it whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

from absl import flags, logging
from ml_collections import config_flags
import tqdm

from westworld_jax.data import episodes as episodes_lib
from westworld_jax.data import mpc as mpc_lib
from westworld_jax.data import behaviours as behaviours_lib
from westworld_jax.data import shards, simulate
from westworld_jax.errors import UserError
from westworld_jax.robots import catalogue
from westworld_jax import cli

_CONFIG = None  # the --config flag, defined only when run as a program (train.py imports this module)
_OVERWRITE = _ROBOT = _BEHAVIOURS = _TASK = None


def selected_environments(cfg) -> list[catalogue.EnvSpec]:
  if cfg.environments:
    envs = [catalogue.env_spec(n) for n in cfg.environments]
  else:
    envs = [e for e in catalogue.environments() if e.split in tuple(cfg.splits)]
  if cfg.max_environments:
    envs = envs[: cfg.max_environments]
  return envs


def user_environments(
  source: str, behaviours=None, task: str = "", split: str = catalogue.ZERO_SHOT, policy_root: str | None = None
) -> tuple[catalogue.EnvSpec, ...]:
  """Environments of a robot the catalogue does not hold (an MJCF/URDF path): `<model name>-<behaviour>`
  for each behaviour (default: those of its task family, plus the D4RL levels of policies trained for
  it with `train_policy --robot FILE`). task: '' = locomotion for a floating base, else arm."""
  from westworld_jax.data import train_policy  # pylint: disable=import-outside-toplevel  (imports jax)

  robot = catalogue.user_robot(source)
  if task and task not in catalogue.TASKS:
    raise UserError(f"task '{task}' unknown: choose one of {catalogue.TASKS}")
  if not task:
    task = catalogue.LOCOMOTION if robot.floating else catalogue.ARM
  if not behaviours:
    trained = [
      f"policy_{lv}"
      for lv in train_policy.LEVELS
      if os.path.exists(os.path.join(train_policy.policy_dir(robot.name, lv, policy_root), train_policy.META))
    ]
    behaviours = catalogue.BEHAVIOURS[task] + tuple(trained) + (("policy_replay",) if trained else ())
  unknown = [b for b in behaviours if b not in behaviours_lib.ALL]
  if unknown:
    raise UserError(f"unknown behaviours {unknown}: choose from {behaviours_lib.ALL}")
  return tuple(catalogue.EnvSpec(f"{robot.name}-{b}", source, b, split, task) for b in behaviours)


def episodes_for(cfg, env: catalogue.EnvSpec) -> int:
  """MPC simulates samples x horizon steps per step, so its environments get their own budget."""
  return cfg.mpc_episodes_per_env if env.behaviour == "mpc" else cfg.episodes_per_env


def _simulator_factory(cfg):
  if cfg.backend == "rollout":
    nthread = cfg.nthread or os.cpu_count() or 1
    return lambda robot: simulate.Simulator(robot, nthread=nthread)
  if cfg.backend == "mjx":
    from westworld_jax.data import mjx_backend  # jax/mjx only when asked for

    return mjx_backend.MJXSimulator
  raise ValueError(f"unknown backend '{cfg.backend}': use 'rollout' or 'mjx'")


def _settings(cfg, env: catalogue.EnvSpec, n: int, checks, mpc_cfg) -> dict:
  """What a shard's episodes depend on besides the environment and shard number (kept in its marker)."""
  out = {"seed": cfg.seed, "episodes": n, "episode_len": cfg.episode_len, "checks": dataclasses.asdict(checks)}
  if env.behaviour == "mpc":
    out["mpc"] = dataclasses.asdict(mpc_cfg)
  return json.loads(json.dumps(out))  # as it reads back from the marker


def _changed(env_dir: str, num_shards: int, settings: list[dict]) -> str | None:
  """How the collected environment differs from what the config asks for, or None."""
  present = shards.shard_files(env_dir)
  extra = sorted(s for s in present if s >= num_shards)
  if extra:
    return f"{max(present) + 1} shards on disk, the config asks for {num_shards}"
  if os.path.exists(os.path.join(env_dir, shards.METADATA)):
    try:
      old = shards.load_metadata(env_dir).get("num_shards")
    except shards.CorpusError:
      old = None  # unreadable metadata is rewritten
    if old is not None and old != num_shards:
      return f"{old} shards in its metadata, the config asks for {num_shards}"
  for s in sorted(present):
    got = (shards.read_marker(env_dir, s) or {}).get("settings")
    if got is not None and got != settings[s]:
      diff = [f"{k} {got.get(k)} -> {v}" for k, v in settings[s].items() if got.get(k) != v]
      return f"shard {s}: {'; '.join(diff)}"
  return None


def _link_shard(src_dir: str, dst_dir: str, shard: int) -> None:
  for src in (shards.shard_path(src_dir, shard), shards.marker_path(src_dir, shard)):
    dst = os.path.join(dst_dir, os.path.basename(src))
    if os.path.lexists(dst):
      os.remove(dst)
    try:
      os.link(src, dst)
    except OSError:  # no hard links on this filesystem
      shutil.copy2(src, dst)


def _remove_shard(env_dir: str, shard: int) -> None:
  for path in (shards.shard_path(env_dir, shard), shards.marker_path(env_dir, shard)):
    if os.path.lexists(path):
      os.remove(path)


def collect_environment(cfg, env: catalogue.EnvSpec, bar: tqdm.tqdm | None = None, overwrite: bool = False) -> dict:
  """Collects (or resumes, or repairs) one environment and returns its metadata. Holds the environment's
  lock (shards.env_lock): a second process collecting it waits, then finds it complete (the processes of
  a multi-host run on a shared filesystem)."""
  with shards.env_lock(cfg.corpus_dir, env.name, f"collecting {env.name}"):
    return _collect_environment(cfg, env, bar, overwrite)


def _collect_environment(cfg, env: catalogue.EnvSpec, bar: tqdm.tqdm | None, overwrite: bool) -> dict:
  env_dir = os.path.join(cfg.corpus_dir, env.name)
  stage = shards.staging_dir(env_dir, "partial")
  num_eps = episodes_for(cfg, env)
  num_shards = -(-num_eps // cfg.episodes_per_shard)
  robot = catalogue.load(env.robot)
  task = catalogue.task_of(env)
  checks = simulate.EpisodeChecks(**cfg.checks)
  mpc_cfg = mpc_lib.MPCConfig(**cfg.mpc)
  sizes = [min(cfg.episodes_per_shard, num_eps - s * cfg.episodes_per_shard) for s in range(num_shards)]
  settings = [_settings(cfg, env, n, checks, mpc_cfg) for n in sizes]

  seen: dict[tuple[str, int], str | None] = {}

  def problem(d, s):  # memoised: a full check reads the whole shard
    if (d, s) not in seen:
      p = shards.shard_problem(d, s, full=True)
      if p is None and (shards.read_marker(d, s) or {}).get("settings", settings[s]) != settings[s]:
        p = "collected with other settings"
      seen[d, s] = p
    return seen[d, s]

  if overwrite:
    shutil.rmtree(stage, ignore_errors=True)
  else:
    changed = _changed(env_dir, num_shards, settings)
    if changed:
      raise shards.CorpusError(
        f"environment '{env.name}' in {cfg.corpus_dir} was collected with other settings "
        f"({changed}): collect into another corpus_dir, or rerun with --overwrite to "
        "replace it"
      )
    if all(problem(env_dir, s) is None for s in range(num_shards)):
      # Complete on disk: only the metadata is rewritten (atomically), e.g. for a new val_fraction.
      shutil.rmtree(stage, ignore_errors=True)
      if bar is not None:
        bar.update(num_shards)
      return _finalize(cfg, env, env_dir, robot, num_shards, checks)
  os.makedirs(stage, exist_ok=True)
  for s in sorted(shards.shard_files(stage)):
    if s >= num_shards:
      _remove_shard(stage, s)
  todo = []
  for s in range(num_shards):
    if problem(stage, s) is None:
      continue
    if not overwrite and problem(env_dir, s) is None:
      _link_shard(env_dir, stage, s)
      seen.pop((stage, s), None)
      continue
    for d in (stage,) if overwrite else (env_dir, stage):
      if shards.shard_files(d).get(s):
        logging.warning(
          "environment %s: %s does not verify (%s); redoing the shard", env.name, shards.shard_path(d, s), problem(d, s)
        )
        break
    _remove_shard(stage, s)
    seen.pop((stage, s), None)
    todo.append(s)
  if bar is not None:
    bar.update(num_shards - len(todo))
  if todo:
    with _simulator_factory(cfg)(robot) as sim:
      for shard in todo:
        rng = episodes_lib.episode_rng(cfg.seed, env.name, shard)
        t0 = time.perf_counter()
        eps, counts = episodes_lib.generate(
          sim,
          env.behaviour,
          task,
          rng,
          sizes[shard],
          cfg.episode_len,
          checks,
          mpc_cfg,
          first_episode=shard * cfg.episodes_per_shard,
        )
        elapsed = time.perf_counter() - t0
        shards.write_shard(
          stage, shard, eps, {"counts": dataclasses.asdict(counts), "seconds": elapsed, "settings": settings[shard]}
        )
        if bar is not None:
          bar.set_postfix(env=env.name, sim_steps_per_s=f"{counts.sim_steps / max(elapsed, 1e-9):.3g}")
          bar.update(1)
  meta = _finalize(cfg, env, stage, robot, num_shards, checks)
  shards.swap_in(stage, env_dir)
  return meta


def _finalize(cfg, env: catalogue.EnvSpec, env_dir: str, robot, num_shards: int, checks) -> dict:
  meta = shards.finalize(
    env_dir, env.name, robot, env.behaviour, env.split, num_shards, cfg.val_fraction, origin="collect"
  )
  shards.verify_env(env_dir, meta)
  c = meta["counts"]
  if c.get("unstable", 0) or c.get("too_short", 0):
    logging.info(
      "%s: kept %d episodes; dropped %d unstable, %d too short (< %d steps)",
      env.name,
      c.get("kept", 0),
      c.get("unstable", 0),
      c.get("too_short", 0),
      checks.min_length,
    )
  return meta


def collect(cfg, overwrite: bool = False, envs=None, skip_failed: bool = False) -> list[dict]:
  """Collects every selected environment (or `envs`); `overwrite` replaces those collected with other
  settings; `skip_failed`: an environment none of whose episodes survives the checks is skipped with a
  warning (a user's robot under every behaviour: some may not suit it) instead of ending the collection."""
  envs = selected_environments(cfg) if envs is None else list(envs)
  total = sum(-(-episodes_for(cfg, e) // cfg.episodes_per_shard) for e in envs)
  metas = []
  with tqdm.tqdm(total=total, desc="collect", unit="shard") as bar:
    for env in envs:
      try:
        metas.append(collect_environment(cfg, env, bar, overwrite))
      except shards.CorpusError as e:
        if not skip_failed:
          raise
        logging.warning("skipped %s: %s", env.name, e)
  return metas


def main(argv):
  del argv
  cfg = _CONFIG.value
  t0 = time.perf_counter()
  envs = None
  if _ROBOT.value:  # a robot outside the catalogue: every applicable behaviour (or --behaviours)
    behaviours = tuple(b.strip() for b in _BEHAVIOURS.value.split(",") if b.strip())
    envs = user_environments(_ROBOT.value, behaviours, _TASK.value)
  metas = collect(cfg, overwrite=_OVERWRITE.value, envs=envs, skip_failed=envs is not None)
  kept = sum(m["counts"].get("kept", 0) for m in metas)
  steps = sum(sum(e["length"] for e in m["episodes"]) for m in metas)
  print(
    f"corpus at {cfg.corpus_dir}: {len(metas)} environments, {kept} episodes, {steps} steps "
    f"in {time.perf_counter() - t0:.1f}s"
  )


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/data.py", "Data config file.")
  _OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace environments collected with other settings (recollected whole) instead of refusing them.",
  )
  _ROBOT = flags.DEFINE_string(
    "robot", None, "Collect a robot outside the catalogue (MJCF/URDF path) instead of the config's environments."
  )
  _BEHAVIOURS = flags.DEFINE_string(
    "behaviours", "", "With --robot: comma-separated behaviours (default: all that apply, policies included)."
  )
  _TASK = flags.DEFINE_string(
    "task", "", "With --robot: its task family, locomotion|arm|balance|swim|hand (default: from its base joint)."
  )
  cli.run(main)
