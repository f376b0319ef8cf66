"""The custom VJP both scan kernels share (ssm_triton.py, ssm_mosaic.py): the forward saves one
state per chunk, the backward kernel rebuilds each chunk from it; no per-step state is saved."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def checkpointed_scan(fwd_call, bwd_call):
  """scan(x, dt, A, B, C, h0, cfg) -> (y, h_last), differentiable, from a pair of kernel calls.

  fwd_call(x, dt, A, B, C, h0, cfg, save_checkpoints) -> (y, h_last[, ckpt]), ckpt[:, 0] = h0;
  bwd_call(x, dt, A, B, C, ckpt, dy, dh_last, cfg) -> (dx, ddt, dA, dB, dC, dh0), float32.
  cfg is static (hashable).
  """

  @functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
  def scan(x, dt, A, B, C, h0, cfg):
    y, h_last = fwd_call(x, dt, A, B, C, h0, cfg, save_checkpoints=False)
    return y, h_last

  def scan_fwd(x, dt, A, B, C, h0, cfg):
    y, h_last, ckpt = fwd_call(x, dt, A, B, C, h0, cfg, save_checkpoints=True)
    return (y, h_last), (x, dt, A, B, C, ckpt)

  def scan_bwd(cfg, residuals, cotangents):
    x, dt, A, B, C, ckpt = residuals
    dy, dh_last = cotangents
    grads = bwd_call(x, dt, A, B, C, ckpt, dy.astype(jnp.float32), dh_last.astype(jnp.float32), cfg)
    return tuple(g.astype(v.dtype) for g, v in zip(grads, (x, dt, A, B, C, ckpt[:, 0])))

  scan.defvjp(scan_fwd, scan_bwd)
  return scan
