"""The training loss of WestWorld's next-step logits.

logits[:, t, c] predicts obs[:, t + 1, c]. An element (b, t + 1, c) counts when channel c is
real (obs_mask), step t + 1 is real (time_mask) and t + 1 >= first_target_step. WestWorld
trains with ModelConfig.first_target_step: 1 (upstream) counts every next-step target of the
window, history positions included; the history length counts the predicted horizon only.
The metric of validation and evaluation (metrics.py) always scores the horizon (steps >= history).

Target of the cross-entropy:
  "bin" (upstream): one-hot on the bin holding the value. Its best read-out (expectation over bin
          centres) is the bin's centre, a quantisation error of up to half a bin: with K bins a mean
          of 1/(4K) in normalised units, comparable to a channel's one-step change for small K;
  "hl_gauss": the value's HL-Gauss histogram (the input's, sigma 0.75 bins; Farebrother et al.
          2024), whose expectation is the value itself away from [0, 1]'s edges: no quantisation floor.

Weighting (padding never counts, unlike upstream's fixed 1/78 weight per padded slot):
  "token" (default): mean over all real target tokens of the batch; an environment weighs
          in proportion to its real tokens (a 60-channel humanoid counts 10x a 6-channel
          arm), which is what "every environment weighs by its real tokens" says;
  "env":  each environment's mean over its real tokens, then the plain mean over the
          environments present in the batch (every robot counts equally).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from westworld_jax.model.tokenizer import hl_gauss_histogram, target_bins

WEIGHTINGS = ("token", "env")
TARGETS = ("bin", "hl_gauss")


def target_mask(batch: dict[str, jax.Array], first_target_step: int) -> jax.Array:
  """bool [B, T-1, Co]: which next-step targets obs[:, 1:] count (aligned with logits[:, :-1])."""
  t = batch["obs"].shape[1]
  step_ok = batch["time_mask"].astype(bool)[:, 1:] & (jnp.arange(1, t) >= first_target_step)
  return step_ok[:, :, None] & batch["obs_mask"].astype(bool)[:, None, :]


def _weighted_mean(per_elem_btc, mask_btc, env_id_b, weighting):
  """Mean of per_elem over mask, token- or environment-weighted (see module docstring)."""
  w = mask_btc.astype(jnp.float32)
  sum_b = jnp.sum(per_elem_btc * w, axis=(1, 2))
  cnt_b = jnp.sum(w, axis=(1, 2))
  if weighting == "token":
    return jnp.sum(sum_b) / jnp.maximum(jnp.sum(cnt_b), 1.0)
  if weighting != "env":
    raise ValueError(f"weighting={weighting!r}: use one of {WEIGHTINGS}.")
  # Group samples by env_id with a [B, B] match (no bound on env ids needed; shards cleanly).
  has_b = cnt_b > 0
  same_bb = (env_id_b[:, None] == env_id_b[None, :]) & has_b[:, None] & has_b[None, :]
  same_bb = same_bb.astype(jnp.float32)
  env_mean_b = (same_bb @ sum_b) / jnp.maximum(same_bb @ cnt_b, 1.0)
  share_b = has_b / jnp.maximum(jnp.sum(same_bb, axis=1), 1.0)  # 1 / (samples of its env)
  return jnp.sum(env_mean_b * share_b) / jnp.maximum(jnp.sum(share_b), 1.0)


def next_step_loss(
  logits_btck: jax.Array,
  batch: dict[str, jax.Array],
  *,
  first_target_step: int,
  weighting: str = "token",
  target: str = "bin",
) -> jax.Array:
  """Masked cross-entropy of next-step observation bins (scalar float32).

  Args:
    logits_btck: [B, T, Co, K] from WestWorld.
    batch: with obs, obs_mask, time_mask and (for weighting="env") env_id.
    first_target_step: first target step that counts (usually the history length).
    weighting: "token" or "env" (module docstring).
    target: "bin" or "hl_gauss" (module docstring).
  """
  num_bins = logits_btck.shape[-1]
  logp = jax.nn.log_softmax(logits_btck[:, :-1].astype(jnp.float32), axis=-1)
  if target == "bin":
    target_btc = target_bins(batch["obs"][:, 1:], num_bins)
    nll_btc = -jnp.take_along_axis(logp, target_btc[..., None], axis=-1)[..., 0]
  elif target == "hl_gauss":
    nll_btc = -jnp.sum(hl_gauss_histogram(batch["obs"][:, 1:], num_bins) * logp, axis=-1)
  else:
    raise ValueError(f"target={target!r}: use one of {TARGETS}.")
  mask_btc = target_mask(batch, first_target_step)
  env_id = batch.get("env_id", jnp.zeros(logits_btck.shape[:1], jnp.int32))
  return _weighted_mean(nll_btc, mask_btc, env_id, weighting)
