"""westworld_jax: a knowledge-encoded trajectory world model for many robots, in JAX/Flax."""

__version__ = "0.1.0"
