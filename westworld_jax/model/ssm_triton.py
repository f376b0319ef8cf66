"""The selective scan as a fused Pallas Triton kernel (GPU), with a custom VJP.

The forward keeps the state on chip while it walks time for a block of (sequences x
channels) and writes only y, the last state and (when differentiated) one state per chunk;
the backward recomputes each chunk's states on chip from its checkpoint and runs the reverse
recurrence. No [S, L, Dm, N] tensor ever reaches device memory. On a CPU the Pallas
interpreter runs it (slow, for tests); `jax.export(..., platforms=("cuda",))` lowers it to
Triton IR without a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from westworld_jax.model.ssm_vjp import checkpointed_scan

# The kernels take A2 = A*log2(e) and form each decay as exp2(dt*A2) = exp(dt*A): exp2 lowers to
# one MUFU.EX2, where exp is libdevice's accurate expf (~10 instructions per element; the whole
# forward step was 20 instructions per state element, now 12: benchmarks/kernel_sass.py).
_LOG2E, _LN2 = 1.0 / math.log(2.0), math.log(2.0)


@dataclasses.dataclass(frozen=True)
class _KernelConfig:
  chunk: int  # steps between state checkpoints
  block_s: int  # sequences per program
  block_d: int  # channels per program
  interpret: bool
  num_warps: int | None
  num_stages: int | None
  atomic: bool  # backward: dB, dC, dA by atomic adds instead of partial sums


def _next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def _pad_to(v, shape):
  widths = [(0, t - s) for s, t in zip(v.shape, shape)]
  return jnp.pad(v, widths) if any(w for _, w in widths) else v


def scan(x, dt, A, B, C, h0, *, chunk_size, block_s, block_d, interpret, num_warps, num_stages, reduce):
  """selective_scan's core (no D) via the Triton kernel: pads to the kernel's aligned shapes,
  runs it, slices back. y float32 [S, L, Dm], h_last [S, Dm, N]."""
  for name, b in (("block_s", block_s), ("block_d", block_d)):
    if not isinstance(b, int) or b < 1 or b & (b - 1):
      raise ValueError(f"{name} must be a power of 2 (Triton tiles are); got {b!r}.")
  S, L, Dm = x.shape
  N = A.shape[1]
  # Triton tiles must have power-of-2 sizes: blocks are powers of 2 and N is padded to one.
  # Padding is inert: dt = x = 0 steps are identities, zero B/C/h0 rows and columns add
  # nothing, and every padded output is sliced away.
  bs, bd = min(block_s, _next_pow2(S)), min(block_d, _next_pow2(Dm))
  Sp, Dp, Np = -(-S // bs) * bs, -(-Dm // bd) * bd, _next_pow2(N)
  Lp = -(-L // chunk_size) * chunk_size
  atomic = reduce == "atomic" or (reduce == "auto" and not interpret)
  cfg = _KernelConfig(chunk_size, bs, bd, bool(interpret), num_warps, num_stages, atomic)
  # A enters scaled (see _LOG2E); autodiff through the scaling turns dA2 into dA.
  A2 = A.astype(jnp.float32) * _LOG2E
  y, h_last = _fused_scan(
    _pad_to(x, (Sp, Lp, Dp)),
    _pad_to(dt, (Sp, Lp, Dp)),
    _pad_to(A2, (Dp, Np)),
    _pad_to(B, (Sp, Lp, Np)),
    _pad_to(C, (Sp, Lp, Np)),
    _pad_to(h0, (Sp, Dp, Np)),
    cfg,
  )
  return y[:S, :L, :Dm], h_last[:S, :Dm, :N]


def _compiler_params(cfg: _KernelConfig):
  if cfg.interpret:
    return None
  # Naming Triton's params selects the Triton lowering (jax 0.10's default GPU lowering is
  # Mosaic GPU, which needs 128-element-multiple tiles this kernel does not have).
  return pltriton.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def _fwd_kernel(x_ref, dt_ref, A_ref, B_ref, C_ref, h0_ref, y_ref, hlast_ref, *ckpt_ref, chunk, n_chunks):
  """One program: a [bs, bd] block of (sequences x channels), all N states, all steps.

  Refs: x, dt, y [bs, Lp, bd]; A2 = A*log2(e) [bd, N]; B, C [bs, Lp, N]; h0, hlast [bs, bd, N];
  optional ckpt [bs, n_chunks, bd, N] (state entering each chunk, for the backward).
  """
  f32 = jnp.float32
  A2_dn = A_ref[...].astype(f32)

  def chunk_body(c, h_sdn):
    if ckpt_ref:
      ckpt_ref[0][:, c, :, :] = h_sdn

    def step(k, h_sdn):
      t = c * chunk + k
      x_sd = x_ref[:, t, :].astype(f32)
      dt_sd = dt_ref[:, t, :].astype(f32)
      B_sn = B_ref[:, t, :].astype(f32)
      C_sn = C_ref[:, t, :].astype(f32)
      h_sdn = jnp.exp2(dt_sd[:, :, None] * A2_dn[None]) * h_sdn + (dt_sd * x_sd)[:, :, None] * B_sn[:, None, :]
      y_ref[:, t, :] = jnp.sum(h_sdn * C_sn[:, None, :], axis=2).astype(y_ref.dtype)
      return h_sdn

    return lax.fori_loop(0, chunk, step, h_sdn)

  h_sdn = lax.fori_loop(0, n_chunks, chunk_body, h0_ref[...].astype(f32))
  hlast_ref[...] = h_sdn


def _bwd_kernel(x_ref, dt_ref, A_ref, B_ref, C_ref, ckpt_ref, dy_ref, dhlast_ref, *refs, chunk, n_chunks, atomic):
  """Reverse recurrence for one [bs, bd] block, chunk by chunk from the last.

  With g_t = dLoss/dh_t (from y_t and from h_{t+1}) and a_t = exp(dt_t*A) = exp2(dt_t*A2):
    g_t     = C_t dy_t + a_{t+1} g_{t+1}          (after the last step: g = d h_last)
    dx_t    = dt_t sum_n g_t B_t
    ddt_t   = sum_n g_t (A a_t h_{t-1} + B_t x_t)
    dB_t    = sum_d g_t dt_t x_t                   (partial: this block's channels)
    dC_t    = sum_d dy_t h_t                       (partial)
    dA2    += ln2 sum_{s,t} g_t dt_t a_t h_{t-1}   (partial: this block's sequences)
    dh0     = a_1 g_1
  Each chunk's states are rebuilt from its checkpoint in statically unrolled loops, so
  they stay on chip as separate register tiles (Triton cannot index a register array
  dynamically; tiles that do not fit spill to L1-backed local memory).
  Refs: dB, dC [bs, Lp, N]; dA [bd, N]; others as in _fwd_kernel. With `atomic`, three
  zeroed buffers aliased to dB, dC, dA come first (their refs are not read here) and the
  partial sums are added into the shared dB, dC, dA blocks atomically. dB and dC rows are
  gathered into one [bs, piece, N] tile per rebuilt piece (when the piece is a power of 2, as
  Triton tiles must be) and written or added once per piece: Pallas's atomic add is
  acquire-release, so each one costs a full memory fence (MEMBAR.ALL.GPU), 2 per step when
  added per step.
  """
  if atomic:
    refs = refs[3:]
  dx_ref, ddt_ref, dB_ref, dC_ref, dA_ref, dh0_ref = refs
  f32 = jnp.float32
  A2_dn = A_ref[...].astype(f32)

  def accumulate(ref, idx, value):
    if atomic:
      pltriton.atomic_add(ref, idx, value)
    else:
      ref[idx] = value

  # Steps rebuilt and held on chip at a time. A whole chunk of 16 spilled 38 local loads per
  # step (benchmarks/kernel_sass.py; pieces of 8: 9), so longer chunks are rebuilt in pieces of
  # `sub` steps from piece boundaries found by one extra forward pass over all but the last.
  sub = max(d for d in range(1, min(chunk, 8) + 1) if chunk % d == 0)
  sub = chunk if sub < 4 else sub  # (a chunk without such a divisor: rebuilt whole)
  per_tile = sub & (sub - 1) == 0
  if per_tile:
    step_of_row = lax.broadcasted_iota(jnp.int32, (B_ref.shape[0], sub, B_ref.shape[-1]), 1)

  def load_inputs(t):
    return (x_ref[:, t, :].astype(f32), dt_ref[:, t, :].astype(f32), B_ref[:, t, :].astype(f32))

  def step(h_sdn, x_sd, dt_sd, B_sn):
    return jnp.exp2(dt_sd[:, :, None] * A2_dn[None]) * h_sdn + (dt_sd * x_sd)[:, :, None] * B_sn[:, None, :]

  def put_row(ref, tile, t, k, row):
    """Step t's dB or dC row [bs, N] (step k of its piece): folded into the piece's tile at
    once (a list of rows would hold registers until the piece ends), or added now."""
    if per_tile:
      return jnp.where(step_of_row == k, row[:, None, :], tile)
    accumulate(ref, (slice(None), t, slice(None)), row)
    return tile

  def flush(ref, tile, t0):
    if per_tile:
      accumulate(ref, (slice(None), pl.ds(t0, sub), slice(None)), tile)

  def reverse_piece(t0, h_sdn, g_sdn, dA_dn):
    """Steps t0 .. t0+sub-1 backwards, from h_sdn = the state entering step t0."""
    states, inputs = [h_sdn], []  # states[k] = h entering step t0 + k
    for k in range(sub):
      inputs.append(load_inputs(t0 + k))
      states.append(step(states[-1], *inputs[-1]))
    dB_tile = dC_tile = jnp.zeros(step_of_row.shape, f32) if per_tile else None
    for k in reversed(range(sub)):
      t = t0 + k
      x_sd, dt_sd, B_sn = inputs[k]
      dy_sd = dy_ref[:, t, :].astype(f32)
      C_sn = C_ref[:, t, :].astype(f32)
      g_sdn = g_sdn + dy_sd[:, :, None] * C_sn[:, None, :]
      a_sdn = jnp.exp2(dt_sd[:, :, None] * A2_dn[None])  # CSE'd with the rebuild's
      ga_h_sdn = g_sdn * (a_sdn * states[k])  # g_t * a_t h_{t-1}
      gB_sd = jnp.sum(g_sdn * B_sn[:, None, :], axis=2)
      dx_ref[:, t, :] = dt_sd * gB_sd
      ddt_ref[:, t, :] = _LN2 * jnp.sum(ga_h_sdn * A2_dn[None], axis=2) + x_sd * gB_sd
      dB_tile = put_row(dB_ref, dB_tile, t, k, jnp.sum(g_sdn * (dt_sd * x_sd)[:, :, None], axis=1))
      dC_tile = put_row(dC_ref, dC_tile, t, k, jnp.sum(states[k + 1] * dy_sd[:, :, None], axis=1))
      dA_dn = dA_dn + jnp.sum(ga_h_sdn * dt_sd[:, :, None], axis=0)
      g_sdn = a_sdn * g_sdn
    flush(dB_ref, dB_tile, t0)
    flush(dC_ref, dC_tile, t0)
    return g_sdn, dA_dn

  def chunk_body(i, carry):
    g_sdn, dA_dn = carry
    c = n_chunks - 1 - i
    entry = [ckpt_ref[:, c, :, :]]  # entry[j] = h entering piece j of the chunk
    h_sdn = entry[0]
    for k in range(chunk - sub):
      h_sdn = step(h_sdn, *load_inputs(c * chunk + k))
      if (k + 1) % sub == 0:
        entry.append(h_sdn)
    for j in reversed(range(chunk // sub)):
      g_sdn, dA_dn = reverse_piece(c * chunk + j * sub, entry[j], g_sdn, dA_dn)
    return g_sdn, dA_dn

  g_sdn, dA_dn = lax.fori_loop(0, n_chunks, chunk_body, (dhlast_ref[...].astype(f32), jnp.zeros(A_ref.shape, f32)))
  dh0_ref[...] = g_sdn
  accumulate(dA_ref, (slice(None), slice(None)), _LN2 * dA_dn)


def _block_specs(bs, bd, L, N, n_chunks):
  """BlockSpecs over the grid (Dm blocks, S blocks).

  Channel blocks vary fastest, so programs running together read the same sequence's
  B and C ([L, N], shared by all channels) and L2 serves the repeats.
  """
  return dict(
    seq=pl.BlockSpec((bs, L, bd), lambda j, i: (i, 0, j)),  # x, dt, y, dx, ddt
    bc=pl.BlockSpec((bs, L, N), lambda j, i: (i, 0, 0)),  # B, C
    a=pl.BlockSpec((bd, N), lambda j, i: (j, 0)),  # A
    state=pl.BlockSpec((bs, bd, N), lambda j, i: (i, j, 0)),  # h0, h_last, dh
    ckpt=pl.BlockSpec((bs, n_chunks, bd, N), lambda j, i: (i, 0, j, 0)),
    # dB, dC sum over channels and dA over sequences, which span programs: with
    # reduce="partial" each program writes its partial sum and XLA adds them; with
    # "atomic" the programs add into the shared "bc"/"a" blocks.
    bc_partial=pl.BlockSpec((None, bs, L, N), lambda j, i: (j, i, 0, 0)),
    a_partial=pl.BlockSpec((None, bd, N), lambda j, i: (i, j, 0)),
  )


def _fwd_call(x, dt, A, B, C, h0, cfg: _KernelConfig, save_checkpoints: bool):
  S, L, Dm = x.shape
  N = A.shape[1]
  n_chunks = L // cfg.chunk
  spec = _block_specs(cfg.block_s, cfg.block_d, L, N, n_chunks)
  f32 = jnp.float32
  out_shape = [jax.ShapeDtypeStruct((S, L, Dm), f32), jax.ShapeDtypeStruct((S, Dm, N), f32)]
  out_specs = [spec["seq"], spec["state"]]
  if save_checkpoints:
    out_shape.append(jax.ShapeDtypeStruct((S, n_chunks, Dm, N), f32))
    out_specs.append(spec["ckpt"])
  return pl.pallas_call(
    functools.partial(_fwd_kernel, chunk=cfg.chunk, n_chunks=n_chunks),
    out_shape=out_shape,
    grid=(Dm // cfg.block_d, S // cfg.block_s),
    in_specs=[spec["seq"], spec["seq"], spec["a"], spec["bc"], spec["bc"], spec["state"]],
    out_specs=out_specs,
    interpret=cfg.interpret,
    compiler_params=_compiler_params(cfg),
    name="selective_scan_fwd",
  )(x, dt, A, B, C, h0)


def _bwd_call(x, dt, A, B, C, ckpt, dy, dh_last, cfg: _KernelConfig):
  S, L, Dm = x.shape
  N = A.shape[1]
  n_chunks = L // cfg.chunk
  n_sblocks, n_dblocks = S // cfg.block_s, Dm // cfg.block_d
  spec = _block_specs(cfg.block_s, cfg.block_d, L, N, n_chunks)
  f32 = jnp.float32
  in_specs = [spec["seq"], spec["seq"], spec["a"], spec["bc"], spec["bc"], spec["ckpt"], spec["seq"], spec["state"]]
  args = [x, dt, A, B, C, ckpt, dy, dh_last]
  if cfg.atomic:  # every program adds into the one [S, L, N] / [Dm, N] buffer
    sum_shapes = [(S, L, N), (S, L, N), (Dm, N)]
    sum_specs = [spec["bc"], spec["bc"], spec["a"]]
    in_specs += sum_specs
    args += [jnp.zeros(shape, f32) for shape in sum_shapes]
    aliases = {len(args) - 3: 2, len(args) - 2: 3, len(args) - 1: 4}
  else:  # one partial sum per program, added by XLA below
    sum_shapes = [(n_dblocks, S, L, N), (n_dblocks, S, L, N), (n_sblocks, Dm, N)]
    sum_specs = [spec["bc_partial"], spec["bc_partial"], spec["a_partial"]]
    aliases = {}
  dx, ddt, dB, dC, dA, dh0 = pl.pallas_call(
    functools.partial(_bwd_kernel, chunk=cfg.chunk, n_chunks=n_chunks, atomic=cfg.atomic),
    out_shape=[
      jax.ShapeDtypeStruct((S, L, Dm), f32),
      jax.ShapeDtypeStruct((S, L, Dm), f32),
      *(jax.ShapeDtypeStruct(shape, f32) for shape in sum_shapes),
      jax.ShapeDtypeStruct((S, Dm, N), f32),
    ],
    grid=(n_dblocks, n_sblocks),
    in_specs=in_specs,
    out_specs=[spec["seq"], spec["seq"], *sum_specs, spec["state"]],
    input_output_aliases=aliases,
    interpret=cfg.interpret,
    compiler_params=_compiler_params(cfg),
    name="selective_scan_bwd",
  )(*args)
  if not cfg.atomic:
    dB, dC, dA = dB.sum(0), dC.sum(0), dA.sum(0)
  return dx, ddt, dA, dB, dC, dh0


_fused_scan = checkpointed_scan(_fwd_call, _bwd_call)
