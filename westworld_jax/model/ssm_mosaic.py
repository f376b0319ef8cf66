"""The selective scan as a fused Pallas Mosaic kernel (TPU), with a custom VJP.

Same recurrence and contract as the Triton kernel (ssm_triton.py), laid out for the TPU's
(8 sublanes x 128 lanes) vector registers: one program owns one sequence and 128 channels,
its state tile is h[N, 128] (states on sublanes, channels on lanes), so

  - x_t, dt_t are rows [1, 128] read at a dynamic sublane offset of the [L, 128] VMEM block;
  - B_t, C_t are rows [1, N] of the [L, N] block turned into columns [N, 1];
  - y_t = sum over sublanes of h * C_t  (a row again, stored at row t).

The forward writes y, the last state and (when differentiated) the state entering every
chunk. The backward rebuilds one chunk at a time from its checkpoint into VMEM scratch (the
decays exp(dt*A) too, so the reverse pass needs no second exp), then walks it backwards.
dB and dC (sums over channels) stay resident in VMEM while the program walks the channel
blocks of its sequence (the innermost, "arbitrary" grid axis) and accumulate there; dA (a sum
over sequences) accumulates in one [N, Dm] block per group of sequences (the outer grid axis
is "parallel": megacore chips split the groups between their cores), and XLA adds the groups.
No [S, L, Dm, N] tensor reaches HBM.

All arithmetic is float32; inputs are cast to float32 before the call (dynamic single-row
loads of packed bf16 tiles are not what Mosaic lowers). On a CPU Pallas's TPU interpreter runs
the kernel (tests); `jax.export(..., platforms=("tpu",))` lowers it without a TPU, and with
libtpu installed `launch/aot_check.py --topology` compiles it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from westworld_jax.model.ssm_vjp import checkpointed_scan

LANES = 128  # channels per program: one vreg row
SUBLANES = 8  # N is padded to a multiple of this
_GROUPS = 8  # dA partial sums: sequences are split into about this many groups


@dataclasses.dataclass(frozen=True)
class MosaicConfig:
  chunk: int  # steps between state checkpoints (and rebuilt per backward chunk)
  group: int  # sequences per dA partial sum
  interpret: bool


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _pad_to(v, shape):
  widths = [(0, t - s) for s, t in zip(v.shape, shape)]
  return jnp.pad(v, widths) if any(w for _, w in widths) else v


def scan(x, dt, A, B, C, h0, *, chunk_size: int, interpret: bool):
  """selective_scan's core (no D) via the Mosaic kernel; y float32 [S, L, Dm], h [S, Dm, N].

  Padding is inert as in the Triton kernel: dt = x = 0 steps are identities, zero B/C/h0
  rows and columns add nothing, padded sequences carry zeros, and every padded output is
  sliced away.
  """
  S, L, Dm = x.shape
  N = A.shape[1]
  group = max(1, -(-S // _GROUPS))
  Sp, Lp = _round_up(S, group), _round_up(L, chunk_size)
  Dp, Np = _round_up(Dm, LANES), _round_up(N, SUBLANES)
  f32 = jnp.float32
  cfg = MosaicConfig(chunk_size, group, bool(interpret))
  seq = lambda v: _pad_to(v.astype(f32), (Sp, Lp, Dp))  # noqa: E731
  bc = lambda v: _pad_to(v.astype(f32), (Sp, Lp, Np))  # noqa: E731
  # Kernel layout: A and states transposed to [N, Dm] (states on sublanes, channels on lanes).
  At = _pad_to(A.astype(f32).T, (Np, Dp))
  h0t = _pad_to(jnp.swapaxes(h0.astype(f32), 1, 2), (Sp, Np, Dp))
  y, h_last_t = _fused_scan(seq(x), seq(dt), At, bc(B), bc(C), h0t, cfg)
  return y[:S, :L, :Dm], jnp.swapaxes(h_last_t[:S, :N, :Dm], 1, 2)


def _call_options(cfg: MosaicConfig, semantics) -> dict:
  """pallas_call's interpret and compiler_params. Interpreted, it is Pallas's TPU interpreter
  (InterpretParams), which keeps TPU semantics the kernel relies on: the grid runs in order and
  an output block stays resident (and accumulates) while consecutive steps map to it."""
  return dict(
    interpret=pltpu.InterpretParams() if cfg.interpret else False,
    compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
  )


def _row(ref, t):
  return ref[pl.ds(t, 1), :]  # [1, W]


def _col(ref, t):
  return jnp.transpose(ref[pl.ds(t, 1), :])  # [N, 1]


def _fwd_kernel(x_ref, dt_ref, At_ref, B_ref, C_ref, h0_ref, y_ref, hlast_ref, *ckpt_ref, chunk, n_chunks):
  """One program: one sequence, 128 channels, all N states, all steps.

  Blocks: x, dt, y [Lp, 128]; At, h0, hlast [Np, 128]; B, C [Lp, Np];
  optional ckpt [n_chunks, Np, 128] (the state entering each chunk).
  """
  A = At_ref[...]

  def chunk_body(c, h):
    if ckpt_ref:
      ckpt_ref[0][c] = h

    def step(k, h):
      t = c * chunk + k
      dt = _row(dt_ref, t)
      h = jnp.exp(dt * A) * h + (dt * _row(x_ref, t)) * _col(B_ref, t)
      y_ref[pl.ds(t, 1), :] = jnp.sum(h * _col(C_ref, t), axis=0, keepdims=True)
      return h

    return lax.fori_loop(0, chunk, step, h)

  hlast_ref[...] = lax.fori_loop(0, n_chunks, chunk_body, h0_ref[...])


def _bwd_kernel(
  x_ref,
  dt_ref,
  At_ref,
  B_ref,
  C_ref,
  ckpt_ref,
  dy_ref,
  dhlast_ref,
  dx_ref,
  ddt_ref,
  dB_ref,
  dC_ref,
  dA_ref,
  dh0_ref,
  a_scr,
  h_scr,
  *,
  chunk,
  n_chunks,
):
  """Reverse recurrence for one (sequence, 128-channel block), chunk by chunk from the last.

  With g_t = dLoss/dh_t and a_t = exp(dt_t*A) (formulas as in ssm_triton._bwd_kernel):
    g_t = C_t dy_t + a_{t+1} g_{t+1};  dx_t = dt_t sum_n g_t B_t;
    ddt_t = sum_n g_t (A a_t h_{t-1}) + x_t sum_n g_t B_t;  dB_t = sum_d g_t dt_t x_t;
    dC_t = sum_d dy_t h_t;  dA += g_t dt_t a_t h_{t-1};  dh0 = a_1 g_1.
  Scratch: a_scr[k] = a_t, h_scr[k] = h_{t-1}, h_scr[k + 1] = h_t for step k of the chunk.
  Grid (group, sequence in group, channel block): dB, dC blocks are this sequence's, resident
  over the channel blocks; the dA block is the group's [Np, Dp], resident over the group.
  """
  s, j = pl.program_id(1), pl.program_id(2)

  @pl.when(j == 0)
  def _zero_bc():
    dB_ref[...] = jnp.zeros_like(dB_ref)
    dC_ref[...] = jnp.zeros_like(dC_ref)

  @pl.when((s == 0) & (j == 0))
  def _zero_a():
    dA_ref[...] = jnp.zeros_like(dA_ref)

  A = At_ref[...]

  def chunk_body(i, carry):
    c = n_chunks - 1 - i
    h_scr[0] = ckpt_ref[c]

    def rebuild(k, h):
      t = c * chunk + k
      dt = _row(dt_ref, t)
      a = jnp.exp(dt * A)
      h = a * h + (dt * _row(x_ref, t)) * _col(B_ref, t)
      a_scr[k] = a
      h_scr[k + 1] = h
      return h

    lax.fori_loop(0, chunk, rebuild, h_scr[0])

    def reverse(r, carry):
      g, dA = carry
      k = chunk - 1 - r
      t = c * chunk + k
      dt, x, dy = _row(dt_ref, t), _row(x_ref, t), _row(dy_ref, t)
      g = g + dy * _col(C_ref, t)
      a = a_scr[k]
      ga_h = g * (a * h_scr[k])
      gB = jnp.sum(g * _col(B_ref, t), axis=0, keepdims=True)  # [1, 128]
      dx_ref[pl.ds(t, 1), :] = dt * gB
      ddt_ref[pl.ds(t, 1), :] = jnp.sum(ga_h * A, axis=0, keepdims=True) + x * gB
      dB_ref[pl.ds(t, 1), :] += jnp.transpose(jnp.sum(g * (dt * x), axis=1, keepdims=True))
      dC_ref[pl.ds(t, 1), :] += jnp.transpose(jnp.sum(h_scr[k + 1] * dy, axis=1, keepdims=True))
      return a * g, dA + ga_h * dt

    return lax.fori_loop(0, chunk, reverse, carry)

  g, dA = lax.fori_loop(0, n_chunks, chunk_body, (dhlast_ref[...], jnp.zeros(A.shape, jnp.float32)))
  dh0_ref[...] = g
  lanes = pl.ds(pl.multiple_of(j * LANES, LANES), LANES)
  dA_ref[:, lanes] += dA


def _fwd_call(x, dt, At, B, C, h0t, cfg: MosaicConfig, save_checkpoints: bool):
  S, L, Dm = x.shape
  N = At.shape[0]
  n_chunks = L // cfg.chunk
  f32 = jnp.float32
  seq = pl.BlockSpec((None, L, LANES), lambda j, i: (i, 0, j))
  bc = pl.BlockSpec((None, L, N), lambda j, i: (i, 0, 0))
  state = pl.BlockSpec((None, N, LANES), lambda j, i: (i, 0, j))
  out_shape = [jax.ShapeDtypeStruct((S, L, Dm), f32), jax.ShapeDtypeStruct((S, N, Dm), f32)]
  out_specs = [seq, state]
  if save_checkpoints:
    out_shape.append(jax.ShapeDtypeStruct((S, n_chunks, N, Dm), f32))
    out_specs.append(pl.BlockSpec((None, n_chunks, N, LANES), lambda j, i: (i, 0, 0, j)))
  return pl.pallas_call(
    functools.partial(_fwd_kernel, chunk=cfg.chunk, n_chunks=n_chunks),
    out_shape=out_shape,
    grid=(Dm // LANES, S),
    in_specs=[seq, seq, pl.BlockSpec((N, LANES), lambda j, i: (0, j)), bc, bc, state],
    out_specs=out_specs,
    **_call_options(cfg, ("parallel", "parallel")),
    name="selective_scan_fwd_tpu",
  )(x, dt, At, B, C, h0t)


def _bwd_call(x, dt, At, B, C, ckpt, dy, dh_last_t, cfg: MosaicConfig):
  S, L, Dm = x.shape
  N = At.shape[0]
  n_chunks = L // cfg.chunk
  G = cfg.group
  n_groups = S // G
  f32 = jnp.float32
  sq = lambda g, s: g * G + s  # noqa: E731
  seq = pl.BlockSpec((None, L, LANES), lambda g, s, j: (sq(g, s), 0, j))
  bc = pl.BlockSpec((None, L, N), lambda g, s, j: (sq(g, s), 0, 0))
  state = pl.BlockSpec((None, N, LANES), lambda g, s, j: (sq(g, s), 0, j))
  ckpt_spec = pl.BlockSpec((None, n_chunks, N, LANES), lambda g, s, j: (sq(g, s), 0, 0, j))
  a_spec = pl.BlockSpec((N, LANES), lambda g, s, j: (0, j))
  dA_spec = pl.BlockSpec((None, N, Dm), lambda g, s, j: (g, 0, 0))
  dx, ddt, dB, dC, dA, dh0 = pl.pallas_call(
    functools.partial(_bwd_kernel, chunk=cfg.chunk, n_chunks=n_chunks),
    out_shape=[
      jax.ShapeDtypeStruct((S, L, Dm), f32),
      jax.ShapeDtypeStruct((S, L, Dm), f32),
      jax.ShapeDtypeStruct((S, L, N), f32),
      jax.ShapeDtypeStruct((S, L, N), f32),
      jax.ShapeDtypeStruct((n_groups, N, Dm), f32),
      jax.ShapeDtypeStruct((S, N, Dm), f32),
    ],
    grid=(n_groups, G, Dm // LANES),
    in_specs=[seq, seq, a_spec, bc, bc, ckpt_spec, seq, state],
    out_specs=[seq, seq, bc, bc, dA_spec, state],
    scratch_shapes=[pltpu.VMEM((cfg.chunk, N, LANES), f32), pltpu.VMEM((cfg.chunk + 1, N, LANES), f32)],
    **_call_options(cfg, ("parallel", "arbitrary", "arbitrary")),
    name="selective_scan_bwd_tpu",
  )(x, dt, At, B, C, ckpt, dy, dh_last_t)
  return dx, ddt, dA.sum(0), dB, dC, dh0


_fused_scan = checkpointed_scan(_fwd_call, _bwd_call)
