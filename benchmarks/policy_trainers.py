"""Benchmark: which trainer gives behaviour policies fastest on this machine's CPU.

  python benchmarks/policy_trainers.py [--robot hopper] [--steps 300000] [--brax_envs 128]

Trains Hopper with (a) brax's PPO on its MJX Hopper (`brax.envs.get_environment("hopper",
backend="mjx")`: gymnasium's reward on MJX physics, the whole rollout jitted) and (b) this project's
PPO (data/ppo.py on data/rl_env.py: MuJoCo's C simulator through mujoco.rollout, gymnasium's v5
reward), for the same number of environment steps, and reports environment steps per second, the
wall-clock minutes (compilation included) and the deterministic return reached, evaluated by each
trainer on its own environment. Prints a table and writes benchmarks/results/policy_trainers.json.
Both run in this process one after the other, so the ratio is measured under the same load.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import json
import os
import time


def _device_put_replicated(x, devices):
  """What jax.device_put_replicated did (removed in the jax this project pins; brax 0.14.2's PPO calls
  it): x stacked once per device, as one array sharded over those devices."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  mesh = jax.sharding.Mesh(np.array(devices), ("d",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
  return jax.tree.map(lambda a: jax.device_put(np.stack([np.asarray(a)] * len(devices)), sharding), x)


def brax_ppo(env_name: str, steps: int, num_envs: int, seed: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel

  try:
    jax.device_put_replicated  # noqa: B018
  except AttributeError:
    jax.device_put_replicated = _device_put_replicated
  from brax import envs  # pylint: disable=import-outside-toplevel
  from brax.training.agents.ppo import train as ppo_train  # pylint: disable=import-outside-toplevel

  env = envs.get_environment(env_name, backend="mjx")
  evals = []
  t0 = time.perf_counter()

  def progress(step, metrics):
    evals.append(
      {"step": int(step), "minutes": (time.perf_counter() - t0) / 60, "return": float(metrics["eval/episode_reward"])}
    )

  # brax's published Hopper settings (training notebook), with fewer environments for a CPU.
  ppo_train.train(
    environment=env,
    num_timesteps=steps,
    num_evals=4,
    reward_scaling=10,
    episode_length=1000,
    normalize_observations=True,
    action_repeat=1,
    unroll_length=5,
    num_minibatches=8,
    num_updates_per_batch=4,
    discounting=0.97,
    learning_rate=3e-4,
    entropy_cost=1e-2,
    num_envs=num_envs,
    batch_size=num_envs // 2,
    seed=seed,
    num_eval_envs=10,
    deterministic_eval=True,
    progress_fn=progress,
  )
  minutes = (time.perf_counter() - t0) / 60
  return {
    "trainer": "brax PPO on MJX",
    "steps": steps,
    "minutes": minutes,
    "steps_per_s": steps / (60 * minutes),
    "return": evals[-1]["return"],
    "evals": evals,
  }


def project_ppo(robot: str, steps: int, seed: int) -> dict:
  from westworld_jax.data import ppo, rl_env  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  env = rl_env.VecEnv(robot, 16, seed=seed)
  policy, _ = ppo.train(env, ppo.PPOConfig(total_steps=steps), seed=seed, progress=False)
  minutes = (time.perf_counter() - t0) / 60
  res = ppo.evaluate(policy, rl_env.VecEnv(robot, 10, seed=seed + 10_000), 10, seed=seed)
  env.close()
  return {
    "trainer": "project PPO on MuJoCo C",
    "steps": steps,
    "minutes": minutes,
    "steps_per_s": steps / (60 * minutes),
    "return": res["return_mean"],
  }


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--robot", default="hopper", help="catalogue robot; brax's environment of the same name")
  p.add_argument("--steps", type=int, default=300_000)
  p.add_argument("--brax_envs", type=int, default=128)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=os.path.join(common.ROOT, "benchmarks", "results", "policy_trainers.json"))
  args = p.parse_args()
  rows = [project_ppo(args.robot, args.steps, args.seed), brax_ppo(args.robot, args.steps, args.brax_envs, args.seed)]
  print(f"{'trainer':26s} {'steps':>8s} {'minutes':>8s} {'steps/s':>8s} {'return':>8s}")
  for r in rows:
    print(f"{r['trainer']:26s} {r['steps']:8d} {r['minutes']:8.2f} {r['steps_per_s']:8.0f} {r['return']:8.1f}")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"robot": args.robot, "cpu_count": os.cpu_count(), "rows": rows}, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
