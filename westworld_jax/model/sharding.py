"""Logical axes and the rule table: the one description of how parameters and batches are sharded.

A model names the dimensions of its parameters with logical axes: its WorldModel's
`param_specs(params)` gives, per parameter, a PartitionSpec of logical axis names, one per
dimension (None: that dimension is never split), e.g. P("expert", None, None) for a weight whose
leading axis indexes experts, P() for a replicated one. A rule table maps each logical axis to mesh
axes (a mesh axis name, a tuple of them, or None: replicated). The training config holds the table
as cfg.mesh.rules (DEFAULT_RULES when a config has none); the batch sharding, training's state
shardings and WestWorld's expert dispatch all resolve their logical axes through it, and a table
that maps every axis to None (`replicated`) runs a model unsharded on one device.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
from jax.sharding import PartitionSpec as P

from westworld_jax.errors import UserError

BATCH = "batch"  # the leading axis of every batch array
EXPERT = "expert"  # the leading [E] axis of expert weights

# The batch over data x expert (the expert axis doubles as data parallelism outside the MoE),
# expert weights over 'expert'.
DEFAULT_RULES: dict[str, Any] = {BATCH: ("data", "expert"), EXPERT: "expert"}


class ShardingRuleError(UserError, ValueError):
  """A rule table that cannot place a logical axis; the message says which rule to add or change."""


# A rule table in hashable form (a flax module field): ((logical axis, mesh axes), ...).
Rules = tuple[tuple[str, Any], ...]


def _mesh_axes(value: Any) -> Any:
  """None, one mesh axis name, or a tuple of two or more (JSON gives lists; one name stands alone)."""
  if value is None or isinstance(value, str):
    return value
  axes = tuple(str(a) for a in value)
  return None if not axes else axes[0] if len(axes) == 1 else axes


def as_rules(table: Mapping[str, Any] | Rules | None = None) -> Rules:
  """A rule table (a mapping, a ConfigDict, or Rules) in hashable form; None: DEFAULT_RULES."""
  table = DEFAULT_RULES if table is None else table
  items = table.items() if hasattr(table, "items") else table
  return tuple((str(name), _mesh_axes(axes)) for name, axes in items)


def replicated(rules: Mapping[str, Any] | Rules | None = None) -> Rules:
  """The table with every logical axis of `rules` mapped to None: everything on every device."""
  return tuple((name, None) for name, _ in as_rules(rules))


def mesh_axes(rules: Mapping[str, Any] | Rules | None, logical: str) -> Any:
  """The mesh axes of one logical axis (None: not split); a name the table lacks raises."""
  table = dict(as_rules(rules))
  if logical not in table:
    raise ShardingRuleError(
      f"logical axis {logical!r} has no rule in the mesh rule table {table} (cfg.mesh.rules): add one, "
      "e.g. --config.mesh.rules.<axis>=<mesh axis>"
    )
  return table[logical]


def to_mesh(specs: Any, rules: Mapping[str, Any] | Rules | None) -> Any:
  """Mesh PartitionSpecs for a tree of logical ones. Trailing unsplit dimensions are dropped
  (P('expert'), not P('expert', None, None)), so equal layouts compare equal."""
  rules = as_rules(rules)

  def one(spec: P) -> P:
    axes = [None if name is None else mesh_axes(rules, name) for name in spec]
    while axes and axes[-1] is None:
      axes.pop()
    return P(*axes)

  return jax.tree.map(one, specs, is_leaf=lambda x: isinstance(x, P))


def replicated_specs(params: Any) -> Any:
  """Logical specs of a model none of whose parameters is split: P() for every leaf."""
  return jax.tree.map(lambda _: P(), params)


def leading_axis_spec(leaf: Any, logical: str | None) -> P:
  """P(logical, None, ...) over a leaf's dimensions: its leading axis on `logical`."""
  return P(logical, *(None,) * (len(leaf.shape) - 1))
