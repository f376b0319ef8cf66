"""The CPU recipe's dev set: how each candidate predicts the held-out episodes of the PRETRAINING
environments (never the test robots), per future step and, for the first predicted step, per channel kind
beside holding the last observation and the read-out's quantisation floor; plus the learning curves the
runs logged on the same dev episodes (training validation).

  python benchmarks/dev_set.py --corpus corpus/cpu --checkpoint westworld=DIR0 --checkpoint westworld=DIR1 \
      --checkpoint hl_gauss=DIR2 ... [--out DIR]

A label given several times is several seeds: tables show mean ± std over them. A checkpoint's
measurement is cached in DIR/cache/ (by workdir and step), so adding a candidate re-measures only it.

Why the floor: a model trained with one-hot bin targets (loss.py "bin", as upstream) is best off predicting
the centre of the bin that holds the next value, a mean error of 1/(4K) of a channel's range with K bins
whatever it learned; where a channel moves less than that in a step, holding the last observation wins the
first step. It is measured on the same targets (mean |x - centre(bin(x))|).

Errors: MAE x100 in each environment's normalised units (the tables' scale), every channel of a kind
weighing alike; per-step errors are the mean over environments. Writes DIR/results.json, DIR/results.md,
DIR/dev_set.png (first step per kind, error per step) and, when the runs logged validation,
DIR/learning_curves.png.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os

import numpy as np

import common  # noqa: F401  (the repository root on sys.path)
from westworld_jax import evaluation as ev
from westworld_jax.data import shards

FLOOR_BINS = (32, 64, 128, 256)
HOLD = "hold_last"


def model_windows(ckpt, corpus: str, env: str, horizon: int) -> tuple[np.ndarray, np.ndarray]:
  """(truth, prediction) [N, history + horizon, Co] of every held-out window, normalised."""
  evaluator = ev.Evaluator.for_checkpoint(ckpt, batch_size=32, horizon=horizon)
  res = evaluator.evaluate_env(corpus, env, keep_examples=10**9)
  full = [(o, p) for o, p in res.examples if len(o) == ckpt.model.history + horizon]
  return np.stack([o for o, _ in full]), np.stack([p for _, p in full])


def bin_floor(x: np.ndarray, k: int) -> np.ndarray:
  """|x - centre of its bin| with k uniform bins on [0, 1] (the best one-hot read-out's error)."""
  v = np.clip(x, 0.0, 1.0)
  centre = (np.clip(np.floor(v * k), 0, k - 1) + 0.5) / k
  return np.abs(v - centre)


def measure(ckpt, corpus: str, envs: list[str], horizon: int) -> dict:
  """env -> {robot, windows, kinds: {kind: {channels, model, hold_last, floor_K}}, per_step, hold_per_step}."""
  out = {}
  for env in envs:
    meta = shards.load_metadata(os.path.join(corpus, env))
    by_kind = collections.defaultdict(list)  # kind -> its channels
    for i, c in enumerate(meta["robot"]["obs_channels"]):
      by_kind[c["kind"]].append(i)
    obs, pred = model_windows(ckpt, corpus, env, horizon)
    h = ckpt.model.history
    err = np.abs(pred[:, h:] - obs[:, h:])  # [N, F, Co]
    hold = np.abs(obs[:, h:] - obs[:, h - 1 : h])
    kinds = {}
    for kind, idx in by_kind.items():
      kinds[kind] = {
        "channels": len(idx),
        "model": 100 * float(err[:, 0, idx].mean()),
        HOLD: 100 * float(hold[:, 0, idx].mean()),
        **{f"floor_{nb}": 100 * float(bin_floor(obs[:, h, idx], nb).mean()) for nb in FLOOR_BINS},
      }
    out[env] = {
      "robot": meta["robot"]["name"],
      "windows": int(len(obs)),
      "kinds": kinds,
      "per_step": (100 * err.mean((0, 2))).tolist(),
      "hold_per_step": (100 * hold.mean((0, 2))).tolist(),
    }
  return out


def cached_measure(ckpt, corpus: str, envs: list[str], horizon: int, cache_dir: str) -> dict:
  key = hashlib.sha1(
    f"{os.path.abspath(ckpt.workdir)}|{ckpt.step}|{os.path.abspath(corpus)}|{horizon}|{sorted(envs)}".encode()
  )
  path = os.path.join(cache_dir, f"{os.path.basename(os.path.normpath(ckpt.workdir))}-{key.hexdigest()[:12]}.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  res = measure(ckpt, corpus, envs, horizon)
  ev.write_json(path, res)
  return res


def kind_table(runs: dict[str, list[dict]]) -> dict:
  """kind -> {channels, <label> (mean over seeds), hold_last, floor_K}: channels of all environments alike."""
  first = next(iter(runs.values()))[0]
  out = {}
  for kind in sorted({k for r in first.values() for k in r["kinds"]}):
    recs = [r["kinds"][kind] for r in first.values() if kind in r["kinds"]]
    n = sum(k["channels"] for k in recs)
    wmean = lambda key, rs: sum(k[key] * k["channels"] for k in rs) / n
    row = {"channels": n}
    for label, seeds in runs.items():
      row[label] = float(
        np.mean([wmean("model", [r["kinds"][kind] for r in s.values() if kind in r["kinds"]]) for s in seeds])
      )
    for key in [HOLD] + [f"floor_{nb}" for nb in FLOOR_BINS]:
      row[key] = wmean(key, recs)
    out[kind] = row
  return out


def step_curves(runs: dict[str, list[dict]]) -> dict:
  """label -> [seeds][F] per-step MAE x100 (mean over environments); hold_last -> [[F]]."""
  out = {
    label: [np.mean([r["per_step"] for r in s.values()], 0).tolist() for s in seeds] for label, seeds in runs.items()
  }
  out[HOLD] = [np.mean([r["hold_per_step"] for r in next(iter(runs.values()))[0].values()], 0).tolist()]
  return out


def summary(curves: dict) -> dict:
  """label -> first step, last step and horizon mean: (mean, std over seeds), and the seed count."""
  out = {}
  for label, seeds in curves.items():
    a = np.asarray(seeds)
    stat = lambda v: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
    out[label] = {
      "seeds": len(a),
      "first_step": stat(a[:, 0]),
      "last_step": stat(a[:, -1]),
      "horizon_mean": stat(a.mean(1)),
    }
  return out


def learning_curves(workdirs: dict[str, list[str]]) -> dict:
  """label -> [(step, val_mae x100, val_first_step_mae x100)] per seed, and the hold-last values, from
  each run's metrics.jsonl (the training validation on the same dev environments' held-out episodes)."""
  out, hold = {}, None
  for label, dirs in workdirs.items():
    seeds = []
    for wd in dirs:
      path = os.path.join(wd, "metrics.jsonl")
      rows = []
      if os.path.exists(path):
        with open(path) as f:
          rows = [json.loads(line) for line in f if '"val_mae"' in line]
      if rows:
        seeds.append([(r["step"], 100 * r["val_mae"], 100 * r.get("val_first_step_mae", np.nan)) for r in rows])
        if "val_hold_last_mae" in rows[-1]:
          hold = (100 * rows[-1]["val_hold_last_mae"], 100 * rows[-1]["val_hold_last_first_step_mae"])
    if seeds:
      out[label] = seeds
  return {"runs": out, HOLD: hold}


def fmt(ms) -> str:
  m, s = ms
  return f"{m:.2f} ± {s:.2f}" if s else f"{m:.2f}"


def report(runs, workdirs, out: str, note: str) -> dict:
  labels = list(runs)
  kinds = kind_table(runs)
  curves = step_curves(runs)
  summ = summary(curves)
  lc = learning_curves(workdirs)
  lines = [
    "# The dev set: pretraining environments' held-out episodes",
    "",
    note,
    "",
    "## Summary: MAE x100 (mean ± std over seeds)",
    "",
    "| candidate | seeds | first step | step " + str(len(curves[HOLD][0])) + " | mean over the horizon |",
    "|---|---|---|---|---|",
  ]
  for label in labels + [HOLD]:
    s = summ[label]
    seeds = s["seeds"] if label != HOLD else "—"
    lines.append(f"| {label} | {seeds} | {fmt(s['first_step'])} | {fmt(s['last_step'])} | {fmt(s['horizon_mean'])} |")
  cols = labels + [HOLD] + [f"floor_{nb}" for nb in FLOOR_BINS]
  lines += [
    "",
    "## First-step MAE x100 by channel kind (mean over seeds; every channel of all dev environments alike)",
    "",
    "| kind | channels | " + " | ".join(cols) + " |",
    "|---|---|" + "---|" * len(cols),
  ]
  for kind, d in sorted(kinds.items(), key=lambda kv: -kv[1]["channels"]):
    lines.append(f"| {kind} | {d['channels']} | " + " | ".join(f"{d[c]:.2f}" for c in cols) + " |")
  steps = len(curves[HOLD][0])
  lines += ["", "## MAE x100 per future step (mean over dev environments and seeds)", ""]
  lines += ["| step | " + " | ".join(labels + [HOLD]) + " |", "|---|" + "---|" * (len(labels) + 1)]
  for s in sorted({0, 1, 2, 4, 8, 16, steps - 1}):
    if s < steps:
      lines.append(
        f"| {s + 1} | " + " | ".join(f"{np.mean(np.asarray(curves[c])[:, s]):.2f}" for c in labels + [HOLD]) + " |"
      )
  if lc["runs"]:
    lines += ["", "## Learning curves (training validation on the dev episodes; mean over seeds)", ""]
    lines += ["| candidate | step | val MAE x100 | first step |", "|---|---|---|---|"]
    for label, seeds in lc["runs"].items():
      n = min(len(x) for x in seeds)
      arr = np.asarray([x[:n] for x in seeds])  # [seeds, evaluations, (step, mae, first)]
      mean = arr.mean(0)
      lines.append(
        f"| {label} | {int(mean[-1, 0])} | {mean[-1, 1]:.2f} (lowest {mean[:, 1].min():.2f} at step "
        f"{int(mean[mean[:, 1].argmin(), 0])}) | {mean[-1, 2]:.2f} |"
      )
    if lc[HOLD]:
      lines.append(f"| hold last | — | {lc[HOLD][0]:.2f} | {lc[HOLD][1]:.2f} |")
    lines += ["", "![learning curves](learning_curves.png)"]
  lines += ["", "![dev set](dev_set.png)", ""]
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(lines))
  result = {
    "note": note,
    "summary": summ,
    "by_kind": kinds,
    "per_step": curves,
    "learning_curves": lc,
    "workdirs": workdirs,
  }
  ev.write_json(os.path.join(out, "results.json"), result)
  _plot(kinds, curves, labels, out)
  if lc["runs"]:
    _plot_curves(lc, out)
  print("\n".join(lines))
  return result


def _plt():
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  return plt


def _plot(kinds: dict, curves: dict, labels: list[str], out: str) -> None:
  plt = _plt()
  fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
  names = sorted(kinds, key=lambda k: -kinds[k]["channels"])
  x = np.arange(len(names))
  cols = labels + [HOLD, "floor_32", "floor_64"]
  w = 0.8 / len(cols)
  for i, c in enumerate(cols):
    a.bar(x + i * w, [kinds[k][c] for k in names], w, label=c)
  a.set_xticks(x + 0.4, names, rotation=30, ha="right", fontsize=7)
  a.set_ylabel("first-step MAE x100")
  a.legend(fontsize=7)
  for c in labels + [HOLD]:
    arr = np.asarray(curves[c])
    steps = np.arange(1, arr.shape[1] + 1)
    style = dict(color="k", ls="--") if c == HOLD else {}
    b.plot(steps, arr.mean(0), label=c, **style)
    if len(arr) > 1:
      b.fill_between(steps, arr.min(0), arr.max(0), alpha=0.2)
  b.set_xlabel("future step")
  b.set_ylabel("MAE x100 (dev mean)")
  b.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "dev_set.png"), dpi=90)
  plt.close(fig)


def _plot_curves(lc: dict, out: str) -> None:
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  for ax, col, name in ((axes[0], 1, "val MAE x100 (horizon)"), (axes[1], 2, "val MAE x100 (first step)")):
    for label, seeds in lc["runs"].items():
      n = min(len(s) for s in seeds)
      arr = np.asarray([s[:n] for s in seeds])
      ax.plot(arr[0, :, 0], arr[:, :, col].mean(0), marker=".", label=label)
    if lc[HOLD]:
      ax.axhline(lc[HOLD][col - 1], color="k", ls="--", lw=1, label="hold last")
    ax.set_xlabel("training step")
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "learning_curves.png"), dpi=90)
  plt.close(fig)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--corpus", default="corpus/cpu")
  p.add_argument("--checkpoint", action="append", required=True, help="label=training workdir (repeat a label: seeds)")
  p.add_argument("--envs", type=int, default=0, help="the first N of the first checkpoint's environments (0: all)")
  p.add_argument("--horizon", type=int, default=24)
  p.add_argument("--out", default="benchmarks/results/dev_set")
  args = p.parse_args()
  workdirs: dict[str, list[str]] = {}
  for spec in args.checkpoint:
    label, _, path = spec.partition("=")
    workdirs.setdefault(label, []).append(path)
  first = ev.load_checkpoint(next(iter(workdirs.values()))[0])
  envs = sorted(first.trained_envs)
  envs = envs[: args.envs] if args.envs else envs
  runs = {}
  for label, dirs in workdirs.items():
    runs[label] = [
      cached_measure(ev.load_checkpoint(d, label), args.corpus, envs, args.horizon, os.path.join(args.out, "cache"))
      for d in dirs
    ]
  windows = sum(r["windows"] for r in runs[next(iter(runs))][0].values())
  note = (
    f"{len(envs)} dev environments ({args.corpus}), {windows} windows of history + {args.horizon} steps; "
    + "; ".join(f"{label}: {len(d)} seed(s)" for label, d in workdirs.items())
  )
  report(runs, workdirs, args.out, note)


if __name__ == "__main__":
  main()
