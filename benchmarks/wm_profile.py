"""Where a WestWorld replan's time goes (the cpu_model at 256 x 24), two ways.

Used by benchmarks/wm_replan.py --profile (or run alone: `python benchmarks/wm_profile.py`).
- components_ms: each component jitted alone on the shapes the replan gives it (block 0's modules
  x n_layers, the embedding, the head and read-out, the SSM layer with each scan); alone, each
  also pays for materialising its inputs and outputs, so they sum to more than the replan;
- in_model: the replan with the SSM layers, the Sys-MoEs or the channel attentions replaced by
  zeros (patched in at trace time), calls interleaved: the time each costs inside the model;
plus the replan with float32 vs bfloat16 matmuls (and the matmul rate at each).
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import time

import flax.linen as nn
import jax
import jax.numpy as jnp

import wm_replan
from westworld_jax.model import flops, ssm as ssm_lib, westworld as westworld_lib
from westworld_jax.model.embeddings import TokenEmbedding
from westworld_jax.model.mamba import SelectiveSSM
from westworld_jax.model.moe import SysMoE
from westworld_jax.model.tokenizer import expectation
from westworld_jax.model.westworld import ChannelAttention


def _components(cfg, params, batch, repeats: int) -> dict:
  """ms (min of `repeats`) of each component at the replan's shapes; block 0's times x n_layers."""
  b, t, co = batch["obs"].shape
  d = cfg.d_model
  p0 = params["block_0"]
  key = jax.random.split(jax.random.key(2), 4)
  x = jax.random.normal(key[0], (b, co, t, d))
  act = jax.random.normal(key[1], (b, batch["act"].shape[2], t, d))
  seq = jax.random.normal(key[2], (b * co, t + 1, d))
  sys = jax.random.normal(key[3], (b * co, d))
  attn = ChannelAttention(d, cfg.n_heads)
  ffn_in, ffn_out = nn.Dense(cfg.d_ff), nn.Dense(d)
  moe = SysMoE(d, cfg.d_expert, cfg.num_experts, cfg.moe_mode, cfg.top_k)
  head = nn.Dense(cfg.num_bins)
  ms = lambda fn, *args: wm_replan.timed(fn, args, repeats)["ms_min"]
  L = cfg.n_layers
  out = {
    "embedding": ms(lambda p, bt: TokenEmbedding(cfg).apply({"params": p}, bt), params["embed"], batch),
    "self_attention": L * ms(lambda p, x, m: attn.apply({"params": p}, x, x, m), p0["self_attn"], x, batch["obs_mask"]),
    "cross_attention": L
    * ms(lambda p, x, a, m: attn.apply({"params": p}, x, a, m), p0["cross_attn"], x, act, batch["act_mask"]),
    "ffn": L
    * ms(
      lambda p1, p2, x: ffn_out.apply({"params": p2}, nn.gelu(ffn_in.apply({"params": p1}, x))),
      p0["ffn_in"],
      p0["ffn_out"],
      x,
    ),
    "moe": L * ms(lambda p, u, s: moe.apply({"params": p}, u, s)[0], p0["moe"], seq[:, :t], sys),
    "head_and_readout": ms(lambda p, x: expectation(head.apply({"params": p}, x)), params["head"], x),
  }
  for impl in ssm_lib.IMPLS:
    if impl == "kernel" and jax.default_backend() == "cpu":
      continue  # the Pallas interpreter: says nothing of a compiled kernel
    mod = SelectiveSSM(
      d, cfg.ssm_d_state, cfg.ssm_expand, cfg.ssm_d_conv, scan_impl=impl, chunk_size=cfg.ssm_chunk_size
    )
    out[f"ssm_{impl}"] = L * ms(lambda p, s: mod.apply({"params": p}, s), p0["ssm"], seq)
  return {k: round(v, 2) for k, v in out.items()}


def profile(task, repeats: int = 3, samples: int = 256, horizon: int = 24) -> dict:
  """The WestWorld cpu_model replan at samples x horizon: its time, its components' and the scans'."""
  wm, label = wm_replan.build("westworld", "cpu")
  backend, params, ctx = wm_replan.make_backend(wm, task, horizon)
  u = wm_replan.actions(task, samples, horizon)
  batch = jax.jit(backend.batch)(ctx, u)
  cfg = wm.config
  whole = wm_replan.timed(backend.step_costs, (ctx, u), repeats)["ms_min"]
  comps = _components(cfg, params, batch, repeats)
  used = cfg.ssm_scan_impl
  summed = sum(v for k, v in comps.items() if not k.startswith("ssm_") or k == f"ssm_{used}")
  res = {
    "model": label,
    "samples": samples,
    "horizon": horizon,
    "scan": used,
    "replan_ms": round(whole, 2),
    "components_ms": comps,
    "components_sum_ms": round(summed, 2),
    "note": "each component jitted alone at the replan's shapes (block 0 x n_layers); min of the repeats",
    "in_model": ablation(task, repeats, samples, horizon),
  }
  T = wm.history + horizon
  res["component_gflop"] = _component_gflop(cfg, samples, T, task.num_obs, task.num_act)
  # bfloat16 matmuls (params float32): the same replan and the matmul rate at bf16.
  wm16, _ = wm_replan.build("westworld", "cpu", dtype="bfloat16")
  b16, _, ctx16 = wm_replan.make_backend(wm16, task, horizon)
  res["replan_bf16_ms"] = wm_replan.timed(b16.step_costs, (ctx16, u), repeats)["ms_min"]
  f32 = jax.jit(backend.predict)(ctx, u)
  bf = jax.jit(b16.predict)(ctx16, u)
  res["bf16_max_abs_diff_physical"] = float(jnp.max(jnp.abs(f32 - bf)))
  rows = min(samples * T * task.num_obs, 1 << 16)
  res["matmul_gflops_f32"] = round(wm_replan.matmul_gflops(rows, cfg.d_model, repeats), 1)
  res["matmul_gflops_bf16"] = round(wm_replan.matmul_gflops(rows, cfg.d_model, repeats, jnp.bfloat16), 1)
  return res


class _NoSSM(nn.Module):
  """Stands in for SelectiveSSM in the ablation: y = 0 (the residual passes x on)."""

  d_model: int
  d_state: int = 0
  expand: int = 0
  d_conv: int = 0
  scan_impl: str = ""
  chunk_size: int = 0
  dtype: object = jnp.float32
  param_dtype: object = jnp.float32

  def __call__(self, x):
    return jnp.zeros_like(x)


class _NoMoE(nn.Module):
  """Stands in for SysMoE in the ablation: zero expert output, no aux loss."""

  d_model: int
  d_expert: int
  num_experts: int
  mode: str = ""
  top_k: int = 1
  capacity_factor: float = 0.0
  lb_loss_coef: float = 0.0
  z_loss_coef: float = 0.0
  expert_axis: object = None
  token_axes: tuple = ()
  dtype: object = jnp.float32
  param_dtype: object = jnp.float32

  def __call__(self, x, sys, valid):
    return jnp.zeros(x.shape, jnp.float32), jnp.zeros((), jnp.float32)


class _NoAttention(nn.Module):
  """Stands in for ChannelAttention in the ablation: zero output."""

  d_model: int
  n_heads: int
  dtype: object = jnp.float32
  param_dtype: object = jnp.float32
  dropout_rate: float = 0.0
  deterministic: bool = True

  def __call__(self, q, kv, mask):
    return jnp.zeros_like(q)


def ablation(task, repeats: int = 3, samples: int = 256, horizon: int = 24) -> dict:
  """In-model cost of each component: the cpu_model replan with it replaced by zeros (patched into
  model/westworld.py at trace time), calls interleaved; ms saved against the whole replan."""
  wm, _ = wm_replan.build("westworld", "cpu")
  backend, _, ctx = wm_replan.make_backend(wm, task, horizon)
  u = wm_replan.actions(task, samples, horizon)
  stand_ins = {
    "ssm_layer": ("SelectiveSSM", _NoSSM),
    "moe": ("SysMoE", _NoMoE),
    "attentions": ("ChannelAttention", _NoAttention),
  }
  compiled = {}
  for name, (attr, stand_in) in {"whole": (None, None), **stand_ins}.items():
    old = getattr(westworld_lib, attr) if attr else None
    try:
      if attr:
        setattr(westworld_lib, attr, stand_in)
      compiled[name] = jax.jit(lambda c, v: backend.step_costs(c, v)).lower(ctx, u).compile()
    finally:
      if attr:
        setattr(westworld_lib, attr, old)
  times = {name: [] for name in compiled}
  for _ in range(repeats + 1):
    for name, fn in compiled.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(ctx, u))
      times[name].append((time.perf_counter() - t0) * 1e3)
  ms = {name: min(v[1:]) for name, v in times.items()}
  return {
    "samples": samples,
    "horizon": horizon,
    "whole_ms": round(ms["whole"], 2),
    "saved_ms_without": {name: round(ms["whole"] - ms[name], 2) for name in stand_ins},
  }


def _component_gflop(cfg, b, t, co, ca) -> dict:
  """model/flops.py's total and its MoE and FFN terms (GFLOP of the whole replan)."""
  n_o, L = b * t * co, cfg.n_layers
  experts = cfg.num_experts if cfg.moe_mode == "dense" else cfg.top_k
  return {
    "total": round(flops.forward_flops(cfg, b, t, co, ca) / 1e9, 3),
    "moe": round(L * experts * 4 * cfg.d_model * cfg.d_expert * n_o / 1e9, 3),
    "ffn": round(L * 4 * cfg.d_model * cfg.d_ff * n_o / 1e9, 3),
  }


if __name__ == "__main__":
  import json

  from westworld_jax.control import tasks

  task = tasks.make_task("hopper")
  print(json.dumps(profile(task, repeats=3), indent=1))
