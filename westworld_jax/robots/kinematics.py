"""Forward kinematics of one body along its kinematic chain, jittable and cheap (a few small matmuls).

`chain_fk(model, body)` follows MuJoCo's kinematics rules for hinge and slide joints; control tasks
use it to compute an end effector from observed (or predicted) joint positions inside a planner's
cost, where MJX's full kinematics, vmapped over samples, would be far slower.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
  m = np.zeros(9)
  mujoco.mju_quat2Mat(m, np.asarray(q, np.float64))
  return m.reshape(3, 3)


def _axis_angle(axis: np.ndarray, angle: jax.Array) -> jax.Array:
  """Rotation matrix about a unit axis (Rodrigues), differentiable and vmappable."""
  k = jnp.asarray(np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]), jnp.float32)
  return jnp.eye(3) + jnp.sin(angle) * k + (1.0 - jnp.cos(angle)) * (k @ k)


def chain_fk(model: mujoco.MjModel, body: int) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
  """qpos [nq] -> (world position [3], rotation [3, 3]) of `body`, by MuJoCo's kinematics rules
  (hinge/slide displacement qpos - qpos0 about/along the joint axis at its anchor) along the chain
  from the world. A few small matmuls: mjx.kinematics computes every body and, vmapped over samples
  on a CPU, is ~20x slower than one call -- too slow inside a planner's cost.
  """
  chain = []
  b = body
  while b > 0:
    chain.append(b)
    b = int(model.body_parentid[b])
  chain.reverse()
  steps = []
  for b in chain:
    joints = []
    for j in range(int(model.body_jntadr[b]), int(model.body_jntadr[b]) + int(model.body_jntnum[b])):
      jtype = int(model.jnt_type[j])
      if jtype not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
        raise ValueError(f"chain_fk supports hinge and slide joints; joint {j} of body {b} has type {jtype}")
      adr = int(model.jnt_qposadr[j])
      joints.append(
        (
          jtype == mujoco.mjtJoint.mjJNT_HINGE,
          adr,
          float(model.qpos0[adr]),
          np.asarray(model.jnt_axis[j], np.float64),
          np.asarray(model.jnt_pos[j], np.float32),
        )
      )
    steps.append(
      (np.asarray(model.body_pos[b], np.float32), _quat_to_mat(model.body_quat[b]).astype(np.float32), joints)
    )

  def fk(qpos):
    pos, mat = jnp.zeros(3, jnp.float32), jnp.eye(3, dtype=jnp.float32)
    for bpos, bmat, joints in steps:
      pos = pos + mat @ bpos
      mat = mat @ bmat
      for hinge, adr, q0, axis, jpos in joints:
        if hinge:
          anchor = pos + mat @ jpos
          mat = mat @ _axis_angle(axis, qpos[adr] - q0)
          pos = anchor - mat @ jpos
        else:
          pos = pos + mat @ jnp.asarray(axis, jnp.float32) * (qpos[adr] - q0)
    return pos, mat

  return fk
