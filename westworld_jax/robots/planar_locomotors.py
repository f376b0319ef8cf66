"""Planar locomotors (Modular-RL style walker / hopper / cheetah / humanoid variants): a torso on a
planar (rootz, rootx, rooty) base with legs of a few hinged segments.
"""

from __future__ import annotations

from typing import Sequence

from westworld_jax.robots.mjcf_writer import (
  PITCH,
  Body,
  Joint,
  Seg,
  capsule,
  chain,
  check_int,
  check_pos,
  planar_leg,
  planar_robot,
  sphere,
)


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
