"""Benchmark of the selective scan implementations (westworld_jax.model.ssm).

Times forward and forward+backward (jit, block_until_ready, median of --repeats) of each
`impl` (--impls, default every implementation registered in ssm.IMPLS) and reports compiled
temp memory (XLA's memory analysis) and, where the device reports it, the device's peak
memory. Writes benchmarks/results/ssm_<backend>.json.

  python benchmarks/ssm.py                      # base size on GPU/TPU, tiny on CPU
  python benchmarks/ssm.py --device-size tiny   # S=8, L=37, Dm=32, N=16 (a quick check)
  python benchmarks/ssm.py --device-size base   # S=1092, L=151, Dm=512, N=64: one layer
                                                # of the base model at batch 14

On CPU the "kernel" impl runs in the Pallas interpreter: its time says nothing about GPU.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse

import jax
import jax.numpy as jnp
import jaxlib

from westworld_jax.model.ssm import IMPLS, selective_scan  # noqa: E402

SIZES = {
  "tiny": dict(S=8, L=37, Dm=32, N=16),
  "base": dict(S=1092, L=151, Dm=512, N=64),
}
# Kernel tilings tried at the base size on a GPU, "block_s x block_d x num_warps x chunk";
# tiny (and CPU) runs the first. Override with --kernel-configs.
KERNEL_CONFIGS = "1x16x4x8,1x16x4x16,1x8x2x8,1x4x1x8,1x32x4x8,1x16x8x8,1x16x4x4,4x16x8x8"
# On a TPU the (Mosaic) kernel's tiles are fixed; its chunk (steps rebuilt per backward chunk in
# VMEM, and between checkpoints) is swept instead.
TPU_CHUNKS = (8, 16, 32, 64)


def parse_kernel_configs(text):
  configs = []
  for item in text.split(","):
    bs, bd, warps, chunk = (int(v) for v in item.lower().split("x"))
    configs.append((bs, bd, warps, chunk))
  return configs


def rel_err(a, b):
  """||a - b|| / ||b|| over all elements, in float32 on the device."""
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  return float(jnp.linalg.norm((a - b).ravel()) / jnp.maximum(jnp.linalg.norm(b.ravel()), 1e-30))


def make_inputs(S, L, Dm, N, dtype=jnp.float32):
  k = jax.random.split(jax.random.PRNGKey(0), 7)
  x = jax.random.normal(k[0], (S, L, Dm), dtype)
  dt = jax.nn.softplus(jax.random.normal(k[1], (S, L, Dm)) - 4.0).astype(dtype)
  A = -jnp.broadcast_to(jnp.arange(1, N + 1, dtype=jnp.float32), (Dm, N))
  B = jax.random.normal(k[3], (S, L, N), dtype)
  C = jax.random.normal(k[4], (S, L, N), dtype)
  D = jnp.ones((Dm,), jnp.float32)
  h0 = jnp.zeros((S, Dm, N), jnp.float32)
  return x, dt, A, B, C, D, h0


def _loss_weights(args):
  """Random cotangents for y and h_last (a plain sum would give every output the same one)."""
  x, *_, h0 = args
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  return jax.random.normal(k1, x.shape, jnp.float32), jax.random.normal(k2, h0.shape)


def bench_one(name, scan_kw, args, repeats, reference=None):
  w_y, w_h = _loss_weights(args)

  def forward(*a):
    return selective_scan(*a, **scan_kw)

  def loss(*a):
    y, h = forward(*a)
    return jnp.sum(y.astype(jnp.float32) * w_y) + jnp.sum(h * w_h)

  fwd_bwd = jax.value_and_grad(loss, argnums=tuple(range(len(args))))
  row = dict(name=name, **{k: v for k, v in scan_kw.items() if v is not None})
  if reference is not None:  # relative error of y, h_last and every gradient vs reference
    try:
      got = jax.jit(lambda *a: (forward(*a), fwd_bwd(*a)[1]))(*args)
      names = ["y", "h_last"] + [f"d{n}" for n in ("x", "dt", "A", "B", "C", "D", "h0")]
      flat_got = list(got[0]) + list(got[1])
      flat_ref = list(reference[0]) + list(reference[1])
      row["rel_err"] = {n: rel_err(g, r) for n, g, r in zip(names, flat_got, flat_ref)}
      row["max_rel_err"] = max(row["rel_err"].values())
      del got, flat_got
    except Exception as e:
      row["check_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
  for label, fn in (("fwd", forward), ("fwd_bwd", fwd_bwd)):
    try:
      compiled = jax.jit(fn).lower(*args).compile()
      analysis = compiled.memory_analysis()
      row[f"{label}_temp_bytes"] = getattr(analysis, "temp_size_in_bytes", None)
      row[f"{label}_ms"] = common.median_ms(compiled, args, repeats)
      row[f"{label}_peak_bytes_so_far"] = common.device_peak_bytes()
    except Exception as e:  # e.g. out of memory at the base size: record and go on.
      row[f"{label}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
  return row


def _ms(v):
  return "error" if v is None else f"{v:.2f}"


def _mib(b):
  return "-" if b is None else f"{b / 2**20:.1f}"


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--device-size",
    choices=sorted(SIZES),
    default=None,
    help="problem size (default: base on an accelerator, tiny on CPU)",
  )
  parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 10 base, 5 tiny)")
  parser.add_argument("--impls", default=",".join(IMPLS), help="comma-separated impls")
  parser.add_argument(
    "--chunk-size", type=int, default=16, help="chunk of the chunked impl (kernel configs carry their own)"
  )
  parser.add_argument(
    "--kernel-configs",
    default=None,
    help="comma-separated block_s x block_d x num_warps x chunk, e.g. "
    "1x32x4x8 (default: a sweep on a GPU at base size, else the first)",
  )
  parser.add_argument(
    "--check",
    action="store_true",
    help="also report each impl's relative error (y, h_last, all gradients) "
    "against the chunked impl on the same inputs",
  )
  parser.add_argument(
    "--dtype",
    choices=["float32", "bfloat16"],
    default="float32",
    help="dtype of x, dt, B, C (accumulation is always float32)",
  )
  parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/ssm_<backend>.json)")
  return parser.parse_args(argv)


def main():
  args = parse_args()

  backend = jax.default_backend()
  size = args.device_size or ("tiny" if backend == "cpu" else "base")
  repeats = args.repeats or (5 if size == "tiny" else 10)
  shape = SIZES[size]
  inputs = make_inputs(**shape, dtype=jnp.dtype(args.dtype))
  device = jax.devices()[0]

  reference = None
  if args.check:
    ref_kw = dict(impl="chunked", chunk_size=args.chunk_size)
    w_y, w_h = _loss_weights(inputs)

    def ref_loss(*a):
      y, h = selective_scan(*a, **ref_kw)
      return jnp.sum(y.astype(jnp.float32) * w_y) + jnp.sum(h * w_h)

    reference = jax.jit(lambda *a: (selective_scan(*a, **ref_kw), jax.grad(ref_loss, argnums=tuple(range(7)))(*a)))(
      *inputs
    )
    reference = jax.block_until_ready(reference)

  def write(rows):  # after every row: a later configuration may hang or crash
    result = dict(
      benchmark="selective_scan",
      backend=backend,
      device=device.device_kind,
      num_devices=jax.device_count(),
      jax_version=jax.__version__,
      jaxlib_version=jaxlib.__version__,
      size=size,
      shapes=dict(
        **shape,
        x=[shape["S"], shape["L"], shape["Dm"]],
        B=[shape["S"], shape["L"], shape["N"]],
        A=[shape["Dm"], shape["N"]],
        states_bytes=shape["S"] * shape["L"] * shape["Dm"] * shape["N"] * 4,
      ),
      dtype=args.dtype,
      chunk_size=args.chunk_size,
      check_reference=("chunked impl, same inputs, float32" if args.check else None),
      repeats=repeats,
      peak_bytes_in_use=common.device_peak_bytes(),
      note=(
        "peak_bytes_so_far is the device's running peak (never reset), so it bounds "
        "an impl only when it rises; temp_bytes is XLA's compiled estimate per call."
        + (" kernel ran in the Pallas interpreter." if backend == "cpu" else "")
      ),
      results=rows,
    )
    common.write_result(result, f"ssm_{backend}", args.out)

  rows = []
  for impl in args.impls.split(","):
    configs = [(None, None, None, args.chunk_size)]
    if impl == "kernel" and backend == "tpu":  # Mosaic: fixed tiles, only the chunk varies
      chunks = [16] if size == "tiny" else TPU_CHUNKS
      if args.kernel_configs:
        chunks = sorted({c for *_, c in parse_kernel_configs(args.kernel_configs)})
      configs = [(None, None, None, c) for c in chunks]
    elif impl == "kernel":
      sweep = size == "base" and backend == "gpu"
      configs = parse_kernel_configs(args.kernel_configs or KERNEL_CONFIGS)
      if not (sweep or args.kernel_configs):
        configs = configs[:1]
    for block_s, block_d, num_warps, chunk in configs:
      scan_kw = dict(impl=impl, chunk_size=chunk)
      name = impl if impl != "chunked" else f"chunked(chunk={chunk})"
      if impl == "kernel" and backend == "tpu":
        name = f"kernel(mosaic,chunk={chunk})"
      elif impl == "kernel":
        scan_kw.update(block_s=block_s, block_d=block_d)
        if backend == "gpu":
          scan_kw["num_warps"] = num_warps
        name = f"kernel(bs={block_s},bd={block_d},chunk={chunk}" + (f",warps={num_warps})" if backend == "gpu" else ")")
      print(f"running {name} ...", flush=True)
      rows.append(bench_one(name, scan_kw, inputs, repeats, reference if impl != "chunked" else None))
      write(rows)
      r = rows[-1]
      print(
        f"  fwd {_ms(r.get('fwd_ms'))} ms, fwd+bwd {_ms(r.get('fwd_bwd_ms'))} ms, "
        f"max rel err {r.get('max_rel_err', '-')}",
        flush=True,
      )

  print(
    f"\nselective scan, {size} {shape}, {args.dtype}, chunk {args.chunk_size}, "
    f"{device.device_kind} ({backend}), jax {jax.__version__}"
  )
  header = (
    f"{'impl':<42}{'fwd ms':>10}{'fwd+bwd ms':>12}{'fwd temp MiB':>14}{'fwd+bwd temp MiB':>18}{'max rel err':>13}"
  )
  print(header)
  print("-" * len(header))
  for r in rows:
    err = r.get("max_rel_err")
    print(
      f"{r['name']:<42}{_ms(r.get('fwd_ms')):>10}{_ms(r.get('fwd_bwd_ms')):>12}"
      f"{_mib(r.get('fwd_temp_bytes')):>14}{_mib(r.get('fwd_bwd_temp_bytes')):>18}"
      f"{'-' if err is None else f'{err:.1e}':>13}"
    )
    for k in ("fwd_error", "fwd_bwd_error", "check_error"):
      if k in r:
        print(f"    {k}: {r[k]}")
  if backend == "cpu":
    print("(kernel on CPU = Pallas interpreter; its timings are not GPU-representative)")


if __name__ == "__main__":
  main()
