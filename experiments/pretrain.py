"""Pretraining: `python -m westworld_jax.train --config experiments/pretrain.py[:variant] --workdir DIR`.

Variants:
  tiny   the whole pipeline on a 2-core CPU in a few minutes: generates the tiny corpus
         (experiments/data.py:tiny) when missing and trains the tiny model; loss falls visibly.
  base   the authors' model and recipe (docs/upstream.md lists every remaining difference):
         WestWorld base (~14.4M params), windows of 150 (history 50), every next-step target in the
         loss, AdamW lr 2e-4 with weight decay 1e-5, 10k warmup steps, cosine decay, clip 0.25,
         global batch 56 (their 14 per GPU x 4 GPUs), environments mixed by window count (their
         shuffled pool of all windows), bf16 matmuls, blocks rematerialised so that batch 56 fits
         one 80 GB GPU; data: the full generated corpus (experiments/data.py).
  cpu    the recipe a 2-core CPU can train (experiments/scaling.py:cpu): 52 cheap pretraining
         environments (corpus/cpu, generated when missing), small models with windows of 16 + 24 steps,
         3000 steps (WestWorld ~50 minutes on one core); `cpu_trajworld`, `cpu_tdm`,
         `cpu_mlp_ensemble` train the baselines with their own CPU configs.
  large  scale-out: the >=100M-parameter sparse top-k Sys-MoE (16 experts) with experts sharded over
         the 'expert' mesh axis (expert-parallel) and the batch over data x expert.
Any field can be overridden on the command line, e.g. --config.optim.lr=1e-4 --config.mesh.expert=2.
"""

import ml_collections

from westworld_jax import config_files
from westworld_jax.config_files import model_config
from westworld_jax.model import sharding


def _data_config(variant: str) -> ml_collections.ConfigDict:
  """experiments/data.py (next to this file) at `variant`: what the run generates when data is missing."""
  return config_files.load_sibling(__file__, "data").get_config(variant)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "tiny"
  if variant == "cpu" or variant.startswith("cpu_"):
    return _cpu_config(variant.removeprefix("cpu").removeprefix("_") or "westworld")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 150
  c.max_steps_per_run = 0  # > 0: stop (with a checkpoint) after this many steps; rerun to continue
  c.init_from = ""  # a workdir whose latest params start this run (fine-tuning)
  c.distributed = False  # force jax.distributed.initialize() (auto-detected on TPU pods and SLURM)

  c.mesh = ml_collections.ConfigDict(dict(data=-1, expert=1))  # -1: all remaining devices
  # Logical axis -> mesh axes (model/sharding.py): how the batch, parameters and optimizer state split.
  c.mesh.rules = dict(sharding.DEFAULT_RULES)

  c.data = ml_collections.ConfigDict()
  c.data.corpus_dir = "corpus/tiny"
  c.data.collect = _data_config("tiny")  # generated when missing; None: the corpus must exist
  c.data.environments = ()  # empty: every environment of data.collect in train_split
  c.data.train_split = "pretrain"
  c.data.max_episodes = 0  # > 0: only each environment's first N training episodes (data-size studies, few-shot)
  # Multi-host: every process collects a missing corpus (each environment once on a shared disk, by its
  # lock); True: process 0 alone, the others wait (a shared filesystem whose locks do not span hosts).
  c.data.shared_filesystem = False
  c.data.shared_filesystem_stall_s = 7200  # the waiting processes give up once the corpus has not changed this long
  c.data.batch_size = 16  # global
  c.data.eval_batch_size = 16
  c.data.history = 8
  c.data.horizon = 24
  c.data.weighting = "uniform"
  c.data.weights = ()
  c.data.obs_buckets = (8, 16, 32, 64, 128)
  c.data.act_buckets = (4, 8, 16, 32, 64)
  c.data.num_threads = 2
  c.data.prefetch = 4

  c.optim = ml_collections.ConfigDict(
    dict(lr=2e-3, warmup_steps=30, final_lr_fraction=0.1, clip_norm=0.25, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-5)
  )
  c.checkpoint = ml_collections.ConfigDict(dict(every=100, keep=3, async_save=True))
  c.eval = ml_collections.ConfigDict(dict(every=100, max_batches=8))
  c.log = ml_collections.ConfigDict(dict(every=10, tensorboard=True, progress=True))

  if variant == "tiny":
    # lax.scan over 33 steps beats the chunked associative scan on CPU (2.4 vs 3.8 s/step measured).
    c.model = model_config("westworld", "tiny", max_obs_channels=32, max_act_channels=16, ssm_scan_impl="sequential")
    c.data.obs_buckets = (32,)  # one bucket: one compilation on a small CPU
    c.data.act_buckets = (8,)
  elif variant in ("base", "large"):
    c.data.corpus_dir = "corpus/full"
    c.data.collect = _data_config("full")
    c.data.history, c.data.horizon = 50, 100
    c.data.batch_size = c.data.eval_batch_size = 56 if variant == "base" else 128
    c.data.weighting = "windows"
    c.data.num_threads = 8
    c.total_steps = 200_000
    c.optim.update(lr=2e-4, warmup_steps=10_000, final_lr_fraction=0.0)
    c.checkpoint.every = 2_000
    c.eval.update(every=2_000, max_batches=64)
    c.log.every = 50
    if variant == "base":
      c.model = model_config("westworld", "base", dtype="bfloat16", ssm_scan_impl="auto", remat=True)
    else:
      c.model = model_config("westworld", "large", expert_axis="expert")
      c.mesh.expert = 4  # 16 experts, 4 per expert shard; the rest of the devices do data parallelism
  else:
    raise ValueError(f"unknown pretrain variant {variant!r}: use tiny, cpu, cpu_<model>, base or large")
  return c


def _cpu_config(model: str) -> ml_collections.ConfigDict:
  """experiments/scaling.py's CPU recipe for one model, with progress and a final checkpoint kept."""
  scaling = config_files.load_sibling(__file__, "scaling")
  if model not in scaling.CPU_MODELS:
    raise ValueError(
      f"unknown pretrain variant 'cpu_{model}': use cpu or cpu_<model>, model one of {scaling.CPU_MODELS}"
    )
  c = scaling.pretrain_config("cpu", model)
  c.log.update(progress=True)
  return c
