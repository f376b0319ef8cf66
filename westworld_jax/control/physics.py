"""Which simulator the oracle and the closed-loop environments step: C MuJoCo or MJX.

`physics` (cfg.physics of experiments/control.py): 'mujoco' (C MuJoCo on the host:
mujoco_backend.MujocoOracle and env.MujocoEnvs), 'mjx' (backends.OracleBackend and env.Envs, one
jitted program on the device) or 'auto': 'mujoco' where JAX runs on a CPU (MJX stepping there is
one to two orders of magnitude slower), 'mjx' on an accelerator. An oracle plans from the state
of environments of its own physics; world-model and random policies run with either.
"""

from __future__ import annotations

import jax

from westworld_jax.control import backends
from westworld_jax.control import env as env_lib
from westworld_jax.control import mujoco_backend
from westworld_jax.control import tasks as tasks_lib

PHYSICS = ("auto", "mujoco", "mjx")


def resolve(physics: str = "auto") -> str:
  """'mujoco' or 'mjx' for a setting in PHYSICS."""
  if physics not in PHYSICS:
    raise ValueError(f"physics '{physics}' unknown: choose one of {PHYSICS}")
  if physics != "auto":
    return physics
  return "mujoco" if jax.default_backend() == "cpu" else "mjx"


def make_oracle(task: tasks_lib.Task, physics: str = "auto") -> backends.OracleBackend:
  """The simulator-oracle backend on `physics`."""
  if resolve(physics) == "mujoco":
    return mujoco_backend.MujocoOracle(task)
  return backends.OracleBackend(task)


def make_envs(task: tasks_lib.Task, history: int = 1, robot_index: int = 0, physics: str = "auto") -> env_lib.Envs:
  """Batched closed-loop environments on `physics`."""
  cls = env_lib.MujocoEnvs if resolve(physics) == "mujoco" else env_lib.Envs
  return cls(task, history=history, robot_index=robot_index)
