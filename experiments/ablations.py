"""Ablations: `python -m westworld_jax.ablations --config experiments/ablations.py[:cpu|tiny] --workdir OUT`.

What each part of WestWorld buys, at the CPU recipe (experiments/scaling.py: its models, corpus and
steps), every run pretrained on all pretraining environments with `seeds` seeds:
  westworld      the recipe
  no_structure   without the structural embedding (model.structural_embedding=False)
  dense_mlp      Sys-MoE replaced by one dense MLP of the experts' parameter count (1 expert of
                 num_experts x d_expert hidden units: the gate of one expert is the identity)
  experts_8      8 experts (the recipe has 2 at the CPU size; upstream's base has 4)
  top1           sparse top-1 routing (moe_mode=topk, top_k=1; upstream's config carries top_k 1,
                 but its code runs the dense softmax gate, as the recipe does)
  token_gate     system_embedding='token': each token's own SSM output gates it (no CLS)
beside TrajWorld, TDM and MLPEnsemble at their CPU configs and the hold-last reference. Each run is
evaluated zero-shot on the held-out robots under trained policies (experiments/zero_shot.py:cpu) and
under open-loop gaits (:cpu_gait), and fine-tuned on the few-shot robots
(experiments/few_shot.py:cpu, one fine-tuning seed per pretraining seed).

Variants:
  cpu   (default) the table of benchmarks/results/ablations_cpu (3 seeds; ~50 minutes per WestWorld run
        on one core).
  tiny  a smoke test: two variants on the tiny corpus, a few steps.
"""

import ml_collections

from westworld_jax import config_files


def _load(name: str):
  return config_files.load_sibling(__file__, name)


def westworld_variants(num_experts: int, d_expert: int) -> dict:
  """Model-field overrides of each WestWorld ablation over the recipe's model."""
  return {
    "westworld": {},
    "no_structure": {"structural_embedding": False},
    "dense_mlp": {"num_experts": 1, "d_expert": num_experts * d_expert, "moe_mode": "dense"},
    "experts_8": {"num_experts": 8},
    "top1": {"moe_mode": "topk", "top_k": 1},
    "token_gate": {"system_embedding": "token"},
  }


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  if variant not in ("cpu", "tiny"):
    raise ValueError(f"unknown ablations variant {variant!r}: use cpu or tiny")
  sc = _load("scaling")
  c = ml_collections.ConfigDict()
  c.seeds = (0, 1, 2) if variant == "cpu" else (0,)
  base = sc.pretrain_config(variant, "westworld")
  runs = {}
  for name, overrides in westworld_variants(base.model.num_experts, base.model.d_expert).items():
    rc = base.copy_and_resolve_references()
    rc.model.update(overrides)
    runs[name] = rc
  for model in ("trajworld", "tdm", "mlp_ensemble"):
    runs[model] = sc.pretrain_config(variant, model)
  if variant == "tiny":
    runs = {k: runs[k] for k in ("westworld", "no_structure")}
  c.variants = tuple(runs)  # the table's order (a ConfigDict's keys iterate sorted)
  # True: train (or resume) the runs of `variants` and stop, e.g. one process per core, each with its own
  # `--config.variants`; a final run with every variant finds them finished and evaluates
  c.train_only = False
  c.runs = ml_collections.ConfigDict(runs)  # name -> a complete training config
  zs = _load("zero_shot")
  c.zero_shot = zs.get_config(variant)
  c.zero_shot_gait = zs.get_config("cpu_gait") if variant == "cpu" else None
  c.few_shot = _load("few_shot").get_config(variant)
  c.few_shot.scratch = ()  # the pretrained variants only: scratch training is in few_shot_cpu
  c.few_shot.include_zero_shot = False  # zero-shot is its own table here
  if variant == "tiny":
    c.zero_shot.max_windows = 8
  return c
