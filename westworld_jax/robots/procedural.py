"""Procedural robot morphologies, generated as complete MJCF strings.

The packages we can install offline ship about 35 robots; the pretraining corpus needs many
more kinematic trees. This module writes them, in the spirit of the WestWorld paper's DMC,
Modular-RL and DB-1 variants:

  planar_walker / hopper / cheetah / humanoid2d   planar (rootz, rootx, rooty) locomotors
  legged / centipede                              3D multi-legged walkers on a free joint
  snake / swimmer                                 link chains on a floor or in a viscous fluid
  arm / pendulum / cartpole / hand                fixed-base manipulators and classic control

Every generator is a pure function of its parameters (same arguments -> identical XML) and
returns a self-contained MJCF string: motors with ctrlrange [-1, 1] (torque = gear * ctrl),
limited and damped joints with armature, a Newton solver with pyramidal cones (accepted by
MJX), and contype/conaffinity bits such that robot geoms touch only the floor and free
objects, never each other. The actuated robot is always the first body under <worldbody>
(object 0 of the structural embedding); free objects follow it.

`FAMILIES` maps a family name to its generator; `procedural_robots()` renders the fixed list
`ROBOT_SPECS`; `topology_signature()` names a compiled model's kinematic tree.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from westworld_jax.robots.mjcf_writer import (
  PITCH,
  UP,
  YAW,
  Body,
  Joint,
  Seg,
  Vec,
  add,
  capsule,
  chain,
  check_int,
  check_pos,
  cross,
  drop,
  mjcf,
  planar_leg,
  planar_robot,
  scale,
  sphere,
  unit,
  walk,
)


# ----------------------------------------------------------------------------------------
# Planar locomotors (Modular-RL style walker / hopper / cheetah / humanoid variants).
# ----------------------------------------------------------------------------------------
def planar_walker(
  legs: Sequence[int] = (3, 3),
  leg_length: float = 0.95,
  torso_length: float = 0.6,
  gear: float = 100.0,
  name: str = "proc_walker",
) -> str:
  """dm_control-style walker; `legs` lists each leg's segment count (0 removes a leg)."""
  if not legs or len(legs) > 3:
    raise ValueError(f"legs must list 1 to 3 legs, got {legs!r}.")
  for n in legs:
    check_int("segments per leg", n, 0, 4)
  if not any(legs):
    raise ValueError("a walker needs at least one leg with >= 1 segment.")
  leg_length, torso_length = check_pos("leg_length", leg_length), check_pos("torso_length", torso_length)
  torso = Body("torso", geoms=[capsule("torso", (0, 0, 0), (0, 0, torso_length), 0.07)])
  limbs = [((0.0, 0.0, 0.0), planar_leg(f"leg{k}", n, leg_length, 0.05, gear)) for k, n in enumerate(legs) if n]
  return planar_robot(name, torso, limbs)


def hopper(segments: int = 3, leg_length: float = 0.95, name: str = "proc_hopper") -> str:
  """One-legged hopper: a short torso on one leg of 2..4 segments."""
  check_int("segments", segments, 2, 4)
  return planar_walker((segments,), leg_length, torso_length=0.4, gear=200.0, name=name)


def cheetah(back: int = 3, front: int = 3, leg_length: float = 0.6, name: str = "proc_cheetah") -> str:
  """Half-cheetah: horizontal torso, back and front legs of 0..4 segments each."""
  check_int("back leg segments", back, 0, 4)
  check_int("front leg segments", front, 0, 4)
  if back == front == 0:
    raise ValueError("a cheetah needs at least one leg.")
  leg_length = check_pos("leg_length", leg_length)
  torso = Body(
    "torso",
    geoms=[capsule("torso", (-0.5, 0, 0), (0.5, 0, 0), 0.046), capsule("head", (0.5, 0, 0), (0.65, 0, 0.12), 0.046)],
  )
  limbs = []
  for prefix, n, x in (("bleg", back, -0.5), ("fleg", front, 0.5)):
    if n:
      limbs.append(((x, 0.0, 0.0), planar_leg(prefix, n, leg_length, 0.046, 120.0, stiffness=60.0)))
  return planar_robot(name, torso, limbs, damping=3.0)


def _planar_arm(side: str) -> list[Seg]:
  return [
    Seg(f"{side}_upper_arm", (0, 0, -0.28), 0.04, (Joint(f"{side}_shoulder", PITCH, (-1.0, 2.6), 30.0),)),
    Seg(f"{side}_lower_arm", (0, 0, -0.25), 0.035, (Joint(f"{side}_elbow", PITCH, (0.0, 2.5), 15.0),)),
  ]


def humanoid2d(arms: int = 2, leg_segments: int = 3, name: str = "proc_humanoid2d") -> str:
  """Planar humanoid: pelvis, two legs, a chest on an abdomen hinge, 0..2 two-link arms."""
  check_int("arms", arms, 0, 2)
  check_int("leg_segments", leg_segments, 1, 4)
  chest = Body(
    "chest",
    (0, 0, 0.08),
    [Joint("abdomen", PITCH, (-0.8, 0.8), 80.0)],
    [capsule("chest", (0, 0, 0), (0, 0, 0.4), 0.08), sphere("head", (0, 0, 0.55), 0.1)],
    [chain(_planar_arm(side), (0, 0, 0.38)) for side in ("right", "left")[:arms]],
  )
  pelvis = Body("pelvis", geoms=[capsule("pelvis", (0, -0.09, 0), (0, 0.09, 0), 0.08)], children=[chest])
  limbs = [((0.0, 0.0, -0.05), planar_leg(side, leg_segments, 0.85, 0.05, 100.0)) for side in ("rleg", "lleg")]
  return planar_robot(name, pelvis, limbs)


# ----------------------------------------------------------------------------------------
# 3D multi-legged walkers.
# ----------------------------------------------------------------------------------------
_LIGHT = 250.0  # torso density (kg/m^3): a hollow shell the legs can carry


def _spider_leg(prefix: str, out: Vec, joints: int, length: float, radius: float, gear: float) -> list[Seg]:
  """Ant-style leg pointing along unit vector `out`: hip yaw, [hip pitch], knee pitch."""
  pitch_axis = cross(UP, out)  # + rotation about it swings the leg downwards
  down_out = unit(add(scale(out, 0.6), (0, 0, -0.8)))
  vecs = [scale(out, 0.35 * length)]
  if joints == 3:
    vecs.append(scale(unit(add(out, (0, 0, 0.3))), 0.3 * length))
  vecs.append(scale(down_out, 0.6 * length))
  ranges = [(-0.6, 0.6)] + [(-0.7, 0.7)] * (joints - 1)
  names = ["hip", "thigh", "shin"] if joints == 3 else ["hip", "shin"]
  return [
    Seg(f"{prefix}_{n}", v, radius, (Joint(f"{prefix}_{n}_j", YAW if i == 0 else pitch_axis, r, gear),))
    for i, (n, v, r) in enumerate(zip(names, vecs, ranges))
  ]


def _mammal_leg(prefix: str, side: float, joints: int, length: float, radius: float, gear: float) -> list[Seg]:
  """Legs under the body (A1-like): [hip abduction], hip pitch, knee pitch."""
  segs = []
  if joints == 3:
    segs.append(
      Seg(f"{prefix}_hip", (0, 0.08 * side, 0), radius, (Joint(f"{prefix}_abduct", (1, 0, 0), (-0.6, 0.6), gear),))
    )
  segs.append(
    Seg(f"{prefix}_thigh", (0.0, 0.0, -0.5 * length), radius, (Joint(f"{prefix}_hip_j", (0, 1, 0), (-1.0, 1.5), gear),))
  )
  segs.append(
    Seg(
      f"{prefix}_calf",
      (0.1 * length, 0.0, -0.5 * length),
      radius * 0.8,
      (Joint(f"{prefix}_knee", (0, 1, 0), (-2.4, 0.4), gear),),
    )
  )
  return segs


def legged(
  n_legs: int = 4, joints: int = 2, layout: str = "radial", leg_length: float = 0.8, name: str = "proc_legged"
) -> str:
  """Free-floating torso with n legs of 2..3 hinges.

  layout: "radial" (ant-like, legs spread evenly around a ball torso), "lateral" (insect:
  leg pairs along a capsule torso) or "mammal" (legs below a box-like torso, A1-like).
  """
  check_int("n_legs", n_legs, 1, 8)
  check_int("joints", joints, 2, 3)
  leg_length = check_pos("leg_length", leg_length)
  gear, radius = 40.0 * leg_length, 0.05 * leg_length
  if layout == "radial":
    torso_geoms = [sphere("torso", (0, 0, 0), 0.2, density=_LIGHT)]
    outs = [(math.cos(a), math.sin(a), 0.0) for a in (2 * math.pi * (k + 0.5) / n_legs for k in range(n_legs))]
    attach = [scale(u, 0.2) for u in outs]
    legs = [_spider_leg(f"leg{k}", u, joints, leg_length, radius, gear) for k, u in enumerate(outs)]
  elif layout in ("lateral", "mammal"):
    if n_legs % 2:
      raise ValueError(f"layout {layout!r} needs an even number of legs, got {n_legs}.")
    pairs = n_legs // 2
    half = 0.3 * (pairs - 1) / 2 + 0.15
    torso_geoms = [capsule("torso", (-half, 0, 0), (half, 0, 0), 0.1, density=_LIGHT)]
    xs = [half - 0.15 - 0.3 * k for k in range(pairs)] if pairs > 1 else [0.0]
    attach, legs = [], []
    for k, x in enumerate(xs):
      for side, tag in ((1.0, "l"), (-1.0, "r")):
        prefix = f"leg{k}{tag}"
        attach.append((x, 0.1 * side, 0.0))
        legs.append(
          _spider_leg(prefix, (0, side, 0), joints, leg_length, radius, gear)
          if layout == "lateral"
          else _mammal_leg(prefix, side, joints, leg_length, radius, gear)
        )
  else:
    raise ValueError(f"layout must be 'radial', 'lateral' or 'mammal', got {layout!r}.")
  height = max(drop(s) for s in legs) + 0.05
  torso = Body(
    "torso", (0, 0, height), [Joint("root", kind="free")], torso_geoms, [chain(s, p) for s, p in zip(legs, attach)]
  )
  return mjcf(name, [torso], damping=1.0, armature=0.02)


def centipede(n_segments: int = 4, body_joints: int = 1, name: str = "proc_centipede") -> str:
  """Body segments in a row joined by 1 (yaw) or 2 (yaw + pitch) hinges, two legs each."""
  check_int("n_segments", n_segments, 2, 7)
  check_int("body_joints", body_joints, 1, 2)
  spacing, leg_length = 0.35, 0.6
  segments = []
  for k in range(n_segments):
    joints = (
      [Joint("root", kind="free")]
      if k == 0
      else [Joint(f"seg{k}_yaw", YAW, (-0.5, 0.5), 30.0), Joint(f"seg{k}_pitch", (0, 1, 0), (-0.4, 0.4), 30.0)][
        :body_joints
      ]
    )
    legs = [
      chain(_spider_leg(f"seg{k}{t}", (0, s, 0), 2, leg_length, 0.04, 25.0), (0, 0.1 * s, 0))
      for s, t in ((1.0, "l"), (-1.0, "r"))
    ]
    segments.append(
      Body(
        f"seg{k}", (-spacing, 0, 0), joints, [capsule(f"seg{k}", (-0.1, 0, 0), (0.1, 0, 0), 0.1, density=_LIGHT)], legs
      )
    )
  for parent, child in zip(segments, segments[1:]):
    parent.children.append(child)
  height = drop(_spider_leg("x", (0, 1, 0), 2, leg_length, 0.04, 1.0)) + 0.05
  segments[0].pos = (0, 0, height)
  return mjcf(name, [segments[0]], damping=1.0, armature=0.02)


# ----------------------------------------------------------------------------------------
# Snakes on the floor, swimmers in a viscous fluid.
# ----------------------------------------------------------------------------------------
def _link_chain(n_links: int, length: float, radius: float, gear: float, pitch: bool) -> list[Seg]:
  """Links along -x, each after the first turning by a yaw (and optionally pitch) hinge."""
  segs = []
  for k in range(n_links):
    joints = (
      ()
      if k == 0
      else (Joint(f"yaw{k}", YAW, (-1.2, 1.2), gear),)
      + ((Joint(f"pitch{k}", (0, 1, 0), (-0.6, 0.6), gear),) if pitch else ())
    )
    segs.append(Seg(f"link{k}", (-length, 0, 0), radius, joints))
  return segs


def snake(n_links: int = 6, pitch: bool = False, name: str = "proc_snake") -> str:
  """A link chain lying on a frictional floor, yaw (+ pitch) hinges between links.

  The head has a free joint: a chain confined to the x-y plane by slide joints would get no
  normal force from the floor, hence no friction to push against.
  """
  check_int("n_links", n_links, 3, 10)
  head = chain(_link_chain(n_links, 0.2, 0.04, 6.0, pitch), (0, 0, 0.045))
  head.joints = [Joint("root", kind="free")]
  return mjcf(name, [head], damping=0.5, armature=0.01)


def swimmer(n_links: int = 5, name: str = "proc_swimmer") -> str:
  """dm_control-style swimmer: planar (x, y, yaw) link chain in a viscous fluid."""
  check_int("n_links", n_links, 3, 10)
  head = chain(_link_chain(n_links, 0.1, 0.02, 0.3, pitch=False), (0, 0, 0.1), touch=False)
  free = (("damping", 0), ("armature", 0))
  head.joints = [
    Joint("rootx", (1, 0, 0), kind="slide", attrs=free),
    Joint("rooty", (0, 1, 0), kind="slide", attrs=free),
    Joint("rootz", YAW, attrs=free),
  ]
  return mjcf(name, [head], damping=0.01, armature=0.001, floor=False, fluid=(3000.0, 0.1))


# ----------------------------------------------------------------------------------------
# Fixed-base manipulators and classic control.
# ----------------------------------------------------------------------------------------
def arm(n_joints: int = 6, gripper: bool = False, name: str = "proc_arm") -> str:
  """Serial arm on a pedestal: hinges alternate yaw / pitch; optional 2-finger gripper."""
  check_int("n_joints", n_joints, 2, 7)
  lengths = [0.2, 0.35, 0.3, 0.25, 0.15, 0.1, 0.08][:n_joints]
  gears = [60.0, 60.0, 35.0, 25.0, 10.0, 6.0, 4.0][:n_joints]
  segs = [
    Seg(
      f"link{k}",
      (0, 0, lengths[k]),
      0.05 - 0.004 * k,
      (Joint(f"joint{k}", YAW if k % 2 == 0 else (0, 1, 0), (-2.9, 2.9) if k % 2 == 0 else (-1.8, 1.8), gears[k]),),
    )
    for k in range(n_joints)
  ]
  base = chain(segs, (0, 0, 0.1))
  if gripper:
    last = list(walk(base))[-1]
    fingers = [
      Body(
        f"finger_{t}",
        (0, 0.01 * s, 0.03),
        [Joint(f"finger_{t}_j", (0, s, 0), (0.0, 0.04), 20.0, kind="slide")],
        [
          dict(name=f"finger_{t}", type="box", pos=(0, 0.005 * s, 0.04), size=(0.01, 0.005, 0.04), **{"class": "touch"})
        ],
      )
      for s, t in ((1.0, "l"), (-1.0, "r"))
    ]
    last.children.append(
      Body(
        "hand",
        (0, 0, lengths[-1]),
        [],
        [dict(name="hand", type="box", size=(0.03, 0.06, 0.015), **{"class": "touch"})],
        fingers,
      )
    )
  pedestal = capsule("pedestal", (0, 0, 0), (0, 0, 0.1), 0.08, touch=False)
  return mjcf(name, [base], damping=2.0, armature=0.05, world_geoms=[pedestal])


def pendulum(n_links: int = 1, actuated: str = "all", name: str = "proc_pendulum") -> str:
  """n-link pendulum hanging from a fixed pivot; actuated: all | first | last (acrobot)."""
  check_int("n_links", n_links, 1, 4)
  if actuated not in ("all", "first", "last"):
    raise ValueError(f"actuated must be 'all', 'first' or 'last', got {actuated!r}.")
  on = {"all": range(n_links), "first": [0], "last": [n_links - 1]}[actuated]
  length = 1.0 / n_links
  segs = [
    Seg(f"pole{k}", (0, 0, -length), 0.03, (Joint(f"hinge{k}", (0, 1, 0), None, 4.0 if k in on else None),))
    for k in range(n_links)
  ]
  return mjcf(name, [chain(segs, (0, 0, 1.2), touch=False)], damping=0.05, armature=0.01, floor=False)


def cartpole(n_poles: int = 1, name: str = "proc_cartpole") -> str:
  """A cart on a rail (slide, actuated) balancing 1..3 chained passive poles."""
  check_int("n_poles", n_poles, 1, 3)
  length = 1.0 / n_poles
  poles = [Seg(f"pole{k}", (0, 0, length), 0.025, (Joint(f"hinge{k}", (0, 1, 0)),)) for k in range(n_poles)]
  cart = Body(
    "cart",
    (0, 0, 1.0),
    [Joint("slider", (1, 0, 0), (-3.0, 3.0), 10.0, kind="slide")],
    [dict(name="cart", type="box", size=(0.2, 0.15, 0.1), mass=1.0)],
    [chain(poles, (0, 0, 0), touch=False)],
  )
  rail = capsule("rail", (-3.3, 0, 1.0), (3.3, 0, 1.0), 0.02, touch=False)
  return mjcf(name, [cart], damping=0.05, armature=0.01, floor=False, world_geoms=[rail])


def hand(
  n_fingers: int = 4, joints: int = 3, abduction: bool = False, ball: bool = False, name: str = "proc_hand"
) -> str:
  """Upward-facing fixed palm with 2..4 fingers of 2..3 flexion hinges (first one a thumb
  when n_fingers >= 3), optional abduction hinges, optionally a free ball to play with."""
  check_int("n_fingers", n_fingers, 2, 4)
  check_int("joints", joints, 2, 3)
  bases = [((-0.045 + 0.03 * k, 0, 0.02), UP) for k in range(4)]
  if n_fingers >= 3:  # thumb on the palm's side, pointing out and up
    bases = [((-0.06, -0.01, -0.005), unit((-0.6, 0, 0.8)))] + bases[1:]
  bases = bases[:n_fingers] if n_fingers >= 3 else bases[1:3]
  lengths = [0.05, 0.035, 0.025][:joints]
  fingers = []
  for f, (pos, d) in enumerate(bases):
    flex = cross((0, 1, 0), d)  # + rotation curls the finger towards -y (the palm side)
    segs = []
    for k, length in enumerate(lengths):
      js = (Joint(f"f{f}_flex{k}", flex, (-0.2, 1.6), 2.0 * 0.7**k),)
      if k == 0 and abduction:
        js = (Joint(f"f{f}_abd", (0, 1, 0), (-0.35, 0.35), 1.0),) + js
      segs.append(Seg(f"f{f}_phalanx{k}", scale(d, length), 0.01, js))
    fingers.append(chain(segs, pos))
  palm = Body(
    "palm", (0, 0, 0.3), [], [dict(name="palm", type="box", size=(0.065, 0.02, 0.02), **{"class": "touch"})], fingers
  )
  bodies = [palm]
  if ball:
    bodies.append(
      Body(
        "ball",
        (0.0, -0.03, 0.42),
        [Joint("ball", kind="free")],
        [dict(name="ball", type="sphere", size=0.03, density=300, **{"class": "object"})],
      )
    )
  return mjcf(name, bodies, damping=0.05, armature=0.002)


# ----------------------------------------------------------------------------------------
# Registry.
# ----------------------------------------------------------------------------------------
FAMILIES: dict[str, Callable[..., str]] = {
  "walker": planar_walker,
  "hopper": hopper,
  "cheetah": cheetah,
  "humanoid2d": humanoid2d,
  "legged": legged,
  "centipede": centipede,
  "snake": snake,
  "swimmer": swimmer,
  "arm": arm,
  "pendulum": pendulum,
  "cartpole": cartpole,
  "hand": hand,
}


def _specs() -> list[tuple[str, str, dict]]:
  s = []
  for legs in [(1, 1), (2, 2), (3, 3), (4, 4), (1, 2), (2, 3), (1, 3), (3, 4), (3, 0), (4, 0)]:
    s.append((f"proc_walker_l{legs[0]}r{legs[1]}", "walker", dict(legs=tuple(n for n in legs if n))))
  s += [
    ("proc_walker_l3r3_long", "walker", dict(legs=(3, 3), leg_length=1.25)),
    ("proc_walker_l2r2_short", "walker", dict(legs=(2, 2), leg_length=0.7)),
    ("proc_walker_tripod3", "walker", dict(legs=(3, 3, 3))),
  ]
  s += [(f"proc_hopper_{n}", "hopper", dict(segments=n)) for n in (2, 3, 4)]
  for b, f in [(3, 3), (2, 2), (4, 4), (2, 3), (3, 2), (3, 0), (0, 3), (2, 4)]:
    s.append((f"proc_cheetah_b{b}f{f}", "cheetah", dict(back=b, front=f)))
  s += [(f"proc_humanoid2d_a{a}", "humanoid2d", dict(arms=a)) for a in (0, 1, 2)]
  for n, j, layout, tag in [
    (4, 2, "radial", "ant"),
    (4, 3, "radial", "ant"),
    (3, 2, "radial", "tripod"),
    (5, 2, "radial", "star"),
    (6, 2, "radial", "star"),
    (8, 2, "radial", "star"),
    (6, 2, "lateral", "hexapod"),
    (6, 3, "lateral", "hexapod"),
    (4, 3, "mammal", "quadruped"),
    (4, 2, "mammal", "quadruped"),
    (2, 3, "mammal", "biped3d"),
  ]:
    s.append((f"proc_{tag}{n if tag == 'star' else ''}_j{j}", "legged", dict(n_legs=n, joints=j, layout=layout)))
  s += [(f"proc_centipede_{n}", "centipede", dict(n_segments=n)) for n in (3, 4, 6)]
  s += [("proc_centipede_4_pitch", "centipede", dict(n_segments=4, body_joints=2))]
  s += [(f"proc_snake_{n}", "snake", dict(n_links=n)) for n in (3, 5, 7, 10)]
  s += [(f"proc_snake3d_{n}", "snake", dict(n_links=n, pitch=True)) for n in (4, 8)]
  s += [(f"proc_swimmer_{n}", "swimmer", dict(n_links=n)) for n in (3, 6, 9)]
  s += [(f"proc_arm_{n}", "arm", dict(n_joints=n)) for n in (2, 3, 4, 5, 6, 7)]
  s += [(f"proc_arm_{n}_gripper", "arm", dict(n_joints=n, gripper=True)) for n in (4, 6, 7)]
  s += [(f"proc_pendulum_{n}", "pendulum", dict(n_links=n)) for n in (1, 3)]
  s += [
    ("proc_acrobot_2", "pendulum", dict(n_links=2, actuated="last")),
    ("proc_pendubot_2", "pendulum", dict(n_links=2, actuated="first")),
  ]
  s += [(f"proc_cartpole_{n}", "cartpole", dict(n_poles=n)) for n in (1, 2, 3)]
  s += [(f"proc_hand_f{f}j{j}", "hand", dict(n_fingers=f, joints=j)) for f, j in [(2, 2), (3, 3), (4, 3), (4, 2)]]
  s += [
    ("proc_hand_f4j3_abd", "hand", dict(n_fingers=4, joints=3, abduction=True)),
    ("proc_hand_f3j3_ball", "hand", dict(n_fingers=3, joints=3, ball=True)),
  ]
  return s


# (robot name, family, generator kwargs) for the fixed procedural corpus.
ROBOT_SPECS: tuple[tuple[str, str, dict], ...] = tuple(_specs())


def procedural_robots() -> list[tuple[str, str]]:
  """(robot_name, MJCF string) for every robot in ROBOT_SPECS, in a fixed order."""
  return [(n, FAMILIES[fam](**kw, name=n)) for n, fam, kw in ROBOT_SPECS]


def topology_signature(model) -> str:
  """Canonical string of a compiled MjModel's kinematic tree: the body tree shape plus the
  joint types of each body (children unordered, so mirror images count as one)."""
  kind = "FBSH"  # mjJNT_FREE, BALL, SLIDE, HINGE
  children: dict[int, list[int]] = {}
  for b in range(1, model.nbody):
    children.setdefault(int(model.body_parentid[b]), []).append(b)

  def sig(b: int) -> str:
    adr, num = model.body_jntadr[b], model.body_jntnum[b]
    joints = "".join(sorted(kind[model.jnt_type[j]] for j in range(adr, adr + num)))
    return joints + "(" + ",".join(sorted(sig(c) for c in children.get(b, []))) + ")"

  return sig(0)
