"""TrajWorld baseline (Yin et al. 2025, "Trajectory World Models for Heterogeneous Environments").

Tokens as in WestWorld: every scalar observation and action channel of every step is a
token, its HL-Gauss histogram through a bias-free projection plus type (obs/act),
channel-index and time-step embeddings; but no structural or kind embedding and no query
tokens: TrajWorld is a causal next-step model. Each pre-LN block, on x_btcd
(C = Co + Ca, observation channels then action channels):
  1. causal self-attention over time, per channel (padded steps masked as keys);
  2. FFN;
  3. self-attention across all channels (observations and actions) of one step
     (padded channels masked as keys);
  4. FFN.
The authors' block is the same sequence post-LN (width 256, 4 heads, 6 blocks: size
"upstream"); "base" adds blocks to match WestWorld base's 14.4M parameters.

logits[:, t, c] (read from the obs token (t, c)) is the bin distribution of obs[:, t + 1, c].
Training is teacher forced on every real target step from 1 (it is causal, so every
position is a fair next-step prediction). predict() prefills the history, then rolls out
from step `history` with the true actions, feeding back the expectation read-out; the time
attention keeps a KV cache (per layer: keys/values [B, T, C, H, dh] for every step and
channel), so each new step costs O(T) instead of re-running the O(T^2) window.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from westworld_jax.model.baselines.layers import (
  QKVO,
  UNLIMITED,
  FeedForward,
  ScalarTokenEmbed,
  channel_layout,
  check_transformer_config,
  layer_norm,
  masked_softmax,
  prepare_batch,
  teacher_forced_fns,
)
from westworld_jax.config_mixin import ConfigMixin
from westworld_jax.model.configs import sized_config
from westworld_jax.model.tokenizer import expectation
from westworld_jax.model.sharding import replicated_specs
from westworld_jax.model.world_model import Capacity, WorldModel, copy_history


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class TrajWorldConfig(ConfigMixin):
  """Architecture of the TrajWorld baseline (module docstring)."""

  d_model: int = 256
  n_layers: int = 9  # blocks; 9 x 256 wide ~ WestWorld base's 14.4M (the authors use 6)
  n_heads: int = 4
  d_ff: int = 1024  # both FFNs of a block
  num_bins: int = 256
  dropout_rate: float = 0.05  # residual dropout, as the authors
  history: int = 50
  max_window_len: int = 150
  max_obs_channels: int = 128
  max_act_channels: int = 64
  loss_weighting: str = "token"  # see loss.py
  dtype: str = "float32"  # matmuls; softmax and LayerNorm stay float32
  param_dtype: str = "float32"
  remat: bool = False  # rematerialise each block in the training backward pass

  def __post_init__(self):
    check_transformer_config(self)


TRAJWORLD_SIZES: dict[str, dict[str, Any]] = {
  "tiny": dict(
    d_model=32,
    n_layers=2,
    n_heads=2,
    d_ff=64,
    num_bins=32,
    dropout_rate=0.0,
    history=8,
    max_window_len=32,
    max_obs_channels=16,
    max_act_channels=8,
  ),
  "base": dict(),
  "upstream": dict(n_layers=6),  # the authors' size (~9.5M)
}


def get_trajworld_config(size: str = "base", **overrides: Any) -> TrajWorldConfig:
  return sized_config(TrajWorldConfig, TRAJWORLD_SIZES, size, **overrides)


# ----------------------------------------------------------------------------- network


class TrajWorldBlock(nn.Module):
  """One pre-LN block on x_btcd; also returns the time attention's keys/values.

  With kv_cache=(k_btche, v_btche) over the whole window and x for ONE step s
  (x_b1cd), the step's keys/values are written into the cache at s and the query
  attends to the cache (decode); otherwise x covers steps 0..T'-1 (full / prefill).
  time_mask_bqk: which key steps each query step may attend to (causal & real).
  """

  config: TrajWorldConfig
  deterministic: bool = True

  def setup(self):
    cfg = self.config
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    self.ln_time, self.ln_ffn_time = layer_norm(pdt), layer_norm(pdt)
    self.ln_chan, self.ln_ffn_chan = layer_norm(pdt), layer_norm(pdt)
    self.time_attn = QKVO(cfg.d_model, cfg.n_heads, dt, pdt)
    self.chan_attn = QKVO(cfg.d_model, cfg.n_heads, dt, pdt)
    self.ffn_time = FeedForward(cfg.d_model, cfg.d_ff, dt, pdt)
    self.ffn_chan = FeedForward(cfg.d_model, cfg.d_ff, dt, pdt)
    self.drop = nn.Dropout(cfg.dropout_rate)

  def _res(self, x, y):
    return x + self.drop(y, deterministic=self.deterministic)

  def __call__(self, x_btcd, time_mask_bqk, chan_ok_bc, kv_cache=None, step=None):
    scale = 1.0 / jnp.sqrt(self.config.d_model // self.config.n_heads)
    # 1. causal attention over time, per channel.
    q, k, v = self.time_attn.qkv(self.ln_time(x_btcd))  # [B, Tq, C, H, dh]
    if kv_cache is not None:
      k = jax.lax.dynamic_update_slice_in_dim(kv_cache[0], k.astype(kv_cache[0].dtype), step, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(kv_cache[1], v.astype(kv_cache[1].dtype), step, axis=1)
    logits = jnp.einsum("bqche,bkche->bchqk", q, k, preferred_element_type=jnp.float32)
    w = masked_softmax(logits * scale, time_mask_bqk[:, None, None])
    o = jnp.einsum("bchqk,bkche->bqche", w.astype(v.dtype), v)
    x = self._res(x_btcd, self.time_attn(o))
    x = self._res(x, self.ffn_time(self.ln_ffn_time(x)))
    # 2. attention across all channels (obs and actions) of each step.
    q, kc, vc = self.chan_attn.qkv(self.ln_chan(x))  # [B, Tq, C, H, dh]
    logits = jnp.einsum("btqhe,btkhe->bthqk", q, kc, preferred_element_type=jnp.float32)
    w = masked_softmax(logits * scale, chan_ok_bc[:, None, None, None, :])
    o = jnp.einsum("bthqk,btkhe->btqhe", w.astype(vc.dtype), vc)
    x = self._res(x, self.chan_attn(o))
    x = self._res(x, self.ffn_chan(self.ln_ffn_chan(x)))
    return x, (k, v)


class TrajWorldNet(nn.Module):
  """__call__(batch) -> next-step logits [B, T, Co, K] (teacher forced);
  prefill / decode_step: the KV-cached rollout pieces (see trajworld_model.predict)."""

  config: TrajWorldConfig
  train: bool = False

  def setup(self):
    cfg = self.config
    pdt = jnp.dtype(cfg.param_dtype)
    self.embed = ScalarTokenEmbed(
      cfg.d_model,
      cfg.num_bins,
      cfg.max_obs_channels + cfg.max_act_channels,
      cfg.max_window_len,
      jnp.dtype(cfg.dtype),
      pdt,
    )
    block = nn.remat(TrajWorldBlock) if (cfg.remat and self.train) else TrajWorldBlock
    self.blocks = [block(cfg, deterministic=not self.train) for _ in range(cfg.n_layers)]
    self.ln_out = layer_norm(pdt)
    self.head = nn.Dense(cfg.num_bins, dtype=jnp.float32, param_dtype=pdt)

  def _tokens(self, obs_btc, act_btc, obs_mask_bc, act_mask_bc, time_ok_bt, t0):
    co, ca = obs_btc.shape[2], act_btc.shape[2]
    is_act_c, channel_c = channel_layout(co, ca, self.config.max_obs_channels)
    chan_ok_bc = jnp.concatenate([obs_mask_bc, act_mask_bc], axis=1)
    ok_btc = chan_ok_bc[:, None, :] & time_ok_bt[:, :, None]
    step_t1 = (t0 + jnp.arange(obs_btc.shape[1]))[:, None]
    x = self.embed(jnp.concatenate([obs_btc, act_btc], axis=2), ok_btc, is_act_c, channel_c, step_t1)
    return x, chan_ok_bc

  def _logits(self, x_btcd, co):
    return self.head(self.ln_out(x_btcd[:, :, :co]))  # [B, T, Co, K]

  def trunk(self, obs_btc, act_btc, obs_mask_bc, act_mask_bc, time_ok_bt):
    """All steps at once (causal): (x_btcd, [(k_btche, v_btche) per layer])."""
    x, chan_ok_bc = self._tokens(obs_btc, act_btc, obs_mask_bc, act_mask_bc, time_ok_bt, 0)
    t = obs_btc.shape[1]
    causal_qk = jnp.tril(jnp.ones((t, t), bool))
    time_mask_bqk = causal_qk[None] & time_ok_bt[:, None, :]
    kvs = []
    for blk in self.blocks:
      x, kv = blk(x, time_mask_bqk, chan_ok_bc)
      kvs.append(kv)
    return x, kvs

  def __call__(self, batch):
    x, _ = self.trunk(batch["obs"], batch["act"], batch["obs_mask"], batch["act_mask"], batch["time_mask"])
    return self._logits(x, batch["obs"].shape[2])

  def prefill(self, batch):
    """Steps < history with the true values: (logits_bck of the last history step, which
    predict obs[:, history]; KV caches [B, T, C, H, dh] per layer, zero beyond history)."""
    h, t = self.config.history, batch["obs"].shape[1]
    x, kvs = self.trunk(
      batch["obs"][:, :h], batch["act"][:, :h], batch["obs_mask"], batch["act_mask"], batch["time_mask"][:, :h]
    )
    pad = lambda a: jnp.pad(a, ((0, 0), (0, t - h), (0, 0), (0, 0), (0, 0)))
    caches = [(pad(k), pad(v)) for k, v in kvs]
    return self._logits(x[:, -1:], batch["obs"].shape[2])[:, 0], caches

  def decode_step(self, obs_bc, act_bc, step, batch, caches):
    """Step `step` (traced) from its obs and act values: (logits_bck predicting
    obs[:, step + 1], updated caches). Attends to cached steps <= step only."""
    t = batch["obs"].shape[1]
    time_ok_bt = batch["time_mask"]
    step_ok_b1 = jax.lax.dynamic_slice_in_dim(time_ok_bt, step, 1, axis=1)
    x, chan_ok_bc = self._tokens(
      obs_bc[:, None], act_bc[:, None], batch["obs_mask"], batch["act_mask"], step_ok_b1, step
    )
    time_mask_b1k = (jnp.arange(t) <= step)[None, None, :] & time_ok_bt[:, None, :]
    new = []
    for blk, cache in zip(self.blocks, caches):
      x, kv = blk(x, time_mask_b1k, chan_ok_bc, cache, step)
      new.append(kv)
    return self._logits(x, obs_bc.shape[1])[:, 0], new


# ----------------------------------------------------------------------------- WorldModel


def trajworld_model(config: TrajWorldConfig) -> WorldModel:
  net, train_net = TrajWorldNet(config), TrajWorldNet(config, train=True)
  h = config.history
  init, loss = teacher_forced_fns(net, train_net, config)

  def predict(params, batch):
    batch = prepare_batch(batch, config)
    obs, act = batch["obs"], batch["act"]
    t = obs.shape[1]
    if t <= h:
      return obs
    variables = {"params": params}
    logits_bck, caches = net.apply(variables, batch, method=TrajWorldNet.prefill)
    first_bc = expectation(logits_bck)  # obs[:, h]

    def body(carry, step):
      obs_bc, caches = carry
      act_bc = jax.lax.dynamic_index_in_dim(act, step, axis=1, keepdims=False)
      logits_bck, caches = net.apply(variables, obs_bc, act_bc, step, batch, caches, method=TrajWorldNet.decode_step)
      nxt_bc = expectation(logits_bck)
      return (nxt_bc, caches), nxt_bc

    _, rest_sbc = jax.lax.scan(body, (first_bc, caches), jnp.arange(h, t - 1))
    pred = jnp.concatenate([obs[:, :h], first_bc[:, None], jnp.swapaxes(rest_sbc, 0, 1)], axis=1)
    return copy_history(pred, batch, h)

  return WorldModel("trajworld", config, init, loss, predict, replicated_specs, Capacity.of(config, UNLIMITED))


def build_trajworld(size: str = "base", rules: Any = None, **overrides: Any) -> WorldModel:
  del rules  # the registry's rule table: nothing of this model is split
  return trajworld_model(get_trajworld_config(size, **overrides))
