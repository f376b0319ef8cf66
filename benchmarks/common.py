"""Shared by the benchmark scripts: the repository root on sys.path and where results go."""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # scripts run as `python benchmarks/x.py` also import experiments/
  sys.path.insert(0, ROOT)


def median_ms(fn, args, repeats: int) -> float:
  """Median wall time in ms of fn(*args) (a jitted or compiled function), after one warm-up call."""
  import statistics  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel

  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def device_peak_bytes() -> int | None:
  """The first device's allocator peak (a running peak of this process; None where the backend
  keeps no such statistic, e.g. CPU)."""
  import jax  # pylint: disable=import-outside-toplevel

  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else int(peak)


def write_result(result: dict, name: str, out: str | None = None) -> str:
  """Writes benchmarks/results/<name>.json (or `out`) and returns the path."""
  out = out or os.path.join(ROOT, "benchmarks", "results", f"{name}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {out}")
  return out


def run_section(script: str, name: str, argv: list[str], pin: bool) -> list | dict:
  """Runs `script --section name` (its argv + that) in a fresh interpreter and returns the JSON of its
  last `RESULT ` line. pin: the child pins itself to one core before importing jax (jaxlib on <= 2
  cores can deadlock at the first call of large vmapped MJX programs)."""
  script = os.path.abspath(script)
  code = (
    "import os, sys, runpy\n"
    + f"sys.path.insert(0, {os.path.dirname(script)!r})\n"
    + ("os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n" if pin else "")
    + f"sys.argv = {[script] + argv + ['--section', name]!r}\n"
    + f"runpy.run_path({script!r}, run_name='__main__')\n"
  )
  env = dict(os.environ)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "westworld_jax_jit"))
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
  if proc.returncode or not lines:
    raise SystemExit(f"section {name} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
  print(f"section {name}: {time.perf_counter() - t0:.0f}s (pinned to one core: {pin})", flush=True)
  return json.loads(lines[-1][len("RESULT ") :])
