"""One interface for every world model (WestWorld and the baselines), so that training,
evaluation and control pick a model by name from the config and never special-case it.

A `WorldModel` is a bundle of pure functions of (params, batch) at the jit boundary:

  init(rng, batch) -> params
  loss(params, batch, rng) -> (scalar loss, {name: scalar metric})   (training mode)
  predict(params, batch) -> pred_btc float32 [B, T, Co]
      pred[:, t] for t >= history is the model's prediction of obs[:, t] from obs[:, :history]
      and all actions act[:, :T] only (never obs[:, history:]); pred[:, :history] = obs[:, :history].
      Values are in the normalised [0, 1] space; padded channels/steps are unspecified.
  param_specs(params) -> PartitionSpec tree (experts over the 'expert' mesh axis, rest replicated)

Batches follow westworld_jax/model/BATCH_SPEC.md. Models register a builder with
`@register("name")`; `build(name, size, **overrides)` makes one, e.g.
`build("westworld", "tiny", moe_mode="topk")`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from westworld_jax.model.configs import ModelConfig, get_model_config
from westworld_jax.model.loss import next_step_loss
from westworld_jax.model.moe import expert_param_specs
from westworld_jax.model.tokenizer import expectation
from westworld_jax.model.westworld import WestWorld

Params = Any
Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class WorldModel:
  name: str
  config: Any  # the model's frozen (hashable) config dataclass; has .history
  init: Callable[[jax.Array, Batch], Params]
  loss: Callable[[Params, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
  predict: Callable[[Params, Batch], jax.Array]
  param_specs: Callable[[Params], Any]

  @property
  def history(self) -> int:
    return self.config.history


_BUILDERS: dict[str, Callable[..., WorldModel]] = {}


def register(name: str):
  """Decorator: `@register("tdm") def build_tdm(size, **overrides) -> WorldModel`."""
  def wrap(fn):
    _BUILDERS[name] = fn
    return fn
  return wrap


def names() -> list[str]:
  _import_builtin()
  return sorted(_BUILDERS)


def build(name: str, size: str = "base", **overrides: Any) -> WorldModel:
  """The model `name` at size `size` with config fields overridden."""
  _import_builtin()
  if name not in _BUILDERS:
    raise ValueError(f"unknown model {name!r}; registered: {sorted(_BUILDERS)}.")
  return _BUILDERS[name](size, **overrides)


def _import_builtin() -> None:
  """Baselines register themselves on import; import them lazily (they import this module)."""
  import importlib
  for mod in ("trajworld", "tdm", "mlp_ensemble"):
    try:
      importlib.import_module(f"westworld_jax.model.{mod}")
    except ModuleNotFoundError as e:  # a baseline not written yet must not break the others
      if e.name != f"westworld_jax.model.{mod}":
        raise


def replicated_specs(params: Params) -> Any:
  return jax.tree.map(lambda _: P(), params)


def copy_history(pred_btc: jax.Array, batch: Batch, history: int) -> jax.Array:
  """pred with steps < history replaced by the observed values (the predict() contract)."""
  t = batch["obs"].shape[1]
  seen = (jnp.arange(t) < history)[None, :, None]
  return jnp.where(seen, batch["obs"].astype(jnp.float32), pred_btc)


# ----------------------------------------------------------------------------- WestWorld

def westworld_model(config: ModelConfig) -> WorldModel:
  module = WestWorld(config)

  def init(rng, batch):
    return module.init({"params": rng}, batch)["params"]

  def loss(params, batch, rng):
    out = module.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
    nll = next_step_loss(out["logits"], batch, first_target_step=config.first_target_step)
    return nll + out["aux_loss"], {"nll": nll, "aux_loss": out["aux_loss"]}

  def predict(params, batch):
    logits = module.apply({"params": params}, batch)["logits"]
    # logits[:, t] predicts obs[:, t + 1].
    pred = jnp.concatenate([batch["obs"][:, :1].astype(jnp.float32),
                            expectation(logits[:, :-1])], axis=1)
    return copy_history(pred, batch, config.history)

  specs = expert_param_specs if config.expert_axis else replicated_specs
  return WorldModel("westworld", config, init, loss, predict, specs)


@register("westworld")
def build_westworld(size: str = "base", **overrides: Any) -> WorldModel:
  return westworld_model(get_model_config(size, **overrides))
