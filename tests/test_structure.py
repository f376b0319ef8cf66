"""LCRS structure indices against hand computations."""

import numpy as np

from westworld_jax.robots import load_robot
from westworld_jax.robots.structure import body_indices, lcrs_ranks

# world(0); object A: 1 -> [2 -> [3, 4], 5 -> [6]]; object B: 7 -> [8]
PARENT = [0, 0, 1, 2, 2, 1, 5, 0, 7]


def test_lcrs_ranks_match_hand_computation():
  # LCRS of A: 1.left=2; 2.left=3, 2.right=5; 3.right=4; 5.left=6.
  # pre (node,L,R): 1 2 3 4 5 6; in (L,node,R): 3 4 2 6 5 1; post (L,R,node): 4 3 6 5 2 1
  ranks = lcrs_ranks(PARENT, 1)
  assert ranks == {1: (0, 5, 5), 2: (1, 2, 4), 3: (2, 0, 1), 4: (3, 1, 0), 5: (4, 4, 3), 6: (5, 3, 2)}
  assert lcrs_ranks(PARENT, 7) == {7: (0, 1, 1), 8: (1, 0, 0)}


def test_path_tree_is_deep_and_iterative():
  n = 3000  # a long snake must not hit Python's recursion limit
  parent = [0] + list(range(0, n))
  ranks = lcrs_ranks(parent, 1)
  assert ranks[1] == (0, n - 1, n - 1) and ranks[n] == (n - 1, 0, 0)


def test_object_zero_is_the_actuated_one_and_others_by_distance():
  names = [f"b{i}" for i in range(len(PARENT))]
  pos = np.zeros((len(PARENT), 3))
  pos[7] = [1.0, 0, 0]
  idx = body_indices(names, PARENT, actuated_bodies=[8, 8], root_positions=pos)
  by_name = {b.name: b for b in idx}
  assert by_name["b7"].object == 0 and by_name["b8"].object == 0
  assert by_name["b1"].object == 1
  assert by_name["b3"].as_tuple() == (1, 2, 0, 1)


MJCF = """
<mujoco model="two_objects">
  <worldbody>
    <geom type="plane" size="5 5 .1"/>
    <body name="ball" pos="3 0 1"><freejoint/><geom type="sphere" size=".1"/></body>
    <body name="base" pos="0 0 0">
      <geom type="box" size=".1 .1 .1"/>
      <body name="upper" pos="0 0 .2"><joint name="shoulder" axis="0 1 0"/><geom type="capsule" fromto="0 0 0 0 0 .3" size=".03"/>
        <body name="lower" pos="0 0 .3"><joint name="elbow" axis="0 1 0"/><geom type="capsule" fromto="0 0 0 0 0 .3" size=".03"/></body>
        <body name="side" pos="0 0 .1"><joint name="wrist" type="slide" axis="1 0 0"/><geom type="sphere" size=".03"/></body>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="shoulder"/><motor joint="elbow"/><position joint="wrist" kp="10"/></actuator>
</mujoco>
"""


def test_robot_structure_from_mjcf():
  r = load_robot(MJCF)
  b = {x.name: x.as_tuple() for x in r.bodies}
  # Object 0 = the actuated arm (base -> upper -> [lower, side]), the free ball is object 1.
  # LCRS: base.left=upper; upper.left=lower; lower.right=side.
  assert b["base"] == (0, 0, 3, 3)
  assert b["upper"] == (0, 1, 2, 2)
  assert b["lower"] == (0, 2, 0, 1)
  assert b["side"] == (0, 3, 1, 0)
  assert b["ball"] == (1, 0, 0, 0)
  acts = {c.name or "": (c.kind, c.body) for c in r.act_channels}
  assert [c.kind for c in r.act_channels] == ["motor", "motor", "position"]
  assert [c.body for c in r.act_channels] == ["upper", "lower", "side"]
  # Channel structure rows follow the channel's body.
  np.testing.assert_array_equal(r.act_struct()[1], b["lower"])
  assert acts
