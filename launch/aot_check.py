"""Ahead-of-time compile check: does the training step of a variant partition and fit on a
target topology, before a pod is reserved?

  # a TPU topology (needs libtpu installed, no TPU attached):
  python launch/aot_check.py --variant large --topology v5p:4x4x4 --mesh_expert 8
  # N simulated CPU devices (anywhere): checks the sharding plan and per-device memory shape
  python launch/aot_check.py --variant large --cpu_devices 64 --mesh_expert 8 --batch 128

Lowers and compiles the same jitted train step `python -m westworld_jax.train` runs (abstract
state and batch with their shardings, nothing allocated; westworld_jax/training/aot.py) and
prints per-device memory from the compiled executable and the step's analytic model FLOPs.
For a TPU topology the selective scan is the Mosaic kernel (--scan_impl to change it).
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variant", default="large", help="experiments/pretrain.py variant")
  p.add_argument("--topology", default="", help="TPU topology name, e.g. v5p:4x4x4 or v5e:8x8")
  p.add_argument("--cpu_devices", type=int, default=0, help="simulate this many CPU devices instead")
  p.add_argument("--devices", type=int, default=0, help="use only the first N devices (e.g. 1 chip of v5e:2x2)")
  p.add_argument("--mesh_expert", type=int, default=None, help="size of the 'expert' mesh axis")
  p.add_argument("--batch", type=int, default=None, help="global batch (default: the variant's)")
  p.add_argument("--obs", type=int, default=60, help="observation channels of the batch bucket")
  p.add_argument("--act", type=int, default=18, help="action channels of the batch bucket")
  p.add_argument(
    "--scan_impl", default="", help="model.ssm_scan_impl (default: 'kernel' for --topology, else the config's)"
  )
  args = p.parse_args()
  if args.cpu_devices:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.cpu_devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

  import jax
  from experiments import pretrain
  from westworld_jax.training import aot

  devices = aot.tpu_devices(args.topology) if args.topology else jax.devices()
  devices = devices[: args.devices] if args.devices else devices
  cfg = pretrain.get_config(args.variant)
  if args.mesh_expert is not None:
    cfg.mesh.expert = args.mesh_expert
  # The fused scan kernel on accelerators: "auto" would resolve by this host's backend (CPU).
  cfg.model.ssm_scan_impl = args.scan_impl or ("kernel" if args.topology else cfg.model.ssm_scan_impl)
  try:
    step = aot.compile_train_step(cfg, devices, args.batch, args.obs, args.act)
  except ValueError as e:
    raise SystemExit(str(e))
  print(
    f"variant {args.variant}: {step.params / 1e6:.1f}M params, scan {cfg.model.ssm_scan_impl}, mesh "
    f"{step.mesh} on {step.num_devices} x {step.device_kind}, batch {step.batch} x {step.steps} steps x "
    f"({args.obs}+{args.act}) channels"
  )
  print(
    f"per device: arguments {step.argument_gib:.2f} GiB, outputs {step.output_gib:.2f} GiB "
    f"({step.alias_gib:.2f} aliased), temporaries {step.temp_gib:.2f} GiB; total {step.total_gib:.2f} GiB"
  )
  print(f"model FLOPs per step: {step.model_tflop:.1f} TFLOP")
  print("AOT compile OK")


if __name__ == "__main__":
  main()
