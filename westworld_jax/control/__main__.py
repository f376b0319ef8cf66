"""Control CLI: `python -m westworld_jax.control --config experiments/control.py:hopper [--checkpoint DIR]`.

Runs cfg.episodes batches of cfg.n_envs episodes of cfg.task with each policy in cfg.policies
('oracle' MPPI on MJX, 'world_model' MPPI, 'random') and writes into --workdir:
  summary.json   per-policy returns and replanning latency, task, settings, world-model provenance
  summary.md     the same as a markdown table
  returns.json   every episode's return and length per policy
  latency.csv    policy, episode, step, seconds of every replanning call (step 0 includes compiling)
  video_<policy>.mp4|gif   first episode, env 0 (MuJoCo offscreen rendering; see render.py)
  trajectory_<policy>.png  reward, observations and controls over time (always written)
With cfg.collect.corpus_dir set, the oracle episodes' best cfg.collect.keep_fraction are also written
as corpus environment '<robot>-mppi_oracle' for world-model fine-tuning.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/control.py", "Control config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: the config's workdir).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training workdir of a world model "
                                  "(its load_for_inference); without it the world model is untrained.")
_PIN_CPU = flags.DEFINE_enum("pin_cpu", "auto", ["auto", "yes", "no"],
                             "Pin the process to one core before importing jax: jaxlib on <= 2 cores can "
                             "deadlock on the first call of large vmapped MJX programs. auto: pin on <= 2 cores.")


def _prepare_process() -> None:
  """Before jax/mujoco are imported: CPU pinning, GL backend, persistent compilation cache."""
  if _PIN_CPU.value == "yes" or (_PIN_CPU.value == "auto" and len(os.sched_getaffinity(0)) <= 2):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  if "mujoco" not in sys.modules:
    os.environ.setdefault("MUJOCO_GL", "egl")
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                        os.path.join(os.path.expanduser("~"), ".cache", "westworld_jax_jit"))


def _table(rows: dict) -> str:
  cols = [("return", "return_mean", "{:.1f}"), ("± std", "return_std", "{:.1f}"), ("length", "length_mean", "{:.0f}"),
          ("replan ms (median)", "replan_ms_median", "{:.1f}"), ("replan Hz", "replan_hz", "{:.1f}"),
          ("first replan s (compile)", "first_replan_s", "{:.1f}")]
  lines = ["| policy | episodes | " + " | ".join(c[0] for c in cols) + " |",
           "|---|---|" + "---|" * len(cols)]
  for name, s in rows.items():
    vals = [fmt.format(s[k]) if k in s else "-" for _, k, fmt in cols]
    lines.append(f"| {name} | {s['episodes']} | " + " | ".join(vals) + " |")
  return "\n".join(lines)


def run(cfg, workdir: str, checkpoint: str | None = None) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import data as data_lib  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import env as env_lib  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import loop as loop_lib  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import policies as policies_lib  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import render as render_lib  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import tasks as tasks_lib  # pylint: disable=import-outside-toplevel

  os.makedirs(workdir, exist_ok=True)
  task = tasks_lib.make_task(cfg.task)
  steps = cfg.episode_len or task.episode_len
  unknown = [p for p in cfg.policies if p not in policies_lib.POLICIES]
  if unknown or not cfg.policies:
    raise ValueError(f"config policies {tuple(cfg.policies)}: choose from {policies_lib.POLICIES}")
  summary = {"task": task.describe(), "episode_len": steps, "n_envs": cfg.n_envs, "episodes": cfg.episodes,
             "mppi": dict(cfg.mppi), "device": str(jax.devices()[0]), "policies": {}}
  mesh = None
  if cfg.shard_samples and jax.device_count() > 1:
    from jax.sharding import AxisType  # pylint: disable=import-outside-toplevel
    mesh = jax.make_mesh((jax.device_count(),), ("samples",), axis_types=(AxisType.Auto,))
    summary["mesh"] = f"samples sharded over {jax.device_count()} devices"
  returns, lat_rows, rows = {}, [], {}
  logs_by_policy, envs_by_history = {}, {}
  for name in cfg.policies:
    policy, history, desc = policies_lib.make_policy(name, task, cfg, checkpoint, mesh=mesh if name != "random" else None)
    if history not in envs_by_history:  # one compiled environment per history length
      envs_by_history[history] = env_lib.Envs(task, history=history)
    envs = envs_by_history[history]
    logs, key = [], jax.random.key(cfg.seed)
    for ep in range(cfg.episodes):
      key, sub = jax.random.split(key)  # the same start states for every policy
      t0 = time.perf_counter()
      log = loop_lib.run_episode(envs, policy, cfg.n_envs, steps, sub)
      logging.info("%s %s episode %d: returns %s in %.1fs", task.name, name, ep, log.returns.round(1).tolist(),
                   time.perf_counter() - t0)
      logs.append(log)
      lat_rows += [(name, ep, t, float(s)) for t, s in enumerate(log.latency_s)]
    logs_by_policy[name] = logs
    s = loop_lib.summarize(logs)
    s.update(desc)
    if name != "random":
      s["trace_count"] = policy.trace_count
    summary["policies"][name] = rows[name] = s
    returns[name] = {"returns": [float(r) for l in logs for r in l.returns],
                     "lengths": [int(n) for l in logs for n in l.lengths]}
    log0 = logs[0]
    summary["policies"][name]["trajectory_plot"] = render_lib.plot_trajectory(
        log0, task, os.path.join(workdir, f"trajectory_{name}.png"))
    if cfg.render.enabled:
      try:
        n = int(log0.lengths[0]) + 1
        s["video"] = render_lib.render_video(task, log0.qpos[:n, 0], os.path.join(workdir, f"video_{name}"),
                                             cfg.render.width, cfg.render.height)
      except render_lib.RenderError as e:
        logging.warning("%s", e)
        s["video"] = None
        summary["render_error"] = str(e)

  if cfg.collect.corpus_dir:
    if "oracle" not in logs_by_policy:
      raise ValueError("collect.corpus_dir is set but 'oracle' is not among the policies: control data comes "
                       "from oracle MPPI episodes")
    eps = [e for l in logs_by_policy["oracle"] for e in l.episodes()]
    best = data_lib.select_best(eps, cfg.collect.keep_fraction)
    meta = data_lib.write_corpus(task, best, cfg.collect.corpus_dir, val_fraction=cfg.collect.val_fraction,
                                 overwrite=cfg.collect.overwrite)
    summary["collected"] = {"corpus_dir": cfg.collect.corpus_dir, "env": meta["env"], "episodes_run": len(eps),
                            "episodes_kept": len(best)}

  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, "returns.json"), "w") as f:
    json.dump(returns, f, indent=2)
  with open(os.path.join(workdir, "latency.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["policy", "episode", "step", "seconds"])
    w.writerows(lat_rows)
  md = [f"# Control: {task.name} ({task.robot.name}), {cfg.episodes} x {cfg.n_envs} episodes of {steps} steps",
        "", f"MPPI: {cfg.mppi.samples} samples x horizon {cfg.mppi.horizon}, {cfg.mppi.iterations} iteration(s); "
        f"device {summary['device']}", "", _table(rows), ""]
  for name, s in rows.items():
    if s.get("note"):
      md.append(f"- {name}: {s['note']}")
  if summary.get("render_error"):
    md.append(f"- no video: {summary['render_error']}")
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  print("\n".join(md))
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  _prepare_process()
  cfg = _CONFIG.value
  workdir = _WORKDIR.value or cfg.workdir or os.path.join("runs", "control", cfg.task)
  run(cfg, workdir, _CHECKPOINT.value)


if __name__ == "__main__":
  app.run(main)
