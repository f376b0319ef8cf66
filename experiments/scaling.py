"""Scaling: `python -m westworld_jax.scaling --config experiments/scaling.py[:cpu|tiny|base] [--workdir DIR]`.

Pretrains each model in `models` on the first N environments of `environments` for every N in
`num_envs` (0 = all), with the same steps, batch and schedule for every N, and evaluates every run on
a FIXED set: the held-out zero-shot environments (`eval_environments`, robots never trained on)
and the val episodes of the first environment (`anchor`, in every run); plus, for reference, the
val episodes of the environments that run trained on (that set grows with N).

Variants:
  cpu   (default) what a 2-core CPU can run: 52 cheap pretraining environments (16 episodes of 128
        steps each, one robot-behaviour pair per environment, robots of <= 40 obs / 16 act channels;
        18 of them PPO policies trained here, D4RL style), small models (tiny at twice the width,
        chosen on the dev set), windows of 16 + 24 steps, 3000 steps per run (WestWorld ~50 minutes
        on one core). This file also defines that corpus
        (`data_config`, `heldout_collect`) for experiments/zero_shot.py and few_shot.py.
  tiny  a smoke test on the tiny corpus (experiments/data.py:tiny): N = 1, 2, a few steps.
  base  the paper's setting: base models, 50 + 100-step windows, the full corpus.
"""

import ml_collections

from westworld_jax import config_files
from westworld_jax.config_files import model_config

# Ordered so that every prefix mixes families (locomotion, arms, balance, swimmers, quadrupeds) and
# behaviours (open-loop, pd_hold, PD targets, PPO policies trained here): N = 5 holds an arm and two
# walking policies, N = 10 two quadrupeds, N = 20 a balance task. No held-out robot appears
# (walker2d, hopper, franka_panda, cassie, unitree_a1, ur5e); tests/test_evaluate.py checks it.
CPU_PRETRAIN_ENVS = (
  "dmc_cheetah-gait",
  "dmc_walker-policy_expert",
  "dmc_hopper-gait",
  "proc_hopper_3-policy_medium",
  "dmc_reacher-pd_targets",
  "gym_half_cheetah-policy_expert",
  "dmc_walker-gait",
  "proc_walker_l2r2-policy_expert",
  "quad_go1-pd_hold",
  "proc_quadruped_j2-policy_medium",
  "gym_swimmer-gait",
  "proc_cheetah_b2f3-policy_expert",
  "proc_arm_6-pd_targets",
  "gym_ant-policy_expert",
  "gym_half_cheetah-gait",
  "proc_hopper_3-policy_expert",
  "dmc_cartpole-gait",
  "dmc_walker-policy_medium",
  "proc_walker_l2r2-gait",
  "dmc_cheetah-policy_expert",
  "gym_ant-pd_hold",
  "proc_quadruped_j2-policy_expert",
  "proc_hopper_3-gait",
  "proc_walker_l2r2-policy_medium",
  "dmc_jaco_arm-pd_targets",
  "gym_half_cheetah-policy_medium",
  "proc_cheetah_b2f3-gait",
  "gym_swimmer-policy_expert",
  "proc_humanoid2d_a0-gait",
  "proc_cheetah_b2f3-policy_medium",
  "dmc_finger-pd_targets",
  "gym_ant-policy_medium",
  "proc_snake_5-gait",
  "dmc_cheetah-policy_medium",
  "quad_mini_cheetah-pd_hold",
  "gym_swimmer-policy_medium",
  "gym_inverted_double_pendulum-gait",
  "proc_walker_l3r4-gait",
  "proc_quadruped_j2-pd_hold",
  "dmc_acrobot-gait",
  "gym_pusher-pd_targets",
  "proc_cheetah_b4f4-gait",
  "proc_swimmer_6-gait",
  "proc_hand_f4j2-pd_targets",
  "dmc_ball_in_cup-pd_targets",
  "proc_cheetah_b3f2-gait",
  "proc_hexapod_j2-pd_hold",
  "proc_arm_5-pd_targets",
  "dmc_cheetah-ou",
  "dmc_walker-pd_hold",
  "gym_half_cheetah-ou",
  "proc_arm_4-ou",
)
# Held-out hopper and walker2d as in D4RL: data of PPO policies trained here (expert and medium,
# data/train_policy.py); franka under PD control to random targets.
CPU_ZERO_SHOT_ENVS = (
  "hopper-policy_expert",
  "hopper-policy_medium",
  "walker2d-policy_expert",
  "walker2d-policy_medium",
  "franka_panda-pd_targets",
)
# The open-loop gait data of the same robots (they topple within ~100 steps): the `cpu_gait` zero-shot variant.
CPU_ZERO_SHOT_GAIT_ENVS = ("hopper-gait", "walker2d-gait", "franka_panda-pd_targets")
# Unitree A1 under its trained PPO expert (it walks); Cassie under pd_hold (PPO did not make it walk,
# docs/behaviour_policies.md; open-loop gaits topple it: 2 of 24 episodes kept); UR5e under PD targets.
CPU_FEW_SHOT_ENVS = ("cassie-pd_hold", "unitree_a1-policy_expert", "ur5e-pd_targets")
CPU_CORPUS = "corpus/cpu"


def _load(name: str):
  """experiments/<name>.py next to this file."""
  return config_files.load_sibling(__file__, name)


def data_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  """The collect config of the pretraining environments of a variant."""
  if variant == "cpu":
    c = _load("data").get_config("tiny")
    c.corpus_dir = CPU_CORPUS
    c.environments = CPU_PRETRAIN_ENVS
    c.episodes_per_env, c.episodes_per_shard = 16, 8  # simulation is cheap here; training steps are not
    c.mpc_episodes_per_env = 0
    c.episode_len = 128  # 3 windows of 40
    c.val_fraction = 0.25
    c.checks.min_length = 40
    return c
  return _load("data").get_config("tiny" if variant == "tiny" else "full")


def heldout_collect(variant: str, environments) -> ml_collections.ConfigDict:
  """The collect config of held-out environments: more episodes than pretraining ones, so that a
  few-shot robot has >= 10 training episodes and every held-out robot has val episodes."""
  c = data_config(variant).copy_and_resolve_references()
  c.environments = tuple(environments)
  if variant == "cpu":
    c.episodes_per_env = c.episodes_per_shard = 24
  return c


def _cpu_scan(name: str) -> dict:
  # lax.scan over ~32 steps beats the chunked associative scan on CPU (~3x, measured). Go1 and Mini
  # Cheetah have 17 bodies: tiny's 16-row structural tables would index out of range (NaN).
  return {"ssm_scan_impl": "sequential", "max_bodies": 32} if name == "westworld" else {}


CPU_HISTORY, CPU_HORIZON = 16, 24
CPU_MODELS = ("westworld", "trajworld", "tdm", "mlp_ensemble")  # 3 windows of 40 steps per 128-step episode


# The CPU recipe, chosen on the dev set (val episodes of the pretraining environments; the held-out robots
# never read, benchmarks/results/dev_set/): WestWorld at 4x tiny's parameters is the largest gain measured
# (4x the episodes buys a third of it), 32 bins beat 64. Every model is widened alike (2x width over the
# registry's tiny: WestWorld 241k parameters, TrajWorld 149k, TDM 77k, MLPEnsemble 117k) and uses the same
# 32 bins, so the comparison keeps the models' relative sizes.
CPU_WIDTH = {
  "westworld": dict(d_model=64, d_ff=128, d_expert=128),
  "trajworld": dict(d_model=64, d_ff=128),
  "tdm": dict(d_model=64, d_ff=128),
  "mlp_ensemble": dict(hidden=64),
}


def cpu_model_overrides(name: str) -> dict:
  """What the CPU model of `name` sets over the registry's 'tiny' size."""
  return dict(
    max_obs_channels=40,
    max_act_channels=16,
    history=CPU_HISTORY,
    max_window_len=CPU_HISTORY + CPU_HORIZON,
    **CPU_WIDTH.get(name, {}),
    **_cpu_scan(name),
  )


def cpu_model(name: str) -> ml_collections.ConfigDict:
  """Tiny models whose channel tables hold every robot of the cpu corpus (cassie: 39 obs)."""
  return model_config(name, "tiny", **cpu_model_overrides(name))


def pretrain_config(variant: str = "cpu", model: str = "westworld") -> ml_collections.ConfigDict:
  """A complete training config (experiments/pretrain.py's fields) for one pretraining run."""
  c = _load("pretrain").get_config("base" if variant == "base" else "tiny")
  if variant == "cpu":
    c.model = cpu_model(model)
    c.data.corpus_dir = CPU_CORPUS
    c.data.collect = data_config("cpu")
    c.data.environments = CPU_PRETRAIN_ENVS
    c.data.history, c.data.horizon = CPU_HISTORY, CPU_HORIZON
    c.data.batch_size = c.data.eval_batch_size = 8
    c.data.obs_buckets = (16, 32, 40)  # 3 shapes: few compilations, little padding
    c.data.act_buckets = (8, 16)
    c.data.num_threads = 1
    c.total_steps = 3000  # the held-out error of every model has flattened by 2000-3000 (learning_curve_cpu)
    c.optim.update(lr=2e-3, warmup_steps=30, final_lr_fraction=0.1)
    c.checkpoint.update(every=250, keep=1, async_save=False)
    # dev-set learning curves (val episodes of the training environments); the drivers evaluate the held-out
    # robots with westworld_jax.evaluation
    c.eval.update(every=500, max_batches=70)
    c.log.update(every=25, tensorboard=False, progress=False)
  elif variant == "tiny":
    c.model = model_config(model, "tiny", max_obs_channels=32, max_act_channels=16, **_cpu_scan(model))
    c.data.act_buckets = (8, 16)
    c.data.batch_size = c.data.eval_batch_size = 8
    c.data.num_threads = 1
    c.total_steps = 4
    c.checkpoint.update(every=4, keep=1, async_save=False)
    c.eval.update(every=10**9, max_batches=0)
    c.log.update(every=2, tensorboard=False, progress=False)
  elif variant == "base":
    c.model = model_config(model, "base", **({"dtype": "bfloat16"} if model == "westworld" else {}))
  else:
    raise ValueError(f"unknown scaling variant {variant!r}: use cpu, tiny or base")
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.models = ("westworld", "trajworld")
  c.num_envs = (1, 2, 5, 10, 20, 30, 0)  # 0 = every environment of `environments`
  c.seeds = (0,)
  c.pretrain = pretrain_config(variant, "westworld")  # template; .model is replaced per model
  c.model_configs = ml_collections.ConfigDict(
    {m: pretrain_config(variant, m).model for m in ("westworld", "trajworld", "tdm", "mlp_ensemble")}
  )
  c.environments = tuple(c.pretrain.data.environments) if c.pretrain.data.environments else ()
  c.eval_environments = CPU_ZERO_SHOT_ENVS
  c.eval_collect = heldout_collect(variant, CPU_ZERO_SHOT_ENVS)
  c.anchor = 1  # the first `anchor` environments (in every run) are a fixed seen-robot set
  c.eval = ml_collections.ConfigDict(dict(batch_size=8, max_windows=0, plot_windows=2))
  if variant == "tiny":
    c.num_envs = (1, 2)
    c.environments = ("dmc_cheetah-gait", "dmc_reacher-pd_targets")
    c.eval_environments = ("hopper-gait",)
    c.eval_collect = heldout_collect(variant, c.eval_environments)
    c.eval.max_windows = 8
  elif variant == "base":
    c.pretrain.total_steps = 50_000
    c.environments = ()  # resolved by the driver: every pretraining environment of the corpus
    c.num_envs = (1, 2, 5, 10, 20, 30, 0)
    c.eval_environments = (
      "walker2d-policy_expert",
      "walker2d-policy_medium",
      "hopper-policy_expert",
      "hopper-policy_medium",
      "franka_panda-pd_targets",
    )
    c.eval_collect = heldout_collect(variant, c.eval_environments)
    c.eval.batch_size = 14
  return c
