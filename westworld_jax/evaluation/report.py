"""Reports: results.json, results.md (MAE/MSE x100 per environment and robot, mean ± std over seeds)
and plots (error vs horizon, predicted vs true windows)."""

from __future__ import annotations

import collections
import json
import os
from typing import Any, Sequence

import jax
import numpy as np

from westworld_jax.evaluation.checkpoints import Checkpoint
from westworld_jax.evaluation.evaluator import EnvResult, env_summaries
from westworld_jax.model.metrics import X100
from westworld_jax.training import logs

PROTOCOL = (
  "windows of history+horizon steps from each environment's held-out (val) episodes, normalised "
  "with that environment's own training-episode min-max; the horizon predicted in one "
  "model.predict call with true actions; MAE/MSE pooled over valid (window, step, channel) "
  "elements in [0,1] space; *_x100 = x100 (paper's table scale)"
)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample std (ddof=1; 0 for one value)."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  if not len(v):
    return float("nan"), float("nan")
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(values: Sequence[float], digits: int = 2) -> str:
  m, s = mean_std(values)
  if np.isnan(m):
    return "—"
  return f"{m:.{digits}f} ± {s:.{digits}f}" if len([x for x in values if x is not None]) > 1 else f"{m:.{digits}f}"


def markdown_table(rows: Sequence[str], cols: Sequence[str], cell, row_header: str = "", bold_min: str = "row") -> str:
  """cell(row, col) -> list of values (seeds). bold_min: 'row' / 'col' marks the lowest mean per row /
  column, '' nothing."""
  vals = {(r, c): cell(r, c) for r in rows for c in cols}
  means = {k: mean_std(v)[0] if v else float("nan") for k, v in vals.items()}

  def best(keys):
    m = [means[k] for k in keys if not np.isnan(means[k])]
    return min(m) if len(m) > 1 else None

  best_row = {r: best([(r, c) for c in cols]) for r in rows}
  best_col = {c: best([(r, c) for r in rows]) for c in cols}
  lines = [f"| {row_header} | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
  for r in rows:
    cells = []
    for c in cols:
      b = best_row[r] if bold_min == "row" else best_col[c] if bold_min == "col" else None
      v = vals[(r, c)]
      cells.append("—" if not v else f"**{fmt(v)}**" if b is not None and means[(r, c)] == b else fmt(v))
    lines.append(f"| {r} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_error_vs_horizon(
  path: str, curves: dict[str, Sequence[float | None]], title: str, ylabel: str = "MAE (normalised)"
) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.5, 3.8))
  for name, ys in curves.items():
    ys = np.array([np.nan if y is None else y for y in ys], np.float64)
    ax.plot(np.arange(1, len(ys) + 1), ys, lw=1.4, label=name)
  ax.set_xlabel("prediction step after the history")
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return save_figure(fig, path)


def save_figure(fig, path: str) -> str:
  """Writes a matplotlib figure as a PNG (folders made) and closes it; returns the path."""
  import matplotlib.pyplot as plt

  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def write_json(path: str, obj: Any) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))
  os.replace(path + ".tmp", path)
  return path


def safe_name(name: str) -> str:
  """A name usable in file names (anything but letters, digits, '-', '_', '.' becomes '_')."""
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_examples(outdir: str, label: str, res: EnvResult, history: int) -> list[str]:
  return [
    logs.plot_predictions(
      os.path.join(outdir, "plots", f"{safe_name(label)}_{safe_name(res.env)}_window{i}.png"),
      obs,
      pred,
      history,
      res.channel_names,
      f"{label} on {res.env} ({res.split} window {i}; normalised)",
    )
    for i, (obs, pred) in enumerate(res.examples)
  ]


def first_step_mae_x100(summary: dict) -> float | None:
  """MAE x100 of the first predicted step, from an env_summaries entry."""
  first = summary["mae_by_step"][0] if summary["mae_by_step"] else None
  return None if first is None else X100 * first


def _mean_curve(curves: Sequence[Sequence[float | None]]) -> list[float | None]:
  """Step-wise mean of error curves (None where no curve has a value)."""
  out = []
  for ys in zip(*curves):
    v = [y for y in ys if y is not None]
    out.append(float(np.mean(v)) if v else None)
  return out


def report(outdir: str, runs: list[dict], environments: Sequence[str], title: str, extra: dict | None = None) -> dict:
  """results.json, results.md (MAE and MSE x100 per environment and robot; mean ± std over seeds) and
  error-vs-horizon plots, from runs = [{"label", "checkpoint", "step", "history", "horizon", **env_summaries}]."""
  labels = list(dict.fromkeys(r["label"] for r in runs))
  by = collections.defaultdict(list)
  for r in runs:
    by[r["label"]].append(r)
  robots = list(dict.fromkeys(r["envs"][e]["robot"] for r in runs for e in environments if e in r["envs"]))
  summary, seeds = {lab: {"envs": {}, "robots": {}} for lab in labels}, 1
  for lab in labels:
    for kind, keys in (("envs", environments), ("robots", robots)):
      for k in keys:
        vals = [r[kind][k] for r in by[lab] if k in r[kind]]
        if vals:
          seeds = max(seeds, len(vals))
          summary[lab][kind][k] = {
            "seeds": len(vals),
            **{
              f"{m}_{s}": v
              for m in ("mae_x100", "mse_x100")
              for s, v in zip(("mean", "std"), mean_std([x[m] for x in vals]))
            },
            **dict(
              zip(
                ("first_step_mae_x100_mean", "first_step_mae_x100_std"),
                mean_std([first_step_mae_x100(x) for x in vals]),
              )
            ),
          }
  hist, hor = runs[0].get("history"), runs[0].get("horizon")
  md = [
    f"# {title}",
    "",
    f"Protocol: {PROTOCOL}. History {hist}, horizon {hor}.",
    "Values: error x100 (lower is better; bold = best per column); "
    + ("mean ± sample std over seeds." if seeds > 1 else "one seed."),
    "",
  ]
  for metric in ("mae_x100", "mse_x100"):
    name = metric.split("_")[0].upper()
    md += [
      f"## {name} x100 per robot",
      "",
      markdown_table(
        labels,
        robots,
        lambda lab, rb: [r["robots"][rb][metric] for r in by[lab] if rb in r["robots"]],
        "model",
        bold_min="col",
      ),
      "",
    ]
    md += [
      f"## {name} x100 per environment",
      "",
      markdown_table(
        labels,
        list(environments),
        lambda lab, e: [r["envs"][e][metric] for r in by[lab] if e in r["envs"]],
        "model",
        bold_min="col",
      ),
      "",
    ]
  md += [
    "## First predicted step: MAE x100 per robot",
    "",
    markdown_table(
      labels,
      robots,
      lambda lab, rb: [first_step_mae_x100(r["robots"][rb]) for r in by[lab] if rb in r["robots"]],
      "model",
      bold_min="col",
    ),
    "",
  ]
  md += ["## Runs", "", "| label | checkpoint | step | windows evaluated |", "|---|---|---|---|"]
  for r in runs:
    md.append(f"| {r['label']} | {r['checkpoint']} | {r['step']} | {sum(v['windows'] for v in r['envs'].values())} |")
  md.append("")
  plots = []
  for e in environments:  # error vs horizon: one curve per label, the mean over its runs (seeds)
    curves = {
      lab: _mean_curve([r["envs"][e]["mae_by_step"] for r in by[lab] if e in r["envs"]])
      for lab in labels
      if any(e in r["envs"] for r in by[lab])
    }
    if curves:
      plots.append(
        plot_error_vs_horizon(
          os.path.join(outdir, "plots", f"error_vs_horizon_{safe_name(e)}.png"), curves, f"{e}: MAE vs prediction step"
        )
      )
  md += ["## Plots", ""] + [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots] + [""]
  os.makedirs(outdir, exist_ok=True)
  with open(os.path.join(outdir, "results.md"), "w") as f:
    f.write("\n".join(md))
  out = {
    "title": title,
    "protocol": PROTOCOL,
    "history": hist,
    "horizon": hor,
    "environments": list(environments),
    "summary": summary,
    "runs": runs,
    **(extra or {}),
  }
  write_json(os.path.join(outdir, "results.json"), out)
  return out


def run_record(ckpt: Checkpoint, results: dict[str, EnvResult], horizon: int = 0) -> dict:
  return {
    "label": ckpt.label,
    "checkpoint": ckpt.workdir,
    "step": ckpt.step,
    "model": ckpt.run_config["model"]["name"],
    "history": int(ckpt.run_config["data"]["history"]),
    "horizon": int(horizon or ckpt.run_config["data"]["horizon"]),
    "params": int(sum(np.size(x) for x in jax.tree.leaves(ckpt.params))),
    **env_summaries(results),
  }
