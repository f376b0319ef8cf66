"""The static kernel profiler's SASS reading (benchmarks/kernel_sass.py), on hand-written SASS.

Compiling real kernels needs the triton package, which the tests do not install; what can be
wrong without it is finding the hot loop and counting in it, and the occupancy arithmetic.
"""

import importlib
import os
import sys

import pytest

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def kernel_sass():
  sys.path.insert(0, _BENCH)
  try:
    yield importlib.import_module("kernel_sass")
  finally:
    sys.path.remove(_BENCH)


def _sass(lines):
  return "\n".join(
    f"        /*{16 * i:04x}*/   {line} ;" if not line.endswith(":") else line for i, line in enumerate(lines)
  )


SASS = _sass(
  [
    "MOV R1, c[0x0][0x28]",
    ".L_x_0:",  # outer loop (chunks)
    "LDG.E R2, desc[UR4][R2.64]",
    ".L_x_1:",  # inner loop (steps): the hot one
    "FMUL R3, R2, R4",
    "MUFU.EX2 R3, R3",
    "MUFU.EX2 R5, R5",
    "BAR.SYNC.DEFER_BLOCKING 0x0",
    "SHFL.BFLY PT, R6, R3, 0x8, 0x1f",
    "STL [R1], R6",
    "LDL R7, [R1]",
    "@P0 BRA `(.L_x_1)",
    "MEMBAR.ALL.GPU",
    "ATOMG.E.ADD.F32.FTZ.RN.STRONG.GPU PT, RZ, desc[UR6][R8.64], R9",
    "MUFU.EX2 R10, R10",
    "@P1 BRA `(.L_x_0)",
    "EXIT",
    ".L_x_2:",
    "BRA `(.L_x_2)",  # Triton's trailing self-loop: no exps, not a candidate
  ]
)


def test_innermost_exp_loop_is_found_and_counted(kernel_sass):
  got = kernel_sass.parse_hot_loop(SASS)
  assert got == dict(
    instructions=8, mufu_ex2=2, bar=1, shfl=1, membar=0, atomics=0, local_ld=1, local_st=1, global_ld=0, global_st=0
  )


def test_outer_loop_counts_when_it_is_the_only_one(kernel_sass):
  flat = SASS.replace("@P0 BRA `(.L_x_1)", "NOP")
  got = kernel_sass.parse_hot_loop(flat)
  assert got["instructions"] == 13 and got["mufu_ex2"] == 3
  assert got["membar"] == 1 and got["atomics"] == 1 and got["global_ld"] == 1


def test_sass_without_an_exp_loop_is_an_error(kernel_sass):
  with pytest.raises(RuntimeError, match="no loop with exps"):
    kernel_sass.parse_hot_loop(_sass(["MUFU.EX2 R1, R1", ".L_x_0:", "NOP", "BRA `(.L_x_0)"]))


@pytest.mark.parametrize(
  "regs,threads,shared,blocks",
  [
    (48, 128, 1024, 10),  # 48 regs x 128 threads: 10 blocks in 64K registers
    (255, 128, 1024, 2),  # the backward: 2 blocks of 4 warps
    (32, 128, 64, 16),  # limited by 64 warps per SM
    (16, 32, 64, 32),  # limited by 32 blocks per SM
    (32, 128, 100_000, 2),  # limited by shared memory
  ],
)
def test_occupancy(kernel_sass, regs, threads, shared, blocks):
  assert kernel_sass.occupancy(regs, threads, shared) == blocks
