"""Downstream control: MPPI with a simulator-oracle or world-model rollout on MuJoCo tasks.

  task.py    Task (an ABC: MJX robot, abstract cost on observations, action bounds)
  tasks.py   the tasks (pendulum, reacher, hopper, walker2d, go1, franka) and make_task
  mppi.py    MPPI (one jitted replan for all environments, samples sharded over devices)
  mppi_config.py  MPPIConfig: MPPI's settings and defaults (no jax: config files import it)
  backends.py  Backend (the ABC MPPI plans with) and its rollouts: OracleBackend (MJX) and
             WorldModelBackend (one predict call)
  mujoco_backend.py  C MuJoCo for CPUs: MujocoOracle (multi-threaded mujoco.rollout inside the jitted
             replan, the same task costs) and the physics MujocoEnvs step
  physics.py  the physics choice ('auto': C MuJoCo on a CPU, MJX on an accelerator; 'mujoco'; 'mjx')
  env.py     batched environments with observation history: Envs (MJX), MujocoEnvs (C MuJoCo)
  rollout.py   closed-loop episodes, random baseline, summaries
  planners.py  policies from a config (oracle / world model from a checkpoint or untrained / PPO
             expert / random) and the task each runs (the paper protocol's reference and termination)
  reference.py  the reference-tracking cost of one expert episode (the paper protocol)
  expert.py  the robot's PPO expert as a policy; its cached episode, the default reference
  mppi_corpus.py   MPPI rollouts -> corpus environment for world-model fine-tuning
  render.py  videos (MuJoCo offscreen renderer) and trajectory plots
  experiment.py  one control run (what the CLI runs): episodes per policy, summaries, videos
  adapt.py       world-model fine-tuning on oracle-MPPI control data (collect, keep the best, fine-tune)
CLI: python -m westworld_jax.control --config experiments/control.py:hopper [--checkpoint DIR]
     python -m westworld_jax.control.adapt --config experiments/control.py:tiny --checkpoint DIR --workdir OUT
"""
