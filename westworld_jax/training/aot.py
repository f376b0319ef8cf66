"""Ahead-of-time compilation of the training step for any devices: real ones, simulated CPU
devices, or a TPU topology described by libtpu without a TPU attached.

`compile_train_step(cfg, devices, batch, obs, act)` lowers and compiles the same jitted step
`python -m westworld_jax.train` runs (abstract state and batch with their shardings; nothing
is allocated) and returns per-device memory from the compiled executable. On a TPU the
compiler allocates statically, so these numbers are what the step needs there.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from westworld_jax.model.flops import train_step_flops
from westworld_jax.training import loop, mesh as mesh_lib, state as state_lib, step as step_lib

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class CompiledStep:
  device_kind: str
  num_devices: int
  mesh: dict
  params: int
  batch: int
  steps: int
  argument_gib: float  # per device: state + batch
  output_gib: float
  temp_gib: float
  alias_gib: float  # outputs that reuse donated arguments
  model_tflop: float  # analytic model FLOPs of one step (all devices)

  @property
  def total_gib(self) -> float:
    """Per-device bytes live at the step's peak: arguments, outputs not aliased, temporaries."""
    return self.argument_gib + self.output_gib - self.alias_gib + self.temp_gib


def tpu_devices(topology: str) -> list:
  """The devices of a TPU topology (e.g. 'v5p:2x2x1', 'v5e:2x2'); needs libtpu, not a TPU."""
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
  except Exception as e:  # libtpu missing or an unknown topology name
    raise RuntimeError(f"cannot describe TPU topology {topology!r} ({type(e).__name__}: {e}). It needs "
                       "libtpu (pip install 'jax[tpu]', or only its libtpu wheel) and a name like "
                       "v5e:2x2, v5p:2x2x1, v6e:2x2, v4:2x2x1.") from e


def compile_train_step(cfg, devices: Sequence, batch: int | None = None, obs: int = 60,
                       act: int = 18) -> CompiledStep:
  """Compiles the training step of `cfg` (experiments/pretrain.py's fields) for `devices`."""
  b = batch or cfg.data.batch_size
  t = cfg.data.history + cfg.data.horizon
  model = loop.build_model(cfg.model)
  mesh = mesh_lib.make_mesh(cfg.mesh, list(devices))
  if b % mesh_lib.batch_shards(mesh):
    raise ValueError(f"batch {b} is not divisible by the {mesh_lib.batch_shards(mesh)} batch shards of "
                     f"mesh {dict(mesh.shape)}: choose another batch")
  tx, schedule = state_lib.make_optimizer(cfg.optim, cfg.total_steps)
  abstract = state_lib.abstract_state(model, tx, cfg.seed, mesh)
  shardings = mesh_lib.state_shardings(abstract, mesh, state_lib.expert_parallel(model))
  state_in = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, shardings)
  bs = mesh_lib.batch_sharding(mesh)
  example = state_lib.example_batch(model, 1)
  shapes = {"obs": (b, t, obs), "act": (b, t, act), "obs_mask": (b, obs), "act_mask": (b, act),
            "time_mask": (b, t), "obs_struct": (b, obs, 4), "act_struct": (b, act, 4), "obs_kind": (b, obs),
            "act_kind": (b, act), "env_id": (b,)}
  batch_in = {k: jax.ShapeDtypeStruct(shapes[k], np.asarray(v).dtype, sharding=bs) for k, v in example.items()}
  train_step = step_lib.make_train_step(model, tx, schedule, cfg.seed, shardings, bs)
  with jax.set_mesh(mesh):
    compiled = train_step.lower(state_in, batch_in).compile()
  mem = compiled.memory_analysis()
  gib = lambda n: float(n) / GIB  # noqa: E731
  return CompiledStep(
      device_kind=devices[0].device_kind, num_devices=len(devices), mesh=dict(mesh.shape),
      params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"])), batch=b, steps=t,
      argument_gib=gib(mem.argument_size_in_bytes), output_gib=gib(mem.output_size_in_bytes),
      temp_gib=gib(mem.temp_size_in_bytes), alias_gib=gib(mem.alias_size_in_bytes),
      model_tflop=train_step_flops(model.config, b, t, obs, act) / 1e12)
