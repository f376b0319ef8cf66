"""A `Robot` from a compiled MjModel: channels, structure, root, tip, task-sensor offsets and control step.

Everything is derived from the compiled model (jnt_bodyid, actuator_trnid, body_parentid, ...),
never written by hand per robot; structure is the object id and LCRS (pre, in, post) ranks per
body (see structure.py).
"""

from __future__ import annotations

from absl import logging

import mujoco
import numpy as np

from westworld_jax.robots import structure
from westworld_jax.robots.channels import actuator_channels, object_name, observation_channels
from westworld_jax.robots.robot import TASK_SENSORS, Robot, RobotLoadError

DEFAULT_CONTROL_DT = 0.02  # seconds per model step when the catalogue gives no frame skip


def robot_from_model(
  model: mujoco.MjModel,
  name: str,
  source: str,
  frame_skip: int | None = None,
  control_dt: float | None = None,
  warn: bool = True,
) -> Robot:
  """Build a Robot from a compiled model (frame_skip, else control_dt, else DEFAULT_CONTROL_DT).

  Actuators without a ctrlrange get [-1, 1], with a warning (unless warn=False) and a record in
  Robot.ctrl_range_assumed."""
  if model.nu == 0:
    raise RobotLoadError(f"robot '{name}' has no actuators: add <actuator> elements (URDFs get motors automatically)")
  if model.njnt == 0:
    raise RobotLoadError(f"robot '{name}' has no joints: nothing moves, so there is nothing to predict")
  obs, floating, root = observation_channels(model)
  act = actuator_channels(model)
  limited = model.actuator_ctrllimited.astype(bool)
  lo = np.where(limited, model.actuator_ctrlrange[:, 0], -1.0).astype(np.float32)
  hi = np.where(limited, model.actuator_ctrlrange[:, 1], 1.0).astype(np.float32)
  assumed = tuple(act[a].name for a in np.where(~limited)[0])
  if assumed and warn:
    logging.warning(
      "%s: %d actuator(s) have no ctrlrange (%s%s); assuming [-1, 1]. Give them a ctrlrange "
      "(and ctrllimited) if their controls live on another scale.",
      name,
      len(assumed),
      ", ".join(assumed[:5]),
      ", ..." if len(assumed) > 5 else "",
    )

  data = mujoco.MjData(model)
  mujoco.mj_forward(model, data)
  actuated = [c.body_id for c in act]
  names = [object_name(model, mujoco.mjtObj.mjOBJ_BODY, b, "body") for b in range(model.nbody)]
  bodies = structure.body_indices(names, model.body_parentid, actuated, data.xpos.copy())

  tip = _tip_body(model, bodies)
  sensor_adr = {}
  for key, _, _ in TASK_SENSORS:
    sid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SENSOR, f"ww_{key}")
    if sid >= 0:
      sensor_adr[key] = int(model.sensor_adr[sid])
  if not floating:
    root = next(b for b in range(1, model.nbody) if bodies[b - 1].object == 0 and bodies[b - 1].pre == 0)

  if frame_skip is None:
    dt = control_dt or DEFAULT_CONTROL_DT
    frame_skip = max(1, int(round(dt / model.opt.timestep)))
  if frame_skip < 1:
    raise RobotLoadError(f"frame_skip must be >= 1, got {frame_skip}")
  return Robot(
    name=name,
    source=source,
    model=model,
    frame_skip=int(frame_skip),
    bodies=tuple(bodies),
    obs_channels=tuple(obs),
    act_channels=tuple(act),
    act_low=lo,
    act_high=hi,
    floating=floating,
    root_body_id=root,
    tip_body_id=tip,
    sensor_adr=sensor_adr,
    ctrl_range_assumed=assumed,
  )


def _tip_body(model: mujoco.MjModel, bodies: list[structure.BodyIndex]) -> int:
  """Deepest body of object 0 (ties: the last in document order)."""
  depth = np.zeros(model.nbody, int)
  for b in range(1, model.nbody):
    depth[b] = depth[model.body_parentid[b]] + 1
  cands = [b for b in range(1, model.nbody) if bodies[b - 1].object == 0]
  return max(cands, key=lambda b: (depth[b], b))
