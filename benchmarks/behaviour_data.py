"""Benchmark: what each behaviour's data looks like, per robot (does the robot walk, fall, lie still?).

  python benchmarks/behaviour_data.py [--robots hopper,walker2d] [--episodes 16] [--episode_len 1000]

For every catalogue behaviour of the robot (open-loop ou/gait, pd_hold, mpc unless --no_mpc, the
trained policy levels) it generates episodes with the collector's own code (episodes.generate, the
same checks and fall truncation) and reports: episodes kept, how many fell, mean episode length,
mean forward speed of the root (m/s, over the kept steps), the gymnasium v5 return where the robot
has one, the mean per-channel std of the observations (how much the data moves) and seconds of
simulation. Prints a table, writes benchmarks/results/behaviour_data.json and a bar plot.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import json
import os
import time

import numpy as np

from westworld_jax.data import episodes, mpc as mpc_lib, rl_env, simulate
from westworld_jax.robots import catalogue


_FORWARD_VELOCITY = ("rootx:vel", "root:vx", "slider1:vel")


def _stats(robot, eps, spec) -> dict:
  """Forward speed: the root's x velocity channel (planar rootx:vel, free root:vx, swimmer slider1:vel)."""
  names = [c["name"] for c in robot.describe()["obs_channels"]]
  vx = next((names.index(n) for n in _FORWARD_VELOCITY if n in names), None)
  lengths = np.array([len(e["obs"]) for e in eps])
  speed = float(np.mean(np.concatenate([e["obs"][:, vx] for e in eps]))) if vx is not None and eps else float("nan")
  std = float(np.mean(np.concatenate([e["obs"] for e in eps]).std(0))) if eps else float("nan")
  ret = None
  if spec is not None and eps and vx is not None:  # v5 reward: forward velocity + healthy bonus - ctrl cost
    a = [np.clip((e["act"] - robot.act_low) / (robot.act_high - robot.act_low) * 2 - 1, -1, 1) for e in eps]
    ret = float(
      np.mean(
        [
          np.sum(e["obs"][:, vx] * spec.forward_weight + spec.healthy_reward - spec.ctrl_cost_weight * np.sum(u**2, -1))
          for e, u in zip(eps, a)
        ]
      )
    )
  return {
    "length_mean": float(lengths.mean()) if eps else 0.0,
    "forward_speed": speed,
    "obs_std_mean": std,
    "return_v5_approx": ret,
  }


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--robots", default="hopper,walker2d")
  p.add_argument("--episodes", type=int, default=16)
  p.add_argument("--episode_len", type=int, default=1000)
  p.add_argument("--no_mpc", action="store_true", help="skip mpc (~100x the simulation of the others)")
  p.add_argument("--out", default=os.path.join(common.ROOT, "benchmarks", "results", "behaviour_data.json"))
  args = p.parse_args()
  rows = []
  for name in args.robots.split(","):
    robot = catalogue.load(name)
    task = catalogue.robot_specs()[name].task
    behaviours = [e.behaviour for e in catalogue.environments() if e.robot == name and e.behaviour != "policy_replay"]
    if args.no_mpc:
      behaviours = [b for b in behaviours if b != "mpc"]
    spec = rl_env.reward_spec(name)
    for b in behaviours:
      with simulate.Simulator(robot, nthread=os.cpu_count() or 1) as sim:
        t0 = time.perf_counter()
        eps, counts = episodes.generate(
          sim,
          b,
          task,
          episodes.episode_rng(0, f"{name}-{b}", 0),
          args.episodes,
          args.episode_len,
          simulate.EpisodeChecks(min_length=1),
          mpc_lib.MPCConfig(),
        )
        rows.append(
          {
            "robot": name,
            "behaviour": b,
            "episodes": args.episodes,
            "kept": counts.kept,
            "fell": counts.fell,
            **_stats(robot, eps, spec),
            "seconds": time.perf_counter() - t0,
          }
        )
      print(json.dumps(rows[-1]))
  hdr = f"{'robot':18s} {'behaviour':15s} {'kept':>4s} {'fell':>4s} {'length':>7s} {'speed m/s':>9s} {'obs std':>8s} {'return':>8s} {'s':>6s}"
  print(hdr)
  for r in rows:
    ret = "—" if r["return_v5_approx"] is None else f"{r['return_v5_approx']:.0f}"
    print(
      f"{r['robot']:18s} {r['behaviour']:15s} {r['kept']:4d} {r['fell']:4d} {r['length_mean']:7.1f} "
      f"{r['forward_speed']:9.3f} {r['obs_std_mean']:8.3f} {ret:>8s} {r['seconds']:6.1f}"
    )
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"episode_len": args.episode_len, "rows": rows}, f, indent=1)
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  robots = list(dict.fromkeys(r["robot"] for r in rows))
  cols = min(4, len(robots))
  rows_ = -(-len(robots) // cols)
  fig, axes = plt.subplots(rows_, cols, figsize=(5 * cols, 3.5 * rows_), squeeze=False)
  for ax in axes.flat[len(robots) :]:
    ax.axis("off")
  for ax, rb in zip(axes.flat, robots):
    rr = [r for r in rows if r["robot"] == rb]
    ax.bar([r["behaviour"] for r in rr], [r["length_mean"] for r in rr])
    ax.set_title(f"{rb}: mean episode length (of {args.episode_len})")
    ax.tick_params(axis="x", rotation=45)
  fig.tight_layout()
  fig.savefig(os.path.splitext(args.out)[0] + ".png", dpi=90)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
