"""Corpus collector: `python -m westworld_jax.data.collect --config experiments/data.py[:tiny]`.

For every environment (robot x behaviour) it simulates episodes shard by shard, drops and counts
bad episodes, and writes ArrayRecord shards plus metadata (see shards.py). Deterministic by seed
(each shard has its own RNG stream) and resumable: finished shards are skipped on a rerun.
"""
from __future__ import annotations

import dataclasses
import os
import time

from absl import app, logging
from ml_collections import config_flags
import tqdm

from westworld_jax.data import episodes as episodes_lib
from westworld_jax.data import mpc as mpc_lib
from westworld_jax.data import shards, simulate
from westworld_jax.robots import catalogue
from westworld_jax import cli

_CONFIG = None  # the --config flag, defined only when run as a program (train.py imports this module)


def selected_environments(cfg) -> list[catalogue.EnvSpec]:
  if cfg.environments:
    envs = [catalogue.env_spec(n) for n in cfg.environments]
  else:
    envs = [e for e in catalogue.environments() if e.split in tuple(cfg.splits)]
  if cfg.max_environments:
    envs = envs[: cfg.max_environments]
  return envs


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


def collect_environment(cfg, env: catalogue.EnvSpec, bar: tqdm.tqdm | None = None) -> dict:
  """Collects (or resumes) one environment and returns its metadata."""
  env_dir = os.path.join(cfg.corpus_dir, env.name)
  num_eps = episodes_for(cfg, env)
  num_shards = -(-num_eps // cfg.episodes_per_shard)
  robot = catalogue.load(env.robot)
  task = catalogue.robot_specs()[env.robot].task
  checks = simulate.EpisodeChecks(**cfg.checks)
  mpc_cfg = mpc_lib.MPCConfig(**cfg.mpc)
  todo = [s for s in range(num_shards) if not shards.shard_done(env_dir, s)]
  if bar is not None:
    bar.update(num_shards - len(todo))
  if todo:
    with _simulator_factory(cfg)(robot) as sim:
      for shard in todo:
        n = min(cfg.episodes_per_shard, num_eps - shard * cfg.episodes_per_shard)
        rng = episodes_lib.episode_rng(cfg.seed, env.name, shard)
        t0 = time.perf_counter()
        eps, counts = episodes_lib.generate(sim, env.behaviour, task, rng, n, cfg.episode_len, checks, mpc_cfg)
        elapsed = time.perf_counter() - t0
        shards.write_shard(env_dir, shard, eps, {"counts": dataclasses.asdict(counts), "seconds": elapsed})
        if bar is not None:
          bar.set_postfix(env=env.name, sim_steps_per_s=f"{counts.sim_steps / max(elapsed, 1e-9):.3g}")
          bar.update(1)
  meta = shards.finalize(env_dir, env.name, robot, env.behaviour, env.split, num_shards, cfg.val_fraction)
  c = meta["counts"]
  if c.get("unstable", 0) or c.get("too_short", 0):
    logging.info("%s: kept %d episodes; dropped %d unstable, %d too short (< %d steps)", env.name,
                 c.get("kept", 0), c.get("unstable", 0), c.get("too_short", 0), checks.min_length)
  return meta


def collect(cfg) -> list[dict]:
  envs = selected_environments(cfg)
  total = sum(-(-episodes_for(cfg, e) // cfg.episodes_per_shard) for e in envs)
  metas = []
  with tqdm.tqdm(total=total, desc="collect", unit="shard") as bar:
    for env in envs:
      metas.append(collect_environment(cfg, env, bar))
  return metas


def main(argv):
  del argv
  cfg = _CONFIG.value
  t0 = time.perf_counter()
  metas = collect(cfg)
  kept = sum(m["counts"].get("kept", 0) for m in metas)
  steps = sum(sum(e["length"] for e in m["episodes"]) for m in metas)
  print(f"corpus at {cfg.corpus_dir}: {len(metas)} environments, {kept} episodes, {steps} steps "
        f"in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/data.py", "Data config file.")
  cli.run(main)
