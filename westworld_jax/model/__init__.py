"""The WestWorld model: tokenizer, embeddings, Sys-MoE, the network, its loss and configs; the
metric of validation and evaluation (metrics.py), the batch contract (batch.py), the WorldModel
interface (world_model.py), the baselines (baselines/) and the registry that builds any of them
by name (registry.py)."""

from westworld_jax.model.batch import check_batch, zeros_batch
from westworld_jax.model.configs import SIZES, ModelConfig, get_model_config
from westworld_jax.model.loss import next_step_loss, target_mask
from westworld_jax.model.metrics import X100, Pooled, horizon_errors, pooled_errors
from westworld_jax.model.moe import Router, RouterOutput, SysMoE, expert_param_specs, load_balancing_loss, router_z_loss
from westworld_jax.model.tokenizer import (
  bin_centers,
  expectation,
  expectation_from_probs,
  hl_gauss_histogram,
  target_bins,
)
from westworld_jax.model.westworld import (
  WestWorld,
  build_westworld,
  dummy_batch,
  init_params,
  param_count,
  westworld_model,
)

__all__ = [
  "SIZES",
  "ModelConfig",
  "get_model_config",
  "next_step_loss",
  "target_mask",
  "X100",
  "Pooled",
  "horizon_errors",
  "pooled_errors",
  "Router",
  "RouterOutput",
  "SysMoE",
  "expert_param_specs",
  "load_balancing_loss",
  "router_z_loss",
  "bin_centers",
  "expectation",
  "expectation_from_probs",
  "hl_gauss_histogram",
  "target_bins",
  "WestWorld",
  "build_westworld",
  "dummy_batch",
  "init_params",
  "param_count",
  "westworld_model",
  "check_batch",
  "zeros_batch",
]
