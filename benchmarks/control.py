"""Benchmark: MPPI replanning latency (MJX oracle vs world model) and episode returns on Hopper/Walker2d.

  python benchmarks/control.py                      # CPU sizes (below); writes results/control_<backend>.json
  python benchmarks/control.py --full               # the paper's sizes everywhere (for an accelerator)
  python benchmarks/control.py --checkpoint DIR     # world-model returns with a trained model

Sections, each in its own subprocess (MJX sections pinned to one core on <= 2-core machines: jaxlib
can deadlock there on the first call of large vmapped MJX programs; the world-model latency section
uses every core):
  latency_oracle  one replan of `--samples` x `--horizon` (default 256 x 100, the paper's) on Hopper
                  with the MJX oracle, for 1 environment and for `--envs` environments batched (vmap)
                  in one call (the C MuJoCo oracle against it: benchmarks/oracle_backends.py);
  latency_wm      the same with registry.build('westworld', 'control') (untrained: latency does not
                  depend on the weights); on a CPU the batched row uses `--wm_batched_samples` samples
                  per environment (a 256-sample replan takes minutes there); one row set per compute
                  dtype (`--wm_dtypes`), each with the replan's model TFLOP (model/flops.py) and TFLOP/s;
  returns         closed-loop episodes: oracle MPPI, world-model MPPI (untrained unless --checkpoint)
                  and uniform random actions, from the same start states, on the control config's
                  physics (auto: C MuJoCo on a CPU, MJX on an accelerator; control/physics.py).
Latency is the median wall time of jitted replans after compilation (compile time reported apart).
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import json
import os
import platform
import sys
import time

SECTIONS = ("latency_oracle", "latency_wm", "returns")


def _args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sections", default=",".join(SECTIONS))
  p.add_argument("--section", default="", help=argparse.SUPPRESS)  # internal: run one section here
  p.add_argument("--full", action="store_true", help="paper sizes for every section (accelerators)")
  p.add_argument("--samples", type=int, default=256)
  p.add_argument("--horizon", type=int, default=100)
  p.add_argument("--envs", type=int, default=4, help="environments in the batched latency rows")
  p.add_argument("--calls", type=int, default=3, help="timed replans per oracle latency row")
  p.add_argument("--wm_calls", type=int, default=0, help="timed replans per world-model row (0: 1 on CPU, else 3)")
  p.add_argument("--wm_batched_samples", type=int, default=0, help="0: 32 on CPU, else --samples")
  p.add_argument(
    "--wm_sample_chunk",
    type=int,
    default=-1,
    help="world-model samples per predict call (-1: 64 on CPU to bound memory, else 0 = all)",
  )
  p.add_argument(
    "--wm_dtypes",
    default="",
    help="compute dtypes of the world-model latency rows, comma-separated (default: float32 on CPU, "
    "float32,bfloat16 elsewhere; bf16 matmuls, f32 params, scan and softmax)",
  )
  p.add_argument("--tasks", default="hopper,walker2d")
  p.add_argument("--wm_tasks", default="hopper", help="tasks whose returns include world-model MPPI")
  p.add_argument("--episodes", type=int, default=2)
  p.add_argument("--episode_len", type=int, default=0, help="0: 100 on CPU, else the task's (1000)")
  p.add_argument("--return_samples", type=int, default=0, help="oracle MPPI in episodes (0: 64 on CPU)")
  p.add_argument("--return_horizon", type=int, default=0, help="0: 30 on CPU")
  p.add_argument("--wm_return_samples", type=int, default=0, help="0: 16 on CPU")
  p.add_argument("--wm_episode_len", type=int, default=0, help="0: 25 on CPU")
  p.add_argument("--checkpoint", default="")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None)
  return p.parse_args(argv)


def _small_machine() -> bool:
  return len(os.sched_getaffinity(0)) <= 2


def _sizes(a, backend: str) -> dict:
  """Resolved sizes: the paper's on accelerators (or --full), small ones on a CPU."""
  cpu = backend == "cpu" and not a.full
  pick = lambda v, small, full: v or (small if cpu else full)
  return {
    "wm_calls": pick(a.wm_calls, 1, 3),
    "wm_batched_samples": pick(a.wm_batched_samples, 32, a.samples),
    "episode_len": pick(a.episode_len, 100, 0),
    "return_samples": pick(a.return_samples, 64, a.samples),
    "return_horizon": pick(a.return_horizon, 30, a.horizon),
    "wm_return_samples": pick(a.wm_return_samples, 16, a.samples),
    "wm_episode_len": pick(a.wm_episode_len, 25, 0),
    "wm_sample_chunk": a.wm_sample_chunk if a.wm_sample_chunk >= 0 else (64 if cpu else 0),
    "wm_dtypes": a.wm_dtypes.split(",") if a.wm_dtypes else (["float32"] if cpu else ["float32", "bfloat16"]),
  }


# --- sections (run in a child process) ------------------------------------------------------------


def _time_replan(planner, state, calls: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel

  plan = planner.init(jax.random.key(1), state)
  t0 = time.perf_counter()
  compiled = planner.replan.lower(plan, state).compile()
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(calls):
    t0 = time.perf_counter()
    u, plan, _ = compiled(plan, state)
    jax.block_until_ready(u)
    times.append(time.perf_counter() - t0)
  med = sorted(times)[len(times) // 2]
  return {
    "compile_s": round(compile_s, 2),
    "replan_ms": round(med * 1e3, 1),
    "replan_hz": round(1.0 / med, 3),
    "calls": calls,
  }


def section_latency(a, which: str) -> list[dict]:
  import jax  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import backends, env, mppi, tasks  # pylint: disable=import-outside-toplevel
  from westworld_jax.data import normalise  # pylint: disable=import-outside-toplevel
  from westworld_jax.model import flops, registry, ssm  # pylint: disable=import-outside-toplevel
  from westworld_jax.model.batch import zeros_batch  # pylint: disable=import-outside-toplevel

  sizes = _sizes(a, jax.default_backend())
  task = tasks.make_task("hopper")
  rows = []
  # (backend, history, timed calls, [(envs, samples)], row info, model config for the FLOP count)
  if which == "oracle":
    setups = [(backends.OracleBackend(task), 1, a.calls, [(1, a.samples), (a.envs, a.samples)], {}, None)]
  else:
    setups = []
    norm = normalise.Normaliser.from_stats(
      normalise.stats_from_rollouts(task.robot, 8, 100), task.num_obs, task.num_act
    )
    for dtype in sizes["wm_dtypes"]:
      wm = registry.build("westworld", "control", dtype=dtype)
      params = jax.jit(wm.init)(jax.random.key(0), zeros_batch(1, wm.history + a.horizon, task.num_obs, task.num_act))
      backend = backends.WorldModelBackend(wm, params, [task], [norm], a.horizon, sample_chunk=sizes["wm_sample_chunk"])
      info = {
        "model": "westworld/control (untrained)",
        "dtype": dtype,
        "scan": ssm.resolve_impl(wm.config.ssm_scan_impl),
        "history": wm.history,
        "sample_chunk": sizes["wm_sample_chunk"],
      }
      setups.append(
        (
          backend,
          wm.history,
          sizes["wm_calls"],
          [(1, a.samples), (a.envs, sizes["wm_batched_samples"])],
          info,
          wm.config,
        )
      )
  for backend, history, calls, variants, info, model_cfg in setups:
    envs = env.Envs(task, history=history)
    for n_envs, samples in variants:
      cfg = mppi.MPPIConfig(samples=samples, horizon=a.horizon)
      planner = mppi.MPPI(backend, cfg)
      state = envs.reset(jax.random.key(a.seed), n_envs)
      r = _time_replan(planner, state, calls)
      rollouts = n_envs * samples * a.horizon
      r.update(
        backend=which if which == "oracle" else "world_model",
        task="hopper",
        envs=n_envs,
        samples=samples,
        horizon=a.horizon,
        rollout_steps_per_s=round(rollouts / (r["replan_ms"] / 1e3)),
        **info,
      )
      if model_cfg is None:
        r["physics_steps_per_s"] = round(rollouts * task.frame_skip / (r["replan_ms"] / 1e3))
      else:  # model FLOPs of the replan's forward pass(es): what a < 30 ms replan asks of the device
        tflop = flops.forward_flops(model_cfg, n_envs * samples, history + a.horizon, task.num_obs, task.num_act) / 1e12
        r.update(model_tflop_per_replan=round(tflop, 3), model_tflops=round(tflop / (r["replan_ms"] / 1e3), 2))
      print(f"latency {r}", file=sys.stderr, flush=True)
      rows.append(r)
  return rows


def section_returns(a) -> list[dict]:
  import jax  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import physics, planners, rollout, tasks  # pylint: disable=import-outside-toplevel
  from experiments import control as control_cfg  # pylint: disable=import-outside-toplevel

  sizes = _sizes(a, jax.default_backend())
  rows = []
  for name in a.tasks.split(","):
    task = tasks.make_task(name)
    pols = ["oracle", "random"] + (["world_model"] if name in a.wm_tasks.split(",") else [])
    for pol in pols:
      cfg = control_cfg.get_config(name)
      cfg.seed = a.seed
      steps = sizes["episode_len"] or task.episode_len
      if pol == "oracle":
        cfg.mppi.samples, cfg.mppi.horizon = sizes["return_samples"], sizes["return_horizon"]
      elif pol == "world_model":
        cfg.mppi.samples, cfg.mppi.horizon = sizes["wm_return_samples"], sizes["return_horizon"]
        cfg.wm_sample_chunk = sizes["wm_sample_chunk"]
        steps = sizes["wm_episode_len"] or steps
      policy, history, desc = planners.make_policy(pol, task, cfg, a.checkpoint or None)
      envs = physics.make_envs(task, history=history, physics=cfg.physics)
      logs, key = [], jax.random.key(a.seed)
      t0 = time.perf_counter()
      episodes = a.episodes if pol != "world_model" else 1
      for _ in range(episodes):
        key, sub = jax.random.split(key)
        logs.append(rollout.run_episode(envs, policy, 1, steps, sub))
      s = rollout.summarize(logs)
      row = {
        "task": name,
        "policy": pol,
        "episodes": s["episodes"],
        "episode_len": steps,
        "return_mean": round(s["return_mean"], 2),
        "return_std": round(s["return_std"], 2),
        "length_mean": s["length_mean"],
        "returns": [round(float(r), 2) for l in logs for r in l.returns],
        "physics": envs.physics,
        "seconds": round(time.perf_counter() - t0, 1),
      }
      if pol != "random":
        row.update(
          samples=cfg.mppi.samples,
          horizon=cfg.mppi.horizon,
          replan_ms=round(s.get("replan_ms_median", float("nan")), 1),
        )
      if pol == "world_model":
        row["trained"] = bool(desc.get("trained"))
        row["note"] = desc.get("note", "")
      print(f"returns {row}", file=sys.stderr, flush=True)
      rows.append(row)
  return rows


def _child(a) -> None:
  if a.section == "latency_oracle":
    out = section_latency(a, "oracle")
  elif a.section == "latency_wm":
    out = section_latency(a, "world_model")
  elif a.section == "returns":
    out = section_returns(a)
  else:
    raise SystemExit(f"unknown section '{a.section}': choose from {SECTIONS}")
  print("RESULT " + json.dumps(out), flush=True)


def _run_section(name: str, argv: list[str]) -> list[dict]:
  return common.run_section(__file__, name, argv, pin=name != "latency_wm" and _small_machine())


def main() -> None:
  a = _args()
  if a.section:
    _child(a)
    return
  argv = [x for x in sys.argv[1:]]
  sections = [s for s in a.sections.split(",") if s]
  bad = [s for s in sections if s not in SECTIONS]
  if bad:
    raise SystemExit(f"unknown sections {bad}: choose from {SECTIONS}")
  import jax  # pylint: disable=import-outside-toplevel

  backend = jax.default_backend()
  result = {
    "backend": backend,
    "device": str(jax.devices()[0].device_kind),
    "jax_version": jax.__version__,
    "python": platform.python_version(),
    "cpu_cores": len(os.sched_getaffinity(0)),
    "sizes": {"samples": a.samples, "horizon": a.horizon, "envs": a.envs, **_sizes(a, backend)},
    "latency": [],
    "returns": [],
  }
  for s in sections:
    rows = _run_section(s, argv)
    result["latency" if s.startswith("latency") else "returns"] += rows
  notes = [
    "latency_oracle: MJX; returns: the physics of each row; both with brax's speed settings for "
    "Hopper/Walker2d (Euler, 4 solver iterations)"
  ]
  if any(r["policy"] == "world_model" and not r.get("trained") for r in result["returns"]):
    notes.append("world-model returns use an UNTRAINED model (no --checkpoint): they measure the loop, not control")
  result["notes"] = notes
  print(f"\nMPPI replanning latency ({result['device']}, {result['cpu_cores']} cores)")
  print(
    f"{'backend':<12} {'dtype':<9} {'scan':<8} {'envs':>4} {'samples':>7} {'horizon':>7} {'replan ms':>10} {'Hz':>8} "
    f"{'TFLOP/s':>8} {'compile s':>9}"
  )
  for r in result["latency"]:
    tf = f"{r['model_tflops']:.2f}" if "model_tflops" in r else "-"
    print(
      f"{r['backend']:<12} {r.get('dtype', '-'):<9} {r.get('scan') or '-':<8} {r['envs']:>4} {r['samples']:>7} "
      f"{r['horizon']:>7} {r['replan_ms']:>10.1f} {r['replan_hz']:>8.3f} {tf:>8} {r['compile_s']:>9.1f}"
    )
  if result["returns"]:
    print("\nEpisode returns (same start states per task)")
    print(
      f"{'task':<9} {'policy':<12} {'episodes':>8} {'steps':>5} {'samples x H':>11} {'return':>9} {'± std':>7} {'length':>6}"
    )
    for r in result["returns"]:
      sh = f"{r['samples']}x{r['horizon']}" if "samples" in r else "-"
      print(
        f"{r['task']:<9} {r['policy']:<12} {r['episodes']:>8} {r['episode_len']:>5} {sh:>11} {r['return_mean']:>9.1f} "
        f"{r['return_std']:>7.1f} {r['length_mean']:>6.0f}"
      )
  for n in notes:
    print("note:", n)
  common.write_result(result, f"control_{backend}", a.out)


if __name__ == "__main__":
  main()
