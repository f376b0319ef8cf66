"""Tests for the selective scan (westworld_jax.model.ssm) and the Mamba block (mamba.py).

Every scan implementation registered in ssm.IMPLS (the kernel in both lowerings, Triton and
Mosaic, run by the Pallas interpreter) must agree in values and in gradients w.r.t. every input;
step-by-step evaluation must equal the full pass; outputs must be causal in time; bad
shapes must fail with a ValueError that says what to change.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from westworld_jax.model.mamba import SelectiveSSM
from westworld_jax.model.configs import get_model_config
from westworld_jax.model import ssm
from westworld_jax.model.ssm import resolve_impl, resolve_kernel, selective_scan, selective_scan_step
from tests.hang_guard import guard

jax.config.update("jax_enable_x64", False)

# Every registered implementation, and the kernel's Mosaic lowering as one more.
IMPLS = (*ssm.IMPLS, "kernel_mosaic")
# Small Triton blocks so a tiny problem still spans several programs in both grid axes
# (S = 3 -> 2 sequence blocks, Dm = 6 -> 2 channel blocks) and every padding path runs
# (S, Dm to the blocks, N = 5 to 8, L = 13 to the chunk). Mosaic's tiles are fixed (one
# sequence x 128 channels); _inputs(S=19, Dm=200) spans its grid (7 groups of 3 sequences,
# 2 channel blocks).
KERNEL_KW = dict(block_s=2, block_d=4)


def _inputs(S=3, L=13, Dm=6, N=5, seed=0, dtype=jnp.float32):
  k = jax.random.split(jax.random.PRNGKey(seed), 7)
  x = jax.random.normal(k[0], (S, L, Dm))
  dt = jax.nn.softplus(jax.random.normal(k[1], (S, L, Dm)) - 1.0)
  A = -jnp.exp(0.5 * jax.random.normal(k[2], (Dm, N)))
  B = jax.random.normal(k[3], (S, L, N))
  C = jax.random.normal(k[4], (S, L, N))
  D = jax.random.normal(k[5], (Dm,))
  h0 = jax.random.normal(k[6], (S, Dm, N))
  cast = lambda v: v.astype(dtype)  # noqa: E731
  return cast(x), cast(dt), A, cast(B), cast(C), D, h0


def _scan(impl, chunk_size=4, **kw):
  if impl == "kernel":
    kw = {**KERNEL_KW, "kernel": "triton", **kw}
  elif impl == "kernel_mosaic":
    impl, kw = "kernel", {"kernel": "mosaic", **kw}
  return lambda *a: selective_scan(*a, impl=impl, chunk_size=chunk_size, **kw)


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("with_h0,size", [(True, "small"), (False, "small"), (True, "wide")])
def test_impls_agree_in_values_and_gradients(with_h0, size):
  shape = dict(S=3, L=13, Dm=6, N=5) if size == "small" else dict(S=19, L=21, Dm=200, N=16)
  x, dt, A, B, C, D, h0 = _inputs(**shape)
  S, _, Dm = x.shape
  N = A.shape[1]
  h0 = h0 if with_h0 else None
  ky, kh = jax.random.split(jax.random.PRNGKey(1))
  w_y = jax.random.normal(ky, x.shape)  # random cotangents for y and h_last
  w_h = jax.random.normal(kh, (x.shape[0], A.shape[0], A.shape[1]))

  results = {}
  for impl in IMPLS:
    scan = _scan(impl)

    def loss(x, dt, A, B, C, D, h0):
      y, h_last = scan(x, dt, A, B, C, D, h0)
      return jnp.sum(y * w_y) + jnp.sum(h_last * w_h), (y, h_last)

    argnums = (0, 1, 2, 3, 4, 5, 6) if with_h0 else (0, 1, 2, 3, 4, 5)
    grad_fn = jax.jit(jax.grad(loss, argnums=argnums, has_aux=True))
    grads, (y, h_last) = grad_fn(x, dt, A, B, C, D, h0)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert h_last.shape == (S, Dm, N) and h_last.dtype == jnp.float32
    results[impl] = (y, h_last, grads)

  # The kernel's backward again with atomic cross-program sums (the GPU default) instead
  # of partial sums (the interpreter's default).
  scan = _scan("kernel", reduce="atomic")

  def loss_atomic(x, dt, A, B, C, D, h0):
    y, h_last = scan(x, dt, A, B, C, D, h0)
    return jnp.sum(y * w_y) + jnp.sum(h_last * w_h), (y, h_last)

  argnums = (0, 1, 2, 3, 4, 5, 6) if with_h0 else (0, 1, 2, 3, 4, 5)
  grads, (y, h_last) = jax.jit(jax.grad(loss_atomic, argnums=argnums, has_aux=True))(x, dt, A, B, C, D, h0)
  results["kernel_atomic"] = (y, h_last, grads)

  ref_y, ref_h, ref_grads = results["sequential"]
  names = ["x", "dt", "A", "B", "C", "D", "h0"]
  for impl in (*(i for i in IMPLS if i != "sequential"), "kernel_atomic"):
    y, h_last, grads = results[impl]
    assert _rel_err(y, ref_y) < 1e-4, impl
    assert _rel_err(h_last, ref_h) < 1e-4, impl
    for name, g, g_ref in zip(names, grads, ref_grads):
      assert g.shape == g_ref.shape, (impl, name)
      assert _rel_err(g, g_ref) < 1e-4, (impl, name, _rel_err(g, g_ref))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "sequential"])
def test_chunk_size_does_not_change_results(impl):
  x, dt, A, B, C, D, h0 = _inputs(L=10)
  y_ref, h_ref = _scan("sequential")(x, dt, A, B, C, D, h0)
  for chunk in (1, 3, 16):  # 16 > L: a single padded chunk
    y, h = jax.jit(_scan(impl, chunk_size=chunk))(x, dt, A, B, C, D, h0)
    assert _rel_err(y, y_ref) < 1e-5 and _rel_err(h, h_ref) < 1e-5, chunk


@pytest.mark.timeout(240)
@pytest.mark.parametrize("reduce", ["partial", "atomic"])
def test_triton_backward_rebuilds_every_chunk_length(reduce):
  # The backward rebuilds a chunk whole (chunk <= 8) or in pieces of its largest divisor
  # <= 8 from boundaries found by an extra forward pass (16: 2 x 8; 12: 2 x 6); dB/dC rows
  # leave once per piece as a tile when the piece is a power of 2, else step by step (6, 5).
  x, dt, A, B, C, D, h0 = _inputs(S=2, L=29, Dm=5, N=3)

  def grads(scan):
    def loss(*a):
      y, h = scan(*a)
      return jnp.sum(y * jnp.cos(y)) + jnp.sum(h * h)

    return jax.jit(jax.grad(loss, argnums=tuple(range(7))))(x, dt, A, B, C, D, h0)

  ref = grads(_scan("sequential"))
  for chunk in (16, 12, 8, 5):
    got = grads(_scan("kernel", chunk_size=chunk, reduce=reduce))
    for name, g, g_ref in zip(["x", "dt", "A", "B", "C", "D", "h0"], got, ref):
      assert _rel_err(g, g_ref) < 1e-4, (chunk, name, _rel_err(g, g_ref))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_inputs_keep_dtypes(impl):
  x, dt, A, B, C, D, h0 = _inputs(dtype=jnp.bfloat16)
  y, h_last = jax.jit(_scan(impl))(x, dt, A, B, C, D, h0)
  assert y.dtype == jnp.bfloat16 and h_last.dtype == jnp.float32
  y_ref, h_ref = _scan("sequential")(*(v.astype(jnp.float32) for v in (x, dt, A, B, C, D, h0)))
  assert _rel_err(y.astype(jnp.float32), y_ref) < 1e-2  # only y's final rounding to bf16
  assert _rel_err(h_last, h_ref) < 1e-5  # the state is float32 throughout

  def loss(x, dt, B, C):
    y, h = _scan(impl)(x, dt, A, B, C, D, h0)
    return jnp.sum(y.astype(jnp.float32)) + jnp.sum(h)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(x, dt, B, C)
  assert all(g.dtype == jnp.bfloat16 for g in grads)


@pytest.mark.timeout(30)
def test_step_equals_full_scan():
  x, dt, A, B, C, D, h0 = _inputs()
  y_full, h_full = selective_scan(x, dt, A, B, C, D, h0, impl="sequential")
  h, ys = h0, []
  for t in range(x.shape[1]):
    y_t, h = selective_scan_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], D, h)
    ys.append(y_t)
  assert _rel_err(jnp.stack(ys, axis=1), y_full) < 1e-6
  assert _rel_err(h, h_full) < 1e-6


@pytest.mark.timeout(30)
def test_scan_in_two_parts_equals_one():
  """h_last carries the state: a history pass then a continuation = one pass."""
  x, dt, A, B, C, D, h0 = _inputs(L=12)
  y_full, h_full = selective_scan(x, dt, A, B, C, D, h0)
  y1, h1 = selective_scan(x[:, :7], dt[:, :7], A, B[:, :7], C[:, :7], D, h0)
  y2, h2 = selective_scan(x[:, 7:], dt[:, 7:], A, B[:, 7:], C[:, 7:], D, h1)
  assert _rel_err(jnp.concatenate([y1, y2], axis=1), y_full) < 1e-5
  assert _rel_err(h2, h_full) < 1e-5


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", IMPLS)
def test_scan_is_causal(impl):
  x, dt, A, B, C, D, h0 = _inputs(L=11)
  t0 = 5
  y, _ = _scan(impl)(x, dt, A, B, C, D, h0)
  later = jnp.arange(x.shape[1]) > t0
  bump = lambda v: v + later[None, :, None] * 3.0  # noqa: E731
  y2, _ = _scan(impl)(bump(x), bump(dt), A, bump(B), bump(C), D, h0)
  np.testing.assert_array_equal(np.asarray(y[:, : t0 + 1]), np.asarray(y2[:, : t0 + 1]))
  assert not np.allclose(y[:, t0 + 1 :], y2[:, t0 + 1 :])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", list(ssm.IMPLS))
def test_selective_ssm_step_equals_call(impl):
  model = SelectiveSSM(d_model=8, d_state=4, scan_impl=impl, chunk_size=4)
  x_sld = jax.random.normal(jax.random.PRNGKey(0), (3, 10, 8))
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x_sld)
  y_full = jax.jit(model.apply)(params, x_sld)
  assert y_full.shape == x_sld.shape

  step = jax.jit(lambda p, x_sd, c: model.apply(p, x_sd, c, method="step"))
  cache = model.init_cache(3)
  assert cache[0].shape == (3, 3, 16) and cache[1].shape == (3, 16, 4)
  ys = []
  for t in range(x_sld.shape[1]):
    y_t, cache = step(params, x_sld[:, t], cache)
    ys.append(y_t)
  assert _rel_err(jnp.stack(ys, axis=1), y_full) < 1e-5

  # Prefill a history, then step the rest: the same as one full pass.
  y_hist, cache = jax.jit(model.apply, static_argnames="method")(params, x_sld[:, :6], method="prefill")
  ys = [y_hist]
  for t in range(6, x_sld.shape[1]):
    y_t, cache = step(params, x_sld[:, t], cache)
    ys.append(y_t[:, None])
  assert _rel_err(jnp.concatenate(ys, axis=1), y_full) < 1e-5


@pytest.mark.timeout(60)
def test_selective_ssm_is_causal_and_differentiable():
  model = SelectiveSSM(d_model=8, d_state=4, chunk_size=4)
  x_sld = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8))
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x_sld)
  apply = jax.jit(model.apply)
  t0 = 3
  y = apply(params, x_sld)
  x2 = x_sld.at[:, t0 + 1 :].add(5.0)
  y2 = apply(params, x2)
  np.testing.assert_array_equal(np.asarray(y[:, : t0 + 1]), np.asarray(y2[:, : t0 + 1]))
  assert not np.allclose(y[:, t0 + 1 :], y2[:, t0 + 1 :])

  # The gradient of y at t0 w.r.t. later inputs is exactly zero.
  g = jax.jit(jax.grad(lambda x: jnp.sum(apply(params, x)[:, t0])))(x_sld)
  assert np.all(np.asarray(g[:, t0 + 1 :]) == 0.0)
  assert np.any(np.asarray(g[:, : t0 + 1]) != 0.0)

  grads = jax.jit(jax.grad(lambda p: jnp.sum(apply(p, x_sld) ** 2)))(params)
  for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(leaf)), path


@pytest.mark.timeout(30)
def test_selective_ssm_init_matches_mamba():
  model = SelectiveSSM(d_model=32, d_state=8)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4, 32)))["params"]
  np.testing.assert_allclose(-np.exp(params["A_log"][0]), -np.arange(1, 9), rtol=1e-6)
  np.testing.assert_array_equal(params["D"], 1.0)
  dt = jax.nn.softplus(params["dt_proj"]["bias"])
  assert params["dt_proj"]["kernel"].shape == (2, 64)  # dt_rank = ceil(32 / 16)
  assert float(dt.min()) >= 1e-3 * 0.999 and float(dt.max()) <= 1e-1 * 1.001
  assert params["in_proj"]["kernel"].shape == (32, 128)
  assert params["x_proj"]["kernel"].shape == (64, 2 + 2 * 8)


@pytest.mark.timeout(30)
def test_bf16_compute_dtype_runs():
  model = SelectiveSSM(d_model=8, d_state=4, dtype=jnp.bfloat16)
  x_sld = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x_sld)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  y = jax.jit(model.apply)(params, x_sld)
  assert y.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(y, np.float32)))


@pytest.mark.timeout(30)
def test_bad_shapes_raise_clear_errors():
  x, dt, A, B, C, D, h0 = _inputs()
  with pytest.raises(ValueError, match="dt must have x's shape"):
    selective_scan(x, dt[:, :-1], A, B, C, D, h0)
  with pytest.raises(ValueError, match=r"A must be \[Dm, N\]"):
    selective_scan(x, dt, A[:-1], B, C, D, h0)
  with pytest.raises(ValueError, match=r"B must be \[S, L, N\]"):
    selective_scan(x, dt, A, B[..., :-1], C, D, h0)
  with pytest.raises(ValueError, match=r"C must be \[S, L, N\]"):
    selective_scan(x, dt, A, B, C[:-1], D, h0)
  with pytest.raises(ValueError, match=r"D must be \[Dm\]"):
    selective_scan(x, dt, A, B, C, D[:-1], h0)
  with pytest.raises(ValueError, match=r"h0 must be \[S, Dm, N\]"):
    selective_scan(x, dt, A, B, C, D, h0[:, :, :-1])
  with pytest.raises(ValueError, match=r"x must be \[S, L, Dm\]"):
    selective_scan(x[0], dt[0], A, B[0], C[0], D)
  with pytest.raises(ValueError, match="impl must be one of"):
    selective_scan(x, dt, A, B, C, impl="fft")
  with pytest.raises(ValueError, match="reduce must be one of"):
    selective_scan(x, dt, A, B, C, impl="kernel", reduce="tree")
  with pytest.raises(ValueError, match="ssm_scan_impl='fft'"):
    get_model_config("tiny", ssm_scan_impl="fft")
  assert resolve_impl("auto") == ("kernel" if jax.default_backend() in ("gpu", "tpu") else "chunked")
  assert resolve_kernel("auto") == ("mosaic" if jax.default_backend() == "tpu" else "triton")
  with pytest.raises(ValueError, match="kernel must be one of"):
    selective_scan(x, dt, A, B, C, impl="kernel", kernel="cuda")
  with pytest.raises(ValueError, match="chunk_size must be a positive int"):
    selective_scan(x, dt, A, B, C, chunk_size=0)
  with pytest.raises(ValueError, match="block_d must be a power of 2"):
    selective_scan(x, dt, A, B, C, impl="kernel", block_d=6)
  with pytest.raises(ValueError, match=r"h must be \[S, Dm, N\]"):
    selective_scan_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, h0[:-1])
  with pytest.raises(ValueError, match=r"B_t must be \[S, N\]"):
    selective_scan_step(x[:, 0], dt[:, 0], A, B[:, :2], C[:, 0], D, h0)
  model = SelectiveSSM(d_model=8, d_state=4)
  with pytest.raises(ValueError, match="set d_model to match"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((2, 5, 7)))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
  "impl,Dm,N", [("chunked", 32, 16), ("kernel", 32, 16), ("kernel_mosaic", 128, 64)]
)  # Mosaic: a full lane tile
def test_backward_memory_does_not_hold_all_states(impl, Dm, N):
  """Compiled temp memory of the gradient grows far slower with L than [S, L, Dm, N]."""
  S = 8
  f32 = jnp.float32

  def temp_bytes(L):
    shapes = [(S, L, Dm), (S, L, Dm), (Dm, N), (S, L, N), (S, L, N), (Dm,), (S, Dm, N)]
    args = [jax.ShapeDtypeStruct(s, f32) for s in shapes]

    def loss(*a):
      y, h = _scan(impl, chunk_size=8, block_s=8, block_d=32)(*a)
      return jnp.sum(y) + jnp.sum(h)

    grad = jax.jit(jax.grad(loss, argnums=tuple(range(7))))
    return grad.lower(*args).compile().memory_analysis().temp_size_in_bytes

  states_growth = S * (256 - 64) * Dm * N * 4
  growth = temp_bytes(256) - temp_bytes(64)
  assert growth < 0.4 * states_growth, (impl, growth, states_growth)


@pytest.mark.timeout(60)
def test_kernel_lowers_to_triton_for_gpu():
  """Lowers forward and backward kernels for CUDA without a GPU (Pallas -> Triton IR).

  This checks what the Pallas Triton lowering checks (power-of-2 tiles, supported ops);
  compiling that IR to PTX and running it needs a GPU.
  """
  export = jax.export
  S, L, Dm, N = 4, 19, 32, 16
  f32 = jnp.float32
  shapes = [(S, L, Dm), (S, L, Dm), (Dm, N), (S, L, N), (S, L, N), (Dm,), (S, Dm, N)]
  args = [jax.ShapeDtypeStruct(s, f32) for s in shapes]

  def forward(*a):
    return selective_scan(*a, impl="kernel", interpret=False, chunk_size=4)

  def grads(*a):
    return jax.grad(lambda *a: sum(jnp.sum(o) for o in forward(*a)), argnums=tuple(range(7)))(*a)

  def grads_partial(*a):  # the deterministic cross-program sums (reduce="atomic" is default)
    fwd = lambda *a: selective_scan(
      *a,
      impl="kernel",
      interpret=False,
      chunk_size=4,  # noqa: E731
      reduce="partial",
    )
    return jax.grad(lambda *a: sum(jnp.sum(o) for o in fwd(*a)), argnums=tuple(range(7)))(*a)

  triton = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
  for fn, n_kernels in ((forward, 1), (grads, 2), (grads_partial, 2)):
    exported = export.export(jax.jit(fn), platforms=("cuda",), disabled_checks=[triton])(*args)
    module = exported.mlir_module()
    assert module.count("@__gpu$xla.gpu.triton") == n_kernels


@pytest.mark.timeout(60)
def test_kernel_auto_lowers_mosaic_for_tpu_and_triton_for_gpu():
  """impl="kernel" with kernel="auto", interpret=None resolves for the platform compiled for
  (not the CPU this runs on): exporting for a TPU lowers the Mosaic kernels, for CUDA the
  Triton ones, and never both.

  This runs Pallas's Mosaic lowering (block shapes, supported ops, memory spaces); Mosaic's
  layout passes and the TPU compile run in libtpu: with libtpu installed,
  `python benchmarks/tpu_aot.py` compiles both kernels and the training step for TPU
  topologies (benchmarks/results/tpu_aot.json).
  """
  S, L, Dm, N = 4, 19, 160, 16
  f32 = jnp.float32
  shapes = [(S, L, Dm), (S, L, Dm), (Dm, N), (S, L, N), (S, L, N), (Dm,), (S, Dm, N)]
  args = [jax.ShapeDtypeStruct(s, f32) for s in shapes]

  def forward(*a):
    return selective_scan(*a, impl="kernel", chunk_size=8)

  def grads(*a):
    return jax.grad(lambda *a: sum(jnp.sum(o) for o in forward(*a)), argnums=tuple(range(7)))(*a)

  triton = jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
  for fn, n_kernels in ((forward, 1), (grads, 2)):
    tpu = jax.export.export(jax.jit(fn), platforms=("tpu",))(*args).mlir_module()
    assert tpu.count("tpu_custom_call") == n_kernels and "gpu$xla.gpu.triton" not in tpu
    assert "selective_scan_fwd_tpu" in tpu
    cuda = jax.export.export(jax.jit(fn), platforms=("cuda",), disabled_checks=[triton])(*args).mlir_module()
    assert cuda.count("@__gpu$xla.gpu.triton") == n_kernels and "tpu_custom_call" not in cuda


_SHARDED_SCAN_CHECK = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_cpu_collective_call_terminate_timeout_seconds=240"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from tests.test_ssm import _inputs, _rel_err, _scan

    assert jax.device_count() == 8
    mesh = jax.make_mesh((2, 4), ("data", "expert"), axis_types=(AxisType.Auto,) * 2)
    x, dt, A, B, C, D, h0 = _inputs(S=13, L=11)  # 13 sequences: padded to 16 for 8 shards
    w = jax.random.normal(jax.random.PRNGKey(3), x.shape)

    def loss(scan):
        def f(*a):
            y, h = scan(*a)
            return jnp.sum(y * w) + jnp.sum(h ** 2), (y, h)
        return jax.jit(jax.grad(f, argnums=tuple(range(7)), has_aux=True))

    ref_g, (ref_y, ref_h) = loss(_scan("sequential"))(x, dt, A, B, C, D, h0)
    for impl in ("kernel", "kernel_mosaic"):
        with jax.set_mesh(mesh):
            step = loss(_scan(impl))
            g, (y, h) = step(x, dt, A, B, C, D, h0)
            hlo = step.lower(x, dt, A, B, C, D, h0).as_text()
        assert "sdy.manual_computation" in hlo, impl  # the kernel runs per shard (shard_map)
        assert _rel_err(y, ref_y) < 1e-5 and _rel_err(h, ref_h) < 1e-5, impl
        for name, a, b in zip("x dt A B C D h0".split(), g, ref_g):
            assert _rel_err(a, b) < 1e-5, (impl, name, _rel_err(a, b))
    print("SHARDED_OK")
""")


@pytest.mark.timeout(180)
def test_kernel_under_a_mesh_runs_per_shard_and_equals_unsharded():
  """Under jax.set_mesh the kernel's sequences are split over the mesh (shard_map: XLA cannot
  partition a kernel call); values and gradients (dA summed over shards) stay exact."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run(
    [sys.executable, "-c", _SHARDED_SCAN_CHECK], cwd=root, env=env, capture_output=True, text=True, timeout=guard(170)
  )
  assert proc.returncode == 0 and "SHARDED_OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]
