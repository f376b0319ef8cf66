"""Writing MJCF for procedural robots: a tiny body/joint tree with its renderer, and the building
blocks the generators share (capsule chains, planar roots and legs; the generators are listed in
procedural.py).

Every model gets the same timestep and solver (MJX supports Newton with pyramidal cones), motors
with ctrlrange [-1, 1], limited damped joints with armature, and contact bits such that robot geoms
touch only the floor and free objects.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

Vec = tuple[float, float, float]

# Timestep and solver shared by every model (MJX supports Newton/CG and pyramidal cones).
TIMESTEP = 0.005
UP: Vec = (0.0, 0.0, 1.0)
PITCH: Vec = (0.0, -1.0, 0.0)  # planar hinge axis (dm_control convention: + swings forward)
YAW: Vec = (0.0, 0.0, 1.0)


# ----------------------------------------------------------------------------------------
# A tiny MJCF tree and its renderer.
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Joint:
  name: str
  axis: Vec = PITCH
  range: tuple[float, float] | None = None  # None -> unlimited
  gear: float | None = None  # None -> passive (no motor)
  kind: str = "hinge"  # hinge | slide | free
  attrs: tuple[tuple[str, float], ...] = ()  # per-joint overrides (damping, stiffness, ...)


@dataclasses.dataclass
class Body:
  name: str
  pos: Vec = (0.0, 0.0, 0.0)
  joints: list[Joint] = dataclasses.field(default_factory=list)
  geoms: list[dict] = dataclasses.field(default_factory=list)
  children: list["Body"] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Seg:
  """One link of a serial chain: joints at its origin, a capsule along `vec` to the next."""

  name: str
  vec: Vec
  radius: float
  joints: tuple[Joint, ...]


def fmt(v) -> str:
  if isinstance(v, str):
    return v
  if isinstance(v, (tuple, list)):
    return " ".join(fmt(x) for x in v)
  return f"{float(v) + 0.0:.6g}"  # + 0.0 turns -0.0 into 0.0


def tag(tag: str, **attrs) -> str:
  body = " ".join(f'{k}="{fmt(v)}"' for k, v in attrs.items() if v is not None)
  return f"<{tag} {body}/>"


def joint_xml(j: Joint) -> str:
  if j.kind == "free":
    return tag("freejoint", name=j.name)
  return tag(
    "joint",
    name=j.name,
    type=j.kind,
    axis=j.axis,
    range=j.range,
    limited="true" if j.range else "false",
    **dict(j.attrs),
  )


def render(body: Body, depth: int) -> list[str]:
  pad = "  " * depth
  lines = [f'{pad}<body name="{body.name}" pos="{fmt(body.pos)}">']
  lines += [pad + "  " + joint_xml(j) for j in body.joints]
  lines += [pad + "  " + tag("geom", **g) for g in body.geoms]
  for child in body.children:
    lines += render(child, depth + 1)
  return lines + [pad + "</body>"]


def walk(body: Body):
  yield body
  for child in body.children:
    yield from walk(child)


def capsule(name: str, start: Vec, end: Vec, radius: float, touch: bool = True, **extra) -> dict:
  return dict(
    name=name, type="capsule", fromto=(*start, *end), size=radius, **{"class": "touch" if touch else None}, **extra
  )


def sphere(name: str, pos: Vec, radius: float, touch: bool = True, **extra) -> dict:
  return dict(name=name, type="sphere", pos=pos, size=radius, **{"class": "touch" if touch else None}, **extra)


def mjcf(
  model: str,
  bodies: Sequence[Body],
  *,
  damping: float,
  armature: float,
  floor: bool = True,
  world_geoms: Sequence[dict] = (),
  fluid: tuple[float, float] | None = None,
) -> str:
  """Wraps robot bodies into a complete model: options, defaults, floor, motors.

  fluid: (density, viscosity) of a surrounding medium; MJX implements fluid drag only with
  the Euler integrator, so those models use Euler (others the implicit-in-velocity one).
  """
  option = f'integrator="{"Euler" if fluid else "implicitfast"}"'
  if fluid:
    option += f' density="{fmt(fluid[0])}" viscosity="{fmt(fluid[1])}"'
  motors = [
    tag("motor", name=j.name, joint=j.name, gear=j.gear)
    for root in bodies
    for b in walk(root)
    for j in b.joints
    if j.gear is not None
  ]
  world = [tag("geom", **g) for g in world_geoms]
  if floor:
    world.insert(
      0, tag("geom", name="floor", type="plane", size=(0, 0, 0.05), contype=0, conaffinity=1, rgba=(0.4, 0.45, 0.5, 1))
    )
  lines = [
    f'<mujoco model="{model}">',
    '  <compiler angle="radian" autolimits="true"/>',
    f'  <option timestep="{TIMESTEP}" {option} solver="Newton" cone="pyramidal" iterations="20" ls_iterations="10"/>',
    "  <default>",
    f'    <joint damping="{fmt(damping)}" armature="{fmt(armature)}"/>',
    '    <geom contype="0" conaffinity="0" condim="3" friction="0.8 0.1 0.1" rgba="0.75 0.6 0.4 1"/>',
    '    <motor ctrlrange="-1 1" ctrllimited="true"/>',
    '    <default class="touch"><geom contype="1"/></default>',
    '    <default class="object"><geom contype="1" conaffinity="1" rgba="0.3 0.5 0.8 1"/></default>',
    "  </default>",
    "  <worldbody>",
    '    <light name="light" pos="0 0 4" dir="0 0 -1" directional="true"/>',
    *["    " + w for w in world],
    *[line for b in bodies for line in render(b, 2)],
    "  </worldbody>",
  ]
  lines += ["  <actuator>", *["    " + m for m in motors], "  </actuator>", "</mujoco>", ""]
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Shared building blocks.
# ----------------------------------------------------------------------------------------
def check_int(name: str, value, lo: int, hi: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
    raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}.")
  return value


def check_pos(name: str, value) -> float:
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
    raise ValueError(f"{name} must be a positive number, got {value!r}.")
  return float(value)


def add(a: Vec, b: Vec) -> Vec:
  return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def scale(v: Vec, s: float) -> Vec:
  return (v[0] * s, v[1] * s, v[2] * s)


def unit(v: Vec) -> Vec:
  n = math.sqrt(sum(x * x for x in v))
  return scale(v, 1.0 / n)


def cross(a: Vec, b: Vec) -> Vec:
  return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def chain(segs: Sequence[Seg], pos: Vec, touch: bool = True) -> Body:
  """Nests segments into a serial chain rooted at `pos` (in the parent's frame)."""
  child = None
  for i in reversed(range(len(segs))):
    s = segs[i]
    child = Body(
      s.name,
      pos if i == 0 else segs[i - 1].vec,
      list(s.joints),
      [capsule(s.name, (0, 0, 0), s.vec, s.radius, touch)],
      [child] if child else [],
    )
  return child


def drop(segs: Sequence[Seg]) -> float:
  """How far below its attachment point a chain reaches (capsule radius included)."""
  z, lowest = 0.0, 0.0
  for s in segs:
    z += s.vec[2]
    lowest = min(lowest, z - s.radius)
  return -lowest


def planar_root() -> list[Joint]:
  free = (("damping", 0), ("armature", 0))
  return [
    Joint("rootz", UP, kind="slide", attrs=free),
    Joint("rootx", (1, 0, 0), kind="slide", attrs=free),
    Joint("rooty", (0, 1, 0), attrs=free),
  ]


# Planar joint ranges by role (axis -y): hips swing mostly forward, knees fold back.
_HIP, _KNEE, _ANKLE, _FOOT = (-0.35, 1.75), (-2.6, 0.0), (0.0, 2.0), (-0.8, 0.8)


def planar_leg(prefix: str, n: int, length: float, radius: float, gear: float, stiffness: float = 0.0) -> list[Seg]:
  """A planar leg of n segments: thigh, shin, [tarsus], [foot]; n >= 3 ends in a foot."""
  n_long = n - 1 if n >= 3 else n
  roles = [_HIP, _KNEE, _ANKLE][:n_long] + ([_FOOT] if n >= 3 else [])
  names = ["thigh", "shin", "tarsus"][:n_long] + (["foot"] if n >= 3 else [])
  segs = []
  for i, (role, name) in enumerate(zip(roles, names)):
    is_foot = name == "foot"
    vec = (0.4 * length / 2, 0.0, 0.0) if is_foot else (0.0, 0.0, -length / n_long)
    attrs = (("stiffness", stiffness),) if stiffness else ()
    segs.append(
      Seg(
        f"{prefix}_{name}",
        vec,
        radius * (0.8**i),
        (Joint(f"{prefix}_{name}_j", PITCH, role, gear * 0.6**i, attrs=attrs),),
      )
    )
  return segs


def planar_robot(model: str, torso: Body, limbs: Sequence[tuple[Vec, list[Seg]]], damping: float = 1.0) -> str:
  """Torso on rootz/rootx/rooty with legs (and arms) attached, dropped onto the floor."""
  height = max([drop(segs) - pos[2] for pos, segs in limbs] + [0.3]) + 0.02
  torso.pos = (0.0, 0.0, height)
  torso.joints = planar_root() + torso.joints
  torso.children += [chain(segs, pos) for pos, segs in limbs]
  return mjcf(model, [torso], damping=damping, armature=0.02)
