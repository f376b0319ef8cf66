"""Sys-MoE: expert MLPs gated by a system embedding, dense or sparse, optionally expert-parallel.

Routing works on *routing units*: groups of tokens that share one gate, given as
x_gld (G units, L tokens each, D features) with one system embedding per unit, sys_gd.
The model picks the units: a channel's whole time sequence (faithful, gate from a CLS
token), a whole sample (robot ablation) or a single token (causal).

Routing is separate from dispatch (as in maxtext): `Router` returns
(top_k_indices, weights) plus its logits and probabilities, and two dispatch paths use it:
  * dense (upstream default): softmax over all E experts, every expert runs on every
    unit, output = weighted sum;
  * topk: each unit goes to its k best experts, at most `capacity` units per expert
    (overflow units are dropped and get zero expert output; the residual carries them).
    Switch/GShard load-balancing loss over the whole batch plus an optional z-loss.
Either path runs unsharded, or expert-parallel: expert weights sharded over the mesh
axis `expert_axis`, units sharded over `token_axes` (batch-major, outside the MoE), and
jax.shard_map moves units to their experts and back with all_to_all.

Sharding of the parameters: `param_specs` gives the logical axes of every SysMoE's parameters in a
params tree (model/sharding.py): the leading [E] axis of the expert weights on a logical axis,
which the rule table maps to the mesh axes the dispatch runs over.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from westworld_jax.model import sharding
from westworld_jax.model.configs import ModelConfig

# SysMoE's parameters with a leading [E] (experts) axis; its router's are replicated.
EXPERT_PARAMS = ("expert_w_in", "expert_b_in", "expert_w_out", "expert_b_out")


class RouterOutput(NamedTuple):
  top_k_indices: jax.Array  # int32 [G, k], best first
  weights: jax.Array  # float32 [G, k], gate weight of each chosen expert
  logits: jax.Array  # float32 [G, E]
  probs: jax.Array  # float32 [G, E], softmax(logits)


class Router(nn.Module):
  """Linear router in float32; shared by the dense and top-k paths.

  Weights: dense (k = E) = softmax over all experts; top-k with k > 1 renormalises the
  chosen probabilities to sum to one (Mixtral); k = 1 keeps the raw probability so the
  router still gets a gradient from the main loss (Switch).
  """

  num_experts: int
  top_k: int
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, sys_gd: jax.Array) -> RouterOutput:
    logits_ge = nn.Dense(self.num_experts, dtype=jnp.float32, param_dtype=self.param_dtype, name="gate")(
      sys_gd.astype(jnp.float32)
    )
    probs_ge = jax.nn.softmax(logits_ge, axis=-1)
    weights_gk, indices_gk = jax.lax.top_k(probs_ge, self.top_k)
    if 1 < self.top_k:
      weights_gk = weights_gk / jnp.sum(weights_gk, axis=-1, keepdims=True)
    return RouterOutput(indices_gk.astype(jnp.int32), weights_gk, logits_ge, probs_ge)


# ----------------------------------------------------------------------------- losses


def load_balancing_loss(
  probs_ge: jax.Array, top_k_indices_gk: jax.Array, valid_g: jax.Array | None = None
) -> jax.Array:
  """Switch-Transformer balance loss E * sum_e f_e * P_e over ALL units of the batch.

  f_e: fraction of (unit, choice) assignments that go to expert e; P_e: mean router
  probability of e; both averaged over valid units of the whole batch (under jit with a
  sharded batch these are global means, not per-shard or per-sequence ones). Equals 1
  when routing is balanced (e.g. a uniform router), E when everything goes to one expert.
  """
  num_experts = probs_ge.shape[-1]
  valid_g = jnp.ones(probs_ge.shape[:1], bool) if valid_g is None else valid_g
  w_g = valid_g.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(w_g), 1.0)
  assign_ge = jnp.sum(jax.nn.one_hot(top_k_indices_gk, num_experts), axis=1)  # [G, E]
  f_e = jnp.sum(assign_ge * w_g[:, None], axis=0) / (n * top_k_indices_gk.shape[-1])
  p_e = jnp.sum(probs_ge * w_g[:, None], axis=0) / n
  return num_experts * jnp.sum(f_e * p_e)


def router_z_loss(logits_ge: jax.Array, valid_g: jax.Array | None = None) -> jax.Array:
  """ST-MoE z-loss: mean over valid units of logsumexp(logits)^2 (keeps logits small)."""
  z_g = jax.nn.logsumexp(logits_ge, axis=-1) ** 2
  if valid_g is None:
    return jnp.mean(z_g)
  w_g = valid_g.astype(jnp.float32)
  return jnp.sum(z_g * w_g) / jnp.maximum(jnp.sum(w_g), 1.0)


# ----------------------------------------------------------------------------- dispatch


def expert_capacity(num_units: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
  """Units each expert accepts: ceil(capacity_factor * k * G / E), at least 1, at most G."""
  return max(1, min(num_units, math.ceil(capacity_factor * top_k * num_units / num_experts)))


def dense_gate_weights(router: RouterOutput, num_experts: int) -> jax.Array:
  """[G, E] gate weight of every expert (zero for experts not among the top k)."""
  return jnp.sum(jax.nn.one_hot(router.top_k_indices, num_experts) * router.weights[..., None], axis=1)


def topk_dispatch(
  top_k_indices_gk: jax.Array, weights_gk: jax.Array, valid_g: jax.Array, num_experts: int, capacity: int
) -> tuple[jax.Array, jax.Array]:
  """GShard-style dispatch: (dispatch_gec one-hot, combine_gec weights).

  Slots are given by priority: every unit's first choice before any second choice, and
  within a choice in unit order. Invalid (padding) units take no slot.
  """
  g, k = top_k_indices_gk.shape
  valid = valid_g.astype(jnp.int32)
  used_e = jnp.zeros((num_experts,), jnp.int32)
  dispatch_gec = jnp.zeros((g, num_experts, capacity), jnp.float32)
  combine_gec = jnp.zeros((g, num_experts, capacity), jnp.float32)
  for j in range(k):  # k is small and static
    choice_ge = jax.nn.one_hot(top_k_indices_gk[:, j], num_experts, dtype=jnp.int32)
    choice_ge = choice_ge * valid[:, None]
    slot_ge = jnp.cumsum(choice_ge, axis=0) - 1 + used_e[None, :]
    used_e = used_e + jnp.sum(choice_ge, axis=0)
    kept_ge = choice_ge * (slot_ge < capacity)
    slot_gec = jax.nn.one_hot(jnp.where(kept_ge > 0, slot_ge, -1), capacity)  # -1 -> zeros
    dispatch_gec = dispatch_gec + slot_gec
    combine_gec = combine_gec + slot_gec * weights_gk[:, j, None, None]
  return dispatch_gec, combine_gec


def expert_mlp(params: dict[str, jax.Array], x_egld: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """Apply expert e's MLP (D -> F -> D, GELU) to x_egld[e]: [E, G, L, D] -> [E, G, L, D]."""
  x = x_egld.astype(dtype)
  h = jnp.einsum("egld,edf->eglf", x, params["expert_w_in"].astype(dtype))
  h = jax.nn.gelu(h + params["expert_b_in"].astype(dtype)[:, None, None, :])
  y = jnp.einsum("eglf,efd->egld", h, params["expert_w_out"].astype(dtype))
  return y + params["expert_b_out"].astype(dtype)[:, None, None, :]


def _dense_moe(params, x_gld, gate_ge, dtype, expert_axis=None):
  """All experts on all units, weighted sum. With expert_axis: runs inside shard_map."""
  num_experts = gate_ge.shape[-1]
  x_egld = jnp.broadcast_to(x_gld[None], (num_experts,) + x_gld.shape)
  if expert_axis is not None:  # [E, G_loc, ...] -> [E_loc, n_ep * G_loc, ...] and back
    x_egld = jax.lax.all_to_all(x_egld, expert_axis, 0, 1, tiled=True)
  y_egld = expert_mlp(params, x_egld, dtype)
  if expert_axis is not None:
    y_egld = jax.lax.all_to_all(y_egld, expert_axis, 1, 0, tiled=True)
  return jnp.einsum("egld,ge->gld", y_egld.astype(jnp.float32), gate_ge)


def _topk_moe(params, x_gld, indices_gk, weights_gk, valid_g, capacity_factor, dtype, expert_axis=None):
  """Capacity-limited top-k dispatch (capacity counted over the local units)."""
  num_units = x_gld.shape[0]
  num_experts = (
    params["expert_w_in"].shape[0]
    if expert_axis is None
    else params["expert_w_in"].shape[0] * jax.lax.axis_size(expert_axis)
  )
  capacity = expert_capacity(num_units, num_experts, indices_gk.shape[-1], capacity_factor)
  dispatch_gec, combine_gec = topk_dispatch(indices_gk, weights_gk, valid_g, num_experts, capacity)
  x_ecld = jnp.einsum("gec,gld->ecld", dispatch_gec.astype(dtype), x_gld.astype(dtype))
  if expert_axis is not None:  # [E, C, ...] -> [E_loc, n_ep * C, ...] and back
    x_ecld = jax.lax.all_to_all(x_ecld, expert_axis, 0, 1, tiled=True)
  y_ecld = expert_mlp(params, x_ecld, dtype)
  if expert_axis is not None:
    y_ecld = jax.lax.all_to_all(y_ecld, expert_axis, 1, 0, tiled=True)
  return jnp.einsum("gec,ecld->gld", combine_gec, y_ecld.astype(jnp.float32))


def param_specs(params: Any, expert_axis: str | None) -> Any:
  """Logical PartitionSpecs for a params tree that holds SysMoE parameters (a bare SysMoE's
  variables, a whole model's params): the leading [E] axis of each SysMoE's expert weights on the
  logical axis `expert_axis`, everything else unsplit; None: every parameter unsplit."""

  def is_moe(node):
    return isinstance(node, Mapping) and all(name in node for name in EXPERT_PARAMS)

  def moe_specs(node):
    if not is_moe(node):
      return P()  # a leaf outside any SysMoE
    return jax.tree_util.tree_map_with_path(
      lambda path, leaf: sharding.leading_axis_spec(leaf, expert_axis) if path[0].key in EXPERT_PARAMS else P(), node
    )

  if expert_axis is None:
    return sharding.replicated_specs(params)
  return jax.tree.map(moe_specs, params, is_leaf=is_moe)


def expert_param_specs(
  params: Any, expert_axis: str = sharding.EXPERT, rules: Mapping[str, Any] | sharding.Rules | None = None
) -> Any:
  """Mesh PartitionSpecs of `param_specs(params, expert_axis)` through the rule table `rules`
  (None: sharding.DEFAULT_RULES): where a bare SysMoE's or a model's parameters go on a mesh."""
  return sharding.to_mesh(param_specs(params, expert_axis), rules)


class SysMoE(nn.Module):
  """E expert MLPs applied to every token of a routing unit, mixed by the unit's gate.

  __call__(x_gld, sys_gd, valid_g) -> (y_gld float32, aux_loss scalar).
  """

  d_model: int
  d_expert: int
  num_experts: int
  mode: str = "dense"  # "dense" | "topk"
  top_k: int = 1
  capacity_factor: float = 1.25
  lb_loss_coef: float = 1e-2
  z_loss_coef: float = 0.0
  expert_axis: str | None = None  # the mesh axis the experts are split over; None: unsharded
  token_axes: tuple[str, ...] = ModelConfig.token_axes
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x_gld: jax.Array, sys_gd: jax.Array, valid_g: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array]:
    e, d, f = self.num_experts, self.d_model, self.d_expert
    valid_g = jnp.ones(x_gld.shape[:1], bool) if valid_g is None else valid_g
    k = e if self.mode == "dense" else self.top_k
    router = Router(e, k, self.param_dtype, name="router")(sys_gd)

    init_in = nn.initializers.variance_scaling(
      1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,)
    )
    params = {  # EXPERT_PARAMS
      "expert_w_in": self.param("expert_w_in", init_in, (e, d, f), self.param_dtype),
      "expert_b_in": self.param("expert_b_in", nn.initializers.zeros, (e, f), self.param_dtype),
      "expert_w_out": self.param("expert_w_out", init_in, (e, f, d), self.param_dtype),
      "expert_b_out": self.param("expert_b_out", nn.initializers.zeros, (e, d), self.param_dtype),
    }

    aux = jnp.zeros((), jnp.float32)
    if self.mode == "topk" and self.lb_loss_coef:
      aux += self.lb_loss_coef * load_balancing_loss(router.probs, router.top_k_indices, valid_g)
    if self.z_loss_coef:
      aux += self.z_loss_coef * router_z_loss(router.logits, valid_g)

    if self.mode == "dense":
      gate_ge = dense_gate_weights(router, e)
      fn = lambda p, x, g: _dense_moe(p, x, g, self.dtype, self.expert_axis)
      args = (params, x_gld, gate_ge)
    else:
      fn = lambda p, x, i, w, v: _topk_moe(p, x, i, w, v, self.capacity_factor, self.dtype, self.expert_axis)
      args = (params, x_gld, router.top_k_indices, router.weights, valid_g)

    if self.expert_axis is None:
      return fn(*args), aux
    return self._expert_parallel(fn, args), aux

  def _expert_parallel(self, fn, args):
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or self.expert_axis not in mesh.axis_names:
      raise ValueError(
        f"SysMoE(expert_axis={self.expert_axis!r}) needs a mesh with that axis: call "
        "the model inside `with jax.set_mesh(mesh):` (e.g. jax.make_mesh((2, 4), "
        f"('data', {self.expert_axis!r}), axis_types=(AxisType.Auto,) * 2)), or set expert_axis=None."
      )
    n_ep = mesh.shape[self.expert_axis]
    if self.num_experts % n_ep:
      raise ValueError(
        f"num_experts={self.num_experts} is not divisible by the '{self.expert_axis}' mesh axis size {n_ep}."
      )
    unit_axes = tuple(a for a in self.token_axes if a in mesh.axis_names)
    if self.expert_axis not in unit_axes:
      unit_axes += (self.expert_axis,)
    n_units = math.prod(mesh.shape[a] for a in unit_axes)
    if args[1].shape[0] % n_units:
      raise ValueError(
        f"{args[1].shape[0]} routing units cannot be split over mesh axes "
        f"{unit_axes} ({n_units} shards): make the batch divisible."
      )
    unit_spec = P(unit_axes)
    expert_specs = {name: P(self.expert_axis) for name in args[0]}
    in_specs = (expert_specs,) + (unit_spec,) * (len(args) - 1)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=unit_spec)(*args)
