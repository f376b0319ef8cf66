"""Benchmark (compile-time): what the scan and the training step need on an H100, compiled ahead
of time by XLA's own CUDA compiler for H100s described to it, on a host with no GPU.

XLA's GPU buffer assignment is static, so the compiled memory is what the program asks the
allocator for (the allocator's fragmentation and cuBLAS workspaces come on top). Calibration: the
base step at batch 14 compiles here to 46.51 GiB with the chunked scan and 39.75 GiB with the
kernel; on an H100 they ran with 45.02 and 39.68 GiB peaks (train_gpu.json; that kernel build
reduced with partial sums, see results/GPU_NOTES.md). The `kernels` section also reads XLA's own build of the Triton scan
kernels: their PTX from an XLA dump, assembled by ptxas for registers and spills. Speed is not
measured here.

  pip install --target /tmp/cuda_pkg jax-cuda12-pjrt==0.10.2   # XLA's CUDA compiler (no GPU needed)
  pip install triton==3.9.0                                     # only for ptxas (kernels section)
  python benchmarks/gpu_aot.py --plugin /tmp/cuda_pkg/jax_plugins/xla_cuda12/xla_cuda_plugin.so

Sections: ssm (one scan at the base size, batch 14: chunked vs kernel, fwd and fwd+bwd), train
(the real training step, westworld_jax/training/aot.py: base at batch 14 and 128, the large
model on 8 GPUs), replan (the world-model MPPI replan, 256 x 100), kernels. Writes
benchmarks/results/gpu_aot.json.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import glob
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp

import kernel_sass  # noqa: E402  (benchmarks/, for the triton wheel's ptxas)
from experiments import pretrain  # noqa: E402
from westworld_jax.model.ssm import selective_scan  # noqa: E402
from westworld_jax.training import aot  # noqa: E402

SSM_BASE_B14 = dict(S=1092, L=151, Dm=512, N=64)
H100_GIB = 84929347584 / 2**30  # device memory XLA reports for an H100 80GB HBM3
# JAX's GPU allocator takes XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.75) of it.
DEFAULT_POOL_GIB = 0.75 * H100_GIB
# (name, pretrain variant, batch, GPUs, mesh expert, model overrides)
TRAIN_ROWS = [
  ("base_b14", "base", 14, 1, 1, {}),
  ("base_b128", "base", 128, 1, 1, {}),
  ("base_b128_remat", "base", 128, 1, 1, {"remat": True}),
]
LARGE_ROW = ("large_b128", "large", 128, 8, 4, {})  # mesh data 2 x expert 4
MEASURED_PEAK_GIB = {("base_b14", "kernel"): 39.68, ("base_b14", "chunked"): 45.02}  # train_gpu.json


def _scan_fns(**scan_kw):
  """(forward, forward+backward) of selective_scan(**scan_kw) on the 7 inputs of _scan_args."""
  fwd = lambda *a: selective_scan(*a, **scan_kw)  # noqa: E731
  bwd = jax.grad(lambda *a: sum(jnp.sum(o) for o in fwd(*a)), argnums=tuple(range(7)))
  return fwd, bwd


def _scan_args(dev):
  sh = jax.sharding.SingleDeviceSharding(dev)
  S, L, Dm, N = (SSM_BASE_B14[k] for k in ("S", "L", "Dm", "N"))
  shapes = [(S, L, Dm), (S, L, Dm), (Dm, N), (S, L, N), (S, L, N), (Dm,), (S, Dm, N)]
  return [jax.ShapeDtypeStruct(s, jnp.float32, sharding=sh) for s in shapes]


def ssm_rows(dev) -> list[dict]:
  args, rows = _scan_args(dev), []
  for impl, chunk in (("chunked", 16), ("kernel", 8), ("kernel", 16)):
    for mode, fn in zip(("fwd", "fwd+bwd"), _scan_fns(impl=impl, chunk_size=chunk)):
      t0 = time.perf_counter()
      mem = jax.jit(fn).lower(*args).compile(aot.GPU_AOT_OPTIONS).memory_analysis()
      rows.append(
        {
          "section": "ssm",
          "device": dev.device_kind,
          "impl": impl,
          "chunk": chunk,
          "mode": mode,
          **SSM_BASE_B14,
          "temp_gib": mem.temp_size_in_bytes / 2**30,
          "compile_s": time.perf_counter() - t0,
        }
      )
      print(rows[-1], flush=True)
  return rows


def train_row(devices, name, variant, batch, gpus, expert, overrides, impl) -> dict:
  cfg = pretrain.get_config(variant)
  cfg.model.update({**overrides, "ssm_scan_impl": impl})
  cfg.mesh.expert = expert
  t0 = time.perf_counter()
  step = aot.compile_train_step(cfg, devices[:gpus], batch, compiler_options=aot.GPU_AOT_OPTIONS)
  row = {
    "section": "train",
    "row": name,
    "variant": variant,
    "batch": batch,
    "gpus": gpus,
    "impl": impl,
    "remat": bool(cfg.model.remat),
    "device": devices[0].device_kind,
    "mesh": step.mesh,
    "params": step.params,
    "argument_gib": step.argument_gib,
    "temp_gib": step.temp_gib,
    "total_gib": step.total_gib,
    "fits_80gb": step.total_gib <= H100_GIB,
    "fits_default_pool": step.total_gib <= DEFAULT_POOL_GIB,
    "measured_peak_gib": MEASURED_PEAK_GIB.get((name, impl)),
    "model_tflop": step.model_tflop,
    "compile_s": time.perf_counter() - t0,
  }
  print(row, flush=True)
  return row


def replan_rows(dev) -> list[dict]:
  """The world-model MPPI replan (Hopper, control-size model, 256 samples x horizon 100, the
  kernel scan): what benchmarks/control.py times on a GPU, compiled for one."""
  from westworld_jax.control import backends, env, mppi, tasks  # pylint: disable=import-outside-toplevel
  from westworld_jax.data import normalise  # pylint: disable=import-outside-toplevel
  from westworld_jax.model import registry  # pylint: disable=import-outside-toplevel
  from westworld_jax.model.batch import zeros_batch  # pylint: disable=import-outside-toplevel

  task = tasks.make_task("hopper")
  norm = normalise.Normaliser.from_stats(normalise.stats_from_rollouts(task.robot, 8, 100), task.num_obs, task.num_act)
  sh = jax.sharding.SingleDeviceSharding(dev)
  to_sds = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh)  # noqa: E731
  rows = []
  for dtype in ("float32", "bfloat16"):
    wm = registry.build("westworld", "control", dtype=dtype, ssm_scan_impl="kernel")
    # the same parameters, initialised here with the host's scan (the kernel would be interpreted)
    init = registry.build("westworld", "control", dtype=dtype).init
    params = jax.jit(init)(jax.random.key(0), zeros_batch(1, wm.history + 100, task.num_obs, task.num_act))
    planner = mppi.MPPI(
      backends.WorldModelBackend(wm, params, [task], [norm], 100), mppi.MPPIConfig(samples=256, horizon=100)
    )
    state = env.Envs(task, history=wm.history).reset(jax.random.key(0), 1)
    plan = planner.init(jax.random.key(1), state)
    t0 = time.perf_counter()
    compiled = (
      planner.replan.trace(jax.tree.map(to_sds, plan), jax.tree.map(to_sds, state)).lower().compile(aot.GPU_AOT_OPTIONS)
    )
    hlo = compiled.as_text()
    rows.append(
      {
        "section": "replan",
        "device": dev.device_kind,
        "dtype": dtype,
        "samples": 256,
        "horizon": 100,
        "temp_gib": compiled.memory_analysis().temp_size_in_bytes / 2**30,
        "scan_kernels": hlo.count("__gpu$xla.gpu.triton"),
        "fusions": hlo.count(" fusion("),
        "compile_s": time.perf_counter() - t0,
      }
    )
    print(rows[-1], flush=True)
  return rows


def kernel_rows(dev, configs) -> list[dict]:
  """XLA's build of the Triton scan kernels: the PTX it dumps, through ptxas -v for sm_90a."""
  ptxas = kernel_sass.triton_tool("ptxas") or shutil.which("ptxas")
  if ptxas is None:
    print("kernels: no ptxas (pip install triton==3.9.0, or CUDA's ptxas on PATH); skipped")
    return []
  args, rows = _scan_args(dev), []
  for bd, warps, chunk in configs:
    with tempfile.TemporaryDirectory() as dump:
      _, fn = _scan_fns(impl="kernel", kernel="triton", chunk_size=chunk, block_d=bd, num_warps=warps)
      jax.jit(fn).lower(*args).compile({**aot.GPU_AOT_OPTIONS, "xla_dump_to": dump})
      for ptx in sorted(glob.glob(os.path.join(dump, "*.ptx"))):
        text = open(ptx).read()
        entry = re.search(r"\.entry (selective_scan_\w+)\(", text)
        if not entry:
          continue
        out = subprocess.run(
          [ptxas, "-arch=sm_90a", "-v", ptx, "-o", os.devnull], capture_output=True, text=True, check=True
        ).stderr
        regs = re.search(r"Used (\d+) registers", out)
        stack = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", out)
        rows.append(
          {
            "section": "kernels",
            "kernel": entry.group(1),
            "config": f"1x{bd}x{warps}x{chunk}",
            "regs": int(regs.group(1)),
            "stack_bytes": int(stack.group(1)),
            "spill_store_bytes": int(stack.group(2)),
            "spill_load_bytes": int(stack.group(3)),
          }
        )
        print(rows[-1], flush=True)
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sections", default="ssm,train,replan,kernels")
  p.add_argument("--plugin", default=None, help="XLA's xla_cuda_plugin.so (default: the installed one)")
  p.add_argument(
    "--kernel_configs",
    default="16x4x8,16x4x16",
    help="block_d x num_warps x chunk of the Triton kernels to read (kernels section)",
  )
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  sections = args.sections.split(",")
  devices = aot.gpu_devices(8 if "train" in sections else 1, plugin=args.plugin)
  rows = []
  save = lambda: common.write_result(  # noqa: E731
    {
      "what": "compiled memory for NVIDIA H100s (XLA AOT, no GPU attached); speed unmeasured",
      "jax": jax.__version__,
      "python": platform.python_version(),
      "h100_gib": H100_GIB,
      "default_pool_gib": DEFAULT_POOL_GIB,
      "xla_options": aot.GPU_AOT_OPTIONS,
      "rows": rows,
    },
    "gpu_aot",
    args.out,
  )
  if "ssm" in sections:
    rows += ssm_rows(devices[0])
    save()
  if "train" in sections:
    for spec in TRAIN_ROWS:
      for impl in ("kernel", "chunked"):
        rows.append(train_row(devices, *spec, impl=impl))
        save()
    rows.append(train_row(devices, *LARGE_ROW, impl="kernel"))
    save()
  if "replan" in sections:
    rows += replan_rows(devices[0])
    save()
  if "kernels" in sections:
    configs = [tuple(int(v) for v in c.split("x")) for c in args.kernel_configs.split(",")]
    rows += kernel_rows(devices[0], configs)
    save()
  _print_tables(rows)


def _print_tables(rows):
  fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
  ssm = [r for r in rows if r["section"] == "ssm"]
  if ssm:
    print("\nSSM scan, base size batch 14 (S=1092, L=151, Dm=512, N=64) on an H100: XLA temporaries, GiB")
    print(f"{'impl':8} {'chunk':>5} {'fwd':>8} {'fwd+bwd':>8}")
    for impl, chunk in dict.fromkeys((r["impl"], r["chunk"]) for r in ssm):
      t = {r["mode"]: r["temp_gib"] for r in ssm if (r["impl"], r["chunk"]) == (impl, chunk)}
      print(f"{impl:8} {chunk:5d} {fmt(t.get('fwd')):>8} {fmt(t.get('fwd+bwd')):>8}")
  train = [r for r in rows if r["section"] == "train"]
  if train:
    print(f"\nTraining step per H100 (GiB; 80 GB = {H100_GIB:.1f} GiB, JAX's default pool {DEFAULT_POOL_GIB:.1f})")
    print(f"{'row':16} {'impl':8} {'gpus':>4} {'GiB':>8} {'measured':>8} {'fits 80GB':>9}")
    for r in train:
      print(
        f"{r['row']:16} {r['impl']:8} {r['gpus']:4d} {fmt(r['total_gib']):>8} "
        f"{fmt(r['measured_peak_gib']):>8} {'yes' if r['fits_80gb'] else 'no':>9}"
      )
  replan = [r for r in rows if r["section"] == "replan"]
  if replan:
    print("\nWorld-model MPPI replan (Hopper, control size, 256 x 100, kernel scan) on an H100")
    for r in replan:
      print(f"{r['dtype']:9} temp {fmt(r['temp_gib'])} GiB  scan kernels {r['scan_kernels']}  fusions {r['fusions']}")
  kernels = [r for r in rows if r["section"] == "kernels"]
  if kernels:
    print("\nXLA's build of the Triton scan kernels (ptxas -v, sm_90a)")
    for r in kernels:
      print(
        f"{r['kernel']:20} {r['config']:10} regs {r['regs']:3d}  stack {r['stack_bytes']:5d} B  "
        f"spill st/ld {r['spill_store_bytes']}/{r['spill_load_bytes']} B"
      )


if __name__ == "__main__":
  main()
