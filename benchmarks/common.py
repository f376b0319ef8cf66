"""Shared by the benchmark scripts: the repository root on sys.path and where results go."""

import json
import os
import sys

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
