"""Static profile of the Triton scan kernels for an H100 (sm_90), measured on any machine.

Lowers selective_scan's Triton kernels (forward, backward) at a problem size for CUDA, compiles
each kernel's Triton IR with the `triton` package for sm_90 (no GPU needed: the wheel ships
ptxas/nvdisasm) and reads the machine code: registers, spill stack, shared memory, occupancy,
and per time step of the hot loop the instructions, exps (MUFU), barriers, shuffles, memory
fences, atomics and local-memory (spill) traffic. From the instruction count it gives the
issue-bound floor of each kernel at that size (every SM issuing 4 warp-instructions per clock).

  pip install triton==3.9.0   # its compiler only; jax does not use it
  python benchmarks/kernel_sass.py                          # base size, default configs
  python benchmarks/kernel_sass.py --configs 1x16x4x8,1x32x8x4 --reduce partial,atomic

Writes benchmarks/results/kernel_sass.json. XLA compiles the same Triton IR with its own Triton
build on a GPU, so register counts can differ somewhat; the instruction mix (how exp lowers,
fences around atomics, barriers from layout conversions) comes from the IR and carries over.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import contextlib
import dataclasses
import os
import re
import subprocess
import tempfile

import jax
import jax.numpy as jnp

from westworld_jax.model.ssm import selective_scan  # noqa: E402

SIZES = {"tiny": dict(S=8, L=37, Dm=32, N=16), "base": dict(S=1092, L=151, Dm=512, N=64)}
CONFIGS = "1x16x4x8,1x16x4x16,1x16x4x4,1x32x4x8,1x32x8x8,1x64x8x4"
# H100 SXM: 132 SMs, 4 schedulers each issuing one warp-instruction per clock, ~1.755 GHz under
# load; 64K registers, 64 warps and 32 blocks per SM.
SMS, ISSUE_PER_CLOCK, CLOCK_HZ = 132, 4, 1.755e9
REGS_PER_SM, WARPS_PER_SM, BLOCKS_PER_SM = 65536, 64, 32


@contextlib.contextmanager
def captured_triton_ir():
  """Yields a list that fills with (kernel name, Triton IR text) for every Pallas Triton kernel
  lowered inside the block (wraps Pallas's private lowering entry point)."""
  from jax._src.pallas.triton import lowering, pallas_call_registration as registration

  modules, original = [], lowering.lower_jaxpr_to_triton_module

  def capture(*args, **kwargs):
    result = original(*args, **kwargs)
    op = result.module.operation
    name = op.attributes["sym_name"].value if "sym_name" in op.attributes else "kernel"
    modules.append((name, op.get_asm(enable_debug_info=False)))
    return result

  registration.lowering.lower_jaxpr_to_triton_module = capture
  try:
    yield modules
  finally:
    registration.lowering.lower_jaxpr_to_triton_module = original


def lower_kernels(shape, scan_kw):
  """{kernel name: Triton IR} of one differentiated selective_scan lowered for CUDA."""
  S, L, Dm, N = (shape[k] for k in ("S", "L", "Dm", "N"))
  f32 = jnp.float32
  avals = [jax.ShapeDtypeStruct(s, f32) for s in [(S, L, Dm), (S, L, Dm), (Dm, N), (S, L, N), (S, L, N)]]

  def loss(x, dt, A, B, C):
    y, h = selective_scan(x, dt, A, B, C, impl="kernel", kernel="triton", interpret=False, **scan_kw)
    return y.sum() + h.sum()

  with captured_triton_ir() as modules:
    jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4))).trace(*avals).lower(lowering_platforms=("cuda",))
  return dict(modules)


def compile_sm90(ttir: str, num_warps: int, workdir: str):
  """(cubin path, triton version) of Triton IR compiled for sm_90."""
  try:
    import triton
    from triton.backends.compiler import GPUTarget
  except ImportError as e:
    raise SystemExit(
      "this benchmark needs the triton compiler: pip install triton==3.9.0 "
      f"(jax does not use it; only its compiler runs here). {e}"
    )
  os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the default, and no warning
  path = os.path.join(workdir, "kernel.ttir")
  with open(path, "w") as f:
    f.write(ttir)
  kernel = triton.compile(path, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, num_stages=3))
  cubin = os.path.join(workdir, "kernel.cubin")
  with open(cubin, "wb") as f:
    f.write(kernel.asm["cubin"])
  return cubin, triton.__version__


def triton_tool(name: str) -> str | None:
  """A CUDA tool the triton wheel ships (ptxas, nvdisasm, cuobjdump), or None without it."""
  try:
    import triton
  except ImportError:
    return None
  path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
  return path if os.path.exists(path) else None


def _tool(name):
  path = triton_tool(name)
  if path is None:
    raise SystemExit(f"no {name}: pip install triton==3.9.0 (its wheel ships it)")
  return path


def resource_usage(cubin):
  out = subprocess.run(
    [_tool("cuobjdump"), "--dump-resource-usage", cubin], capture_output=True, text=True, check=True
  ).stdout
  fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out))
  return {k.lower(): int(v) for k, v in fields.items()}


@dataclasses.dataclass
class Loop:
  start: int  # instruction indices, body = [start, end]
  end: int


def hot_loop(cubin):
  """Counts over the innermost loop that computes exps (the time loop) of a cubin."""
  return parse_hot_loop(
    subprocess.run([_tool("nvdisasm"), "-c", cubin], capture_output=True, text=True, check=True).stdout
  )


def parse_hot_loop(sass: str) -> dict:
  """Counts over the innermost loop with exps (MUFU.EX2) in nvdisasm's SASS text: a loop is a
  branch back to a label above it."""
  instrs, labels = [], {}
  for line in sass.splitlines():
    label = re.match(r"^(\.L_x_\d+):", line.strip())
    if label:
      labels[label.group(1)] = len(instrs)
      continue
    m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(.*?);", line)
    if m:
      instrs.append(m.group(1).strip())
  loops = []
  for i, ins in enumerate(instrs):
    target = re.search(r"BRA\s+`?\(?(\.L_x_\d+)", ins)
    if target and labels.get(target.group(1), i + 1) <= i:
      loops.append(Loop(labels[target.group(1)], i))
  with_exp = [lp for lp in loops if any("MUFU.EX2" in s for s in instrs[lp.start : lp.end + 1])]
  if not with_exp:
    raise RuntimeError("no loop with exps found in the kernel's SASS")
  lp = min(with_exp, key=lambda lp: lp.end - lp.start)
  body = instrs[lp.start : lp.end + 1]

  def count(pattern):
    return sum(bool(re.search(pattern, s)) for s in body)

  return dict(
    instructions=len(body),
    mufu_ex2=count(r"MUFU\.EX2"),
    bar=count(r"\bBAR\."),
    shfl=count(r"SHFL"),
    membar=count(r"MEMBAR"),
    atomics=count(r"\b(ATOMG?|RED)\."),
    local_ld=count(r"\bLDL"),
    local_st=count(r"\bSTL"),
    global_ld=count(r"\bLDG"),
    global_st=count(r"\bSTG"),
  )


def occupancy(regs, threads, shared):
  regs_per_warp = -(-regs * 32 // 256) * 256  # allocation granularity
  by_regs = REGS_PER_SM // (regs_per_warp * (threads // 32))
  by_smem = (228 * 1024) // max(shared, 1)
  return min(by_regs, WARPS_PER_SM // (threads // 32), BLOCKS_PER_SM, by_smem)


def profile(shape, cfg, reduce, with_forward=True):
  bs, bd, warps, chunk = cfg
  kernels = lower_kernels(shape, dict(block_s=bs, block_d=bd, num_warps=warps, chunk_size=chunk, reduce=reduce))
  S, L, Dm, N = (shape[k] for k in ("S", "L", "Dm", "N"))
  programs = -(-S // bs) * -(-Dm // bd)
  elems_per_step = bs * bd * max(N, 1)
  rows = []
  for name, ttir in kernels.items():
    if "fwd" in name and not with_forward:  # the forward does not depend on `reduce`
      continue
    with tempfile.TemporaryDirectory() as tmp:
      cubin, version = compile_sm90(ttir, warps, tmp)
      usage, loop = resource_usage(cubin), hot_loop(cubin)
    threads = 32 * warps
    # The backward's hot loop is one chunk (its steps are unrolled in the kernel); the
    # forward's is one step unless the compiler unrolled it (one exp per state element
    # per step tells how many).
    steps = chunk if "bwd" in name else max(1, round(loop["mufu_ex2"] * threads / elems_per_step))
    per_step = {k: v / steps for k, v in loop.items()}
    warp_instr = programs * L * per_step["instructions"] * warps
    rows.append(
      dict(
        kernel=name,
        config=f"{bs}x{bd}x{warps}x{chunk}",
        reduce=reduce,
        triton=version,
        regs=usage.get("reg"),
        stack_bytes=usage.get("stack"),
        shared_bytes=usage.get("shared"),
        blocks_per_sm=occupancy(usage.get("reg", 0), threads, usage.get("shared", 0)),
        per_step=per_step,
        instr_per_elem=per_step["instructions"] * threads / elems_per_step,
        exp_per_elem=per_step["mufu_ex2"] * threads / elems_per_step,
        issue_floor_ms=1e3 * warp_instr / (SMS * ISSUE_PER_CLOCK * CLOCK_HZ),
      )
    )
    print_row(rows[-1])
  return rows


HEADER = (
  f"{'kernel':<20} {'config':<10} {'reduce':<8} {'regs':>4} {'stack':>5} {'blk/SM':>6} "
  f"{'instr/step':>10} {'instr/elem':>10} {'exp/elem':>8} {'bar':>5} {'fence':>5} "
  f"{'spill ld/st':>11} {'floor ms':>8}"
)


def print_row(r):
  p = r["per_step"]
  print(
    f"{r['kernel']:<20} {r['config']:<10} {r['reduce']:<8} {r['regs']:>4} "
    f"{r['stack_bytes']:>5} {r['blocks_per_sm']:>6} {p['instructions']:>10.1f} "
    f"{r['instr_per_elem']:>10.2f} {r['exp_per_elem']:>8.2f} {p['bar']:>5.1f} "
    f"{p['membar']:>5.1f} {p['local_ld']:>5.1f}/{p['local_st']:<5.1f} "
    f"{r['issue_floor_ms']:>8.2f}",
    flush=True,
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="base")
  parser.add_argument("--configs", default=CONFIGS, help="comma-separated block_s x block_d x num_warps x chunk")
  parser.add_argument(
    "--reduce", default="partial,atomic", help="comma-separated backward reductions of dB/dC/dA to profile"
  )
  parser.add_argument(
    "--label", default="", help="what code this profiles (e.g. the kernel design), recorded in the JSON"
  )
  parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/kernel_sass.json)")
  args = parser.parse_args()
  shape = SIZES[args.size]
  print(HEADER)
  rows = []
  for item in args.configs.split(","):
    cfg = tuple(int(v) for v in item.lower().split("x"))
    for i, reduce in enumerate(args.reduce.split(",")):
      rows.extend(profile(shape, cfg, reduce, with_forward=i == 0))
  common.write_result(
    dict(
      benchmark="kernel_sass",
      label=args.label,
      target="sm_90 (H100)",
      size=args.size,
      shapes=shape,
      jax_version=jax.__version__,
      note=(
        "static: Triton IR from jax's Pallas lowering, compiled by the triton package for "
        "sm_90; per_step counts are SASS instructions per thread per time step of the hot "
        "loop; issue_floor_ms assumes every SM issues 4 warp-instructions per clock at "
        f"{CLOCK_HZ / 1e9} GHz (a lower bound: stalls, latency and memory are not in it)."
      ),
      results=rows,
    ),
    "kernel_sass",
    args.out,
  )


if __name__ == "__main__":
  main()
