"""westworld_jax: a knowledge-encoded trajectory world model for many robots, in JAX/Flax.

import westworld_jax as ww
model = ww.load("westworld-cpu")  # or a training workdir
future_obs = model.predict("hopper", obs, act, future_act)  # westworld_jax/api.py
"""

__version__ = "0.1.0"


def load(name_or_path: str, step: int | None = None):
  """A world model: a shipped one by name (`shipped()`) or a training workdir. See westworld_jax/api.py."""
  from westworld_jax import api  # pylint: disable=import-outside-toplevel  (keeps `import westworld_jax` light)

  return api.load(name_or_path, step)


def shipped() -> list[str]:
  """Names of the world models shipped in the package."""
  from westworld_jax import api  # pylint: disable=import-outside-toplevel

  return api.shipped()


def read_episodes(path: str, robot) -> list[dict]:
  """Episodes of a D4RL-layout HDF5/.npz file of a robot's data. See westworld_jax/api.py."""
  from westworld_jax import api  # pylint: disable=import-outside-toplevel

  return api.read_episodes(path, robot)


def windows(episodes, history: int, horizon: int, stride: int = 1):
  """Prediction windows (obs, act, future_act, future_obs) cut from episodes. See westworld_jax/api.py."""
  from westworld_jax import api  # pylint: disable=import-outside-toplevel

  return api.windows(episodes, history, horizon, stride)
