"""Token embeddings: every scalar observation/action channel at every time step is a token.

token = value + type + channel index + channel kind + time step + structure, where
  value      bias-free linear projection of the value's HL-Gauss histogram (config.value_input
             "histogram_linear": plus one of the value itself); observations
             the model must predict (t >= history) and everything at padded time steps
             are replaced by ONE learned query vector (observations) or a zero value
             (actions), so the whole horizon comes out of one forward pass and unknown
             values can never leak in;
  type       observation or action;
  channel    the channel's position in its list (actions offset by max_obs_channels);
  kind       channel kind id (joint position, velocity, root height, ...; own table per type);
  time       time step index t;
  structure  concat of four d/4 tables: (object id, pre-order, LCRS in-order, LCRS
             post-order rank) of the body the channel acts on (none with
             config.structural_embedding=False).
Layout is channel-major, x_bctd, because the blocks run the SSM per channel over time.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from westworld_jax.model.configs import ModelConfig
from westworld_jax.model.tokenizer import hl_gauss_histogram

_QUERY_INIT = nn.initializers.normal(stddev=0.02)  # the query token, as upstream


class StructuralEmbedding(nn.Module):
  """[..., 4] int (object, pre, in, post) -> [..., d_model]: four d/4 tables concatenated."""

  d_model: int
  max_objects: int
  max_bodies: int
  param_dtype: jnp.dtype = jnp.float32
  init_std: float = 1.0

  @nn.compact
  def __call__(self, struct_n4: jax.Array) -> jax.Array:
    width = self.d_model // 4
    sizes = {
      "object": self.max_objects,
      "pre_order": self.max_bodies,
      "in_order": self.max_bodies,
      "post_order": self.max_bodies,
    }
    init = nn.initializers.normal(self.init_std)
    parts = [
      nn.Embed(n, width, embedding_init=init, param_dtype=self.param_dtype, name=name)(struct_n4[..., i])
      for i, (name, n) in enumerate(sizes.items())
    ]
    return jnp.concatenate(parts, axis=-1)


class TokenEmbedding(nn.Module):
  """batch dict -> (obs_bctd [B, Co, T, D], act_bctd [B, Ca, T, D]) in float32."""

  config: ModelConfig

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    cfg = self.config
    d, pdt = cfg.d_model, jnp.dtype(cfg.param_dtype)
    obs_bct = jnp.swapaxes(batch["obs"], 1, 2)
    act_bct = jnp.swapaxes(batch["act"], 1, 2)
    co, t = obs_bct.shape[1:]
    ca = act_bct.shape[1]
    time_t = jnp.arange(t)
    real_step_b1t = batch["time_mask"][:, None, :]

    # Values. One projection for observations and actions (as upstream).
    init = nn.initializers.normal(cfg.embed_init_std)
    value_proj = nn.Dense(d, use_bias=False, kernel_init=init, param_dtype=pdt, name="value_proj")
    seen_bct = real_step_b1t & (time_t < cfg.history)[None, None, :] & batch["obs_mask"][:, :, None]
    act_known_bct = real_step_b1t & batch["act_mask"][:, :, None]

    linear = cfg.value_input == "histogram_linear"
    value_linear = (
      nn.Dense(d, use_bias=False, kernel_init=init, param_dtype=pdt, name="value_linear") if linear else None
    )

    def embed_value(x_bct, known_bct):
      v = value_proj(hl_gauss_histogram(x_bct, cfg.num_bins, mask=known_bct))
      if linear:  # the value centred on [-0.5, 0.5]; unknown values embed to zero, as their histograms do
        v = v + value_linear(jnp.where(known_bct, jnp.clip(x_bct, 0.0, 1.0) - 0.5, 0.0)[..., None])
      return v

    obs_val = embed_value(obs_bct, seen_bct)
    query_d = self.param("query", _QUERY_INIT, (d,), pdt)
    # Unseen = future or padded step; padded channels keep their zero value (masked later).
    unseen_bct = ~(real_step_b1t & (time_t < cfg.history)[None, None, :])
    obs_val = jnp.where(unseen_bct[..., None], query_d, obs_val)
    act_val = embed_value(act_bct, act_known_bct)

    # Positional and structural embeddings, per channel [B, C, D] and per step [T, D].
    type_emb = nn.Embed(2, d, embedding_init=init, param_dtype=pdt, name="type")
    chan_emb = nn.Embed(
      cfg.max_obs_channels + cfg.max_act_channels, d, embedding_init=init, param_dtype=pdt, name="channel"
    )
    kind_emb = nn.Embed(2 * cfg.num_kinds, d, embedding_init=init, param_dtype=pdt, name="kind")
    if cfg.structural_embedding:
      struct_emb = StructuralEmbedding(d, cfg.max_objects, cfg.max_bodies, pdt, cfg.embed_init_std, name="structure")
    else:  # the ablation: no structure table
      struct_emb = lambda idx_bc4: jnp.zeros(idx_bc4.shape[:-1] + (d,), jnp.float32)
    time_emb = nn.Embed(cfg.max_window_len, d, embedding_init=init, param_dtype=pdt, name="time")(time_t)

    obs_chan_bcd = (
      type_emb(jnp.zeros((), jnp.int32))
      + chan_emb(jnp.arange(co))[None]
      + kind_emb(batch["obs_kind"])
      + struct_emb(batch["obs_struct"])
    )
    act_chan_bcd = (
      type_emb(jnp.ones((), jnp.int32))
      + chan_emb(cfg.max_obs_channels + jnp.arange(ca))[None]
      + kind_emb(cfg.num_kinds + batch["act_kind"])
      + struct_emb(batch["act_struct"])
    )
    obs_bctd = obs_val + obs_chan_bcd[:, :, None, :] + time_emb[None, None]
    act_bctd = act_val + act_chan_bcd[:, :, None, :] + time_emb[None, None]
    return obs_bctd.astype(jnp.float32), act_bctd.astype(jnp.float32)
