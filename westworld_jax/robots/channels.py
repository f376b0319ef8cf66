"""A compiled MjModel's observation and action channels, derived from its joints and actuators.

- observation channels: per joint, positions then velocities (gym-style ordering: all position
  channels first, then all velocity channels); a floating base (free joint, or a planar base with
  root slides along x and z) gives root height, orientation and velocities but no global x/y;
- action channels: one per actuator, kind from its transmission and gain/bias type.
"""

from __future__ import annotations

import mujoco
import numpy as np

from westworld_jax.robots.robot import Channel, RobotLoadError


_NAME_ADR = {
  mujoco.mjtObj.mjOBJ_BODY: "name_bodyadr",
  mujoco.mjtObj.mjOBJ_JOINT: "name_jntadr",
  mujoco.mjtObj.mjOBJ_ACTUATOR: "name_actuatoradr",
}


def object_name(model: mujoco.MjModel, obj: mujoco.mjtObj, i: int, prefix: str) -> str:
  """The object's name in the model, or `prefix` + its id when it has none. A name that is not UTF-8
  (an MJCF saved in another encoding) keeps its other characters, the undecodable bytes as \\xNN."""
  try:
    return mujoco.mj_id2name(model, obj, i) or f"{prefix}{i}"
  except UnicodeDecodeError:
    adr = int(getattr(model, _NAME_ADR[obj])[i])
    raw = bytes(model.names[adr:]).split(b"\0", 1)[0]
    return raw.decode("utf-8", errors="backslashreplace") or f"{prefix}{i}"


def _actuator_body(model: mujoco.MjModel, a: int) -> int:
  trntype = int(model.actuator_trntype[a])
  target = int(model.actuator_trnid[a, 0])
  if trntype in (mujoco.mjtTrn.mjTRN_JOINT, mujoco.mjtTrn.mjTRN_JOINTINPARENT):
    return int(model.jnt_bodyid[target])
  if trntype == mujoco.mjtTrn.mjTRN_SITE:
    return int(model.site_bodyid[target])
  if trntype == mujoco.mjtTrn.mjTRN_BODY:
    return target
  if trntype == mujoco.mjtTrn.mjTRN_TENDON:
    # The body of the first joint (or site) the tendon wraps.
    adr, num = model.tendon_adr[target], model.tendon_num[target]
    for w in range(adr, adr + num):
      wtype, obj = int(model.wrap_type[w]), int(model.wrap_objid[w])
      if wtype == mujoco.mjtWrap.mjWRAP_JOINT:
        return int(model.jnt_bodyid[obj])
      if wtype == mujoco.mjtWrap.mjWRAP_SITE:
        return int(model.site_bodyid[obj])
  if trntype == mujoco.mjtTrn.mjTRN_SLIDERCRANK:
    return int(model.site_bodyid[target])
  raise RobotLoadError(f"actuator {a} has an unsupported transmission type {int(trntype)}")


def _actuator_kind(model: mujoco.MjModel, a: int) -> str:
  trntype = int(model.actuator_trntype[a])
  if trntype == mujoco.mjtTrn.mjTRN_TENDON:
    return "tendon"
  if trntype == mujoco.mjtTrn.mjTRN_SITE:
    return "site"
  if int(model.actuator_biastype[a]) == mujoco.mjtBias.mjBIAS_AFFINE:
    kp_bias, kv_bias = model.actuator_biasprm[a, 1], model.actuator_biasprm[a, 2]
    if kp_bias != 0:
      return "position"
    if kv_bias != 0:
      return "velocity"
  if int(model.actuator_biastype[a]) == mujoco.mjtBias.mjBIAS_NONE:
    return "motor"
  return "other"


def observation_channels(model: mujoco.MjModel) -> tuple[list[Channel], bool, int]:
  """Joint-state channels; returns (channels, floating, root_body_id)."""
  J = mujoco.mjtJoint
  pos: list[Channel] = []
  vel: list[Channel] = []
  parent = model.body_parentid
  # Root bodies with a planar floating base: slide x and slide z on a body attached to the world.
  root_slides: dict[int, dict[str, int]] = {}
  for j in range(model.njnt):
    b = int(model.jnt_bodyid[j])
    if int(model.jnt_type[j]) == J.mjJNT_SLIDE and parent[b] == 0:
      axis = np.abs(model.jnt_axis[j])
      root_slides.setdefault(b, {})["xyz"[int(np.argmax(axis))]] = j
  root_hinged = {
    int(model.jnt_bodyid[j])
    for j in range(model.njnt)
    if int(model.jnt_type[j]) == J.mjJNT_HINGE and parent[int(model.jnt_bodyid[j])] == 0
  }
  # A planar floating base (walker/cheetah/hopper style) slides along x and z and pitches; a body
  # that only slides (a cart, a cup on rails) keeps its position channels.
  planar = {b for b, s in root_slides.items() if "z" in s and ("x" in s or "y" in s) and b in root_hinged}
  floating_root = None

  for j in range(model.njnt):
    b = int(model.jnt_bodyid[j])
    body = object_name(model, mujoco.mjtObj.mjOBJ_BODY, b, "body")
    jn = object_name(model, mujoco.mjtObj.mjOBJ_JOINT, j, "joint")
    qa, va = int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])
    jtype = int(model.jnt_type[j])
    if jtype == J.mjJNT_FREE:
      floating_root = floating_root or b
      pos.append(Channel(f"{jn}:z", "root_height", body, b, "qpos", qa + 2))
      pos += [Channel(f"{jn}:q{c}", "root_quat", body, b, "qpos", qa + 3 + k) for k, c in enumerate("wxyz")]
      vel += [Channel(f"{jn}:v{c}", "root_linvel", body, b, "qvel", va + k) for k, c in enumerate("xyz")]
      vel += [Channel(f"{jn}:w{c}", "root_angvel", body, b, "qvel", va + 3 + k) for k, c in enumerate("xyz")]
    elif jtype == J.mjJNT_BALL:
      pos += [Channel(f"{jn}:q{c}", "ball_quat", body, b, "qpos", qa + k) for k, c in enumerate("wxyz")]
      vel += [Channel(f"{jn}:w{c}", "ball_angvel", body, b, "qvel", va + k) for k, c in enumerate("xyz")]
    elif jtype == J.mjJNT_SLIDE:
      if b in planar:
        floating_root = floating_root or b
        axis = "xyz"[int(np.argmax(np.abs(model.jnt_axis[j])))]
        if axis == "z":
          pos.append(Channel(jn, "root_height", body, b, "qpos", qa))
          vel.append(Channel(f"{jn}:vel", "root_linvel", body, b, "qvel", va))
        else:  # global x/y position is not observed (as gym's locomotion tasks)
          vel.append(Channel(f"{jn}:vel", "root_x_vel", body, b, "qvel", va))
      else:
        pos.append(Channel(jn, "slide_pos", body, b, "qpos", qa))
        vel.append(Channel(f"{jn}:vel", "slide_vel", body, b, "qvel", va))
    else:  # hinge
      if b in planar and parent[b] == 0:
        pos.append(Channel(jn, "root_angle", body, b, "qpos", qa))
        vel.append(Channel(f"{jn}:vel", "root_angvel", body, b, "qvel", va))
      else:
        pos.append(Channel(jn, "joint_pos", body, b, "qpos", qa))
        vel.append(Channel(f"{jn}:vel", "joint_vel", body, b, "qvel", va))
  return pos + vel, floating_root is not None, floating_root or 1


def actuator_channels(model: mujoco.MjModel) -> list[Channel]:
  """One channel per actuator, on the body it acts on."""
  act = []
  for a in range(model.nu):
    b = _actuator_body(model, a)
    act.append(
      Channel(
        object_name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, a, "actuator"),
        _actuator_kind(model, a),
        object_name(model, mujoco.mjtObj.mjOBJ_BODY, b, "body"),
        b,
      )
    )
  return act
