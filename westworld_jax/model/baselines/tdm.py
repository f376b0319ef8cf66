"""TDM baseline (Schubert et al. 2023, "A Generalist Dynamics Model for Control").

ONE causal transformer over the flattened token sequence
    [obs channels of step 0, act channels of step 0, obs of step 1, act of step 1, ...]
(L = T * (Co + Ca) tokens; x_bld). Tokens as in TrajWorld: HL-Gauss histogram through a
bias-free projection plus type, channel-index and time-step embeddings. The token
position is factored into (time step, channel index) rather than a flat index, so that a
bucket with more padded channels does not move the real tokens' positions. Pre-LN blocks
(causal self-attention, FFN), as the authors' TDM in the TrajWorld code base (width 384,
6 heads; size "upstream" has their 6 blocks, "base" 8 blocks ~ WestWorld base's 14.4M).

Next-token prediction over observations: the obs token at flat position p is predicted
from the output of the last REAL token before p (so within a step channel c + 1 comes after
channel c; obs channel 0 of step t + 1 comes from the last action of step t). Padded
channels and padded steps are masked as keys, skipped by that "last real token" pointer
and count in no loss, so they are never context and cost nothing but their slot.
Targets are every real obs token of steps >= 1 (as loss.next_step_loss with
first_target_step=1: logits[:, t, c] predicts obs[:, t + 1, c]).

predict(): prefill the history tokens, then decode token by token (lax.scan over the
remaining (T - history) * (Co + Ca) positions) with a KV cache [B, L, H, dh] per layer:
an obs token's value is the expectation read-out of its prediction, an action token's is
the true action. Each token costs O(L); the rollout is inherently sequential (TDM's known
cost). Training attention runs in query blocks of `attn_chunk` (rematerialised), so memory
grows as chunk * L rather than L^2 for long windows (150 steps x many channels).
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
  _MASKED_LOGIT,
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


@dataclasses.dataclass(frozen=True)
class TDMConfig(ConfigMixin):
  """Architecture of the TDM baseline (module docstring)."""

  d_model: int = 384
  n_layers: int = 8
  n_heads: int = 6
  d_ff: int = 1536
  num_bins: int = 256
  dropout_rate: float = 0.05  # residual dropout, as the TrajWorld code base
  history: int = 50
  max_window_len: int = 150
  max_obs_channels: int = 128
  max_act_channels: int = 64
  attn_chunk: int = 1024  # query block of the full-sequence attention; 0 = one block
  loss_weighting: str = "token"
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False

  def __post_init__(self):
    check_transformer_config(self)


TDM_SIZES: dict[str, dict[str, Any]] = {
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
    attn_chunk=64,
  ),
  "base": dict(),
  "upstream": dict(n_layers=6),  # the authors' size (~10.9M)
}


def get_tdm_config(size: str = "base", **overrides: Any) -> TDMConfig:
  return sized_config(TDMConfig, TDM_SIZES, size, **overrides)


def causal_attention(q_bqhe, k_bkhe, v_bkhe, q_pos_q, key_ok_bk, chunk: int = 0):
  """Attention of queries at flat positions q_pos to keys 0..K-1 with key position <= query
  position and key_ok. Queries run in blocks of `chunk` (each rematerialised), so only
  [B, H, chunk, K] logits are live, not [B, H, Q, K]."""
  scale = 1.0 / jnp.sqrt(q_bqhe.shape[-1])
  k_pos = jnp.arange(k_bkhe.shape[1])

  def block(q, pos, k, v, ok):
    logits = jnp.einsum("bqhe,bkhe->bhqk", q, k, preferred_element_type=jnp.float32)
    mask = (k_pos[None, :] <= pos[:, None])[None, None] & ok[:, None, None, :]
    w = masked_softmax(logits * scale, mask)
    return jnp.einsum("bhqk,bkhe->bqhe", w.astype(v.dtype), v)

  b, nq, h, e = q_bqhe.shape
  if not chunk or nq <= chunk:
    return block(q_bqhe, q_pos_q, k_bkhe, v_bkhe, key_ok_bk)
  n = -(-nq // chunk)
  q = jnp.pad(q_bqhe, ((0, 0), (0, n * chunk - nq), (0, 0), (0, 0)))
  pos = jnp.pad(q_pos_q, (0, n * chunk - nq))
  q_nbqhe = jnp.swapaxes(q.reshape(b, n, chunk, h, e), 0, 1)
  blk = jax.checkpoint(block)
  out = jax.lax.map(lambda a: blk(a[0], a[1], k_bkhe, v_bkhe, key_ok_bk), (q_nbqhe, pos.reshape(n, chunk)))
  return jnp.swapaxes(out, 0, 1).reshape(b, n * chunk, h, e)[:, :nq]


def decode_attention(q_b1he, k_bkhe, v_bkhe, pos, key_ok_bk):
  """causal_attention of ONE query at flat position `pos`, written as broadcasts and reductions over
  the cache's own [B, K, H, dh] layout: the einsum form makes XLA transpose the whole KV cache for
  every decoded token (most of a CPU replan's time)."""
  scale = 1.0 / jnp.sqrt(q_b1he.shape[-1])
  logits_bkh = jnp.sum(q_b1he.astype(jnp.float32) * k_bkhe.astype(jnp.float32), axis=-1) * scale
  mask_bk = (jnp.arange(k_bkhe.shape[1]) <= pos)[None] & key_ok_bk
  m_bk1 = mask_bk[..., None]
  w_bkh = jax.nn.softmax(jnp.where(m_bk1, logits_bkh, _MASKED_LOGIT), axis=1) * m_bk1  # masked_softmax over K
  return jnp.sum(w_bkh[..., None] * v_bkhe.astype(jnp.float32), axis=1, keepdims=True).astype(v_bkhe.dtype)


class TDMBlock(nn.Module):
  """Pre-LN causal self-attention + FFN on x_bld; returns (x, (k_blhe, v_blhe)).

  With kv_cache=(k, v) [B, L, H, dh] and x one token at flat position `pos` (x_b1d),
  the token's keys/values are written at pos and it attends to the cache (decode)."""

  config: TDMConfig
  deterministic: bool = True

  def setup(self):
    cfg = self.config
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    self.ln_attn, self.ln_ffn = layer_norm(pdt), layer_norm(pdt)
    self.attn = QKVO(cfg.d_model, cfg.n_heads, dt, pdt)
    self.ffn = FeedForward(cfg.d_model, cfg.d_ff, dt, pdt)
    self.drop = nn.Dropout(cfg.dropout_rate)

  def __call__(self, x_bld, q_pos_l, key_ok_bl, kv_cache=None, pos=None):
    q, k, v = self.attn.qkv(self.ln_attn(x_bld))
    if kv_cache is not None:
      k = jax.lax.dynamic_update_slice_in_dim(kv_cache[0], k.astype(kv_cache[0].dtype), pos, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(kv_cache[1], v.astype(kv_cache[1].dtype), pos, axis=1)
    if kv_cache is not None:
      o = decode_attention(q, k, v, pos, key_ok_bl)
    else:
      o = causal_attention(q, k, v, q_pos_l, key_ok_bl, self.config.attn_chunk)
    x = x_bld + self.drop(self.attn(o), deterministic=self.deterministic)
    y = self.ffn(self.ln_ffn(x))
    return x + self.drop(y, deterministic=self.deterministic), (k, v)


def flat_tokens(batch, config: TDMConfig, hide_future: bool):
  """The flattened window: values_bl, ok_bl (real channel & real step), and per position
  is_act_l, channel_l, step_l. hide_future zeroes obs at steps >= history (never read)."""
  obs, act = batch["obs"], batch["act"]
  b, t, co = obs.shape
  ca = act.shape[2]
  if hide_future:
    obs = jnp.where((jnp.arange(t) < config.history)[None, :, None], obs, 0.0)
  is_act_c, channel_c = channel_layout(co, ca, config.max_obs_channels)
  chan_ok_bc = jnp.concatenate([batch["obs_mask"], batch["act_mask"]], axis=1)
  ok_btc = chan_ok_bc[:, None, :] & batch["time_mask"][:, :, None]
  values_bl = jnp.concatenate([obs, act], axis=2).reshape(b, t * (co + ca))
  return (
    values_bl,
    ok_btc.reshape(b, -1),
    jnp.tile(is_act_c, t),
    jnp.tile(channel_c, t),
    jnp.repeat(jnp.arange(t), co + ca),
  )


class TDMNet(nn.Module):
  """__call__(batch) -> next-step logits [B, T, Co, K] (teacher forced; logits[:, -1] = 0);
  prefill / decode_step: the KV-cached token-by-token rollout pieces."""

  config: TDMConfig
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
    block = nn.remat(TDMBlock) if (cfg.remat and self.train) else TDMBlock
    self.blocks = [block(cfg, deterministic=not self.train) for _ in range(cfg.n_layers)]
    self.ln_out = layer_norm(pdt)
    self.head = nn.Dense(cfg.num_bins, dtype=jnp.float32, param_dtype=pdt)

  def trunk(self, values_bl, ok_bl, is_act_l, channel_l, step_l):
    x = self.embed(values_bl, ok_bl, is_act_l, channel_l, step_l)
    q_pos_l = jnp.arange(values_bl.shape[1])
    kvs = []
    for blk in self.blocks:
      x, kv = blk(x, q_pos_l, ok_bl)
      kvs.append(kv)
    return x, kvs

  def read_out(self, x_nd):
    return self.head(self.ln_out(x_nd))

  def __call__(self, batch):
    b, t, co = batch["obs"].shape
    c = co + batch["act"].shape[2]
    values_bl, ok_bl, *layout = flat_tokens(batch, self.config, hide_future=False)
    x_bld, _ = self.trunk(values_bl, ok_bl, *layout)
    # Each target's source: the last real position before it (-1: none; clamped, masked).
    last_real_bl = jax.lax.cummax(jnp.where(ok_bl, jnp.arange(t * c), -1), axis=1)
    tgt_n = (jnp.arange(1, t)[:, None] * c + jnp.arange(co)[None, :]).reshape(-1)
    src_bn = jnp.maximum(last_real_bl[:, tgt_n - 1], 0)
    x_bnd = jnp.take_along_axis(x_bld, src_bn[..., None], axis=1)
    logits = self.read_out(x_bnd).reshape(b, t - 1, co, -1)
    return jnp.concatenate([logits, jnp.zeros_like(logits[:, :1])], axis=1)

  def prefill(self, batch):
    """Tokens of steps < history: (logits_bk of the last real token, which predicts the
    first horizon obs token; KV caches [B, L, H, dh] per layer, zero beyond the prefix)."""
    values_bl, ok_bl, *layout = flat_tokens(batch, self.config, hide_future=True)
    l = values_bl.shape[1]
    l0 = self.config.history * l // batch["obs"].shape[1]
    x_bld, kvs = self.trunk(values_bl[:, :l0], ok_bl[:, :l0], *(a[:l0] for a in layout))
    last_b = jnp.maximum(jnp.max(jnp.where(ok_bl[:, :l0], jnp.arange(l0), -1), axis=1), 0)
    logits_bk = self.read_out(x_bld[jnp.arange(x_bld.shape[0]), last_b])
    pad = lambda a: jnp.pad(a, ((0, 0), (0, l - l0), (0, 0), (0, 0)))
    return logits_bk, [(pad(k), pad(v)) for k, v in kvs]

  def decode_step(self, value_b, pos, ok_bl, is_act_l, channel_l, step_l, caches):
    """The token at flat position `pos` (traced) with value_b: (logits_bk from its output,
    updated caches)."""
    at = lambda a: jax.lax.dynamic_slice_in_dim(a, pos, 1, axis=a.ndim - 1)
    x = self.embed(value_b[:, None], at(ok_bl), at(is_act_l), at(channel_l), at(step_l))
    new = []
    for blk, cache in zip(self.blocks, caches):
      x, kv = blk(x, pos[None], ok_bl, cache, pos)
      new.append(kv)
    return self.read_out(x[:, 0]), new


def tdm_model(config: TDMConfig) -> WorldModel:
  net, train_net = TDMNet(config), TDMNet(config, train=True)
  h = config.history
  init, loss = teacher_forced_fns(net, train_net, config)

  def predict(params, batch):
    batch = prepare_batch(batch, config)
    obs = batch["obs"]
    b, t, co = obs.shape
    c = co + batch["act"].shape[2]
    if t <= h:
      return obs
    variables = {"params": params}
    last_bk, caches = net.apply(variables, batch, method=TDMNet.prefill)
    values_bl, ok_bl, *layout = flat_tokens(batch, config, hide_future=True)

    def body(carry, pos):
      last_bk, caches = carry
      value_b = jnp.where(pos % c < co, expectation(last_bk), values_bl[:, pos])
      new_bk, caches = net.apply(variables, value_b, pos, ok_bl, *layout, caches, method=TDMNet.decode_step)
      # Only a real token's output predicts what follows (padding is skipped).
      last_bk = jnp.where(ok_bl[:, pos, None], new_bk, last_bk)
      return (last_bk, caches), value_b

    _, values_nb = jax.lax.scan(body, (last_bk, caches), jnp.arange(h * c, t * c))
    fut_btc = jnp.swapaxes(values_nb, 0, 1).reshape(b, t - h, c)[:, :, :co]
    return copy_history(jnp.concatenate([obs[:, :h], fut_btc], axis=1), batch, h)

  return WorldModel("tdm", config, init, loss, predict, replicated_specs, Capacity.of(config, UNLIMITED))


def build_tdm(size: str = "base", rules: Any = None, **overrides: Any) -> WorldModel:
  del rules  # the registry's rule table: nothing of this model is split
  return tdm_model(get_tdm_config(size, **overrides))
