"""Benchmark of the selective scan implementations (westworld_jax.model.ssm).

Times forward and forward+backward (jit, block_until_ready, median of --repeats) of each
`impl` and reports compiled temp memory (XLA's memory analysis) and, where the device
reports it, the device's peak memory. Writes benchmarks/results/ssm_<backend>.json.

  python benchmarks/ssm.py                      # base size on GPU/TPU, tiny on CPU
  python benchmarks/ssm.py --device-size tiny   # S=8, L=37, Dm=32, N=16 (a quick check)
  python benchmarks/ssm.py --device-size base   # S=1092, L=151, Dm=512, N=64: one layer
                                                # of the base model at batch 14

On CPU the "kernel" impl runs in the Pallas interpreter: its time says nothing about GPU.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import jaxlib

from westworld_jax.model.ssm import IMPLS, selective_scan  # noqa: E402

SIZES = {
    "tiny": dict(S=8, L=37, Dm=32, N=16),
    "base": dict(S=1092, L=151, Dm=512, N=64),
}
# Kernel tilings tried at the base size (block_s, block_d, num_warps); tiny runs the first.
KERNEL_CONFIGS = [(1, 16, 4), (1, 32, 4), (1, 16, 8), (2, 16, 8)]


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


def time_fn(fn, args, repeats):
    """Median wall time in ms of a jitted fn (after one warm-up call)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_bytes():
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def bench_one(name, scan_kw, args, repeats):
    def forward(*a):
        return selective_scan(*a, **scan_kw)

    def loss(*a):
        y, h = forward(*a)
        return jnp.sum(y.astype(jnp.float32)) + jnp.sum(h)

    fwd_bwd = jax.value_and_grad(loss, argnums=tuple(range(len(args))))
    row = dict(name=name, **{k: v for k, v in scan_kw.items() if v is not None})
    for label, fn in (("fwd", forward), ("fwd_bwd", fwd_bwd)):
        try:
            compiled = jax.jit(fn).lower(*args).compile()
            analysis = compiled.memory_analysis()
            row[f"{label}_temp_bytes"] = getattr(analysis, "temp_size_in_bytes", None)
            row[f"{label}_ms"] = time_fn(compiled, args, repeats)
            row[f"{label}_peak_bytes_so_far"] = peak_bytes()
        except Exception as e:  # e.g. out of memory at the base size: record and go on.
            row[f"{label}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return row


def _ms(v):
    return "error" if v is None else f"{v:.2f}"


def _mib(b):
    return "-" if b is None else f"{b / 2**20:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device-size", choices=sorted(SIZES), default=None,
                        help="problem size (default: base on an accelerator, tiny on CPU)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per measurement (default 10 base, 5 tiny)")
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma-separated impls")
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="dtype of x, dt, B, C (accumulation is always float32)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/ssm_<backend>.json)")
    args = parser.parse_args()

    backend = jax.default_backend()
    size = args.device_size or ("tiny" if backend == "cpu" else "base")
    repeats = args.repeats or (5 if size == "tiny" else 10)
    shape = SIZES[size]
    inputs = make_inputs(**shape, dtype=jnp.dtype(args.dtype))
    device = jax.devices()[0]

    rows = []
    for impl in args.impls.split(","):
        configs = [(None, None, None)]
        if impl == "kernel":
            sweep = size == "base" and backend == "gpu"
            configs = KERNEL_CONFIGS if sweep else KERNEL_CONFIGS[:1]
        for block_s, block_d, num_warps in configs:
            scan_kw = dict(impl=impl, chunk_size=args.chunk_size)
            name = impl
            if impl == "kernel":
                scan_kw.update(block_s=block_s, block_d=block_d)
                if backend == "gpu":
                    scan_kw["num_warps"] = num_warps
                name = f"kernel(bs={block_s},bd={block_d}" + (
                    f",warps={num_warps})" if backend == "gpu" else ")")
            print(f"running {name} ...", flush=True)
            rows.append(bench_one(name, scan_kw, inputs, repeats))

    print(f"\nselective scan, {size} {shape}, {args.dtype}, chunk {args.chunk_size}, "
          f"{device.device_kind} ({backend}), jax {jax.__version__}")
    header = (f"{'impl':<34}{'fwd ms':>10}{'fwd+bwd ms':>12}{'fwd temp MiB':>14}"
              f"{'fwd+bwd temp MiB':>18}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<34}{_ms(r.get('fwd_ms')):>10}{_ms(r.get('fwd_bwd_ms')):>12}"
              f"{_mib(r.get('fwd_temp_bytes')):>14}{_mib(r.get('fwd_bwd_temp_bytes')):>18}")
        for k in ("fwd_error", "fwd_bwd_error"):
            if k in r:
                print(f"    {k}: {r[k]}")
    if backend == "cpu":
        print("(kernel on CPU = Pallas interpreter; its timings are not GPU-representative)")

    result = dict(
        benchmark="selective_scan",
        backend=backend,
        device=device.device_kind,
        num_devices=jax.device_count(),
        jax_version=jax.__version__,
        jaxlib_version=jaxlib.__version__,
        size=size,
        shapes=dict(**shape, x=[shape["S"], shape["L"], shape["Dm"]],
                    B=[shape["S"], shape["L"], shape["N"]], A=[shape["Dm"], shape["N"]],
                    states_bytes=shape["S"] * shape["L"] * shape["Dm"] * shape["N"] * 4),
        dtype=args.dtype,
        chunk_size=args.chunk_size,
        repeats=repeats,
        peak_bytes_in_use=peak_bytes(),
        note=("peak_bytes_so_far is the device's running peak (never reset), so it bounds "
              "an impl only when it rises; temp_bytes is XLA's compiled estimate per call."
              + (" kernel ran in the Pallas interpreter." if backend == "cpu" else "")),
        results=rows,
    )
    common.write_result(result, f"ssm_{backend}", args.out)


if __name__ == "__main__":
    main()
