"""Selective state-space scan (Mamba's S6 recurrence), with interchangeable implementations.

The recurrence, per sequence s, channel d and state n (A diagonal, negative real):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t        h: [S, Dm, N]
    y_t = <C_t, h_t> + D * x_t                               y: [S, L, Dm]

`selective_scan(..., impl=...)` computes it three ways, tested equal in values and gradients:

- "sequential": a `lax.scan` over time. The reference; its backward stores every state
  (O(S*L*Dm*N) memory), so use it only at small sizes.
- "chunked": a `lax.scan` over chunks of `chunk_size` steps, each chunk an associative
  scan, the chunk body rematerialised so the backward keeps only the chunk-boundary states:
  O(S*L*Dm + S*(L/chunk)*Dm*N) memory.
- "kernel": a fused Pallas kernel with a custom VJP. The forward keeps the state on chip
  while it walks time for a block of (sequences x channels) and writes only y, the last
  state and (when differentiated) one state per chunk; the backward recomputes each chunk's
  states on chip from its checkpoint and runs the reverse recurrence. No [S, L, Dm, N]
  tensor ever reaches device memory. Lowered with Pallas Triton on GPU; run by the Pallas
  interpreter on CPU (slow, for tests).

All accumulation is in float32; y comes back in x's dtype and the last state in float32,
so a layer can run over a history in one call and then step by step
(`selective_scan_step`) inside a planner.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

IMPLS = ("sequential", "chunked", "kernel")
REDUCTIONS = ("auto", "partial", "atomic")
_HIGHEST = lax.Precision.HIGHEST  # f32 contractions: no TF32/bf16 passes on GPU/TPU.


# --------------------------------------------------------------------------- validation


def _check_scan_shapes(x, dt, A, B, C, D, h0):
    if x.ndim != 3:
        raise ValueError(f"x must be [S, L, Dm] (sequences, time, channels); got shape {x.shape}.")
    S, L, Dm = x.shape
    if dt.shape != x.shape:
        raise ValueError(f"dt must have x's shape {x.shape} (one step size per channel and step); "
                         f"got {dt.shape}.")
    if A.ndim != 2 or A.shape[0] != Dm:
        raise ValueError(f"A must be [Dm, N] = [{Dm}, N] (one diagonal state matrix per channel); "
                         f"got {A.shape}.")
    N = A.shape[1]
    for name, v in (("B", B), ("C", C)):
        if v.shape != (S, L, N):
            raise ValueError(f"{name} must be [S, L, N] = {(S, L, N)} (S, L from x, N from A); "
                             f"got {v.shape}.")
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


def resolve_impl(impl: str) -> str:
    """'auto' -> 'kernel' on a GPU (7.7x faster training step than 'chunked' at the base size
    on an H100: benchmarks/results/train_gpu.json), 'chunked' elsewhere."""
    if impl == "auto":
        return "kernel" if jax.default_backend() == "gpu" else "chunked"
    return impl


def selective_scan(x, dt, A, B, C, D=None, h0=None, *, impl: str = "chunked",
                   chunk_size: int = 16, block_s: int = 1, block_d: int = 16,
                   interpret: bool | None = None, num_warps: int | None = None,
                   num_stages: int | None = None, reduce: str = "auto"):
    """Runs the selective scan over time for S independent sequences.

    Args:
      x: [S, L, Dm] input.
      dt: [S, L, Dm] positive step sizes (already softplus'ed).
      A: [Dm, N] diagonal state matrix (negative real).
      B, C: [S, L, N] input and output projections.
      D: [Dm] skip weights, or None for no skip.
      h0: [S, Dm, N] initial state, or None for zeros.
      impl: "sequential", "chunked" or "kernel" (see the module docstring), or "auto":
        "kernel" on a GPU, "chunked" elsewhere.
      chunk_size: steps per chunk ("chunked"), or between state checkpoints ("kernel").
      block_s, block_d: "kernel" only: sequences and channels per program (powers of 2).
      interpret: "kernel" only: run the Pallas interpreter; None = on CPU only.
      num_warps, num_stages: "kernel" only: Triton compiler settings (None = Triton's default).
      reduce: "kernel" backward only: how dB, dC (summed over channel blocks) and dA (over
        sequence blocks) are combined across programs. "partial": each program writes its
        own partial sum and XLA adds them (deterministic; n_channel_blocks x [S, L, N]
        floats each for dB and dC: 25 GB per layer at batch 128 of the base model);
        "atomic": programs add into one zeroed buffer with atomics (no partials; summation
        order, so the last bits, vary run to run); "auto": atomic on a GPU, else partial.

    Returns:
      y: [S, L, Dm] in x's dtype, and h_last: [S, Dm, N] float32.
    """
    _check_scan_shapes(x, dt, A, B, C, D, h0)
    if impl not in IMPLS + ("auto",):
        raise ValueError(f"impl must be one of {IMPLS + ('auto',)}; got {impl!r}.")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}; got {reduce!r}.")
    impl = resolve_impl(impl)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}.")
    S, _, Dm = x.shape
    N = A.shape[1]
    f32 = jnp.float32
    A = A.astype(f32)
    h0 = jnp.zeros((S, Dm, N), f32) if h0 is None else h0.astype(f32)
    if impl == "sequential":
        y, h_last = _scan_sequential(x.astype(f32), dt.astype(f32), A, B.astype(f32),
                                     C.astype(f32), h0)
    elif impl == "chunked":
        y, h_last = _scan_chunked(x.astype(f32), dt.astype(f32), A, B.astype(f32),
                                  C.astype(f32), h0, chunk_size)
    else:
        y, h_last = _scan_kernel(x, dt, A, B, C, h0, chunk_size=chunk_size, block_s=block_s,
                                 block_d=block_d, interpret=interpret, num_warps=num_warps,
                                 num_stages=num_stages, reduce=reduce)
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
    y_t, h_new = _step(x_t.astype(f32), dt_t.astype(f32), A.astype(f32), B_t.astype(f32),
                       C_t.astype(f32), h.astype(f32))
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


def _scan_sequential(x, dt, A, B, C, h0):
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


def _scan_chunked(x, dt, A, B, C, h0, chunk):
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


# --------------------------------------------------------------------------- Pallas kernel


@dataclasses.dataclass(frozen=True)
class _KernelConfig:
    chunk: int        # steps between state checkpoints
    block_s: int      # sequences per program
    block_d: int      # channels per program
    interpret: bool
    num_warps: int | None
    num_stages: int | None
    atomic: bool      # backward: dB, dC, dA by atomic adds instead of partial sums


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _pad_to(v, shape):
    widths = [(0, t - s) for s, t in zip(v.shape, shape)]
    return jnp.pad(v, widths) if any(w for _, w in widths) else v


def _scan_kernel(x, dt, A, B, C, h0, *, chunk_size, block_s, block_d, interpret, num_warps,
                 num_stages, reduce):
    """Pads to the kernel's aligned shapes, runs the fused kernel, slices back."""
    for name, b in (("block_s", block_s), ("block_d", block_d)):
        if not isinstance(b, int) or b < 1 or b & (b - 1):
            raise ValueError(f"{name} must be a power of 2 (Triton tiles are); got {b!r}.")
    if interpret is None:
        backend = jax.default_backend()
        if backend == "tpu":
            raise ValueError("impl='kernel' is written for Pallas Triton (GPU); on TPU use "
                             "impl='chunked', or pass interpret=True to run it (slowly).")
        interpret = backend == "cpu"
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
    y, h_last = _fused_scan(_pad_to(x, (Sp, Lp, Dp)), _pad_to(dt, (Sp, Lp, Dp)),
                            _pad_to(A, (Dp, Np)), _pad_to(B, (Sp, Lp, Np)),
                            _pad_to(C, (Sp, Lp, Np)), _pad_to(h0, (Sp, Dp, Np)), cfg)
    return y[:S, :L, :Dm], h_last[:S, :Dm, :N]


def _compiler_params(cfg: _KernelConfig):
    if cfg.interpret:
        return None
    # Naming Triton's params selects the Triton lowering (jax 0.10's default GPU lowering is
    # Mosaic GPU, which needs 128-element-multiple tiles this kernel does not have).
    from jax.experimental.pallas import triton as pltriton
    return pltriton.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def _fwd_kernel(x_ref, dt_ref, A_ref, B_ref, C_ref, h0_ref, y_ref, hlast_ref, *ckpt_ref,
                chunk, n_chunks):
    """One program: a [bs, bd] block of (sequences x channels), all N states, all steps.

    Refs: x, dt, y [bs, Lp, bd]; A [bd, N]; B, C [bs, Lp, N]; h0, hlast [bs, bd, N];
    optional ckpt [bs, n_chunks, bd, N] (state entering each chunk, for the backward).
    """
    f32 = jnp.float32
    A_dn = A_ref[...].astype(f32)

    def chunk_body(c, h_sdn):
        if ckpt_ref:
            ckpt_ref[0][:, c, :, :] = h_sdn

        def step(k, h_sdn):
            t = c * chunk + k
            x_sd = x_ref[:, t, :].astype(f32)
            dt_sd = dt_ref[:, t, :].astype(f32)
            B_sn = B_ref[:, t, :].astype(f32)
            C_sn = C_ref[:, t, :].astype(f32)
            h_sdn = (jnp.exp(dt_sd[:, :, None] * A_dn[None]) * h_sdn
                     + (dt_sd * x_sd)[:, :, None] * B_sn[:, None, :])
            y_ref[:, t, :] = jnp.sum(h_sdn * C_sn[:, None, :], axis=2).astype(y_ref.dtype)
            return h_sdn

        return lax.fori_loop(0, chunk, step, h_sdn)

    h_sdn = lax.fori_loop(0, n_chunks, chunk_body, h0_ref[...].astype(f32))
    hlast_ref[...] = h_sdn


def _bwd_kernel(x_ref, dt_ref, A_ref, B_ref, C_ref, ckpt_ref, dy_ref, dhlast_ref, *refs,
                chunk, n_chunks, atomic):
    """Reverse recurrence for one [bs, bd] block, chunk by chunk from the last.

    With g_t = dLoss/dh_t (from y_t and from h_{t+1}) and a_t = exp(dt_t*A):
      g_t     = C_t dy_t + a_{t+1} g_{t+1}          (after the last step: g = d h_last)
      dx_t    = dt_t sum_n g_t B_t
      ddt_t   = sum_n g_t (A a_t h_{t-1} + B_t x_t)
      dB_t    = sum_d g_t dt_t x_t                   (partial: this block's channels)
      dC_t    = sum_d dy_t h_t                       (partial)
      dA     += sum_{s,t} g_t dt_t a_t h_{t-1}       (partial: this block's sequences)
      dh0     = a_1 g_1
    Each chunk's states are rebuilt from its checkpoint in a statically unrolled loop, so
    they stay on chip as chunk + 1 separate register tiles (Triton cannot index a register
    array dynamically; if they do not fit, Triton spills them to L1-backed local memory).
    Refs: dB, dC [bs, Lp, N]; dA [bd, N]; others as in _fwd_kernel. With `atomic`, three
    zeroed buffers aliased to dB, dC, dA come first (their refs are not read here) and the
    partial sums are added into the shared dB, dC, dA blocks atomically.
    """
    if atomic:
        refs = refs[3:]
    dx_ref, ddt_ref, dB_ref, dC_ref, dA_ref, dh0_ref = refs
    f32 = jnp.float32
    A_dn = A_ref[...].astype(f32)

    def accumulate(ref, idx, value):
        if atomic:
            from jax.experimental.pallas import triton as pltriton
            pltriton.atomic_add(ref, idx, value)
        else:
            ref[idx] = value

    def chunk_body(i, carry):
        g_sdn, dA_dn = carry
        c = n_chunks - 1 - i
        states = [ckpt_ref[:, c, :, :]]  # states[k] = h entering step k of the chunk
        inputs = []
        for k in range(chunk):
            t = c * chunk + k
            x_sd = x_ref[:, t, :].astype(f32)
            dt_sd = dt_ref[:, t, :].astype(f32)
            B_sn = B_ref[:, t, :].astype(f32)
            states.append(jnp.exp(dt_sd[:, :, None] * A_dn[None]) * states[-1]
                          + (dt_sd * x_sd)[:, :, None] * B_sn[:, None, :])
            inputs.append((x_sd, dt_sd, B_sn))
        for k in reversed(range(chunk)):
            t = c * chunk + k
            x_sd, dt_sd, B_sn = inputs[k]
            dy_sd = dy_ref[:, t, :].astype(f32)
            C_sn = C_ref[:, t, :].astype(f32)
            g_sdn = g_sdn + dy_sd[:, :, None] * C_sn[:, None, :]
            a_sdn = jnp.exp(dt_sd[:, :, None] * A_dn[None])
            ga_h_sdn = g_sdn * (a_sdn * states[k])  # g_t * a_t h_{t-1}
            gB_sd = jnp.sum(g_sdn * B_sn[:, None, :], axis=2)
            dx_ref[:, t, :] = dt_sd * gB_sd
            ddt_ref[:, t, :] = jnp.sum(ga_h_sdn * A_dn[None], axis=2) + x_sd * gB_sd
            accumulate(dB_ref, (slice(None), t, slice(None)),
                       jnp.sum(g_sdn * (dt_sd * x_sd)[:, :, None], axis=1))
            accumulate(dC_ref, (slice(None), t, slice(None)),
                       jnp.sum(states[k + 1] * dy_sd[:, :, None], axis=1))
            dA_dn = dA_dn + jnp.sum(ga_h_sdn * dt_sd[:, :, None], axis=0)
            g_sdn = a_sdn * g_sdn
        return g_sdn, dA_dn

    g_sdn, dA_dn = lax.fori_loop(
        0, n_chunks, chunk_body,
        (dhlast_ref[...].astype(f32), jnp.zeros(A_ref.shape, f32)))
    dh0_ref[...] = g_sdn
    accumulate(dA_ref, (slice(None), slice(None)), dA_dn)


def _block_specs(bs, bd, L, N, n_chunks):
    """BlockSpecs over the grid (Dm blocks, S blocks).

    Channel blocks vary fastest, so programs running together read the same sequence's
    B and C ([L, N], shared by all channels) and L2 serves the repeats.
    """
    return dict(
        seq=pl.BlockSpec((bs, L, bd), lambda j, i: (i, 0, j)),            # x, dt, y, dx, ddt
        bc=pl.BlockSpec((bs, L, N), lambda j, i: (i, 0, 0)),              # B, C
        a=pl.BlockSpec((bd, N), lambda j, i: (j, 0)),                     # A
        state=pl.BlockSpec((bs, bd, N), lambda j, i: (i, j, 0)),          # h0, h_last, dh
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
    in_specs = [spec["seq"], spec["seq"], spec["a"], spec["bc"], spec["bc"], spec["ckpt"],
                spec["seq"], spec["state"]]
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
        out_shape=[jax.ShapeDtypeStruct((S, L, Dm), f32),
                   jax.ShapeDtypeStruct((S, L, Dm), f32),
                   *(jax.ShapeDtypeStruct(shape, f32) for shape in sum_shapes),
                   jax.ShapeDtypeStruct((S, Dm, N), f32)],
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _fused_scan(x, dt, A, B, C, h0, cfg):
    """Core recurrence (no D) on kernel-aligned shapes; y float32 [S, Lp, Dp]."""
    y, h_last = _fwd_call(x, dt, A, B, C, h0, cfg, save_checkpoints=False)
    return y, h_last


def _fused_scan_fwd(x, dt, A, B, C, h0, cfg):
    y, h_last, ckpt = _fwd_call(x, dt, A, B, C, h0, cfg, save_checkpoints=True)
    return (y, h_last), (x, dt, A, B, C, ckpt)  # ckpt[:, 0] is h0.


def _fused_scan_bwd(cfg, residuals, cotangents):
    x, dt, A, B, C, ckpt = residuals
    dy, dh_last = cotangents
    dx, ddt, dA, dB, dC, dh0 = _bwd_call(x, dt, A, B, C, ckpt, dy.astype(jnp.float32),
                                         dh_last.astype(jnp.float32), cfg)
    return (dx.astype(x.dtype), ddt.astype(dt.dtype), dA.astype(A.dtype), dB.astype(B.dtype),
            dC.astype(C.dtype), dh0)


_fused_scan.defvjp(_fused_scan_fwd, _fused_scan_bwd)
