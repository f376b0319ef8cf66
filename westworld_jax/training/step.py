"""The jitted train and eval steps (pure functions of state and batch); the eval step serves
training's validation and evaluation alike, through eval_runner.py.

train_step: loss and gradients, AdamW update, and a guard: when the loss, the gradient
norm or the updated parameters are not finite the update is discarded (the returned state is the input state) and
`ok` is False, so the host can stop with the last good state and checkpoint intact.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from westworld_jax.model.metrics import horizon_errors
from westworld_jax.model.registry import WorldModel


def make_train_step(
  model: WorldModel,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  seed: int,
  state_shardings: Any,
  batch_sharding: Any,
) -> Callable:
  def train_step(state, batch):
    rng = jax.random.fold_in(jax.random.key(seed), state["step"])
    (loss, aux), grads = jax.value_and_grad(model.loss, has_aux=True)(state["params"], batch, rng)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(new["params"]))
    new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
    metrics = {**aux, "loss": loss, "grad_norm": grad_norm, "ok": ok, "lr": schedule(state["step"])}
    return new, metrics

  return jax.jit(
    train_step, in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, None), donate_argnums=0
  )


def make_eval_step(model: WorldModel, params_shardings: Any = None, batch_sharding: Any = None) -> Callable:
  """(params, batch) -> (pred_btc, metrics.horizon_errors): the whole horizon from model.predict.

  Training's validation passes the mesh's shardings; evaluation (one device) passes none.
  """

  def eval_step(params, batch):
    pred = model.predict(params, batch)
    return pred, horizon_errors(pred, batch, model.history)

  if params_shardings is None and batch_sharding is None:
    return jax.jit(eval_step)
  # Replicated results: every process can read them (a batch-sharded result would span devices of
  # other processes in a multi-host run; the per-window sums are small).
  replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())
  return jax.jit(eval_step, in_shardings=(params_shardings, batch_sharding), out_shardings=replicated)
