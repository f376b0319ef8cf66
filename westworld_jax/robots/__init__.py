"""Robots: load any MJCF/URDF into channels + kinematic structure; the offline robot catalogue."""

from westworld_jax.robots.catalogue import (
  EnvSpec,
  RobotSpec,
  env_spec,
  environments,
  environments_in,
  load,
  robot_specs,
)
from westworld_jax.robots.from_model import robot_from_model
from westworld_jax.robots.loading import load_robot
from westworld_jax.robots.robot import ACT_KINDS, OBS_KINDS, Channel, Robot, RobotLoadError
from westworld_jax.robots.structure import BodyIndex, body_indices, lcrs_ranks
