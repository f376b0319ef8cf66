"""3D multi-legged walkers on a free joint: ant-, insect- and mammal-style legged torsos and
centipedes of jointed body segments.
"""

from __future__ import annotations

import math

from westworld_jax.robots.mjcf_writer import (
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
  scale,
  sphere,
  unit,
)


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
