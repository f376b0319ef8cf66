"""The interface every world model implements (WestWorld and the baselines), so that training,
evaluation and control pick a model by name (registry.py) and never special-case it. This
module imports no model: the models and the registry both import it.

A `WorldModel` is a bundle of pure functions of (params, batch) at the jit boundary:

  init(rng, batch) -> params
  loss(params, batch, rng) -> (scalar loss, {name: scalar metric})   (training mode)
  predict(params, batch) -> pred_btc float32 [B, T, Co]
      pred[:, t] for t >= history is the model's prediction of obs[:, t] from obs[:, :history]
      and all actions act[:, :T] only (never obs[:, history:]);
      pred[:, :history] = obs[:, :history].
      Values are in the normalised [0, 1] space; padded channels/steps are unspecified.
  param_specs(params) -> the logical axes of every parameter: a tree of PartitionSpecs of logical
      axis names, e.g. P("expert", None, None), P() (sharding.replicated_specs: nothing split);
      the rule table (model/sharding.py) maps them to mesh axes for the parameters and their
      optimizer moments alike

and its `Capacity`: the largest window, channel counts and structural / kind indices it takes,
which `WorldModel.check_robot` / `check_fits` check (training's corpus and windows, evaluation and
the control backend all call them) before any index can overrun a table.
Batches follow westworld_jax/model/BATCH_SPEC.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from westworld_jax.errors import UserError

Params = Any
Batch = dict[str, jax.Array]


class CapacityError(UserError, ValueError):
  """What a caller needs exceeds a model's capacity (`model`, `field`, `limit`, `need`)."""

  def __init__(self, message: str, model: str, field: str, limit: int, need: int):
    super().__init__(message)
    self.model, self.field, self.limit, self.need = model, field, limit, need


@dataclasses.dataclass(frozen=True)
class Capacity:
  """The sizes of a model's tables. None: the model has no such limit (it never reads that part
  of the batch). Needs are counts: a window of T steps needs T <= max_window_len, Co observation
  channels Co <= max_obs_channels, a structural index or kind id i needs i + 1 <= the limit."""

  max_window_len: int | None
  max_obs_channels: int | None
  max_act_channels: int | None
  max_objects: int | None  # object ids (obs_struct[..., 0])
  max_bodies: int | None  # pre/in/post-order ranks (obs_struct[..., 1:])
  num_kinds: int | None  # channel-kind ids

  @classmethod
  def fields(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))

  @classmethod
  def of(cls, config: Any, unlimited: Sequence[str] = ()) -> "Capacity":
    """Each limit from the config field of that name, except the `unlimited` ones (None). A
    limit the config lacks, or an unlimited one it has, raises: every model declares each."""
    unknown = sorted(set(unlimited) - set(cls.fields()))
    if unknown:
      raise ValueError(f"unknown capacity fields {unknown}; known: {list(cls.fields())}")
    values = {}
    for name in cls.fields():
      has = hasattr(config, name)
      if name in unlimited and has:
        raise ValueError(f"{type(config).__name__} has {name} but declares it unlimited")
      if name not in unlimited and not has:
        raise ValueError(
          f"{type(config).__name__} has no field {name}: add it, or name it in "
          "Capacity.of(config, unlimited=...) if the model has no such limit"
        )
      values[name] = None if name in unlimited else int(getattr(config, name))
    return cls(**values)

  @classmethod
  def from_fields(cls, config: Any) -> "Capacity":
    """For a WorldModel made without a capacity (a test stub, a reference predictor): each
    limit is the config field of that name, None where the config has none. A `max_*` field
    that is no capacity field raises, so a limit named differently is never skipped."""
    stray = sorted(n for n in dir(config) if n.startswith("max_") and n not in cls.fields())
    if stray:
      raise ValueError(
        f"{type(config).__name__} has {stray}, which are no capacity fields "
        f"({list(cls.fields())}): rename them or pass WorldModel(capacity=...)"
      )
    return cls(**{n: int(getattr(config, n)) if hasattr(config, n) else None for n in cls.fields()})

  def limit(self, field: str) -> int | None:
    if field not in self.fields():
      raise ValueError(f"unknown capacity field {field!r}; known: {list(self.fields())}")
    return getattr(self, field)

  def exceeds(self, field: str, need: int) -> bool:
    """Whether `need` (a count, see the class docstring) is more than the model takes."""
    limit = self.limit(field)
    return limit is not None and need > limit


@dataclasses.dataclass(frozen=True)
class WorldModel:
  name: str
  config: Any  # the model's frozen (hashable) config dataclass; has .history
  init: Callable[[jax.Array, Batch], Params]
  loss: Callable[[Params, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
  predict: Callable[[Params, Batch], jax.Array]
  param_specs: Callable[[Params], Any]
  capacity: Capacity | None = None  # None: Capacity.from_fields(config)

  def __post_init__(self):
    if self.capacity is None:
      object.__setattr__(self, "capacity", Capacity.from_fields(self.config))

  @property
  def history(self) -> int:
    return self.config.history

  def check_fits(self, who: str, hint: str, **need: int) -> None:
    """Raise a CapacityError for the first capacity field (keyword) whose need (a count) exceeds
    this model's limit, e.g. check_fits("windows", "...", max_window_len=T). The message says
    that `who` needs it and ends with `hint` (what to do; "{field}" in it names the field)."""
    for field, n in need.items():
      if self.capacity.exceeds(field, n):
        limit = self.capacity.limit(field)
        raise CapacityError(
          f"{who} needs {field} >= {n} but the {self.name} model has {field}={limit}: " + hint.format(field=field),
          self.name,
          field,
          limit,
          n,
        )

  def check_robot_of(self, robot: Any, who: str, hint: str, **kw: Any) -> None:
    """check_robot for a robots.Robot (its structure and channel kinds); kw: num_obs, num_act, window_len."""
    kw.update(
      obs_struct=robot.obs_struct(),
      act_struct=robot.act_struct(),
      obs_kind=robot.obs_kinds(),
      act_kind=robot.act_kinds(),
    )
    self.check_robot(who, hint, **kw)

  def check_robot(
    self,
    who: str,
    hint: str,
    *,
    obs_struct: Any,
    act_struct: Any,
    obs_kind: Any,
    act_kind: Any,
    num_obs: int | None = None,
    num_act: int | None = None,
    window_len: int | None = None,
  ) -> None:
    """The capacity check of a robot (check_fits over every field): its channel counts (default:
    its own; a caller that pads passes the padded ones), its structural indices ([C, 4] object id
    and body ranks per channel) and channel kinds, and optionally the window length. An index
    past a model's table would read NaN from an embedding, so every caller checks here first."""
    struct = np.concatenate([np.reshape(obs_struct, (-1, 4)), np.reshape(act_struct, (-1, 4))])
    kinds = np.concatenate([np.ravel(obs_kind), np.ravel(act_kind)])
    need = {
      "max_window_len": window_len,
      "max_obs_channels": len(np.ravel(obs_kind)) if num_obs is None else num_obs,
      "max_act_channels": len(np.ravel(act_kind)) if num_act is None else num_act,
      "max_objects": int(struct[:, 0].max(initial=-1)) + 1,
      "max_bodies": int(struct[:, 1:].max(initial=-1)) + 1,
      "num_kinds": int(kinds.max(initial=-1)) + 1,
    }
    self.check_fits(who, hint, **{k: v for k, v in need.items() if v is not None})


def hold_last(batch: Batch, history: int) -> jax.Array:
  """The hold-last reference's prediction: the last history observation repeated over the horizon."""
  obs = batch["obs"].astype(jnp.float32)
  return copy_history(jnp.broadcast_to(obs[:, history - 1 : history], obs.shape), batch, history)


def copy_history(pred_btc: jax.Array, batch: Batch, history: int) -> jax.Array:
  """pred with steps < history replaced by the observed values (the predict() contract)."""
  t = batch["obs"].shape[1]
  seen = (jnp.arange(t) < history)[None, :, None]
  return jnp.where(seen, batch["obs"].astype(jnp.float32), pred_btc)
