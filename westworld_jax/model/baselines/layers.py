"""Layers and helpers the baselines (TrajWorld, TDM, MLPEnsemble) share: the checked float32
batch they read, the masked softmax, the obs-then-action channel layout, the scalar-token
embedding and the transformer pieces (multi-head projections, FFN, LayerNorm)."""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from westworld_jax.model.batch import check_batch
from westworld_jax.model.loss import WEIGHTINGS, next_step_loss
from westworld_jax.model.tokenizer import hl_gauss_histogram

_MASKED_LOGIT = -1e9  # finite: a fully masked row gives no NaN (its weights are zeroed)
_EMBED_INIT = nn.initializers.normal(stddev=0.02)
# What the baselines do not read, so do not bound (they embed no structure and no kinds).
UNLIMITED = ("max_objects", "max_bodies", "num_kinds")


def check_transformer_config(config: Any) -> None:
  """The checks TrajWorld's and TDM's configs share (heads, history, loss weighting)."""
  if config.d_model % config.n_heads:
    raise ValueError(f"d_model={config.d_model} is not divisible by n_heads={config.n_heads}.")
  if not 1 <= config.history <= config.max_window_len:
    raise ValueError(f"history={config.history} must be in [1, max_window_len={config.max_window_len}].")
  if config.loss_weighting not in WEIGHTINGS:
    raise ValueError(f"loss_weighting={config.loss_weighting!r}: use one of {WEIGHTINGS}.")


def prepare_batch(batch: Mapping[str, Any], config: Any) -> dict[str, jax.Array]:
  """Checked batch with float32 values and bool masks (the only keys the baselines read)."""
  check_batch(batch, config, structure=False)
  out = {k: jnp.asarray(batch[k]).astype(jnp.float32) for k in ("obs", "act")}
  out.update({k: jnp.asarray(batch[k]).astype(bool) for k in ("obs_mask", "act_mask", "time_mask")})
  if "env_id" in batch:
    out["env_id"] = jnp.asarray(batch["env_id"])
  return out


def masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis restricted to `mask` (float32); a row without any valid
  entry is all zero, and masked entries are exactly zero (so padding never mixes in)."""
  logits = jnp.where(mask, logits.astype(jnp.float32), _MASKED_LOGIT)
  return jax.nn.softmax(logits, axis=-1) * mask


def channel_layout(co: int, ca: int, max_obs_channels: int) -> tuple[jax.Array, jax.Array]:
  """(is_act_c bool [Co + Ca], channel_c int32 [Co + Ca]) for obs channels then actions;
  action channel indices are offset by max_obs_channels (one shared channel table)."""
  is_act_c = jnp.arange(co + ca) >= co
  channel_c = jnp.where(is_act_c, max_obs_channels + jnp.arange(co + ca) - co, jnp.arange(co + ca)).astype(jnp.int32)
  return is_act_c, channel_c


class ScalarTokenEmbed(nn.Module):
  """Scalar values -> tokens: value (HL-Gauss histogram, bias-free projection, one map for
  observations and actions) + type + channel index + time step.

  values and ok (bool; False = padding or unknown -> all-zero histogram, no value
  information) share a shape [...]; is_act, channel and step broadcast against it.
  Returns float32 [..., d_model].
  """

  d_model: int
  num_bins: int
  num_channels: int  # max_obs_channels + max_act_channels
  max_window_len: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    embed = lambda n, name: nn.Embed(
      n, self.d_model, embedding_init=_EMBED_INIT, param_dtype=self.param_dtype, name=name
    )
    self.value_proj = nn.Dense(self.d_model, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
    self.type_embed = embed(2, "type")
    self.channel_embed = embed(self.num_channels, "channel")
    self.time_embed = embed(self.max_window_len, "time")

  def __call__(self, values, ok, is_act, channel, step):
    hist = hl_gauss_histogram(values, self.num_bins, mask=ok)
    x = (
      self.value_proj(hist).astype(jnp.float32)
      + self.type_embed(is_act.astype(jnp.int32))
      + self.channel_embed(channel)
      + self.time_embed(step)
    )
    return x.astype(jnp.float32)


class QKVO(nn.Module):
  """Multi-head projections: qkv(x [..., D]) -> 3 x [..., H, dh]; __call__(o) -> [..., D]."""

  d_model: int
  n_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    h, dh = self.n_heads, self.d_model // self.n_heads
    dense = lambda: nn.DenseGeneral((h, dh), dtype=self.dtype, param_dtype=self.param_dtype)
    self.query, self.key, self.value = dense(), dense(), dense()
    self.out = nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype)

  def qkv(self, x):
    return self.query(x), self.key(x), self.value(x)

  def __call__(self, o):
    return self.out(o).astype(jnp.float32)


class FeedForward(nn.Module):
  d_model: int
  d_ff: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(self.d_ff, dtype=self.dtype, param_dtype=self.param_dtype, name="ffn_in")(x)
    y = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=self.param_dtype, name="ffn_out")(nn.gelu(y))
    return y.astype(jnp.float32)


def layer_norm(param_dtype, name=None):
  return nn.LayerNorm(dtype=jnp.float32, param_dtype=param_dtype, name=name)


def teacher_forced_fns(net: nn.Module, train_net: nn.Module, config: Any):
  """(init, loss) of a transformer baseline whose __call__ returns next-step logits at every
  position: teacher forcing, every next-step target (t predicts t + 1), dropout only in training."""

  def init(rng, batch):
    return net.init({"params": rng}, prepare_batch(batch, config))["params"]

  def loss(params, batch, rng):
    batch = prepare_batch(batch, config)
    logits = train_net.apply({"params": params}, batch, rngs={"dropout": rng})
    nll = next_step_loss(logits, batch, first_target_step=1, weighting=config.loss_weighting)
    return nll, {"nll": nll}

  return init, loss
