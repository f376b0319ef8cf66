"""Mamba-style selective SSM block, run per channel over time in every WestWorld block.

Structure as in Mamba (Gu & Dao, 2023): in_proj -> (x, z); causal depthwise conv1d over
time on x, SiLU; x_proj -> (dt_low, B, C); dt = softplus(dt_proj(dt_low)); selective scan
with A = -exp(A_log) (S4D-real init) and skip D; y * SiLU(z); out_proj.

The layer is strictly causal over time, so it can run over a whole window in one call
(`__call__`, `prefill`) or one step at a time from a cache (`init_cache`, `step`), and both
give the same outputs. Params are float32 by default; `dtype` sets the matmul compute dtype
(bf16 allowed) while the scan always accumulates in float32.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from westworld_jax.model.ssm import selective_scan, selective_scan_step

# (conv_state [S, d_conv - 1, d_inner] in the compute dtype, h [S, d_inner, N] float32).
Cache = tuple[jax.Array, jax.Array]


def _dt_bias_init(dt_min: float, dt_max: float, dt_floor: float):
  """Mamba's dt bias: softplus^-1 of dt ~ log-uniform in [dt_min, dt_max]."""

  def init(key, shape, dtype=jnp.float32):
    u = jax.random.uniform(key, shape, jnp.float32)
    dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = jnp.maximum(dt, dt_floor)
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)  # inverse softplus

  return init


def _a_log_init(key, shape, dtype=jnp.float32):
  """S4D-real: A[d, n] = -(n + 1), stored as A_log = log(n + 1)."""
  del key
  d_inner, d_state = shape
  a = jnp.broadcast_to(jnp.arange(1, d_state + 1, dtype=jnp.float32), (d_inner, d_state))
  return jnp.log(a).astype(dtype)


class SelectiveSSM(nn.Module):
  """Mamba block over time for S independent sequences: [S, L, d_model] -> same.

  Attributes:
    d_model: input/output width.
    d_state: SSM state size N.
    expand: d_inner = expand * d_model.
    d_conv: causal depthwise conv kernel size.
    dt_rank: rank of the dt projection; None = ceil(d_model / 16).
    dt_min, dt_max: range of the initial step sizes (log-uniform).
    scan_impl, chunk_size: passed to `selective_scan` (a name in ssm.IMPLS, or "auto").
    dtype: compute dtype of the projections and the conv (float32 or bfloat16).
    param_dtype: parameter dtype.
  """

  d_model: int
  d_state: int = 64
  expand: int = 2
  d_conv: int = 4
  dt_rank: int | None = None
  dt_min: float = 1e-3
  dt_max: float = 1e-1
  dt_init_floor: float = 1e-4
  scan_impl: str = "auto"
  chunk_size: int = 16
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @property
  def d_inner(self) -> int:
    return self.expand * self.d_model

  @property
  def rank(self) -> int:
    return self.dt_rank if self.dt_rank is not None else math.ceil(self.d_model / 16)

  def setup(self):
    dense = lambda features, **kw: nn.Dense(  # noqa: E731
      features, dtype=self.dtype, param_dtype=self.param_dtype, **kw
    )
    self.in_proj = dense(2 * self.d_inner, use_bias=False)
    # PyTorch Conv1d's default init (Mamba keeps it): U(+-1/sqrt(fan_in)), fan_in = d_conv.
    bound = 1.0 / math.sqrt(self.d_conv)
    uniform = lambda key, shape, dtype: jax.random.uniform(  # noqa: E731
      key, shape, dtype, -bound, bound
    )
    self.conv_w = self.param("conv_w", uniform, (self.d_conv, self.d_inner), self.param_dtype)
    self.conv_b = self.param("conv_b", uniform, (self.d_inner,), self.param_dtype)
    self.x_proj = dense(self.rank + 2 * self.d_state, use_bias=False)
    std = self.rank**-0.5
    self.dt_proj = dense(
      self.d_inner,
      kernel_init=lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -std, std),
      bias_init=_dt_bias_init(self.dt_min, self.dt_max, self.dt_init_floor),
    )
    self.A_log = self.param("A_log", _a_log_init, (self.d_inner, self.d_state), self.param_dtype)
    self.D = self.param("D", nn.initializers.ones, (self.d_inner,), self.param_dtype)
    self.out_proj = dense(self.d_model, use_bias=False)

  def _check_width(self, x):
    if x.shape[-1] != self.d_model:
      raise ValueError(
        f"SelectiveSSM(d_model={self.d_model}) got inputs of width "
        f"{x.shape[-1]} (shape {x.shape}); set d_model to match."
      )

  def _ssm_inputs(self, u):
    """u [..., d_inner] (after conv + SiLU) -> dt [..., d_inner], B, C [..., N]."""
    proj = self.x_proj(u)
    dt_low, B, C = jnp.split(proj, [self.rank, self.rank + self.d_state], axis=-1)
    dt = jax.nn.softplus(self.dt_proj(dt_low).astype(jnp.float32))
    return dt, B, C

  def _A(self):
    return -jnp.exp(self.A_log.astype(jnp.float32))

  def __call__(self, x_sld: jax.Array) -> jax.Array:
    """[S, L, d_model] -> [S, L, d_model]; output at t depends on inputs <= t only."""
    y_sld, _ = self.prefill(x_sld)
    return y_sld

  def prefill(self, x_sld: jax.Array, cache: Cache | None = None) -> tuple[jax.Array, Cache]:
    """Full pass over L steps from `cache` (None = zeros); returns (y, cache after L)."""
    if x_sld.ndim != 3:
      raise ValueError(f"SelectiveSSM expects [S, L, d_model]; got shape {x_sld.shape}.")
    self._check_width(x_sld)
    S, L, _ = x_sld.shape
    conv_state, h0 = self.init_cache(S) if cache is None else cache
    xz = self.in_proj(x_sld)
    x_sle, z_sle = jnp.split(xz, 2, axis=-1)
    # Causal depthwise conv: prepend the d_conv - 1 previous inputs (the cache).
    window = jnp.concatenate([conv_state.astype(x_sle.dtype), x_sle], axis=1)
    w = self.conv_w.astype(x_sle.dtype)
    conv = sum(window[:, k : k + L] * w[k] for k in range(self.d_conv))
    u_sle = nn.silu(conv + self.conv_b.astype(x_sle.dtype))
    dt, B, C = self._ssm_inputs(u_sle)
    y_sle, h_last = selective_scan(
      u_sle, dt, self._A(), B, C, self.D, h0, impl=self.scan_impl, chunk_size=self.chunk_size
    )
    y_sle = y_sle * nn.silu(z_sle)
    new_conv_state = window[:, window.shape[1] - (self.d_conv - 1) :]
    return self.out_proj(y_sle), (new_conv_state.astype(self.dtype), h_last)

  def init_cache(self, num_sequences: int) -> Cache:
    """Zero cache: (conv_state [S, d_conv - 1, d_inner], h [S, d_inner, N] float32)."""
    return (
      jnp.zeros((num_sequences, self.d_conv - 1, self.d_inner), self.dtype),
      jnp.zeros((num_sequences, self.d_inner, self.d_state), jnp.float32),
    )

  def step(self, x_sd: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
    """One time step: x [S, d_model] -> (y [S, d_model], cache advanced by one step)."""
    if x_sd.ndim != 2:
      raise ValueError(f"SelectiveSSM.step expects [S, d_model]; got shape {x_sd.shape}.")
    self._check_width(x_sd)
    conv_state, h = cache
    xz = self.in_proj(x_sd)
    x_se, z_se = jnp.split(xz, 2, axis=-1)
    window = jnp.concatenate([conv_state.astype(x_se.dtype), x_se[:, None]], axis=1)
    w = self.conv_w.astype(x_se.dtype)
    conv = sum(window[:, k] * w[k] for k in range(self.d_conv))  # same sum as prefill
    u_se = nn.silu(conv + self.conv_b.astype(x_se.dtype))
    dt, B, C = self._ssm_inputs(u_se)
    y_se, h = selective_scan_step(u_se, dt, self._A(), B, C, self.D, h)
    y_se = y_se * nn.silu(z_se)
    return self.out_proj(y_se), (window[:, 1:].astype(self.dtype), h)
