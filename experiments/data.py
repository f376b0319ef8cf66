"""Corpus generation config: `python -m westworld_jax.data.collect --config experiments/data.py[:tiny]`.

Variants:
  (default) every catalogue environment (pretraining + held-out), enough episodes for pretraining.
  tiny      a handful of environments with short episodes: a real corpus in < 2 minutes on 2 CPUs.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.corpus_dir = "corpus/full"
  c.splits = ("pretrain", "zero_shot", "few_shot")
  c.environments = ()  # explicit environment names; empty = every environment of `splits`
  c.max_environments = 0  # 0 = no limit
  c.episodes_per_env = 64
  # MPC costs samples x horizon simulated steps per recorded step (~200x the open-loop cost).
  c.mpc_episodes_per_env = 16
  c.episodes_per_shard = 16
  c.episode_len = 500  # control steps; windows are 150
  c.seed = 0
  c.backend = "rollout"  # 'rollout' (MuJoCo C, multi-threaded) or 'mjx' (accelerators)
  c.nthread = 0  # 0 = all CPU cores
  c.val_fraction = 0.1
  # max_tilt_deg > 0 also ends episodes of tipped-over free roots (off: see simulate.EpisodeChecks).
  c.checks = ml_collections.ConfigDict(dict(max_abs_qvel=1e3, fall_fraction=0.4, max_tilt_deg=0.0, min_length=60))
  c.mpc = ml_collections.ConfigDict(dict(samples=32, horizon=16, noise=0.4, temperature=0.1, discount=0.98))

  if arg == "tiny":
    c.corpus_dir = "corpus/tiny"
    # dmc_walker under pd_hold: open-loop gaits topple it (1 of 8 episodes long enough to keep).
    c.environments = (
      "dmc_cheetah-ou",
      "dmc_cheetah-gait",
      "dmc_reacher-pd_targets",
      "dmc_walker-pd_hold",
      "gym_swimmer-ou",
      "dmc_cartpole-mpc",
      "hopper-gait",
      "franka_panda-pd_targets",
    )
    c.episodes_per_env = 8
    c.mpc_episodes_per_env = 4
    c.episodes_per_shard = 4
    c.episode_len = 200
    c.val_fraction = 0.25
    c.mpc.samples = 8
    c.mpc.horizon = 8
  elif arg not in (None, "", "full"):
    raise ValueError(f"unknown data config variant '{arg}': use '' (full) or 'tiny'")
  return c
