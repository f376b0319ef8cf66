"""Fixed-base manipulators and classic control: serial arms, pendulums, cart-poles and hands."""

from __future__ import annotations

from westworld_jax.robots.mjcf_writer import (
  UP,
  YAW,
  Body,
  Joint,
  Seg,
  capsule,
  chain,
  check_int,
  cross,
  mjcf,
  scale,
  unit,
  walk,
)


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
