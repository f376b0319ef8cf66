"""WestWorld: the trajectory world model (channel attention + selective SSM over time + Sys-MoE).

`WestWorld(config)(batch, train=False)` maps a batch (see BATCH_SPEC.md: obs [B, T, Co],
act [B, T, Ca], masks, structural indices, kinds) to next-step logits: logits[:, t, c]
is the K-bin distribution of obs[:, t + 1, c]. Observations at t >= history are never
read (replaced by a learned query token), so the whole horizon history..T-1 comes out
of one forward pass (logits[:, history - 1 : T - 1]) given the history and all actions.

Each block (post-LayerNorm, like the authors), on observation tokens x_bctd:
  1. self-attention across the observation channels of each time step (padded channels
     masked as keys);
  2. cross-attention from observation channels to the same step's action channels;
  3. FFN;
  4. per channel over time: SelectiveSSM (sequences = B * Co), with a CLS token inserted
     into every channel's sequence (config.cls_position); block 0 learns it, later blocks
     take the previous block's CLS output (config.cls_from_previous_block, as upstream);
  5. Sys-MoE: expert MLPs on every token, gated by a system embedding
     (config.system_embedding: the channel's CLS output, its per-sample mean, or the
     token's own SSM output).
LayerNorms around 4-5 follow config.block_norms (upstream: LN before the SSM, none between
the SSM and the MoE, LN after the MoE residual, LN on the CLS for the gate and for the next
block). Dropout (config.dropout_rate) acts on attention weights, attention outputs and the
FFN output, as upstream. Action tokens are embedded once and not updated by the blocks.

Read-out: a Dense head gives the K-bin logits (upstream). config.readout_prior="last_value" adds a learned
multiple of the log HL-Gauss histogram of the last value each position has seen (the persistence
prediction, to sub-bin precision), so the head learns the change rather than the value.

Causality: the SSM and MoE experts are causal in time and the attentions stay within a
step, so only the gate can look ahead. With system_embedding="cls" and
cls_position="history" (default) the gate sees history steps only, so predictions of the
horizon are causal in actions and never see future observations. A history position's
prediction, which the default loss trains (config.first_target_step = 1, as upstream), may
depend through its gate on later history steps, its own target included: the same holds
upstream, whose CLS after the last step sees the whole window. system_embedding="token" is
causal everywhere. cls_position="end" is upstream exactly: the gate also sees every action
of the window.

`westworld_model(config, rules)` / `build_westworld(size, rules, **overrides)` wrap it as a
WorldModel (world_model.py); the registry builds it as "westworld". Sharding: config.expert_axis
names the logical axis of the experts (None: no expert parallelism); the rule table `rules`
(model/sharding.py) maps it to the mesh axis that the expert weights are split over and the
Sys-MoE dispatches over.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from westworld_jax.model.batch import check_batch, zeros_batch
from westworld_jax.model.configs import ModelConfig, get_model_config
from westworld_jax.model.embeddings import TokenEmbedding
from westworld_jax.model.loss import next_step_loss
from westworld_jax.model.mamba import SelectiveSSM
from westworld_jax.model import moe as moe_lib, sharding
from westworld_jax.model.moe import SysMoE
from westworld_jax.model.tokenizer import expectation, hl_gauss_histogram
from westworld_jax.model.world_model import Capacity, WorldModel, copy_history

_MASKED_LOGIT = -1e9  # finite, so a fully masked row gives no NaN (it is zeroed anyway)


class ChannelAttention(nn.Module):
  """Multi-head attention across channels within each time step.

  q_bqtd attends to kv_bktd (same B and T) with keys masked by key_mask_bk. Logits and
  softmax in float32. A query with no valid key gets a zero output.
  """

  d_model: int
  n_heads: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  dropout_rate: float = 0.0  # on the attention weights (as upstream)
  deterministic: bool = True

  @nn.compact
  def __call__(self, q_bqtd: jax.Array, kv_bktd: jax.Array, key_mask_bk: jax.Array):
    h, dh = self.n_heads, self.d_model // self.n_heads
    dense = lambda name: nn.DenseGeneral((h, dh), dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    q = dense("query")(q_bqtd)  # [B, Q, T, H, dh]
    k = dense("key")(kv_bktd)
    v = dense("value")(kv_bktd)
    logits = jnp.einsum("bqthe,bkthe->bthqk", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(dh)
    key_mask = key_mask_bk[:, None, None, None, :]
    logits = jnp.where(key_mask, logits, _MASKED_LOGIT)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = jnp.where(jnp.any(key_mask_bk, axis=-1)[:, None, None, None, None], weights, 0.0)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=self.deterministic)
    out = jnp.einsum("bthqk,bkthe->bqthe", weights.astype(self.dtype), v)
    return nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype, name="out")(out)


class WestWorldBlock(nn.Module):
  """One block on observation tokens x_bctd; returns (x_bctd, cls_out_sd, aux_loss).

  cls_in_sd: [B * Co, D] the CLS input of every channel sequence (the previous block's
  CLS output with config.cls_from_previous_block), or None for this block's learned CLS.
  cls_out_sd is None when the system embedding uses no CLS.
  """

  config: ModelConfig
  deterministic: bool = True
  expert_mesh_axis: str | None = None  # config.expert_axis through the rule table (None: unsharded)

  def _ln(self, name):
    return nn.LayerNorm(dtype=jnp.float32, param_dtype=jnp.dtype(self.config.param_dtype), name=name)

  def _drop(self, y):
    return nn.Dropout(self.config.dropout_rate)(y, deterministic=self.deterministic)

  @nn.compact
  def __call__(self, x_bctd, act_bctd, obs_mask_bc, act_mask_bc, cls_in_sd=None):
    cfg = self.config
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    b, c, t, d = x_bctd.shape
    attn = lambda name: ChannelAttention(d, cfg.n_heads, dt, pdt, cfg.dropout_rate, self.deterministic, name=name)

    # 1-3: within each time step; dropout on attention and FFN outputs (as upstream).
    x = self._ln("ln_self")(x_bctd + self._drop(attn("self_attn")(x_bctd, x_bctd, obs_mask_bc)))
    x = self._ln("ln_cross")(x + self._drop(attn("cross_attn")(x, act_bctd, act_mask_bc)))
    y = nn.Dense(cfg.d_ff, dtype=dt, param_dtype=pdt, name="ffn_in")(x)
    y = nn.Dense(d, dtype=dt, param_dtype=pdt, name="ffn_out")(nn.gelu(y))
    x = self._ln("ln_ffn")(x + self._drop(y))

    # 4: per channel over time; the CLS token rides along as one extra step.
    x_sld = x.reshape(b * c, t, d)
    use_cls = cfg.system_embedding in ("cls", "robot")
    if use_cls:
      cls_at = min(cfg.history, t) if cfg.cls_position == "history" else t
      if cls_in_sd is None:
        cls_d = self.param("cls", nn.initializers.normal(0.02), (d,), pdt)
        cls_in_sd = jnp.broadcast_to(cls_d.astype(x_sld.dtype), (b * c, d))
      x_sld = jnp.concatenate([x_sld[:, :cls_at], cls_in_sd[:, None].astype(x_sld.dtype), x_sld[:, cls_at:]], axis=1)
    ssm = SelectiveSSM(
      d_model=d,
      d_state=cfg.ssm_d_state,
      expand=cfg.ssm_expand,
      d_conv=cfg.ssm_d_conv,
      scan_impl=cfg.ssm_scan_impl,
      chunk_size=cfg.ssm_chunk_size,
      dtype=dt,
      param_dtype=pdt,
      name="ssm",
    )
    if cfg.block_norms == "upstream":
      z_sld = self._ln("ln_ssm_in")(x_sld)
      z_sld = z_sld + ssm(z_sld).astype(jnp.float32)
    else:
      z_sld = self._ln("ln_ssm")(x_sld + ssm(x_sld).astype(jnp.float32))
    cls_out_sd = None
    if use_cls:
      cls_z_sd = z_sld[:, cls_at]
      z_sld = jnp.concatenate([z_sld[:, :cls_at], z_sld[:, cls_at + 1 :]], axis=1)
      cls_out_sd = self._ln("ln_cls")(cls_z_sd) if cfg.block_norms == "upstream" else cls_z_sd

    # 5: Sys-MoE; routing units are the token groups that share one gate.
    gate_in = self._ln("ln_gate") if cfg.block_norms == "upstream" else (lambda v: v)
    valid_bc = obs_mask_bc
    if cfg.system_embedding == "cls":  # unit = one channel's sequence
      units_gld, sys_gd, valid_g = z_sld, gate_in(cls_z_sd), valid_bc.reshape(b * c)
    elif cfg.system_embedding == "robot":  # unit = one sample
      w_bc1 = valid_bc.astype(jnp.float32)[..., None]
      sys_gd = jnp.sum(gate_in(cls_z_sd).reshape(b, c, d) * w_bc1, axis=1) / jnp.maximum(jnp.sum(w_bc1, axis=1), 1.0)
      units_gld, valid_g = z_sld.reshape(b, c * t, d), jnp.any(valid_bc, axis=1)
    else:  # "token": unit = one token
      units_gld = z_sld.reshape(b * c * t, 1, d)
      sys_gd = gate_in(z_sld.reshape(b * c * t, d))
      valid_g = jnp.broadcast_to(valid_bc[:, :, None], (b, c, t)).reshape(-1)
    moe = SysMoE(
      d_model=d,
      d_expert=cfg.d_expert,
      num_experts=cfg.num_experts,
      mode=cfg.moe_mode,
      top_k=cfg.top_k,
      capacity_factor=cfg.capacity_factor,
      lb_loss_coef=cfg.lb_loss_coef,
      z_loss_coef=cfg.z_loss_coef,
      expert_axis=self.expert_mesh_axis,
      token_axes=tuple(cfg.token_axes),
      dtype=dt,
      param_dtype=pdt,
      name="moe",
    )
    y_gld, aux = moe(units_gld, sys_gd, valid_g)
    x_sld = self._ln("ln_moe")(z_sld + y_gld.reshape(b * c, t, d))
    return x_sld.reshape(b, c, t, d), cls_out_sd, aux


class WestWorld(nn.Module):
  """The world model. __call__(batch, train=False) -> {"logits": [B, T, Co, K] float32,
  "aux_loss": scalar float32 (MoE balance/z losses, already weighted)}. `rules`: the rule table
  that maps config.expert_axis to a mesh axis (model/sharding.py)."""

  config: ModelConfig
  rules: sharding.Rules = sharding.as_rules()

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool = False) -> dict[str, jax.Array]:
    cfg = self.config
    check_batch(batch, cfg)
    obs_mask_bc = batch["obs_mask"].astype(bool)
    act_mask_bc = batch["act_mask"].astype(bool)
    batch = {**batch, "obs_mask": obs_mask_bc, "act_mask": act_mask_bc, "time_mask": batch["time_mask"].astype(bool)}
    x_bctd, act_bctd = TokenEmbedding(cfg, name="embed")(batch)

    block_cls = nn.remat(WestWorldBlock) if cfg.remat else WestWorldBlock
    expert_mesh_axis = expert_mesh_axis_of(cfg, self.rules)
    aux = jnp.zeros((), jnp.float32)
    cls_sd = None
    for i in range(cfg.n_layers):
      x_bctd, cls_out_sd, aux_i = block_cls(
        cfg, deterministic=not train, expert_mesh_axis=expert_mesh_axis, name=f"block_{i}"
      )(x_bctd, act_bctd, obs_mask_bc, act_mask_bc, cls_sd)
      cls_sd = cls_out_sd if cfg.cls_from_previous_block else None
      aux = aux + aux_i

    logits_bctk = nn.Dense(cfg.num_bins, dtype=jnp.float32, param_dtype=jnp.dtype(cfg.param_dtype), name="head")(x_bctd)
    logits_btck = jnp.swapaxes(logits_bctk, 1, 2)
    if cfg.readout_prior == "last_value":
      scale = self.param("prior_scale", nn.initializers.ones, (), jnp.dtype(cfg.param_dtype))
      logits_btck = logits_btck + scale.astype(jnp.float32) * last_value_log_prior(
        batch["obs"], cfg.history, cfg.num_bins
      )
    return {"logits": logits_btck, "aux_loss": aux}


PRIOR_FLOOR = 1e-4  # the prior's smallest bin mass: a far bin costs the head ~9 logits, not ~100


def last_value_log_prior(obs_btc: jax.Array, history: int, num_bins: int) -> jax.Array:
  """[B, T, Co, K] log HL-Gauss histogram of the last value each position has seen: obs[t] at a history
  step t, obs[history - 1] at every later step (never an observation the model must predict)."""
  t = obs_btc.shape[1]
  seen_t = np.minimum(np.arange(t), min(history, t) - 1)  # static indices
  return jnp.log(jnp.maximum(hl_gauss_histogram(jnp.asarray(obs_btc)[:, seen_t], num_bins), PRIOR_FLOOR))


def init_params(config: ModelConfig, batch: dict[str, jax.Array], rng: jax.Array):
  """Parameters for `config`, shaped by one example batch."""
  return WestWorld(config).init({"params": rng}, batch)["params"]


def dummy_batch(
  config: ModelConfig,
  batch_size: int = 2,
  num_steps: int | None = None,
  num_obs: int | None = None,
  num_act: int | None = None,
) -> dict[str, jax.Array]:
  """batch.zeros_batch as jax arrays, sized by default to the config (for init and eval_shape)."""
  t = config.max_window_len if num_steps is None else num_steps
  co = min(16, config.max_obs_channels) if num_obs is None else num_obs
  ca = min(8, config.max_act_channels) if num_act is None else num_act
  return {k: jnp.asarray(v) for k, v in zeros_batch(batch_size, t, co, ca).items()}


def param_count(config: ModelConfig) -> int:
  """Number of parameters, computed abstractly (no memory, no FLOPs)."""
  batch = dummy_batch(config, batch_size=1, num_steps=min(config.max_window_len, config.history + 1))
  shapes = jax.eval_shape(lambda r: init_params(config, batch, r), jax.random.key(0))
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(shapes))


# ----------------------------------------------------------------------------- WorldModel


def expert_mesh_axis_of(config: ModelConfig, rules: sharding.Rules) -> str | None:
  """The mesh axis the experts are split over: config.expert_axis through the rule table."""
  axis = None if config.expert_axis is None else sharding.mesh_axes(rules, config.expert_axis)
  if axis is not None and not isinstance(axis, str):
    raise sharding.ShardingRuleError(
      f"the rule table maps the experts' logical axis {config.expert_axis!r} to mesh axes {axis}: "
      "the expert dispatch runs over one mesh axis"
    )
  return axis


def westworld_model(config: ModelConfig, rules: Any = None) -> WorldModel:
  """WestWorld as a WorldModel; `rules`: the rule table it runs under (None: sharding.DEFAULT_RULES)."""
  rules = sharding.as_rules(rules)
  expert_mesh_axis_of(config, rules)  # a table without the experts' axis fails here, not in a trace
  module = WestWorld(config, rules)

  def init(rng, batch):
    return module.init({"params": rng}, batch)["params"]

  def loss(params, batch, rng):
    out = module.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
    nll = next_step_loss(out["logits"], batch, first_target_step=config.first_target_step, target=config.loss_target)
    return nll + out["aux_loss"], {"nll": nll, "aux_loss": out["aux_loss"]}

  def predict(params, batch):
    logits = module.apply({"params": params}, batch)["logits"]
    # logits[:, t] predicts obs[:, t + 1].
    pred = jnp.concatenate([batch["obs"][:, :1].astype(jnp.float32), expectation(logits[:, :-1])], axis=1)
    return copy_history(pred, batch, config.history)

  def param_specs(params):
    return moe_lib.param_specs(params, config.expert_axis)

  return WorldModel("westworld", config, init, loss, predict, param_specs, Capacity.of(config))


def build_westworld(size: str = "base", rules: Any = None, **overrides: Any) -> WorldModel:
  return westworld_model(get_model_config(size, **overrides), rules)
