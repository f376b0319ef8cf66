"""Ablations: `python -m westworld_jax.ablations --config experiments/ablations.py[:cpu|tiny] [--workdir OUT]`.

Pretrains every run of the config (`variants`, each a training config in `runs`) once per seed in OUT/runs/<name>-s<seed>
(a rerun resumes unfinished runs and skips finished ones), then evaluates all of them with the library's
commands: zero-shot on the held-out robots (evaluate.evaluate, policy data and, when configured, gait
data; each beside hold-last) and few-shot (few_shot.finetune). Each setting keeps its own report under
OUT/<setting>/; OUT/results.json gathers one row per (variant, setting, robot):
  {"variant", "setting", "robot", "mae_x100_mean", "mae_x100_std", "first_step_mae_x100_mean",
   "first_step_mae_x100_std", "seeds"}
and OUT/results.md and OUT/plots/ablations.png show them.
With `--config.train_only=True` it trains (or resumes) the runs of `--config.variants` (and `--config.seeds`) and
stops: one such process per core splits the runs, and a final invocation with every variant evaluates them.
"""

from __future__ import annotations

import os
import time

from absl import app, flags
from ml_collections import config_flags

from westworld_jax import cli
from westworld_jax import evaluate as evaluate_lib
from westworld_jax import evaluation as ev
from westworld_jax import few_shot as few_shot_lib
from westworld_jax.training import loop

_CONFIG = _WORKDIR = None  # flags, defined only when run as a program
HOLD = ev.HOLD_LAST_LABEL
SETTINGS = ("zero_shot", "zero_shot_gait", "few_shot")


def run_dir(outdir: str, name: str, seed: int) -> str:
  return os.path.join(outdir, "runs", f"{name}-s{seed}")


def pretrain(cfg, outdir: str) -> list[tuple[str, str]]:
  """Trains (or resumes, or finds finished) every run and seed; [(variant, workdir)] in config order."""
  out = []
  for name in cfg.variants:
    for seed in cfg.seeds:
      rc = cfg.runs[name].copy_and_resolve_references()
      rc.seed = int(seed)
      workdir = run_dir(outdir, name, seed)
      loop.train_to_end(rc, workdir)  # a signal stops the driver, not just this run
      out.append((name, workdir))
  return out


def _variant(label: str) -> str:
  """few_shot labels its runs '<label> fine-tuned'; the reference keeps its name."""
  return label.removesuffix(" fine-tuned")


def rows(reports: dict[str, dict]) -> list[dict]:
  """One row per (variant, setting, robot) from the settings' reports (ev.report's `summary`)."""
  out = []
  for setting, rep in reports.items():
    for label, s in rep["summary"].items():
      for robot, r in s["robots"].items():
        out.append(
          {
            "variant": _variant(label),
            "setting": setting,
            "robot": robot,
            "mae_x100_mean": r["mae_x100_mean"],
            "mae_x100_std": r["mae_x100_std"],
            "first_step_mae_x100_mean": r["first_step_mae_x100_mean"],
            "first_step_mae_x100_std": r["first_step_mae_x100_std"],
            "seeds": r["seeds"],
          }
        )
  return out


def _markdown(table: list[dict], seeds: int) -> str:
  variants = list(dict.fromkeys(r["variant"] for r in table))
  md = [
    "# Ablations: what each part of WestWorld buys",
    "",
    f"Protocol: {ev.PROTOCOL}.",
    f"MAE x100 over the horizon (first predicted step in brackets); mean ± sample std over {seeds} seed(s).",
    "",
  ]
  for setting in SETTINGS:
    part = [r for r in table if r["setting"] == setting]
    if not part:
      continue
    robots = list(dict.fromkeys(r["robot"] for r in part))
    cell = {(r["variant"], r["robot"]): r for r in part}
    md += [f"## {setting.replace('_', ' ')}", "", "| variant | " + " | ".join(robots) + " |"]
    md.append("|" + "---|" * (len(robots) + 1))
    for v in variants:
      cells = []
      for rb in robots:
        r = cell.get((v, rb))
        if r is None:
          cells.append("—")
          continue
        std = f" ± {r['mae_x100_std']:.2f}" if r["seeds"] > 1 else ""
        first = r["first_step_mae_x100_mean"]
        cells.append(
          f"{r['mae_x100_mean']:.2f}{std} ({first:.2f})" if first is not None else f"{r['mae_x100_mean']:.2f}{std}"
        )
      if any(c != "—" for c in cells):
        md.append(f"| {v} | " + " | ".join(cells) + " |")
    md.append("")
  md += ["![ablations](plots/ablations.png)", ""]
  return "\n".join(md)


def plot(path: str, table: list[dict]) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  settings = [s for s in SETTINGS if any(r["setting"] == s for r in table)]
  fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.8), squeeze=False)
  for ax, setting in zip(axes[0], settings):
    part = [r for r in table if r["setting"] == setting]
    robots = list(dict.fromkeys(r["robot"] for r in part))
    variants = list(dict.fromkeys(r["variant"] for r in part))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
      got = {r["robot"]: r for r in part if r["variant"] == v}
      xs = np.arange(len(robots)) + i * width
      ys = [got[rb]["mae_x100_mean"] if rb in got else np.nan for rb in robots]
      es = [got[rb]["mae_x100_std"] if rb in got else 0.0 for rb in robots]
      style = dict(color="k", alpha=0.35) if v == HOLD else {}
      ax.bar(xs, ys, width, yerr=es, capsize=2, label="hold last obs" if v == HOLD else v, **style)
    ax.set_xticks(np.arange(len(robots)) + 0.4 - width / 2)
    ax.set_xticklabels(robots, fontsize=8)
    ax.set_ylabel("MAE x100")
    ax.set_title(setting.replace("_", " "), fontsize=9)
    ax.grid(alpha=0.3, axis="y")
  axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  return ev.save_figure(fig, path)


def ablations(cfg, outdir: str) -> dict:
  t0 = time.perf_counter()
  ckpts = pretrain(cfg, outdir)
  runs = {name: [wd for n, wd in ckpts if n == name] for name in cfg.variants}
  if cfg.get("train_only"):
    return {"runs": runs, "seconds": time.perf_counter() - t0}
  reports = {"zero_shot": evaluate_lib.evaluate(cfg.zero_shot, ckpts, os.path.join(outdir, "zero_shot"))}
  if cfg.get("zero_shot_gait"):
    reports["zero_shot_gait"] = evaluate_lib.evaluate(cfg.zero_shot_gait, ckpts, os.path.join(outdir, "zero_shot_gait"))
  if cfg.get("few_shot"):
    fs = cfg.few_shot.copy_and_resolve_references()
    fs.pretrained = ",".join(f"{name}={os.path.abspath(wd)}" for name, wd in ckpts)
    reports["few_shot"] = few_shot_lib.finetune(fs, os.path.join(outdir, "few_shot"))
  table = rows(reports)
  os.makedirs(outdir, exist_ok=True)
  with open(os.path.join(outdir, "results.md"), "w") as f:
    f.write(_markdown(table, len(cfg.seeds)))
  plot(os.path.join(outdir, "plots", "ablations.png"), table)
  out = {
    "title": "ablations",
    "protocol": ev.PROTOCOL,
    "rows": table,
    "runs": runs,
    "config": cfg.to_dict(),
    "seconds": time.perf_counter() - t0,
  }
  ev.write_json(os.path.join(outdir, "results.json"), out)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  out = ablations(_CONFIG.value, _WORKDIR.value)
  if _CONFIG.value.get("train_only"):
    print(
      f"trained {', '.join(out['runs'])} in {_WORKDIR.value}/runs ({out['seconds']:.0f}s); evaluate without train_only"
    )
    return
  print(open(os.path.join(_WORKDIR.value, "results.md")).read())
  print(f"wrote {_WORKDIR.value}/results.json, results.md, plots/ ({out['seconds']:.0f}s)")


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/ablations.py", "Ablations config file.")
  _WORKDIR = flags.DEFINE_string("workdir", "workdirs/ablations", "Output directory (runs, reports, results).")
  cli.run(main)
