"""Training machinery behind `python -m westworld_jax.train`: mesh, state, step, checkpoints, logs."""
