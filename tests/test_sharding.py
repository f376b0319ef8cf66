"""Logical axes and the mesh rule table (westworld_jax/model/sharding.py) and the train-state
shardings derived from them (training/mesh.py)."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from jax.sharding import PartitionSpec as P

from westworld_jax.model import registry, sharding
from westworld_jax.model.westworld import expert_mesh_axis_of
from westworld_jax.model.world_model import WorldModel
from westworld_jax.training import mesh as mesh_lib, state as state_lib

OPTIM = dict(
  lr=1e-3, warmup_steps=0, final_lr_fraction=1.0, clip_norm=1.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0
)


def _adamw():
  return state_lib.make_optimizer(ml_collections.ConfigDict(OPTIM), 10)[0]


def _one_device_mesh():
  return mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=1, expert=1)), jax.devices()[:1])


def test_rule_table_maps_logical_specs_to_mesh_specs():
  rules = sharding.as_rules({"batch": ["data", "expert"], "expert": ["expert"], "none": None})
  assert dict(rules) == {"batch": ("data", "expert"), "expert": "expert", "none": None}
  specs = {"w": P("expert", None, None), "b": P(None, "expert"), "r": P(), "n": P("none", None)}
  assert sharding.to_mesh(specs, rules) == {"w": P("expert"), "b": P(None, "expert"), "r": P(), "n": P()}
  assert sharding.to_mesh(P("batch"), None) == P(("data", "expert"))
  assert sharding.to_mesh(specs, sharding.replicated(rules)) == {k: P() for k in specs}
  with pytest.raises(ValueError, match="'embed' has no rule"):
    sharding.to_mesh(P("embed"), rules)


def test_optimizer_moments_follow_the_params_by_structure_not_by_name():
  params = {"w": jnp.zeros((4, 3)), "v": jnp.zeros((3,))}
  model = WorldModel(
    "stub", ml_collections.ConfigDict(dict(history=1)), None, None, None, lambda p: {"w": P("expert"), "v": P()}
  )
  tx = _adamw()
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  mesh = _one_device_mesh()
  specs = jax.tree.map(lambda s: s.spec, mesh_lib.state_shardings(model, state, mesh))
  flat = {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_flatten_with_path(specs)[0]}
  split = sorted(k for k, s in flat.items() if s != P())
  assert split == sorted(k for k in flat if k.endswith("['w']")) and len(split) == 3  # params, mu, nu
  assert all(flat[k] == P("expert") for k in split)


@pytest.mark.timeout(120)
def test_expert_axis_follows_the_rule_table():
  """A table that puts the experts on 'data' moves both their weights and the dispatch there (the
  abstract init traces the dispatch under the mesh)."""
  rules = sharding.as_rules({"batch": ("data", "expert"), "expert": "data"})
  model = registry.build("westworld", "tiny", rules, expert_axis="expert", num_experts=2)
  mesh = _one_device_mesh()
  tx = _adamw()
  abstract = state_lib.abstract_state(model, tx, 0, mesh, rules)
  shardings = mesh_lib.state_shardings(model, abstract, mesh, rules)
  assert shardings["params"]["block_0"]["moe"]["expert_w_in"].spec == P("data")
  assert shardings["params"]["block_0"]["moe"]["router"]["gate"]["kernel"].spec == P()
  assert expert_mesh_axis_of(model.config, rules) == "data"
  assert expert_mesh_axis_of(model.config, sharding.replicated(rules)) is None
  with pytest.raises(ValueError, match="one mesh axis"):
    registry.build("westworld", "tiny", {"batch": None, "expert": ("data", "expert")}, expert_axis="expert")
