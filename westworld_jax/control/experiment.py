"""One control experiment: episodes of a task with each policy, summaries, renderings, control data.

`run(cfg, workdir, checkpoint)` is what `python -m westworld_jax.control` runs (see __main__.py for
the files it writes); `prepare_process` must run before jax / mujoco are imported.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

from absl import logging


_GL_PROBE = """
import mujoco
r = mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>"), 8, 8)
r.render()
r.close()
"""
GL_BACKENDS = ("egl", "osmesa")  # headless offscreen backends, in the order tried
_gl_error: str | None = None  # why no video can be rendered (set by prepare_process), else None


def probe_gl(backend: str, timeout: float = 60.0) -> str | None:
  """None if MuJoCo's offscreen renderer works with MUJOCO_GL=backend (tried in a subprocess: a missing
  library makes `import mujoco` itself fail), else the reason."""
  env = dict(os.environ, MUJOCO_GL=backend)
  env.pop("PYOPENGL_PLATFORM", None)
  try:
    p = subprocess.run([sys.executable, "-c", _GL_PROBE], env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return f"MUJOCO_GL={backend}: the renderer probe hung for {timeout:.0f}s"
  if p.returncode == 0:
    return None
  err = [l for l in p.stderr.strip().splitlines() if l.strip() and "warp" not in l]
  return f"MUJOCO_GL={backend}: {err[-1] if err else f'exit code {p.returncode}'}"


def select_gl() -> str | None:
  """Sets MUJOCO_GL to a working offscreen backend before mujoco is imported; returns None, or why
  there is none (MUJOCO_GL is then set to 'disabled', so that importing mujoco cannot fail)."""
  asked = os.environ.get("MUJOCO_GL", "").strip().lower()
  candidates = [asked] if asked else list(GL_BACKENDS)
  errors = []
  for backend in candidates:
    err = probe_gl(backend)
    if err is None:
      os.environ["MUJOCO_GL"] = backend
      return None
    errors.append(err)
  os.environ["MUJOCO_GL"] = "disabled"
  os.environ.pop("PYOPENGL_PLATFORM", None)
  return (
    "MuJoCo's offscreen renderer does not work here (" + "; ".join(errors) + "). Install "
    "Mesa's EGL (libegl1, libgl1; works without a GPU) or OSMesa (libosmesa6) and set MUJOCO_GL=egl or "
    "osmesa; the trajectory plots are written regardless."
  )


def gl_error() -> str | None:
  """Why no video can be rendered in this process (after prepare_process), else None."""
  return _gl_error


def prepare_process(pin_cpu: str = "auto", render: bool = True, physics: str = "auto") -> None:
  """Before jax/mujoco are imported: CPU pinning, GL backend, persistent compilation cache.

  pin_cpu 'yes', or 'auto' on <= 2 cores with physics 'mjx': pin the process to one core (jaxlib on
  <= 2 cores can deadlock on the first call of large vmapped MJX programs; with physics 'auto' a
  CPU steps C MuJoCo, whose rollout threads should use every core); 'no': leave the affinity alone.
  render: pick a working MUJOCO_GL (the one set, else egl, else osmesa; see select_gl).
  """
  global _gl_error
  if pin_cpu == "yes" or (pin_cpu == "auto" and physics == "mjx" and len(os.sched_getaffinity(0)) <= 2):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  if render and "mujoco" not in sys.modules:
    _gl_error = select_gl()
    if _gl_error:
      logging.warning("%s", _gl_error)
  os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "westworld_jax_jit")
  )


def _table(rows: dict) -> str:
  cols = [
    ("MPPI", "mppi", "{}"),
    ("return", "return_mean", "{:.1f}"),
    ("± std", "return_std", "{:.1f}"),
    ("length", "length_mean", "{:.0f}"),
    ("replan ms (median)", "replan_ms_median", "{:.1f}"),
    ("replan Hz", "replan_hz", "{:.1f}"),
    ("first replan s (compile)", "first_replan_s", "{:.1f}"),
  ]
  lines = ["| policy | episodes | " + " | ".join(c[0] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
  for name, s in rows.items():
    vals = [fmt.format(s[k]) if k in s else "-" for _, k, fmt in cols]
    lines.append(f"| {name} | {s['episodes']} | " + " | ".join(vals) + " |")
  return "\n".join(lines)


def run(cfg, workdir: str, checkpoint: str | None = None) -> dict:
  # jax and mujoco load here, not at module top: the CLI pins the CPU and picks MUJOCO_GL first.
  import jax  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import mppi_corpus  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import physics as physics_lib  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import rollout as rollout_lib  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import planners as planners_lib  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import render as render_lib  # pylint: disable=import-outside-toplevel

  os.makedirs(workdir, exist_ok=True)
  task = planners_lib.protocol_task(cfg)
  steps = cfg.episode_len or task.episode_len
  unknown = [p for p in cfg.policies if p not in planners_lib.POLICIES]
  if unknown or not cfg.policies:
    raise ValueError(f"config policies {tuple(cfg.policies)}: choose from {planners_lib.POLICIES}")
  stray = set(cfg.get("policy_mppi", {})) - {"oracle", "world_model"}
  if stray:
    raise ValueError(f"config policy_mppi names {sorted(stray)}: MPPI policies are 'oracle' and 'world_model'")
  if checkpoint and "world_model" in cfg.policies:  # a bad --checkpoint fails now, not after the oracle's episodes
    planners_lib.check_checkpoint(planners_lib.policy_task("world_model", task, cfg), cfg, checkpoint)
  summary = {
    "task": task.describe(),
    "episode_len": steps,
    "n_envs": cfg.n_envs,
    "episodes": cfg.episodes,
    "mppi": dict(cfg.mppi),
    "policy_mppi": cfg.get("policy_mppi", {}).to_dict() if cfg.get("policy_mppi") else {},
    "physics": physics_lib.resolve(cfg.physics),
    "device": str(jax.devices()[0]),
    "policies": {},
  }
  mesh = None
  if cfg.shard_samples and jax.device_count() > 1:
    from jax.sharding import AxisType  # pylint: disable=import-outside-toplevel

    mesh = jax.make_mesh((jax.device_count(),), ("samples",), axis_types=(AxisType.Auto,))
    summary["mesh"] = f"samples sharded over {jax.device_count()} devices"
  returns, lat_rows, rows = {}, [], {}
  logs_by_policy, envs_by = {}, {}
  for name in cfg.policies:
    ptask = planners_lib.policy_task(name, task, cfg)
    policy, history, desc = planners_lib.make_policy(
      name, ptask, cfg, checkpoint, mesh=mesh if name not in ("random", "expert_policy") else None
    )
    desc["terminates"] = ptask.terminates
    if (history, ptask.terminates) not in envs_by:  # one compiled environment per history and termination
      envs_by[history, ptask.terminates] = physics_lib.make_envs(ptask, history=history, physics=cfg.physics)
    envs = envs_by[history, ptask.terminates]
    logs, key = [], jax.random.key(cfg.seed)
    for ep in range(cfg.episodes):
      key, sub = jax.random.split(key)  # the same start states for every policy
      t0 = time.perf_counter()
      log = rollout_lib.run_episode(
        envs, policy, cfg.n_envs, steps, sub, progress=f"{task.name} {name} episode {ep + 1}/{cfg.episodes}"
      )
      logging.info(
        "%s %s episode %d: returns %s in %.1fs",
        task.name,
        name,
        ep,
        log.returns.round(1).tolist(),
        time.perf_counter() - t0,
      )
      logs.append(log)
      lat_rows += [(name, ep, t, float(s)) for t, s in enumerate(log.latency_s)]
    logs_by_policy[name] = logs
    s = rollout_lib.summarize(logs)
    s.update(desc)
    if hasattr(policy, "trace_count"):
      s["trace_count"] = policy.trace_count
    summary["policies"][name] = rows[name] = s
    returns[name] = {
      "returns": [float(r) for l in logs for r in l.returns],
      "lengths": [int(n) for l in logs for n in l.lengths],
    }
    log0 = logs[0]
    summary["policies"][name]["trajectory_plot"] = render_lib.plot_trajectory(
      log0, ptask, os.path.join(workdir, f"trajectory_{name}.png")
    )
    if cfg.render.enabled and _gl_error:
      s["video"] = None
      summary["render_error"] = _gl_error
    elif cfg.render.enabled:
      try:
        n = int(log0.lengths[0]) + 1
        s["video"] = render_lib.render_video(
          ptask, log0.qpos[:n, 0], os.path.join(workdir, f"video_{name}"), cfg.render.width, cfg.render.height
        )
      except render_lib.RenderError as e:
        logging.warning("%s", e)
        s["video"] = None
        summary["render_error"] = str(e)

  if cfg.collect.corpus_dir:
    if "oracle" not in logs_by_policy:
      raise ValueError(
        "collect.corpus_dir is set but 'oracle' is not among the policies: control data comes from oracle MPPI episodes"
      )
    eps = [e for l in logs_by_policy["oracle"] for e in l.episodes()]
    best = mppi_corpus.select_best(eps, cfg.collect.keep_fraction)
    meta = mppi_corpus.write_corpus(
      task, best, cfg.collect.corpus_dir, val_fraction=cfg.collect.val_fraction, overwrite=cfg.collect.overwrite
    )
    summary["collected"] = {
      "corpus_dir": cfg.collect.corpus_dir,
      "env": meta["env"],
      "episodes_run": len(eps),
      "episodes_kept": len(best),
    }

  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, "returns.json"), "w") as f:
    json.dump(returns, f, indent=2)
  with open(os.path.join(workdir, "latency.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["policy", "episode", "step", "seconds"])
    w.writerows(lat_rows)
  md = [
    f"# Control: {task.name} ({task.robot.name}), {cfg.episodes} x {cfg.n_envs} episodes of {steps} steps",
    "",
    f"MPPI: samples x horizon per policy in the table, {cfg.mppi.iterations} iteration(s); "
    f"physics {summary['physics']}; device {summary['device']}",
    "",
    "Planner cost: "
    + (
      "the task's cost plus tracking of the reference " + task.reference.source if task.reference else "the task's cost"
    )
    + "; returns: "
    + ("gym's reward" if task.gym_return else "-(the task's cost)"),
    "",
    _table(rows),
    "",
  ]
  for name, s in rows.items():
    if s.get("note"):
      md.append(f"- {name}: {s['note']}")
  if summary.get("render_error"):
    md.append(f"- no video: {summary['render_error']}")
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  print("\n".join(md))
  return summary
