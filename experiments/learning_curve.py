"""Learning curve: `python -m westworld_jax.learning_curve --config experiments/learning_curve.py[:cpu|tiny]
[--workdir DIR]`.

Trains one model (`model`, from `model_configs`) once per seed with a checkpoint every
`pretrain.checkpoint.every` steps, then evaluates every checkpoint zero-shot on the held-out robots,
so a reader sees where the held-out error flattens and how far it sits from holding the last
observation. Override the model or its size on the command line, e.g.
`--config.model=trajworld` or `--config.model_configs.westworld.num_bins=128`.

Variants:
  cpu   (default) the CPU-scale experiment of experiments/scaling.py: 52 pretraining environments,
        small models, windows of 16 + 24 steps, 3000 steps (checkpoints every 250), held-out hopper,
        walker2d and franka.
  tiny  a smoke test on the tiny corpus: 4 steps, checkpoints every 2, held-out hopper.
"""

import ml_collections

from westworld_jax import config_files


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  if variant not in ("cpu", "tiny"):
    raise ValueError(f"unknown learning_curve variant {variant!r}: use cpu or tiny")
  sc = config_files.load_sibling(__file__, "scaling").get_config(variant)
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.model = "westworld"
  c.seeds = (0,)
  c.pretrain = sc.pretrain
  c.model_configs = sc.model_configs
  c.eval_environments = sc.eval_environments
  c.eval_collect = sc.eval_collect
  c.eval = ml_collections.ConfigDict(dict(batch_size=8, max_windows=0))
  if variant == "cpu":  # scaling.py's runs (3000 steps), with a checkpoint every 250
    c.pretrain.checkpoint.update(every=250, keep=1000, async_save=False)
  else:
    c.pretrain.data.environments = sc.environments
    c.pretrain.total_steps = 4
    c.pretrain.checkpoint.update(every=2, keep=1000, async_save=False)
    c.eval.max_windows = 4
  return c
