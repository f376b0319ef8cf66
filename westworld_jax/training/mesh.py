"""Device mesh from the config, and the shardings training derives from the mesh rule table.

Mesh axes are ('data', 'expert'). A size of -1 means "all remaining devices", so the same
config runs on 1 CPU, 8 GPUs or a pod slice. Every sharding comes from logical axes through the
config's rule table (cfg.mesh.rules, model/sharding.py; by default the batch over data x expert,
the expert axis doubling as data parallelism outside the MoE, and expert weights over 'expert'):
the batch's leading axis is the logical 'batch' axis, a parameter's axes are what its model's
param_specs declare, and the optimizer state follows the parameters.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from westworld_jax.errors import ConfigError
from westworld_jax.model import sharding
from westworld_jax.model.world_model import WorldModel

MESH_AXES = ("data", "expert")


def config_rules(mesh_cfg) -> sharding.Rules:
  """The rule table of a config's `mesh` (sharding.DEFAULT_RULES when it has none)."""
  return sharding.as_rules(None if mesh_cfg is None else mesh_cfg.get("rules"))


def resolve_axis_sizes(sizes: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one -1 by the devices left over; checks that the product is the device count."""
  sizes = [int(s) for s in sizes]
  if sizes.count(-1) > 1:
    raise ConfigError(f"mesh sizes {sizes}: at most one axis may be -1 (all remaining devices)")
  if any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(f"mesh sizes {sizes}: each must be a positive integer or -1")
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % fixed:
      raise ConfigError(
        f"mesh sizes {sizes} need a multiple of {fixed} devices; there are {num_devices}. "
        "Set --config.mesh.expert (or data) to a divisor of the device count."
      )
    sizes[sizes.index(-1)] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ConfigError(
      f"mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices but "
      f"{num_devices} are present: use -1 for one axis to take the rest."
    )
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh ('data', 'expert') with Auto axis types (so data-parallel gradients need no
  explicit out_shardings)."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = resolve_axis_sizes((mesh_cfg.data, mesh_cfg.expert), len(devices))
  return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def batch_sharding(mesh: Mesh, rules: Any = None) -> NamedSharding:
  """Leading (batch) axis over the mesh axes of the logical 'batch' axis; every batch array has the
  batch first. rules None: sharding.DEFAULT_RULES."""
  return NamedSharding(mesh, sharding.to_mesh(P(sharding.BATCH), rules))


def batch_shards(mesh: Mesh, rules: Any = None) -> int:
  """How many pieces batch_sharding splits the batch into."""
  return math.prod(mesh.shape[a] for a in jax.tree.leaves(sharding.mesh_axes(rules, sharding.BATCH)))


def state_specs(state: Any, param_specs: Any) -> Any:
  """Mesh PartitionSpecs of a train state: every subtree shaped like state["params"] (the params,
  and the optimizer's moments, which optax keeps as param-shaped subtrees) takes `param_specs`;
  every other leaf (step, counts) is replicated."""
  params_def = jax.tree.structure(state["params"])

  def is_params(node):
    return jax.tree.structure(node) == params_def

  return jax.tree.map(lambda node: param_specs if is_params(node) else P(), state, is_leaf=is_params)


def state_shardings(model: WorldModel, state: Any, mesh: Mesh, rules: Any = None) -> Any:
  """NamedShardings of a train state (or its abstract shapes): the model's logical param_specs
  through the rule table `rules` (None: sharding.DEFAULT_RULES)."""
  specs = state_specs(state, sharding.to_mesh(model.param_specs(state["params"]), rules))
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))
