"""Procedural robots and hand-written held-out assets: compile, determinism, diversity,
short random rollouts, parameter validation and MJX compatibility."""

import mujoco
import numpy as np
import pytest

from westworld_jax.robots import procedural as P
from westworld_jax.robots.planar_locomotors import cheetah, planar_walker
from westworld_jax.robots.snakes_swimmers import snake
from westworld_jax.robots.catalogue import ASSET_DIR

ASSETS = sorted(ASSET_DIR.glob("*.xml"))
ROBOTS = P.procedural_robots()


def _models():
  for name, xml in ROBOTS:
    yield name, mujoco.MjModel.from_xml_string(xml)
  for path in ASSETS:
    yield path.stem, mujoco.MjModel.from_xml_path(str(path))


@pytest.mark.timeout(30)
def test_corpus_size_and_names():
  names = [n for n, _ in ROBOTS]
  assert len(names) >= 45
  assert len(set(names)) == len(names)
  assert all(n.startswith("proc_") for n in names)
  assert {p.stem for p in ASSETS} >= {"franka_panda", "cassie_like", "unitree_a1"}


@pytest.mark.timeout(30)
def test_everything_compiles_within_model_limits():
  for name, m in _models():
    assert m.nu >= 1, name
    assert m.nbody <= 64 and m.nu <= 64, name  # structural-embedding / action-slot bounds
    assert np.all(m.actuator_ctrlrange == [-1.0, 1.0]), name
    assert m.opt.solver != mujoco.mjtSolver.mjSOL_PGS, name


@pytest.mark.timeout(30)
def test_initial_pose_within_joint_limits():
  for name, m in _models():
    for j in np.flatnonzero(m.jnt_limited):
      q = m.qpos0[m.jnt_qposadr[j]]
      lo, hi = m.jnt_range[j]
      assert lo - 1e-6 <= q <= hi + 1e-6, (name, m.joint(j).name, q, lo, hi)


@pytest.mark.timeout(30)
def test_generators_are_deterministic():
  assert P.procedural_robots() == ROBOTS
  for family, kwargs in [
    ("walker", dict(legs=(2, 3))),
    ("legged", dict(n_legs=6)),
    ("hand", dict(ball=True)),
    ("arm", dict(gripper=True)),
  ]:
    assert P.FAMILIES[family](**kwargs) == P.FAMILIES[family](**kwargs)
  assert planar_walker(legs=(2, 2)) != planar_walker(legs=(2, 3))


@pytest.mark.timeout(30)
def test_topologies_are_diverse():
  signatures = {P.topology_signature(mujoco.MjModel.from_xml_string(x)) for _, x in ROBOTS}
  assert len(signatures) >= 35
  # Mirror images share a topology; a different joint type does not.
  sig = lambda xml: P.topology_signature(mujoco.MjModel.from_xml_string(xml))  # noqa: E731
  assert sig(cheetah(back=2, front=3)) == sig(cheetah(back=3, front=2))
  assert sig(snake(n_links=4)) != sig(snake(n_links=4, pitch=True))


@pytest.mark.timeout(45)
def test_random_rollouts_stay_finite():
  rng = np.random.default_rng(0)
  for name, m in _models():
    d = mujoco.MjData(m)
    for _ in range(200):
      d.ctrl[:] = rng.uniform(-1.0, 1.0, m.nu)
      mujoco.mj_step(m, d)
    assert np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all(), name
    assert np.abs(d.qvel).max() < 1e3, name
    assert not any(w.number for w in d.warning), (name, [w.number for w in d.warning])


@pytest.mark.parametrize(
  "family, kwargs, message",
  [
    ("walker", dict(legs=()), "legs"),
    ("walker", dict(legs=(0, 0)), "at least one leg"),
    ("walker", dict(legs=(5,)), "segments per leg"),
    ("hopper", dict(segments=1), "segments"),
    ("cheetah", dict(back=0, front=0), "at least one leg"),
    ("humanoid2d", dict(arms=3), "arms"),
    ("legged", dict(n_legs=0), "n_legs"),
    ("legged", dict(n_legs=5, layout="lateral"), "even number"),
    ("legged", dict(layout="octopus"), "layout"),
    ("centipede", dict(n_segments=1), "n_segments"),
    ("snake", dict(n_links=0), "n_links"),
    ("swimmer", dict(n_links=2.5), "n_links"),
    ("arm", dict(n_joints=0), "n_joints"),
    ("arm", dict(n_joints=8), "n_joints"),
    ("pendulum", dict(n_links=0), "n_links"),
    ("pendulum", dict(actuated="middle"), "actuated"),
    ("cartpole", dict(n_poles=0), "n_poles"),
    ("hand", dict(n_fingers=1), "n_fingers"),
    ("hand", dict(joints=4), "joints"),
    ("walker", dict(leg_length=-1.0), "leg_length"),
  ],
)
@pytest.mark.timeout(10)
def test_malformed_parameters_raise(family, kwargs, message):
  with pytest.raises(ValueError, match=message):
    P.FAMILIES[family](**kwargs)


@pytest.mark.timeout(45)
def test_models_load_into_mjx():
  mjx = pytest.importorskip("mujoco.mjx")
  for name, m in _models():
    mjx.put_model(m)  # raises NotImplementedError for unsupported features
