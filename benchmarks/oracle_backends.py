"""Benchmark: one MPPI replan with the C MuJoCo oracle vs the MJX oracle (same task, state and plan).

  python benchmarks/oracle_backends.py                       # Hopper, 256 x 100 (the paper's) and 64 x 30
  python benchmarks/oracle_backends.py --sizes 256x100 --calls 5

Each oracle runs in its own subprocess: MJX pinned to one core on <= 2-core machines (jaxlib can
deadlock there on the first call of large vmapped MJX programs), C MuJoCo with its
rollout threads on every core, and again with one thread. Both replan one environment from the
same start state (Task.episode_start of one key) with the same PlanState, so they cost the same samples:
the table shows how far their first actions differ. For the C oracle, the time spent inside its
jax.pure_callback (the host rollouts) is measured too; the rest of its replan is compared with the
same replan on a backend that costs constant observations (noise, task costs, weights: the JAX
work with no callback), which bounds what a replan split around the rollouts could save.
Latency is the median of `--calls` replans after compilation.
Writes benchmarks/results/oracle_backends_<jax backend>.json.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import json
import os
import platform
import sys
import time

PHYSICS = ("mjx", "mujoco")


def _args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--task", default="hopper")
  p.add_argument("--sizes", default="256x100,64x30", help="samples x horizon, comma-separated")
  p.add_argument("--calls", type=int, default=5, help="timed replans per row")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--section", default="", help=argparse.SUPPRESS)  # internal: one physics here
  p.add_argument("--out", default=None)
  return p.parse_args(argv)


def _sizes(a) -> list[tuple[int, int]]:
  return [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",") if s]


def _time(fn, args, calls: int) -> tuple[float, list]:
  import jax  # pylint: disable=import-outside-toplevel

  times, out = [], None
  for _ in range(calls):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return sorted(times)[len(times) // 2] * 1e3, out


def section(a, physics: str) -> list[dict]:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import backends, mppi, mujoco_backend, tasks  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import physics as physics_lib  # pylint: disable=import-outside-toplevel

  class ConstantObservations(backends.OracleBackend):
    """The replan's JAX work without physics: the task's costs of the start observation."""

    def context(self, env_state):
      return env_state.obs_hist[-1], env_state.goal

    def step_costs(self, ctx, u_kha):
      obs = jnp.broadcast_to(ctx[0], u_kha.shape[:2] + ctx[0].shape)
      return backends.observation_costs(self.task, obs, u_kha, ctx[1])

  task = tasks.make_task(a.task)
  envs = physics_lib.make_envs(task, physics=physics)
  state = envs.reset(jax.random.key(a.seed), 1)
  if physics == "mjx":
    oracles = [("mjx", backends.OracleBackend(task))]
  else:
    threads = sorted({mujoco_backend.default_threads(), 1}, reverse=True)
    oracles = [(f"mujoco {n} thread(s)", mujoco_backend.MujocoOracle(task, nthread=n)) for n in threads]
    oracles.append(("jax only (no physics)", ConstantObservations(task)))
  rows = []
  for k, hp in _sizes(a):
    cfg = mppi.MPPIConfig(samples=k, horizon=hp)
    for label, oracle in oracles:
      spent = []
      if isinstance(oracle, mujoco_backend.MujocoOracle):  # time the host rollouts inside the callback
        host = oracle.__class__._host_rollouts

        def timed(*args, host=host, oracle=oracle, spent=spent):
          t0 = time.perf_counter()
          out = host(oracle, *args)
          spent.append(time.perf_counter() - t0)
          return out

        oracle._host_rollouts = timed  # bound before tracing: the callback calls it
      planner = mppi.MPPI(oracle, cfg)
      plan = planner.init(jax.random.key(1), state)
      t0 = time.perf_counter()
      replan = planner.replan.lower(plan, state).compile()
      compile_s = time.perf_counter() - t0
      spent.clear()
      ms, (u, _, info) = _time(replan, (plan, state), a.calls)
      row = {
        "physics": label,
        "task": a.task,
        "samples": k,
        "horizon": hp,
        "replan_ms": round(ms, 1),
        "compile_s": round(compile_s, 2),
        "calls": a.calls,
        "first_action": [round(float(v), 5) for v in np.asarray(u)[0]],
      }
      if not isinstance(oracle, ConstantObservations):
        row.update(
          physics_steps_per_s=round(k * hp * task.frame_skip / (ms / 1e3)), cost_min=float(info["cost_min"][0])
        )
      if spent:
        row.update(host_rollout_ms=round(sorted(spent)[len(spent) // 2] * 1e3, 1), threads=oracle.sim.nthread)
      rows.append(row)
      print(f"row {row}", file=sys.stderr, flush=True)
  return rows


def _run_section(name: str, argv: list[str]) -> list[dict]:
  return common.run_section(__file__, name, argv, pin=name == "mjx" and len(os.sched_getaffinity(0)) <= 2)


def main() -> None:
  a = _args()
  if a.section:
    print("RESULT " + json.dumps(section(a, a.section)), flush=True)
    return
  import jax  # pylint: disable=import-outside-toplevel

  backend = jax.default_backend()
  rows, load = [], [os.getloadavg()[0]]
  for name in PHYSICS:
    rows += _run_section(name, sys.argv[1:])
    load.append(os.getloadavg()[0])
  ratios = {}
  for k, hp in _sizes(a):
    size = [r for r in rows if (r["samples"], r["horizon"]) == (k, hp)]
    mjx = next(r for r in size if r["physics"] == "mjx")
    c = min((r for r in size if r["physics"].startswith("mujoco")), key=lambda r: r["replan_ms"])
    jax_only = next(r for r in size if r["physics"].startswith("jax only"))
    du = max(abs(x - y) for x, y in zip(mjx["first_action"], c["first_action"]))
    ratios[f"{k}x{hp}"] = {
      "mjx_ms": mjx["replan_ms"],
      "mujoco_ms": c["replan_ms"],
      "mujoco_threads": c["threads"],
      "ratio": round(mjx["replan_ms"] / c["replan_ms"], 1),
      "first_action_max_diff": du,
      # the replan outside the host rollouts vs the same JAX work without a callback: what a replan
      # split around the rollouts (no pure_callback) could save at most
      "outside_rollout_ms": round(c["replan_ms"] - c["host_rollout_ms"], 1),
      "jax_only_ms": jax_only["replan_ms"],
    }
  result = {
    "backend": backend,
    "device": str(jax.devices()[0].device_kind),
    "cpu_cores": len(os.sched_getaffinity(0)),
    "jax_version": jax.__version__,
    "python": platform.python_version(),
    "load_average_1min": [round(v, 2) for v in load],  # before, after mjx, after mujoco (shared machines)
    "task": a.task,
    "rows": rows,
    "ratios": ratios,
    "notes": [
      "mjx pinned to one core on <= 2 cores (jaxlib deadlock); mujoco: mujoco.rollout threads, sensor stage off",
      "both from the same start state and PlanState: the same samples, so the first actions agree",
    ],
  }
  print(
    f"\nOne MPPI replan, {a.task}, 1 environment ({result['device']}, {result['cpu_cores']} cores): ms, median of {a.calls}"
  )
  print(f"{'physics':<24} {'K x Hp':>8} {'replan ms':>10} {'host rollout ms':>16} {'compile s':>9}")
  for r in rows:
    host = f"{r['host_rollout_ms']:.1f}" if "host_rollout_ms" in r else "-"
    print(
      f"{r['physics']:<24} {str(r['samples']) + 'x' + str(r['horizon']):>8} {r['replan_ms']:>10.1f} {host:>16} "
      f"{r['compile_s']:>9.1f}"
    )
  for size, v in ratios.items():
    print(
      f"{size}: MJX {v['mjx_ms']:.1f} ms / C MuJoCo {v['mujoco_ms']:.1f} ms ({v['mujoco_threads']} threads) = "
      f"{v['ratio']:.1f}x; first actions differ by {v['first_action_max_diff']:.2g}; C replan outside the "
      f"rollouts {v['outside_rollout_ms']:.1f} ms (the same JAX work without a callback: {v['jax_only_ms']:.1f} ms)"
    )
  common.write_result(result, f"oracle_backends_{backend}", a.out)


if __name__ == "__main__":
  main()
