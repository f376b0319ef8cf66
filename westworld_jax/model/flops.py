"""Analytic FLOP count of the WestWorld model (for MFU): matmuls, attention and the scan.

Counts 2 FLOPs per multiply-add of every matmul/einsum, 6 per (state element, step) of the
selective scan (exp, dt*B*x, decay-multiply-add, C-contraction), and ignores elementwise work
(norms, activations, the HL-Gauss histogram), which is small next to the matmuls. A training
step is 3x the forward (backward = 2x forward); rematerialisation is not counted (MFU counts
model FLOPs, not hardware FLOPs).
"""

from __future__ import annotations

import math

from westworld_jax.model.configs import ModelConfig


def forward_flops(cfg: ModelConfig, batch: int, steps: int, obs_channels: int, act_channels: int) -> float:
  """FLOPs of one forward pass over a padded batch [batch, steps, obs/act channels]."""
  d, k = cfg.d_model, cfg.num_bins
  n_o = batch * steps * obs_channels  # observation tokens
  n_a = batch * steps * act_channels  # action tokens
  di, n = cfg.ssm_expand * d, cfg.ssm_d_state
  rank = math.ceil(d / 16)
  cls = 1 if cfg.system_embedding in ("cls", "robot") else 0
  n_s = batch * obs_channels * (steps + cls)  # SSM positions (the CLS token rides along)
  experts = cfg.num_experts if cfg.moe_mode == "dense" else cfg.top_k

  embed = 2 * k * d * (n_o + n_a)
  self_attn = 4 * 2 * d * d * n_o + 2 * 2 * batch * steps * obs_channels**2 * d
  cross_attn = 2 * 2 * d * d * n_o + 2 * 2 * d * d * n_a + 2 * 2 * batch * steps * obs_channels * act_channels * d
  ffn = 2 * 2 * d * cfg.d_ff * n_o
  ssm = n_s * (
    2 * d * 2 * di + 2 * cfg.ssm_d_conv * di + 2 * di * (rank + 2 * n) + 2 * rank * di + 6 * di * n + 2 * di * d
  )
  moe = experts * 2 * 2 * d * cfg.d_expert * n_o
  head = 2 * d * k * n_o
  return float(embed + cfg.n_layers * (self_attn + cross_attn + ffn + ssm + moe) + head)


def train_step_flops(cfg: ModelConfig, batch: int, steps: int, obs_channels: int, act_channels: int) -> float:
  return 3.0 * forward_flops(cfg, batch, steps, obs_channels, act_channels)
