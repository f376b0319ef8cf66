"""The catalogue: size, diversity, held-out splits, and no leak of held-out robots into pretraining."""

import json
import subprocess
import sys

import pytest

from westworld_jax.robots import catalogue
from tests.hang_guard import guard

HELD_OUT = {
  "walker2d": "zero_shot",
  "hopper": "zero_shot",
  "franka_panda": "zero_shot",
  "cassie": "few_shot",
  "unitree_a1": "few_shot",
  "ur5e": "few_shot",
}


@pytest.fixture(scope="module")
def listing():
  out = subprocess.run(
    [sys.executable, "-m", "westworld_jax.robots", "list", "--json"], capture_output=True, text=True, timeout=guard(280)
  )
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout)


def test_list_has_enough_pretraining_environments_and_trees(listing):
  pre = [r for r in listing if r["split"] == "pretrain"]
  assert len(pre) >= 89
  assert len({r["tree"] for r in pre}) >= 40
  assert {r["split"] for r in listing} == {"pretrain", "zero_shot", "few_shot"}
  for row in listing:
    assert row["obs"] > 0 and row["act"] > 0 and row["dt"] > 0


def test_held_out_robots_are_in_their_splits(listing):
  robots = {r["robot"]: r["split"] for r in listing}
  for name, split in HELD_OUT.items():
    assert robots.get(name) == split, name
  assert not [r for r in listing if r["split"] != "pretrain" and r["robot"] not in HELD_OUT]


def test_held_out_robots_never_leak_into_pretraining():
  held = {catalogue.load(n).fingerprint(): n for n in HELD_OUT}
  files = {catalogue.resolve_source(catalogue.robot_specs()[n].source) for n in HELD_OUT}
  for spec in catalogue.iter_robots(catalogue.PRETRAIN):
    assert catalogue.load(spec.name).fingerprint() not in held, f"{spec.name} duplicates a held-out robot"
    if not spec.source.startswith("procedural:"):
      assert catalogue.resolve_source(spec.source) not in files, spec.name
  # brax ships gym's hopper and walker2d again: they must not be in the catalogue at all.
  assert not any("brax" in s.source for s in catalogue.robot_specs().values())


def test_environment_names_are_unique_and_resolvable():
  names = [e.name for e in catalogue.environments()]
  assert len(names) == len(set(names))
  assert catalogue.env_spec(names[0]).name == names[0]
  with pytest.raises(KeyError, match="robots list"):
    catalogue.env_spec("no_such_env")


def test_legged_robots_get_pd_hold_in_their_own_split():
  envs = {e.name: e for e in catalogue.environments()}
  specs = catalogue.robot_specs()
  for robot in ("quad_go1", "dmc_humanoid", "proc_quadruped_j3", "cassie", "unitree_a1", "walker2d"):
    env = envs[f"{robot}-pd_hold"]
    assert env.split == specs[robot].split, env
  assert not any(e.behaviour == "pd_hold" and specs[e.robot].task != catalogue.LOCOMOTION for e in envs.values())


def test_robot_summaries_are_cached_and_recomputed_when_a_source_changes(tmp_path, monkeypatch):
  """`robots list` reads robot summaries from a cache (compiling all robots takes ~20 s)."""
  monkeypatch.setenv("WESTWORLD_CACHE_DIR", str(tmp_path))
  specs = {n: catalogue.robot_specs()[n] for n in ("hopper", "dmc_cartpole", "proc_hopper_3")}
  monkeypatch.setattr(catalogue, "robot_specs", lambda: specs)
  first = catalogue.summaries()
  for name in specs:
    r = catalogue.load(name)
    assert (first[name]["obs"], first[name]["act"], first[name]["tree"]) == (r.num_obs, r.num_act, r.topology())
  loads = []
  real_load = catalogue.load
  monkeypatch.setattr(catalogue, "load", lambda name: loads.append(name) or real_load(name))
  assert catalogue.summaries() == first and loads == []  # from the cache: nothing compiled
  with open(catalogue.summary_cache_path()) as f:
    cached = json.load(f)
  cached["hopper"]["key"] = "an older file"
  with open(catalogue.summary_cache_path(), "w") as f:
    json.dump(cached, f)
  assert catalogue.summaries() == first and loads == ["hopper"]  # only the changed robot again


def test_a_users_robot_may_not_take_a_catalogue_robots_name(tmp_path):
  xml = '<mujoco model="{}"><worldbody><body><joint type="hinge"/><geom size="0.1"/></body></worldbody><actuator><motor joint="j"/></actuator></mujoco>'
  for name, ok in (("hopper", False), ("my_arm", True)):
    path = tmp_path / f"{name}.xml"
    path.write_text(xml.format(name).replace('type="hinge"', 'name="j" type="hinge"'))
    if ok:
      assert catalogue.user_robot(str(path)).name == "my_arm"
    else:
      with pytest.raises(catalogue.UserError, match="model name 'hopper' is a catalogue robot's"):
        catalogue.user_robot(str(path))
  assert catalogue.user_robot("hopper").name == "hopper"  # the catalogue's own
