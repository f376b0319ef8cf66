"""Train state, optimizer and the sharded initialisation.

The state is a plain dict pytree {"step", "params", "opt_state"}: orbax saves it as is and
restores it onto any mesh. Dropout randomness is fold_in(seed, step), so no RNG is carried
and a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from westworld_jax.model.batch import zeros_batch
from westworld_jax.model.registry import WorldModel
from westworld_jax.training import mesh as mesh_lib


def make_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to lr, then cosine decay to lr * final_lr_fraction at total_steps."""
  warmup = min(int(optim_cfg.warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=optim_cfg.lr,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=optim_cfg.lr * optim_cfg.final_lr_fraction,
  )


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with global-norm clipping (the authors' recipe: lr 2e-4, clip 0.25)."""
  schedule = make_schedule(optim_cfg, total_steps)
  tx = optax.chain(
    optax.clip_by_global_norm(optim_cfg.clip_norm) if optim_cfg.clip_norm else optax.identity(),
    optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay),
  )
  return tx, schedule


def example_batch(model: WorldModel, batch_size: int = 1) -> dict[str, jax.Array]:
  """batch.zeros_batch at the smallest size that fixes parameter shapes (they do not depend on B,
  T or C)."""
  cap, h = model.capacity, model.history
  t = min(h + 1 if cap.max_window_len is None else cap.max_window_len, h + 2)
  co = min(8, 8 if cap.max_obs_channels is None else cap.max_obs_channels)
  ca = min(4, 4 if cap.max_act_channels is None else cap.max_act_channels)
  return zeros_batch(batch_size, t, co, ca)


def init_state(model: WorldModel, tx: optax.GradientTransformation, seed: int, batch_size: int = 1) -> dict[str, Any]:
  """batch_size: the example batch's size; expert-parallel init needs it divisible by the
  number of batch shards."""
  params = model.init(jax.random.key(seed), example_batch(model, batch_size))
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def abstract_state(model: WorldModel, tx: optax.GradientTransformation, seed: int, mesh, rules: Any = None):
  """The state's shapes and dtypes, from an init traced under `mesh` with the rule table `rules`
  (None: the default table; it sets the example batch's size, see init_state)."""
  with jax.set_mesh(mesh):
    return jax.eval_shape(lambda: init_state(model, tx, seed, mesh_lib.batch_shards(mesh, rules)))


def create_sharded_state(model: WorldModel, tx, seed: int, mesh, rules: Any = None) -> tuple[dict, Any]:
  """The state created directly in its sharded layout (jit with out_shardings), so no device
  ever holds a full copy of sharded parameters; returns (state, shardings). `rules`: the rule
  table the model was built with (None: the default table)."""
  shardings = mesh_lib.state_shardings(model, abstract_state(model, tx, seed, mesh, rules), mesh, rules)
  with jax.set_mesh(mesh):
    state = jax.jit(lambda: init_state(model, tx, seed, mesh_lib.batch_shards(mesh, rules)), out_shardings=shardings)()
  return state, shardings


def param_count(state) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state["params"])))
