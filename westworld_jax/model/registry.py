"""World models by name, so that training, evaluation and control pick one from the config and
never special-case it: `build(name, size, rules, **overrides)` makes one, e.g.
`build("westworld", "tiny", moe_mode="topk")`; `names()` lists them. A model is registered by its
line in `BUILDERS` (name -> builder `(size, rules=None, **overrides) -> WorldModel`). `rules` is the
mesh rule table the model runs under (model/sharding.py; None: the default table): a model whose
computation splits over a mesh (WestWorld's expert dispatch) resolves its logical axes through it.

The WorldModel interface (its functions, `Capacity` and the capacity check) is world_model.py,
re-exported here with its helpers; the models import that module, not this one.
"""

from __future__ import annotations

import dataclasses

from typing import Any, Callable

from westworld_jax.model.baselines.mlp_ensemble import build_mlp_ensemble
from westworld_jax.model.baselines.tdm import build_tdm
from westworld_jax.model.baselines.trajworld import build_trajworld
from westworld_jax.model.westworld import build_westworld
from westworld_jax.model.world_model import (
  Batch,
  Capacity,
  CapacityError,
  Params,
  WorldModel,
  copy_history,
)
from westworld_jax.model.sharding import replicated_specs

__all__ = [
  "Batch",
  "Capacity",
  "CapacityError",
  "Params",
  "WorldModel",
  "copy_history",
  "replicated_specs",
  "BUILDERS",
  "names",
  "build",
  "switch_fields",
]

BUILDERS: dict[str, Callable[..., WorldModel]] = {
  "westworld": build_westworld,
  "trajworld": build_trajworld,
  "tdm": build_tdm,
  "mlp_ensemble": build_mlp_ensemble,
}


def names() -> list[str]:
  return sorted(BUILDERS)


def switch_fields(origin: str, name: str, size: str, fields: dict) -> tuple[dict, dict]:
  """Overrides for model `name` from a config holding model `origin`'s fields at `size`: the fields
  changed from origin's defaults that `name` has too (the others at their defaults stay `name`'s own),
  and {field: value} of the changed ones `name` does not have (ignored)."""
  base = dataclasses.asdict(build(origin, size).config)
  own = dataclasses.asdict(build(name, size).config)
  norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
  changed = {k: v for k, v in fields.items() if k not in base or norm(v) != norm(base[k])}
  return {k: v for k, v in changed.items() if k in own}, {k: v for k, v in changed.items() if k not in own}


def build(name: str, size: str = "base", rules: Any = None, **overrides: Any) -> WorldModel:
  """The model `name` at size `size` with config fields overridden, under the rule table `rules`."""
  if name not in BUILDERS:
    raise ValueError(f"unknown model {name!r}; registered: {sorted(BUILDERS)}.")
  return BUILDERS[name](size, rules=rules, **overrides)
