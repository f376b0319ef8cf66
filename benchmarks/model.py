"""Benchmark: WestWorld forward+backward throughput and peak memory.

Times one jitted value-and-grad of the training loss (next-step cross-entropy + MoE aux
loss) per variant, prints a table and writes benchmarks/results/model_<backend>.json
(device name, jax version, one row per variant).

  python benchmarks/model.py                  # variants for the backend found: CPU -> tiny
  python benchmarks/model.py --variants tiny,base_b1
  python benchmarks/model.py --variants base_b14,base_b128   # on a GPU

Windows are upstream's: T = 150 steps (history 50), 78 channel slots per sample split as
60 observation + 18 action channels (upstream pads obs+act to 78; batch 14 -> 1092 channel
sequences). Tokens/s counts every (step, channel) token, observation and action.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import platform
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from westworld_jax.model import (
  WestWorld,
  dummy_batch,
  get_model_config,  # noqa: E402
  next_step_loss,
  param_count,
)

# name -> (size, batch, steps, obs channels, action channels, config overrides)
VARIANTS = {
  "tiny": ("tiny", 8, 32, 16, 8, {}),
  # Variants without "_kernel" use the chunked scan (the CPU default) on every backend.
  "base_b1": ("base", 1, 150, 60, 18, {"ssm_scan_impl": "chunked"}),
  "base_b14": ("base", 14, 150, 60, 18, {"ssm_scan_impl": "chunked"}),
  "base_b14_bf16": ("base", 14, 150, 60, 18, {"dtype": "bfloat16", "ssm_scan_impl": "chunked"}),
  "base_b128": ("base", 128, 150, 60, 18, {"dtype": "bfloat16", "remat": True, "ssm_scan_impl": "chunked"}),
  "base_b14_kernel": ("base", 14, 150, 60, 18, {"ssm_scan_impl": "kernel"}),
  "base_b14_bf16_kernel": ("base", 14, 150, 60, 18, {"dtype": "bfloat16", "ssm_scan_impl": "kernel"}),
  "base_b128_kernel": ("base", 128, 150, 60, 18, {"dtype": "bfloat16", "remat": True, "ssm_scan_impl": "kernel"}),
}
DEFAULTS = {
  "cpu": ["tiny", "base_b1"],
  "gpu": ["base_b14", "base_b14_kernel", "base_b14_bf16", "base_b14_bf16_kernel", "base_b128", "base_b128_kernel"],
  "tpu": ["base_b14", "base_b14_bf16", "base_b128"],
}


def random_batch(cfg, batch_size, steps, n_obs, n_act, seed=0):
  rng = np.random.default_rng(seed)
  batch = dummy_batch(cfg, batch_size, steps, n_obs, n_act)
  batch["obs"] = jnp.asarray(rng.uniform(size=(batch_size, steps, n_obs)), jnp.float32)
  batch["act"] = jnp.asarray(rng.uniform(size=(batch_size, steps, n_act)), jnp.float32)
  return batch


def peak_memory_bytes(compiled) -> tuple[int | None, str]:
  """Peak device memory of the step: the allocator's peak on GPU/TPU, XLA's static
  estimate (arguments + outputs + temporaries) on CPU, where there is no allocator stat."""
  peak = common.device_peak_bytes()
  if peak is not None:
    return peak, "allocator peak"
  m = compiled.memory_analysis()
  if m is None:
    return None, "unavailable"
  total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
  return int(total), "XLA estimate"


def run_variant(name: str, steps_to_time: int) -> dict:
  size, b, t, co, ca, overrides = VARIANTS[name]
  cfg = get_model_config(size, **overrides)
  batch = random_batch(cfg, b, t, co, ca)
  model = WestWorld(cfg)
  params = jax.jit(model.init)(jax.random.key(0), batch)["params"]

  def loss_fn(p, bt):
    out = model.apply({"params": p}, bt, train=True)
    return next_step_loss(out["logits"], bt, first_target_step=cfg.history) + out["aux_loss"]

  step = jax.jit(jax.value_and_grad(loss_fn))
  t0 = time.perf_counter()
  compiled = step.lower(params, batch).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(params, batch))  # warm-up
  t0 = time.perf_counter()
  for _ in range(steps_to_time):
    out = compiled(params, batch)
  jax.block_until_ready(out)
  step_s = (time.perf_counter() - t0) / steps_to_time
  peak, peak_kind = peak_memory_bytes(compiled)
  return {
    "variant": name,
    "size": size,
    "params": param_count(cfg),
    "batch": b,
    "steps": t,
    "obs_channels": co,
    "act_channels": ca,
    "dtype": cfg.dtype,
    "remat": cfg.remat,
    "compile_s": round(compile_s, 2),
    "step_ms": round(1e3 * step_s, 2),
    "samples_per_s": round(b / step_s, 2),
    "tokens_per_s": round(b * t * (co + ca) / step_s),
    "peak_memory_gib": None if peak is None else round(peak / 2**30, 3),
    "peak_memory_kind": peak_kind,
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", default=None, help=f"comma-separated, from {sorted(VARIANTS)}; default by backend")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
  parser.add_argument("--out", default=None, help="JSON path (default results/model_<backend>)")
  args = parser.parse_args(argv)

  backend = jax.default_backend()
  names = args.variants.split(",") if args.variants else DEFAULTS.get(backend, ["tiny"])
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    parser.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
  rows = []
  for name in names:
    try:
      rows.append(run_variant(name, args.steps))
    except Exception as e:  # e.g. out of memory at batch 128: record it and go on
      rows.append({"variant": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
    print(rows[-1], flush=True)

  header = [
    "variant",
    "params",
    "batch",
    "dtype",
    "compile_s",
    "step_ms",
    "samples_per_s",
    "tokens_per_s",
    "peak_memory_gib",
  ]
  print("\n" + " | ".join(header))
  for r in rows:
    cells = [r["variant"], r["error"]] if "error" in r else [str(r[h]) for h in header]
    print(" | ".join(cells))

  result = {
    "backend": backend,
    "device": jax.devices()[0].device_kind,
    "device_count": jax.device_count(),
    "jax_version": jax.__version__,
    "python": platform.python_version(),
    "host": platform.node(),
    "max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    "rows": rows,
  }
  common.write_result(result, f"model_{backend}", args.out)


if __name__ == "__main__":
  main()
