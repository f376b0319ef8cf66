"""Few-shot adaptation: `python -m westworld_jax.few_shot --config experiments/few_shot.py[:variant]
--config.pretrained=westworld=DIR,trajworld=DIR,tdm=DIR,mlp_ensemble=DIR [--workdir OUT]`.

Each pretrained model is fine-tuned on exactly `episodes` (10) training episodes of each held-out
few-shot robot (Cassie, Unitree A1, UR5e), and compared with the same model trained from scratch on
the same episodes and with the pretrained model as is (zero-shot). Evaluation: the robot's held-out
episodes, westworld_jax/evaluation's protocol.

Variants:
  cpu   (default) the CPU-scale experiment (corpus/cpu, experiments/scaling.py): cassie-pd_hold,
        unitree_a1-policy_expert, ur5e-pd_targets; 100 steps at lr 1e-4 (tiny models pretrained at 2e-3;
        upstream's 300 steps at 1e-5 are for the base model pretrained at 2e-4).
  tiny  a smoke test on the tiny corpus: ur5e-pd_targets, 2 episodes, 4 steps.
  base  upstream's recipe: 300 steps at lr 1e-5, batch 14, the full corpus.
"""

import ml_collections

from westworld_jax import config_files


def _scaling():
  return config_files.load_sibling(__file__, "scaling")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  sc = _scaling()
  c = ml_collections.ConfigDict()
  c.pretrained = ""  # "label=DIR,..." pretraining workdirs (WestWorld and baselines)
  c.scratch = ("westworld",)  # labels also trained from scratch on the same episodes
  c.include_zero_shot = True  # also evaluate each pretrained model without adaptation
  c.environments = sc.CPU_FEW_SHOT_ENVS
  c.corpus_dir = sc.CPU_CORPUS
  c.collect = sc.heldout_collect("cpu", c.environments)
  c.episodes = 10  # EXACTLY this many training episodes per robot (the first ones in corpus order)
  c.steps = 300
  c.lr = 1e-5
  c.warmup_steps = 0
  c.final_lr_fraction = 1.0  # constant lr
  c.scratch_steps = 300
  c.scratch_lr = 2e-4
  c.scratch_warmup_steps = 30
  c.batch_size = 8
  c.seeds = (0,)  # fine-tuning seeds, per pretrained checkpoint (a label given n times = n pretraining seeds)
  c.scratch_seeds = ()  # seeds of the scratch runs; () = `seeds`
  c.eval = ml_collections.ConfigDict(dict(batch_size=8, max_windows=0, plot_windows=1))
  if variant == "cpu":
    c.steps = c.scratch_steps = 100
    c.lr = 1e-4
    c.scratch_lr = 2e-3
    c.scratch_warmup_steps = 10
  elif variant == "tiny":
    c.environments = ("ur5e-pd_targets",)
    c.corpus_dir = "corpus/tiny"
    c.collect = sc.heldout_collect("tiny", c.environments)
    c.episodes = 2
    c.steps = c.scratch_steps = 4
    c.lr, c.scratch_lr, c.scratch_warmup_steps = 1e-4, 2e-3, 1
    c.eval.max_windows = 8
  elif variant == "base":
    c.corpus_dir = "corpus/full"
    from westworld_jax.robots import catalogue

    c.environments = tuple(e.name for e in catalogue.environments_in(catalogue.FEW_SHOT))
    c.collect = sc.heldout_collect("base", c.environments)
    c.batch_size = c.eval.batch_size = 14
  else:
    raise ValueError(f"unknown few_shot variant {variant!r}: use cpu, tiny or base")
  return c
