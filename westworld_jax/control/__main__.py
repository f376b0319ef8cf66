"""Control CLI: `python -m westworld_jax.control --config experiments/control.py:hopper [--checkpoint DIR]`.

Runs cfg.episodes batches of cfg.n_envs episodes of cfg.task with each policy in cfg.policies
('oracle' MPPI, 'world_model' MPPI, 'random') and writes into --workdir; the oracle and the
environments step cfg.physics (control/physics.py: C MuJoCo on a CPU, MJX on an accelerator):
  summary.json   per-policy returns and replanning latency, task, settings, world-model provenance
  summary.md     the same as a markdown table
  returns.json   every episode's return and length per policy
  latency.csv    policy, episode, step, seconds of every replanning call (step 0 includes compiling)
  video_<policy>.mp4|gif   first episode, env 0 (MuJoCo offscreen rendering, MUJOCO_GL probed first:
                           the one set, else egl, else osmesa; none working -> summary.json's
                           render_error says why, and the run goes on; see experiment.select_gl)
  trajectory_<policy>.png  reward, observations and controls over time (always written)
With cfg.collect.corpus_dir set, the oracle episodes' best cfg.collect.keep_fraction are also written
as corpus environment '<robot>-mppi_oracle' for world-model fine-tuning; the whole fine-tuning loop
(collect, fine-tune, compare) is `python -m westworld_jax.control.adapt` (adapt.py).
The work itself is experiment.run.
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from westworld_jax.control import experiment  # imports neither jax nor mujoco (pinning comes first)
from westworld_jax import cli


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cfg = _CONFIG.value
  experiment.prepare_process(_PIN_CPU.value, render=cfg.render.enabled, physics=cfg.physics)
  workdir = _WORKDIR.value or cfg.workdir or os.path.join("workdirs", "control", cfg.task)
  experiment.run(cfg, workdir, _CHECKPOINT.value)


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/control.py", "Control config file.")
  _WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory (default: the config's workdir, else workdirs/control/<task>)."
  )
  _CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "Training workdir of a world model (its load_for_inference); without it the world model is untrained.",
  )
  _PIN_CPU = flags.DEFINE_enum(
    "pin_cpu",
    "auto",
    ["auto", "yes", "no"],
    "Pin the process to one core before importing jax: jaxlib on <= 2 cores can "
    "deadlock on the first call of large vmapped MJX programs. auto: pin on <= 2 cores with physics 'mjx'.",
  )
  cli.run(main)
