"""Procedural robot morphologies, generated as complete MJCF strings: the registry of families and
the fixed corpus.

The packages we can install offline ship about 35 robots; the pretraining corpus needs many
more kinematic trees. The generators write them, in the spirit of the WestWorld paper's DMC,
Modular-RL and DB-1 variants, one module per kind of morphology:

  planar_locomotors.py  planar_walker, hopper, cheetah, humanoid2d: planar (rootz, rootx, rooty) locomotors
  legged_walkers.py     legged, centipede: 3D multi-legged walkers on a free joint
  snakes_swimmers.py    snake, swimmer: link chains on a floor or in a viscous fluid
  fixed_base.py         arm, pendulum, cartpole, hand: fixed-base manipulators and classic control

Every generator is a pure function of its parameters (same arguments -> identical XML) and
returns a self-contained MJCF string (written with mjcf_writer.py): motors with ctrlrange [-1, 1]
(torque = gear * ctrl), limited and damped joints with armature, a Newton solver with pyramidal
cones (accepted by MJX), and contype/conaffinity bits such that robot geoms touch only the floor
and free objects, never each other. The actuated robot is always the first body under <worldbody>
(object 0 of the structural embedding); free objects follow it.

`FAMILIES` maps a family name to its generator; `procedural_robots()` renders the fixed list
`ROBOT_SPECS`; `topology_signature()` names a compiled model's kinematic tree.
"""

from __future__ import annotations

from typing import Callable

from westworld_jax.robots import fixed_base, legged_walkers, planar_locomotors, snakes_swimmers

FAMILIES: dict[str, Callable[..., str]] = {
  "walker": planar_locomotors.planar_walker,
  "hopper": planar_locomotors.hopper,
  "cheetah": planar_locomotors.cheetah,
  "humanoid2d": planar_locomotors.humanoid2d,
  "legged": legged_walkers.legged,
  "centipede": legged_walkers.centipede,
  "snake": snakes_swimmers.snake,
  "swimmer": snakes_swimmers.swimmer,
  "arm": fixed_base.arm,
  "pendulum": fixed_base.pendulum,
  "cartpole": fixed_base.cartpole,
  "hand": fixed_base.hand,
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
