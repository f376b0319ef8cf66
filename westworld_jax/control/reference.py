"""The paper protocol's reference-tracking cost: one expert episode the planner is pulled toward.

A reference episode is an npz file with
  qpos     [T, nq]  the states before each action (D4RL's `observations` convention),
  qvel     [T, nv]  (or, instead of both, `x_ref` / `x_ref_full` [T, nq + nv] = [qpos, qvel], the
                     authors' export of a D4RL episode),
  actions  [T', nu] actuator units (for gym's Hopper and Walker2d the same as gym's [-1, 1]),
  rewards  [T]      optional, gym's per-step reward (reported, not used).
`load` turns it into a `Reference` on the task robot's observation channels: the weighted squared
distance sum_i w_i (obs_i - ref_i[phase])^2, with weights per qpos and per qvel entry mapped onto
the channels (positions the robot does not observe, as the root x of Hopper and Walker2d, are not
tracked). The phase is the episode step (control/backends.observation_costs); past the
reference's end it wraps around ('wrap', the authors' Hopper) or holds the last row ('hold',
their Walker2d). The expert's action statistics (`actions`) start and extend the plan
(mppi.ExpertActions). The default reference is an episode of the robot's own PPO expert
(control/expert.py).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from westworld_jax.control import tasks as tasks_lib
from westworld_jax.errors import UserError

PHASES = ("wrap", "hold")


class ReferenceError(UserError, ValueError):
  """A reference episode that is missing or does not fit the task's robot."""


@dataclasses.dataclass(frozen=True, eq=False)
class Reference:
  obs: np.ndarray  # [T, num_obs] float32: the reference states as the robot's observation channels
  weights: np.ndarray  # [num_obs] float32
  actions: np.ndarray  # [T', nu] float32, actuator units
  phase: str = "wrap"  # past the end: 'wrap' (modulo T) or 'hold' (the last row)
  source: str = ""

  def cost(self, obs: jax.Array, phase: jax.Array) -> jax.Array:
    """Tracking cost of observation obs [num_obs] at episode step `phase` (jittable)."""
    n = self.obs.shape[0]
    i = phase % n if self.phase == "wrap" else jnp.minimum(phase, n - 1)
    d = obs - jnp.asarray(self.obs)[i]
    return jnp.sum(jnp.asarray(self.weights) * d * d)

  def describe(self) -> dict:
    return {
      "source": self.source,
      "steps": int(self.obs.shape[0]),
      "phase": self.phase,
      "weights": [round(float(w), 6) for w in self.weights],
    }


def _weights(w, n: int, what: str) -> np.ndarray:
  w = np.atleast_1d(np.asarray(w, np.float32))
  if len(w) not in (1, n):
    raise ReferenceError(f"reference {what}_weight has {len(w)} entries: give 1 (all) or {n} (one per entry)")
  return np.broadcast_to(w, (n,))


def load(
  path: str,
  task: tasks_lib.Task,
  pos_weight=(0.15,),
  vel_weight=(0.15,),
  phase: str = "wrap",
) -> Reference:
  """The reference episode in `path` (see the module docstring for its keys) for `task`'s robot."""
  if phase not in PHASES:
    raise ReferenceError(f"reference phase '{phase}' unknown: choose one of {PHASES}")
  if not os.path.exists(path):
    raise ReferenceError(f"no reference episode at {path}: give an npz with qpos, qvel and actions")
  nq, nv, nu = task.model.nq, task.model.nv, task.num_act
  with np.load(path) as d:
    keys = set(d.files)
    if {"qpos", "qvel"} <= keys:
      qpos, qvel = np.asarray(d["qpos"]), np.asarray(d["qvel"])
    elif keys & {"x_ref", "x_ref_full"}:
      x = np.asarray(d["x_ref" if "x_ref" in keys else "x_ref_full"])
      qpos, qvel = x[:, :nq], x[:, nq:]
    else:
      raise ReferenceError(f"{path} has {sorted(keys)}: a reference needs qpos and qvel (or x_ref) and actions")
    if "actions" not in keys:
      raise ReferenceError(f"{path} has no 'actions': the expert's action statistics come from them")
    actions = np.asarray(d["actions"], np.float32)
  if qpos.ndim != 2 or qpos.shape[1] != nq or qvel.shape != (len(qpos), nv) or actions.ndim != 2:
    raise ReferenceError(
      f"{path}: qpos {qpos.shape}, qvel {qvel.shape}, actions {actions.shape} do not fit robot "
      f"'{task.robot.name}' (nq {nq}, nv {nv}, nu {nu})"
    )
  if actions.shape[1] != nu or not len(qpos) or not len(actions):
    raise ReferenceError(
      f"{path}: actions {actions.shape} and {len(qpos)} states; robot '{task.robot.name}' has nu {nu}"
    )
  w = np.concatenate([_weights(pos_weight, nq, "pos"), _weights(vel_weight, nv, "vel")])
  return Reference(
    obs=task.robot.obs_from_qpos_qvel(qpos, qvel).astype(np.float32),
    weights=w[task.robot.obs_gather].astype(np.float32),
    actions=actions,
    phase=phase,
    source=os.path.abspath(path),
  )
