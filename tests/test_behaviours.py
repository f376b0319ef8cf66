"""pd_hold: legged robots stay up for long episodes, move, and are deterministic by seed."""

import mujoco
import numpy as np
import pytest

from westworld_jax.data import episodes, pd_hold, simulate
from westworld_jax.robots import catalogue

ROBOT = "unitree_a1"  # a quadruped with torque motors; cheap to simulate (4 physics steps per control)
N, T = 4, 300


@pytest.fixture(scope="module")
def sim():
  with simulate.Simulator(catalogue.load(ROBOT), nthread=2) as s:
    yield s


def _generate(sim, seed):
  rng = episodes.episode_rng(seed, f"{ROBOT}-pd_hold", 0)
  return episodes.generate(sim, "pd_hold", catalogue.LOCOMOTION, rng, N, T)


@pytest.fixture(scope="module")
def run(sim):
  return _generate(sim, 0)


def test_pd_hold_keeps_a_quadruped_up(sim, run):
  eps, counts = run
  assert counts.unstable == 0 and counts.kept == N
  kinds = [c.kind for c in sim.robot.obs_channels]
  quat, height = kinds.index("root_quat"), kinds.index("root_height")
  up = 0
  for e in eps:
    tilt_ok = simulate.up_in_body(e["obs"][:, quat : quat + 4])[:, 2] > 0.5  # < 60 degrees of tilt
    height_ok = e["obs"][:, height] > 0.6 * e["obs"][0, height]
    up += len(e["obs"]) >= 300 and bool((tilt_ok & height_ok).all())
  assert up >= N - 1, f"only {up} of {N} episodes stayed up for 300 steps"


def test_pd_hold_moves(sim, run):
  eps, _ = run
  joints = [i for i, c in enumerate(sim.robot.obs_channels) if c.kind == "joint_pos"]
  joint_std = np.mean([e["obs"][:, joints].std(0).mean() for e in eps])
  assert joint_std > 0.02, f"joints barely move (std {joint_std:.4f} rad)"
  assert np.mean([e["act"].std(0).mean() for e in eps]) > 0.01 * np.mean(sim.robot.act_high - sim.robot.act_low)


def test_pd_hold_is_deterministic_by_seed(sim, run):
  again, _ = _generate(sim, 0)
  for x, y in zip(run[0], again):
    np.testing.assert_array_equal(x["obs"], y["obs"])
    np.testing.assert_array_equal(x["act"], y["act"])
  other, _ = _generate(sim, 1)
  assert not np.array_equal(run[0][0]["act"], other[0]["act"])


def test_hold_pd_gains_are_stable_for_the_held_control_step():
  """The motor PD, held for frame_skip physics steps, is stable on the free-floating robot."""
  robot = catalogue.load(ROBOT)
  h = pd_hold._hold(robot)
  m = robot.model
  d = mujoco.MjData(m)
  mujoco.mj_resetData(m, d)
  mujoco.mj_fwdPosition(m, d)
  M = np.empty((m.nv, m.nv))
  mujoco.mj_fullM(m, d, M)
  Minv, dt, nv = np.linalg.inv(M), robot.dt, m.nv
  K, D = np.zeros((nv, nv)), np.zeros((nv, nv))
  np.add.at(K, (h.vadr[h.motor], h.vadr[h.motor]), h.kp[h.motor])
  np.add.at(D, (h.vadr[h.motor], h.vadr[h.motor]), h.kd[h.motor])
  eye = np.eye(nv)
  A = np.block(
    [[eye - dt * dt / 2 * Minv @ K, dt * eye - dt * dt / 2 * Minv @ D], [-dt * Minv @ K, eye - dt * Minv @ D]]
  )
  assert np.abs(np.linalg.eigvals(A)).max() <= 1 + 1e-6  # unactuated (free-base) modes sit at 1
  assert h.motor.all() and (h.kp > 0).all() and h.stand_qpos is not None


def test_pd_hold_uprightness_reads_tilt_for_any_root_axes():
  """A root whose body y axis points up (the CMU humanoid's) tipped 90 degrees about its own z axis
  has fallen: pd_hold's uprightness must say so (the body-z measure it replaced read 'upright')."""
  import dataclasses
  import types

  h = types.SimpleNamespace(**{f.name: None for f in dataclasses.fields(pd_hold._Hold)})
  h.root_z, h.root_angle, h.root_quat = -1, -1, np.arange(3, 7)

  def qmul(a, b):
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
      [
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
      ]
    )

  c = np.cos(np.pi / 4)
  y_up = np.array([c, c, 0, 0])  # +90 degrees about x: body y -> world z, body z -> world -y
  tipped = qmul(np.array([c, 0, c, 0]), y_up)  # then 90 degrees about world y, i.e. about the body z axis
  qpos0, qpos = np.zeros(7), np.zeros(7)
  qpos0[3:], qpos[3:] = y_up, tipped
  one = np.ones(())
  up, _ = pd_hold._up_and_height(h, qpos, qpos0, one, one)
  assert up == pytest.approx(0.0, abs=1e-9)
  up_still, _ = pd_hold._up_and_height(h, qpos0, qpos0, one, one)
  assert up_still == pytest.approx(1.0)
