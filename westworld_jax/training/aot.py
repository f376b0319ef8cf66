"""Ahead-of-time compilation of the training step for any devices: real ones, simulated CPU
devices, a TPU topology described by libtpu without a TPU attached, or H100s described to XLA's
CUDA plugin without a GPU (gpu_devices).

`compile_train_step(cfg, devices, batch, obs, act)` lowers and compiles the same jitted step
`python -m westworld_jax.train` runs (abstract state and batch with their shardings; nothing
is allocated) and returns per-device memory from the compiled executable. On a TPU the
compiler allocates statically, so these numbers are what the step needs there; on a GPU, XLA's
buffer assignment is too (the allocator adds fragmentation; the base step at batch 14 compiled
for an H100 here needs 39.75 GiB, and ran with a 39.68 GiB peak on one).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Sequence

import jax
import numpy as np

from westworld_jax.errors import ConfigError
from westworld_jax.model.batch import batch_spec
from westworld_jax.model.flops import train_step_flops
from westworld_jax.training import mesh as mesh_lib, state as state_lib, step as step_lib
from westworld_jax.training.run_files import build_model

GIB = 2**30


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
    raise RuntimeError(
      f"cannot describe TPU topology {topology!r} ({type(e).__name__}: {e}). It needs "
      "libtpu (pip install 'jax[tpu]', or only its libtpu wheel) and a name like "
      "v5e:2x2, v5p:2x2x1, v6e:2x2, v4:2x2x1."
    ) from e


# What XLA needs to compile for an H100 with no GPU attached (stream_executor.GpuTargetConfigProto,
# text format): the device's properties as XLA reads them from a real NVIDIA H100 80GB HBM3 (SXM).
H100_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024  threads_per_warp: 32
  shared_memory_per_block: 49152  shared_memory_per_core: 233472  shared_memory_per_block_optin: 232448
  threads_per_core_limit: 2048  core_count: 132  fpus_per_core: 128
  block_dim_limit_x: 2147483647  block_dim_limit_y: 65535  block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000  l2_cache_size: 52428800  clock_rate_ghz: 1.98
  device_memory_size: 84929347584
  cuda_compute_capability { major: 9 }
  registers_per_core_limit: 65536  registers_per_block_limit: 65536
}
runtime_version { major: 12 minor: 8 }
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 7 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""
# Without a GPU, XLA cannot autotune its Triton GEMM tilings, and its untuned choice fails on some
# of this model's dots ("Couldn't find output tile sizes", the [*, 16] x [16, 512] dt_proj); GEMMs
# go to cuBLAS instead. Fusion around the GEMMs may differ a little from a GPU's compile; the
# step's memory matched the H100's measured peaks within 3.5% (benchmarks/results/GPU_NOTES.md).
GPU_AOT_OPTIONS = {"xla_gpu_enable_triton_gemm": False}


def cuda_plugin_path() -> str | None:
  """The installed XLA CUDA PJRT plugin (jax-cuda12-pjrt's xla_cuda_plugin.so), or None."""
  try:
    spec = importlib.util.find_spec("jax_plugins.xla_cuda12")
  except ModuleNotFoundError:  # no jax_plugins namespace at all
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(list(spec.submodule_search_locations)[0], "xla_cuda_plugin.so")
  return path if os.path.exists(path) else None


def gpu_devices(count: int = 1, plugin: str | None = None) -> list:
  """`count` compile-only H100s, on a host without a GPU (or a driver).

  Needs XLA's CUDA PJRT plugin (pip install jax-cuda12-pjrt==<jaxlib version>, or --target a
  folder on PYTHONPATH): `plugin` is its xla_cuda_plugin.so, by default found in the installed
  `jax_plugins.xla_cuda12`. The plugin is registered for compiling only (its Python initialiser,
  which loads the CUDA runtime, is not run), after the host's own backends are up, so JAX never
  tries to open a GPU.
  """
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  from jax._src.lib import xla_client  # pylint: disable=import-outside-toplevel
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  plugin = plugin or cuda_plugin_path()
  if plugin is None:
    raise RuntimeError(
      "compiling for a GPU without one needs XLA's CUDA plugin: pip install "
      f"jax-cuda12-pjrt=={jax.__version__} (or pass its xla_cuda_plugin.so)"
    )
  if not os.path.exists(plugin):
    raise RuntimeError(f"no CUDA PJRT plugin at {plugin}: pip install jax-cuda12-pjrt=={jax.__version__}")
  jax.devices()  # the host's backends first: a CUDA backend registered later is never opened
  if "cuda" not in xla_bridge._topology_factories:  # pylint: disable=protected-access
    xla_bridge.register_plugin(
      "cuda", priority=500, library_path=plugin, options=xla_client.generate_pjrt_gpu_plugin_options()
    )
  return list(
    topologies.get_topology_desc("h100", "cuda", target_config=H100_TARGET_CONFIG, topology=f"1x1x{count}").devices
  )


def compile_train_step(
  cfg, devices: Sequence, batch: int | None = None, obs: int = 60, act: int = 18, compiler_options: dict | None = None
) -> CompiledStep:
  """Compiles the training step of `cfg` (experiments/pretrain.py's fields) for `devices`
  (with XLA `compiler_options`; GPU_AOT_OPTIONS for gpu_devices())."""
  b = batch or cfg.data.batch_size
  t = cfg.data.history + cfg.data.horizon
  rules = mesh_lib.config_rules(cfg.mesh)
  model = build_model(cfg.model, rules)
  mesh = mesh_lib.make_mesh(cfg.mesh, list(devices))
  if b % mesh_lib.batch_shards(mesh, rules):
    raise ConfigError(
      f"batch {b} is not divisible by the {mesh_lib.batch_shards(mesh, rules)} batch shards of "
      f"mesh {dict(mesh.shape)}: choose another batch"
    )
  tx, schedule = state_lib.make_optimizer(cfg.optim, cfg.total_steps)
  abstract = state_lib.abstract_state(model, tx, cfg.seed, mesh, rules)
  shardings = mesh_lib.state_shardings(model, abstract, mesh, rules)
  state_in = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, shardings)
  bs = mesh_lib.batch_sharding(mesh, rules)
  batch_in = {
    k: jax.ShapeDtypeStruct(shape, dtype, sharding=bs) for k, (shape, dtype) in batch_spec(b, t, obs, act).items()
  }
  train_step = step_lib.make_train_step(model, tx, schedule, cfg.seed, shardings, bs)
  with jax.set_mesh(mesh):
    compiled = train_step.lower(state_in, batch_in).compile(compiler_options)
  mem = compiled.memory_analysis()
  gib = lambda n: float(n) / GIB  # noqa: E731
  return CompiledStep(
    device_kind=devices[0].device_kind,
    num_devices=len(devices),
    mesh=dict(mesh.shape),
    params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"])),
    batch=b,
    steps=t,
    argument_gib=gib(mem.argument_size_in_bytes),
    output_gib=gib(mem.output_size_in_bytes),
    temp_gib=gib(mem.temp_size_in_bytes),
    alias_gib=gib(mem.alias_size_in_bytes),
    model_tflop=train_step_flops(model.config, b, t, obs, act) / 1e12,
  )
