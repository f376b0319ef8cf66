"""The jitted train and eval steps (pure functions of state and batch).

train_step: loss and gradients, AdamW update, and a guard: when the loss, the gradient
norm or the updated parameters are not finite the update is discarded (the returned state is the input state) and
`ok` is False, so the host can stop with the last good state and checkpoint intact.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from westworld_jax.model.loss import target_mask
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


def horizon_errors(pred_btc: jax.Array, batch: dict[str, jax.Array], history: int) -> dict[str, jax.Array]:
  """Pooled error sums over valid (window, step >= history, channel) elements, and per step.

  Sums (not means), so batches of any padding pool exactly: mae = sum_abs / count.
  """
  mask_btc = jnp.concatenate(
    [jnp.zeros_like(target_mask(batch, history)[:, :1]), target_mask(batch, history)], axis=1
  ).astype(jnp.float32)
  err = (pred_btc - batch["obs"].astype(jnp.float32)) * mask_btc
  abs_btc, sq_btc = jnp.abs(err), err * err
  return {
    "sum_abs": jnp.sum(abs_btc),
    "sum_sq": jnp.sum(sq_btc),
    "count": jnp.sum(mask_btc),
    # per step (error vs horizon) and per window (per-environment pooling on the host)
    "sum_abs_t": jnp.sum(abs_btc, axis=(0, 2)),
    "sum_sq_t": jnp.sum(sq_btc, axis=(0, 2)),
    "count_t": jnp.sum(mask_btc, axis=(0, 2)),
    "sum_abs_b": jnp.sum(abs_btc, axis=(1, 2)),
    "sum_sq_b": jnp.sum(sq_btc, axis=(1, 2)),
    "count_b": jnp.sum(mask_btc, axis=(1, 2)),
  }


def make_eval_step(model: WorldModel, params_shardings: Any, batch_sharding: Any) -> Callable:
  """(params, batch) -> (pred_btc, error sums): the whole horizon from model.predict."""

  def eval_step(params, batch):
    pred = model.predict(params, batch)
    return pred, horizon_errors(pred, batch, model.history)

  return jax.jit(eval_step, in_shardings=(params_shardings, batch_sharding))
