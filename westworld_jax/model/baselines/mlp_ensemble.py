"""MLPEnsemble baseline (PETS / MBPO style probabilistic ensemble, as in the TrajWorld code base).

`n_members` (7) MLPs (n_hidden x hidden SiLU, 4 x 200 at base), vmapped over a leading
member axis of every parameter. Input: (obs_t, act_t) padded to the config's max channels
with padded channels set to zero, plus the two channel masks (so a real 0.0 and a missing
channel differ when one model serves robots of different shapes). Output: a diagonal
Gaussian over the state delta obs_{t+1} - obs_t (normalised units): mean and log-variance,
the latter soft-clamped between learned per-channel bounds (init -10 / 0.5) with the
usual 0.01 * (sum max_logvar - sum min_logvar) penalty and per-layer L2 weight decay.
Loss: Gaussian NLL over real channels of real transitions (both steps real), summed over
members; each member sees the batch's samples with its own Poisson(1) bootstrap weights
(drawn from the loss rng; bootstrap=False: plain ensemble).

predict (a pure function of params and the batch):
  elites: for EACH window, the `n_elites` (5) members with the lowest one-step MSE of
          their mean on the window's observed history transitions (obs[:, :history] and
          their actions only). Per window rather than per batch, so a window's prediction
          does not depend on what else is in the batch (and a batch of one robot gives the
          same elites for all its windows anyway);
  rollout: Markov, from obs[:, history - 1] with the true actions; the next state is the
          current one plus the mean of the elites' predicted mean deltas (deterministic,
          no sampling; clipped to the data's [0, 1] range), via lax.scan over the horizon.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from westworld_jax.model.baselines.layers import UNLIMITED, prepare_batch
from westworld_jax.config_mixin import ConfigMixin
from westworld_jax.model.configs import sized_config
from westworld_jax.model.sharding import replicated_specs
from westworld_jax.model.world_model import Capacity, WorldModel, copy_history


@dataclasses.dataclass(frozen=True)
class MLPEnsembleConfig(ConfigMixin):
  """The probabilistic ensemble (module docstring)."""

  n_members: int = 7
  n_elites: int = 5
  hidden: int = 200
  n_hidden: int = 4
  mask_inputs: bool = True  # append obs_mask/act_mask to the input
  min_logvar_init: float = -10.0
  max_logvar_init: float = 0.5
  logvar_bound_coef: float = 0.01
  # L2 (0.5 * decay * sum w^2) per hidden layer, then the output layer (MBPO's values);
  # hidden layers beyond the list reuse its second-to-last entry.
  weight_decay: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
  bootstrap: bool = True
  clip_predictions: bool = True  # keep rollout states in the normalised [0, 1] range
  history: int = 50
  max_window_len: int = 150  # only bounds the window length (the model is Markov)
  max_obs_channels: int = 128
  max_act_channels: int = 64
  param_dtype: str = "float32"

  def __post_init__(self):
    if not 1 <= self.n_elites <= self.n_members:
      raise ValueError(f"n_elites={self.n_elites} must be in [1, n_members={self.n_members}].")
    if not 1 <= self.history <= self.max_window_len:
      raise ValueError(f"history={self.history} must be in [1, max_window_len={self.max_window_len}].")
    if not self.weight_decay:
      raise ValueError("weight_decay needs at least one entry (the output layer's).")


MLP_ENSEMBLE_SIZES: dict[str, dict[str, Any]] = {
  "tiny": dict(hidden=32, n_hidden=2, history=8, max_window_len=32, max_obs_channels=16, max_act_channels=8),
  "base": dict(),  # MBPO's 4 x 200 (~1.7M parameters for 7 members)
  "wide": dict(hidden=704),  # ~13.6M: parameter-matched to WestWorld base
}


def get_mlp_ensemble_config(size: str = "base", **overrides: Any) -> MLPEnsembleConfig:
  return sized_config(MLPEnsembleConfig, MLP_ENSEMBLE_SIZES, size, **overrides)


class GaussianMLP(nn.Module):
  """One member: x [..., F] -> (mean [..., max_obs], logvar [..., max_obs])."""

  config: MLPEnsembleConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    pdt = jnp.dtype(cfg.param_dtype)
    # MBPO's init: truncated normal, std 1 / (2 sqrt(fan_in)); zero bias.
    init = nn.initializers.variance_scaling(0.25, "fan_in", "truncated_normal")
    for i in range(cfg.n_hidden):
      x = nn.silu(nn.Dense(cfg.hidden, kernel_init=init, param_dtype=pdt, name=f"hidden_{i}")(x))
    out = nn.Dense(2 * cfg.max_obs_channels, kernel_init=init, param_dtype=pdt, name="out")(x)
    mean, raw = jnp.split(out.astype(jnp.float32), 2, axis=-1)
    c = cfg.max_obs_channels
    max_lv = self.param("max_logvar", nn.initializers.constant(cfg.max_logvar_init), (c,), pdt)
    min_lv = self.param("min_logvar", nn.initializers.constant(cfg.min_logvar_init), (c,), pdt)
    logvar = max_lv - nn.softplus(max_lv - raw)  # soft clamp, keeps gradients
    logvar = min_lv + nn.softplus(logvar - min_lv)
    return mean, logvar


def ensemble(config: MLPEnsembleConfig) -> nn.Module:
  """All members at once: x [..., F] (shared) -> (mean, logvar) [M, ..., max_obs]."""
  vmapped = nn.vmap(
    GaussianMLP,
    variable_axes={"params": 0},
    split_rngs={"params": True},
    in_axes=None,
    out_axes=0,
    axis_size=config.n_members,
  )
  return vmapped(config, name="members")


class _Ensemble(nn.Module):
  config: MLPEnsembleConfig

  @nn.compact
  def __call__(self, x):
    return ensemble(self.config)(x)


def _pad_last(x, n):
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def features(obs_nc, act_nc, obs_mask_nc, act_mask_nc, config: MLPEnsembleConfig):
  """Model input [..., F]: padded channels zeroed, padded to max channels (+ masks)."""
  co, ca = config.max_obs_channels, config.max_act_channels
  parts = [_pad_last(jnp.where(obs_mask_nc, obs_nc, 0.0), co), _pad_last(jnp.where(act_mask_nc, act_nc, 0.0), ca)]
  if config.mask_inputs:
    parts += [_pad_last(obs_mask_nc.astype(jnp.float32), co), _pad_last(act_mask_nc.astype(jnp.float32), ca)]
  return jnp.concatenate(parts, axis=-1)


def transitions(batch, config: MLPEnsembleConfig, first: int, last: int):
  """Transitions t -> t + 1 for t in [first, last): (features [B, n, F], target delta
  [B, n, max_obs], mask [B, n, max_obs] = real channel & both steps real)."""
  obs, act = batch["obs"][:, first : last + 1], batch["act"][:, first:last]
  n = last - first
  obs_mask = jnp.broadcast_to(batch["obs_mask"][:, None], (obs.shape[0], n, obs.shape[2]))
  act_mask = jnp.broadcast_to(batch["act_mask"][:, None], act.shape)
  x = features(obs[:, :-1], act, obs_mask, act_mask, config)
  delta = _pad_last(jnp.where(obs_mask, obs[:, 1:] - obs[:, :-1], 0.0), config.max_obs_channels)
  step_ok = batch["time_mask"][:, first:last] & batch["time_mask"][:, first + 1 : last + 1]
  mask = _pad_last(step_ok[:, :, None] & obs_mask, config.max_obs_channels)
  return x, delta, mask


def _member_means(v_mbnc, mask_bnc, w_mb=None):
  """Per member: weighted mean of v over masked elements -> [M]."""
  m = mask_bnc.astype(jnp.float32)[None]
  if w_mb is not None:
    m = m * w_mb[:, :, None, None]
  return jnp.sum(v_mbnc * m, axis=(1, 2, 3)) / jnp.maximum(jnp.sum(m, axis=(1, 2, 3)), 1.0)


def select_elites(apply_fn, params, batch, config: MLPEnsembleConfig):
  """(elite indices int32 [B, n_elites], one-step MSE [M, B]) from each window's history
  transitions only (obs[:, :history]); ties go to the lower member index."""
  h = config.history
  if h < 2:  # no observed transition: the first n_elites members
    err_mb = jnp.zeros((config.n_members, batch["obs"].shape[0]), jnp.float32)
  else:
    x, delta, mask = transitions(batch, config, 0, h - 1)
    mean, _ = apply_fn(params, x)
    m = mask.astype(jnp.float32)[None]
    err_mb = jnp.sum(jnp.square(mean - delta[None]) * m, axis=(2, 3)) / jnp.maximum(jnp.sum(m, axis=(2, 3)), 1.0)
  _, idx = jax.lax.top_k(-err_mb.T, config.n_elites)
  return idx, err_mb


def mlp_ensemble_model(config: MLPEnsembleConfig) -> WorldModel:
  net = _Ensemble(config)
  h = config.history
  apply_fn = lambda params, x: net.apply({"params": params}, x)

  def init(rng, batch):
    batch = prepare_batch(batch, config)
    x = features(batch["obs"][:, 0], batch["act"][:, 0], batch["obs_mask"], batch["act_mask"], config)
    return net.init({"params": rng}, x)["params"]

  def loss(params, batch, rng):
    batch = prepare_batch(batch, config)
    x, delta, mask = transitions(batch, config, 0, batch["obs"].shape[1] - 1)
    mean, logvar = apply_fn(params, x)  # [M, B, T-1, max_obs]
    nll = 0.5 * (jnp.square(mean - delta[None]) * jnp.exp(-logvar) + logvar)
    w_mb = (
      jax.random.poisson(rng, 1.0, (config.n_members, x.shape[0])).astype(jnp.float32) if config.bootstrap else None
    )
    nll_m = _member_means(nll, mask, w_mb)
    mse_m = _member_means(jnp.square(mean - delta[None]), mask)
    p = params["members"]
    bound = config.logvar_bound_coef * (jnp.sum(p["max_logvar"]) - jnp.sum(p["min_logvar"]))
    wd = config.weight_decay
    decays = [wd[min(i, max(len(wd) - 2, 0))] for i in range(config.n_hidden)] + [wd[-1]]
    names = [f"hidden_{i}" for i in range(config.n_hidden)] + ["out"]
    decay = sum(0.5 * d * jnp.sum(jnp.square(p[n]["kernel"])) for d, n in zip(decays, names))
    total = jnp.sum(nll_m) + bound + decay
    return total, {"nll": jnp.mean(nll_m), "mse": jnp.mean(mse_m), "logvar_bound": bound, "weight_decay": decay}

  def predict(params, batch):
    batch = prepare_batch(batch, config)
    obs, act = batch["obs"], batch["act"]
    t, co = obs.shape[1], obs.shape[2]
    if t <= h:
      return obs
    idx_be, _ = select_elites(apply_fn, params, batch, config)
    w_bm = jnp.sum(jax.nn.one_hot(idx_be, config.n_members), axis=1) / config.n_elites
    obs_mask, act_mask = batch["obs_mask"], batch["act_mask"]

    def step(obs_bc, act_bc):
      mean, _ = apply_fn(params, features(obs_bc, act_bc, obs_mask, act_mask, config))
      delta_bc = jnp.einsum("bm,mbc->bc", w_bm, mean)[:, :co]
      nxt = obs_bc + delta_bc
      if config.clip_predictions:
        nxt = jnp.clip(nxt, 0.0, 1.0)
      nxt = jnp.where(obs_mask, nxt, 0.0)
      return nxt, nxt

    start_bc = jnp.where(obs_mask, obs[:, h - 1], 0.0)
    _, fut_sbc = jax.lax.scan(step, start_bc, jnp.swapaxes(act[:, h - 1 : t - 1], 0, 1))
    pred = jnp.concatenate([obs[:, :h], jnp.swapaxes(fut_sbc, 0, 1)], axis=1)
    return copy_history(pred, batch, h)

  return WorldModel("mlp_ensemble", config, init, loss, predict, replicated_specs, Capacity.of(config, UNLIMITED))


def elites(model: WorldModel, params, batch):
  """The elite indices [B, n_elites] and history one-step MSE [M, B] that predict() uses."""
  config = model.config
  net = _Ensemble(config)
  return select_elites(lambda p, x: net.apply({"params": p}, x), params, prepare_batch(batch, config), config)


def build_mlp_ensemble(size: str = "base", rules: Any = None, **overrides: Any) -> WorldModel:
  del rules  # the registry's rule table: nothing of this model is split
  return mlp_ensemble_model(get_mlp_ensemble_config(size, **overrides))
