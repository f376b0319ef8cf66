"""Ahead-of-time compile check: does the training step of a variant partition and fit on a
target topology, before a pod is reserved?

  # a TPU topology (needs libtpu installed, no TPU attached):
  python launch/aot_check.py --variant large --topology v5p:4x4x4 --mesh_expert 8
  # N simulated CPU devices (anywhere): checks the sharding plan and per-device memory shape
  python launch/aot_check.py --variant large --cpu_devices 64 --mesh_expert 8 --batch 128

Lowers and compiles the same jitted train step `python -m westworld_jax.train` runs (abstract
state and batch with their shardings, nothing allocated) and prints per-device memory from
the compiled executable and the step's analytic model FLOPs.
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
  p.add_argument("--mesh_expert", type=int, default=None, help="size of the 'expert' mesh axis")
  p.add_argument("--batch", type=int, default=None, help="global batch (default: the variant's)")
  p.add_argument("--obs", type=int, default=60, help="observation channels of the batch bucket")
  p.add_argument("--act", type=int, default=18, help="action channels of the batch bucket")
  args = p.parse_args()
  if args.cpu_devices:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.cpu_devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

  import jax
  import numpy as np
  from experiments import pretrain
  from westworld_jax.model.flops import train_step_flops
  from westworld_jax.training import loop, mesh as mesh_lib, state as state_lib, step as step_lib

  if args.topology:
    from jax.experimental import topologies
    devices = topologies.get_topology_desc(platform="tpu", topology_name=args.topology).devices
  else:
    devices = jax.devices()
  cfg = pretrain.get_config(args.variant)
  if args.mesh_expert is not None:
    cfg.mesh.expert = args.mesh_expert
  b = args.batch or cfg.data.batch_size
  t = cfg.data.history + cfg.data.horizon
  model = loop.build_model(cfg.model)
  mesh = mesh_lib.make_mesh(cfg.mesh, devices)
  if b % mesh_lib.batch_shards(mesh):
    raise SystemExit(f"batch {b} is not divisible by the {mesh_lib.batch_shards(mesh)} batch shards of "
                     f"mesh {dict(mesh.shape)}: pass --batch")
  tx, schedule = state_lib.make_optimizer(cfg.optim, cfg.total_steps)
  abstract = state_lib.abstract_state(model, tx, cfg.seed, mesh)
  shardings = mesh_lib.state_shardings(abstract, mesh, state_lib.expert_parallel(model))
  state_in = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, shardings)
  bs = mesh_lib.batch_sharding(mesh)
  example = state_lib.example_batch(model, 1)
  shapes = {"obs": (b, t, args.obs), "act": (b, t, args.act), "obs_mask": (b, args.obs),
            "act_mask": (b, args.act), "time_mask": (b, t), "obs_struct": (b, args.obs, 4),
            "act_struct": (b, args.act, 4), "obs_kind": (b, args.obs), "act_kind": (b, args.act), "env_id": (b,)}
  batch_in = {k: jax.ShapeDtypeStruct(shapes[k], np.asarray(v).dtype, sharding=bs) for k, v in example.items()}
  train_step = step_lib.make_train_step(model, tx, schedule, cfg.seed, shardings, bs)
  with jax.set_mesh(mesh):
    compiled = train_step.lower(state_in, batch_in).compile()
  mem = compiled.memory_analysis()
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
  print(f"variant {args.variant}: {n_params / 1e6:.1f}M params, mesh {dict(mesh.shape)} on "
        f"{len(devices)} x {devices[0].device_kind}, batch {b} x {t} steps x ({args.obs}+{args.act}) channels")
  if mem is not None:
    gib = lambda n: n / 2**30
    print(f"per device: arguments {gib(mem.argument_size_in_bytes):.2f} GiB, outputs "
          f"{gib(mem.output_size_in_bytes):.2f} GiB, temporaries {gib(mem.temp_size_in_bytes):.2f} GiB")
  print(f"model FLOPs per step: {train_step_flops(model.config, b, t, args.obs, args.act) / 1e12:.1f} TFLOP")
  print("AOT compile OK")


if __name__ == "__main__":
  main()
