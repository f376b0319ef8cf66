"""Benchmark: one world-model replan's prediction on this machine, beside its FLOP floor.

Times `WorldModelBackend.step_costs` under jax.jit (what MPPI's replan calls: the batch, one
`predict` over K samples x (history + Hp) steps, the task costs) for every registry model on the
hopper task's channels (11 obs / 3 act, from the catalogue robot). Models: experiments/scaling.py's
`cpu_model` (tiny, history 16, window 40, so Hp <= 24) at 256 x 24 and 64 x 24 (min of --repeats
calls after a warm-up), and WestWorld's 'control' size (history 50, window 150) at the paper's
K x Hp = 256 x 100 (one call: minutes), with the default scan ('auto': chunked on a CPU) and the
sequential one, in chunks of 64 samples as benchmarks/control.py runs it on a CPU. Parameters are
untrained (latency does not depend on them); the normaliser is fixed synthetic stats.

Beside each WestWorld time: the analytic forward FLOPs (model/flops.py) and the floor = FLOPs /
the float32 matmul rate measured right after it in the same process on [rows, d] x [d, d], rows =
min(K * T * Co, 2^16), d the model width (min of 10 calls). The baselines have no analytic count
here: their times stand alone. `--profile` adds where WestWorld's time goes (benchmarks/wm_profile.py).

  python benchmarks/wm_replan.py --profile       # every row; writes results/wm_replan_cpu.json
  python benchmarks/wm_replan.py --quick         # CPU sizes only (no 256 x 100 control rows)
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import scaling
from westworld_jax.control import backends, tasks
from westworld_jax.data import normalise
from westworld_jax.model import flops, registry, ssm
from westworld_jax.model.batch import zeros_batch
from westworld_jax.training import run_files

MODELS = ("westworld", "trajworld", "tdm", "mlp_ensemble")
CPU_SIZES = ((256, 24), (64, 24))  # (K, Hp) that the cpu_model window (40 = 16 + 24) allows
CONTROL_SIZES = ((256, 100),)


def build(name: str, size: str, **overrides):
  """(WorldModel, label): the cpu_model config of `name`, or the registry size `size`."""
  tag = "".join(f",{k}={v}" for k, v in overrides.items())
  if size == "cpu":
    cfg = scaling.cpu_model(name)
    cfg.update(overrides)
    return run_files.build_model(cfg), f"{name}/cpu_model{tag}"
  return registry.build(name, size, **overrides), f"{name}/{size}{tag}"


def make_backend(wm, task, horizon: int, sample_chunk: int = 0, seed: int = 0):
  """(backend, params, ctx): the backend over an untrained model, a random history as context."""
  co, ca = task.num_obs, task.num_act
  params = jax.jit(wm.init)(jax.random.key(seed), zeros_batch(1, wm.history + horizon, co, ca))
  norm = normalise.Normaliser(
    -np.ones(co, np.float32), np.ones(co, np.float32), np.asarray(task.act_low), np.asarray(task.act_high)
  )
  backend = backends.WorldModelBackend(wm, params, [task], [norm], horizon, sample_chunk=sample_chunk)
  rng = np.random.default_rng(seed)
  ctx = backends.WMContext(
    jnp.int32(0),
    jnp.asarray(rng.uniform(-1, 1, (wm.history, co)), jnp.float32),
    jnp.asarray(rng.uniform(-1, 1, (wm.history - 1, ca)), jnp.float32),
    task.sample_goal(jax.random.key(seed)),
  )
  return backend, params, ctx


def actions(task, samples: int, horizon: int, seed: int = 1):
  lo, hi = np.asarray(task.act_low), np.asarray(task.act_high)
  return jnp.asarray(np.random.default_rng(seed).uniform(lo, hi, (samples, horizon, task.num_act)), jnp.float32)


def timed(fn, args, repeats: int, warmup: bool = True) -> dict:
  """Compile time and the min / median of `repeats` calls, in ms (min: the least disturbed by the
  other processes on a shared machine); `warmup`: one untimed call first."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  if warmup:
    jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append((time.perf_counter() - t0) * 1e3)
  return {
    "compile_s": round(compile_s, 2),
    "ms_min": round(min(times), 2),
    "ms_median": round(float(np.median(times)), 2),
  }


def matmul_gflops(rows: int, d: int, repeats: int = 10, dtype=jnp.float32) -> float:
  """GFLOP/s of a [rows, d] x [d, d] matmul in `dtype` (min time of `repeats`)."""
  k1, k2 = jax.random.split(jax.random.key(0))
  a = jax.random.normal(k1, (rows, d), dtype)
  b = jax.random.normal(k2, (d, d), dtype)
  t = timed(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32), (a, b), repeats)
  return 2.0 * rows * d * d / (t["ms_min"] / 1e3) / 1e9


def replan_row(wm, label, task, samples, horizon, repeats, sample_chunk=0, warmup=True) -> dict:
  """One replan's times; for WestWorld also its FLOPs, the matmul rate measured right after (the
  load of a shared machine changes by the minute) and the floor."""
  backend, _, ctx = make_backend(wm, task, horizon, sample_chunk)
  u = actions(task, samples, horizon)
  r = timed(backend.step_costs, (ctx, u), repeats, warmup)
  T = wm.history + horizon
  row = {"model": label, "samples": samples, "horizon": horizon, "history": wm.history, "steps": T}
  row.update(sample_chunk=sample_chunk, **r)
  if label.startswith("westworld"):
    cfg = wm.config
    rows = min(samples * T * task.num_obs, 1 << 16)
    gflop = flops.forward_flops(cfg, samples, T, task.num_obs, task.num_act) / 1e9
    rate = matmul_gflops(rows, cfg.d_model)
    floor_ms = gflop / rate * 1e3
    row.update(
      gflop=round(gflop, 2),
      matmul_shape=f"[{rows}, {cfg.d_model}] x [{cfg.d_model}, {cfg.d_model}] float32",
      matmul_gflops=round(rate, 1),
      floor_ms=round(floor_ms, 2),
      ratio=round(r["ms_min"] / floor_ms, 2),
    )
  return row


def fmt(row: dict) -> str:
  floor = f"{row['floor_ms']:10.1f} {row['ratio']:6.2f}" if "floor_ms" in row else f"{'-':>10} {'-':>6}"
  return (
    f"{row['model']:26s} {row['samples']:4d} x {row['horizon']:3d} (T={row['steps']:3d})"
    f" {row['ms_min']:10.1f} {row['ms_median']:10.1f} {floor}"
  )


HEADER = f"{'model':26s} {'K x Hp':19s} {'ms min':>10} {'ms median':>10} {'floor ms':>10} {'ratio':>6}"


def _args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="CPU sizes only (skip the 256 x 100 control row)")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--repeats", type=int, default=3)
  # benchmarks/control.py's CPU setting: unchunked, the chunked scan's [K * Co, 16, 512, 16] blocks
  # take > 16 GB at 256 x 100.
  p.add_argument("--control_scans", default="auto,sequential", help="ssm_scan_impl of the control rows")
  p.add_argument("--control_chunk", type=int, default=64, help="sample_chunk of the 256 x 100 control row")
  p.add_argument("--profile", action="store_true", help="WestWorld's per-component times (benchmarks/wm_profile.py)")
  p.add_argument("--out", default=None)
  return p.parse_args(argv)


def main(argv=None) -> None:
  a = _args(argv)
  task = tasks.make_task("hopper")
  load_before = os.getloadavg()
  rows = []
  print(HEADER, flush=True)
  for name in a.models.split(","):
    wm, label = build(name, "cpu")
    for k, hp in CPU_SIZES:
      rows.append(replan_row(wm, label, task, k, hp, a.repeats))
      print(fmt(rows[-1]), flush=True)
  if not a.quick:
    for scan in a.control_scans.split(","):  # one call each (minutes), no warm-up call
      wm, label = build("westworld", "control", **({} if scan == "auto" else {"ssm_scan_impl": scan}))
      for k, hp in CONTROL_SIZES:
        rows.append(replan_row(wm, label, task, k, hp, 1, a.control_chunk, warmup=False))
        rows[-1]["scan"] = ssm.resolve_impl(wm.config.ssm_scan_impl)
        print(fmt(rows[-1]), flush=True)
  result = {
    "backend": jax.default_backend(),
    "jax_version": jax.__version__,
    "python": platform.python_version(),
    "cpu_cores": os.cpu_count(),
    "load_avg_before": [round(v, 2) for v in load_before],
    "load_avg_after": [round(v, 2) for v in os.getloadavg()],
    "task": "hopper",
    "num_obs": task.num_obs,
    "num_act": task.num_act,
    "replans": rows,
  }
  if a.profile:
    import wm_profile  # pylint: disable=import-outside-toplevel

    result["profile"] = wm_profile.profile(task, a.repeats)
  common.write_result(result, f"wm_replan_{jax.default_backend()}", a.out)


if __name__ == "__main__":
  main()
