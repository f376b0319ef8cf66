"""Config files load one another by path: ml_collections' config_flags loads `experiments/x.py` as a
file, not as a package module, so a config that builds on another one (few_shot on scaling, scaling
on data and pretrain) cannot rely on `import experiments.y` from wherever the command runs."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import types

import ml_collections

from westworld_jax.model import registry


def load_sibling(config_file: str, name: str) -> types.ModuleType:
  """The config module `<name>.py` in the folder of `config_file` (pass `__file__`)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path} not found (needed by {config_file})")
  spec = importlib.util.spec_from_file_location(f"_ww_{name}_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def model_config(name: str, size: str, **overrides) -> ml_collections.ConfigDict:
  """Every field of the model's config (so each is overridable on the command line), plus its registry
  name and size: what a training config's `model` holds. `fields_of` records whose fields these are:
  `--config.model.name=trajworld` on a config of westworld's fields builds trajworld at that size with
  the fields it shares carried over where they were changed (registry.switch_fields)."""
  fields = dataclasses.asdict(registry.build(name, size, **overrides).config)
  fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
  return ml_collections.ConfigDict({"name": name, "size": size, "fields_of": name, **fields})
