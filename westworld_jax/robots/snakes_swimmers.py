"""Link chains: snakes on a frictional floor, swimmers in a viscous fluid."""

from __future__ import annotations

from westworld_jax.robots.mjcf_writer import (
  YAW,
  Joint,
  Seg,
  chain,
  check_int,
  mjcf,
)


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
