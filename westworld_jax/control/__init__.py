"""Downstream control: MPPI with a simulator-oracle or world-model rollout on MJX tasks.

  tasks.py   Task: MJX robot, costs on observations/states, action bounds (pendulum, reacher,
             hopper, walker2d, go1, franka)
  mppi.py    MPPI (one jitted replan for all environments, samples sharded over devices)
  backends.py  MPPI's rollouts: OracleBackend (MJX) and WorldModelBackend (one predict call)
  env.py     batched MJX environments with observation history
  rollout.py   closed-loop episodes, random baseline, summaries
  planners.py  planners from a config (oracle / world model from a checkpoint or untrained / random)
  mppi_corpus.py   MPPI rollouts -> corpus environment for world-model fine-tuning
  render.py  videos (MuJoCo offscreen renderer) and trajectory plots
  experiment.py  one control run (what the CLI runs): episodes per policy, summaries, videos
  adapt.py       world-model fine-tuning on oracle-MPPI control data (collect, keep the best, fine-tune)
CLI: python -m westworld_jax.control --config experiments/control.py:hopper [--checkpoint DIR]
     python -m westworld_jax.control.adapt --config experiments/control.py:tiny --checkpoint DIR --workdir OUT
"""
