"""Benchmark (compile-time): what the selective scan and the training step need on TPUs,
compiled ahead of time for TPU chips described by libtpu, on any host (no TPU attached).

A TPU program's memory is allocated statically by the compiler, so the compiled memory
analysis (and, when it does not fit, the compiler's RESOURCE_EXHAUSTED figure) is what the
program needs on that chip. Speed is not measured here: that needs a TPU.

  pip install libtpu==0.0.42.1    # the libtpu of jax 0.10.2 (or: pip install "jax[tpu]==0.10.2")
  python benchmarks/tpu_aot.py                         # the full table (~30 min on 2 CPU cores)
  python benchmarks/tpu_aot.py --sections ssm --chips v5e

Sections:
  ssm    one SSM scan at the base size, batch 14 (S=1092, L=151, Dm=512, N=64), forward and
         forward+backward: the chunked associative scan vs the fused Mosaic kernel.
  train  the real training step (westworld_jax/training/aot.py, as `python -m westworld_jax.train`
         compiles it) of the base model on one chip: batch 14 and 128, remat off/on, chunked
         vs kernel; and the large model (16 experts, expert-parallel) on a v5p slice.
Writes benchmarks/results/tpu_aot.json.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import platform
import re
import time

import jax
import jax.numpy as jnp

from experiments import pretrain  # noqa: E402
from westworld_jax.model.ssm import selective_scan  # noqa: E402
from westworld_jax.training import aot  # noqa: E402

# chip -> a topology holding it (single-chip rows use its first device)
CHIPS = {"v5e": "v5e:2x2", "v6e": "v6e:2x2", "v5p": "v5p:2x2x1", "v4": "v4:2x2x1"}
SSM_BASE_B14 = dict(S=1092, L=151, Dm=512, N=64)
# (name, pretrain variant, batch, chips of the slice, mesh expert, model overrides)
TRAIN_ROWS = [
  ("base_b14", "base", 14, 1, 1, {}),
  ("base_b14_remat", "base", 14, 1, 1, {"remat": True}),
  ("base_b128_remat", "base", 128, 1, 1, {"remat": True}),
]
LARGE_ROW = ("large_b128", "large", 128, 8, 4, {})  # v5p:2x2x2, mesh data 2 x expert 4


def _oom_gib(err: Exception) -> float | None:
  """The compiler's figure from 'the total memory required ... (25.20G) exceeds available HBM'."""
  m = re.search(r"required for [^(]*\(([\d.]+)([GM])\)", str(err))
  if not m:
    return None
  return float(m.group(1)) / (1024 if m.group(2) == "M" else 1)


def _hbm_gib(err: Exception) -> float | None:
  m = re.search(r"available HBM \(([\d.]+)G\)", str(err))
  return float(m.group(1)) if m else None


def _compiled(row: dict, compile_fn) -> dict:
  """row + compile_fn()'s fields and fits=True, or, when the compiler runs out of HBM, its figure and
  fits=False (any other error is raised: a broken compile is not a measurement); prints the row."""
  t0 = time.perf_counter()
  try:
    row.update(compile_fn(), fits=True)
  except Exception as e:  # pylint: disable=broad-except
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    row.update(temp_gib=_oom_gib(e), fits=False, hbm_gib=_hbm_gib(e), error=str(e)[:200])
  row["compile_s"] = time.perf_counter() - t0
  print(row, flush=True)
  return row


def ssm_rows(chip: str) -> list[dict]:
  dev = aot.tpu_devices(CHIPS[chip])[0]
  sh = jax.sharding.SingleDeviceSharding(dev)
  S, L, Dm, N = (SSM_BASE_B14[k] for k in ("S", "L", "Dm", "N"))
  f32 = jnp.float32
  shapes = [(S, L, Dm), (S, L, Dm), (Dm, N), (S, L, N), (S, L, N), (Dm,), (S, Dm, N)]
  args = [jax.ShapeDtypeStruct(s, f32, sharding=sh) for s in shapes]
  rows = []
  for impl in ("chunked", "kernel"):
    fwd = lambda *a, impl=impl: selective_scan(*a, impl=impl, chunk_size=16)  # noqa: E731
    bwd = jax.grad(lambda *a: sum(jnp.sum(o) for o in fwd(*a)), argnums=tuple(range(7)))
    for mode, fn in (("fwd", fwd), ("fwd+bwd", bwd)):
      row = {"section": "ssm", "chip": chip, "device": dev.device_kind, "impl": impl, "mode": mode, **SSM_BASE_B14}

      def compile_fn(fn=fn):
        mem = jax.jit(fn).lower(*args).compile().memory_analysis()
        return {"temp_gib": mem.temp_size_in_bytes / 2**30}

      rows.append(_compiled(row, compile_fn))
  return rows


def train_row(
  chip: str,
  name: str,
  variant: str,
  batch: int,
  chips: int,
  expert: int,
  overrides: dict,
  impl: str,
  topology: str | None = None,
) -> dict:
  cfg = pretrain.get_config(variant)
  cfg.model.update({**overrides, "ssm_scan_impl": impl})
  cfg.mesh.expert = expert
  devices = aot.tpu_devices(topology or CHIPS[chip])[:chips]
  row = {
    "section": "train",
    "chip": chip,
    "row": name,
    "variant": variant,
    "batch": batch,
    "chips": chips,
    "impl": impl,
    "remat": bool(cfg.model.remat),
    "device": devices[0].device_kind,
  }

  def compile_fn():
    step = aot.compile_train_step(cfg, devices, batch)
    return dict(
      mesh=step.mesh,
      params=step.params,
      argument_gib=step.argument_gib,
      temp_gib=step.temp_gib,
      total_gib=step.total_gib,
      model_tflop=step.model_tflop,
    )

  return _compiled(row, compile_fn)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sections", default="ssm,train")
  p.add_argument("--chips", default="v5e,v6e,v5p,v4", help=f"comma-separated of {sorted(CHIPS)}")
  p.add_argument("--train_chips", default="v5e,v5p", help="chips for the train section")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  sections = args.sections.split(",")
  rows = []
  save = lambda: common.write_result(  # noqa: E731
    {
      "what": "compiled memory on TPU chips (AOT, no TPU attached); speed unmeasured",
      "jax": jax.__version__,
      "python": platform.python_version(),
      "rows": rows,
    },
    "tpu_aot",
    args.out,
  )
  if "ssm" in sections:
    for chip in args.chips.split(","):
      rows += ssm_rows(chip)
      save()
  if "train" in sections:
    for chip in args.train_chips.split(","):
      for spec in TRAIN_ROWS:
        for impl in ("chunked", "kernel"):
          rows.append(train_row(chip, *spec, impl=impl))
          save()
    rows.append(train_row("v5p", *LARGE_ROW, impl="kernel", topology="v5p:2x2x2"))
    save()
  _print_tables(rows)


def _print_tables(rows):
  fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
  ssm = [r for r in rows if r["section"] == "ssm"]
  if ssm:
    print("\nSSM scan, base size batch 14 (S=1092, L=151, Dm=512, N=64): compiled temporaries, GiB")
    print(f"{'chip':5} {'mode':8} {'chunked':>9} {'kernel':>9}")
    for chip in dict.fromkeys(r["chip"] for r in ssm):
      for mode in ("fwd", "fwd+bwd"):
        t = {r["impl"]: r for r in ssm if r["chip"] == chip and r["mode"] == mode}
        print(f"{chip:5} {mode:8} {fmt(t['chunked']['temp_gib']):>9} {fmt(t['kernel']['temp_gib']):>9}")
  train = [r for r in rows if r["section"] == "train"]
  if train:
    print(
      "\nTraining step per chip: GiB needed (total when it compiles; the compiler's temporaries when it "
      "does not fit, marked OOM)"
    )
    print(f"{'chip':5} {'row':16} {'impl':8} {'chips':>5} {'GiB':>8} {'fits':>5}")
    for r in train:
      gib = r.get("total_gib", r.get("temp_gib"))
      print(
        f"{r['chip']:5} {r['row']:16} {r['impl']:8} {r['chips']:5d} {fmt(gib):>8} {'yes' if r['fits'] else 'OOM':>5}"
      )


if __name__ == "__main__":
  main()
