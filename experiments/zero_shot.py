"""Zero-shot evaluation: `python -m westworld_jax.evaluate --config experiments/zero_shot.py[:variant]
--checkpoint DIR[,label=DIR...] [--workdir OUT] [--robot FILE.xml --data PATH]`.

Held-out robots (never in pretraining): gym Walker2d, gym Hopper and Franka Panda. Each is evaluated on
its own held-out (val) episodes, normalised with its own training-episode min-max (see
westworld_jax/evaluation for the protocol). Missing environments are generated with `collect`.

Variants:
  cpu   (default) the CPU-scale experiment (corpus/cpu, see experiments/scaling.py): hopper and
        walker2d under their trained expert and medium policies (hopper-policy_expert, ...; as D4RL),
        franka_panda-pd_targets; checkpoints from `python -m westworld_jax.scaling` or
        `python -m westworld_jax.learning_curve`.
  cpu_gait  the same robots under open-loop gaits (hopper-gait, walker2d-gait; they topple).
  tiny  the tiny corpus (experiments/data.py:tiny): hopper-gait and franka_panda-pd_targets.
  base  the paper's setting: every zero-shot environment of the full corpus, the checkpoint's
        history (50) and horizon (100).
"""

import ml_collections

from westworld_jax import config_files


def _scaling():
  return config_files.load_sibling(__file__, "scaling")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  sc = _scaling()
  c = ml_collections.ConfigDict()
  c.title = "Zero-shot trajectory prediction"
  c.checkpoints = ""  # "DIR" or "label=DIR", comma-separated (a label twice = seeds); --checkpoint overrides
  c.require_unseen = True  # refuse checkpoints trained on an evaluated robot
  c.horizon = 0  # 0: the checkpoint's data.horizon
  c.batch_size = 8
  c.max_windows = 0  # per environment; 0 = every held-out window
  c.plot_windows = 2  # predicted-vs-true plots per (checkpoint, environment)
  c.import_val_fraction = 0.5  # --robot/--data: share of the user's episodes held out
  if variant in ("cpu", "cpu_gait"):
    c.corpus_dir = sc.CPU_CORPUS
    c.environments = sc.CPU_ZERO_SHOT_ENVS if variant == "cpu" else sc.CPU_ZERO_SHOT_GAIT_ENVS
    c.collect = sc.heldout_collect("cpu", c.environments)
  elif variant == "tiny":
    c.corpus_dir = "corpus/tiny"
    c.environments = ("hopper-gait", "franka_panda-pd_targets")
    c.collect = sc.heldout_collect("tiny", c.environments)
  elif variant == "base":
    from westworld_jax.robots import catalogue

    c.corpus_dir = "corpus/full"
    c.environments = tuple(e.name for e in catalogue.environments_in(catalogue.ZERO_SHOT))
    c.collect = sc.heldout_collect("base", c.environments)
    c.batch_size = 14
  else:
    raise ValueError(f"unknown zero_shot variant {variant!r}: use cpu, cpu_gait, tiny or base")
  return c
