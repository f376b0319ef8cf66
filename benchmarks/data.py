"""Benchmark: corpus collection throughput vs raw mujoco.rollout, and loader windows/s.

  python benchmarks/data.py [--robots dmc_cheetah,gym_ant,quad_go1] [--nthread 2]

Collection = our full path for one shard (initial states, open-loop OU policy, rollout, observation
extraction, episode checks, ArrayRecord write). Raw = mujoco.rollout alone on the same robot, same
number of environments, steps and threads, with precomputed controls. The ratio is what the
collector keeps of the simulator's speed (goal >= 0.8). Prints a table and writes
benchmarks/results/data_cpu.json.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import os
import platform
import tempfile
import time

import mujoco
import numpy as np
from mujoco import rollout

from westworld_jax.data import behaviours, collect, episodes, pipeline, shards, simulate
from westworld_jax.robots import catalogue
from experiments import data as data_config


def _throughput(robot_name, n, T, nthread, reps):
  """Best-of-reps steps/s of raw mujoco.rollout and of the collector, interleaved so that load from
  other processes hits both alike. Both simulate the same start states and OU controls."""
  robot = catalogue.load(robot_name)
  task = catalogue.robot_specs()[robot_name].task
  m = robot.model
  raw_best = ours_best = np.inf
  with (
    tempfile.TemporaryDirectory() as d,
    simulate.Simulator(robot, nthread=nthread) as sim,
    rollout.Rollout(nthread=nthread) as pool,
  ):
    rng = np.random.default_rng(0)  # consumed exactly as episodes.generate consumes it
    start = sim.initial_states(rng, n)
    u = behaviours.open_loop("ou", robot, rng, n, T)
    ctrl = np.repeat(behaviours.to_ctrl(robot, u), robot.frame_skip, axis=1)
    datas = [mujoco.MjData(m) for _ in range(max(1, nthread))]
    for r in range(reps):
      t0 = time.perf_counter()
      pool.rollout([m] * n, datas, start, ctrl)
      raw_best = min(raw_best, time.perf_counter() - t0)
      t0 = time.perf_counter()
      eps, counts = episodes.generate(sim, "ou", task, np.random.default_rng(0), n, T)
      shards.write_shard(d, r, eps, {"counts": {}})
      ours_best = min(ours_best, time.perf_counter() - t0)
  steps = n * T * robot.frame_skip
  return steps / raw_best, steps / ours_best, counts


def _loader(nthread):
  c = data_config.get_config("tiny")
  with tempfile.TemporaryDirectory() as d:
    c.corpus_dir = d
    c.environments = ("dmc_cheetah-ou", "dmc_reacher-pd_targets", "gym_swimmer-ou", "gym_ant-ou")
    c.episode_len, c.episodes_per_env = 500, 8
    collect.collect(c)
    it = pipeline.make_iterator(pipeline.PipelineConfig(d, c.environments, batch_size=16, num_threads=nthread))
    for _ in range(5):
      next(it)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 5.0:
      n += len(next(it)["obs"])
    return n / (time.perf_counter() - t0)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--robots", default="dmc_cheetah,gym_ant,dmc_humanoid,quad_go1,proc_snake_7")
  p.add_argument("--nthread", type=int, default=os.cpu_count())
  p.add_argument("--envs", type=int, default=32)
  p.add_argument("--steps", type=int, default=500)
  p.add_argument("--reps", type=int, default=3)
  args = p.parse_args()
  rows = []
  for name in args.robots.split(","):
    raw, ours, counts = _throughput(name, args.envs, args.steps, args.nthread, args.reps)
    rows.append(
      {
        "robot": name,
        "raw_steps_per_s": raw,
        "collector_steps_per_s": ours,
        "ratio": ours / raw,
        "kept_episodes": counts.kept,
      }
    )
  loader = _loader(min(2, args.nthread))
  print(f"{'robot':16s} {'raw rollout steps/s':>20s} {'collector steps/s':>18s} {'ratio':>6s}")
  for r in rows:
    print(f"{r['robot']:16s} {r['raw_steps_per_s']:20.0f} {r['collector_steps_per_s']:18.0f} {r['ratio']:6.2f}")
  print(f"loader: {loader:.0f} windows/s (150 steps, batch 16, 4 environments)")
  out = {
    "host": platform.node(),
    "cpu_count": os.cpu_count(),
    "nthread": args.nthread,
    "envs": args.envs,
    "steps": args.steps,
    "mujoco": mujoco.__version__,
    "rows": rows,
    "loader_windows_per_s": loader,
  }
  common.write_result(out, "data_cpu")


if __name__ == "__main__":
  main()
