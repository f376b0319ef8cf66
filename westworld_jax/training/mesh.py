"""Device mesh from the config and the one table that maps logical axes onto it.

Mesh axes are ('data', 'expert'). A size of -1 means "all remaining devices", so the same
config runs on 1 CPU, 8 GPUs or a pod slice. Every sharding in training derives from
LOGICAL_RULES: the batch is split over data x expert (the expert axis doubles as data
parallelism outside the MoE), expert weights over 'expert', everything else replicated.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "expert")

# logical axis -> mesh axes (None = replicated). The only place this mapping is written.
LOGICAL_RULES: dict[str, Any] = {
  "batch": ("data", "expert"),
  "expert": "expert",
}
EXPERT_PARAM_PREFIX = "expert_"  # params (and their optimizer moments) with a leading [E] axis


def resolve_axis_sizes(sizes: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one -1 by the devices left over; checks that the product is the device count."""
  sizes = [int(s) for s in sizes]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh sizes {sizes}: at most one axis may be -1 (all remaining devices)")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh sizes {sizes}: each must be a positive integer or -1")
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % fixed:
      raise ValueError(
        f"mesh sizes {sizes} need a multiple of {fixed} devices; there are {num_devices}. "
        "Set --config.mesh.expert (or data) to a divisor of the device count."
      )
    sizes[sizes.index(-1)] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f"mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices but "
      f"{num_devices} are present: use -1 for one axis to take the rest."
    )
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh ('data', 'expert') with Auto axis types (so data-parallel gradients need no
  explicit out_shardings; see DESIGN.md)."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = resolve_axis_sizes((mesh_cfg.data, mesh_cfg.expert), len(devices))
  return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_spec(*logical_axes: str | None) -> P:
  return P(*(LOGICAL_RULES.get(a) if a else None for a in logical_axes))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis over data x expert; every batch array has the batch first."""
  return NamedSharding(mesh, logical_spec("batch"))


def batch_shards(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in jax.tree.leaves(LOGICAL_RULES["batch"]))


def state_specs(state: Any, expert_parallel: bool) -> Any:
  """PartitionSpec for every leaf of a train state (params and optimizer moments alike:
  a moment leaf carries its parameter's name as the last key of its path)."""

  def spec(path, leaf):
    name = str(getattr(path[-1], "key", path[-1])) if path else ""
    if expert_parallel and name.startswith(EXPERT_PARAM_PREFIX) and getattr(leaf, "ndim", 0) >= 1:
      return logical_spec("expert")
    return P()

  return jax.tree_util.tree_map_with_path(spec, state)


def state_shardings(state: Any, mesh: Mesh, expert_parallel: bool) -> Any:
  return jax.tree.map(
    lambda s: NamedSharding(mesh, s), state_specs(state, expert_parallel), is_leaf=lambda x: isinstance(x, P)
  )
