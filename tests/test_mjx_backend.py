"""The MJX backend (westworld_jax/data/mjx_backend.py) against the C `mujoco.rollout` simulator.

Every check runs in a subprocess pinned to one core before jax is imported: jaxlib on two shared
cores can deadlock at the first call of a large vmapped MJX program. The persistent compilation
cache (conftest.py) is inherited, so reruns skip most of the ~50 s CPU compile of an MJX rollout.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.hang_guard import guard

_PRELUDE = """
import os
os.sched_setaffinity(0, {0})  # before jax is imported
import json, warnings
warnings.filterwarnings("ignore")
import numpy as np
"""

# Rollout comparison: MJX vs C from the same start states and controls. Prints one JSON line.
_COMPARE = """
from westworld_jax.robots import catalogue
from westworld_jax.data import mjx_backend, simulate
robot = catalogue.load("dmc_cartpole")
n, T = 3, 20
with mjx_backend.MJXSimulator(robot, sensors=SENSORS) as sim, simulate.Simulator(robot) as ref:
  rng = np.random.default_rng(0)
  start = sim.initial_states(rng, n, noise=0.1)
  ctrl = rng.uniform(robot.act_low, robot.act_high, (n, T, robot.model.nu))
  st, se = sim.run(start, ctrl)
  st2, _ = sim.run(start, ctrl)  # cached executable, deterministic
  rs, rse = ref.run(start, ctrl)
  L = sim.layout
  def rel(a, b):  # relative error with a floor of 1 on the scale (qvel crosses zero)
    return float((np.abs(a - b) / np.maximum(np.abs(b), 1.0)).max())
  print("RESULT", json.dumps({
      "shapes": [list(st.shape), list(se.shape), list(rs.shape), list(rse.shape)],
      "adaptations": sim.adaptations,
      "from_fields": sim.sensors_from_fields,
      "cached": list(sim._compiled) == [(n, T)],
      "repeat_equal": bool(np.array_equal(st, st2)),
      "qpos_rel": rel(st[..., L.qpos], rs[..., L.qpos]),
      "qvel_rel": rel(st[..., L.qvel], rs[..., L.qvel]),
      "qvel_scale": float(np.abs(rs[..., L.qvel]).max()),
      "moved": float(np.abs(rs[:, -1, L.qpos] - start[:, L.qpos]).max()),
      "time_equal": bool(np.array_equal(st[..., 0], rs[..., 0])),
      "time_last": float(st[0, -1, 0]), "time_start": float(start[0, 0]),
      "task_rel": {k: rel(se[..., a:a + 3], rse[..., a:a + 3]) for k, a in robot.sensor_adr.items()},
      "other_sensors_nan": bool(np.isnan(np.delete(se, [a + i for a in robot.sensor_adr.values()
                                                         for i in range(3)], axis=-1)).all()),
  }))
"""

# No jit here: adaptation and put_model only.
_ADAPTED = ("gym_humanoid", "dmc_cartpole", "dmc_quadruped", "quad_hyqreal1", "quad_go1")
_ADAPT = (
  f"NAMES = {_ADAPTED!r}\n"
  + """
from mujoco.mjx._src import collision_driver
from mujoco import mjx
from westworld_jax.robots import catalogue
from westworld_jax.robots.loading import load_robot
from westworld_jax.data import mjx_backend, mjx_model

def world_contacts(m):
  world = m.body_weldid[m.geom_bodyid] == 0
  out = set()
  for g1, g2, _ in collision_driver.geom_pairs(m):
    if world[g1] != world[g2] and collision_driver.has_collision_fn(*sorted(m.geom_type[[g1, g2]])):
      out.add((int(g1), int(g2)))
  return out

res = {}
for name in NAMES:
  model = catalogue.load(name).model
  before = (model.geom_contype.copy(), model.geom_conaffinity.copy(), model.geom_margin.copy(),
            int(model.opt.solver), int(model.opt.enableflags))
  m, changes = mjx_model.mjx_compatible_model(model, name)
  mjx.put_model(m, impl="jax")  # raises if still incompatible
  after = (model.geom_contype, model.geom_conaffinity, model.geom_margin, int(model.opt.solver),
           int(model.opt.enableflags))
  res[name] = {"changes": changes, "world_kept": world_contacts(model) <= world_contacts(m),
               "original_untouched": all(np.array_equal(a, b) for a, b in zip(before, after))}

# A model MJX rejects even after adaptation: an explicit contact pair box-cylinder.
BAD = '''<mujoco model="boxcyl"><worldbody><geom name="floor" type="plane" size="5 5 .1"/>
  <body name="a" pos="0 0 1"><freejoint/><geom name="box" type="box" size=".1 .1 .1"/></body>
  <body name="b" pos="0 0 2"><joint name="h" type="hinge"/><geom name="cyl" type="cylinder" size=".1 .1"/></body>
  </worldbody><contact><pair geom1="box" geom2="cyl"/></contact>
  <actuator><motor joint="h"/></actuator></mujoco>'''
bad = load_robot(BAD, name="boxcyl_bot")
try:
  mjx_backend.MJXSimulator(bad)
  res["bad"] = None
except ValueError as e:
  res["bad"] = str(e)
print("RESULT", json.dumps(res))
"""
)


def _run(code: str, timeout: float = 200.0) -> dict:
  try:
    out = subprocess.run(
      [sys.executable, "-c", textwrap.dedent(_PRELUDE + code)],
      capture_output=True,
      text=True,
      timeout=timeout,
      cwd=os.path.dirname(os.path.dirname(__file__)),
    )
  except subprocess.TimeoutExpired as e:
    pytest.fail(
      f"MJX subprocess timed out after {timeout}s (compile too slow or jaxlib deadlock): {(e.stderr or b'')[-2000:]!r}"
    )
  lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
  assert out.returncode == 0 and lines, f"rc={out.returncode}\nstdout:{out.stdout[-3000:]}\nstderr:{out.stderr[-3000:]}"
  return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sensors", ["auto", "task"])
def test_mjx_rollout_matches_c_rollout(sensors):
  """Same start states and controls: MJX and C MuJoCo agree on qpos/qvel, time and task sensors.

  Tolerance 1e-3 relative (scale floored at 1): MJX runs float32 (unit roundoff 6e-8), and 40 RK4
  steps of a smooth cartpole amplify that to ~1e-6 (measured 5e-8 on qpos, 3e-7 on qvel), while a
  semantic slip -- one physics step too many or too few (0.01 s at qvel ~1-3), the control applied a
  step late, sensors read after integration instead of before -- shows as >= 1e-2.
  """
  r = _run(f"SENSORS = {sensors!r}\n" + _COMPARE)
  n, T = 3, 20
  assert r["shapes"][0] == r["shapes"][2] and r["shapes"][0][:2] == [n, T]
  assert r["shapes"][1] == r["shapes"][3]
  assert r["adaptations"][0] == "enable flag energy off"  # dm_control's cartpole enables energy
  assert r["from_fields"] == (sensors == "task")
  assert r["cached"] and r["repeat_equal"]
  assert r["moved"] > 0.05 and r["qvel_scale"] > 0.5  # the controls actually drive the system
  assert r["qpos_rel"] < 1e-3 and r["qvel_rel"] < 1e-3, r
  assert r["time_equal"] and r["time_last"] == pytest.approx(r["time_start"] + T * 0.02)
  assert set(r["task_rel"]) == {"root_vel", "root_pos", "tip_pos"}
  assert max(r["task_rel"].values()) < 1e-3, r["task_rel"]
  if sensors == "task":
    assert r["other_sensors_nan"]


@pytest.mark.timeout(120)
def test_adaptation_and_incompatible_model():
  r = _run(_ADAPT, timeout=guard(100))
  assert "solver pgs -> newton" in r["gym_humanoid"]["changes"]
  assert r["dmc_cartpole"]["changes"] == ["enable flag energy off"]
  assert any("collision pairs dropped" in c for c in r["dmc_quadruped"]["changes"])
  assert any("margin/gap set to 0" in c for c in r["quad_hyqreal1"]["changes"])
  assert any(c.startswith("cone elliptic -> pyramidal") for c in r["quad_go1"]["changes"])  # condim=1 feet
  for name in _ADAPTED:
    assert r[name]["world_kept"], f"{name}: adaptation dropped a supported robot-vs-world contact"
    assert r[name]["original_untouched"], f"{name}: adaptation modified the robot's own model"
  msg = r["bad"]
  assert msg is not None, "an explicit box-cylinder contact pair should be rejected"
  assert "boxcyl_bot" in msg and "'box' (box)" in msg and "'cyl' (cylinder)" in msg
  assert "backend='rollout'" in msg
