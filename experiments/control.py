"""Control config: `python -m westworld_jax.control --config experiments/control.py:VARIANT [--checkpoint DIR]`.

Variants (default: hopper):
  hopper, walker2d  the paper's sizes with this library's task-cost MPPI (every variant but the
                    *_paper ones): 256 samples x horizon 100, oracle vs world model vs random,
                    gym-length episodes (1000 steps). Meant for an accelerator: on a 2-core
                    CPU one oracle replan takes ~0.45 s in C MuJoCo (~11 s in MJX), a world-model
                    replan minutes.
  hopper_cpu        hopper on a CPU: 64 samples x horizon 30, 2 episodes of 100 steps.
  hopper_paper, walker2d_paper
                    the paper authors' protocol (docs/upstream.md, "Control protocol"): the planner
                    minimises -(gym's reward) plus the tracking cost of an expert episode
                    (`reference`: 'expert' = the robot's shipped PPO expert, 1000 steps, cached;
                    or --config.reference=FILE.npz, control/reference.py), with their MPPI (AR(2)
                    noise, expert-action initialisation and tails, step size, control cost, fall
                    penalty) at 256 samples x horizon 100, and 1000-step episodes reporting gym's
                    return; policies: the PPO expert itself, oracle, world model, random. Meant for
                    an accelerator.
  hopper_paper_cpu, walker2d_paper_cpu
                    the same protocol at CPU sizes (PAPER_CPU_SIZES, measured on 2 shared cores):
                    the C oracle at 128 x 100 (~0.24 s a replan, a 1000-step episode in 4-5
                    minutes) and the CPU-size world model at 64 x 24 (~0.19 s; experiments/
                    scaling.py's: history 16 + horizon <= 24 = its 40-step window).
  hopper_tiny       hopper on a CPU with a tiny world model (history 8 + horizon 24 <= its 32 steps):
                    64 samples x horizon 24, 100-step episodes; with westworld_jax.control.adapt
                    and a tiny pretrained checkpoint (experiments/scaling.py:cpu), the whole
                    collect -> fine-tune -> compare recipe in ~30-60 minutes on 2 cores.
  walker2d_tiny     the same for gym Walker2d (6 actuators: collecting the control data took 38 min, Hopper 32).
  go1, franka       Go1 walking forward upright; Franka Panda end-effector reach (oracle vs random).
                    Franka is very slow in MJX on a CPU (~1.5 s per physics step of 32 vmapped
                    samples: MJX's kinematics over its 11-deep chain): there, keep physics 'auto'.
  pendulum, reacher cheap dm_control tasks (swing-up from hanging; reach a random target).
  tiny              pendulum on a CPU in about a minute: oracle, tiny world model (untrained unless
                    --checkpoint), random; 60 steps of horizon 16 (the tiny model's window): a smoke
                    test, too short for any policy to swing the pendulum up. With
                    westworld_jax.control.adapt: a fine-tune in 1-2 minutes.
World-model fine-tuning on control data (oracle MPPI episodes, the best 10% kept):
  python -m westworld_jax.control.adapt --config experiments/control.py:VARIANT --checkpoint DIR --workdir OUT
physics (westworld_jax/control/physics.py): what the oracle and the environments step, 'auto' (C MuJoCo
where JAX runs on a CPU, MJX on an accelerator), 'mujoco' or 'mjx'.
Override anything on the command line, e.g. --config.mppi.samples=512 --config.policies="('oracle',)".
"""

import ml_collections

from westworld_jax import config_files

from westworld_jax.control.mppi_config import MPPIConfig

# variant -> the control task it runs (westworld_jax/control/tasks.py)
TASKS = {
  "hopper": "hopper",
  "walker2d": "walker2d",
  "hopper_cpu": "hopper",
  "hopper_paper": "hopper",
  "walker2d_paper": "walker2d",
  "hopper_paper_cpu": "hopper",
  "walker2d_paper_cpu": "walker2d",
  "hopper_tiny": "hopper",
  "walker2d_tiny": "walker2d",
  "go1": "go1",
  "franka": "franka",
  "pendulum": "pendulum",
  "reacher": "reacher",
  "tiny": "pendulum",
}

# The authors' MPPI and reference cost per robot (MPPI/configs/{hopper,walker2d}_mppi.yaml of
# 511205787/WestWorld): the values of control/mppi_config.py's paper options.
PAPER_MPPI = dict(
  samples=256,
  horizon=100,
  iterations=1,
  noise_kind="ar2",
  temperature=0.5,
  normalize_costs=False,
  discount=1.0,
  keep_mean=False,
  filter_coeffs=(0.5, 0.5, 0.0),
  covariance=0.3,  # replaced by the expert's action variance (init 'expert')
  step_size=0.4,
  control_cost=True,
  update_clipped=False,
  init="expert",
  tail="expert",
  expert_cov_scale=0.8,
  fall_penalty=10.0,
  hold_after_fall=True,
)
PAPER = {
  "hopper": dict(mppi={}, pos_weight=(0.15,), vel_weight=(0.15,), phase="wrap"),
  "walker2d": dict(
    mppi=dict(covariance=0.4, filter_coeffs=(0.4, 0.6, 0.0), temperature=0.25, fall_penalty=100.0),
    pos_weight=(0.0, 10.0, 10.0, 10.0, 1.0, 1.0, 10.0, 1.0, 1.0),  # per qpos entry (root x, z, angle, joints)
    vel_weight=(0.01,),
    phase="hold",
  ),
}
# samples, horizon of the *_paper_cpu variants, from one replan measured on 2 shared cores
# (docs/upstream.md, "Control protocol"): the C oracle keeps the paper's horizon (at 128 x 50
# or 256 x 50 it let the hopper fall) at ~0.24 s; the CPU-size world model (history 16, so a
# horizon <= 24) at ~0.19 s.
PAPER_CPU_SIZES = {"oracle": (128, 100), "world_model": (64, 24)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "hopper"
  if variant not in TASKS:
    raise ValueError(f"unknown control config variant '{variant}': choose one of {tuple(TASKS)}")
  c = ml_collections.ConfigDict()
  c.task = TASKS[variant]
  c.policies = ("oracle", "world_model", "random")
  c.episodes = 2  # batches of n_envs episodes, each from new start states (the same for every policy)
  c.n_envs = 1
  c.episode_len = 0  # control steps; 0 = the task's default
  c.seed = 0
  c.physics = "auto"  # oracle and environments: 'auto' (C MuJoCo on a CPU, MJX on an accelerator) | 'mujoco' | 'mjx'
  c.workdir = ""  # default workdirs/control/<task>; --workdir overrides
  c.mppi = ml_collections.ConfigDict(MPPIConfig().to_dict())  # the defaults (control/mppi_config.py)
  c.policy_mppi = ml_collections.ConfigDict()  # per policy: MPPI fields that differ from c.mppi
  # The paper protocol (control/planners.py). reference: '' (the task's cost alone), 'expert' (the
  # robot's PPO expert episode, cached under reference_episode.cache_dir, default
  # ~/.cache/westworld_jax/references) or an npz file (control/reference.py: qpos, qvel, actions).
  c.reference = ""
  c.reference_cost = ml_collections.ConfigDict(dict(pos_weight=(0.15,), vel_weight=(0.15,), phase="wrap"))
  c.reference_episode = ml_collections.ConfigDict(dict(steps=1000, seed=0, cache_dir=""))
  c.gym_return = False  # gym locomotion: report gym's reward (dx/dt, healthy bonus while healthy), not -cost
  c.world_model_terminates = True  # False: world-model episodes and rollouts go on after a fall (the authors')
  # The world model when no --checkpoint is given (untrained: latency only) and its batching.
  c.model = ml_collections.ConfigDict(dict(name="westworld", size="control", overrides={}))
  c.wm_sample_chunk = 0  # predict at most this many samples at once (0 = all): bounds memory
  # 0: the whole horizon in one window (the authors'); N > 0: windows of history + N steps, chained,
  # each conditioned on the last `history` steps before it: a horizon beyond the model's window.
  c.wm_segment = 0
  c.shard_samples = True  # with several devices, shard MPPI samples over all of them (mesh axis 'samples')
  # Normalisation stats for the world model when the checkpoint has none for this robot:
  # a corpus environment directory (its metadata.json), else OU rollouts of the robot.
  c.stats = ml_collections.ConfigDict(dict(env="", corpus_env="", rollout_episodes=16, rollout_steps=200))
  c.render = ml_collections.ConfigDict(dict(enabled=True, width=320, height=240))
  # Control data for fine-tuning: keep the best fraction of the oracle episodes as a corpus environment.
  # The control CLI collects from its evaluation episodes when corpus_dir is set; the fine-tuning
  # command (python -m westworld_jax.control.adapt) runs `episodes` oracle episodes, n_envs at a time.
  c.collect = ml_collections.ConfigDict(
    dict(corpus_dir="", keep_fraction=0.1, val_fraction=0.1, overwrite=False, episodes=64, n_envs=8)
  )
  # World-model fine-tuning on that data (westworld_jax.control.adapt): the pretrained run's model
  # and recipe (westworld_jax.training.finetune) from its weights, then control with both models.
  c.finetune = ml_collections.ConfigDict(
    dict(steps=300, lr=1e-5, warmup_steps=0, final_lr_fraction=1.0, batch_size=8, compare=True)
  )

  if variant in ("hopper", "walker2d"):
    c.episodes = 3
  elif variant.endswith(("_paper", "_paper_cpu")):
    paper = PAPER[c.task]
    c.policies = ("expert_policy", "oracle", "world_model", "random")
    c.episodes, c.episode_len = 1, 1000
    c.mppi.update(dict(PAPER_MPPI, **paper["mppi"]))
    c.reference = "expert"
    c.reference_cost.update(pos_weight=paper["pos_weight"], vel_weight=paper["vel_weight"], phase=paper["phase"])
    c.gym_return = True
    if variant.endswith("_cpu"):
      c.mppi.samples, c.mppi.horizon = PAPER_CPU_SIZES["oracle"]
      wm_samples, wm_horizon = PAPER_CPU_SIZES["world_model"]
      c.policy_mppi = ml_collections.ConfigDict({"world_model": dict(samples=wm_samples, horizon=wm_horizon)})
      c.model.size = "tiny"  # experiments/scaling.py's CPU model when no --checkpoint is given
      c.model.overrides = config_files.load_sibling(__file__, "scaling").cpu_model_overrides(c.model.name)
      c.render.width, c.render.height = 160, 120
  elif variant == "hopper_cpu":
    c.mppi.samples, c.mppi.horizon = 64, 30  # one replan ~30 ms in C MuJoCo, ~0.5 s in MJX on a CPU core
    c.episode_len = 100
    c.policies = ("oracle", "random")
  elif variant in ("hopper_tiny", "walker2d_tiny"):
    c.mppi.samples, c.mppi.horizon = 64, 24
    c.episode_len = 100
    c.model.size = "tiny"
    c.render.width, c.render.height = 160, 120
    c.collect.update(episodes=64, n_envs=8)  # keep the best 10%: 7 episodes
    c.finetune.update(steps=300, lr=1e-3, warmup_steps=10, batch_size=8)  # tiny models adapt at ~1e-3
  elif variant == "go1":
    c.policies = ("oracle", "random")
    c.mppi.horizon = 50
    c.episode_len = 250
  elif variant == "franka":
    c.policies = ("oracle", "random")
    c.mppi.samples, c.mppi.horizon = 128, 40
  elif variant == "pendulum":
    c.policies = ("oracle", "random")
    c.mppi.samples, c.mppi.horizon, c.mppi.noise = 128, 100, 1.0
    c.episode_len = 500
  elif variant == "reacher":
    c.policies = ("oracle", "random")
    c.mppi.samples, c.mppi.horizon, c.mppi.noise = 64, 30, 0.5
  elif variant == "tiny":
    c.episodes = 1
    c.episode_len = 60
    c.mppi.samples, c.mppi.horizon, c.mppi.noise = 32, 16, 1.0  # tiny model: history 8 + 16 <= 32 steps
    c.model.size = "tiny"
    c.stats.rollout_episodes, c.stats.rollout_steps = 8, 100
    c.render.width, c.render.height = 160, 120
    # Fine-tuning in about a minute: 16 oracle episodes, keep the best 2, 20 steps at the tiny lr.
    c.collect.update(episodes=16, n_envs=8, val_fraction=0.0)
    c.finetune.update(steps=20, lr=1e-4, batch_size=8)
  return c
