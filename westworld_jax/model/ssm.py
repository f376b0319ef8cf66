"""Selective state-space scan (Mamba's S6 recurrence), with interchangeable implementations.

The recurrence, per sequence s, channel d and state n (A diagonal, negative real):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t        h: [S, Dm, N]
    y_t = <C_t, h_t> + D * x_t                               y: [S, L, Dm]

`selective_scan(..., impl=...)` computes it with any implementation registered in `IMPLS`
(name -> function), all tested equal in values and gradients (tests/test_ssm.py runs every one):

- "sequential": a `lax.scan` over time. The reference; its backward stores every state
  (O(S*L*Dm*N) memory), so use it only at small sizes.
- "chunked": a `lax.scan` over chunks of `chunk_size` steps, each chunk an associative
  scan, the chunk body rematerialised so the backward keeps only the chunk-boundary states:
  O(S*L*Dm + S*(L/chunk)*Dm*N) memory.
- "kernel": a fused Pallas kernel with a custom VJP. The forward keeps the state on chip
  while it walks time and writes only y, the last state and (when differentiated) one state
  per chunk; the backward rebuilds each chunk's states on chip from its checkpoint and runs
  the reverse recurrence. No [S, L, Dm, N] tensor ever reaches device memory. Two
  lowerings (`kernel=`): "triton" (ssm_triton.py, GPU: a program per block of sequences x
  channels, states in registers) and "mosaic" (ssm_mosaic.py, TPU: a program per sequence
  x 128 channels, states in vregs, the backward's chunk in VMEM). Either runs in the Pallas
  interpreter on a CPU (slow, for tests).

An implementation is a function `(x, dt, A, B, C, h0, opts: ScanOptions) -> (y, h_last)`
without the D skip: x, dt, B, C arrive in the caller's dtype, A and h0 in float32; y and
h_last leave in float32. Its entry in `IMPLS` is all the rest of the code needs: the model
config's `ssm_scan_impl`, `resolve_impl` ("auto" and the check of a name), benchmarks/ssm.py
and tests/test_ssm.py take the names from there.

All accumulation is in float32; y comes back in x's dtype and the last state in float32,
so a layer can run over a history in one call and then step by step
(`selective_scan_step`) inside a planner.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from westworld_jax.model import ssm_mosaic, ssm_triton

KERNELS = ("auto", "triton", "mosaic")
REDUCTIONS = ("auto", "partial", "atomic")
_HIGHEST = lax.Precision.HIGHEST  # f32 contractions: no TF32/bf16 passes on GPU/TPU.


# --------------------------------------------------------------------------- validation


def _check_scan_shapes(x, dt, A, B, C, D, h0):
  if x.ndim != 3:
    raise ValueError(f"x must be [S, L, Dm] (sequences, time, channels); got shape {x.shape}.")
  S, L, Dm = x.shape
  if dt.shape != x.shape:
    raise ValueError(f"dt must have x's shape {x.shape} (one step size per channel and step); got {dt.shape}.")
  if A.ndim != 2 or A.shape[0] != Dm:
    raise ValueError(f"A must be [Dm, N] = [{Dm}, N] (one diagonal state matrix per channel); got {A.shape}.")
  N = A.shape[1]
  for name, v in (("B", B), ("C", C)):
    if v.shape != (S, L, N):
      raise ValueError(f"{name} must be [S, L, N] = {(S, L, N)} (S, L from x, N from A); got {v.shape}.")
  if D is not None and D.shape != (Dm,):
    raise ValueError(f"D must be [Dm] = [{Dm}] (one skip weight per channel); got {D.shape}.")
  if h0 is not None and h0.shape != (S, Dm, N):
    raise ValueError(f"h0 must be [S, Dm, N] = {(S, Dm, N)}; got {h0.shape}.")


def _check_step_shapes(x_t, dt_t, A, B_t, C_t, D, h):
  if x_t.ndim != 2:
    raise ValueError(f"x_t must be [S, Dm] (one time step); got shape {x_t.shape}.")
  S, Dm = x_t.shape
  if dt_t.shape != x_t.shape:
    raise ValueError(f"dt_t must have x_t's shape {x_t.shape}; got {dt_t.shape}.")
  if A.ndim != 2 or A.shape[0] != Dm:
    raise ValueError(f"A must be [Dm, N] = [{Dm}, N]; got {A.shape}.")
  N = A.shape[1]
  for name, v in (("B_t", B_t), ("C_t", C_t)):
    if v.shape != (S, N):
      raise ValueError(f"{name} must be [S, N] = {(S, N)}; got {v.shape}.")
  if D is not None and D.shape != (Dm,):
    raise ValueError(f"D must be [Dm] = [{Dm}]; got {D.shape}.")
  if h.shape != (S, Dm, N):
    raise ValueError(f"h must be [S, Dm, N] = {(S, Dm, N)}; got {h.shape}.")


# --------------------------------------------------------------------------- public API


@dataclasses.dataclass(frozen=True)
class ScanOptions:
  """selective_scan's tuning options, handed whole to the implementation (each reads its own;
  see selective_scan's Args)."""

  chunk_size: int = 16
  block_s: int = 1
  block_d: int = 16
  interpret: bool | None = None
  num_warps: int | None = None
  num_stages: int | None = None
  reduce: str = "auto"
  kernel: str = "auto"


def resolve_impl(impl: str) -> str:
  """The name in IMPLS that `impl` (one of them, or "auto") stands for; other names raise ValueError.

  'auto' -> 'kernel' on a GPU (7.7x faster training step than 'chunked' at the base size
  on an H100: benchmarks/results/train_gpu.json) and on a TPU (the Mosaic kernel: compiled
  fwd+bwd temporaries 3.4 vs 58 GiB per scan at the base size, batch 14, on v5e, where the
  chunked scan does not fit; speed unmeasured: benchmarks/results/TPU_NOTES.md), 'chunked'
  elsewhere."""
  if impl != "auto" and impl not in IMPLS:
    raise ValueError(f"impl must be one of {(*IMPLS, 'auto')}; got {impl!r}.")
  if impl == "auto":
    return "kernel" if jax.default_backend() in ("gpu", "tpu") else "chunked"
  return impl


def resolve_kernel(kernel: str, platform: str | None = None) -> str:
  """'auto' -> 'mosaic' on a TPU, 'triton' elsewhere (GPU; the interpreter on CPU).

  platform: the one compiled for ("cpu", "cuda", "rocm", "tpu"); None = the default backend.
  """
  if kernel == "auto":
    platform = platform or jax.default_backend()
    return "mosaic" if platform == "tpu" else "triton"
  return kernel


def selective_scan(
  x,
  dt,
  A,
  B,
  C,
  D=None,
  h0=None,
  *,
  impl: str = "chunked",
  chunk_size: int = 16,
  block_s: int = 1,
  block_d: int = 16,
  interpret: bool | None = None,
  num_warps: int | None = None,
  num_stages: int | None = None,
  reduce: str = "auto",
  kernel: str = "auto",
):
  """Runs the selective scan over time for S independent sequences.

  Args:
    x: [S, L, Dm] input.
    dt: [S, L, Dm] positive step sizes (already softplus'ed).
    A: [Dm, N] diagonal state matrix (negative real).
    B, C: [S, L, N] input and output projections.
    D: [Dm] skip weights, or None for no skip.
    h0: [S, Dm, N] initial state, or None for zeros.
    impl: a name in IMPLS ("sequential", "chunked", "kernel": see the module docstring), or
      "auto": "kernel" on a GPU or TPU, "chunked" elsewhere.
    chunk_size: steps per chunk ("chunked"), or between state checkpoints ("kernel").
    interpret: "kernel" only: run the Pallas interpreter; None = when compiling for a CPU.
    kernel: "kernel" only: "triton" (GPU), "mosaic" (TPU) or "auto" (mosaic when compiling
      for a TPU, else triton). "auto" and interpret=None resolve for the platform compiled
      for, so ahead-of-time compiles for another platform get its kernel. The Mosaic
      kernel's tiles are fixed (one sequence x 128 channels per program); the options
      below tune the Triton one.
    block_s, block_d: Triton: sequences and channels per program (powers of 2).
    num_warps, num_stages: Triton compiler settings (None = Triton's default).
    reduce: Triton backward only: how dB, dC (summed over channel blocks) and dA (over
      sequence blocks) are combined across programs. "partial": each program writes its
      own partial sum and XLA adds them (deterministic; n_channel_blocks x [S, L, N]
      floats each for dB and dC: 25 GB per layer at batch 128 of the base model);
      "atomic": programs add into one zeroed buffer with atomics (no partials; summation
      order, so the last bits, vary run to run); "auto": atomic on a GPU, else partial.

  Returns:
    y: [S, L, Dm] in x's dtype, and h_last: [S, Dm, N] float32.
  """
  _check_scan_shapes(x, dt, A, B, C, D, h0)
  impl = resolve_impl(impl)
  if reduce not in REDUCTIONS:
    raise ValueError(f"reduce must be one of {REDUCTIONS}; got {reduce!r}.")
  if kernel not in KERNELS:
    raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}.")
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}.")
  opts = ScanOptions(
    chunk_size=chunk_size,
    block_s=block_s,
    block_d=block_d,
    interpret=interpret,
    num_warps=num_warps,
    num_stages=num_stages,
    reduce=reduce,
    kernel=kernel,
  )
  S, _, Dm = x.shape
  N = A.shape[1]
  f32 = jnp.float32
  h0 = jnp.zeros((S, Dm, N), f32) if h0 is None else h0.astype(f32)
  y, h_last = IMPLS[impl](x, dt, A.astype(f32), B, C, h0, opts)
  if D is not None:  # The skip needs no state: plain JAX, differentiated by autodiff.
    y = y + D.astype(f32) * x.astype(f32)
  return y.astype(x.dtype), h_last


def selective_scan_step(x_t, dt_t, A, B_t, C_t, D, h):
  """Advances the recurrence one step.

  Args: x_t, dt_t: [S, Dm]; A: [Dm, N]; B_t, C_t: [S, N]; D: [Dm] or None; h: [S, Dm, N].
  Returns: y_t [S, Dm] in x_t's dtype, h_new [S, Dm, N] float32.
  """
  _check_step_shapes(x_t, dt_t, A, B_t, C_t, D, h)
  f32 = jnp.float32
  y_t, h_new = _step(x_t.astype(f32), dt_t.astype(f32), A.astype(f32), B_t.astype(f32), C_t.astype(f32), h.astype(f32))
  if D is not None:
    y_t = y_t + D.astype(f32) * x_t.astype(f32)
  return y_t.astype(x_t.dtype), h_new


# --------------------------------------------------------------------------- jnp implementations


def _step(x_sd, dt_sd, A_dn, B_sn, C_sn, h_sdn):
  """One step of the core recurrence (no D skip); all float32."""
  a_sdn = jnp.exp(dt_sd[:, :, None] * A_dn)
  h_sdn = a_sdn * h_sdn + (dt_sd * x_sd)[:, :, None] * B_sn[:, None, :]
  y_sd = jnp.einsum("sdn,sn->sd", h_sdn, C_sn, precision=_HIGHEST)
  return y_sd, h_sdn


def _f32(*arrays):
  return [v.astype(jnp.float32) for v in arrays]


def _scan_sequential(x, dt, A, B, C, h0, opts):
  del opts  # nothing to tune
  x, dt, B, C = _f32(x, dt, B, C)

  def body(h_sdn, inputs):
    y_sd, h_sdn = _step(*inputs[:2], A, *inputs[2:], h_sdn)
    return h_sdn, y_sd

  time_major = [jnp.moveaxis(v, 1, 0) for v in (x, dt, B, C)]
  h_last, y_lsd = lax.scan(body, h0, time_major)
  return jnp.moveaxis(y_lsd, 0, 1), h_last


def _combine(left, right):
  """Composes two affine maps h -> a*h + b (left first); associative."""
  a_l, b_l = left
  a_r, b_r = right
  return a_l * a_r, a_r * b_l + b_r


def _scan_chunked(x, dt, A, B, C, h0, opts):
  x, dt, B, C = _f32(x, dt, B, C)
  chunk = opts.chunk_size
  S, L, Dm = x.shape
  n_chunks = -(-L // chunk)
  pad = n_chunks * chunk - L
  if pad:  # dt = 0, x = 0 is the identity step: padded steps leave the state unchanged.
    x, dt, B, C = (jnp.pad(v, ((0, 0), (0, pad), (0, 0))) for v in (x, dt, B, C))

  def chunks_first(v):  # [S, Lp, F] -> [n_chunks, S, chunk, F]
    return jnp.moveaxis(v.reshape(S, n_chunks, chunk, v.shape[-1]), 1, 0)

  # Remat: the backward keeps only each chunk's carry-in state, and rebuilds the chunk's
  # [S, chunk, Dm, N] states one chunk at a time.
  @jax.checkpoint
  def body(h_sdn, inputs):
    x_skd, dt_skd, B_skn, C_skn = inputs
    a_skdn = jnp.exp(dt_skd[..., None] * A)
    b_skdn = (dt_skd * x_skd)[..., None] * B_skn[:, :, None, :]
    a_skdn, b_skdn = lax.associative_scan(_combine, (a_skdn, b_skdn), axis=1)
    h_skdn = a_skdn * h_sdn[:, None] + b_skdn
    y_skd = jnp.einsum("skdn,skn->skd", h_skdn, C_skn, precision=_HIGHEST)
    return h_skdn[:, -1], y_skd

  h_last, y_cskd = lax.scan(body, h0, [chunks_first(v) for v in (x, dt, B, C)])
  y = jnp.moveaxis(y_cskd, 0, 1).reshape(S, n_chunks * chunk, Dm)
  return y[:, :L], h_last


# --------------------------------------------------------------------------- kernel dispatch

_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def _scan_kernel(x, dt, A, B, C, h0, opts):
  """The fused kernel for the platform being compiled for, split over the current mesh.

  kernel="auto" and interpret=None resolve per platform at lowering time
  (lax.platform_dependent), not by the default backend, so that a program compiled ahead
  of time for another platform (launch/aot_check.py --topology on a CPU host, jax.export)
  gets that platform's kernel: Mosaic on TPU, Triton on GPU, the interpreter on CPU. Only
  the chosen branch is lowered.

  XLA cannot partition a kernel's custom call (Mosaic refuses; a Triton call would be
  replicated: every device scanning every sequence), so under a mesh (jax.set_mesh) the
  sequences are split over its axes with shard_map; sequences are independent, so each
  device scans its own (S padded to a multiple of the shard count; padding is inert) and
  dA, the only cross-sequence sum, is psum'd by shard_map's transpose.
  """
  if opts.kernel == "triton" and opts.interpret is not True and jax.default_backend() == "tpu":
    raise ValueError(
      "kernel='triton' is for GPUs; on a TPU use kernel='mosaic' (or 'auto'), "
      "or pass interpret=True to run it (slowly)."
    )
  core = functools.partial(_kernel_for_platform, opts=opts)
  mesh = jax.sharding.get_abstract_mesh()
  axes = () if mesh.empty else tuple(a for a in mesh.axis_names if mesh.shape[a] > 1 and a not in mesh.manual_axes)
  if not axes:
    return core(x, dt, A, B, C, h0)
  S = x.shape[0]
  shards = math.prod(mesh.shape[a] for a in axes)
  pad = -S % shards
  if pad:
    x, dt, B, C, h0 = (jnp.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1)) for v in (x, dt, B, C, h0))
  seq = P(axes)
  y, h_last = jax.shard_map(
    core, mesh=mesh, in_specs=(seq, seq, P(), seq, seq, seq), out_specs=(seq, seq), check_vma=False
  )(x, dt, A, B, C, h0)
  return y[:S], h_last[:S]


def _kernel_for_platform(x, dt, A, B, C, h0, *, opts):
  """The kernel (Triton or Mosaic, compiled or interpreted) per platform; see _scan_kernel."""

  def run(name, interp):
    def call(x, dt, A, B, C, h0):
      if name == "mosaic":
        return ssm_mosaic.scan(x, dt, A, B, C, h0, chunk_size=opts.chunk_size, interpret=interp)
      return ssm_triton.scan(
        x,
        dt,
        A,
        B,
        C,
        h0,
        chunk_size=opts.chunk_size,
        interpret=interp,
        block_s=opts.block_s,
        block_d=opts.block_d,
        num_warps=opts.num_warps,
        num_stages=opts.num_stages,
        reduce=opts.reduce,
      )

    return call

  interpret = opts.interpret
  choice = {
    p: (resolve_kernel(opts.kernel, p), p == "cpu" if interpret is None else bool(interpret)) for p in _PLATFORMS
  }
  args = (x, dt, A, B, C, h0)
  if len(set(choice.values())) == 1:
    return run(*choice["cpu"])(*args)
  branches = {p: run(*c) for p, c in choice.items()}
  return lax.platform_dependent(*args, **branches, default=branches["cpu"])


# --------------------------------------------------------------------------- registry

ScanFn = Callable[..., tuple[jax.Array, jax.Array]]  # (x, dt, A, B, C, h0, opts) -> (y, h_last)

# The implementations by name: an implementation is its function and its line here.
IMPLS: dict[str, ScanFn] = {
  "sequential": _scan_sequential,
  "chunked": _scan_chunked,
  "kernel": _scan_kernel,
}
