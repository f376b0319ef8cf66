"""The control table: `python -m westworld_jax.control.table --config experiments/control_table.py[:cpu|paper]
[--workdir DIR]`.

Every row of the paper's control comparison, under the authors' protocol (experiments/control.py:
<robot>_paper[_cpu]; docs/upstream.md, "Control protocol"), for each robot in `robots` (hopper,
walker2d; `go1` adds Go1 walking forward under the task's own cost, whose policies have no expert):
  expert_policy, oracle, random    the PPO expert, simulator MPPI, uniform random actions;
  world_model x each of `models`   MPPI with the model pretrained (`pretrained`: a training workdir
                                   per model, or '' = train it here with `pretrain[model]`) and
                                   fine-tuned on simulator-MPPI rollouts by each recipe of `recipes`.
Fine-tuning data: `collect_episodes` oracle-MPPI episodes from their own start states (not the
evaluation's) and the action sequences their MPPI sampled (`sampled`), kept per recipe. A pretrained
model plans normalised with the min-max of those MPPI rollouts (as the authors do; the executed
episodes alone never reach a fall's states), a fine-tuned one with its own data's. `oracle_at_world_model_size`
adds the oracle at the world model's samples x horizon: what a perfect model could reach there.
Each finished episode is a file: a rerun (e.g. after an interruption) skips it and the finished
training runs.

Variants:
  cpu    (default) the CPU sizes of <robot>_paper_cpu (C oracle 128 x 100, world model 64 x 24 with
         the CPU-recipe models of experiments/pretrain.py:cpu*), 3 episodes of 1000 steps.
  paper  the paper's sizes (<robot>_paper: 256 x 100 for every planner): meant for an accelerator,
         with models whose window holds history + 100 steps (pass --config.pretrained.<model>=DIR).
  tiny   a smoke test: hopper, the tiny WestWorld, 2 episodes of 40 steps, tiny planners, 2 training steps.
Recipes (finetune.recipes; `recipe_names` picks which run): keep (fraction of the collected episodes kept,
best by return), action_noise (std of Gaussian noise added to the oracle's executed actions while
collecting, as a fraction of each actuator's half range), rounds (> 1: plan with the fine-tuned model
from the collection start states, add its episodes and fine-tune again from it), sampled (add the
MPPI-sampled rollouts of `sampled`, the authors' fine-tuning data), steps / lr (this recipe's own
fine-tuning schedule; default finetune.steps / finetune.lr).
"""

import ml_collections

from westworld_jax import config_files

# TDM last: its replan is the slowest (token-by-token decoding; benchmarks/results/wm_replan_cpu.json).
MODELS = ("westworld", "trajworld", "mlp_ensemble", "tdm")


def _load(name: str):
  return config_files.load_sibling(__file__, name)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  if variant not in ("cpu", "paper", "tiny"):
    raise ValueError(f"unknown control_table variant {variant!r}: use cpu, paper or tiny")
  control, pretrain = _load("control"), _load("pretrain")
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.robots = ("hopper", "walker2d")
  suffix = "_paper" if variant == "paper" else "_paper_cpu"
  c.control = ml_collections.ConfigDict({r: control.get_config(r + suffix) for r in ("hopper", "walker2d")})
  # Go1 walking forward (the task's cost: no expert episode to track), 250-step episodes.
  go1 = control.get_config("go1")
  go1.policies = ("oracle", "random", "world_model")
  go1.episode_len = 250
  if variant != "paper":
    go1.mppi.samples, go1.mppi.horizon = 128, 50
    go1.policy_mppi = ml_collections.ConfigDict({"world_model": dict(samples=64, horizon=24)})
    go1.render.width, go1.render.height = 160, 120
  c.control.go1 = go1
  for r in c.control:
    c.control[r].render.enabled = True
  c.policies = ("expert_policy", "oracle", "random", "world_model")
  c.models = MODELS
  c.episodes = 3
  c.episode_len = 0  # 0: each robot's control config (1000 steps under the paper protocol)
  c.seed = 0
  c.pretrained = ml_collections.ConfigDict({m: "" for m in MODELS})  # '' = train with pretrain[m] in DIR/pretrain/m
  c.pretrain = ml_collections.ConfigDict({m: pretrain.get_config(f"cpu_{m}") for m in MODELS})
  c.collect_episodes = 4  # oracle-MPPI episodes for fine-tuning (their own start states): 4,000 steps
  # Fine-tuning: training/finetune.py (the pretrained run's model and recipe, a fresh optimizer).
  c.finetune = ml_collections.ConfigDict(
    dict(
      steps=300,
      lr=1e-4,  # the CPU models' few-shot lr (experiments/few_shot.py:cpu), pretrained at 2e-3
      warmup_steps=0,
      final_lr_fraction=1.0,
      batch_size=8,
      val_fraction=0.1,
      recipes=dict(
        all=dict(keep=1.0, action_noise=0.0, rounds=1, sampled=False),
        best=dict(keep=0.5, action_noise=0.0, rounds=1, sampled=False),  # the best half
        noisy=dict(keep=1.0, action_noise=0.1, rounds=1, sampled=False),
        iterative=dict(keep=1.0, action_noise=0.0, rounds=2, sampled=False),
        sampled=dict(keep=1.0, action_noise=0.0, rounds=1, sampled=True),  # + MPPI-sampled rollouts (upstream's data)
        # the same data, trained longer at the pretraining's order of learning rate
        sampled_long=dict(keep=1.0, action_noise=0.0, rounds=1, sampled=True, steps=1500, lr=1e-3),
      ),
    )
  )
  # The authors fine-tune on the rollouts their simulator MPPI samples at every step: while collecting,
  # every `every` steps `count` action sequences drawn as the planner draws its candidates are simulated
  # from the true state and kept as windows of the real history + the sampled future
  # (control/sampled_rollouts.py), the world model's windows (experiments/scaling.py: 16 + 24).
  c.sampled = ml_collections.ConfigDict(dict(history=16, horizon=24, every=10, count=16))
  c.recipe_names = ("sampled",)  # the default recipe (benchmarks/results/control_paper_cpu: the study of all of them)
  c.oracle_at_world_model_size = True  # also the oracle at the world model's samples x horizon (a ceiling)
  c.plan_check_every = 10  # world-model MPPI: predicted vs simulated cost of the chosen plan every N steps (0: never)
  # ... and of this many candidates drawn around it as MPPI draws them: does the model order plans as
  # the physics does (rank correlation, the simulated quantile of its favourite)? 0: the chosen plan only.
  c.plan_check_candidates = 64

  if variant == "paper":
    c.sampled.update(history=50, horizon=100)  # base models' windows
  if variant == "tiny":
    c.robots = ("hopper",)
    c.models = ("westworld",)
    c.episodes, c.episode_len, c.collect_episodes = 2, 40, 2  # 40 >= the tiny model's 32-step training window
    for r in c.control:
      ctl = c.control[r]
      ctl.mppi.samples, ctl.mppi.horizon = 16, 8
      ctl.policy_mppi = ml_collections.ConfigDict({"world_model": dict(samples=8, horizon=8)})
      ctl.render.enabled = False
    tiny = pretrain.get_config("tiny")
    tiny.total_steps = 2
    tiny.checkpoint.update(every=2, keep=1, async_save=False)
    tiny.eval.update(every=10**9, max_batches=0)
    tiny.log.update(every=1, tensorboard=False, progress=False)
    c.pretrain.westworld = tiny
    c.finetune.update(steps=2, batch_size=4, val_fraction=0.0)
    c.plan_check_every = 4
    c.plan_check_candidates = 4
    c.sampled.update(history=8, horizon=8, every=8, count=4)
  return c
