"""replace / to_dict / from_dict for the project's frozen config dataclasses (the models', MPPI's).

A bottom module with no dependencies beyond the standard library: experiment config files import
config dataclasses for their defaults before a command has set up the process (the control CLI pins
the CPU before jax is imported), so what they import must not pull jax in.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping


class ConfigMixin:
  """replace / to_dict / from_dict for frozen config dataclasses (WestWorld's, the baselines',
  MPPI's). `config_label` names the config in errors (default: the class name)."""

  config_label: ClassVar[str] = ""

  def replace(self, **overrides: Any):
    return dataclasses.replace(self, **overrides)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def label(cls) -> str:
    return cls.config_label or cls.__name__

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    d = dict(d)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - fields
    if unknown:
      raise ValueError(f"unknown {cls.label()} keys {sorted(unknown)}; known: {sorted(fields)}")
    for k, v in d.items():  # ConfigDicts give lists; configs must stay hashable
      if isinstance(v, list):
        d[k] = tuple(v)
    return cls(**d)
