"""Pretraining entry point (the project's main command):

  python -m westworld_jax.train --config experiments/pretrain.py[:tiny|base|large] --workdir DIR

Any config field can be overridden (--config.optim.lr=1e-4). Rerunning with the same --workdir
resumes from its latest checkpoint. Writes DIR/metrics.jsonl, TensorBoard events, plots and
orbax checkpoints. See westworld_jax/training/loop.py.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from westworld_jax import cli
from westworld_jax.inference import load_for_inference
from westworld_jax.training.distributed import maybe_initialize_distributed
from westworld_jax.training.loop import TrainResult, train

__all__ = ["train", "load_for_inference", "TrainResult"]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  # JAX's GPU allocator takes 75% of a GPU unless told otherwise; the base model at batch 128 asks
  # an H100 for 64.4 GiB of its 79.1 (benchmarks/results/gpu_aot.json). Read when the backend starts.
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
  maybe_initialize_distributed(_CONFIG.value)  # before any other JAX call
  result = train(_CONFIG.value, _WORKDIR.value)
  msg = f"stopped at step {result.step}; rerun to continue" if result.stopped_early else f"done at step {result.step}"
  last = next((r for r in reversed(result.rows) if "loss" in r), None)
  print(f"{msg}; last loss {last['loss']:.4f}" if last else msg, f"; validation {result.val}" if result.val else "")


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/pretrain.py", "Experiment config file.")
  _WORKDIR = flags.DEFINE_string("workdir", "workdirs/pretrain", "Run directory (checkpoints, logs); reruns resume.")
  cli.run(main)
