"""Benchmark: the real training step (AdamW, clipping, donated sharded state, non-finite guard)
as `python -m westworld_jax.train` runs it: ms/step, steps/s, samples/s, tokens/s and MFU.

  python benchmarks/train.py                        # backend default: CPU -> tiny
  python benchmarks/train.py --variants base_b14,base_b128   # on a GPU

Model FLOPs are counted analytically (westworld_jax/model/flops.py; training = 3x forward).
MFU = model FLOP/s / peak: on GPUs the vendor's dense bf16 peak for the device kind; on CPU
the fp32 matmul throughput measured in the same run (a practical, not a datasheet, peak).
Tokens/s counts every (step, channel) token of the padded batch, observation and action.
The authors' code: 800 ms/step at batch 14 on one H100 (17.5 samples/s).
Writes benchmarks/results/train_<backend>.json.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import pretrain  # noqa: E402
from westworld_jax.model.batch import zeros_batch  # noqa: E402
from westworld_jax.model.flops import train_step_flops  # noqa: E402
from westworld_jax.training import run_files  # noqa: E402
from westworld_jax.training import mesh as mesh_lib, state as state_lib, step as step_lib  # noqa: E402

# name -> (pretrain variant, batch, steps, obs channels, action channels, model overrides)
VARIANTS = {
  "tiny": ("tiny", 16, 32, 32, 8, {}),
  "base_b14": ("base", 14, 150, 60, 18, {}),  # ssm_scan_impl "auto": the kernel on GPU
  "base_b14_chunked": ("base", 14, 150, 60, 18, {"ssm_scan_impl": "chunked"}),
  "base_b14_kernel": ("base", 14, 150, 60, 18, {"ssm_scan_impl": "kernel"}),
  # Kernel checkpoints every 8 steps instead of 16: XLA's build of the backward spills ~900 B per
  # thread at 16 and ~50 B at 8 (gpu_aot.json), for 2.7 GB more checkpoints per layer.
  "base_b14_c8": ("base", 14, 150, 60, 18, {"ssm_chunk_size": 8}),
  "base_b128": ("base", 128, 150, 60, 18, {"remat": True}),
  "base_b128_kernel": ("base", 128, 150, 60, 18, {"remat": True, "ssm_scan_impl": "kernel"}),
}
DEFAULTS = {"cpu": ["tiny"], "gpu": ["base_b14", "base_b14_chunked", "base_b128"]}
AUTHORS_MS_B14 = 800.0
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, per device


def measured_cpu_peak(n: int = 1024, reps: int = 10) -> float:
  """fp32 matmul FLOP/s of this machine (all devices' cores together)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(reps):
    out = f(a)
  out.block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - t0)


def peak_flops(backend: str) -> tuple[float, str]:
  if backend == "cpu":
    return measured_cpu_peak(), "measured fp32 matmul"
  kind = jax.devices()[0].device_kind
  for key, tflops in PEAK_BF16_TFLOPS.items():
    if key in kind:
      return tflops * 1e12 * jax.device_count(), f"{kind} dense bf16 datasheet x {jax.device_count()}"
  return float("nan"), f"unknown peak for {kind}"


def run_variant(name: str, timed_steps: int) -> dict:
  variant, b, t, co, ca, overrides = VARIANTS[name]
  cfg = pretrain.get_config(variant)
  cfg.model.update(overrides)
  cfg.model.max_window_len = max(cfg.model.max_window_len, t)
  model = run_files.build_model(cfg.model)
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, expert=1)))
  tx, schedule = state_lib.make_optimizer(cfg.optim, cfg.total_steps)
  state, shardings = state_lib.create_sharded_state(model, tx, 0, mesh)
  bs = mesh_lib.batch_sharding(mesh)
  train_step = step_lib.make_train_step(model, tx, schedule, 0, shardings, bs)
  rng = np.random.default_rng(0)
  host = zeros_batch(b, t, co, ca)
  host.update(obs=rng.uniform(size=(b, t, co)).astype(np.float32), act=rng.uniform(size=(b, t, ca)).astype(np.float32))
  with jax.set_mesh(mesh):
    batch = jax.device_put(host, bs)
    t0 = time.perf_counter()
    state, m = train_step(state, batch)
    jax.block_until_ready(m["loss"])
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(timed_steps):
      t0 = time.perf_counter()
      state, m = train_step(state, batch)
      jax.block_until_ready(m["loss"])
      times.append(time.perf_counter() - t0)
  ms = 1e3 * float(np.median(times))
  flops = train_step_flops(model.config, b, t, co, ca)
  return {
    "variant": name,
    "size": variant,
    "batch": b,
    "steps": t,
    "obs_channels": co,
    "act_channels": ca,
    "dtype": model.config.dtype,
    "scan": model.config.ssm_scan_impl,
    "remat": model.config.remat,
    "params": state_lib.param_count(state),
    "compile_s": compile_s,
    "ms_per_step": ms,
    "steps_per_s": 1e3 / ms,
    "samples_per_s": b * 1e3 / ms,
    "tokens_per_s": b * t * (co + ca) * 1e3 / ms,
    "model_tflop_per_step": flops / 1e12,
    "model_tflops": flops / ms / 1e9,
    "loss_finite": bool(np.isfinite(float(m["loss"]))),
    # The allocator's running peak of this process (variants run in order, largest last).
    "peak_memory_gib_so_far": None if (peak := common.device_peak_bytes()) is None else round(peak / 2**30, 2),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", default=None, help=f"comma-separated of {sorted(VARIANTS)}")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (median reported)")
  parser.add_argument("--out", default=None, help="JSON path (default results/train_<backend>)")
  args = parser.parse_args(argv)
  backend = jax.default_backend()
  names = args.variants.split(",") if args.variants else DEFAULTS.get(backend, ["tiny"])
  peak, peak_src = peak_flops(backend)
  rows = []
  for name in names:
    try:
      row = run_variant(name, args.steps)
      row["mfu"] = row["model_tflops"] * 1e12 / peak
    except Exception as e:  # e.g. out of memory: report it, keep going
      row = {"variant": name, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    if row.get("batch") == 14 and "ms_per_step" in row:
      row["speedup_vs_authors_800ms"] = AUTHORS_MS_B14 / row["ms_per_step"]
    rows.append(row)
    print(row, flush=True)
    _write(rows, peak, peak_src, backend, args.out)  # after every row: a later one may hang
  hdr = f"{'variant':18} {'batch':>5} {'ms/step':>9} {'steps/s':>8} {'samples/s':>9} {'Mtok/s':>7} {'TFLOP/s':>8} {'MFU':>6}"
  print(f"\n{jax.devices()[0].device_kind} x {jax.device_count()}; peak {peak / 1e12:.3g} TFLOP/s ({peak_src})")
  print(hdr)
  for r in rows:
    if "error" in r:
      print(f"{r['variant']:18} {r['error']}")
      continue
    print(
      f"{r['variant']:18} {r['batch']:5d} {r['ms_per_step']:9.1f} {r['steps_per_s']:8.2f} "
      f"{r['samples_per_s']:9.1f} {r['tokens_per_s'] / 1e6:7.3f} {r['model_tflops']:8.3f} {r['mfu']:6.1%}"
    )


def _write(rows, peak, peak_src, backend, out):
  result = {
    "device": jax.devices()[0].device_kind,
    "device_count": jax.device_count(),
    "backend": backend,
    "jax": jax.__version__,
    "python": platform.python_version(),
    "peak_tflops": peak / 1e12,
    "peak_source": peak_src,
    "authors_ms_per_step_b14_h100": AUTHORS_MS_B14,
    "rows": rows,
  }
  common.write_result(result, f"train_{backend}", out)


if __name__ == "__main__":
  main()
